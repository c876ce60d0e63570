//! Show, Attend and Tell (Xu et al. 2015) as a hashtag decoder: each step attends over the 7×7
//! annotation grid and emits one tag.
use candle_core::{Result, Tensor};
use candle_nn::{Embedding, Linear, Module, VarBuilder};

use super::attention::SoftAttention;
use super::decoder::{apply_dropout, DecodeState, StepDecoder, StepOutput};
use super::DecoderDims;
use crate::encoder::Encoded;
use crate::nn::LstmCell;

#[derive(Debug, Clone)]
pub struct ShowAttendTell {
    embedding: Embedding,
    attention: SoftAttention,
    /// β_t = σ(f_β(h_{t−1})) scales the context per feature (Xu et al. §4.2.1).
    gate: Linear,
    init_h: Linear,
    init_c: Linear,
    lstm: LstmCell,
    output: Linear,
}

impl ShowAttendTell {
    pub fn new(d: &DecoderDims, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            embedding: candle_nn::embedding(d.vocab, d.embed, vb.pp("embedding"))?,
            attention: SoftAttention::new(d.feature, d.hidden, d.attention, vb.pp("attention"))?,
            gate: candle_nn::linear(d.hidden, d.feature, vb.pp("gate"))?,
            init_h: candle_nn::linear(d.feature, d.hidden, vb.pp("init_h"))?,
            init_c: candle_nn::linear(d.feature, d.hidden, vb.pp("init_c"))?,
            lstm: LstmCell::torch_layout(d.embed + d.feature, d.hidden, vb.pp("lstm"))?,
            output: candle_nn::linear(d.hidden, d.vocab, vb.pp("output"))?,
        })
    }
}

impl StepDecoder for ShowAttendTell {
    fn init_state(&self, enc: &Encoded) -> Result<DecodeState> {
        // h_0 and c_0 from the mean annotation (Xu et al. §3.1.2).
        let mean = enc.grid.mean(1)?;
        Ok(DecodeState {
            h: self.init_h.forward(&mean)?.tanh()?,
            c: self.init_c.forward(&mean)?.tanh()?,
            memory: Some((
                enc.grid.clone(),
                self.attention.project_annotations(&enc.grid)?,
            )),
        })
    }

    fn step(
        &self,
        state: &DecodeState,
        prev: &Tensor,
        dropout: Option<&Tensor>,
    ) -> Result<StepOutput> {
        let (annotations, projected) = state
            .memory
            .as_ref()
            .expect("attention decoder state carries its annotations");
        let (alpha, z) = self.attention.forward(annotations, projected, &state.h)?;
        let beta = candle_nn::ops::sigmoid(&self.gate.forward(&state.h)?)?;
        let context = (beta * z)?;
        let emb = self.embedding.forward(prev)?;
        let x = Tensor::cat(&[&emb, &context], 1)?;
        let (h, c) = self.lstm.step(&x, &state.h, &state.c, None)?;
        Ok(StepOutput {
            logits: self.output.forward(&apply_dropout(&h, dropout)?)?,
            alpha: Some(alpha),
            state: DecodeState {
                h,
                c,
                memory: state.memory.clone(),
            },
        })
    }
}
