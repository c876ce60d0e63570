//! EfficientNet-Lite (Tan & Le 2019, "Lite" variants: no squeeze-excitation, ReLU6, fixed stem
//! and head widths), inference only, with its ImageNet-1k classifier. Lite0 (224×224) and Lite2
//! (260×260, width 1.1, depth 1.2) share this code.
//!
//! The block layout is read from the checkpoint: the number of blocks, expansion present or not,
//! the kernel size from the depthwise weight, and the stages (a stage starts where the channel
//! count changes). Only the stage strides and the BatchNorm epsilon are fixed here.
use std::path::Path;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Linear, VarBuilder};

use super::layers::{global_mean, relu6, DepthwiseConvBn, PointwiseConvBn, StemConvBn};
use super::{Encoded, ImageEncoder};
use crate::{Error, Result};

const BN_EPS: f64 = 1e-3;
/// Stride of each of the seven stages; with the stem's stride 2 the grid is the input / 32.
const STAGE_STRIDES: [usize; 7] = [1, 2, 2, 2, 1, 2, 1];
const STEM_CHANNELS: usize = 32;
const HEAD_CHANNELS: usize = 1280;
/// Side of the annotation grid handed to the decoders: every variant's grid is average-pooled to
/// this, so attention and class-activation maps are always 7×7 (49 weights).
pub const GRID_SIDE: usize = 7;

/// Which EfficientNet-Lite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LiteVariant {
    Lite0,
    Lite2,
}

impl LiteVariant {
    /// The name stored with features and hashtag models.
    pub fn name(self) -> &'static str {
        match self {
            LiteVariant::Lite0 => "efficientnet-lite0",
            LiteVariant::Lite2 => "efficientnet-lite2",
        }
    }

    /// The input side the variant was trained at.
    pub fn input_size(self) -> u32 {
        match self {
            LiteVariant::Lite0 => 224,
            LiteVariant::Lite2 => 260,
        }
    }

    /// Parses `efficientnet-lite0`, `lite0`, `efficientnet-lite2` or `lite2`.
    pub fn parse(s: &str) -> Option<Self> {
        match s
            .trim()
            .to_ascii_lowercase()
            .trim_start_matches("efficientnet-")
        {
            "lite0" => Some(LiteVariant::Lite0),
            "lite2" => Some(LiteVariant::Lite2),
            _ => None,
        }
    }
}

/// Mobile inverted bottleneck: 1×1 expand → k×k depthwise → 1×1 project, residual when shapes
/// allow.
#[derive(Debug, Clone)]
struct MbConv {
    expand: Option<PointwiseConvBn>,
    depthwise: DepthwiseConvBn,
    project: PointwiseConvBn,
    residual: bool,
}

impl MbConv {
    fn load(vb: VarBuilder, cin: usize, stride: usize) -> Result<(Self, usize)> {
        let has_expand = vb.contains_tensor("_expand_conv.weight");
        let hidden = if has_expand {
            vb.get_unchecked("_expand_conv.weight")?.dim(0)?
        } else {
            cin
        };
        let dw_shape = vb.get_unchecked("_depthwise_conv.weight")?.dims().to_vec();
        let kernel = *dw_shape
            .last()
            .ok_or_else(|| Error::msg("bad depthwise weight"))?;
        let cout = vb.get_unchecked("_project_conv.weight")?.dim(0)?;
        let expand = if has_expand {
            Some(PointwiseConvBn::load(
                vb.pp("_expand_conv"),
                vb.pp("_bn0"),
                cin,
                hidden,
                BN_EPS,
            )?)
        } else {
            None
        };
        let depthwise = DepthwiseConvBn::load(
            vb.pp("_depthwise_conv"),
            vb.pp("_bn1"),
            hidden,
            kernel,
            stride,
            BN_EPS,
        )?;
        let project =
            PointwiseConvBn::load(vb.pp("_project_conv"), vb.pp("_bn2"), hidden, cout, BN_EPS)?;
        let block = Self {
            expand,
            depthwise,
            project,
            residual: stride == 1 && cin == cout,
        };
        Ok((block, cout))
    }
}

impl Module for MbConv {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let mut h = x.clone();
        if let Some(expand) = &self.expand {
            h = expand.forward_relu6(&h)?;
        }
        h = self.depthwise.forward_relu6(&h)?;
        h = self.project.forward(&h)?;
        if self.residual {
            h = (h + x)?;
        }
        Ok(h)
    }
}

