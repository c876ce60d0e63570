//! Training and evaluating the story models.
//!
//! - [`corpus`]: story files, the dev split, training streams and their prefixes.
//! - [`rmsprop`]: the RMSProp optimizer candle-nn lacks.
//! - [`train`]: truncated-BPTT training of the char/subword LSTM.
//! - [`quality`]: measures of generated stories that need no model.
//! - [`eval`]: the reports of `eval story` (conditioned vs plain, models side by side).
//! - [`llama_corpus`]: a training corpus written by a llama2.c model from hashtag prompts.
pub mod corpus;
pub mod eval;
pub mod llama_corpus;
pub mod quality;
pub mod rmsprop;
pub mod train;

pub use rmsprop::{RmsProp, RmsPropConfig};
pub use train::{train, TrainConfig, TrainReport};
