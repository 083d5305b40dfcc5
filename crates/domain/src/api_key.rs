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
    }
}
