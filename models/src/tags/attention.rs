//! Soft (deterministic) attention of Show, Attend and Tell (Xu et al. 2015, §4.2):
//! e_ti = w·tanh(W_a a_i + W_h h_{t−1}), α_t = softmax(e_t), z_t = Σ_i α_ti a_i.
//!
//! At inference on the CPU the scores e_ti are one pass ([`ScoresOp`]): the (B, L, A) sum and
//! its tanh are never stored, and the tanh is [`crate::fast_math`]'s, which vectorises (this is
//! most of beam search's arithmetic: B·beams × 49 cells × 512 per step).
use candle_core::{CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor, D};
use candle_nn::{Linear, Module, VarBuilder};
use rayon::prelude::*;

use crate::fast_math::tanh;

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
        let query = self.hidden_proj.forward(h)?;
        let inference = !projected.track_op() && !query.track_op();
        let e = if inference && projected.device().is_cpu() && projected.dtype() == DType::F32 {
            let op = ScoresOp {
                weight: self.score.weight().flatten_all()?.to_vec1::<f32>()?,
            };
            projected
                .contiguous()?
                .apply_op2_no_bwd(&query.contiguous()?, &op)?
        } else {
            let e = projected.broadcast_add(&query.unsqueeze(1)?)?.tanh()?;
            self.score.forward(&e)?.squeeze(D::Minus1)?
        };
        // The generic softmax: candle's fused softmax_last_dim has no backward pass.
        let alpha = candle_nn::ops::softmax(&e, D::Minus1)?;
        let z = alpha.unsqueeze(1)?.matmul(annotations)?.squeeze(1)?;
        Ok((alpha, z))
    }
}

/// e_ri = Σ_a w_a · tanh(P_ria + q_ra) for projected annotations P (R, L, A) and queries q (R, A);
/// rows in parallel. No backward pass: used only where nothing asks for gradients.
struct ScoresOp {
    /// The score layer's weights w (A).
    weight: Vec<f32>,
}

impl CustomOp2 for ScoresOp {
    fn name(&self) -> &'static str {
        "attention-scores"
    }

    fn cpu_fwd(
        &self,
        projected: &CpuStorage,
        projected_layout: &Layout,
        query: &CpuStorage,
        query_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (CpuStorage::F32(p), CpuStorage::F32(q)) = (projected, query) else {
            candle_core::bail!("attention scores: f32 inputs expected");
        };
        let (Some((p0, p1)), Some((q0, q1))) = (
            projected_layout.contiguous_offsets(),
            query_layout.contiguous_offsets(),
        ) else {
            candle_core::bail!("attention scores: contiguous inputs expected");
        };
        let (rows, cells, dim) = projected_layout.shape().dims3()?;
        if query_layout.shape().dims2()? != (rows, dim) || self.weight.len() != dim {
            candle_core::bail!("attention scores: shapes do not match");
        }
        let (p, q) = (&p[p0..p1], &q[q0..q1]);
        let mut out = vec![0f32; rows * cells];
        out.par_chunks_mut(cells).enumerate().for_each(|(r, dst)| {
            let query = &q[r * dim..][..dim];
            for (i, e) in dst.iter_mut().enumerate() {
                *e = tanh_dot(&p[(r * cells + i) * dim..][..dim], query, &self.weight);
            }
        });
        Ok((CpuStorage::F32(out), Shape::from_dims(&[rows, cells])))
    }
}

/// Σ_a w_a · tanh(p_a + q_a), in 8 independent lanes so the loop vectorises.
fn tanh_dot(p: &[f32], q: &[f32], w: &[f32]) -> f32 {
    const LANES: usize = 8;
    let mut acc = [0f32; LANES];
    let chunks = p
        .chunks_exact(LANES)
        .zip(q.chunks_exact(LANES))
        .zip(w.chunks_exact(LANES));
    for ((p, q), w) in chunks {
        for j in 0..LANES {
            acc[j] += w[j] * tanh(p[j] + q[j]);
        }
    }
    let tail = p.len() / LANES * LANES;
    let mut sum: f32 = acc.iter().sum();
    for a in tail..p.len() {
        sum += w[a] * tanh(p[a] + q[a]);
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    /// The one-pass scores on the CPU match the tensor path's (the training path) closely.
    #[test]
    fn one_pass_scores_match_the_tensor_path() -> Result<()> {
        let dev = Device::Cpu;
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &dev);
        let att = SoftAttention::new(8, 6, 20, vb)?;
        let a = Tensor::randn(0f32, 1f32, (3, 49, 8), &dev)?;
        let h = Tensor::randn(0f32, 1f32, (3, 6), &dev)?;
        // Weights of a VarMap track gradients, so this is the tensor path.
        let (alpha_tensor, z_tensor) = att.forward(&a, &att.project_annotations(&a)?, &h)?;
        // Detached copies take the one-pass path, as loaded weights do.
        let detach = |l: &Linear| Linear::new(l.weight().detach(), l.bias().map(Tensor::detach));
        let detached = SoftAttention {
            annotation_proj: detach(&att.annotation_proj),
            hidden_proj: detach(&att.hidden_proj),
            score: detach(&att.score),
        };
        let projected = detached.project_annotations(&a)?;
        assert!(!projected.track_op());
        let (alpha, z) = detached.forward(&a, &projected, &h)?;
        let diff = |x: &Tensor, y: &Tensor| -> Result<f32> {
            (x - y)?.abs()?.max_all()?.to_scalar::<f32>()
        };
        assert!(diff(&alpha, &alpha_tensor)? < 1e-6);
        assert!(diff(&z, &z_tensor)? < 1e-5);
        Ok(())
    }

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
