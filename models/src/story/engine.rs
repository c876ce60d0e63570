//! The story engine: generation for the char and subword LSTMs on the host, one fused step for
//! a pool of story slots that are refilled as stories finish.
//!
//! Why not the tensor step of [`CharLm::step`]: at generation time a step is a few small
//! matmuls, and candle's per-op overhead (a new tensor per gate, `narrow` copies, one
//! `LogitsProcessor` tensor per row) cost more than the arithmetic. Here:
//! - layer 0's input term is a lookup: each input id's embedding times `W_x`, plus the bias,
//!   is computed once at load ([`HostLm::from_lm`]);
//! - a story's keyword term (`k · W_k`, every layer) is computed once, when the story enters a
//!   slot, and kept as that row's bias;
//! - upper layers run one matmul on `[x, h]` against `[W_x; W_h]`;
//! - the gate nonlinearities and the state update are one pass over each row;
//! - sampling reads one host logits buffer.
//!
//! Slots: up to `slots` stories advance together; when one finishes, the next request takes its
//! row (zero state, its own keyword term and RNG stream), and once no request is left finished
//! rows are dropped, so every step multiplies a (live rows × width) matrix. A story's
//! characters depend only on its prompt, keywords and stream, never on which slot or step it
//! ran in (tested: pooled = one at a time = the tensor path).
use candle_core::{DType, Device, Tensor};
use rand09::distr::weighted::WeightedIndex;
use rand09::distr::Distribution;
use rand09::SeedableRng;
use rayon::prelude::*;

use super::charlm::CharLm;
use super::corpus::Codec;
use super::generate::{finish, is_sentence_end, stream_seed, GenerateOptions};
use crate::{Error, Result};

/// A loaded [`CharLm`]'s weights laid out for the host step.
#[derive(Debug, Clone)]
pub struct HostLm {
    vocab: usize,
    hidden: usize,
    /// (vocab, 4H): embedding row × layer 0's `W_x` + layer 0's bias.
    input_table: Vec<f32>,
    /// (H, 4H): layer 0's recurrent weights.
    w_h0: Vec<f32>,
    /// Layers 1.., each (2H, 4H): `W_x` stacked over `W_h`, so `[x, h]` is one matmul.
    w_xh: Vec<Vec<f32>>,
    /// Layers 1.., each (4H).
    bias: Vec<Vec<f32>>,
    /// Every layer's (keyword_dim, 4H) keyword weights; empty without a keyword table.
    w_k: Vec<Vec<f32>>,
    /// (keywords, keyword_dim).
    keyword_table: Vec<f32>,
    keyword_dim: usize,
    /// (H, vocab): the output layer, transposed.
    w_out: Vec<f32>,
    b_out: Vec<f32>,
}

fn host_vec(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.to_dtype(DType::F32)?
        .to_device(&Device::Cpu)?
        .flatten_all()?
        .to_vec1::<f32>()?)
}

impl HostLm {
    /// Copies the model's weights into the host layout (about the model's size again).
    pub fn from_lm(lm: &CharLm) -> Result<Self> {
        let cfg = lm.config();
        let (v, h) = (cfg.vocab, cfg.hidden);
        let cpu = Device::Cpu;
        let cell0 = &lm.cells[0];
        let emb = lm
            .embed
            .embeddings()
            .to_dtype(DType::F32)?
            .to_device(&cpu)?;
        let w_x0 = cell0.w_x.to_dtype(DType::F32)?.to_device(&cpu)?;
        let b0 = cell0.b.to_dtype(DType::F32)?.to_device(&cpu)?;
        let input_table = host_vec(&emb.matmul(&w_x0)?.broadcast_add(&b0)?)?;
        let mut w_xh = Vec::new();
        let mut bias = Vec::new();
        for cell in &lm.cells[1..] {
            w_xh.push(host_vec(&Tensor::cat(&[&cell.w_x, &cell.w_h], 0)?)?);
            bias.push(host_vec(&cell.b)?);
        }
        let (w_k, keyword_table, keyword_dim) = match &lm.keyword_table {
            Some(table) => (
                lm.cells
                    .iter()
                    .map(|c| match &c.w_k {
                        Some(w) => host_vec(w),
                        None => Err(Error::msg("a keyword table without keyword weights")),
                    })
                    .collect::<Result<Vec<_>>>()?,
                host_vec(table)?,
                table.dim(1)?,
            ),
            None => (Vec::new(), Vec::new(), 0),
        };
        let b_out = match lm.out.bias() {
            Some(b) => host_vec(b)?,
            None => vec![0.0; v],
        };
        Ok(HostLm {
            vocab: v,
            hidden: h,
            input_table,
            w_h0: host_vec(&cell0.w_h)?,
            w_xh,
            bias,
            w_k,
            keyword_table,
            keyword_dim,
            w_out: host_vec(&lm.out.weight().t()?)?,
            b_out,
        })
    }

