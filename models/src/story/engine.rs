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
//! - the gate nonlinearities ([`crate::fast_math`]'s σ and tanh, which vectorise) and the state
//!   update are one pass over each row;
//! - sampling reads one host logits buffer.
//!
//! Slots: up to `capacity` stories advance together ([`StoryPool`]); a finished story leaves
//! (the last live row moves into its row) and a waiting one enters with a zero state, its own
//! keyword term and RNG stream, so every step multiplies a (live rows × width) matrix. A
//! story's characters depend only on its prompt, keywords, options and stream, never on which
//! row or step it ran in (tested: pooled = one at a time = the tensor path).
use candle_core::{DType, Device, Tensor};
use rand09::distr::{Distribution, Uniform};
use rand09::SeedableRng;

use super::charlm::CharLm;
use super::codec::Codec;
use super::copy::CopyTable;
use super::generate::{
    argmax, effective_top_p, finish, is_sentence_end, keep_nucleus, nucleus, stream_seed,
    GenerateOptions,
};
use crate::fast_math::{sigmoid, softmax_scaled, tanh};
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
    /// The keyword-copy gate, when the model has one.
    copy: Option<HostCopy>,
}

/// The copy gates on the host: `h · w + b` is added to the logit of every piece that begins one
/// of the row's keywords, `h · w_next + b_next` to the piece that continues one it has begun.
#[derive(Debug, Clone)]
struct HostCopy {
    /// (H).
    w: Vec<f32>,
    b: f32,
    w_next: Vec<f32>,
    b_next: f32,
    table: CopyTable,
}

