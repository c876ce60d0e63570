//! Training and evaluating the hashtag models.
//!
//! - [`features`]: encoder features computed once per dataset and cached on disk.
//! - [`fusion_fit`]: fitting the fusion's photo gate and calibrations.
//! - [`train`]: the decoder trainers (Show-Attend-Tell, Show-and-Tell, multi-label).
//! - [`probe`]: fitting the linear probe and its mixture of experts.
//! - [`probe_fit`]: the probe trained on several folders, with its dev figures.
//! - [`taggers`]: the taggers run over cached features, for evaluation and the fusion fit.
//! - [`eval`]: the lists and metrics of `eval tags`.
//! - [`fusion_tune`]: fitting the fusion weights (`tune fusion`).
pub mod eval;
pub mod features;
pub mod fusion_fit;
pub mod fusion_tune;
pub mod probe;
pub mod probe_fit;
pub mod taggers;
pub mod train;
