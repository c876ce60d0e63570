//! The hashtag-seeded story model: a character-level LSTM language model that writes the ~500
//! characters following a hashtag, many seeds at once.
//!
//! - [`corpus`]: story files, alphabet, dev split, training/eval streams.
//! - [`charlm`]: the model (embedding, stacked LSTM, output layer).
//! - [`rmsprop`]: the RMSProp optimizer candle-nn lacks.
//! - [`train`]: training and bits-per-character evaluation.
//! - [`generate`]: batched sampling.
//! - [`checkpoint`]: safetensors + JSON checkpoints.
use std::path::{Path, PathBuf};

use candle_core::Device;

pub mod charlm;
pub mod checkpoint;
pub mod corpus;
pub mod generate;
pub mod rmsprop;
pub mod train;

pub use charlm::{CharLm, CharLmConfig};
pub use corpus::Alphabet;
pub use generate::{stream_seed, GenerateOptions};
pub use rmsprop::{RmsProp, RmsPropConfig};
pub use train::{EvalResult, TrainConfig};

use crate::Result;

/// Environment variable that points [`StoryModel::load_default`] at another checkpoint dir.
pub const MODEL_ENV: &str = "HASHTALE_STORY_MODEL";

/// A loaded story model, ready to write stories.
#[derive(Debug, Clone)]
pub struct StoryModel {
    lm: CharLm,
    alphabet: Alphabet,
    meta: checkpoint::CheckpointMeta,
    hash: String,
}

impl StoryModel {
    /// Loads a checkpoint directory (`model.safetensors` + `config.json`).
    pub fn load(dir: &Path, device: &Device) -> Result<StoryModel> {
        let (lm, meta, hash) = checkpoint::load(dir, device)?;
        Ok(StoryModel {
            lm,
            alphabet: meta.alphabet(),
            meta,
            hash,
        })
    }

    /// Where the default model lives: `$HASHTALE_STORY_MODEL`, else the repo's `assets/story`.
    pub fn default_dir() -> PathBuf {
        match std::env::var_os(MODEL_ENV) {
            Some(p) if !p.is_empty() => PathBuf::from(p),
            _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/story"),
        }
    }

    /// Loads the shipped model (see [`StoryModel::default_dir`]).
    pub fn load_default(device: &Device) -> Result<StoryModel> {
        Self::load(&Self::default_dir(), device)
    }

    /// One story per seed (usually a hashtag such as `#friend`), all advanced together; seed i
    /// samples from RNG stream i of `opts.seed`, so the result equals one-at-a-time calls of
    /// [`StoryModel::generate_streams`] with the same stream numbers.
    pub fn generate_batch(&self, seeds: &[String], opts: &GenerateOptions) -> Result<Vec<String>> {
        let streams: Vec<u64> = (0..seeds.len() as u64).collect();
        self.generate_streams(seeds, &streams, opts)
    }

    /// Like [`StoryModel::generate_batch`] with explicit RNG stream numbers, one per seed.
    pub fn generate_streams(
        &self,
        seeds: &[String],
        streams: &[u64],
        opts: &GenerateOptions,
    ) -> Result<Vec<String>> {
        if seeds.len() != streams.len() {
            return Err(crate::Error::msg("one RNG stream per seed"));
        }
        generate::generate(&self.lm, &self.alphabet, seeds, streams, opts)
    }

    /// Bits per character on stories (see [`train::evaluate`]).
    pub fn evaluate(&self, stories: &[String]) -> Result<EvalResult> {
        train::evaluate(&self.lm, &self.alphabet, stories)
    }

    /// Model name and a short hash of its weights file, e.g. `story-charlm-1a2b3c4d`.
    pub fn version(&self) -> String {
        format!("{}-{}", self.meta.name, self.hash)
    }

    pub fn alphabet(&self) -> &Alphabet {
        &self.alphabet
    }

    pub fn lm(&self) -> &CharLm {
        &self.lm
    }

    pub fn meta(&self) -> &checkpoint::CheckpointMeta {
        &self.meta
    }
}
