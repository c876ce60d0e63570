//! A host-side decoder for llama2.c models: one token per row per step, plain `f32` loops over
//! weights read straight from the checkpoint, and a preallocated key/value cache per row.
//!
//! Why not candle's `Llama` for generation: a decoding step there is a few hundred small ops,
//! and its cache grows by concatenation, so every step copies the whole cache and runs one tiny
//! matmul per head. For the small story models (stories260K: dim 64) that made generation about
//! 400 tokens/s. Here a step is matrix-vector products and a dot product per cached position,
//! and rows run in parallel (rayon). The maths is llama2.c's `forward`; a test holds it equal to
//! candle's `Llama` logits.
use candle_transformers::models::llama2_c::Config;
use rayon::prelude::*;

use super::generate::softmax;
use crate::Result;

struct Layer {
    rms_att: Vec<f32>,
    wq: Vec<f32>,
    wk: Vec<f32>,
    wv: Vec<f32>,
    wo: Vec<f32>,
    rms_ffn: Vec<f32>,
    w1: Vec<f32>,
    w2: Vec<f32>,
    w3: Vec<f32>,
}

/// The weights of a llama2.c checkpoint, in its own layout, for host decoding.
pub struct HostLlama {
    cfg: Config,
    embed: Vec<f32>,
    layers: Vec<Layer>,
    rms_final: Vec<f32>,
    /// Unshared classifier; `None`: the embedding.
    wcls: Option<Vec<f32>>,
    cos: Vec<f32>,
    sin: Vec<f32>,
}

/// One row's decoding state: its key/value cache and scratch buffers.
pub struct RowState {
    /// (layers, seq_len, kv_dim)
    k: Vec<f32>,
    v: Vec<f32>,
    x: Vec<f32>,
    xb: Vec<f32>,
    q: Vec<f32>,
    att: Vec<f32>,
    hb: Vec<f32>,
    hb2: Vec<f32>,
}

/// A dot product with eight independent partial sums, so the compiler can keep it in SIMD
/// registers (a single running sum is a strict sequential reduction).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ac, ar) = a.split_at(a.len() / 8 * 8);
    let (bc, br) = b.split_at(ac.len());
    for (x, y) in ac.chunks_exact(8).zip(bc.chunks_exact(8)) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let tail: f32 = ar.iter().zip(br).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
}

fn matvec(w: &[f32], x: &[f32], out: &mut [f32]) {
    let n = x.len();
    for (o, row) in out.iter_mut().zip(w.chunks_exact(n)) {
        *o = dot(row, x);
    }
}

fn rmsnorm(out: &mut [f32], x: &[f32], w: &[f32], eps: f32) {
    let ss = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32 + eps;
    let s = 1.0 / ss.sqrt();
    for ((o, xi), wi) in out.iter_mut().zip(x).zip(w) {
        *o = wi * (s * xi);
    }
}

