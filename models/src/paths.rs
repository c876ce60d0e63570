//! Where the models' files are.
//!
//! The binary resolves these once, from its `[models]` config section, and hands them down:
//! nothing in this crate reads the environment, the working directory or its own build path.
use std::path::{Path, PathBuf};

use crate::encoder::LiteVariant;

/// Every file or folder the shipped pipeline loads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelPaths {
    /// Holds `lite0.safetensors`, `lite2.safetensors` and `imagenet_classes.txt`.
    pub encoder_dir: PathBuf,
    /// The hashtag model folder (`config.json`, `model.safetensors`, `fusion.json`, a probe);
    /// its `encoder` field picks the encoder.
    pub tag_model: PathBuf,
    /// The ImageNet class → hashtag table.
    pub concepts: PathBuf,
    /// A char/subword LSTM checkpoint folder or a llama2.c `.bin` file.
    pub story_model: PathBuf,
    /// A llama2.c model's tokenizer (`None`: the one beside the checkpoint).
    pub story_tokenizer: Option<PathBuf>,
    /// The Instagram co-occurrence statistics (a file, or a folder holding the shipped file).
    pub hashtag_stats: PathBuf,
}

impl ModelPaths {
    /// The layout of the shipped `assets/` folder rooted at `assets`; the caller picks the root
    /// (the binary's `cmd::models::resolve`, from config and environment; tests).
    pub fn shipped(assets: &Path) -> Self {
        Self {
            encoder_dir: assets.join("encoder"),
            tag_model: assets.join("tags"),
            concepts: assets.join("concepts/concepts.tsv"),
            story_model: assets.join("story-subword"),
            story_tokenizer: None,
            hashtag_stats: assets.join("hashtags"),
        }
    }

    /// The weights of an EfficientNet-Lite variant.
    pub fn encoder_weights(&self, variant: LiteVariant) -> PathBuf {
        self.encoder_dir
            .join(format!("{}.safetensors", variant.name()))
    }

    /// The ImageNet-1k class names, in index order.
    pub fn imagenet_classes(&self) -> PathBuf {
        self.encoder_dir.join("imagenet_classes.txt")
    }
}
