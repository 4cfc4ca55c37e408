//! A private PKI for a test, made with Debian's `openssl` in a temporary
//! directory: a CA, a server certificate it signed for `localhost` and
//! `127.0.0.1`, a client certificate it signed, and a second CA with a
//! server certificate of its own (the "wrong CA"). Plus a TLS listener that
//! serves an axum router with any of them, optionally demanding a client
//! certificate (mTLS).

#![allow(dead_code)]

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    sync::Arc,
    time::Duration,
};

use tokio::{net::TcpListener, task::JoinHandle};
use tokio_rustls::{
    TlsAcceptor,
    rustls::{
        self, RootCertStore, ServerConfig,
        pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
        server::WebPkiClientVerifier,
    },
};

pub struct Pki {
    dir: tempfile::TempDir,
}

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

const EC: [&str; 4] = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];

impl Pki {
    pub fn create() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        for (name, cn) in [("ca", "portcullis test CA"), ("other-ca", "other CA")] {
            let (key, pem) = (format!("{name}.key"), format!("{name}.pem"));
            let mut args = vec!["req", "-x509", "-nodes", "-days", "2", "-subj"];
            let subject = format!("/CN={cn}");
            args.push(&subject);
            args.extend(EC);
            args.extend(["-addext", "basicConstraints=critical,CA:TRUE"]);
            args.extend(["-addext", "keyUsage=critical,keyCertSign,cRLSign"]);
            args.extend(["-keyout", &key, "-out", &pem]);
            openssl(d, &args);
        }
        let server = "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
                      keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n";
        let client = "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n\
                      extendedKeyUsage=clientAuth\n";
        for (name, ca, ext) in [
            ("server", "ca", server),
            ("client", "ca", client),
            ("rogue-server", "other-ca", server),
            ("rogue-client", "other-ca", client),
        ] {
            let ext_file = format!("{name}.ext");
            std::fs::write(d.join(&ext_file), ext).expect("ext file");
            let (key, csr, pem) = (
                format!("{name}.key"),
                format!("{name}.csr"),
                format!("{name}.pem"),
            );
            let mut args = vec!["req", "-nodes", "-subj", "/CN=localhost"];
            args.extend(EC);
            args.extend(["-keyout", &key, "-out", &csr]);
            openssl(d, &args);
            let (ca_pem, ca_key) = (format!("{ca}.pem"), format!("{ca}.key"));
            openssl(
                d,
                &[
                    "x509",
                    "-req",
                    "-days",
                    "2",
                    "-CAcreateserial",
                    "-in",
                    &csr,
                    "-CA",
                    &ca_pem,
                    "-CAkey",
                    &ca_key,
                    "-extfile",
                    &ext_file,
                    "-out",
                    &pem,
                ],
            );
        }
        Self { dir }
    }

    /// A file of the PKI: `ca.pem`, `server.pem`, `server.key`,
    /// `client.pem`, `client.key`, `other-ca.pem`, `rogue-server.pem`, …
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// [`Self::path`] as TOML-ready text.
    pub fn file(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }

    /// A server config presenting `<name>.pem` / `<name>.key`; with
    /// `client_ca`, clients must present a certificate that CA signed.
    pub fn server_config(&self, name: &str, client_ca: Option<&str>) -> Arc<ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let chain = CertificateDer::pem_file_iter(self.path(&format!("{name}.pem")))
            .expect("read cert")
            .collect::<Result<Vec<_>, _>>()
            .expect("parse cert");
        let key = PrivateKeyDer::from_pem_file(self.path(&format!("{name}.key"))).expect("key");
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("versions");
        let builder = match client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = RootCertStore::empty();
                for cert in CertificateDer::pem_file_iter(self.path(ca)).expect("read CA") {
                    roots.add(cert.expect("parse CA")).expect("add CA");
                }
                let verifier = WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .build()
                    .expect("client verifier");
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder
            .with_single_cert(chain, key)
            .expect("server cert and key");
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    }
}

/// A TCP listener that hands axum only connections whose TLS handshake
/// succeeded; failed handshakes (a client that refused our certificate, or
/// sent none when one is required) are dropped and counted.
pub struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    failed: Arc<std::sync::atomic::AtomicUsize>,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((stream, peer)) = self.tcp.accept().await else {
                continue;
            };
            // Bounded, so a stuck handshake cannot stall the listener.
            let handshake = self.acceptor.accept(stream);
            match tokio::time::timeout(Duration::from_secs(10), handshake).await {
                Ok(Ok(tls)) => return (tls, peer),
                _ => {
                    self.failed
                        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// A router served over TLS on 127.0.0.1:0; aborting the task stops it.
pub struct TlsServer {
    pub addr: SocketAddr,
    /// Handshakes that failed so far.
    pub failed: Arc<std::sync::atomic::AtomicUsize>,
    task: JoinHandle<()>,
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TlsServer {
    pub async fn start(router: axum::Router, config: Arc<ServerConfig>) -> Self {
        let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        Self::serve(tcp, router, config)
    }

    /// Serve on a listener bound already (when the router must know its own address).
    pub fn serve(tcp: TcpListener, router: axum::Router, config: Arc<ServerConfig>) -> Self {
        let addr = tcp.local_addr().expect("local addr");
        let failed = Arc::default();
        let listener = TlsListener {
            tcp,
            acceptor: TlsAcceptor::from(config),
            failed: Arc::clone(&failed),
        };
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Self { addr, failed, task }
    }

    pub fn failed_handshakes(&self) -> usize {
        self.failed.load(std::sync::atomic::Ordering::SeqCst)
    }
}
