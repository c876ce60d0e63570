//! The character language model: embedding, stacked LSTM layers, a linear layer to logits over
//! the alphabet.
//!
//! A hashtag-conditioned model also has a keyword table: the hashtags of a story become one
//! vector (the sum of their rows) that every LSTM layer reads at every step, beside the prefix
//! line it reads once. Truncated BPTT never carries a gradient from a word 300 characters into
//! the story back to the prefix it should echo; the vector gives every window that path.
//!
//! The layers are [`crate::nn::LstmCell`]s in the story layout; a training window is unrolled
//! step by step from per-step inputs (see that module for why).
use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::{Embedding, Init, Linear, VarBuilder};
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};

use super::copy::CopyTable;
use crate::nn::dropout::{dropout_mask, DropDraw};
use crate::nn::LstmCell;
use crate::Result;

/// Sizes of a [`CharLm`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CharLmConfig {
    /// Alphabet size.
    pub vocab: usize,
    /// Character embedding width.
    pub emb: usize,
    /// LSTM units per layer.
    pub hidden: usize,
    /// Stacked LSTM layers.
    pub layers: usize,
    /// Dropout on the embedding, between layers and before the output layer (training only).
    pub dropout: f32,
    /// Keywords in the conditioning table (0: no table; the model reads hashtags only as text).
    #[serde(default)]
    pub keywords: usize,
    /// Width of a keyword vector.
    #[serde(default)]
    pub keyword_dim: usize,
    /// Keyword copy (subword models with a keyword table): two learned gates on the top layer
    /// raise the logits of the pieces that begin the story's hashtags and of the piece that
    /// continues one already begun ([`super::copy`]), so a model can write a hashtag it has
    /// rarely seen without having learnt to spell it out of the prefix line.
    #[serde(default)]
    pub copy: bool,
}

/// Hidden and cell state of every layer, each (B, hidden).
#[derive(Debug, Clone)]
pub struct LmState {
    pub h: Vec<Tensor>,
    pub c: Vec<Tensor>,
}

impl LmState {
    /// Cuts the graph: truncated backpropagation through time carries values, not gradients.
    pub fn detach(&self) -> LmState {
        LmState {
            h: self.h.iter().map(|t| t.detach()).collect(),
            c: self.c.iter().map(|t| t.detach()).collect(),
        }
    }
}

/// The character-level LSTM language model.
#[derive(Debug, Clone)]
pub struct CharLm {
    cfg: CharLmConfig,
    pub(crate) embed: Embedding,
    /// (keywords, keyword_dim), when the model is keyword-conditioned.
    pub(crate) keyword_table: Option<Tensor>,
    pub(crate) cells: Vec<LstmCell>,
    pub(crate) out: Linear,
    /// (hidden → 1) each: the boosts of a hashtag's first pieces and of the piece that
    /// continues one begun, when [`CharLmConfig::copy`].
    pub(crate) copy_gate: Option<Linear>,
    pub(crate) copy_next_gate: Option<Linear>,
    /// Each keyword's forms (see [`CharLm::set_copy_table`]).
    pub(crate) copy_table: Option<CopyTable>,
    device: Device,
}

/// The keyword input of a set of streams: their keyword vectors and, for a model with keyword
/// copy, which pieces each may copy.
#[derive(Debug, Clone)]
pub struct KeywordInput {
    /// (S, keyword_dim).
    pub vectors: Tensor,
    /// (S, vocab), 1 where a piece begins one of the set's keywords.
    pub copy: Option<Tensor>,
    /// (S, vocab), 1 where a piece continues a keyword the stream has begun: per step, made by
    /// the caller from each stream's history ([`CharLm::copy_next_mask`]).
    pub copy_next: Option<Tensor>,
}

