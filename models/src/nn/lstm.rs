//! The LSTM cell (Hochreiter & Schmidhuber 1997) of every model, one time step per call.
//!
//! Gates in the order input, forget, cell, output: `[i f g o] = x·W_x + h·W_h + b (+ k·W_k)`,
//! `c' = σ(f)·c + σ(i)·tanh(g)`, `h' = σ(o)·tanh(c')`. Written out (rather than
//! `candle_nn::LSTM`) so a step is two matmuls and the gate nonlinearities, and so a training
//! window is unrolled from per-step inputs (slicing a whole-sequence tensor that needs
//! gradients has a very slow backward in candle).
//!
//! Checkpoints store it in two layouts, each read by its own constructor into the same cell:
//! - [`LstmCell::torch_layout`] (hashtag decoders): `ih.weight` (4H, in), `ih.bias` (4H),
//!   `hh.weight` (4H, H), as `candle_nn::Linear` stores them;
//! - [`LstmCell::story_layout`] (story models): `w_x` (in, 4H), `w_h` (H, 4H), `b` (4H) and,
//!   for a keyword-conditioned model, `w_k` (keyword_dim, 4H).
//!
//! Each layout's models were trained and shipped with their own order of the gate sum, and
//! float addition is not associative: the cell keeps each order ([`BiasAt`]) so every shipped
//! checkpoint gives exactly the outputs it gave before the two cells were one.
use candle_core::{Result, Tensor, D};
use candle_nn::{Init, VarBuilder};

/// Where the bias joins the gate sum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BiasAt {
    /// `(x·W_x + b) + h·W_h`: the input projection carries the bias, as in a `Linear` layer.
    Input,
    /// `(x·W_x + h·W_h) + b`, then the keyword term.
    End,
}

/// One LSTM layer.
#[derive(Debug, Clone)]
pub struct LstmCell {
    /// (in, 4·hidden); a transposed view for the torch layout.
    pub(crate) w_x: Tensor,
    /// (hidden, 4·hidden).
    pub(crate) w_h: Tensor,
    /// (4·hidden).
    pub(crate) b: Tensor,
    /// (keyword_dim, 4·hidden): how the keyword vector moves the gates, when there is one.
    pub(crate) w_k: Option<Tensor>,
    bias_at: BiasAt,
    hidden: usize,
}

impl LstmCell {
    /// The hashtag decoders' layout (`ih.*`, `hh.weight` under `vb`), created as
    /// `candle_nn::linear` creates them so training starts from the same variables.
    pub fn torch_layout(in_dim: usize, hidden: usize, vb: VarBuilder) -> Result<Self> {
        let ih = candle_nn::linear(in_dim, 4 * hidden, vb.pp("ih"))?;
        let hh = candle_nn::linear_no_bias(hidden, 4 * hidden, vb.pp("hh"))?;
        let b = ih.bias().cloned().expect("candle_nn::linear makes a bias");
        Ok(Self {
            // Views, as `Linear::forward` multiplies by them: the same matmul, the same values.
            w_x: ih.weight().t()?,
            w_h: hh.weight().t()?,
            b,
            w_k: None,
            bias_at: BiasAt::Input,
            hidden,
        })
    }

    /// The story models' layout (`w_x`, `w_h`, `b`, `w_k` under `vb`); `keyword_dim` 0: no
    /// keyword input. New weights are uniform ±1/√hidden, the bias and `w_k` zero.
    pub fn story_layout(
        in_dim: usize,
        hidden: usize,
        keyword_dim: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        let a = 1.0 / (hidden as f64).sqrt();
        let u = Init::Uniform { lo: -a, up: a };
        // Zero: a model fine-tuned from one without keywords starts out unchanged.
        let w_k = (keyword_dim > 0)
            .then(|| vb.get_with_hints((keyword_dim, 4 * hidden), "w_k", Init::Const(0.0)))
            .transpose()?;
        Ok(Self {
            w_x: vb.get_with_hints((in_dim, 4 * hidden), "w_x", u)?,
            w_h: vb.get_with_hints((hidden, 4 * hidden), "w_h", u)?,
            b: vb.get_with_hints(4 * hidden, "b", Init::Const(0.0))?,
            w_k,
            bias_at: BiasAt::End,
            hidden,
        })
    }

    pub fn hidden_size(&self) -> usize {
        self.hidden
    }

