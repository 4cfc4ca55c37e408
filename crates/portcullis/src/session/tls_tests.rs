//! Live tests of TLS to the remote stores: each starts its own PostgreSQL or
//! Redis server with certificates from a throwaway CA the test creates
//! (Debian's `openssl`, `redis-server` and PostgreSQL binaries).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::cache::{Invalidation, InvalidationBus};
use super::contract::sample_record;
use super::postgres::{PostgresOptions, PostgresStore};
use super::redis::{RedisOptions, RedisStore};
use super::seal::{Keyring, PayloadCodec};
use super::{SessionStore, StoreError, random_token};
use crate::time::{Clock, SystemClock};

fn run(what: &str, command: &mut Command) {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run ({e}); is it installed?"));
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// A CA, a server certificate it signed for `localhost` and `127.0.0.1`,
/// and a second CA that signed nothing (the "wrong CA"). Also used by the
/// TLS cluster tests (`redis/cluster_tls_tests.rs`).
pub(super) struct Pki {
    pub(super) ca: PathBuf,
    pub(super) other_ca: PathBuf,
    pub(super) cert: PathBuf,
    pub(super) key: PathBuf,
}

impl Pki {
    pub(super) fn create(dir: &Path) -> Self {
        Self::create_naming(dir, "DNS:localhost,IP:127.0.0.1")
    }

    /// With a server certificate for `names` (`subjectAltName` syntax).
    pub(super) fn create_naming(dir: &Path, names: &str) -> Self {
        let p = |name: &str| dir.join(name);
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
        for (name, cn) in [("ca", "portcullis test CA"), ("other-ca", "other CA")] {
            run(
                "openssl req (CA)",
                Command::new("openssl")
                    .args(["req", "-x509", "-nodes", "-days", "2", "-subj"])
                    .arg(format!("/CN={cn}"))
                    .args(ec)
                    .args(["-addext", "basicConstraints=critical,CA:TRUE"])
                    .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"])
                    .arg("-keyout")
                    .arg(p(&format!("{name}.key")))
                    .arg("-out")
                    .arg(p(&format!("{name}.pem"))),
            );
        }
        run(
            "openssl req (server)",
            Command::new("openssl")
                .args(["req", "-nodes", "-subj", "/CN=localhost"])
                .args(ec)
                .arg("-keyout")
                .arg(p("server.key"))
                .arg("-out")
                .arg(p("server.csr")),
        );
        // clientAuth too: Redis Cluster nodes present this certificate to
        // each other on the cluster bus, which always checks it (without it
        // they never join and `redis-cli --cluster create` waits forever).
        std::fs::write(
            p("server.ext"),
            format!(
                "subjectAltName={names}\nbasicConstraints=CA:FALSE\n\
                 keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\n"
            ),
        )
        .expect("ext file");
        run(
            "openssl x509 (sign)",
            Command::new("openssl")
                .args(["x509", "-req", "-days", "2", "-CAcreateserial"])
                .arg("-in")
                .arg(p("server.csr"))
                .arg("-CA")
                .arg(p("ca.pem"))
                .arg("-CAkey")
                .arg(p("ca.key"))
                .arg("-extfile")
                .arg(p("server.ext"))
                .arg("-out")
                .arg(p("server.pem")),
        );
        Self {
            ca: p("ca.pem"),
            other_ca: p("other-ca.pem"),
            cert: p("server.pem"),
            key: p("server.key"),
        }
    }
}

/// Poll `check` until it holds, failing after 30 s.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn ring() -> Arc<Keyring> {
    Arc::new(Keyring::from_bytes(&[[9; 32]]).expect("ring"))
}

/// Save, load, list and delete one record.
async fn round_trip(store: &dyn SessionStore) {
    let now = SystemClock.now();
    let (_, record) = sample_record("tls-user", Some("sid-tls"), now);
    store.save(&record).await.expect("save over TLS");
    assert_eq!(
        store.load(&record.id).await.expect("load"),
        Some(record.clone())
    );
    assert_eq!(store.list_by_sub("tls-user").await.expect("list").len(), 1);
    assert!(store.delete(&record.id).await.expect("delete"));
}

