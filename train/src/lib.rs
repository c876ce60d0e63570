//! Training and evaluation for hashtale's models; `hashtale-models` holds what runs at inference.
//!
//! - [`data`]: readers for the datasets (HARRISON, tagged folders).
//! - [`tags`]: the hashtag trainers and the on-disk cache of encoder features they train on.
//! - [`story`]: the story corpora, the RMSProp optimiser and the story-model trainer, measures
//!   of generated stories.
//! - [`metrics`]: hashtag ranking metrics (precision/recall/accuracy@k, BLEU-1).
//! - [`expand_eval`]: held-out evaluation of the Instagram hashtag expansion.
//!
//! Errors are the model crate's: everything here reads files and runs candle as it does.

pub mod data;
pub mod expand_eval;
pub mod metrics;
pub mod story;
pub mod tags;

pub use hashtale_models::{Error, Result};
