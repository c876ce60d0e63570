//! The whole model step for a batch of images: encoder → batched beam search → stories.
//!
//! This is the one entry point the worker and the CLI use.
use image::DynamicImage;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// One hashtag with its probability and the 7×7 attention map (49 weights, row-major) that
/// produced it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ScoredTag {
    pub tag: String,
    pub score: f32,
    pub attention: Vec<f32>,
}

/// What the models say about one image.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ImageResult {
    pub hashtags: Vec<ScoredTag>,
    pub story: Option<String>,
}

/// Loaded models, ready to run batches.
pub struct Hashtale {
    _private: (),
}

impl Hashtale {
    /// Loads the default models shipped in the repository's `assets/`.
    pub fn load_default() -> Result<Self> {
        Err(Error::msg("the hashtag model is not built yet"))
    }

    /// A string naming the exact weights in use, stored with every result.
    pub fn model_version(&self) -> String {
        String::new()
    }

    /// Runs every model on a batch of decoded images; one result per image, in order.
    pub fn run_batch(&self, _images: &[DynamicImage]) -> Result<Vec<ImageResult>> {
        Err(Error::msg("the hashtag model is not built yet"))
    }
}