// ---------------------------------------------------------------- PostgreSQL

/// A PostgreSQL server in a temp dir that accepts TLS connections only
/// (`hostssl` in pg_hba.conf), run as the `postgres` user (it refuses root);
/// stopped on drop, also when the test panics.
struct TlsPostgres {
    child: Child,
    port: u16,
    pki: Pki,
    _dir: tempfile::TempDir,
}

fn pg_bin(name: &str) -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    dirs.sort();
    dirs.into_iter()
        .rev()
        .map(|d| d.join("bin").join(name))
        .find(|p| p.exists())
        .unwrap_or_else(|| {
            panic!("{name} not found under /usr/lib/postgresql/*/bin: install postgresql")
        })
}

fn user_id(flag: &str) -> u32 {
    let out = Command::new("id")
        .args([flag, "postgres"])
        .output()
        .expect("id");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("a `postgres` system user (installed with postgresql)")
}

impl TlsPostgres {
    async fn start() -> Self {
        let dir = tempfile::tempdir().expect("dir");
        let pki = Pki::create(dir.path());
        let (uid, gid) = (user_id("-u"), user_id("-g"));
        run(
            "chown",
            Command::new("chown")
                .arg("-R")
                .arg(format!("{uid}:{gid}"))
                .arg(dir.path()),
        );
        // PostgreSQL refuses a key others can read.
        run("chmod", Command::new("chmod").arg("600").arg(&pki.key));
        let data = dir.path().join("data");
        let as_postgres = |program: PathBuf| {
            use std::os::unix::process::CommandExt;
            let mut command = Command::new(program);
            command.uid(uid).gid(gid).current_dir(dir.path());
            command
        };
        run(
            "initdb",
            as_postgres(pg_bin("initdb"))
                .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
                .arg(&data),
        );
        // TLS only: no plain `host` line.
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\n",
        )
        .expect("pg_hba.conf");
        let port = free_port();
        let child = as_postgres(pg_bin("postgres"))
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-k"])
            .arg(dir.path())
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "ssl=on"])
            .args(["-c", "fsync=off"])
            .arg("-c")
            .arg(format!("ssl_cert_file={}", pki.cert.display()))
            .arg("-c")
            .arg(format!("ssl_key_file={}", pki.key.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("postgres");
        let server = Self {
            child,
            port,
            pki,
            _dir: dir,
        };
        eventually("postgres to accept TLS connections", || async {
            server
                .connect(&server.url("verify-full", &server.pki.ca))
                .await
                .is_ok()
        })
        .await;
        server
    }

    fn url(&self, mode: &str, ca: &Path) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/postgres?sslmode={mode}&sslrootcert={}",
            self.port,
            ca.display()
        )
    }

    async fn connect(&self, url: &str) -> Result<PostgresStore, StoreError> {
        let options = PostgresOptions {
            schema: Some(format!(
                "t_{}",
                random_token(6).to_lowercase().replace('-', "_")
            )),
            max_connections: 4,
            ..PostgresOptions::default()
        };
        PostgresStore::connect(url, options, PayloadCodec::sealed(ring())).await
    }
}