/// A `hidden → 1` linear layer's weights and bias on the host.
fn host_gate(gate: &candle_nn::Linear) -> Result<(Vec<f32>, f32)> {
    let b = match gate.bias() {
        Some(b) => host_vec(b)?.first().copied().unwrap_or(0.0),
        None => 0.0,
    };
    Ok((host_vec(gate.weight())?, b))
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
        let copy = match (&lm.copy_gate, &lm.copy_next_gate) {
            (Some(start), Some(next)) => {
                let table = lm.copy_table().cloned().ok_or_else(|| {
                    Error::msg("a keyword-copy model without its copy forms (set_copy_table)")
                })?;
                let (w, b) = host_gate(start)?;
                let (w_next, b_next) = host_gate(next)?;
                Some(HostCopy {
                    w,
                    b,
                    w_next,
                    b_next,
                    table,
                })
            }
            _ => None,
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
            copy,
        })
    }

    /// The first pieces a story with these keyword ids may copy, each once (none without keyword
    /// copy).
    fn copy_ids(&self, keywords: &[u32]) -> Vec<u32> {
        self.copy
            .as_ref()
            .map(|c| c.table.starts(keywords))
            .unwrap_or_default()
    }

    /// The pieces that continue a keyword the story has begun (`history`: its pieces so far).
    fn copy_next_ids(&self, keywords: &[u32], history: &[u32]) -> Vec<u32> {
        self.copy
            .as_ref()
            .map(|c| c.table.next(keywords, history))
            .unwrap_or_default()
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
        for &id in keywords.iter().filter(|_| self.keyword_dim > 0) {
            let id = id as usize;
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

/// `dst (m×n) += lhs (m×k) · rhs (k×n)`, all row-major. With `split_columns` (a step that runs
/// on one part: few rows), a large product is split over the rayon pool by columns, so each
/// thread reads only its share of the weights (a small step is bound by reading them); a step
/// split by rows already runs one part per thread, and a split here would only nest forks. No
/// split changes a sum's order.
fn matmul_acc(
    dst: &mut [f32],
    lhs: &[f32],
    rhs: &[f32],
    (m, k, n): (usize, usize, usize),
    split_columns: bool,
) {
    assert!(dst.len() >= m * n && lhs.len() >= m * k && rhs.len() >= k * n);
    let parallelism = if split_columns && m * k * n >= 1 << 18 {
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

/// The LSTM update of one row: gates (4H: i, f, g, o) and the cell state in, h and c out.
#[inline(always)]
fn lstm_row(gates: &[f32], h: &mut [f32], c: &mut [f32]) {
    let n = h.len();
    // Every slice cut to n, so the loop has no bounds checks left and vectorises.
    let (i, rest) = gates.split_at(n);
    let (f, rest) = rest.split_at(n);
    let (g, o) = rest.split_at(n);
    let (o, c) = (&o[..n], &mut c[..n]);
    // The polynomial σ and tanh, which vectorise: libm's are a call per element and were a
    // quarter of the step (docs/performance.md).
    for j in 0..n {
        let cj = sigmoid(f[j]) * c[j] + sigmoid(i[j]) * tanh(g[j]);
        c[j] = cj;
        h[j] = sigmoid(o[j]) * tanh(cj);
    }
}

/// The draw's reused buffers.
#[derive(Default)]
struct DrawScratch {
    order: Vec<usize>,
    kept: Vec<f32>,
    kept_order: Vec<usize>,
}

/// How a row's next id is drawn: the rules of candle-transformers' `LogitsProcessor` (softmax
/// of logits × 1/temperature, then top-k, then the top-p nucleus, a weighted draw from the same
/// RNG), on a host row.
#[derive(Debug, Clone, Copy)]
enum Pick {
    ArgMax,
    Sample {
        inv_t: f32,
        top_k: Option<usize>,
        top_p: Option<f32>,
    },
}

impl Pick {
    fn new(opts: &GenerateOptions) -> Self {
        if opts.temperature <= 0.0 {
            return Pick::ArgMax;
        }
        Pick::Sample {
            inv_t: (1.0 / opts.temperature) as f32,
            top_k: opts.top_k.filter(|&k| k > 0),
            top_p: effective_top_p(opts).map(|p| p as f32),
        }
    }

    /// Draws from `row` (overwritten with probabilities).
    fn draw(
        self,
        row: &mut [f32],
        rng: &mut rand09::rngs::StdRng,
        scratch: &mut DrawScratch,
    ) -> Result<u32> {
        let DrawScratch {
            order,
            kept,
            kept_order,
        } = scratch;
        let (inv_t, top_k, top_p) = match self {
            Pick::ArgMax => return Ok(argmax(row)),
            Pick::Sample {
                inv_t,
                top_k,
                top_p,
            } => (inv_t, top_k, top_p),
        };
        softmax_scaled(row, inv_t);
        let k = top_k.unwrap_or(row.len());
        if k >= row.len() {
            return match top_p {
                Some(p) => {
                    // The draw over the nucleus's ids in id order is WeightedIndex's over the
                    // row with every other id zeroed (candle's rule).
                    nucleus(row, p, order);
                    order.sort_unstable();
                    weighted_draw(order.iter().map(|&i| (i, row[i])), rng)
                }
                None => weighted_draw(row.iter().copied().enumerate(), rng),
            }
            .map(|i| i as u32);
        }
        // The k most likely ids, in the order a selection leaves them (as LogitsProcessor does).
        order.clear();
        order.extend(0..row.len());
        order.select_nth_unstable_by(k, |&i, &j| row[j].total_cmp(&row[i]));
        order.truncate(k);
        kept.clear();
        kept.extend(order.iter().map(|&i| row[i]));
        // Then the nucleus among them, unless it holds all they have.
        if let Some(p) = top_p.filter(|&p| p < kept.iter().sum::<f32>()) {
            keep_nucleus(kept, p, kept_order);
        }
        let chosen = weighted_draw(kept.iter().copied().enumerate(), rng)?;
        Ok(order[chosen] as u32)
    }
}

/// The draw of rand's `WeightedIndex` over a row, without building its table of running sums
/// (an allocation and a pass over all 2,048 ids of a subword row, at every draw): a uniform in
/// [0, total), then the first id whose running sum passes it. `weights` yields (id, weight) in
/// ascending id order and may leave out ids of weight 0: adding 0 changes no running sum, so
/// the sums, the uniform and the id drawn are `WeightedIndex`'s to the bit (tested against
/// `LogitsProcessor`, which uses it).
fn weighted_draw(
    weights: impl Iterator<Item = (usize, f32)> + Clone,
    rng: &mut rand09::rngs::StdRng,
) -> Result<usize> {
    let mut total = 0f32;
    for (_, w) in weights.clone() {
        if w.is_nan() || w < 0.0 {
            return Err(Error::msg("story sampling: a negative or NaN weight"));
        }
        total += w;
    }
    if total.is_nan() || total <= 0.0 || total.is_infinite() {
        return Err(Error::msg(format!(
            "story sampling: the weights sum to {total}"
        )));
    }
    let chosen = Uniform::new(0.0f32, total)
        .map_err(|e| Error::msg(format!("story sampling: {e}")))?
        .sample(rng);
    let (mut sum, mut last) = (0f32, 0);
    for (i, w) in weights {
        sum += w;
        last = i;
        if sum > chosen {
            return Ok(i);
        }
    }
    Ok(last)
}

/// One story to write: the ids the model reads first, the story's keyword ids (for a model with
/// a keyword table) and its RNG stream.
#[derive(Debug, Clone)]
pub struct StoryRequest {
    pub prompt: Vec<u32>,
    pub keywords: Vec<u32>,
    pub stream: u64,
}

/// The live state of one row.
struct Slot<T> {
    token: T,
    prompt: Vec<u32>,
    prompt_pos: usize,
    written: usize,
    ids: Vec<u32>,
    keywords: Vec<u32>,
    rng: rand09::rngs::StdRng,
    pick: Pick,
    opts: GenerateOptions,
}

impl<T> Slot<T> {
    /// After a step: feeds the next prompt id, or draws the next piece from `row` (the row's
    /// logits) and feeds it. Sets the pieces that continue a hashtag the story has begun, for
    /// the next step's copy gate. True when the story is done.
    #[allow(clippy::too_many_arguments)]
    fn advance(
        &mut self,
        row: &mut [f32],
        input: &mut u32,
        copy_next: &mut Vec<u32>,
        lm: &HostLm,
        codec: &Codec,
        banned: &[u32],
        scratch: &mut DrawScratch,
    ) -> Result<bool> {
        self.prompt_pos += 1;
        if self.prompt_pos < self.prompt.len() {
            *input = self.prompt[self.prompt_pos];
            return Ok(false);
        }
        for &x in banned {
            row[x as usize] = f32::NEG_INFINITY;
        }
        let id = self.pick.draw(row, &mut self.rng, scratch)?;
        let piece = codec.piece(id);
        self.written += piece.chars().count();
        let ends_sentence = piece.trim_end().ends_with(is_sentence_end);
        self.ids.push(id);
        *input = id;
        if lm.copy.is_some() {
            *copy_next = lm.copy_next_ids(&self.keywords, &self.ids);
        }
        let o = &self.opts;
        Ok(self.written >= o.max_chars
            || (o.stop_at_sentence_end && self.written >= o.max_chars * 4 / 5 && ends_sentence))
    }
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
    /// Per row, the first pieces its story may copy, and (set before each step) the pieces that
    /// continue a hashtag it has begun.
    copy: Vec<Vec<u32>>,
    copy_next: Vec<Vec<u32>>,
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
            copy: vec![Vec::new(); slots],
            copy_next: vec![Vec::new(); slots],
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
        self.copy.swap(from, to);
        self.copy_next.swap(from, to);
    }
}

/// What a step does with each row once its logits are out, on the thread that computed them
/// (the logits are still in its cache, and a step needs one fork and join, not two): the
/// rows' stories draw their next pieces ([`Slot::advance`]) and say whether they are done.
struct Draws<'a, T> {
    slots: &'a mut [Slot<T>],
    done: &'a mut [bool],
    codec: &'a Codec,
    banned: &'a [u32],
}

impl<'a, T> Draws<'a, T> {
    fn split_at(self, r: usize) -> (Self, Self) {
        let (s0, s1) = self.slots.split_at_mut(r);
        let (d0, d1) = self.done.split_at_mut(r);
        let (codec, banned) = (self.codec, self.banned);
        (
            Draws {
                slots: s0,
                done: d0,
                codec,
                banned,
            },
            Draws {
                slots: s1,
                done: d1,
                codec,
                banned,
            },
        )
    }
}

/// Row-range views of the slot buffers: rows are independent in a step, so a step can run on
/// disjoint ranges of rows at once.
struct Rows<'a, T> {
    h: Vec<&'a mut [f32]>,
    c: Vec<&'a mut [f32]>,
    row_bias: Vec<&'a [f32]>,
    gates: &'a mut [f32],
    xh: &'a mut [f32],
    logits: &'a mut [f32],
    input: &'a mut [u32],
    copy: &'a [Vec<u32>],
    copy_next: &'a mut [Vec<u32>],
    /// None: the step only computes logits (tests compare them).
    draws: Option<Draws<'a, T>>,
}

impl<'a, T> Rows<'a, T> {
    fn of(b: &'a mut Buffers, draws: Option<Draws<'a, T>>) -> Self {
        Rows {
            h: b.h.iter_mut().map(|v| v.as_mut_slice()).collect(),
            c: b.c.iter_mut().map(|v| v.as_mut_slice()).collect(),
            row_bias: b.row_bias.iter().map(|v| v.as_slice()).collect(),
            gates: &mut b.gates,
            xh: &mut b.xh,
            logits: &mut b.logits,
            input: &mut b.input,
            copy: &b.copy,
            copy_next: &mut b.copy_next,
            draws,
        }
    }

    /// The first `r` rows and the rest.
    fn split_at(self, r: usize, hidden: usize, vocab: usize) -> (Self, Self) {
        let (h, g) = (hidden, 4 * hidden);
        let split_mut = |v: Vec<&'a mut [f32]>, w: usize| -> (Vec<_>, Vec<_>) {
            v.into_iter().map(|s| s.split_at_mut(r * w)).unzip()
        };
        let (h0, h1) = split_mut(self.h, h);
        let (c0, c1) = split_mut(self.c, h);
        let (b0, b1) = self.row_bias.into_iter().map(|s| s.split_at(r * g)).unzip();
        let (g0, g1) = self.gates.split_at_mut(r * g);
        let (x0, x1) = self.xh.split_at_mut(r * 2 * h);
        let (l0, l1) = self.logits.split_at_mut(r * vocab);
        let (i0, i1) = self.input.split_at_mut(r);
        let (k0, k1) = self.copy.split_at(r);
        let (n0, n1) = self.copy_next.split_at_mut(r);
        let (d0, d1) = match self.draws.map(|d| d.split_at(r)) {
            Some((d0, d1)) => (Some(d0), Some(d1)),
            None => (None, None),
        };
        (
            Rows {
                h: h0,
                c: c0,
                row_bias: b0,
                gates: g0,
                xh: x0,
                logits: l0,
                input: i0,
                copy: k0,
                copy_next: n0,
                draws: d0,
            },
            Rows {
                h: h1,
                c: c1,
                row_bias: b1,
                gates: g1,
                xh: x1,
                logits: l1,
                input: i1,
                copy: k1,
                copy_next: n1,
                draws: d1,
            },
        )
    }
}

