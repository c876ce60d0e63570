//! Multi-label baseline: an independent sigmoid per tag over the pooled image vector, through
//! one hidden layer.
use candle_core::{Result, Tensor};
use candle_nn::{Linear, Module, VarBuilder};

use super::decoder::apply_dropout;
use super::DecoderDims;

#[derive(Debug, Clone)]
pub struct MultiLabel {
    hidden: Linear,
    output: Linear,
}

impl MultiLabel {
    pub fn new(d: &DecoderDims, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            hidden: candle_nn::linear(d.feature, d.hidden, vb.pp("hidden"))?,
            output: candle_nn::linear(d.hidden, d.vocab, vb.pp("output"))?,
        })
    }

    /// Logits (B, V) from pooled features (B, D); `dropout` is a scaled keep-mask (B, H).
    pub fn forward(&self, pooled: &Tensor, dropout: Option<&Tensor>) -> Result<Tensor> {
        let h = self.hidden.forward(pooled)?.relu()?;
        self.output.forward(&apply_dropout(&h, dropout)?)
    }
}
