//! API keys: `nk_` followed by 32 random bytes in hex. Only the SHA-256 of a key is stored;
//! a fast hash is enough because the key itself carries 256 bits of entropy.

use rand::RngCore;
use sha2::{Digest, Sha256};

pub const PREFIX: &str = "nk_";

/// A new random key, as the caller will present it.
pub fn generate() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{PREFIX}{}", hex::encode(bytes))
}

/// Whether `key` could be one [`generate`] made: anything else is refused without a look
/// in the database.
pub fn is_well_formed(key: &str) -> bool {
    key.strip_prefix(PREFIX).is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// What the store keeps and looks keys up by.
pub fn hash(key: &str) -> Vec<u8> {
    Sha256::digest(key.as_bytes()).to_vec()
}

/// The first characters of a key, safe to show in listings and logs.
pub fn display_prefix(key: &str) -> &str {
    &key[..key.len().min(PREFIX.len() + 8)]
}

#[cfg(test)]
mod tests {
    #[test]
    fn keys_are_unique_and_hash_stably() {
        let (a, b) = (super::generate(), super::generate());
        assert_ne!(a, b);
        assert!(a.starts_with("nk_") && a.len() == 3 + 64);
        assert_eq!(super::hash(&a), super::hash(&a));
        assert_ne!(super::hash(&a), super::hash(&b));
        assert!(super::is_well_formed(&a));
        for bad in [
            "",
            "nk_",
            "nk_abc",
            &a[1..],
            &format!("{a}0"),
            &a.replace("nk_", "xk_"),
            &format!("nk_{}", "g".repeat(64)),
        ] {
            assert!(!super::is_well_formed(bad), "{bad}");
        }
    }
}
