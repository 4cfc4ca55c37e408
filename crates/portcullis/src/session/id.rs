//! Session ids: 256 bits from the OS CSPRNG, base64url in the cookie,
//! SHA-256 hex at rest.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// `n` random bytes from the OS CSPRNG, base64url without padding.
pub fn random_token(n: usize) -> String {
    let mut buf = vec![0u8; n];
    // The OS RNG failing is not recoverable; a predictable id would be worse than a crash.
    getrandom::fill(&mut buf).expect("OS random number generator failed");
    URL_SAFE_NO_PAD.encode(buf)
}

/// A new random 256-bit key, standard base64 (for `session.encryption_keys`).
pub fn random_key_base64() -> String {
    use base64::engine::general_purpose::STANDARD;
    let mut buf = [0u8; 32];
    getrandom::fill(&mut buf).expect("OS random number generator failed");
    STANDARD.encode(buf)
}

/// The cookie value. Secret: redacted `Debug`, never logged, never stored.
#[derive(Clone)]
pub struct SessionId(String);

impl SessionId {
    /// A fresh 256-bit id.
    pub fn generate() -> Self {
        Self(random_token(32))
    }

    /// Accept a cookie value only if it has the exact shape we issue
    /// (43 base64url chars); anything else is treated as no session.
    pub fn parse(value: &str) -> Option<Self> {
        Self::well_formed(value).then(|| Self(value.to_string()))
    }

    /// The hash of a cookie value that [`parse`](Self::parse) accepts,
    /// without keeping a copy of the secret (the request path needs only
    /// the hash).
    pub fn hash_of(value: &str) -> Option<SessionHash> {
        Self::well_formed(value).then(|| SessionHash(hex_sha256(value.as_bytes())))
    }

    /// Whether `value` has the shape of an id we issue (43 base64url
    /// characters); also the shape of the login cookie's binding.
    pub fn well_formed(value: &str) -> bool {
        value.len() == 43 && value.bytes().all(|b| BASE64URL[usize::from(b)])
    }

    pub fn as_cookie_value(&self) -> &str {
        &self.0
    }

    pub fn hash(&self) -> SessionHash {
        SessionHash(hex_sha256(self.0.as_bytes()))
    }
}

impl std::fmt::Debug for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionId(***)")
    }
}

/// SHA-256 hex of a [`SessionId`]: the store key. Safe to log (prefix only, by habit).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SessionHash(String);

impl SessionHash {
    /// Wrap a stored hex hash (e.g. from an admin API path). Returns `None` unless 64 hex chars.
    pub fn from_hex(s: &str) -> Option<Self> {
        (s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| Self(s.to_ascii_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// First 8 hex chars, for logs.
    pub fn short(&self) -> &str {
        &self.0[..8]
    }
}

/// The bytes of the base64url alphabet (a table: this runs on every
/// request's cookie).
const BASE64URL: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric() || c == b'-' || c == b'_';
        b += 1;
    }
    table
};

/// Lowercase hex SHA-256.
pub fn hex_sha256(data: &[u8]) -> String {
    let digest = Sha256::digest(data);
    // Runs on every request (session lookup): no formatter, and the digits
    // go into a buffer on the stack rather than a char at a time into a String.
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 64];
    for (pair, b) in out.chunks_exact_mut(2).zip(digest) {
        pair[0] = HEX[usize::from(b >> 4)];
        pair[1] = HEX[usize::from(b & 0x0f)];
    }
    // Hex digits are ASCII: this never fails.
    std::str::from_utf8(&out)
        .map(str::to_owned)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_256_bit_unique_and_hashed() {
        let a = SessionId::generate();
        let b = SessionId::generate();
        assert_eq!(a.as_cookie_value().len(), 43);
        assert_ne!(a.as_cookie_value(), b.as_cookie_value());
        assert_eq!(a.hash().as_str().len(), 64);
        assert_ne!(a.hash().as_str(), a.as_cookie_value());
        assert!(!format!("{a:?}").contains(a.as_cookie_value()));
    }

    #[test]
    fn hex_sha256_matches_known_vectors() {
        assert_eq!(
            hex_sha256(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            hex_sha256(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn parse_rejects_foreign_shapes() {
        assert!(SessionId::parse("short").is_none());
        assert!(SessionId::parse(&"a".repeat(44)).is_none());
        assert!(SessionId::parse(&format!("{}!", "a".repeat(42))).is_none());
        assert!(SessionId::parse(&"a".repeat(43)).is_some());
        for value in ["short", &"a".repeat(44), &format!("{}!", "a".repeat(42))] {
            assert!(SessionId::hash_of(value).is_none(), "{value}");
        }
        let id = SessionId::generate();
        assert_eq!(SessionId::hash_of(id.as_cookie_value()), Some(id.hash()));
    }
}