    /// One time step: input (B, in), state (B, hidden) twice, the keyword vectors (B,
    /// keyword_dim) if the cell reads any; returns the new (h, c).
    pub fn step(
        &self,
        x: &Tensor,
        h: &Tensor,
        c: &Tensor,
        keywords: Option<&Tensor>,
    ) -> Result<(Tensor, Tensor)> {
        let n = self.hidden;
        let mut gates = match self.bias_at {
            BiasAt::Input => x
                .matmul(&self.w_x)?
                .broadcast_add(&self.b)?
                .add(&h.matmul(&self.w_h)?)?,
            BiasAt::End => x
                .matmul(&self.w_x)?
                .add(&h.matmul(&self.w_h)?)?
                .broadcast_add(&self.b)?,
        };
        if let (Some(w), Some(k)) = (&self.w_k, keywords) {
            gates = gates.add(&k.matmul(w)?)?;
        }
        let i = candle_nn::ops::sigmoid(&gates.narrow(D::Minus1, 0, n)?)?;
        let f = candle_nn::ops::sigmoid(&gates.narrow(D::Minus1, n, n)?)?;
        let g = gates.narrow(D::Minus1, 2 * n, n)?.tanh()?;
        let o = candle_nn::ops::sigmoid(&gates.narrow(D::Minus1, 3 * n, n)?)?;
        let c = f.mul(c)?.add(&i.mul(&g)?)?;
        let h = o.mul(&c.tanh()?)?;
        Ok((h, c))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Module};
    use candle_nn::VarMap;

    use super::*;

    /// Deterministic non-trivial values for every variable.
    fn fill(varmap: &VarMap) {
        crate::nn::init::reinit_in_name_order(varmap, {
            let mut k = 0f32;
            move |_, dims| {
                k += 1.0;
                let n: usize = dims.iter().product();
                (0..n)
                    .map(|i| ((i as f32 * 0.37 + k * 1.7).sin()) * 0.8)
                    .collect()
            }
        })
        .unwrap();
    }

    fn input(rows: usize, cols: usize, seed: f32) -> Tensor {
        let v: Vec<f32> = (0..rows * cols)
            .map(|i| (i as f32 * 0.61 + seed).cos())
            .collect();
        Tensor::from_vec(v, (rows, cols), &Device::Cpu).unwrap()
    }

    fn bits(t: &Tensor) -> Vec<u32> {
        t.flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .map(|v| v.to_bits())
            .collect()
    }

    /// The hashtag decoders' former cell, `Linear` layers and `chunk`, bit for bit.
    #[test]
    fn the_torch_layout_steps_as_the_former_decoder_cell() {
        let (b, n_in, n) = (3, 5, 4);
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let cell = LstmCell::torch_layout(n_in, n, vb.pp("lstm")).unwrap();
        fill(&varmap);
        let ih = candle_nn::linear(n_in, 4 * n, vb.pp("lstm").pp("ih")).unwrap();
        let hh = candle_nn::linear_no_bias(n, 4 * n, vb.pp("lstm").pp("hh")).unwrap();
        let (x, h, c) = (input(b, n_in, 0.1), input(b, n, 0.2), input(b, n, 0.3));
        let gates = (ih.forward(&x).unwrap() + hh.forward(&h).unwrap()).unwrap();
        let ch = gates.chunk(4, D::Minus1).unwrap();
        let sig = |t: &Tensor| candle_nn::ops::sigmoid(t).unwrap();
        let c_ref =
            ((sig(&ch[1]) * &c).unwrap() + (sig(&ch[0]) * ch[2].tanh().unwrap()).unwrap()).unwrap();
        let h_ref = (sig(&ch[3]) * c_ref.tanh().unwrap()).unwrap();
        let (h_new, c_new) = cell.step(&x, &h, &c, None).unwrap();
        assert_eq!(bits(&h_new), bits(&h_ref));
        assert_eq!(bits(&c_new), bits(&c_ref));
    }

    /// The story model's former cell, with and without keywords, bit for bit.
    #[test]
    fn the_story_layout_steps_as_the_former_story_cell() {
        let (b, n_in, n, kd) = (3, 5, 4, 2);
        for keyword_dim in [0, kd] {
            let varmap = VarMap::new();
            let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
            let cell = LstmCell::story_layout(n_in, n, keyword_dim, vb.pp("lstm0")).unwrap();
            fill(&varmap);
            let (x, h, c) = (input(b, n_in, 0.4), input(b, n, 0.5), input(b, n, 0.6));
            let k = input(b, kd, 0.7);
            let mut gates = x
                .matmul(&cell.w_x)
                .unwrap()
                .add(&h.matmul(&cell.w_h).unwrap())
                .unwrap()
                .broadcast_add(&cell.b)
                .unwrap();
            if let Some(w) = &cell.w_k {
                gates = gates.add(&k.matmul(w).unwrap()).unwrap();
            }
            let sig = |t: &Tensor| candle_nn::ops::sigmoid(t).unwrap();
            let part = |i: usize| gates.narrow(1, i * n, n).unwrap();
            let c_ref = sig(&part(1))
                .mul(&c)
                .unwrap()
                .add(&sig(&part(0)).mul(&part(2).tanh().unwrap()).unwrap())
                .unwrap();
            let h_ref = sig(&part(3)).mul(&c_ref.tanh().unwrap()).unwrap();
            let (h_new, c_new) = cell.step(&x, &h, &c, Some(&k)).unwrap();
            assert_eq!(bits(&h_new), bits(&h_ref));
            assert_eq!(bits(&c_new), bits(&c_ref));
        }
    }
}
