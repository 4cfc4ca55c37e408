//! Redis outage under load: the test starts its own `redis-server` on a free
//! port, stops it while requests run and starts it again. While it is down
//! requests get 503 `store_unavailable` promptly (never 401, never 500, no
//! hang), `/readyz` is red; afterwards everything recovers by itself and the
//! sessions created before are still valid. Also: a `redis+sentinel://` store
//! finds its master through a real Sentinel.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use portcullis::{
    Gateway,
    config::Config,
    session::{SessionId, SessionRecord, TokenSet},
    time::{Clock, SystemClock},
};
use reqwest::{StatusCode, header};
use serde_json::Value;
use tokio::net::TcpListener;

const KEY: &str = "cG9ydGN1bGxpcy10ZXN0LWtleS0wMTIzNDU2Nzg5YWI=";

/// A redis-server of our own, persisting to a temp dir so a restart keeps data.
struct OwnRedis {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl OwnRedis {
    fn start() -> Self {
        Self::start_with(&[])
    }

    fn start_with(extra: &[&str]) -> Self {
        // Bind port 0 to find a free port, release it, hand it to redis.
        let mut redis = Self {
            port: free_port(),
            dir: tempfile::tempdir().expect("dir"),
            child: None,
        };
        redis.spawn_with(extra);
        redis
    }

    fn spawn(&mut self) {
        self.spawn_with(&[]);
    }