    fn layers(&self) -> usize {
        1 + self.w_xh.len()
    }

    /// Each layer's gate bias for a story with these keyword ids (layer 0's own bias is in the
    /// input table): the bias plus the keyword vector times `W_k`.
    fn row_bias(&self, keywords: &[u32], out: &mut [Vec<f32>], row: usize) -> Result<()> {
        let g = 4 * self.hidden;
        let mut kv = vec![0f32; self.keyword_dim];
        let table_rows = self.keyword_table.len() / self.keyword_dim.max(1);
        for &id in keywords {
            let id = id as usize;
            if self.keyword_dim == 0 {
                break;
            }
            if id >= table_rows {
                return Err(Error::msg(format!(
                    "keyword id {id} outside a table of {table_rows}"
                )));
            }
            let r = &self.keyword_table[id * self.keyword_dim..(id + 1) * self.keyword_dim];
            kv.iter_mut().zip(r).for_each(|(a, b)| *a += b);
        }
        for (l, layer_out) in out.iter_mut().enumerate() {
            let dst = &mut layer_out[row * g..(row + 1) * g];
            match l {
                0 => dst.fill(0.0),
                _ => dst.copy_from_slice(&self.bias[l - 1]),
            }
            if let Some(w) = self.w_k.get(l) {
                for (j, &k) in kv.iter().enumerate() {
                    if k != 0.0 {
                        let wr = &w[j * g..(j + 1) * g];
                        dst.iter_mut().zip(wr).for_each(|(d, w)| *d += k * w);
                    }
                }
            }
        }
        Ok(())
    }
}

