//! Loading TLS settings: the errors a config check reports, with a CA and
//! keys made by Debian's `openssl` in a temporary directory.

use std::{path::Path, process::Command};

use super::*;

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run openssl (is it installed?)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `ca.pem` (self-signed, also used as a client certificate), its key
/// `ca.key`, and an unrelated key `other.key`.
pub(crate) fn files() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
    let mut req = vec![
        "req",
        "-x509",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=test CA",
    ];
    req.extend(ec);
    req.extend(["-keyout", "ca.key", "-out", "ca.pem"]);
    openssl(dir.path(), &req);
    openssl(
        dir.path(),
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            "other.key",
        ],
    );
    dir
}

fn settings(dir: &Path, ca: Option<&str>, identity: Option<(&str, &str)>) -> TlsSettings {
    TlsSettings {
        trust: TrustConfig {
            roots: None,
            ca_file: ca.map(|f| dir.join(f)),
        },
        identity: identity.map(|(cert, key)| ClientIdentity {
            cert_file: dir.join(cert),
            key_file: dir.join(key),
        }),
    }
}

#[test]
fn default_and_private_ca_and_client_cert_load() {
    let dir = files();
    client_config(&TlsSettings::default()).expect("bundled roots");
    client_config(&settings(
        dir.path(),
        Some("ca.pem"),
        Some(("ca.pem", "ca.key")),
    ))
    .expect("private CA with a client certificate");
}

#[test]
fn missing_ca_file_names_the_file() {
    let dir = files();
    let e = client_config(&settings(dir.path(), Some("nope.pem"), None)).unwrap_err();
    assert_eq!(e.part(), TlsPart::CaFile);
    assert!(e.to_string().contains("nope.pem"), "{e}");
}

#[test]
fn ca_file_without_a_certificate_is_refused() {
    let dir = files();
    let e = client_config(&settings(dir.path(), Some("other.key"), None)).unwrap_err();
    assert!(
        matches!(
            e,
            TlsError::NoCertificate {
                part: TlsPart::CaFile,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("other.key"), "{e}");
}

#[test]
fn key_that_does_not_match_its_certificate_is_refused() {
    let dir = files();
    let e = client_config(&settings(
        dir.path(),
        Some("ca.pem"),
        Some(("ca.pem", "other.key")),
    ))
    .unwrap_err();
    assert!(matches!(e, TlsError::KeyMismatch { .. }), "{e}");
    assert_eq!(e.part(), TlsPart::ClientKey);
    assert!(
        e.to_string().contains("other.key") && e.to_string().contains("ca.pem"),
        "{e}"
    );
}

/// A broken key file's contents never reach the error (which is logged
/// and printed by `check`).
#[test]
fn client_key_contents_never_appear_in_errors() {
    let dir = files();
    let secret = "c2VjcmV0LWtleS1ieXRlcw";
    let bad = format!("-----BEGIN PRIVATE KEY-----\n{secret}!!\n-----END PRIVATE KEY-----\n");
    std::fs::write(dir.path().join("bad.key"), bad).expect("write");
    let e = client_config(&settings(dir.path(), None, Some(("ca.pem", "bad.key")))).unwrap_err();
    assert!(matches!(e, TlsError::NoKey { .. }), "{e}");
    assert!(!format!("{e} {e:?}").contains(secret), "{e:?}");
}

#[test]
fn encrypted_key_gets_a_hint() {
    let dir = files();
    openssl(
        dir.path(),
        &[
            "pkey", "-in", "ca.key", "-aes256", "-passout", "pass:x", "-out", "enc.key",
        ],
    );
    let e = client_config(&settings(dir.path(), None, Some(("ca.pem", "enc.key")))).unwrap_err();
    assert!(e.to_string().contains("encrypted"), "{e}");
}

/// A CA file alone is the whole trust: no bundled root beside it, so a
/// public CA cannot vouch for an internal name. `tls_roots` adds them back.
#[test]
fn ca_file_alone_is_the_only_trust() {
    let dir = files();
    let alone = settings(dir.path(), Some("ca.pem"), None).trust;
    assert_eq!(root_store(&alone).expect("roots").len(), 1);
    let with_bundled = TrustConfig {
        roots: Some(Roots::Webpki),
        ..alone
    };
    assert_eq!(
        root_store(&with_bundled).expect("roots").len(),
        webpki_roots::TLS_SERVER_ROOTS.len() + 1
    );
}
