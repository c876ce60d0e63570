//! Image encoders: a pretrained CNN turns pixels into a grid of annotation vectors.
//!
//! The hashtag decoders only see [`Encoded`], so a bigger encoder (ResNet, ConvNeXt, a user's
//! safetensors) can be added by implementing [`ImageEncoder`].
pub mod efficientnet;
pub mod layers;

use candle_core::{Device, Tensor};
use image::DynamicImage;

use crate::image_prep::images_to_tensor;
use crate::Result;

pub use efficientnet::{EfficientNetLite, LiteVariant, GRID_SIDE};

/// Encoder output for a batch.
#[derive(Debug, Clone)]
pub struct Encoded {
    /// (B, L, D): L annotation vectors (L = 49 for a 7×7 grid), row-major over the grid.
    pub grid: Tensor,
    /// (B, D): the grid's average, for the baselines.
    pub pooled: Tensor,
}

/// A pretrained image encoder.
pub trait ImageEncoder: Send + Sync {
    /// A short name stored with features and model versions.
    fn name(&self) -> &str;
    /// Square input side in pixels.
    fn input_size(&self) -> u32;
    /// Dimension D of each annotation vector.
    fn feature_dim(&self) -> usize;
    /// Grid height and width (L = h·w).
    fn grid_size(&self) -> (usize, usize);
    fn device(&self) -> &Device;
    /// Encodes a preprocessed NHWC batch.
    fn encode(&self, x: &Tensor) -> Result<Encoded>;

    /// Preprocesses and encodes decoded images.
    fn encode_images(&self, images: &[DynamicImage]) -> Result<Encoded> {
        let x = images_to_tensor(images, self.input_size(), self.device())?;
        self.encode(&x)
    }
}

/// The default encoder: Lite0 (see docs/tags.md for the Lite0/Lite2 trade-off).
pub const DEFAULT_ENCODER: LiteVariant = LiteVariant::Lite0;

/// Loads the weights of `variant` from `paths`.
pub fn load_encoder(
    variant: LiteVariant,
    paths: &crate::ModelPaths,
    device: &Device,
) -> Result<EfficientNetLite> {
    EfficientNetLite::load(variant, &paths.encoder_weights(variant), device)
}

/// The ImageNet-1k class names, in index order, from the file beside the encoder weights.
pub fn imagenet_classes(paths: &crate::ModelPaths) -> Result<Vec<String>> {
    let path = paths.imagenet_classes();
    let text = std::fs::read_to_string(&path).map_err(|e| crate::Error::io(&path, e))?;
    Ok(text.lines().map(str::to_string).collect())
}