impl Drop for TlsPostgres {
    fn drop(&mut self) {
        // Immediate shutdown (SIGQUIT) lets the postmaster stop its backends.
        let _ = Command::new("kill")
            .args(["-QUIT", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Store traffic readable on the network: with `sslmode=verify-full` and a
/// private CA the store works over TLS (the whole conformance suite), and
/// the connection really is encrypted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_store_runs_over_tls_verified_against_a_custom_ca() {
    let server = TlsPostgres::start().await;
    let url = server.url("verify-full", &server.pki.ca);
    let store = server.connect(&url).await.expect("verify-full with the CA");
    let ssl: bool = sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(store.pool())
        .await
        .expect("pg_stat_ssl");
    assert!(ssl, "the connection is not encrypted");
    round_trip(&store).await;
    crate::session_store_contract_tests!(serial async {
        let store = server.connect(&url).await.expect("connect");
        Arc::new(store) as Arc<dyn SessionStore>
    });
}

/// A server whose certificate does not chain to the configured CA (a
/// man in the middle) is refused, and so is a plaintext connection to a
/// server that only accepts TLS.
#[tokio::test]
async fn postgres_store_refuses_a_wrong_ca_and_plaintext() {
    let server = TlsPostgres::start().await;
    let wrong = server.url("verify-full", &server.pki.other_ca);
    match server.connect(&wrong).await {
        Err(StoreError::Unavailable(message)) => {
            assert!(
                message.contains("certificate") || message.contains("TLS"),
                "{message}"
            )
        }
        other => panic!("a server certificate from another CA was accepted: {other:?}"),
    }
    let plain = format!(
        "postgres://postgres@127.0.0.1:{}/postgres?sslmode=disable",
        server.port
    );
    assert!(
        server.connect(&plain).await.is_err(),
        "plaintext accepted by a hostssl-only server"
    );
    // `require` does not check the CA in sqlx: a CA with it is refused
    // up front instead of being silently ignored.
    let weak = server.url("require", &server.pki.ca);
    assert!(matches!(
        server.connect(&weak).await,
        Err(StoreError::BadUrl(_))
    ));
}

// ---------------------------------------------------------------- Redis

/// A TLS-only redis-server (`--port 0`) with the test CA; killed on drop.
struct TlsRedis {
    child: Child,
    port: u16,
    pki: Pki,
    _dir: tempfile::TempDir,
}

impl TlsRedis {
    fn start() -> Self {
        let dir = tempfile::tempdir().expect("dir");
        let pki = Pki::create(dir.path());
        let port = free_port();
        let child = Command::new("redis-server")
            .args(["--port", "0", "--tls-port", &port.to_string()])
            .arg("--tls-cert-file")
            .arg(&pki.cert)
            .arg("--tls-key-file")
            .arg(&pki.key)
            .arg("--tls-ca-cert-file")
            .arg(&pki.ca)
            .args([
                "--tls-auth-clients",
                "no",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("redis-server on PATH (Debian's redis-server): {e}"));
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self {
            child,
            port,
            pki,
            _dir: dir,
        }
    }

    fn url(&self, ca: &Path) -> String {
        format!(
            "rediss://127.0.0.1:{}/?cacert={}&protocol=resp2",
            self.port,
            ca.display()
        )
    }

    async fn connect(&self, url: &str) -> Result<RedisStore, StoreError> {
        let options = RedisOptions {
            key_prefix: format!("tls{}:", random_token(6)),
            timeout: Duration::from_secs(2),
        };
        RedisStore::connect(url, options, PayloadCodec::sealed(ring())).await
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `rediss://…?cacert=` trusts a private CA: the store works over TLS.
#[tokio::test]
async fn rediss_store_with_a_custom_ca_round_trips() {
    let server = TlsRedis::start();
    let store = server
        .connect(&server.url(&server.pki.ca))
        .await
        .expect("rediss with the CA");
    round_trip(&store).await;
    // The invalidation bus (its own connection) works over TLS too.
    let bus = store.invalidation_bus();
    let mut rx = bus.subscribe();
    // Published until the subscriber (connecting in the background) hears it.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let _ = bus.publish(Invalidation::All).await;
        if tokio::time::timeout(Duration::from_millis(100), rx.recv())
            .await
            .is_ok()
        {
            break;
        }
        assert!(Instant::now() < deadline, "no invalidation over TLS");
    }
}

/// A server certificate from another CA (a man in the middle) is refused,
/// and so is one that only a private CA vouches for when no `cacert` is set.
#[tokio::test]
async fn rediss_store_refuses_a_wrong_ca() {
    let server = TlsRedis::start();
    assert!(
        server
            .connect(&server.url(&server.pki.other_ca))
            .await
            .is_err(),
        "a server certificate from another CA was accepted"
    );
    let no_ca = format!("rediss://127.0.0.1:{}/", server.port);
    assert!(
        server.connect(&no_ca).await.is_err(),
        "a private CA's certificate was accepted without cacert"
    );
}
