//! EfficientNet-Lite0 (Tan & Le 2019, "Lite" variant: no squeeze-excitation, ReLU6, fixed stem
//! and head widths), inference only, with its ImageNet-1k classifier.
//!
//! Block layout is read from the checkpoint (expansion present or not, kernel size from the
//! depthwise weight), so only the strides and the BatchNorm epsilon are fixed here.
use std::path::Path;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Linear, VarBuilder};

use super::layers::{global_mean, relu6, DepthwiseConvBn, PointwiseConvBn, StemConvBn};
use super::{Encoded, ImageEncoder};
use crate::{Error, Result};

const BN_EPS: f64 = 1e-3;
/// Blocks that halve the resolution; with the stem, 224 → 7.
const STRIDE_TWO_BLOCKS: [usize; 4] = [1, 3, 5, 11];
const NUM_BLOCKS: usize = 16;
const STEM_CHANNELS: usize = 32;
const HEAD_CHANNELS: usize = 1280;
const INPUT_SIZE: u32 = 224;

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
            h = relu6(&expand.forward(&h)?)?;
        }
        h = relu6(&self.depthwise.forward(&h)?)?;
        h = self.project.forward(&h)?;
        if self.residual {
            h = (h + x)?;
        }
        Ok(h)
    }
}

/// EfficientNet-Lite0 with ImageNet weights: a 7×7 grid of 1280-d annotation vectors.
pub struct EfficientNetLite0 {
    stem: StemConvBn,
    blocks: Vec<MbConv>,
    head: PointwiseConvBn,
    classifier: Linear,
    device: Device,
}

impl EfficientNetLite0 {
    /// Loads from a `VarBuilder` over the converted checkpoint (PyTorch key names).
    pub fn new(vb: VarBuilder) -> Result<Self> {
        let stem = StemConvBn::load(
            vb.pp("_conv_stem"),
            vb.pp("_bn0"),
            3,
            STEM_CHANNELS,
            3,
            2,
            BN_EPS,
        )?;
        let mut blocks = Vec::with_capacity(NUM_BLOCKS);
        let mut channels = STEM_CHANNELS;
        for i in 0..NUM_BLOCKS {
            let stride = if STRIDE_TWO_BLOCKS.contains(&i) { 2 } else { 1 };
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
            stem,
            blocks,
            head,
            classifier,
            device: vb.device().clone(),
        })
    }

    /// Loads a safetensors file (f32 or f16) onto `device`.
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let vb = VarBuilder::from_buffered_safetensors(bytes, DType::F32, device)?;
        Self::new(vb)
    }

    /// ImageNet-1k logits from pooled features (B, 1280) → (B, 1000).
    pub fn classify(&self, pooled: &Tensor) -> Result<Tensor> {
        Ok(self.classifier.forward(pooled)?)
    }
}

impl ImageEncoder for EfficientNetLite0 {
    fn name(&self) -> &str {
        "efficientnet-lite0"
    }
    fn input_size(&self) -> u32 {
        INPUT_SIZE
    }
    fn feature_dim(&self) -> usize {
        HEAD_CHANNELS
    }
    fn grid_size(&self) -> (usize, usize) {
        let s = INPUT_SIZE as usize / 32;
        (s, s)
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
        let h = relu6(&self.head.forward(&h)?)?;
        let (b, gh, gw, c) = h.dims4()?;
        let pooled = global_mean(&h)?;
        Ok(Encoded {
            grid: h.reshape((b, gh * gw, c))?,
            pooled,
        })
    }
}
