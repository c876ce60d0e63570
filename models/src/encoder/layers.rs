//! Convolution layers of EfficientNet-Lite in NHWC layout, with BatchNorm folded in at load.
//!
//! NHWC keeps channels contiguous: a 1×1 convolution is one matmul and a depthwise convolution is
//! one pass of multiply-adds over contiguous channel rows, far faster on the CPU than candle's
//! grouped conv2d, which runs one convolution per channel.
use candle_core::{
    CpuStorage, CustomOp1, DType, InplaceOp1, Layout, Module, Result, Shape, Tensor,
};
use candle_nn::VarBuilder;
use rayon::prelude::*;

/// TF-style "SAME" padding for one spatial dimension: (before, after, output size).
/// For stride 2 the extra pixel goes after, as TensorFlow does.
pub fn same_padding(input: usize, kernel: usize, stride: usize) -> (usize, usize, usize) {
    let out = input.div_ceil(stride);
    let total = ((out - 1) * stride + kernel).saturating_sub(input);
    (total / 2, total - total / 2, out)
}

/// Folds an inference-mode BatchNorm (`prefix.weight/bias/running_mean/running_var`) into a
/// per-output-channel scale and shift.
fn folded_batch_norm(vb: &VarBuilder, channels: usize, eps: f64) -> Result<(Tensor, Tensor)> {
    let gamma = vb.get(channels, "weight")?;
    let beta = vb.get(channels, "bias")?;
    let mean = vb.get(channels, "running_mean")?;
    let var = vb.get(channels, "running_var")?;
    let scale = gamma.broadcast_div(&(var + eps)?.sqrt()?)?;
    let shift = (beta - mean.mul(&scale)?)?;
    Ok((scale, shift))
}

/// The activation of EfficientNet-Lite: min(max(x, 0), 6).
pub fn relu6(x: &Tensor) -> Result<Tensor> {
    x.clamp(0f32, 6f32)
}

/// y ← y + bias, then ReLU6 where asked, in place over a contiguous (N, C) f32 buffer: the
/// tensor path's `broadcast_add` and `clamp` in one pass, with the same floats and no new
/// buffer (each pass over an activation map of a batch is tens of MB).
struct BiasActivation<'a> {
    bias: &'a [f32],
    relu6: bool,
}

impl InplaceOp1 for BiasActivation<'_> {
    fn name(&self) -> &'static str {
        "bias-relu6"
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> Result<()> {
        let CpuStorage::F32(data) = storage else {
            candle_core::bail!("bias-relu6: f32 input expected");
        };
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("bias-relu6: contiguous input expected");
        };
        let c = self.bias.len();
        if c == 0 || (end - start) % c != 0 {
            candle_core::bail!("bias-relu6: {} values are not rows of {c}", end - start);
        }
        data[start..end].par_chunks_mut(c * 64).for_each(|rows| {
            for row in rows.chunks_exact_mut(c) {
                for (y, &b) in row.iter_mut().zip(self.bias) {
                    let v = *y + b;
                    *y = if self.relu6 { v.clamp(0.0, 6.0) } else { v };
                }
            }
        });
        Ok(())
    }
}

/// A 1×1 convolution followed by BatchNorm, as a matmul over the channel dimension.
#[derive(Debug, Clone)]
pub struct PointwiseConvBn {
    weight_t: Tensor,
    bias: Tensor,
    /// `bias` on the host, for the in-place pass.
    bias_host: Vec<f32>,
}

impl PointwiseConvBn {
    /// `conv` holds `weight` of shape (out, in, 1, 1); `bn` the BatchNorm buffers.
    pub fn load(
        conv: VarBuilder,
        bn: VarBuilder,
        cin: usize,
        cout: usize,
        eps: f64,
    ) -> Result<Self> {
        let w = conv
            .get((cout, cin, 1, 1), "weight")?
            .reshape((cout, cin))?;
        let (scale, shift) = folded_batch_norm(&bn, cout, eps)?;
        let w = w.broadcast_mul(&scale.unsqueeze(1)?)?;
        Ok(Self {
            weight_t: w.t()?.contiguous()?,
            bias_host: shift.to_dtype(DType::F32)?.to_vec1::<f32>()?,
            bias: shift,
        })
    }