/// Rows from which a step is split between threads by rows (below, its matmuls are split by
/// columns instead).
const ROWS_TO_SPLIT: usize = 32;
/// Fewest rows a thread takes when a step is split by rows.
const MIN_ROWS_PER_THREAD: usize = 16;

/// One step of every live row: their inputs in `b.input[..rows]`, their logits out in
/// `b.logits[..rows · vocab]`, and, with `draws`, each row's next piece drawn and fed. The rows
/// are split into one range per thread, each range a whole step of its own (one join per step,
/// instead of a fork and join in every matmul and gate pass).
fn step<T: Send>(
    lm: &HostLm,
    b: &mut Buffers,
    rows: usize,
    draws: Option<Draws<'_, T>>,
) -> Result<()> {
    let threads = rayon::current_num_threads();
    let parts = if rows < ROWS_TO_SPLIT {
        1
    } else {
        threads.min(rows / MIN_ROWS_PER_THREAD).max(1)
    };
    if parts > 1 {
        step_parts(lm, Rows::of(b, draws), rows, parts)
    } else {
        step_rows(lm, Rows::of(b, draws), rows, true)
    }
}

fn step_parts<T: Send>(lm: &HostLm, rows: Rows<'_, T>, n: usize, parts: usize) -> Result<()> {
    if parts <= 1 {
        return step_rows(lm, rows, n, false);
    }
    let left_parts = parts / 2;
    let mid = n * left_parts / parts;
    let (a, b) = rows.split_at(mid, lm.hidden, lm.vocab);
    let (a, b) = rayon::join(
        || step_parts(lm, a, mid, left_parts),
        || step_parts(lm, b, n - mid, parts - left_parts),
    );
    a.and(b)
}

