//! Images (and feeds) from outsiders, defensively.
//!
//! - [`client`]: the SSRF-safe HTTP client ([`Fetcher`]): http(s) only, public addresses only
//!   (checked after DNS and on every redirect hop), caps on bytes and time.
//! - [`decode`]: the one image decoder (magic-byte sniffing, an allowlist of formats, caps on
//!   bytes, pixels and sides checked before any pixel is allocated, EXIF orientation). The CLI
//!   (`hashtale tag`, `classify`), dataset tools and the worker all decode here, so a photo one
//!   accepts the others accept too.
//! - [`config`]: the one set of limits for both ([`FetchConfig`], [`DecodeLimits`]).
//! - `test_support` (tests only): axum test servers for the client's tests.
pub mod client;
pub mod config;
pub mod decode;
#[cfg(test)]
mod test_support;

pub use client::{is_public, read_body_capped, Fetcher};
pub use config::FetchConfig;
pub use decode::{
    decode_image, load_image, load_image_file, sniff, DecodeError, DecodeLimits, ACCEPTED_FORMATS,
};

/// Why a fetch failed, classified for the job that asked.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The client could not be built from the configuration.
    #[error("configuration: {0}")]
    Config(String),
    /// The input is unusable (bad URL, refused address, too large, not an image, …); retrying
    /// will not help.
    #[error("{0}")]
    BadInput(String),
    /// A transient failure (network, server error); the job may be retried.
    #[error("{0}")]
    Transient(String),
}

impl FetchError {
    /// Whether the same fetch could succeed later.
    pub fn is_retryable(&self) -> bool {
        matches!(self, FetchError::Transient(_))
    }
}

/// Result with [`FetchError`].
pub type FetchResult<T> = std::result::Result<T, FetchError>;