/// An EfficientNet-Lite with ImageNet weights: a 7×7 grid of 1280-d annotation vectors.
pub struct EfficientNetLite {
    variant: LiteVariant,
    stem: StemConvBn,
    blocks: Vec<MbConv>,
    head: PointwiseConvBn,
    classifier: Linear,
    device: Device,
}

/// Output channels of each block, read from the checkpoint.
fn block_channels(vb: &VarBuilder) -> Result<Vec<usize>> {
    let mut out = Vec::new();
    while vb.contains_tensor(&format!("_blocks.{}._project_conv.weight", out.len())) {
        out.push(
            vb.get_unchecked(&format!("_blocks.{}._project_conv.weight", out.len()))?
                .dim(0)?,
        );
    }
    Ok(out)
}

/// Stride of each block: the first block of each stage takes the stage's stride, and a stage
/// starts where the output channels change.
fn block_strides(channels: &[usize]) -> Result<Vec<usize>> {
    let mut strides = Vec::with_capacity(channels.len());
    let mut stage = 0usize;
    let mut prev = STEM_CHANNELS;
    for (i, &c) in channels.iter().enumerate() {
        let starts_stage = i == 0 || c != prev;
        if starts_stage && i > 0 {
            stage += 1;
        }
        let stride = *STAGE_STRIDES
            .get(stage)
            .ok_or_else(|| Error::msg("checkpoint has more than seven stages"))?;
        strides.push(if starts_stage { stride } else { 1 });
        prev = c;
    }
    if stage + 1 != STAGE_STRIDES.len() {
        return Err(Error::msg(format!(
            "checkpoint has {} stages, EfficientNet-Lite has seven",
            stage + 1
        )));
    }
    Ok(strides)
}

impl EfficientNetLite {
    /// Loads from a `VarBuilder` over the converted checkpoint (PyTorch key names).
    pub fn new(variant: LiteVariant, vb: VarBuilder) -> Result<Self> {
        let stem = StemConvBn::load(
            vb.pp("_conv_stem"),
            vb.pp("_bn0"),
            3,
            STEM_CHANNELS,
            3,
            2,
            BN_EPS,
        )?;
        let strides = block_strides(&block_channels(&vb)?)?;
        let mut blocks = Vec::with_capacity(strides.len());
        let mut channels = STEM_CHANNELS;
        for (i, &stride) in strides.iter().enumerate() {
            let (block, cout) = MbConv::load(vb.pp(format!("_blocks.{i}")), channels, stride)?;
            blocks.push(block);
            channels = cout;
        }
        let head = PointwiseConvBn::load(
            vb.pp("_conv_head"),
            vb.pp("_bn1"),
            channels,
            HEAD_CHANNELS,
            BN_EPS,
        )?;
        let classifier = candle_nn::linear(HEAD_CHANNELS, 1000, vb.pp("_fc"))?;
        Ok(Self {
            variant,
            stem,
            blocks,
            head,
            classifier,
            device: vb.device().clone(),
        })
    }

    /// Loads a safetensors file (f32 or f16) onto `device`.
    pub fn load(variant: LiteVariant, path: &Path, device: &Device) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let vb = VarBuilder::from_buffered_safetensors(bytes, DType::F32, device)?;
        Self::new(variant, vb)
    }

    pub fn variant(&self) -> LiteVariant {
        self.variant
    }

    /// ImageNet-1k logits from pooled features (B, 1280) → (B, 1000).
    pub fn classify(&self, pooled: &Tensor) -> Result<Tensor> {
        Ok(self.classifier.forward(pooled)?)
    }

    /// The classifier's weight (1000, 1280) and bias (1000): the head is global-average-pool +
    /// linear, so a class's weights dotted with one grid cell give that cell's share of the
    /// class logit (its class activation map).
    pub fn classifier_parts(&self) -> (&Tensor, Option<&Tensor>) {
        (self.classifier.weight(), self.classifier.bias())
    }
}