    fn spawn_with(&mut self, extra: &[&str]) {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(extra)
            .args(["--save", "3600 1", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server on PATH");
        self.child = Some(child);
        wait_for_port(self.port, true);
    }

    /// Stop with SIGTERM: redis saves its dataset first (save points are set).
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
        wait_for_port(self.port, false);
        assert!(Path::new(&self.dir.path().join("dump.rdb")).exists());
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn query<T: redis::FromRedisValue>(port: u16, cmd: &mut redis::Cmd) -> redis::RedisResult<T> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}"))?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    cmd.query_async(&mut conn).await
}

fn wait_for_port(port: u16, open: bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() != open {
        assert!(
            Instant::now() < deadline,
            "redis port {port} open={open} not reached"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn record(id: &SessionId, now: i64) -> SessionRecord {
    SessionRecord {
        id: id.hash(),
        sub: "alice".into(),
        sid: None,
        claims: Default::default(),
        roles: vec![],
        tokens: TokenSet {
            access_token: "at".into(),
            refresh_token: None,
            id_token: None,
            access_expires_at: Some(now + 3600),
            bearer: Default::default(),
        },
        csrf_token: "csrf".into(),
        user_agent: None,
        created_at: now,
        last_seen_at: now,
        expires_at: now + 3600,
        idle_expires_at: now + 1800,
        version: 1,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn outage_gives_503_then_recovers_without_losing_sessions() {
    let mut redis = OwnRedis::start();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let toml = format!(
        r#"
[server]
public_url = "{base}"
profile = "dev"
[oidc]
issuer = "http://127.0.0.1:1"
client_id = "c"
client_secret = "s"
[session]
store = "{url}"
encryption_keys = ["{KEY}"]
store_timeout = "500ms"
"#,
        url = redis.url()
    );
    let config = Config::from_toml_str(&toml, Vec::new()).expect("config");
    let gateway = Gateway::builder(config).build().await.expect("gateway");
    let store = gateway.store().clone();
    let admin = gateway.admin_router();
    let app = gateway
        .router()
        .into_make_service_with_connect_info::<SocketAddr>();
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });

    let now = SystemClock.now();
    let ids: Vec<SessionId> = (0..4).map(|_| SessionId::generate()).collect();
    for id in &ids {
        store.save(&record(id, now)).await.expect("save");
    }

    // Load: workers hit /auth/me in a loop and report (phase, status, body, latency).
    let down = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let client = reqwest::Client::new();
    let workers: Vec<_> = ids
        .iter()
        .map(|id| {
            let (client, base, down, stop) =
                (client.clone(), base.clone(), down.clone(), stop.clone());
            let cookie = format!("portcullis={}", id.as_cookie_value());
            tokio::spawn(async move {
                let mut seen = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    let was_down = down.load(Ordering::SeqCst);
                    let started = Instant::now();
                    let resp = client
                        .get(format!("{base}/auth/me"))
                        .header(header::COOKIE, &cookie)
                        .send()
                        .await
                        .expect("gateway answers");
                    let status = resp.status();
                    let body: Value = resp.json().await.unwrap_or(Value::Null);
                    seen.push((was_down, status, body, started.elapsed()));
                }
                seen
            })
        })
        .collect();

    let ready = |admin: axum::Router| async move {
        use tower::ServiceExt;
        let req = axum::http::Request::get("/readyz")
            .body(axum::body::Body::empty())
            .expect("req");
        admin.oneshot(req).await.expect("readyz").status()
    };

    tokio::time::sleep(Duration::from_millis(300)).await;
    redis.stop();
    down.store(true, Ordering::SeqCst);
    // While down: /readyz red (the IdP is unreachable too, but the store check must fail fast).
    let started = Instant::now();
    assert_eq!(ready(admin.clone()).await, StatusCode::SERVICE_UNAVAILABLE);
    assert!(started.elapsed() < Duration::from_secs(5));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    down.store(false, Ordering::SeqCst);
    redis.spawn();

    // Recovers by itself: every worker's session answers 200 again.
    let deadline = Instant::now() + Duration::from_secs(10);
    for id in &ids {
        loop {
            let status = client
                .get(format!("{base}/auth/me"))
                .header(
                    header::COOKIE,
                    format!("portcullis={}", id.as_cookie_value()),
                )
                .send()
                .await
                .expect("request")
                .status();
            if status == StatusCode::OK {
                break;
            }
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
            assert!(Instant::now() < deadline, "no recovery after restart");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    stop.store(true, Ordering::SeqCst);

    let mut during = 0;
    for worker in workers {
        for (was_down, status, body, latency) in worker.await.expect("worker") {
            assert!(
                latency < Duration::from_secs(3),
                "request hung for {latency:?}"
            );
            match status {
                StatusCode::OK => assert_eq!(body["authenticated"], true),
                StatusCode::SERVICE_UNAVAILABLE => {
                    assert_eq!(body["error"], "store_unavailable", "{body}")
                }
                other => panic!("unexpected {other} during outage test: {body}"),
            }
            if was_down {
                during += 1;
            }
        }
    }
    assert!(during > 0, "no request ran while the store was down");
    for id in &ids {
        assert!(
            store.load(&id.hash()).await.expect("load").is_some(),
            "session lost"
        );
    }
    server.abort();
}

/// A Redis Sentinel on a free port watching `master` under `name`, with
/// `extra` config lines; returns it once it listens, and its port.
fn start_sentinel(master: &OwnRedis, name: &str, extra: &str) -> (std::process::Child, u16) {
    let port = free_port();
    let conf = master.dir.path().join("sentinel.conf");
    std::fs::write(
        &conf,
        format!(
            "bind 127.0.0.1\nport {port}\ndir {}\n\
             sentinel monitor {name} 127.0.0.1 {} 1\n{extra}",
            master.dir.path().display(),
            master.port
        ),
    )
    .expect("sentinel.conf");
    let sentinel = Command::new("redis-server")
        .arg(&conf)
        .arg("--sentinel")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server --sentinel");
    wait_for_port(port, true);
    (sentinel, port)
}

#[tokio::test]
async fn sentinel_url_reaches_the_master() {
    let redis = OwnRedis::start();
    let (mut sentinel, port) = start_sentinel(&redis, "pcmaster", "");

    let options = portcullis::session::StoreOptions {
        cache: None,
        ..Default::default()
    };
    let url = format!("redis+sentinel://127.0.0.1:{port}/pcmaster");
    let store = portcullis::session::open_store_with(&url, &options)
        .await
        .expect("store through sentinel");
    let id = SessionId::generate();
    let now = SystemClock.now();
    store.save(&record(&id, now)).await.expect("save");
    assert_eq!(
        store.load(&id.hash()).await.expect("load"),
        Some(record(&id, now))
    );
    // The record is on the master the sentinel named.
    let client = redis::Client::open(redis.url()).expect("client");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("master");
    let exists: bool = redis::cmd("EXISTS")
        .arg(format!("portcullis:s:{}", id.hash().as_str()))
        .query_async(&mut conn)
        .await
        .expect("exists");
    assert!(exists);
    let _ = store.delete(&id.hash()).await;
    let _ = sentinel.kill();
    let _ = sentinel.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_failover_moves_the_store_to_the_new_master() {
    let master = OwnRedis::start();
    let replica = OwnRedis::start_with(&["--replicaof", "127.0.0.1", &master.port.to_string()]);
    let (mut sentinel, port) = start_sentinel(
        &master,
        "pcfail",
        "sentinel down-after-milliseconds pcfail 1000\n\
         sentinel failover-timeout pcfail 5000\n",
    );
    eventually("the sentinel to see the replica", async || {
        query::<Vec<redis::Value>>(port, redis::cmd("SENTINEL").arg("REPLICAS").arg("pcfail"))
            .await
            .is_ok_and(|r| !r.is_empty())
    })
    .await;

    let options = portcullis::session::StoreOptions {
        cache: None,
        timeout: Duration::from_millis(500),
        ..Default::default()
    };
    let url = format!("redis+sentinel://127.0.0.1:{port}/pcfail");
    let store = portcullis::session::open_store_with(&url, &options)
        .await
        .expect("store through sentinel");
    let before = SessionId::generate();
    let now = SystemClock.now();
    store.save(&record(&before, now)).await.expect("save");
    let key = format!("portcullis:s:{}", before.hash().as_str());
    eventually("replication", async || {
        query::<bool>(replica.port, redis::cmd("EXISTS").arg(&key))
            .await
            .unwrap_or(false)
    })
    .await;

    let _: redis::Value = query(port, redis::cmd("SENTINEL").arg("FAILOVER").arg("pcfail"))
        .await
        .expect("failover");
    let replica_port = replica.port.to_string();
    eventually("the sentinel to name the new master", async || {
        query::<Vec<String>>(
            port,
            redis::cmd("SENTINEL")
                .arg("GET-MASTER-ADDR-BY-NAME")
                .arg("pcfail"),
        )
        .await
        .is_ok_and(|a| a.get(1) == Some(&replica_port))
    })
    .await;

    // Until the sentinel turns the old master into a replica, it still takes
    // writes (Redis' own failover window); from then on writes fail there
    // until the store follows the failover.
    eventually("the old master to become a replica", async || {
        query::<Vec<redis::Value>>(master.port, &mut redis::cmd("ROLE"))
            .await
            .is_ok_and(|r| r.first() == Some(&redis::Value::BulkString(b"slave".to_vec())))
    })
    .await;
    let after = SessionId::generate();
    eventually("writes to reach the new master", async || {
        store.save(&record(&after, now)).await.is_ok()
    })
    .await;
    let on_new_master: bool = query(
        replica.port,
        redis::cmd("EXISTS").arg(format!("portcullis:s:{}", after.hash().as_str())),
    )
    .await
    .expect("exists");
    assert!(on_new_master);
    assert!(
        store.load(&before.hash()).await.expect("load").is_some(),
        "session lost"
    );
    let _ = sentinel.kill();
    let _ = sentinel.wait();
}
