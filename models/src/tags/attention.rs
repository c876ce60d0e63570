//! Soft (deterministic) attention of Show, Attend and Tell (Xu et al. 2015, §4.2):
//! e_ti = w·tanh(W_a a_i + W_h h_{t−1}), α_t = softmax(e_t), z_t = Σ_i α_ti a_i.
use candle_core::{Result, Tensor, D};
use candle_nn::{Linear, Module, VarBuilder};

#[derive(Debug, Clone)]
pub struct SoftAttention {
    annotation_proj: Linear,
    hidden_proj: Linear,
    score: Linear,
}

impl SoftAttention {
    pub fn new(
        feature_dim: usize,
        hidden: usize,
        attention_dim: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        Ok(Self {
            annotation_proj: candle_nn::linear(
                feature_dim,
                attention_dim,
                vb.pp("annotation_proj"),
            )?,
            hidden_proj: candle_nn::linear(hidden, attention_dim, vb.pp("hidden_proj"))?,
            // No bias: a constant added to every e_ti cancels in the softmax.
            score: candle_nn::linear_no_bias(attention_dim, 1, vb.pp("score"))?,
        })
    }

    /// W_a a_i for every annotation, (B, L, A); computed once per image, reused every step.
    pub fn project_annotations(&self, annotations: &Tensor) -> Result<Tensor> {
        self.annotation_proj.forward(annotations)
    }

    /// Returns (α (B, L), z (B, D)) for annotations (B, L, D), their projection (B, L, A) and h (B, H).
    pub fn forward(
        &self,
        annotations: &Tensor,
        projected: &Tensor,
        h: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        let e = projected
            .broadcast_add(&self.hidden_proj.forward(h)?.unsqueeze(1)?)?
            .tanh()?;
        let e = self.score.forward(&e)?.squeeze(D::Minus1)?;
        // The generic softmax: candle's fused softmax_last_dim has no backward pass.
        let alpha = candle_nn::ops::softmax(&e, D::Minus1)?;
        let z = alpha.unsqueeze(1)?.matmul(annotations)?.squeeze(1)?;
        Ok((alpha, z))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    #[test]
    fn weights_sum_to_one_and_context_is_their_mix() -> Result<()> {
        let dev = Device::Cpu;
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &dev);
        let att = SoftAttention::new(8, 6, 5, vb)?;
        let a = Tensor::randn(0f32, 1f32, (3, 49, 8), &dev)?;
        let h = Tensor::randn(0f32, 1f32, (3, 6), &dev)?;
        let (alpha, z) = att.forward(&a, &att.project_annotations(&a)?, &h)?;
        let sums = alpha.sum(1)?.to_vec1::<f32>()?;
        for s in sums {
            assert!((s - 1.0).abs() < 1e-5, "sum {s}");
        }
        assert!(alpha.min_all()?.to_scalar::<f32>()? >= 0.0);
        let manual = alpha.unsqueeze(2)?.broadcast_mul(&a)?.sum(1)?;
        let diff = (manual - &z)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-5);
        assert_eq!(z.dims(), &[3, 8]);
        Ok(())
    }
}
