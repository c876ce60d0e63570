//! HMAC-SHA256, the one keyed hash of hashtale: webhook signatures (worker) and the rating
//! pages' CSRF tokens and session cookies (api) both go through here.
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

fn keyed(key: &[u8]) -> HmacSha256 {
    HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length")
}

/// HMAC-SHA256 of `message` under `key`, as RFC 2104 defines it (what webhook receivers check).
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut m = keyed(key);
    m.update(message);
    m.finalize().into_bytes().into()
}

fn parts_mac(key: &[u8], parts: &[&[u8]]) -> HmacSha256 {
    let mut m = keyed(key);
    for p in parts {
        // Length-prefixed so that no two part lists give the same input.
        m.update(&(p.len() as u64).to_be_bytes());
        m.update(p);
    }
    m
}

/// HMAC-SHA256 of a list of fields, each length-prefixed (so `["ab", "c"]` ≠ `["a", "bc"]`).
pub fn hmac_sha256_parts(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    parts_mac(key, parts).finalize().into_bytes().into()
}

/// Whether `tag` is [`hmac_sha256_parts`] of `parts`, compared in constant time.
pub fn verify_parts(key: &[u8], parts: &[&[u8]], tag: &[u8]) -> bool {
    parts_mac(key, parts).verify_slice(tag).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_4231_case_2() {
        assert_eq!(
            hex::encode(hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn parts_are_unambiguous_and_verify() {
        let k = b"key";
        let a = hmac_sha256_parts(k, &[b"ab", b"c"]);
        assert_ne!(a, hmac_sha256_parts(k, &[b"a", b"bc"]));
        assert!(verify_parts(k, &[b"ab", b"c"], &a));
        assert!(!verify_parts(k, &[b"a", b"bc"], &a));
        assert!(!verify_parts(k, &[b"ab", b"c"], &a[..31]));
    }
}