    /// The convolution followed by ReLU6.
    pub fn forward_relu6(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_with(x, true)
    }

    fn forward_with(&self, x: &Tensor, relu6_after: bool) -> Result<Tensor> {
        let (b, h, w, c) = x.dims4()?;
        let shape = (b, h, w, self.bias.dim(0)?);
        let y = x.reshape((b * h * w, c))?.matmul(&self.weight_t)?;
        // The matmul's output is a fresh buffer that nothing else holds: add in place.
        if y.device().is_cpu() && y.dtype() == DType::F32 && y.is_contiguous() && !y.track_op() {
            y.inplace_op1(&BiasActivation {
                bias: &self.bias_host,
                relu6: relu6_after,
            })?;
            return y.reshape(shape);
        }
        let y = y.broadcast_add(&self.bias)?;
        let y = if relu6_after { relu6(&y)? } else { y };
        y.reshape(shape)
    }
}

impl Module for PointwiseConvBn {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_with(x, false)
    }
}

/// A k×k depthwise convolution (one filter per channel) with TF "SAME" padding, then BatchNorm.
#[derive(Debug, Clone)]
pub struct DepthwiseConvBn {
    /// Per-tap channel weights, (k*k, C), BatchNorm scale folded in.
    taps: Tensor,
    bias: Tensor,
    kernel: usize,
    stride: usize,
}

impl DepthwiseConvBn {
    pub fn load(
        conv: VarBuilder,
        bn: VarBuilder,
        channels: usize,
        kernel: usize,
        stride: usize,
        eps: f64,
    ) -> Result<Self> {
        let w = conv.get((channels, 1, kernel, kernel), "weight")?;
        let (scale, shift) = folded_batch_norm(&bn, channels, eps)?;
        let w = w
            .reshape((channels, kernel * kernel))?
            .broadcast_mul(&scale.unsqueeze(1)?)?;
        Ok(Self {
            taps: w.t()?.contiguous()?,
            bias: shift,
            kernel,
            stride,
        })
    }

    /// Every `stride`-th row starting at `start`, `count` rows, along `dim` of a padded tensor.
    fn strided(
        x: &Tensor,
        dim: usize,
        start: usize,
        count: usize,
        stride: usize,
    ) -> Result<Tensor> {
        if stride == 1 {
            return x.narrow(dim, start, count);
        }
        // Take stride*count rows, fold them into (count, stride) and keep the first of each pair.
        let x = x.narrow(dim, start, count * stride)?;
        let mut shape = x.dims().to_vec();
        shape[dim] = count;
        shape.insert(dim + 1, stride);
        x.reshape(shape)?.narrow(dim + 1, 0, 1)?.squeeze(dim + 1)
    }
}

impl Module for DepthwiseConvBn {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_with(x, false)
    }
}

impl DepthwiseConvBn {
    /// The convolution followed by ReLU6 (in the same pass on the CPU).
    pub fn forward_relu6(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_with(x, true)
    }

    fn forward_with(&self, x: &Tensor, relu6_after: bool) -> Result<Tensor> {
        if x.device().is_cpu() && x.dtype() == DType::F32 {
            let op = DepthwiseOp {
                taps: self.taps.flatten_all()?.to_vec1::<f32>()?,
                bias: self.bias.to_vec1::<f32>()?,
                kernel: self.kernel,
                stride: self.stride,
                relu6: relu6_after,
            };
            return x.contiguous()?.apply_op1_no_bwd(&op);
        }
        let y = self.forward_tensors(x)?;
        if relu6_after {
            relu6(&y)
        } else {
            Ok(y)
        }
    }

    /// The same convolution as `k²` strided tensor passes: the path for other devices, and the
    /// reference the one-pass CPU op is tested against.
    fn forward_tensors(&self, x: &Tensor) -> Result<Tensor> {
        let (_, h, w, _) = x.dims4()?;
        let (k, s) = (self.kernel, self.stride);
        let (top, bottom, oh) = same_padding(h, k, s);
        let (left, right, ow) = same_padding(w, k, s);
        // One spare row/column for strided taps that end one past the padded edge; never read.
        let extra = s - 1;
        let x = x
            .pad_with_zeros(1, top, bottom + extra)?
            .pad_with_zeros(2, left, right + extra)?;
        let mut acc: Option<Tensor> = None;
        for dy in 0..k {
            let rows = Self::strided(&x, 1, dy, oh, s)?;
            for dx in 0..k {
                let patch = Self::strided(&rows, 2, dx, ow, s)?;
                let tap = self.taps.get(dy * k + dx)?;
                let term = patch.broadcast_mul(&tap)?;
                acc = Some(match acc {
                    None => term,
                    Some(a) => (a + term)?,
                });
            }
        }
        acc.expect("kernel is at least 1x1")
            .broadcast_add(&self.bias)
    }
}

