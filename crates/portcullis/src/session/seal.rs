//! Encryption at rest: the [`Keyring`] that seals session payloads with
//! AES-256-GCM before a persistent store writes them (and, with keys derived
//! for the purpose, the login cookie: `login_cookie.rs`).
//!
//! A sealed value is `MAGIC (2) | key id (8) | nonce (12) | ciphertext+tag`.
//! The key id (the first 8 bytes of SHA-256 over the key) says which key of
//! the ring opens it, so rotation is: put the new key first, keep the old ones
//! after it; every record is re-sealed with the first key on its next write.
//! The associated data binds a sealed value to its record id, so a payload
//! copied onto another row does not open.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use sha2::{Digest, Sha256};

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::{SessionRecord, StoreError};
use crate::secret::Secret;

/// Marks a sealed value (format version 1); plain JSON never starts with it.
const MAGIC: [u8; 2] = [0xA7, 0x01];
const KEY_ID_LEN: usize = 8;
const NONCE_LEN: usize = 12;
const HEADER_LEN: usize = MAGIC.len() + KEY_ID_LEN + NONCE_LEN;

/// Why a value could not be sealed or opened. Messages never contain key or plaintext bytes.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("encryption key #{0} is not 32 bytes of base64")]
    BadKey(usize),
    #[error("the keyring is empty")]
    NoKeys,
    #[error("sealed value is malformed")]
    Malformed,
    #[error("sealed with key id {0}, which is not in the keyring")]
    UnknownKey(String),
    #[error("sealed value failed authentication (wrong key, tampered, or another record's)")]
    Forged,
    #[error("encryption failed")]
    Encrypt,
}

struct RingKey {
    id: [u8; KEY_ID_LEN],
    cipher: Aes256Gcm,
}

/// The session-encryption keys: the first seals, every one opens.
pub struct Keyring {
    keys: Vec<RingKey>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<String> = self.keys.iter().map(|k| hex(&k.id)).collect();
        f.debug_struct("Keyring").field("key_ids", &ids).finish()
    }
}

impl Keyring {
    /// Build from raw 32-byte keys, first one sealing.
    pub fn from_bytes(keys: &[[u8; 32]]) -> Result<Self, SealError> {
        if keys.is_empty() {
            return Err(SealError::NoKeys);
        }
        let keys = keys
            .iter()
            .map(|k| RingKey {
                id: key_id(k),
                cipher: Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(k)),
            })
            .collect();
        Ok(Self { keys })
    }

    /// Build from base64 keys (standard or URL-safe alphabet, padding optional),
    /// as `session.encryption_keys` holds them.
    pub fn from_base64<'a>(keys: impl IntoIterator<Item = &'a str>) -> Result<Self, SealError> {
        let bytes = keys
            .into_iter()
            .enumerate()
            .map(|(i, k)| decode_key(k).ok_or(SealError::BadKey(i)))
            .collect::<Result<Vec<_>, _>>()?;
        Self::from_bytes(&bytes)
    }

    /// Build from the config's secrets.
    pub fn from_secrets(keys: &[Secret]) -> Result<Self, SealError> {
        Self::from_base64(keys.iter().map(Secret::expose))
    }

    /// A ring for one `purpose`: each key of `keys` (as [`from_secrets`](Self::from_secrets)
    /// reads them) run through HKDF-SHA256 with `purpose` as info. Values it seals
    /// carry other key ids than the ring of the raw keys, so neither opens the
    /// other's values, and encryptions an attacker can trigger (a login cookie
    /// per anonymous request) do not use up the session key's nonce budget.
    pub fn derived_from_secrets(keys: &[Secret], purpose: &[u8]) -> Result<Self, SealError> {
        let derived = keys
            .iter()
            .enumerate()
            .map(|(i, k)| {
                let ikm = decode_key(k.expose()).ok_or(SealError::BadKey(i))?;
                let mut okm = [0u8; 32];
                hkdf::Hkdf::<Sha256>::new(None, &ikm)
                    .expand(purpose, &mut okm)
                    .map_err(|_| SealError::BadKey(i))?;
                Ok(okm)
            })
            .collect::<Result<Vec<_>, SealError>>()?;
        Self::from_bytes(&derived)
    }

    /// A ring with one fresh random key that lives as long as this value
    /// (nothing sealed with it opens in another process or after a restart).
    pub fn random() -> Result<Self, SealError> {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).map_err(|_| SealError::Encrypt)?;
        Self::from_bytes(&[key])
    }

    /// The id of the sealing key, hex, for logs.
    pub fn sealing_key_id(&self) -> String {
        self.keys.first().map(|k| hex(&k.id)).unwrap_or_default()
    }

    /// Encrypt `plaintext` with the first key, bound to `aad`.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
        let key = self.keys.first().ok_or(SealError::NoKeys)?;
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|_| SealError::Encrypt)?;
        let ciphertext = key
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .map_err(|_| SealError::Encrypt)?;
        let mut out = Vec::with_capacity(HEADER_LEN + ciphertext.len());
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&key.id);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ciphertext);
        Ok(out)
    }

    /// Decrypt a value [`seal`](Self::seal) produced under the same `aad`, with
    /// whichever key of the ring its key id names.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        if !is_sealed(sealed) || sealed.len() < HEADER_LEN + 16 {
            return Err(SealError::Malformed);
        }
        let id = &sealed[MAGIC.len()..MAGIC.len() + KEY_ID_LEN];
        let nonce = &sealed[MAGIC.len() + KEY_ID_LEN..HEADER_LEN];
        let key = self
            .keys
            .iter()
            .find(|k| k.id == id)
            .ok_or_else(|| SealError::UnknownKey(hex(id)))?;
        key.cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: &sealed[HEADER_LEN..],
                    aad,
                },
            )
            .map_err(|_| SealError::Forged)
    }
}