/// One step of `n` rows on this thread (`whole`: they are the whole step, and a large matmul
/// may split by columns).
fn step_rows<T>(lm: &HostLm, rows: Rows<'_, T>, n: usize, whole: bool) -> Result<()> {
    let (h, g, v) = (lm.hidden, 4 * lm.hidden, lm.vocab);
    let Rows {
        h: mut hs,
        c: mut cs,
        row_bias,
        gates,
        xh,
        logits,
        input,
        copy,
        copy_next,
        draws,
    } = rows;
    let gates = &mut gates[..n * g];
    // Layer 0: the looked-up input term and the story's keyword term, then h · W_h.
    for (r, dst) in gates.chunks_mut(g).enumerate() {
        let id = input[r] as usize;
        let t = &lm.input_table[id * g..(id + 1) * g];
        let kb = &row_bias[0][r * g..(r + 1) * g];
        dst.iter_mut()
            .zip(t.iter().zip(kb))
            .for_each(|(d, (t, k))| *d = t + k);
    }
    matmul_acc(gates, &hs[0][..n * h], &lm.w_h0, (n, h, g), whole);
    update(gates, hs[0], cs[0], n, h);
    for l in 1..lm.layers() {
        let (below, this) = hs.split_at_mut(l);
        for r in 0..n {
            let x = &mut xh[r * 2 * h..(r + 1) * 2 * h];
            x[..h].copy_from_slice(&below[l - 1][r * h..(r + 1) * h]);
            x[h..].copy_from_slice(&this[0][r * h..(r + 1) * h]);
        }
        gates.copy_from_slice(&row_bias[l][..n * g]);
        matmul_acc(
            gates,
            &xh[..n * 2 * h],
            &lm.w_xh[l - 1],
            (n, 2 * h, g),
            whole,
        );
        update(gates, this[0], cs[l], n, h);
    }
    let logits = &mut logits[..n * v];
    for dst in logits.chunks_mut(v) {
        dst.copy_from_slice(&lm.b_out);
    }
    let top = &hs[lm.layers() - 1][..n * h];
    matmul_acc(logits, top, &lm.w_out, (n, h, v), whole);
    if let Some(cg) = &lm.copy {
        let gate =
            |hr: &[f32], w: &[f32], b: f32| b + hr.iter().zip(w).map(|(a, w)| a * w).sum::<f32>();
        for (r, (row, hr)) in logits.chunks_mut(v).zip(top.chunks(h)).enumerate() {
            if !copy[r].is_empty() {
                let g = gate(hr, &cg.w, cg.b);
                copy[r].iter().for_each(|&id| row[id as usize] += g);
            }
            if !copy_next[r].is_empty() {
                let g = gate(hr, &cg.w_next, cg.b_next);
                copy_next[r].iter().for_each(|&id| row[id as usize] += g);
            }
        }
    }
    let Some(d) = draws else {
        return Ok(());
    };
    let mut scratch = DrawScratch::default();
    for (r, row) in logits.chunks_mut(v).enumerate() {
        d.done[r] = d.slots[r].advance(
            row,
            &mut input[r],
            &mut copy_next[r],
            lm,
            d.codec,
            d.banned,
            &mut scratch,
        )?;
    }
    Ok(())
}

