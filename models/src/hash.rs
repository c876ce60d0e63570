//! FNV-1a (64 bit): a stable, dependency-free hash for cache keys, weight digests, dataset
//! carving and per-image RNG streams. Not for security.
//!
//! Also the one digest and version format every model reports: `kind-digest`.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    })
}

/// Which part of the FNV-1a hash a digest keeps. Both widths are in model versions that results
/// store and compare, so each kind of file keeps the one it was first published with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigestWidth {
    /// The high 32 bits as 8 hex digits: story checkpoints (LSTM and llama2.c).
    High32,
    /// The low 48 bits as 12 hex digits: hashtag models, probes, concept tables, hashtag
    /// statistics and feature-cache names.
    Low48,
}

/// The short digest that names a file's contents in model versions and cache names.
pub fn digest(bytes: &[u8], width: DigestWidth) -> String {
    let h = fnv1a(bytes);
    match width {
        DigestWidth::High32 => format!("{:08x}", h >> 32),
        DigestWidth::Low48 => format!("{:012x}", h & 0xffff_ffff_ffff),
    }
}

/// A model version as results record it: `kind-digest`, e.g. `attention-77465e76f1ca` or
/// `story-subword-fd132695`.
pub fn version(kind: &str, digest: &str) -> String {
    format!("{kind}-{digest}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_reference_vectors() {
        assert_eq!(fnv1a(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a(b"a"), 0xaf63dc4c8601ec8c);
    }

    /// The two formats the digests had before they shared this function.
    #[test]
    fn digests_keep_their_published_formats() {
        for bytes in [&b""[..], b"a", b"hashtale weights"] {
            let h = fnv1a(bytes);
            assert_eq!(
                digest(bytes, DigestWidth::High32),
                format!("{h:016x}")[..8].to_string()
            );
            assert_eq!(
                digest(bytes, DigestWidth::Low48),
                format!("{:012x}", h & 0xffff_ffff_ffff)
            );
        }
        assert_eq!(digest(b"a", DigestWidth::High32), "af63dc4c");
        assert_eq!(digest(b"a", DigestWidth::Low48), "dc4c8601ec8c");
        assert_eq!(version("attention", "0123"), "attention-0123");
    }
}