/// Whether `value` looks like a sealed value (as opposed to plain JSON).
pub fn is_sealed(value: &[u8]) -> bool {
    value.starts_with(&MAGIC)
}

/// Associated data for a session record.
pub(crate) fn session_aad(id_hex: &str) -> Vec<u8> {
    format!("portcullis/session/{id_hex}").into_bytes()
}

fn key_id(key: &[u8; 32]) -> [u8; KEY_ID_LEN] {
    let digest = Sha256::new()
        .chain_update(b"portcullis key id\0")
        .chain_update(key)
        .finalize();
    let mut id = [0u8; KEY_ID_LEN];
    id.copy_from_slice(&digest[..KEY_ID_LEN]);
    id
}

/// A configured key; surrounding space (a key pasted with a newline) is ignored.
fn decode_key(text: &str) -> Option<[u8; 32]> {
    crate::secret::decode_key(text.trim())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Turns records into stored payload bytes and back: JSON, sealed when the
/// store has a [`Keyring`]. Shared by every persistent backend.
#[derive(Debug, Clone, Default)]
pub struct PayloadCodec {
    keyring: Option<Arc<Keyring>>,
    /// Set after the first unopenable record was logged at WARN; later ones go to DEBUG.
    warned: Arc<AtomicBool>,
}

impl PayloadCodec {
    /// Plain JSON (memory-like trust, tests).
    pub fn plain() -> Self {
        Self::default()
    }

    /// Sealed with `keyring`.
    pub fn sealed(keyring: Arc<Keyring>) -> Self {
        Self {
            keyring: Some(keyring),
            warned: Arc::default(),
        }
    }

    pub fn is_sealing(&self) -> bool {
        self.keyring.is_some()
    }

    pub fn encode_session(&self, record: &SessionRecord) -> Result<Vec<u8>, StoreError> {
        self.encode(&session_aad(record.id.as_str()), record)
    }

    /// The record stored under `id`, `None` when it cannot be opened (wrong
    /// or removed key, tampering, plaintext where a sealed value belongs):
    /// such a session is treated as absent, so the user gets a 401, never a 500.
    pub fn decode_session(
        &self,
        id: &str,
        payload: &[u8],
    ) -> Result<Option<SessionRecord>, StoreError> {
        let label = short(id);
        let Some(json) = self.open("session", label, &session_aad(id), payload) else {
            return Ok(None);
        };
        let record: SessionRecord = serde_json::from_slice(&json)
            .map_err(|e| StoreError::Corrupt(format!("session {label}: {}", json_error(&e))))?;
        // A payload copied onto another row must not let one cookie load
        // someone else's session (sealed ones already fail on the AAD).
        if record.id.as_str() != id {
            return Err(StoreError::Corrupt(format!(
                "session {label}: payload belongs to another session"
            )));
        }
        Ok(Some(record))
    }

    fn encode<T: serde::Serialize>(&self, aad: &[u8], value: &T) -> Result<Vec<u8>, StoreError> {
        let json = serde_json::to_vec(value)
            .map_err(|e| StoreError::Corrupt(format!("cannot serialize: {e}")))?;
        match &self.keyring {
            None => Ok(json),
            Some(ring) => ring
                .seal(aad, &json)
                .map_err(|e| StoreError::Corrupt(format!("cannot seal: {e}"))),
        }
    }

    /// The JSON inside `payload`, or `None` (logged) if it cannot be opened.
    fn open(&self, what: &str, label: &str, aad: &[u8], payload: &[u8]) -> Option<Vec<u8>> {
        let result = match (&self.keyring, is_sealed(payload)) {
            (Some(ring), true) => ring.open(aad, payload),
            (Some(_), false) => Err(SealError::Malformed),
            (None, true) => Err(SealError::NoKeys),
            (None, false) => return Some(payload.to_vec()),
        };
        match result {
            Ok(json) => Some(json),
            Err(e) => {
                metrics::counter!(crate::metrics::SESSIONS_UNSEALABLE_TOTAL, "record" => what.to_owned())
                    .increment(1);
                if !self.warned.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        record = what,
                        id = label,
                        error = %e,
                        "stored {what} cannot be opened with the configured encryption keys; \
                         treating it as absent (further ones are logged at debug level)"
                    );
                } else {
                    tracing::debug!(record = what, id = label, error = %e, "unopenable {what}");
                }
                None
            }
        }
    }
}

