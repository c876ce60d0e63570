//! What every service crate of hashtale shares, and the models do not need.
//!
//! - [`config`]: the configuration file and environment (`[database]`, `[queue]`, `[fetch]`, …).
//! - [`error`]: the pipeline's one error, classified as retryable or not and as "the database
//!   or broker is unreachable" or not, so every stage decides the same way.
//! - [`metrics`]: the Prometheus metrics' names and the process's recorder.
//! - [`sign`]: HMAC-SHA256 (webhook signatures, rating CSRF tokens and sessions).
pub mod config;
pub mod error;
pub mod metrics;
pub mod sign;

pub use config::Config;
pub use error::{Error, Result};