impl HostLlama {
    /// Reads a checkpoint's bytes (the format of [`super::llama2c`]).
    pub fn from_checkpoint(bytes: &[u8]) -> Result<Self> {
        let (cfg, shared, raw) = super::llama2c::read_raw(bytes)?;
        let l = cfg.n_layers;
        // In file order (see `tensor_shapes`); per-layer tensors are split by layer.
        let mut raw = raw.into_iter();
        let mut next = || raw.next().unwrap_or_default();
        let per_layer = |v: Vec<f32>| -> Vec<Vec<f32>> {
            let per = v.len() / l;
            v.chunks_exact(per).map(<[f32]>::to_vec).collect()
        };
        let embed = next();
        let rms_att = per_layer(next());
        let wq = per_layer(next());
        let wk = per_layer(next());
        let wv = per_layer(next());
        let wo = per_layer(next());
        let rms_ffn = per_layer(next());
        let w1 = per_layer(next());
        let w2 = per_layer(next());
        let w3 = per_layer(next());
        let rms_final = next();
        let cos = next();
        let sin = next();
        let wcls = (!shared).then(&mut next);
        let layers = (0..l)
            .map(|i| Layer {
                rms_att: rms_att[i].clone(),
                wq: wq[i].clone(),
                wk: wk[i].clone(),
                wv: wv[i].clone(),
                wo: wo[i].clone(),
                rms_ffn: rms_ffn[i].clone(),
                w1: w1[i].clone(),
                w2: w2[i].clone(),
                w3: w3[i].clone(),
            })
            .collect();
        Ok(HostLlama {
            cfg,
            embed,
            layers,
            rms_final,
            wcls,
            cos,
            sin,
        })
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// A fresh row (empty cache).
    pub fn new_state(&self) -> RowState {
        let c = &self.cfg;
        let kv = c.dim / c.n_heads * c.n_kv_heads;
        RowState {
            k: vec![0.0; c.n_layers * c.seq_len * kv],
            v: vec![0.0; c.n_layers * c.seq_len * kv],
            x: vec![0.0; c.dim],
            xb: vec![0.0; c.dim],
            q: vec![0.0; c.dim],
            att: vec![0.0; c.seq_len],
            hb: vec![0.0; c.hidden_dim],
            hb2: vec![0.0; c.hidden_dim],
        }
    }

    /// Reads `token` at position `pos` (< seq_len) and writes the next-token logits.
    pub fn step(&self, token: u32, pos: usize, s: &mut RowState, logits: &mut [f32]) {
        let c = &self.cfg;
        let (d, hs) = (c.dim, c.dim / c.n_heads);
        let kv = hs * c.n_kv_heads;
        let rep = c.n_heads / c.n_kv_heads;
        let half = hs / 2;
        let eps = c.norm_eps as f32;
        s.x.copy_from_slice(&self.embed[token as usize * d..(token as usize + 1) * d]);
        let cos = &self.cos[pos * half..(pos + 1) * half];
        let sin = &self.sin[pos * half..(pos + 1) * half];
        let rope = |v: &mut [f32]| {
            for (i, pair) in v.chunks_exact_mut(2).enumerate() {
                let j = i % half;
                let (a, b) = (pair[0], pair[1]);
                pair[0] = a * cos[j] - b * sin[j];
                pair[1] = a * sin[j] + b * cos[j];
            }
        };
        let scale = 1.0 / (hs as f32).sqrt();
        for (li, layer) in self.layers.iter().enumerate() {
            rmsnorm(&mut s.xb, &s.x, &layer.rms_att, eps);
            let base = li * c.seq_len * kv;
            let at = base + pos * kv;
            matvec(&layer.wq, &s.xb, &mut s.q);
            matvec(&layer.wk, &s.xb, &mut s.k[at..at + kv]);
            matvec(&layer.wv, &s.xb, &mut s.v[at..at + kv]);
            rope(&mut s.q);
            rope(&mut s.k[at..at + kv]);
            for h in 0..c.n_heads {
                let q = &s.q[h * hs..(h + 1) * hs];
                let off = (h / rep) * hs;
                let att = &mut s.att[..=pos];
                for (t, a) in att.iter_mut().enumerate() {
                    let k = &s.k[base + t * kv + off..base + t * kv + off + hs];
                    *a = dot(q, k) * scale;
                }
                softmax(att);
                let out = &mut s.xb[h * hs..(h + 1) * hs];
                out.fill(0.0);
                for (t, &a) in att.iter().enumerate() {
                    let v = &s.v[base + t * kv + off..base + t * kv + off + hs];
                    for (o, vi) in out.iter_mut().zip(v) {
                        *o += a * vi;
                    }
                }
            }
            // x += wo · attention output (q is free scratch now).
            matvec(&layer.wo, &s.xb, &mut s.q);
            for (x, y) in s.x.iter_mut().zip(&s.q) {
                *x += y;
            }
            rmsnorm(&mut s.xb, &s.x, &layer.rms_ffn, eps);
            matvec(&layer.w1, &s.xb, &mut s.hb);
            matvec(&layer.w3, &s.xb, &mut s.hb2);
            for (a, b) in s.hb.iter_mut().zip(&s.hb2) {
                *a = *a / (1.0 + (-*a).exp()) * b;
            }
            matvec(&layer.w2, &s.hb, &mut s.q);
            for (x, y) in s.x.iter_mut().zip(&s.q) {
                *x += y;
            }
        }
        rmsnorm(&mut s.xb, &s.x, &self.rms_final, eps);
        matvec(self.wcls.as_deref().unwrap_or(&self.embed), &s.xb, logits);
    }

    /// One step for many rows at once, in parallel: row i reads `tokens[i]` at `pos` and writes
    /// `logits[i·vocab..]`. Rows marked `skip` are left alone.
    pub fn step_rows(
        &self,
        tokens: &[u32],
        pos: usize,
        states: &mut [RowState],
        skip: &[bool],
        logits: &mut [f32],
    ) {
        let vocab = self.cfg.vocab_size;
        states
            .par_iter_mut()
            .zip(logits.par_chunks_mut(vocab))
            .enumerate()
            .filter(|(i, _)| !skip[*i])
            .for_each(|(i, (s, l))| self.step(tokens[i], pos, s, l));
    }
}
