//! The TLS keys of `[oidc]` and `[[routes]]` (`ca_file`, `tls_roots`,
//! `client_cert_file`, `client_key_file`): parsed, then loaded once so a
//! missing, unreadable or mismatched file fails `check` with its key.

use std::path::PathBuf;

use toml::Value;

use super::{Parsed, Validator};
use crate::tls::{ClientIdentity, Roots, TlsPart, TlsSettings, TrustConfig};

/// The raw TLS keys of one section; `prefix` is `oidc` or `routes[N]`.
pub(super) struct RawTls<'a> {
    pub prefix: &'a str,
    pub ca_file: Option<Value>,
    pub tls_roots: Option<Value>,
    pub client_cert_file: Option<Value>,
    pub client_key_file: Option<Value>,
}

impl Validator<'_> {
    /// The settings of `raw`, checked by building the client config they
    /// describe. `https` is false for a plain-http upstream, where any TLS
    /// key would silently do nothing.
    pub(super) fn tls(&mut self, raw: RawTls<'_>, https: Option<bool>) -> Option<TlsSettings> {
        let key = |field: &str| format!("{}.{field}", raw.prefix);
        let first_set = [
            ("ca_file", &raw.ca_file),
            ("tls_roots", &raw.tls_roots),
            ("client_cert_file", &raw.client_cert_file),
            ("client_key_file", &raw.client_key_file),
        ]
        .into_iter()
        .find_map(|(field, value)| value.is_some().then(|| key(field)));
        if https == Some(false)
            && let Some(set) = first_set
        {
            return self.reject(
                &set,
                "needs an https:// upstream (on plain http it would do nothing)",
            );
        }
        let ca_file = self.path(&key("ca_file"), raw.ca_file);
        let roots = self.tls_roots(&key("tls_roots"), raw.tls_roots);
        let cert = self.path(&key("client_cert_file"), raw.client_cert_file);
        let client_key = self.path(&key("client_key_file"), raw.client_key_file);
        let (Ok(ca_file), Ok(roots), Ok(cert), Ok(client_key)) = (ca_file, roots, cert, client_key)
        else {
            return None;
        };
        let identity = match (cert, client_key) {
            (Some(cert_file), Some(key_file)) => Some(ClientIdentity {
                cert_file,
                key_file,
            }),
            (None, None) => None,
            (Some(_), None) => {
                return self.reject(
                    &key("client_key_file"),
                    "missing: client_cert_file needs its key",
                );
            }
            (None, Some(_)) => {
                return self.reject(
                    &key("client_cert_file"),
                    "missing: client_key_file needs its certificate",
                );
            }
        };
        let settings = TlsSettings {
            trust: TrustConfig {
                // A CA file given alone is the whole trust (like Redis
                // `cacert`); `tls_roots` adds public roots back.
                roots: roots.or(match ca_file {
                    Some(_) => None,
                    None => Some(Roots::Webpki),
                }),
                ca_file,
            },
            identity,
        };
        if let Err(e) = crate::tls::client_config(&settings) {
            let field = match e.part() {
                TlsPart::CaFile => "ca_file",
                TlsPart::SystemRoots => "tls_roots",
                TlsPart::ClientCert => "client_cert_file",
                TlsPart::ClientKey => "client_key_file",
            };
            return self.reject(&key(field), e.to_string());
        }
        Some(settings)
    }

    fn path(&mut self, key: &str, value: Option<Value>) -> Parsed<PathBuf> {
        match self.string(key, value)? {
            Some(s) if s.is_empty() => Err(self.issue(key, "must not be empty")),
            s => Ok(s.map(PathBuf::from)),
        }
    }

    fn tls_roots(&mut self, key: &str, value: Option<Value>) -> Parsed<Roots> {
        let Some(s) = self.string(key, value)? else {
            return Ok(None);
        };
        match s.as_str() {
            "webpki" => Ok(Some(Roots::Webpki)),
            "system" => Ok(Some(Roots::System)),
            "both" => Ok(Some(Roots::Both)),
            _ => Err(self.issue(
                key,
                format!("expected \"webpki\", \"system\" or \"both\", found \"{s}\""),
            )),
        }
    }
}
