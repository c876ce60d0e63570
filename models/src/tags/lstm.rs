//! A single LSTM cell (Hochreiter & Schmidhuber 1997), one time step per `forward`.
use candle_core::{Result, Tensor, D};
use candle_nn::{Linear, Module, VarBuilder};

#[derive(Debug, Clone)]
pub struct LstmCell {
    input: Linear,
    hidden: Linear,
    hidden_size: usize,
}

impl LstmCell {
    pub fn new(input_size: usize, hidden_size: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            input: candle_nn::linear(input_size, 4 * hidden_size, vb.pp("ih"))?,
            hidden: candle_nn::linear_no_bias(hidden_size, 4 * hidden_size, vb.pp("hh"))?,
            hidden_size,
        })
    }

    pub fn hidden_size(&self) -> usize {
        self.hidden_size
    }

    /// One step: x (B, in), h and c (B, H) → new (h, c).
    pub fn forward(&self, x: &Tensor, h: &Tensor, c: &Tensor) -> Result<(Tensor, Tensor)> {
        let gates = (self.input.forward(x)? + self.hidden.forward(h)?)?;
        let chunks = gates.chunk(4, D::Minus1)?;
        let i = candle_nn::ops::sigmoid(&chunks[0])?;
        let f = candle_nn::ops::sigmoid(&chunks[1])?;
        let g = chunks[2].tanh()?;
        let o = candle_nn::ops::sigmoid(&chunks[3])?;
        let c = ((f * c)? + (i * g)?)?;
        let h = (o * c.tanh()?)?;
        Ok((h, c))
    }
}
