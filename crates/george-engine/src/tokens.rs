//! Agent tokens: a random bearer token minted for one attempt. The store
//! keeps only its SHA-256, so a leaked database does not leak live tokens.

use sha2::{Digest, Sha256};

/// Prefix of agent tokens, so they are recognisable in a secret scanner.
pub const AGENT_TOKEN_PREFIX: &str = "gat_";

/// A fresh random token.
pub fn mint() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the operating system's random source is unavailable");
    format!("{AGENT_TOKEN_PREFIX}{}", hex::encode(bytes))
}

/// The hash the store keeps.
pub fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn tokens_are_unique_and_hashed() {
        let (a, b) = (super::mint(), super::mint());
        assert_ne!(a, b);
        assert!(a.starts_with("gat_") && a.len() == 68);
        assert_eq!(super::hash(&a), super::hash(&a));
        assert_ne!(super::hash(&a), a);
    }
}