impl CharLm {
    /// Builds the layers from `vb` (names: `embed.*`, `keywords.table`, `lstm{i}.*`, `out.*`).
    pub fn new(cfg: &CharLmConfig, vb: VarBuilder) -> Result<Self> {
        let embed = candle_nn::embedding(cfg.vocab, cfg.emb, vb.pp("embed"))?;
        let keyword_table = (cfg.keywords > 0 && cfg.keyword_dim > 0)
            .then(|| {
                vb.pp("keywords").get_with_hints(
                    (cfg.keywords, cfg.keyword_dim),
                    "table",
                    Init::Randn {
                        mean: 0.0,
                        stdev: 1.0,
                    },
                )
            })
            .transpose()?;
        let keyword_dim = if keyword_table.is_some() {
            cfg.keyword_dim
        } else {
            0
        };
        let mut cells = Vec::with_capacity(cfg.layers);
        for l in 0..cfg.layers {
            let in_dim = if l == 0 { cfg.emb } else { cfg.hidden };
            cells.push(LstmCell::story_layout(
                in_dim,
                cfg.hidden,
                keyword_dim,
                vb.pp(format!("lstm{l}")),
            )?);
        }
        let out = candle_nn::linear(cfg.hidden, cfg.vocab, vb.pp("out"))?;
        let copy_gate = (cfg.copy && keyword_dim > 0)
            .then(|| candle_nn::linear(cfg.hidden, 1, vb.pp("copy")))
            .transpose()?;
        let copy_next_gate = (cfg.copy && keyword_dim > 0)
            .then(|| candle_nn::linear(cfg.hidden, 1, vb.pp("copy_next")))
            .transpose()?;
        Ok(CharLm {
            cfg: cfg.clone(),
            embed,
            keyword_table,
            cells,
            out,
            copy_gate,
            copy_next_gate,
            copy_table: None,
            device: vb.device().clone(),
        })
    }

    /// Whether the model copies keyword pieces (see [`CharLmConfig::copy`]).
    pub fn has_copy(&self) -> bool {
        self.copy_gate.is_some()
    }

    /// Each keyword id's forms ([`CopyTable::for_words`] over the checkpoint's keyword table
    /// and vocabulary). They are data, not weights, so a loader sets them; a copy model without
    /// them refuses to run.
    pub fn set_copy_table(&mut self, table: CopyTable) -> Result<()> {
        if !self.has_copy() {
            return Ok(());
        }
        let (k, v) = (self.cfg.keywords, self.cfg.vocab);
        if table.len() != k {
            return Err(crate::Error::msg(format!(
                "copy forms for {} keywords, but the keyword table has {k}",
                table.len()
            )));
        }
        if let Some(id) = table.max_piece().filter(|&id| id as usize >= v) {
            return Err(crate::Error::msg(format!(
                "copy piece {id} outside a vocabulary of {v}"
            )));
        }
        self.copy_table = Some(table);
        Ok(())
    }

    /// The copy forms, for a copy model whose table is set.
    pub fn copy_table(&self) -> Option<&CopyTable> {
        self.copy_table.as_ref().filter(|_| self.has_copy())
    }

    fn require_copy_table(&self) -> Result<Option<&CopyTable>> {
        match (self.has_copy(), &self.copy_table) {
            (false, _) => Ok(None),
            (true, None) => Err(crate::Error::msg(
                "a keyword-copy model without its copy forms (set_copy_table)",
            )),
            (true, Some(t)) => Ok(Some(t)),
        }
    }

    /// A (rows, vocab) 0/1 matrix with row r's pieces set: the form a copy mask takes.
    /// `None` for a model without keyword copy.
    pub fn copy_next_mask(&self, rows: &[Vec<u32>]) -> Result<Option<Tensor>> {
        if !self.has_copy() {
            return Ok(None);
        }
        Ok(Some(piece_mask(rows, self.cfg.vocab, &self.device)?))
    }

