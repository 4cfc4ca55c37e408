//! The TLS client settings of the IdP and upstream clients: which roots
//! they trust (the bundled Mozilla roots, the system's store, a private CA
//! bundle) and the client certificate an upstream may demand (mTLS), built
//! into rustls `ClientConfig`s. PEM parsing is rustls-pki-types'; nothing
//! here verifies a certificate itself.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use rustls::{
    ClientConfig, RootCertStore,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
};

/// Public roots trusted besides `ca_file` (`tls_roots`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Roots {
    /// `webpki`: the Mozilla roots bundled into the binary (the default).
    Webpki,
    /// `system`: the operating system's trust store, read at startup.
    System,
    /// `both`: the bundled roots and the system's store.
    Both,
}

/// Whom a client trusts. There is no "trust anything" setting: a server
/// must always present a chain to one of these roots.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TrustConfig {
    /// `None` only with a `ca_file` given alone: then that file is the
    /// whole trust, so a public CA cannot vouch for an internal name.
    pub roots: Option<Roots>,
    /// A PEM bundle of CA certificates trusted in addition to `roots`.
    pub ca_file: Option<PathBuf>,
}

impl Default for TrustConfig {
    fn default() -> Self {
        Self {
            roots: Some(Roots::Webpki),
            ca_file: None,
        }
    }
}

/// A client certificate chain and its private key, both PEM files.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientIdentity {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// Everything that shapes one client's TLS; equal settings share a client.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct TlsSettings {
    pub trust: TrustConfig,
    pub identity: Option<ClientIdentity>,
}

/// Which setting a [`TlsError`] is about, so config errors can name the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsPart {
    CaFile,
    SystemRoots,
    ClientCert,
    ClientKey,
}

/// A TLS setting that cannot be used. Never holds a private key's bytes:
/// key-file problems say what is wrong, not what the file contains.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {}: {source}", file.display())]
    Read {
        part: TlsPart,
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{} holds no PEM certificate", file.display())]
    NoCertificate { part: TlsPart, file: PathBuf },
    #[error("{}: certificate {index} is not usable: {reason}", file.display())]
    BadCertificate {
        part: TlsPart,
        file: PathBuf,
        index: usize,
        reason: String,
    },
    #[error("{} holds no PEM private key{hint}", file.display())]
    NoKey { file: PathBuf, hint: &'static str },
    #[error("the key in {} does not match the certificate in {}", key.display(), cert.display())]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("the system trust store holds no usable certificate")]
    NoSystemRoots,
    #[error("cannot build the TLS client: {0}")]
    Rustls(rustls::Error),
}

impl TlsError {
    pub fn part(&self) -> TlsPart {
        match self {
            Self::Read { part, .. }
            | Self::NoCertificate { part, .. }
            | Self::BadCertificate { part, .. } => *part,
            Self::NoKey { .. } | Self::KeyMismatch { .. } => TlsPart::ClientKey,
            Self::NoSystemRoots => TlsPart::SystemRoots,
            Self::Rustls(_) => TlsPart::ClientCert,
        }
    }
}

/// A rustls client config for `settings`, with ring as the crypto provider
/// (the one the rest of the tree uses) and no ALPN (callers set their own).
pub fn client_config(settings: &TlsSettings) -> Result<ClientConfig, TlsError> {
    let roots = root_store(&settings.trust)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Rustls)?
        .with_root_certificates(roots);
    let Some(identity) = &settings.identity else {
        return Ok(builder.with_no_client_auth());
    };
    let chain = certificates(TlsPart::ClientCert, &identity.cert_file)?;
    let key = private_key(&identity.key_file)?;
    builder
        .with_client_auth_cert(chain, key)
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => TlsError::KeyMismatch {
                cert: identity.cert_file.clone(),
                key: identity.key_file.clone(),
            },
            // rustls names only the key type here, never key material.
            other => TlsError::Rustls(other),
        })
}

fn root_store(trust: &TrustConfig) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    if matches!(trust.roots, Some(Roots::Webpki | Roots::Both)) {
        store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    if matches!(trust.roots, Some(Roots::System | Roots::Both)) {
        // A system store often holds a few certificates webpki cannot
        // parse; those are skipped, as rustls-native-certs suggests.
        let found = rustls_native_certs::load_native_certs();
        let (added, _) = store.add_parsable_certificates(found.certs);
        if added == 0 {
            return Err(TlsError::NoSystemRoots);
        }
    }
    if let Some(file) = &trust.ca_file {
        for (index, cert) in certificates(TlsPart::CaFile, file)?.into_iter().enumerate() {
            store.add(cert).map_err(|e| TlsError::BadCertificate {
                part: TlsPart::CaFile,
                file: file.clone(),
                index: index + 1,
                reason: e.to_string(),
            })?;
        }
    }
    Ok(store)
}

fn read(part: TlsPart, file: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(file).map_err(|source| TlsError::Read {
        part,
        file: file.to_path_buf(),
        source,
    })
}

/// Every certificate of a PEM file; at least one.
fn certificates(part: TlsPart, file: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(part, file)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .enumerate()
        .map(|(index, cert)| {
            cert.map_err(|e| TlsError::BadCertificate {
                part,
                file: file.to_path_buf(),
                index: index + 1,
                reason: e.to_string(),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            part,
            file: file.to_path_buf(),
        });
    }
    Ok(certs)
}

/// The first private key (PKCS#8, PKCS#1 or SEC1) of a PEM file. Parse
/// errors are not passed on: they may quote a line of the file.
fn private_key(file: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(TlsPart::ClientKey, file)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|_| TlsError::NoKey {
        file: file.to_path_buf(),
        hint: if pem.windows(9).any(|w| w == b"ENCRYPTED") {
            " (encrypted keys are not supported: decrypt it with `openssl pkey`)"
        } else {
            ""
        },
    })
}

/// Why a handshake failed, when a server's certificate was refused: for the
/// log line of a failed IdP or upstream call ("connection failed" alone
/// sends an operator looking at the network, not at `ca_file`).
pub(crate) fn refusal_reason(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    match handshake_error(error)? {
        rustls::Error::InvalidCertificate(why) => Some(format!(
            "server certificate refused ({why:?}); is its CA in ca_file / tls_roots?"
        )),
        rustls::Error::AlertReceived(alert) => Some(format!(
            "the server refused the TLS handshake ({alert:?}); does it want a client certificate?"
        )),
        _ => None,
    }
}

/// The rustls error somewhere in a cause chain. `io::Error`s (often nested)
/// hide the error they wrap from `source()`, so they are opened by hand.
fn handshake_error<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    if let Some(tls) = error.downcast_ref::<rustls::Error>() {
        return Some(tls);
    }
    if let Some(inner) = error
        .downcast_ref::<std::io::Error>()
        .and_then(|io| io.get_ref())
    {
        return handshake_error(inner);
    }
    handshake_error(error.source()?)
}

#[cfg(test)]
#[path = "tls_tests.rs"]
pub(crate) mod tests;