/// The LSTM update of `rows` rows. The gate pass is compiled once more for AVX-512 and for
/// AVX2 and picked at run time: the baseline build's 4-wide vectors made it a tenth of a
/// subword step. The arithmetic is the same element by element (Rust never fuses a multiply
/// and an add on its own), so every CPU computes the same states.
fn update(gates: &[f32], h: &mut [f32], c: &mut [f32], rows: usize, hidden: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F, the one feature the function is compiled for.
            return unsafe { update_avx512(gates, h, c, rows, hidden) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2.
            return unsafe { update_avx2(gates, h, c, rows, hidden) };
        }
    }
    update_rows(gates, h, c, rows, hidden)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn update_avx512(gates: &[f32], h: &mut [f32], c: &mut [f32], rows: usize, hidden: usize) {
    update_rows(gates, h, c, rows, hidden)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn update_avx2(gates: &[f32], h: &mut [f32], c: &mut [f32], rows: usize, hidden: usize) {
    update_rows(gates, h, c, rows, hidden)
}

#[inline(always)]
fn update_rows(gates: &[f32], h: &mut [f32], c: &mut [f32], rows: usize, hidden: usize) {
    let g = 4 * hidden;
    for (gr, (hr, cr)) in gates[..rows * g].chunks(g).zip(
        h[..rows * hidden]
            .chunks_mut(hidden)
            .zip(c[..rows * hidden].chunks_mut(hidden)),
    ) {
        lstm_row(gr, hr, cr);
    }
}

/// Up to `capacity` stories advancing together. Stories enter with [`StoryPool::admit`] while
/// there is room, each with its own options and a caller's token; [`StoryPool::step`] advances
/// them all by one piece and hands back the ones that finished, whose rows are dropped.
pub struct StoryPool<'a, T> {
    lm: &'a HostLm,
    codec: &'a Codec,
    banned: Vec<u32>,
    buffers: Buffers,
    live: Vec<Slot<T>>,
    capacity: usize,
}

