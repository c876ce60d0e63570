//! The limits on fetching and decoding outsiders' images (the `[fetch]` table of the config).
use serde::{Deserialize, Serialize};

use crate::DecodeLimits;

/// Limits on fetching and decoding images from outsiders.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct FetchConfig {
    /// Total deadline of one fetch: connecting, every redirect hop and the whole body.
    pub timeout_ms: u64,
    pub max_bytes: u64,
    /// Largest width × height accepted (decompression bombs).
    pub max_pixels: u64,
    /// Largest single side accepted.
    pub max_side: u32,
    /// Allow loopback, private and link-local addresses (tests, local feeds).
    pub allow_private: bool,
    /// Hosts (names or addresses, as written in URLs) that may be non-public even when
    /// `allow_private` is off, e.g. an intranet feed. Each redirect hop is checked on its own.
    pub allow_private_hosts: Vec<String>,
    pub max_redirects: usize,
}

impl FetchConfig {
    /// The limits every decode of an outsider's image uses (the worker's and the CLI's).
    pub fn decode_limits(&self) -> DecodeLimits {
        DecodeLimits {
            max_bytes: self.max_bytes,
            max_pixels: self.max_pixels,
            max_side: self.max_side,
        }
    }
}

impl Default for FetchConfig {
    fn default() -> Self {
        // The decoder's defaults: `hashtale tag` and the pipeline accept the same photos.
        let limits = DecodeLimits::default();
        Self {
            timeout_ms: 10_000,
            max_bytes: limits.max_bytes,
            max_pixels: limits.max_pixels,
            max_side: limits.max_side,
            allow_private: false,
            allow_private_hosts: Vec::new(),
            max_redirects: 5,
        }
    }
}