/// The depthwise convolution in one pass over an NHWC f32 input: for every output pixel, the
/// taps' channel rows multiplied in and summed in the tensor path's order (taps row by row,
/// then the bias), so both give the same floats. Output rows run in parallel.
struct DepthwiseOp {
    /// (k·k, C)
    taps: Vec<f32>,
    /// (C)
    bias: Vec<f32>,
    kernel: usize,
    stride: usize,
    /// ReLU6 after the bias, in the same pass.
    relu6: bool,
}

impl CustomOp1 for DepthwiseOp {
    fn name(&self) -> &'static str {
        "depthwise-conv-nhwc"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(data) = storage else {
            candle_core::bail!("depthwise: f32 input expected");
        };
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("depthwise: contiguous input expected");
        };
        let x = &data[start..end];
        let (b, h, w, c) = layout.shape().dims4()?;
        let (k, s) = (self.kernel, self.stride);
        let (top, _, oh) = same_padding(h, k, s);
        let (left, _, ow) = same_padding(w, k, s);
        let mut out = vec![0f32; b * oh * ow * c];
        out.par_chunks_mut(ow * c)
            .enumerate()
            .for_each(|(row, dst)| {
                let (n, oy) = (row / oh, row % oh);
                for ox in 0..ow {
                    let acc = &mut dst[ox * c..(ox + 1) * c];
                    for dy in 0..k {
                        let Some(iy) = (oy * s + dy).checked_sub(top).filter(|&y| y < h) else {
                            continue;
                        };
                        for dx in 0..k {
                            let Some(ix) = (ox * s + dx).checked_sub(left).filter(|&x| x < w)
                            else {
                                continue;
                            };
                            let px = &x[((n * h + iy) * w + ix) * c..][..c];
                            let tap = &self.taps[(dy * k + dx) * c..][..c];
                            for ((a, &p), &t) in acc.iter_mut().zip(px).zip(tap) {
                                *a += p * t;
                            }
                        }
                    }
                    for (a, &bias) in acc.iter_mut().zip(&self.bias) {
                        *a += bias;
                        if self.relu6 {
                            *a = a.clamp(0.0, 6.0);
                        }
                    }
                }
            });
        Ok((CpuStorage::F32(out), Shape::from_dims(&[b, oh, ow, c])))
    }
}

/// The stem: a dense k×k convolution with stride 2 and "SAME" padding, then BatchNorm.
/// Runs through candle's conv2d (NCHW) since its input has only three channels.
#[derive(Debug, Clone)]
pub struct StemConvBn {
    weight: Tensor,
    bias: Tensor,
    kernel: usize,
    stride: usize,
}

impl StemConvBn {
    pub fn load(
        conv: VarBuilder,
        bn: VarBuilder,
        cin: usize,
        cout: usize,
        kernel: usize,
        stride: usize,
        eps: f64,
    ) -> Result<Self> {
        let w = conv.get((cout, cin, kernel, kernel), "weight")?;
        let (scale, shift) = folded_batch_norm(&bn, cout, eps)?;
        let weight = w.broadcast_mul(&scale.reshape((cout, 1, 1, 1))?)?;
        Ok(Self {
            weight,
            bias: shift,
            kernel,
            stride,
        })
    }
}

impl Module for StemConvBn {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (_, h, w, _) = x.dims4()?;
        let (top, bottom, _) = same_padding(h, self.kernel, self.stride);
        let (left, right, _) = same_padding(w, self.kernel, self.stride);
        let x = x
            .pad_with_zeros(1, top, bottom)?
            .pad_with_zeros(2, left, right)?
            .permute((0, 3, 1, 2))?
            .contiguous()?;
        let y = x.conv2d(&self.weight, 0, self.stride, 1, 1)?;
        y.permute((0, 2, 3, 1))?
            .contiguous()?
            .broadcast_add(&self.bias)
    }
}