/// Describe a serde_json error by kind and position only: its message can
/// quote the offending value, which may be a token.
fn json_error(e: &serde_json::Error) -> String {
    format!(
        "undecodable payload ({:?} error at line {} column {})",
        e.classify(),
        e.line(),
        e.column()
    )
}

/// First 8 chars of a key for messages; never slice blindly.
fn short(key: &str) -> &str {
    key.get(..8).unwrap_or(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(keys: &[u8]) -> Keyring {
        let keys: Vec<[u8; 32]> = keys.iter().map(|b| [*b; 32]).collect();
        Keyring::from_bytes(&keys).expect("ring")
    }

    #[test]
    fn round_trip_and_no_plaintext() {
        let r = ring(&[1]);
        let sealed = r.seal(b"id-1", b"secret-token-text").expect("seal");
        assert!(is_sealed(&sealed));
        assert!(!sealed.windows(6).any(|w| w == b"secret"));
        assert_eq!(
            r.open(b"id-1", &sealed).expect("open"),
            b"secret-token-text"
        );
        // Fresh nonce each time.
        assert_ne!(sealed, r.seal(b"id-1", b"secret-token-text").expect("seal"));
    }

    #[test]
    fn other_aad_does_not_open() {
        let r = ring(&[1]);
        let sealed = r.seal(b"id-1", b"x").expect("seal");
        assert!(matches!(r.open(b"id-2", &sealed), Err(SealError::Forged)));
    }

    #[test]
    fn rotation_first_seals_all_open() {
        let old = ring(&[1]);
        let sealed_old = old.seal(b"a", b"old").expect("seal");
        let rotated = ring(&[2, 1]);
        assert_eq!(rotated.open(b"a", &sealed_old).expect("open"), b"old");
        let sealed_new = rotated.seal(b"a", b"new").expect("seal");
        assert_eq!(rotated.sealing_key_id(), ring(&[2]).sealing_key_id());
        assert!(matches!(
            old.open(b"a", &sealed_new),
            Err(SealError::UnknownKey(_))
        ));
    }

    #[test]
    fn wrong_key_tampering_and_garbage_are_errors() {
        let r = ring(&[1]);
        let mut sealed = r.seal(b"a", b"payload").expect("seal");
        let last = sealed.len() - 1;
        sealed[last] ^= 1;
        assert!(matches!(r.open(b"a", &sealed), Err(SealError::Forged)));
        assert!(matches!(r.open(b"a", b"{}"), Err(SealError::Malformed)));
        assert!(matches!(r.open(b"a", &MAGIC), Err(SealError::Malformed)));
    }

    #[test]
    fn base64_keys_are_parsed() {
        let k = crate::session::random_key_base64();
        let r = Keyring::from_base64([k.as_str()]).expect("ring");
        assert_eq!(r.sealing_key_id().len(), 16);
        assert!(matches!(
            Keyring::from_base64(["c2hvcnQ="]),
            Err(SealError::BadKey(0))
        ));
        assert!(matches!(
            Keyring::from_base64(std::iter::empty()),
            Err(SealError::NoKeys)
        ));
    }
}
