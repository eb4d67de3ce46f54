//! A key's secret: made from 32 random bytes of the operating system, shown once, and
//! kept only as its SHA-256 digest plus a short prefix for listings.
//!
//! A plain SHA-256 (no salt, no slow hash) is right here because the secrets are random
//! and 256 bits long: there is nothing to guess from a digest, and a fast digest lets
//! every request be checked without a cost worth measuring.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// How every secret starts, so one found in a log or a file is recognisable.
pub const SECRET_MARK: &str = "fk_";

/// Characters of a secret kept in clear (the mark and 8 of the random part).
const PREFIX_CHARS: usize = SECRET_MARK.len() + 8;

/// A new secret: the mark and 43 characters of URL-safe base64 (256 random bits).
pub fn generate() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(format!("{SECRET_MARK}{}", URL_SAFE_NO_PAD.encode(bytes)))
}

/// The part of a secret shown in listings.
pub fn prefix(secret: &str) -> String {
    secret.chars().take(PREFIX_CHARS).collect()
}

pub fn digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Digests compared in constant time.
pub fn same_digest(a: &[u8; 32], b: &[u8; 32]) -> bool {
    bool::from(a.as_slice().ct_eq(b.as_slice()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_marked_long_and_distinct() {
        let one = generate().unwrap();
        let two = generate().unwrap();
        assert_ne!(one, two);
        assert!(one.starts_with(SECRET_MARK));
        assert_eq!(one.len(), SECRET_MARK.len() + 43);
        assert_eq!(prefix(&one).len(), 11);
        assert!(one.starts_with(&prefix(&one)));
        assert!(same_digest(&digest(&one), &digest(&one)));
        assert!(!same_digest(&digest(&one), &digest(&two)));
    }
}