/// `dst (m×n) += lhs (m×k) · rhs (k×n)`, all row-major. Split over the rayon pool when the
/// product is big enough to pay for it (a split never changes a sum's order).
fn matmul_acc(dst: &mut [f32], lhs: &[f32], rhs: &[f32], m: usize, k: usize, n: usize) {
    assert!(dst.len() >= m * n && lhs.len() >= m * k && rhs.len() >= k * n);
    let parallelism = if m * k * n >= 1 << 18 {
        gemm::Parallelism::Rayon(rayon::current_num_threads())
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the asserts above keep every read and write inside the slices, whose
    // row-major strides are passed as they are.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            true,
            lhs.as_ptr(),
            1,
            k as isize,
            rhs.as_ptr(),
            1,
            n as isize,
            1.0f32,
            1.0f32,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// candle's sigmoid, `1 / (1 + e^-x)`, so the host step rounds as the tensor step does.
#[inline]
fn sigmoid(x: f32) -> f32 {
    ((-x).exp() + 1.0).recip()
}

/// The LSTM update of one row: gates (4H: i, f, g, o) and the cell state in, h and c out.
#[inline]
fn lstm_row(gates: &[f32], h: &mut [f32], c: &mut [f32]) {
    let n = h.len();
    let (i, rest) = gates.split_at(n);
    let (f, rest) = rest.split_at(n);
    let (g, o) = rest.split_at(n);
    for j in 0..n {
        let cj = sigmoid(f[j]) * c[j] + sigmoid(i[j]) * g[j].tanh();
        c[j] = cj;
        h[j] = sigmoid(o[j]) * cj.tanh();
    }
}

/// How a row's next id is drawn: the rules of candle-transformers' `LogitsProcessor` (softmax
/// of logits × 1/temperature, a weighted draw from the same RNG), on a host row.
#[derive(Debug, Clone, Copy)]
enum Pick {
    ArgMax,
    All { inv_t: f32 },
    TopK { k: usize, inv_t: f32 },
}

impl Pick {
    fn new(opts: &GenerateOptions) -> Self {
        let inv_t = (1.0 / opts.temperature) as f32;
        match opts.top_k {
            _ if opts.temperature <= 0.0 => Pick::ArgMax,
            Some(k) if k > 0 => Pick::TopK { k, inv_t },
            _ => Pick::All { inv_t },
        }
    }

    /// Draws from `row` (overwritten with probabilities); `order` is scratch.
    fn draw(
        self,
        row: &mut [f32],
        rng: &mut rand09::rngs::StdRng,
        order: &mut Vec<usize>,
    ) -> Result<u32> {
        let (inv_t, k) = match self {
            Pick::ArgMax => {
                let mut best = 0;
                for (i, &v) in row.iter().enumerate() {
                    if v > row[best] {
                        best = i;
                    }
                }
                return Ok(best as u32);
            }
            Pick::All { inv_t } => (inv_t, row.len()),
            Pick::TopK { k, inv_t } => (inv_t, k),
        };
        let mut max = f32::NEG_INFINITY;
        for v in row.iter_mut() {
            *v *= inv_t;
            max = max.max(*v);
        }
        let mut sum = 0f32;
        for v in row.iter_mut() {
            *v = (*v - max).exp();
            sum += *v;
        }
        row.iter_mut().for_each(|v| *v /= sum);
        let bad = |e| Error::msg(format!("story sampling: {e}"));
        if k >= row.len() {
            return Ok(WeightedIndex::new(&*row).map_err(bad)?.sample(rng) as u32);
        }
        // The k most likely ids, in the order a selection leaves them (as LogitsProcessor does).
        order.clear();
        order.extend(0..row.len());
        order.select_nth_unstable_by(k, |&i, &j| row[j].total_cmp(&row[i]));
        let top = &order[..k];
        let weights = top.iter().map(|&i| row[i]);
        let chosen = WeightedIndex::new(weights).map_err(bad)?.sample(rng);
        Ok(top[chosen] as u32)
    }
}

/// One story to write: the ids the model reads first, the story's keyword ids (for a model with
/// a keyword table) and its RNG stream.
#[derive(Debug, Clone)]
pub struct StoryRequest {
    pub prompt: Vec<u32>,
    pub keywords: Vec<u32>,
    pub stream: u64,
}

/// The live state of one slot.
struct Slot {
    request: usize,
    prompt_pos: usize,
    written: usize,
    ids: Vec<u32>,
    rng: rand09::rngs::StdRng,
}

/// Slot buffers, each `slots` rows wide.
struct Buffers {
    h: Vec<Vec<f32>>,
    c: Vec<Vec<f32>>,
    row_bias: Vec<Vec<f32>>,
    gates: Vec<f32>,
    xh: Vec<f32>,
    logits: Vec<f32>,
    input: Vec<u32>,
}

impl Buffers {
    fn new(lm: &HostLm, slots: usize) -> Self {
        let (h, g) = (lm.hidden, 4 * lm.hidden);
        let layers = lm.layers();
        Buffers {
            h: vec![vec![0.0; slots * h]; layers],
            c: vec![vec![0.0; slots * h]; layers],
            row_bias: vec![vec![0.0; slots * g]; layers],
            gates: vec![0.0; slots * g],
            xh: vec![0.0; slots * 2 * h],
            logits: vec![0.0; slots * lm.vocab],
            input: vec![0; slots],
        }
    }

    /// Moves row `from` into row `to` (dropping a finished row keeps the live ones first).
    fn move_row(&mut self, from: usize, to: usize, hidden: usize) {
        let g = 4 * hidden;
        for l in 0..self.h.len() {
            self.h[l].copy_within(from * hidden..(from + 1) * hidden, to * hidden);
            self.c[l].copy_within(from * hidden..(from + 1) * hidden, to * hidden);
            self.row_bias[l].copy_within(from * g..(from + 1) * g, to * g);
        }
        self.input[to] = self.input[from];
    }
}

/// One step of every live row: their inputs in `b.input[..rows]`, their logits out in
/// `b.logits[..rows · vocab]`.
fn step(lm: &HostLm, b: &mut Buffers, rows: usize) {
    let (h, g, v) = (lm.hidden, 4 * lm.hidden, lm.vocab);
    let par = rows >= 16;
    let gates = &mut b.gates[..rows * g];
    // Layer 0: the looked-up input term and the story's keyword term, then h · W_h.
    for (r, dst) in gates.chunks_mut(g).enumerate() {
        let id = b.input[r] as usize;
        let t = &lm.input_table[id * g..(id + 1) * g];
        let kb = &b.row_bias[0][r * g..(r + 1) * g];
        dst.iter_mut()
            .zip(t.iter().zip(kb))
            .for_each(|(d, (t, k))| *d = t + k);
    }
    matmul_acc(gates, &b.h[0][..rows * h], &lm.w_h0, rows, h, g);
    update(gates, &mut b.h[0], &mut b.c[0], rows, h, par);
    for l in 1..lm.layers() {
        let (below, this) = b.h.split_at_mut(l);
        for r in 0..rows {
            let xh = &mut b.xh[r * 2 * h..(r + 1) * 2 * h];
            xh[..h].copy_from_slice(&below[l - 1][r * h..(r + 1) * h]);
            xh[h..].copy_from_slice(&this[0][r * h..(r + 1) * h]);
        }
        gates.copy_from_slice(&b.row_bias[l][..rows * g]);
        matmul_acc(
            gates,
            &b.xh[..rows * 2 * h],
            &lm.w_xh[l - 1],
            rows,
            2 * h,
            g,
        );
        update(gates, &mut this[0], &mut b.c[l], rows, h, par);
    }
    let logits = &mut b.logits[..rows * v];
    for dst in logits.chunks_mut(v) {
        dst.copy_from_slice(&lm.b_out);
    }
    let top = &b.h[lm.layers() - 1][..rows * h];
    matmul_acc(logits, top, &lm.w_out, rows, h, v);
}

fn update(gates: &[f32], h: &mut [f32], c: &mut [f32], rows: usize, hidden: usize, par: bool) {
    let g = 4 * hidden;
    let h = &mut h[..rows * hidden];
    let c = &mut c[..rows * hidden];
    if par {
        gates
            .par_chunks(g)
            .zip(h.par_chunks_mut(hidden).zip(c.par_chunks_mut(hidden)))
            .for_each(|(gr, (hr, cr))| lstm_row(gr, hr, cr));
    } else {
        for (gr, (hr, cr)) in gates
            .chunks(g)
            .zip(h.chunks_mut(hidden).zip(c.chunks_mut(hidden)))
        {
            lstm_row(gr, hr, cr);
        }
    }
}

/// Writes one story per request with up to `slots` of them advancing together, and returns each
/// request's story (in request order). Same options and stopping rules as
/// [`super::generate::generate`].
pub fn generate(
    lm: &HostLm,
    codec: &Codec,
    requests: &[StoryRequest],
    opts: &GenerateOptions,
    slots: usize,
) -> Result<Vec<String>> {
    if requests.iter().any(|r| r.prompt.is_empty()) {
        return Err(Error::msg("a story prompt is empty"));
    }
    if let Some(&bad) = requests
        .iter()
        .flat_map(|r| &r.prompt)
        .find(|&&id| id as usize >= lm.vocab)
    {
        return Err(Error::msg(format!(
            "input id {bad} outside a vocabulary of {}",
            lm.vocab
        )));
    }
    let mut out: Vec<Vec<u32>> = vec![Vec::new(); requests.len()];
    if opts.max_chars > 0 && !requests.is_empty() {
        run_slots(lm, codec, requests, opts, slots.max(1), &mut out)?;
    }
    // Decoded whole: a subword piece may hold half of a character's bytes.
    Ok(out
        .iter()
        .map(|ids| finish(&codec.decode(ids), opts))
        .collect())
}

fn run_slots(
    lm: &HostLm,
    codec: &Codec,
    requests: &[StoryRequest],
    opts: &GenerateOptions,
    slots: usize,
    out: &mut [Vec<u32>],
) -> Result<()> {
    let (h, v) = (lm.hidden, lm.vocab);
    let slots = slots.min(requests.len());
    let mut b = Buffers::new(lm, slots);
    let pick = Pick::new(opts);
    let banned = codec.story_banned();
    let min_len = opts.max_chars * 4 / 5;
    let mut live: Vec<Slot> = Vec::with_capacity(slots);
    let mut next_request = 0;
    let mut order = Vec::new();
    // Puts request `next_request` into row `row` (fresh state, its keyword term).
    let admit = |b: &mut Buffers, row: usize, req: usize| -> Result<Slot> {
        for l in 0..lm.layers() {
            b.h[l][row * h..(row + 1) * h].fill(0.0);
            b.c[l][row * h..(row + 1) * h].fill(0.0);
        }
        lm.row_bias(&requests[req].keywords, &mut b.row_bias, row)?;
        b.input[row] = requests[req].prompt[0];
        Ok(Slot {
            request: req,
            prompt_pos: 0,
            written: 0,
            ids: Vec::new(),
            rng: rand09::rngs::StdRng::seed_from_u64(stream_seed(opts.seed, requests[req].stream)),
        })
    };
    while live.len() < slots {
        live.push(admit(&mut b, live.len(), next_request)?);
        next_request += 1;
    }
    while !live.is_empty() {
        let rows = live.len();
        step(lm, &mut b, rows);
        let mut finished = Vec::new();
        for (r, slot) in live.iter_mut().enumerate() {
            slot.prompt_pos += 1;
            let prompt = &requests[slot.request].prompt;
            if slot.prompt_pos < prompt.len() {
                b.input[r] = prompt[slot.prompt_pos];
                continue;
            }
            let row = &mut b.logits[r * v..(r + 1) * v];
            for &x in &banned {
                row[x as usize] = f32::NEG_INFINITY;
            }
            let id = pick.draw(row, &mut slot.rng, &mut order)?;
            let piece = codec.piece(id);
            slot.written += piece.chars().count();
            let ends_sentence = piece.trim_end().ends_with(is_sentence_end);
            slot.ids.push(id);
            b.input[r] = id;
            if slot.written >= opts.max_chars
                || (opts.stop_at_sentence_end && slot.written >= min_len && ends_sentence)
            {
                finished.push(r);
            }
        }
        // Highest row first, so moving the last live row into a hole never moves a finished one.
        for &r in finished.iter().rev() {
            let done = std::mem::take(&mut live[r].ids);
            out[live[r].request] = done;
            if next_request < requests.len() {
                live[r] = admit(&mut b, r, next_request)?;
                next_request += 1;
            } else {
                let last = live.len() - 1;
                if r != last {
                    b.move_row(last, r, h);
                }
                live.swap_remove(r);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_draws_only_among_the_k_most_likely() {
        let mut rng = rand09::rngs::StdRng::seed_from_u64(3);
        let mut order = Vec::new();
        let logits = [0.0f32, 3.0, 2.9, f32::NEG_INFINITY, -1.0];
        let pick = Pick::TopK { k: 2, inv_t: 1.0 };
        let mut counts = [0usize; 5];
        for _ in 0..2000 {
            let id = pick
                .draw(&mut logits.clone(), &mut rng, &mut order)
                .unwrap();
            counts[id as usize] += 1;
        }
        assert_eq!(counts[0] + counts[3] + counts[4], 0, "{counts:?}");
        assert!(counts[1] > 800 && counts[2] > 800, "{counts:?}");
        let id = Pick::ArgMax
            .draw(&mut logits.clone(), &mut rng, &mut order)
            .unwrap();
        assert_eq!(id, 1);
    }

    #[test]
    fn host_matmul_accumulates_row_major() {
        // [[1,2],[3,4]] · [[1,0,1],[0,1,1]] added to ones.
        let mut dst = vec![1.0f32; 6];
        matmul_acc(
            &mut dst,
            &[1., 2., 3., 4.],
            &[1., 0., 1., 0., 1., 1.],
            2,
            2,
            3,
        );
        assert_eq!(dst, vec![2., 3., 4., 4., 5., 8.]);
    }
}
