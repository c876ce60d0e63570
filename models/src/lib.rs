//! hashtale's machine learning: everything that turns pixels into hashtags and stories.
//!
//! No database, queue or HTTP code lives here: the worker and the CLI call into this crate.
//! Layers follow candle-nn's style: one small module per layer, a `forward`, weights through
//! a `VarBuilder`.

pub mod data;
pub mod device;
pub mod encoder;
pub mod error;
pub mod expand;
pub mod fast_math;
pub mod hash;
pub mod image_prep;
pub mod metrics;
pub mod paths;
pub mod pipeline;
pub mod story;
pub mod tags;

pub use error::{Error, Result};
pub use paths::ModelPaths;
