//! The IdP's ES256 signing key: generated with ring, kept in a PKCS#8 file (0600; DER when
//! the name ends in `.der`, PEM otherwise) when asked, published as a JWK, and used through
//! jsonwebtoken. No hand-written crypto.

use std::fmt;
use std::io::Write as _;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use crate::DemoError;

const PEM_BEGIN: &str = "-----BEGIN PRIVATE KEY-----";
const PEM_END: &str = "-----END PRIVATE KEY-----";

/// A P-256 key pair with its key id.
pub(crate) struct SigningKey {
    kid: String,
    x: String,
    y: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Loads the key from `path`, creating the file (mode 0600) when it does not exist;
    /// without a path the key lives only as long as the process.
    pub(crate) fn load_or_create(path: Option<&Path>) -> Result<Self, DemoError> {
        let Some(path) = path else {
            return Self::from_pkcs8(&generate()?);
        };
        let key_file = |source| DemoError::KeyFile {
            path: path.to_owned(),
            source,
        };
        match std::fs::read(path) {
            Ok(bytes) => Self::from_pkcs8(&decode_file(&bytes)?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let pkcs8 = generate()?;
                if create_exclusive(path, &encode_file(path, &pkcs8)).map_err(key_file)? {
                    tracing::info!(path = %path.display(), "dev IdP: created signing key");
                    Self::from_pkcs8(&pkcs8)
                } else {
                    // Someone else created it first; use theirs so both agree on the key.
                    let bytes = std::fs::read(path).map_err(key_file)?;
                    Self::from_pkcs8(&decode_file(&bytes)?)
                }
            }
            Err(e) => Err(key_file(e)),
        }
    }

    fn from_pkcs8(pkcs8: &[u8]) -> Result<Self, DemoError> {
        let pair = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            pkcs8,
            &SystemRandom::new(),
        )
        .map_err(|e| DemoError::Key(format!("not a P-256 PKCS#8 key: {e}")))?;
        let public = pair.public_key().as_ref();
        let (Some(&0x04), true) = (public.first(), public.len() == 65) else {
            return Err(DemoError::Key("unexpected public key encoding".into()));
        };
        let kid = hex(&Sha256::digest(public)[..8]);
        let x = URL_SAFE_NO_PAD.encode(&public[1..33]);
        let y = URL_SAFE_NO_PAD.encode(&public[33..65]);
        let decoding = DecodingKey::from_ec_components(&x, &y)
            .map_err(|e| DemoError::Key(format!("public key: {e}")))?;
        Ok(Self {
            kid,
            x,
            y,
            encoding: EncodingKey::from_ec_der(pkcs8),
            decoding,
        })
    }

    /// First 16 hex characters of the SHA-256 of the uncompressed public key.
    pub(crate) fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key as a JWK.
    pub(crate) fn jwk(&self) -> Value {
        json!({
            "kty": "EC",
            "crv": "P-256",
            "x": self.x,
            "y": self.y,
            "kid": self.kid,
            "use": "sig",
            "alg": "ES256",
        })
    }

    /// A compact JWS (ES256, with `kid`) over `claims`.
    pub(crate) fn sign<T: Serialize>(&self, claims: &T) -> Result<String, DemoError> {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding)
            .map_err(|e| DemoError::Key(format!("signing: {e}")))
    }

    /// Like [`sign`](Self::sign) with an explicit `typ` header (e.g. `logout+jwt`).
    pub(crate) fn sign_typed<T: Serialize>(
        &self,
        typ: &str,
        claims: &T,
    ) -> Result<String, DemoError> {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        header.typ = Some(typ.to_owned());
        jsonwebtoken::encode(&header, claims, &self.encoding)
            .map_err(|e| DemoError::Key(format!("signing: {e}")))
    }

    /// Verifies a token this key signed; `validation` must allow only ES256.
    pub(crate) fn verify<T: DeserializeOwned>(
        &self,
        token: &str,
        validation: &Validation,
    ) -> Option<T> {
        jsonwebtoken::decode::<T>(token, &self.decoding, validation)
            .ok()
            .map(|data| data.claims)
    }
}

fn generate() -> Result<Vec<u8>, DemoError> {
    EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
        .map(|doc| doc.as_ref().to_vec())
        .map_err(|_| DemoError::Key("could not generate a P-256 key".into()))
}

fn encode_pem(der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let mut pem = format!("{PEM_BEGIN}\n");
    for line in body.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str(PEM_END);
    pem.push('\n');
    pem
}

/// Raw PKCS#8 DER for a `.der` path, PEM otherwise.
fn encode_file(path: &Path, pkcs8: &[u8]) -> Vec<u8> {
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("der"))
    {
        pkcs8.to_vec()
    } else {
        encode_pem(pkcs8).into_bytes()
    }
}

/// Accepts PEM or raw DER, whatever the file is called.
fn decode_file(bytes: &[u8]) -> Result<Vec<u8>, DemoError> {
    if !bytes.trim_ascii_start().starts_with(b"-----") {
        return Ok(bytes.to_vec());
    }
    let text = std::str::from_utf8(bytes)
        .map_err(|_| DemoError::Key("key file PEM is not text".into()))?
        .trim();
    let Some(body) = text
        .strip_prefix(PEM_BEGIN)
        .and_then(|rest| rest.strip_suffix(PEM_END))
    else {
        return Err(DemoError::Key(format!(
            "key file is not a PKCS#8 PEM ({PEM_BEGIN})"
        )));
    };
    let body: String = body.split_whitespace().collect();
    STANDARD
        .decode(body)
        .map_err(|e| DemoError::Key(format!("key file base64: {e}")))
}

/// Writes `contents` to `path` only if nothing is there yet, atomically: a private temporary
/// file hard-linked into place. Returns false when the path already existed.
fn create_exclusive(path: &Path, contents: &[u8]) -> std::io::Result<bool> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut suffix = [0u8; 8];
    getrandom::fill(&mut suffix).map_err(|e| std::io::Error::other(e.to_string()))?;
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(format!(".tmp-{}", hex(&suffix)));
    let tmp = std::path::PathBuf::from(tmp_name);

    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let written = options.open(&tmp).and_then(|mut file| {
        file.write_all(contents)?;
        file.sync_all()
    });
    let placed = written.and_then(|()| match std::fs::hard_link(&tmp, path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        // A filesystem without hard links: rename, racy only against a concurrent creator.
        Err(_) => std::fs::rename(&tmp, path).map(|()| true),
    });
    let _ = std::fs::remove_file(&tmp);
    placed
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_round_trips_and_kid_is_16_hex() {
        let der = generate().expect("generate");
        assert_eq!(decode_file(encode_pem(&der).as_bytes()).expect("pem"), der);
        let key = SigningKey::from_pkcs8(&der).expect("key");
        assert_eq!(key.kid().len(), 16);
        assert!(key.kid().bytes().all(|b| b.is_ascii_hexdigit()));
    }

    #[test]
    fn garbage_key_file_is_an_error() {
        assert!(decode_file(b"-----BEGIN nonsense").is_err());
        let raw = decode_file(b"hello").expect("taken as DER");
        assert!(SigningKey::from_pkcs8(&raw).is_err());
        assert!(SigningKey::from_pkcs8(b"\x30\x03\x02\x01\x00").is_err());
    }
}
