//! hashtale's models at inference: everything that turns pixels into hashtags and stories.
//!
//! - [`pipeline`]: the whole model step of the worker and `hashtale tag` ([`pipeline::Hashtale`]).
//! - [`encoder`]: the EfficientNet-Lite image encoder (grid and pooled features, ImageNet head).
//! - [`tags`]: hashtag decoders, concept hashtags, the linear probe, their fusion.
//! - [`expand`]: Instagram hashtag suggestions from co-occurrence statistics.
//! - [`story`]: the story models (char/subword LSTM, llama2.c) and their host engine.
//! - [`nn`]: layers the models share (the LSTM cell, dropout, seeded initialisation).
//! - [`paths`]: [`ModelPaths`], the files the pipeline loads (resolved by the binary).
//! - [`image_prep`], [`fast_math`], [`device`], [`hash`], [`error`]: image preprocessing, fast
//!   elementwise maths, device choice, digests and versions, errors.
//!
//! Training, datasets, the feature cache and evaluation metrics are in `hashtale-train`. No
//! database, queue or HTTP code lives here, and nothing reads the environment or decides where
//! assets live: loaders open the paths they are given (a model folder's own files, and a
//! llama2.c checkpoint's tokenizer beside it when none is named). Layers follow candle-nn's
//! style: one small module per layer, a `forward`, weights through a `VarBuilder`.

pub mod device;
pub mod encoder;
pub mod error;
pub mod expand;
pub mod fast_math;
pub mod hash;
pub mod image_prep;
pub mod nn;
pub mod paths;
pub mod pipeline;
pub mod story;
pub mod tags;

pub use error::{Error, Result};
pub use paths::ModelPaths;