/// Global average over the spatial grid of an NHWC tensor: (B, H, W, C) → (B, C).
pub fn global_mean(x: &Tensor) -> Result<Tensor> {
    let (b, h, w, c) = x.dims4()?;
    x.reshape((b, h * w, c))?.mean(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn same_padding_matches_tensorflow() {
        assert_eq!(same_padding(224, 3, 2), (0, 1, 112));
        assert_eq!(same_padding(112, 3, 1), (1, 1, 112));
        assert_eq!(same_padding(56, 5, 2), (1, 2, 28));
        assert_eq!(same_padding(14, 5, 1), (2, 2, 14));
    }

    /// Compares the depthwise layer with candle's grouped conv2d on the same padded input.
    #[test]
    fn depthwise_matches_grouped_conv2d() -> Result<()> {
        let dev = Device::Cpu;
        for (k, s, size) in [(3, 1, 6), (3, 2, 7), (5, 2, 8), (5, 1, 5)] {
            let c = 4;
            let x = Tensor::randn(0f32, 1f32, (2, size, size, c), &dev)?;
            let w = Tensor::randn(0f32, 1f32, (c, 1, k, k), &dev)?;
            let layer = DepthwiseConvBn {
                taps: w.reshape((c, k * k))?.t()?.contiguous()?,
                bias: Tensor::zeros(c, DType::F32, &dev)?,
                kernel: k,
                stride: s,
            };
            let ours = layer.forward(&x)?;
            let (t, b, _) = same_padding(size, k, s);
            let reference = x
                .pad_with_zeros(1, t, b)?
                .pad_with_zeros(2, t, b)?
                .permute((0, 3, 1, 2))?
                .contiguous()?
                .conv2d(&w, 0, s, 1, c)?
                .permute((0, 2, 3, 1))?;
            assert_eq!(ours.dims(), reference.dims());
            let diff = (&ours - reference)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(diff < 1e-4, "k={k} s={s}: max diff {diff}");
            // The one-pass op and the strided tensor passes give the same floats.
            let passes = layer.forward_tensors(&x)?;
            let same =
                ours.flatten_all()?.to_vec1::<f32>()? == passes.flatten_all()?.to_vec1::<f32>()?;
            assert!(same, "k={k} s={s}: one pass differs from the tensor passes");
        }
        Ok(())
    }

    /// Bias and ReLU6 fused into the convolutions' passes give the floats of the separate tensor
    /// ops (values spread over [−10, 10] so both clamps are hit).
    #[test]
    fn fused_relu6_gives_the_floats_of_the_separate_ops() -> Result<()> {
        let dev = Device::Cpu;
        let values = |t: &Tensor| t.flatten_all()?.to_vec1::<f32>();
        let x = (Tensor::randn(0f32, 1f32, (2, 5, 5, 6), &dev)? * 3.0)?;
        let bias = Tensor::randn(0f32, 1f32, 8, &dev)?;
        let pointwise = PointwiseConvBn {
            weight_t: Tensor::randn(0f32, 1f32, (6, 8), &dev)?,
            bias_host: bias.to_vec1::<f32>()?,
            bias: bias.clone(),
        };
        let product = x.reshape((50, 6))?.matmul(&pointwise.weight_t)?;
        let plain = product.broadcast_add(&bias)?.reshape((2, 5, 5, 8))?;
        let fused = pointwise.forward_relu6(&x)?;
        assert_eq!(values(&fused)?, values(&relu6(&plain)?)?);
        assert_eq!(values(&pointwise.forward(&x)?)?, values(&plain)?);
        let clamped = values(&fused)?;
        assert!(clamped.contains(&0.0) && clamped.contains(&6.0));

        let depthwise = DepthwiseConvBn {
            taps: Tensor::randn(0f32, 1f32, (9, 6), &dev)?,
            bias: Tensor::randn(0f32, 1f32, 6, &dev)?,
            kernel: 3,
            stride: 1,
        };
        let fused = depthwise.forward_relu6(&x)?;
        assert_eq!(values(&fused)?, values(&relu6(&depthwise.forward(&x)?)?)?);
        Ok(())
    }
}