impl<'a, T> StoryPool<'a, T> {
    pub fn new(lm: &'a HostLm, codec: &'a Codec, capacity: usize) -> Self {
        let capacity = capacity.max(1);
        StoryPool {
            lm,
            codec,
            banned: codec.story_banned(),
            buffers: Buffers::new(lm, capacity),
            live: Vec::with_capacity(capacity),
            capacity,
        }
    }

    pub fn has_room(&self) -> bool {
        self.live.len() < self.capacity
    }

    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    /// Stories in the pool.
    pub fn len(&self) -> usize {
        self.live.len()
    }

    /// Drops every story in the pool and returns their tokens (after a failed step).
    pub fn clear(&mut self) -> Vec<T> {
        self.live.drain(..).map(|s| s.token).collect()
    }

    /// Puts a story into the next free row (fresh state, its keyword term, its RNG stream).
    /// A story of `max_chars` 0 is refused: it has nothing to write (the service answers it
    /// with an empty story without admitting it).
    pub fn admit(&mut self, req: StoryRequest, opts: &GenerateOptions, token: T) -> Result<()> {
        if !self.has_room() {
            return Err(Error::msg("the story pool is full"));
        }
        if req.prompt.is_empty() {
            return Err(Error::msg("a story prompt is empty"));
        }
        if opts.max_chars == 0 {
            return Err(Error::msg("a story of 0 characters"));
        }
        if let Some(&bad) = req.prompt.iter().find(|&&id| id as usize >= self.lm.vocab) {
            return Err(Error::msg(format!(
                "input id {bad} outside a vocabulary of {}",
                self.lm.vocab
            )));
        }
        let (row, h) = (self.live.len(), self.lm.hidden);
        let b = &mut self.buffers;
        self.lm.row_bias(&req.keywords, &mut b.row_bias, row)?;
        b.copy[row] = self.lm.copy_ids(&req.keywords);
        b.copy_next[row].clear();
        for l in 0..self.lm.layers() {
            b.h[l][row * h..(row + 1) * h].fill(0.0);
            b.c[l][row * h..(row + 1) * h].fill(0.0);
        }
        b.input[row] = req.prompt[0];
        self.live.push(Slot {
            token,
            rng: rand09::rngs::StdRng::seed_from_u64(stream_seed(opts.seed, req.stream)),
            prompt: req.prompt,
            prompt_pos: 0,
            written: 0,
            ids: Vec::new(),
            keywords: req.keywords,
            pick: Pick::new(opts),
            opts: opts.clone(),
        });
        Ok(())
    }