/// Average-pools an (B, H, W, C) grid to (B, side, side, C) with PyTorch's adaptive-pool windows
/// (cell i covers rows ⌊i·H/side⌋ .. ⌈(i+1)·H/side⌉), as one matmul.
fn adaptive_pool(h: &Tensor, side: usize) -> Result<Tensor> {
    let (b, gh, gw, c) = h.dims4()?;
    if gh == side && gw == side {
        return Ok(h.clone());
    }
    let window = |i: usize, n: usize| (i * n / side, ((i + 1) * n).div_ceil(side));
    let mut weights = vec![0f32; side * side * gh * gw];
    for oy in 0..side {
        let (y0, y1) = window(oy, gh);
        for ox in 0..side {
            let (x0, x1) = window(ox, gw);
            let share = 1.0 / ((y1 - y0) * (x1 - x0)) as f32;
            for y in y0..y1 {
                for x in x0..x1 {
                    weights[(oy * side + ox) * gh * gw + y * gw + x] = share;
                }
            }
        }
    }
    let pool = Tensor::from_vec(weights, (side * side, gh * gw), h.device())?;
    let flat = h.reshape((b, gh * gw, c))?;
    Ok(pool.broadcast_matmul(&flat)?.reshape((b, side, side, c))?)
}

impl ImageEncoder for EfficientNetLite {
    fn name(&self) -> &str {
        self.variant.name()
    }
    fn input_size(&self) -> u32 {
        self.variant.input_size()
    }
    fn feature_dim(&self) -> usize {
        HEAD_CHANNELS
    }
    fn grid_size(&self) -> (usize, usize) {
        (GRID_SIDE, GRID_SIDE)
    }
    fn device(&self) -> &Device {
        &self.device
    }
    fn encode(&self, x: &Tensor) -> Result<Encoded> {
        let mut h = self.stem.forward(x)?;
        h = relu6(&h)?;
        for block in &self.blocks {
            h = block.forward(&h)?;
        }
        let h = self.head.forward_relu6(&h)?;
        // The classifier reads the mean of the full grid (9×9 for Lite2 at 260 px); the decoders
        // and maps read it pooled to 7×7.
        let pooled = global_mean(&h)?;
        let h = adaptive_pool(&h, GRID_SIDE)?;
        let (b, gh, gw, c) = h.dims4()?;
        Ok(Encoded {
            grid: h.reshape((b, gh * gw, c))?,
            pooled,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_start_where_channels_change() {
        // Lite0's 16 blocks and Lite2's 21, as their checkpoints list the output channels.
        let lite0 = [
            16, 24, 24, 40, 40, 80, 80, 80, 112, 112, 112, 192, 192, 192, 192, 320,
        ];
        let s = block_strides(&lite0).unwrap();
        let twos: Vec<usize> = (0..s.len()).filter(|&i| s[i] == 2).collect();
        assert_eq!(twos, vec![1, 3, 5, 11]);
        let lite2 = [
            16, 24, 24, 24, 48, 48, 48, 88, 88, 88, 88, 120, 120, 120, 120, 208, 208, 208, 208,
            208, 352,
        ];
        let s = block_strides(&lite2).unwrap();
        let twos: Vec<usize> = (0..s.len()).filter(|&i| s[i] == 2).collect();
        assert_eq!(twos, vec![1, 4, 7, 15]);
        assert!(block_strides(&lite0[..10]).is_err(), "too few stages");
    }

    #[test]
    fn adaptive_pool_keeps_the_mean_of_uniform_grids_and_averages_windows() {
        let dev = Device::Cpu;
        let x = Tensor::arange(0f32, 81.0, &dev)
            .unwrap()
            .reshape((1, 9, 9, 1))
            .unwrap();
        let p = adaptive_pool(&x, 7).unwrap();
        assert_eq!(p.dims(), &[1, 7, 7, 1]);
        let v = p.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        // Cell (0, 0) covers rows 0..2 and columns 0..2 of the 9×9 grid: values 0, 1, 9, 10.
        assert!((v[0] - 5.0).abs() < 1e-5, "{}", v[0]);
        // The last cell covers rows and columns 7..9: values 70, 71, 79, 80.
        assert!((v[48] - 75.0).abs() < 1e-5, "{}", v[48]);
        let same = adaptive_pool(&x.narrow(1, 0, 7).unwrap().narrow(2, 0, 7).unwrap(), 7).unwrap();
        assert_eq!(same.dims(), &[1, 7, 7, 1]);
    }
}