    pub fn config(&self) -> &CharLmConfig {
        &self.cfg
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn zero_state(&self, batch: usize) -> Result<LmState> {
        let z = Tensor::zeros((batch, self.cfg.hidden), DType::F32, &self.device)?;
        Ok(LmState {
            h: vec![z.clone(); self.cfg.layers],
            c: vec![z; self.cfg.layers],
        })
    }

    /// Whether the model has a keyword table (see the module docs).
    pub fn has_keywords(&self) -> bool {
        self.keyword_table.is_some()
    }

    /// One keyword vector per set of keyword ids (rows of the table, summed; an empty set gives
    /// zeros): (sets, keyword_dim). `None` for a model without a keyword table. Ids out of range
    /// are an error.
    pub fn keyword_vectors(&self, sets: &[Vec<u32>]) -> Result<Option<Tensor>> {
        let Some(table) = &self.keyword_table else {
            return Ok(None);
        };
        let k = self.cfg.keywords;
        // A multi-hot matrix times the table: one matmul, whose backward is one more.
        let hot = multi_hot(sets, k, &self.device, |id| {
            format!("keyword id {id} outside a table of {k}")
        })?;
        Ok(Some(hot.matmul(table)?))
    }

    /// The keyword input of each set of keyword ids: [`CharLm::keyword_vectors`] and, with
    /// keyword copy, the pieces the set may copy. `None` for a model without a keyword table.
    pub fn keyword_input(&self, sets: &[Vec<u32>]) -> Result<Option<KeywordInput>> {
        let Some(vectors) = self.keyword_vectors(sets)? else {
            return Ok(None);
        };
        let copy = match self.require_copy_table()? {
            None => None,
            Some(table) => {
                let starts: Vec<Vec<u32>> = sets.iter().map(|s| table.starts(s)).collect();
                Some(piece_mask(&starts, self.cfg.vocab, &self.device)?)
            }
        };
        Ok(Some(KeywordInput {
            vectors,
            copy,
            copy_next: None,
        }))
    }

    /// The output layer: logits from the top layer's output, plus the copy gates' boosts on the
    /// pieces the masks (rows × vocab) mark.
    fn logits(&self, top: &Tensor, copy: Option<&Tensor>, next: Option<&Tensor>) -> Result<Tensor> {
        let mut logits = self.out.forward(top)?;
        for (gate, mask) in [(&self.copy_gate, copy), (&self.copy_next_gate, next)] {
            if let (Some(gate), Some(mask)) = (gate, mask) {
                logits = logits.add(&mask.broadcast_mul(&gate.forward(top)?)?)?;
            }
        }
        Ok(logits)
    }

    /// One character for each of B streams: ids (B,) u32 → logits (B, vocab). `keywords` is the
    /// streams' keyword input (B rows) from [`CharLm::keyword_input`]. No dropout.
    pub fn step(
        &self,
        ids: &Tensor,
        state: &LmState,
        keywords: Option<&KeywordInput>,
    ) -> Result<(Tensor, LmState)> {
        let (top, state) = self.step_hidden(ids, state, keywords.map(|k| &k.vectors), None)?;
        let logits = self.logits(
            &top,
            keywords.and_then(|k| k.copy.as_ref()),
            keywords.and_then(|k| k.copy_next.as_ref()),
        )?;
        Ok((logits, state))
    }

    fn step_hidden(
        &self,
        ids: &Tensor,
        state: &LmState,
        keywords: Option<&Tensor>,
        mut dropout: Option<&mut StdRng>,
    ) -> Result<(Tensor, LmState)> {
        let p = self.cfg.dropout;
        let b = ids.dim(0)?;
        let mut x = self.embed.forward(ids)?;
        let mut hs = Vec::with_capacity(self.cells.len());
        let mut cs = Vec::with_capacity(self.cells.len());
        for (l, cell) in self.cells.iter().enumerate() {
            if let Some(rng) = dropout.as_deref_mut() {
                if p > 0.0 {
                    let d = x.dim(1)?;
                    x = x.mul(&dropout_mask(rng, b, d, p, DropDraw::Below, &self.device)?)?;
                }
            }
            let (h, c) = cell.step(&x, &state.h[l], &state.c[l], keywords)?;
            x = h.clone();
            hs.push(h);
            cs.push(c);
        }
        if let Some(rng) = dropout {
            if p > 0.0 {
                x = x.mul(&dropout_mask(
                    rng,
                    b,
                    self.cfg.hidden,
                    p,
                    DropDraw::Below,
                    &self.device,
                )?)?;
            }
        }
        Ok((x, LmState { h: hs, c: cs }))
    }

    /// A window of T characters for B streams: ids (B, T) u32 → logits (B·T, vocab), row b·T + t,
    /// and the state after the window. Dropout when an RNG is given (training).
    pub fn forward(
        &self,
        ids: &Tensor,
        state: &LmState,
        keywords: Option<&WindowKeywords>,
        mut dropout: Option<&mut StdRng>,
    ) -> Result<(Tensor, LmState)> {
        let (b, t) = ids.dims2()?;
        let mut state = state.clone();
        let mut tops = Vec::with_capacity(t);
        let mut copies = Vec::new();
        for i in 0..t {
            // Slicing the ids is fine: they need no gradient.
            let col = ids.narrow(1, i, 1)?.squeeze(1)?.contiguous()?;
            let mut kw = None;
            if let Some(w) = keywords {
                kw = Some(w.input.vectors.index_select(&w.rows[i], 0)?);
                if let Some(copy) = &w.input.copy {
                    copies.push(copy.index_select(&w.rows[i], 0)?);
                }
            }
            let (top, s) = self.step_hidden(&col, &state, kw.as_ref(), dropout.as_deref_mut())?;
            state = s;
            tops.push(top);
        }
        let tops = Tensor::stack(&tops, 1)?.reshape((b * t, self.cfg.hidden))?;
        let copy = if copies.is_empty() {
            None
        } else {
            Some(Tensor::stack(&copies, 1)?.reshape((b * t, self.cfg.vocab))?)
        };
        let next = keywords.and_then(|w| w.copy_next.as_ref());
        Ok((self.logits(&tops, copy.as_ref(), next)?, state))
    }
}

/// A (rows, vocab) 0/1 matrix with each row's pieces set (copy sets hold each piece once).
fn piece_mask(rows: &[Vec<u32>], vocab: usize, device: &Device) -> Result<Tensor> {
    multi_hot(rows, vocab, device, |id| {
        format!("copy piece {id} outside a vocabulary of {vocab}")
    })
}

/// A (rows, width) matrix counting each row's ids; an id outside `width` is an error.
fn multi_hot(
    rows: &[Vec<u32>],
    width: usize,
    device: &Device,
    out_of_range: impl Fn(u32) -> String,
) -> Result<Tensor> {
    let mut m = vec![0f32; rows.len() * width];
    for (r, ids) in rows.iter().enumerate() {
        for &id in ids {
            if id as usize >= width {
                return Err(crate::Error::msg(out_of_range(id)));
            }
            m[r * width + id as usize] += 1.0;
        }
    }
    Ok(Tensor::from_vec(m, (rows.len(), width), device)?)
}

/// The keyword vectors of a window: which keyword set each stream reads at each step.
#[derive(Debug, Clone)]
pub struct WindowKeywords {
    /// One input per keyword set (S rows), from [`CharLm::keyword_input`].
    pub input: KeywordInput,
    /// Per step, the set of each stream: (B,) u32 indices into `vectors`.
    pub rows: Vec<Tensor>,
    /// (B·T, vocab), row b·T + t: the pieces that continue a keyword stream b has begun by
    /// step t (keyword copy only; [`CharLm::copy_next_mask`]).
    pub copy_next: Option<Tensor>,
}

impl WindowKeywords {
    /// Keyword sets and, per step, each stream's set index (`per_step[t][b]`). `None` when the
    /// model has no keyword table.
    pub fn new(lm: &CharLm, sets: &[Vec<u32>], per_step: &[Vec<u32>]) -> Result<Option<Self>> {
        let Some(input) = lm.keyword_input(sets)? else {
            return Ok(None);
        };
        Ok(Some(Self::with_input(input, per_step, lm.device())?))
    }

    /// Like [`WindowKeywords::new`] from an input already made (evaluation makes every
    /// document's once, for all windows).
    pub fn with_input(input: KeywordInput, per_step: &[Vec<u32>], device: &Device) -> Result<Self> {
        let rows = per_step
            .iter()
            .map(|r| Ok(Tensor::new(r.as_slice(), device)?))
            .collect::<Result<Vec<_>>>()?;
        Ok(WindowKeywords {
            input,
            rows,
            copy_next: None,
        })
    }
}

/// Summed negative log-likelihood in nats of `targets` (N,) under `logits` (N, V), weighted by
/// `mask` (N,) f32.
pub fn masked_nll_sum(logits: &Tensor, targets: &Tensor, mask: &Tensor) -> Result<f64> {
    let logp = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    let picked = logp.gather(&targets.unsqueeze(1)?, 1)?.squeeze(1)?;
    let s = picked.mul(mask)?.sum_all()?.to_scalar::<f32>()?;
    Ok(-(s as f64))
}
