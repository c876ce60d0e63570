//! Show and Tell (Vinyals et al. 2015) baseline: no attention; the pooled image vector is the
//! LSTM's first input, then tags follow one per step.
use candle_core::{DType, Result, Tensor};
use candle_nn::{Embedding, Linear, Module, VarBuilder};

use super::decoder::{apply_dropout, DecodeState, StepDecoder, StepOutput};
use super::DecoderDims;
use crate::encoder::Encoded;
use crate::nn::LstmCell;

#[derive(Debug, Clone)]
pub struct ShowTell {
    embedding: Embedding,
    image_proj: Linear,
    lstm: LstmCell,
    output: Linear,
}

impl ShowTell {
    pub fn new(d: &DecoderDims, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            embedding: candle_nn::embedding(d.vocab, d.embed, vb.pp("embedding"))?,
            image_proj: candle_nn::linear(d.feature, d.embed, vb.pp("image_proj"))?,
            lstm: LstmCell::torch_layout(d.embed, d.hidden, vb.pp("lstm"))?,
            output: candle_nn::linear(d.hidden, d.vocab, vb.pp("output"))?,
        })
    }
}

impl StepDecoder for ShowTell {
    fn init_state(&self, enc: &Encoded) -> Result<DecodeState> {
        let n = enc.pooled.dim(0)?;
        let zeros = Tensor::zeros(
            (n, self.lstm.hidden_size()),
            DType::F32,
            enc.pooled.device(),
        )?;
        let x = self.image_proj.forward(&enc.pooled)?;
        let (h, c) = self.lstm.step(&x, &zeros, &zeros, None)?;
        Ok(DecodeState { h, c, memory: None })
    }

    fn step(
        &self,
        state: &DecodeState,
        prev: &Tensor,
        dropout: Option<&Tensor>,
    ) -> Result<StepOutput> {
        let x = self.embedding.forward(prev)?;
        let (h, c) = self.lstm.step(&x, &state.h, &state.c, None)?;
        Ok(StepOutput {
            logits: self.output.forward(&apply_dropout(&h, dropout)?)?,
            alpha: None,
            state: DecodeState { h, c, memory: None },
        })
    }
}
