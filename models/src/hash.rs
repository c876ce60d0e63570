//! FNV-1a (64 bit): a stable, dependency-free hash for cache keys, weight digests, dataset
//! carving and per-image RNG streams. Not for security.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    })
}

/// The short digest that names a weights file in model versions: the first 8 hex digits of its
/// FNV-1a hash.
pub fn short_digest(bytes: &[u8]) -> String {
    format!("{:016x}", fnv1a(bytes))[..8].to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn matches_the_reference_vectors() {
        assert_eq!(super::fnv1a(b""), 0xcbf29ce484222325);
        assert_eq!(super::fnv1a(b"a"), 0xaf63dc4c8601ec8c);
    }
}