    /// Advances every story by one piece; returns the stories that finished, with their tokens.
    pub fn step(&mut self) -> Result<Vec<(T, String)>>
    where
        T: Send,
    {
        let rows = self.live.len();
        if rows == 0 {
            return Ok(Vec::new());
        }
        let mut done = vec![false; rows];
        let draws = Draws {
            slots: &mut self.live,
            done: &mut done,
            codec: self.codec,
            banned: &self.banned,
        };
        step(self.lm, &mut self.buffers, rows, Some(draws))?;
        let finished: Vec<usize> = (0..rows).filter(|&r| done[r]).collect();
        // Highest row first, so moving the last live row into a hole never moves a finished one.
        let mut out = Vec::with_capacity(finished.len());
        for &r in finished.iter().rev() {
            let last = self.live.len() - 1;
            if r != last {
                self.buffers.move_row(last, r, self.lm.hidden);
            }
            let slot = self.live.swap_remove(r);
            // Decoded whole: a subword piece may hold half of a character's bytes.
            let text = finish(&self.codec.decode(&slot.ids), &slot.opts);
            out.push((slot.token, text));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::story::charlm::CharLmConfig;
    use candle_nn::{VarBuilder, VarMap};

    /// The host step's logits follow the tensor step's up to rounding, over several layers,
    /// keyword vectors, keyword copy (with two keywords sharing a piece) and rows of different
    /// keyword sets.
    #[test]
    fn host_step_matches_the_tensor_step() {
        for copy in [false, true] {
            host_step_matches_the_tensor_step_with(copy);
        }
    }

    fn host_step_matches_the_tensor_step_with(copy: bool) {
        let cfg = CharLmConfig {
            vocab: 11,
            emb: 6,
            hidden: 12,
            layers: 3,
            dropout: 0.0,
            keywords: 5,
            keyword_dim: 4,
            copy,
        };
        let vm = VarMap::new();
        let mut lm =
            CharLm::new(&cfg, VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu)).unwrap();
        assert_eq!(lm.has_copy(), copy);
        // `w_k` and the copy gate start at zero: give every weight a value.
        for var in vm.all_vars() {
            var.set(&Tensor::randn(0f32, 0.4, var.shape(), &Device::Cpu).unwrap())
                .unwrap();
        }
        // Forms that the rows' input sequences below begin, so continuations fire: row 0 reads
        // 0, 7, 3, 10, …; row 1 reads 3, 10, 6, …
        let forms = vec![
            vec![vec![0]],
            vec![vec![7, 3, 10], vec![4]],
            vec![vec![9]],
            vec![],
            vec![vec![3, 10, 6], vec![7, 2]],
        ];
        lm.set_copy_table(CopyTable::new(forms)).unwrap();
        let host = HostLm::from_lm(&lm).unwrap();
        let sets: Vec<Vec<u32>> = vec![vec![], vec![1, 4], vec![2]];
        let rows = sets.len();
        let mut b = Buffers::new(&host, rows);
        for (r, set) in sets.iter().enumerate() {
            host.row_bias(set, &mut b.row_bias, r).unwrap();
            b.copy[r] = host.copy_ids(set);
        }
        assert_eq!(b.copy[1], if copy { vec![7, 4, 3] } else { vec![] });
        let mut kv = lm.keyword_input(&sets).unwrap();
        let mut state = lm.zero_state(rows).unwrap();
        let mut history: Vec<Vec<u32>> = vec![Vec::new(); rows];
        let mut continued = 0;
        for t in 0..30u32 {
            let ids: Vec<u32> = (0..rows as u32).map(|r| (t * 7 + r * 3) % 11).collect();
            b.input[..rows].copy_from_slice(&ids);
            for r in 0..rows {
                history[r].push(ids[r]);
                b.copy_next[r] = host.copy_next_ids(&sets[r], &history[r]);
                continued += b.copy_next[r].len();
            }
            if let (Some(input), Some(table)) = (kv.as_mut(), lm.copy_table()) {
                let next: Vec<Vec<u32>> = (0..rows)
                    .map(|r| table.next(&sets[r], &history[r]))
                    .collect();
                input.copy_next = lm.copy_next_mask(&next).unwrap();
            }
            step::<()>(&host, &mut b, rows, None).unwrap();
            let (logits, next) = lm
                .step(
                    &Tensor::new(ids.as_slice(), &Device::Cpu).unwrap(),
                    &state,
                    kv.as_ref(),
                )
                .unwrap();
            state = next;
            let want = logits.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            for (i, (&h, &w)) in b.logits[..rows * 11].iter().zip(&want).enumerate() {
                assert!(
                    (h - w).abs() <= 1e-4 * (1.0 + w.abs()),
                    "step {t}, logit {i}: {h} vs {w}"
                );
            }
        }
        assert_eq!(continued > 0, copy);
    }

    #[test]
    fn top_k_draws_only_among_the_k_most_likely() {
        let mut rng = rand09::rngs::StdRng::seed_from_u64(3);
        let mut scratch = DrawScratch::default();
        let logits = [0.0f32, 3.0, 2.9, f32::NEG_INFINITY, -1.0];
        let pick = Pick::new(&GenerateOptions {
            temperature: 1.0,
            top_k: Some(2),
            ..Default::default()
        });
        let mut counts = [0usize; 5];
        for _ in 0..2000 {
            let id = pick
                .draw(&mut logits.clone(), &mut rng, &mut scratch)
                .unwrap();
            counts[id as usize] += 1;
        }
        assert_eq!(counts[0] + counts[3] + counts[4], 0, "{counts:?}");
        assert!(counts[1] > 800 && counts[2] > 800, "{counts:?}");
        let id = Pick::ArgMax
            .draw(&mut logits.clone(), &mut rng, &mut scratch)
            .unwrap();
        assert_eq!(id, 1);
    }

    /// The host draw follows candle's `LogitsProcessor` under every rule, on short rows and on
    /// subword-wide rows with a peak (the nucleus inside the ids of at least 1/16 or 1/64) or
    /// none. The host softmax sums in lanes with a polynomial e^, so a draw could differ where
    /// its uniform falls within rounding of a boundary; none of these does.
    #[test]
    fn host_draws_equal_logits_processor_draws_for_every_rule() {
        use candle_transformers::generation::LogitsProcessor;
        let mut values = rand09::rngs::StdRng::seed_from_u64(11);
        let rules = [
            (0.8, None, None),
            (0.8, Some(5), None),
            (0.8, None, Some(0.9)),
            (1.0, Some(8), Some(0.7)),
            (0.5, Some(40), Some(0.95)),
            (0.0, None, Some(0.9)),
        ];
        for (temperature, top_k, top_p) in rules {
            let opts = GenerateOptions {
                temperature,
                top_k,
                top_p,
                ..Default::default()
            };
            let pick = Pick::new(&opts);
            let mut ours = rand09::rngs::StdRng::seed_from_u64(5);
            let mut theirs =
                LogitsProcessor::from_sampling(5, super::super::generate::sampling(&opts));
            let mut scratch = DrawScratch::default();
            let shapes = (0..300).map(|t| (t, 24, 0.0)).chain((0..90).map(|t| {
                let peak = [0.0f32, 6.0, 12.0][t % 3];
                (300 + t, 2048, peak)
            }));
            for (t, width, peak) in shapes {
                let mut row: Vec<f32> = (0..width)
                    .map(|_| rand09::Rng::random_range(&mut values, -4.0f32..4.0))
                    .collect();
                row[(t * 37) % width] += peak;
                let want = theirs
                    .sample(&Tensor::new(row.as_slice(), &Device::Cpu).unwrap())
                    .unwrap();
                let got = pick
                    .draw(&mut row.clone(), &mut ours, &mut scratch)
                    .unwrap();
                assert_eq!(got, want, "{opts:?}, draw {t}");
            }
        }
    }

    #[test]
    fn host_matmul_accumulates_row_major() {
        // [[1,2],[3,4]] · [[1,0,1],[0,1,1]] added to ones.
        let mut dst = vec![1.0f32; 6];
        matmul_acc(
            &mut dst,
            &[1., 2., 3., 4.],
            &[1., 0., 1., 0., 1., 1.],
            (2, 2, 3),
            false,
        );
        assert_eq!(dst, vec![2., 3., 4., 4., 5., 8.]);
    }
}
