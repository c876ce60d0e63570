//! What the sequence decoders share: the per-step interface used by teacher forcing and by
//! batched beam search.
use candle_core::{Result, Tensor};

use crate::encoder::Encoded;

/// Recurrent state for N running sequences (N = images × beams). Row n of every tensor belongs
/// to sequence n, so reordering beams is one `index_select` per tensor.
#[derive(Debug, Clone)]
pub struct DecodeState {
    pub h: Tensor,
    pub c: Tensor,
    /// Annotations (N, L, D) and their attention projection (N, L, A), for attention decoders.
    pub memory: Option<(Tensor, Tensor)>,
}

impl DecodeState {
    /// Keeps rows `idx` (u32, any length; rows may repeat).
    pub fn select(&self, idx: &Tensor) -> Result<Self> {
        Ok(Self {
            h: self.h.index_select(idx, 0)?,
            c: self.c.index_select(idx, 0)?,
            memory: match &self.memory {
                Some((a, p)) => Some((a.index_select(idx, 0)?, p.index_select(idx, 0)?)),
                None => None,
            },
        })
    }

    /// Keeps rows `idx` of the recurrent state and shares the memory as it is: for a reordering
    /// that only moves rows among copies of the same image (beam search), whose annotation rows
    /// are identical, so copying them every step would change nothing.
    pub fn select_recurrent(&self, idx: &Tensor) -> Result<Self> {
        Ok(Self {
            h: self.h.index_select(idx, 0)?,
            c: self.c.index_select(idx, 0)?,
            memory: self.memory.clone(),
        })
    }
}

/// Output of one decoding step.
pub struct StepOutput {
    /// Unnormalised scores over the vocabulary, (N, V).
    pub logits: Tensor,
    /// Attention weights over the L annotations, (N, L), when the decoder attends.
    pub alpha: Option<Tensor>,
    pub state: DecodeState,
}

/// A decoder that emits one tag per step.
pub trait StepDecoder {
    /// Initial state for a batch of encoded images.
    fn init_state(&self, enc: &Encoded) -> Result<DecodeState>;
    /// Advances every sequence by one token; `prev` is (N,) u32. `dropout` is a scaled keep-mask
    /// (N, H) applied to the LSTM output during training; masks come from the trainer's seeded
    /// RNG so runs are reproducible (candle cannot seed its CPU RNG).
    fn step(
        &self,
        state: &DecodeState,
        prev: &Tensor,
        dropout: Option<&Tensor>,
    ) -> Result<StepOutput>;
}

/// Multiplies by a scaled keep-mask during training; the identity otherwise.
pub fn apply_dropout(x: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
    match mask {
        Some(m) => x * m,
        None => Ok(x.clone()),
    }
}
