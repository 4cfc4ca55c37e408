//! Redis outage under load: the test starts its own `redis-server` on a free
//! port, stops it while requests run and starts it again. While it is down
//! requests get 503 `store_unavailable` promptly (never 401, never 500, no
//! hang), `/readyz` is red; afterwards everything recovers by itself and the
//! sessions created before are still valid. Also: a `redis+sentinel://` store
//! finds its master through a real Sentinel, and follows a failover.
//!
//! PostgreSQL the same way, with a server the test initialises and starts
//! itself ([`crate::common::own_postgres`]). A session in the local cache keeps
//! serving during an outage only within `session.cache_ttl`, and a
//! back-channel logout the store could not carry out is served when the IdP
//! retries it.

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
    // The production path: the serving workers, as `portcullis serve`.
    let served = gateway.clone();
    let server = tokio::spawn(async move {
        let _ = portcullis::serve_public(&served, listener, std::future::pending()).await;
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
    // A 200 above may have come from the local cache (it serves within
    // `cache_ttl` during an outage): ask the store itself, until it answers.
    let deadline = Instant::now() + Duration::from_secs(10);
    for id in &ids {
        let found = loop {
            match store.load(&id.hash()).await {
                Ok(found) => break found,
                Err(e) => assert!(Instant::now() < deadline, "store not back: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(found.is_some(), "session lost");
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
    let now = SystemClock.now();
    let before: Vec<SessionId> = (0..8).map(|_| SessionId::generate()).collect();
    for id in &before {
        store.save(&record(id, now)).await.expect("save");
    }
    for id in &before {
        let key = format!("portcullis:s:{}", id.hash().as_str());
        eventually("replication", async || {
            query::<bool>(replica.port, redis::cmd("EXISTS").arg(&key))
                .await
                .unwrap_or(false)
        })
        .await;
    }

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
    // Every session that existed before the failover is there after it.
    for id in &before {
        assert_eq!(
            store.load(&id.hash()).await.expect("load"),
            Some(record(id, now)),
            "session lost in the failover"
        );
    }
    let _ = sentinel.kill();
    let _ = sentinel.wait();
}

/// A gateway that opens its own store from `store_url` (local cache on,
/// `cache_ttl` as given), its public router served on a free port.
struct Running {
    base: String,
    admin: axum::Router,
    store: Arc<dyn portcullis::session::SessionStore>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn gateway_on(store_url: &str, cache_ttl: &str, issuer: &str) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let toml = format!(
        r#"
[server]
public_url = "{base}"
profile = "dev"
[oidc]
issuer = "{issuer}"
client_id = "{client_id}"
client_secret = "{client_secret}"
[session]
store = "{store_url}"
encryption_keys = ["{KEY}"]
store_timeout = "500ms"
cache_ttl = "{cache_ttl}"
"#,
        client_id = crate::common::crafted_idp::CLIENT_ID,
        client_secret = crate::common::crafted_idp::CLIENT_SECRET,
    );
    let config = Config::from_toml_str(&toml, Vec::new()).expect("config");
    let gateway = Gateway::builder(config).build().await.expect("gateway");
    let store = gateway.store().clone();
    let admin = gateway.admin_router();
    // The production path: the serving workers, as `portcullis serve`.
    let served = gateway.clone();
    let server = tokio::spawn(async move {
        let _ = portcullis::serve_public(&served, listener, std::future::pending()).await;
    });
    Running {
        base,
        admin,
        store,
        server,
    }
}

/// `GET /auth/me` with `id`'s cookie: status, JSON body, latency.
async fn me(client: &reqwest::Client, base: &str, id: &SessionId) -> (StatusCode, Value, Duration) {
    let started = Instant::now();
    let resp = client
        .get(format!("{base}/auth/me"))
        .header(
            header::COOKIE,
            format!("portcullis={}", id.as_cookie_value()),
        )
        .send()
        .await
        .expect("gateway answers");
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    (status, body, started.elapsed())
}

async fn readyz(admin: &axum::Router) -> (StatusCode, Value) {
    use tower::ServiceExt;
    let req = axum::http::Request::get("/readyz")
        .body(axum::body::Body::empty())
        .expect("req");
    let resp = admin.clone().oneshot(req).await.expect("readyz");
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .expect("body");
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// Only 200 (authenticated) or 503 `store_unavailable`, never slow.
fn assert_ok_or_store_unavailable(status: StatusCode, body: &Value, latency: Duration) {
    assert!(
        latency < Duration::from_secs(3),
        "request hung for {latency:?}"
    );
    match status {
        StatusCode::OK => assert_eq!(body["authenticated"], true, "{body}"),
        StatusCode::SERVICE_UNAVAILABLE => {
            assert_eq!(body["error"], "store_unavailable", "{body}")
        }
        other => panic!("unexpected {other} during an outage: {body}"),
    }
}

/// Workers calling `/auth/me` in a loop on `ids` until `stop`; each reports
/// how many answers were 503 while `down`.
fn spawn_load(
    base: &str,
    ids: &[SessionId],
    down: &Arc<AtomicBool>,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<usize>> {
    let client = reqwest::Client::new();
    ids.iter()
        .map(|id| {
            let (client, base, down, stop) =
                (client.clone(), base.to_owned(), down.clone(), stop.clone());
            let id = SessionId::parse(id.as_cookie_value()).expect("id");
            tokio::spawn(async move {
                let mut unavailable_while_down = 0;
                while !stop.load(Ordering::SeqCst) {
                    let was_down = down.load(Ordering::SeqCst);
                    let (status, body, latency) = me(&client, &base, &id).await;
                    assert_ok_or_store_unavailable(status, &body, latency);
                    if was_down && status == StatusCode::SERVICE_UNAVAILABLE {
                        unavailable_while_down += 1;
                    }
                }
                unavailable_while_down
            })
        })
        .collect()
}

/// The cache rule during an outage: `id`, loaded into the local cache by a
/// request that returned at `primed`, answers 200 until `ttl` after that
/// and 503 `store_unavailable` from then on.
async fn assert_cache_serves_only_within_ttl(
    client: &reqwest::Client,
    base: &str,
    id: &SessionId,
    primed: Instant,
    ttl: Duration,
) {
    let (status, body, _) = me(client, base, id).await;
    assert!(
        primed.elapsed() < ttl,
        "stopping the store took longer than cache_ttl; the test cannot tell"
    );
    assert_eq!(
        status,
        StatusCode::OK,
        "a cached session serves right after the store stopped: {body}"
    );
    loop {
        let asked = Instant::now();
        let (status, body, latency) = me(client, base, id).await;
        assert_ok_or_store_unavailable(status, &body, latency);
        if status == StatusCode::SERVICE_UNAVAILABLE {
            break;
        }
        assert!(
            asked < primed + ttl,
            "a cached session served {:?} after it was cached (cache_ttl {ttl:?})",
            asked - primed
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn save_sessions(
    store: &Arc<dyn portcullis::session::SessionStore>,
    n: usize,
) -> Vec<SessionId> {
    let now = SystemClock.now();
    let mut ids = Vec::new();
    for _ in 0..n {
        let id = SessionId::generate();
        store.save(&record(&id, now)).await.expect("save");
        ids.push(id);
    }
    ids
}

/// Every session in `ids` answers 200 again, within 15 s.
async fn assert_all_recover(client: &reqwest::Client, base: &str, ids: &[SessionId]) {
    let deadline = Instant::now() + Duration::from_secs(15);
    for id in ids {
        loop {
            let (status, body, latency) = me(client, base, id).await;
            assert_ok_or_store_unavailable(status, &body, latency);
            if status == StatusCode::OK {
                break;
            }
            assert!(Instant::now() < deadline, "no recovery after the restart");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_restart_under_load_loses_no_session() {
    let mut pg = crate::common::own_postgres::OwnPostgres::start();
    let ttl = Duration::from_secs(3);
    let gw = gateway_on(&pg.url(), "3s", "http://127.0.0.1:1").await;
    let client = reqwest::Client::new();
    let ids = save_sessions(&gw.store, 12).await;
    let (busy, rest) = ids.split_at(4);
    let (cached, cold) = (&rest[0], &rest[1]);

    let down = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let workers = spawn_load(&gw.base, busy, &down, &stop);
    eventually("the load to run", async || {
        me(&client, &gw.base, &busy[0]).await.0 == StatusCode::OK
    })
    .await;
    let (status, _, _) = me(&client, &gw.base, cached).await;
    assert_eq!(status, StatusCode::OK);
    let primed = Instant::now();

    pg.stop();
    down.store(true, Ordering::SeqCst);
    assert_cache_serves_only_within_ttl(&client, &gw.base, cached, primed, ttl).await;
    // Not in the cache: 503 at once, never 401 (the session is not gone).
    let (status, body, latency) = me(&client, &gw.base, cold).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_ok_or_store_unavailable(status, &body, latency);
    let started = Instant::now();
    let (status, body) = readyz(&gw.admin).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(started.elapsed() < Duration::from_secs(5));
    let failing = body["failing"].as_array().cloned().unwrap_or_default();
    assert!(failing.iter().any(|f| f["check"] == "store"), "{body}");

    down.store(false, Ordering::SeqCst);
    pg.spawn();
    // The pool reconnects by itself: every session from before works.
    assert_all_recover(&client, &gw.base, &ids).await;
    stop.store(true, Ordering::SeqCst);
    let mut during = 0;
    for worker in workers {
        during += worker.await.expect("worker");
    }
    assert!(during > 0, "no request got 503 while the store was down");
    eventually("/readyz ready", async || {
        readyz(&gw.admin).await.1["failing"]
            .as_array()
            .is_some_and(|f| f.iter().all(|c| c["check"] != "store"))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_session_serves_only_within_cache_ttl_during_outage() {
    let mut redis = OwnRedis::start();
    let ttl = Duration::from_secs(2);
    let gw = gateway_on(&redis.url(), "2s", "http://127.0.0.1:1").await;
    let client = reqwest::Client::new();
    let ids = save_sessions(&gw.store, 2).await;
    let (status, _, _) = me(&client, &gw.base, &ids[0]).await;
    assert_eq!(status, StatusCode::OK);
    let primed = Instant::now();
    redis.stop();
    assert_cache_serves_only_within_ttl(&client, &gw.base, &ids[0], primed, ttl).await;
    let (status, body, _) = me(&client, &gw.base, &ids[1]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "uncached: {body}");
    redis.spawn();
    assert_all_recover(&client, &gw.base, &ids).await;
}

/// A back-channel logout the store cannot carry out answers 503 and leaves
/// no `jti` behind, so the IdP's retry of the same token is served: both
/// when the store is down before the `jti` is recorded (PostgreSQL stopped)
/// and when it fails after (the sessions table locked past `store_timeout`
/// while the `jti` table still answers).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backchannel_logout_failed_by_the_store_is_served_on_the_idps_retry() {
    use crate::common::crafted_idp::{CLIENT_ID, CraftedIdp, now};
    use jsonwebtoken::{Algorithm, Header};

    let mut pg = crate::common::own_postgres::OwnPostgres::start();
    let idp = CraftedIdp::start().await;
    let signer = idp.signer();
    let gw = gateway_on(&pg.url(), "2s", &idp.issuer).await;
    let client = reqwest::Client::new();
    let sign = |sid: &str| {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(signer.kid.clone());
        header.typ = Some("logout+jwt".into());
        let claims = serde_json::json!({
            "iss": idp.issuer, "aud": CLIENT_ID, "iat": now(), "exp": now() + 120,
            "jti": portcullis::session::random_token(16), "sub": "alice", "sid": sid,
            "events": { "http://schemas.openid.net/event/backchannel-logout": {} },
        });
        signer.sign_with_header(header, &claims)
    };
    let logout = async |token: &str| {
        let resp = client
            .post(format!("{}/auth/backchannel-logout", gw.base))
            .form(&[("logout_token", token)])
            .send()
            .await
            .expect("POST /auth/backchannel-logout");
        let status = resp.status();
        (status, resp.json::<Value>().await.unwrap_or(Value::Null))
    };
    let session = async |sid: &str| {
        let id = SessionId::generate();
        let mut r = record(&id, SystemClock.now() - 5);
        r.sid = Some(sid.into());
        gw.store.save(&r).await.expect("save");
        id
    };
    // The JWKS is fetched while the IdP and the store are up.
    let warm = session("sid-warm").await;
    assert_eq!(logout(&sign("sid-warm")).await.0, StatusCode::OK);
    assert_eq!(
        me(&client, &gw.base, &warm).await.0,
        StatusCode::UNAUTHORIZED
    );

    // The store is down: nothing can be recorded or deleted.
    let first = session("sid-1").await;
    let token = sign("sid-1");
    pg.stop();
    let (status, body) = logout(&token).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"], "store_unavailable", "{body}");
    pg.spawn();
    eventually("the retry after the outage to be served", async || {
        let (status, body) = logout(&token).await;
        assert_ne!(status, StatusCode::BAD_REQUEST, "retry refused: {body}");
        status == StatusCode::OK
    })
    .await;
    assert!(gw.store.load(&first.hash()).await.expect("load").is_none());

    // The jti is recorded, then the delete fails.
    let second = session("sid-2").await;
    let token = sign("sid-2");
    let pool = sqlx::PgPool::connect(&pg.url()).await.expect("pool");
    let mut lock = pool.begin().await.expect("begin");
    sqlx::query("LOCK TABLE sessions IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .expect("lock");
    let (status, body) = logout(&token).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"], "store_unavailable", "{body}");
    lock.rollback().await.expect("unlock");
    assert!(gw.store.load(&second.hash()).await.expect("load").is_some());
    let (status, body) = logout(&token).await;
    assert_eq!(status, StatusCode::OK, "the IdP's retry is served: {body}");
    assert!(gw.store.load(&second.hash()).await.expect("load").is_none());
    let (status, _) = logout(&token).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "then it is a replay");
    pool.close().await;
}
