//! Training the hashtag models.
//!
//! - [`features`]: encoder features computed once per dataset and cached on disk.
//! - [`fusion_fit`]: fitting the fusion's photo gate and calibrations.
//! - [`train`]: the decoder trainers (Show-Attend-Tell, Show-and-Tell, multi-label).
//! - [`probe`]: fitting the linear probe and its mixture of experts.
pub mod features;
pub mod fusion_fit;
pub mod probe;
pub mod train;
