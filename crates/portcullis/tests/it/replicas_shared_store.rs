//! Two gateway replicas sharing one Redis (and again one PostgreSQL) store,
//! both against `oidc-provider` with rotating refresh tokens and reuse
//! detection: a session made on A works on B, logout on A stops it on B
//! within a second (cache invalidation), and a burst of requests over both on
//! an expiring token makes exactly one IdP refresh.
//!
//! Servers: `REDIS_URL` (default `redis://127.0.0.1:6379`) and `DATABASE_URL`
//! (default `postgres://postgres@127.0.0.1:5432/test`). Each test uses its own
//! key prefix / schema and removes it at the end.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::oidc_provider::{
    Browser, CLIENT_ID, CLIENT_SECRET, Landed, OidcProvider, OpOptions,
};
use axum::{Json, Router, http::HeaderMap, routing::get};
use portcullis::{Gateway, config::Config, time::ManualClock};
use reqwest::{Method, StatusCode, header};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use url::Url;

const KEY: &str = "cG9ydGN1bGxpcy10ZXN0LWtleS0wMTIzNDU2Nzg5YWI=";

fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}{}",
        portcullis::session::random_token(9)
            .to_lowercase()
            .replace('-', "_")
    )
}

/// Where the shared store lives, and how to remove it after the test.
enum Backend {
    Redis { prefix: String },
    Postgres { schema: String },
}

impl Backend {
    async fn redis() -> Self {
        Backend::Redis {
            prefix: unique("pctest:replicas:") + ":",
        }
    }

    async fn postgres() -> Self {
        let schema = unique("pctest_replicas_");
        let pool = sqlx::PgPool::connect(&database_url())
            .await
            .expect("postgres");
        sqlx::query(&format!("CREATE SCHEMA \"{schema}\""))
            .execute(&pool)
            .await
            .expect("create schema");
        pool.close().await;
        Backend::Postgres { schema }
    }

    fn session_toml(&self) -> String {
        match self {
            Backend::Redis { prefix } => {
                format!("store = \"{}\"\nkey_prefix = \"{prefix}\"\n", redis_url())
            }
            Backend::Postgres { schema } => {
                let url = database_url();
                let sep = if url.contains('?') { '&' } else { '?' };
                format!("store = \"{url}{sep}options[search_path]={schema}\"\n")
            }
        }
    }

    async fn cleanup(&self) {
        match self {
            Backend::Redis { prefix } => {
                let client = redis::Client::open(redis_url()).expect("client");
                let mut conn = client
                    .get_multiplexed_async_connection()
                    .await
                    .expect("redis");
                let keys: Vec<String> = redis::cmd("KEYS")
                    .arg(format!("{prefix}*"))
                    .query_async(&mut conn)
                    .await
                    .unwrap_or_default();
                if !keys.is_empty() {
                    let _: redis::RedisResult<i64> =
                        redis::cmd("DEL").arg(keys).query_async(&mut conn).await;
                }
            }
            Backend::Postgres { schema } => {
                let pool = sqlx::PgPool::connect(&database_url())
                    .await
                    .expect("postgres");
                let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
                    .execute(&pool)
                    .await;
                pool.close().await;
            }
        }
    }
}

/// An upstream that answers 200 with the bearer token it received.
async fn start_upstream() -> SocketAddr {
    let app = Router::new().route(
        "/api/token",
        get(|h: HeaderMap| async move {
            Json(json!({
                "authorization": h.get("authorization").and_then(|v| v.to_str().ok()),
            }))
        }),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

struct Replicas {
    /// The public URL both replicas share (A's address: the "load balancer").
    a: String,
    b: String,
    op: OidcProvider,
    clock: ManualClock,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Replicas {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn start(backend: &Backend, access_token_ttl: u64, cache_ttl: &str) -> Replicas {
    let listener_a = TcpListener::bind("127.0.0.1:0").await.expect("bind a");
    let listener_b = TcpListener::bind("127.0.0.1:0").await.expect("bind b");
    let a = format!("http://{}", listener_a.local_addr().expect("addr"));
    let b = format!("http://{}", listener_b.local_addr().expect("addr"));
    let op = OidcProvider::start(OpOptions {
        redirect_uris: vec![format!("{a}/auth/callback")],
        post_logout_redirect_uris: vec![format!("{a}/")],
        access_token_ttl,
        // Longer than the clock jump below, so refreshed ID tokens are not expired.
        id_token_ttl: 3600,
        rotate_refresh_token: true,
        ..Default::default()
    })
    .await;
    let upstream = start_upstream().await;
    let toml = format!(
        r#"
[server]
public_url = "{a}"
profile = "dev"
[oidc]
issuer = "{issuer}"
client_id = "{CLIENT_ID}"
client_secret = "{CLIENT_SECRET}"
scopes = ["openid", "profile", "email", "offline_access"]
[session]
{session}encryption_keys = ["{KEY}"]
refresh_before = "60s"
cache_ttl = "{cache_ttl}"
[[routes]]
prefix = "/api/"
upstream = "http://{upstream}"
"#,
        issuer = op.issuer,
        session = backend.session_toml(),
    );
    let clock = ManualClock::new(portcullis::time::Clock::now(&portcullis::time::SystemClock));
    let mut tasks = Vec::new();
    for listener in [listener_a, listener_b] {
        let config = Config::from_toml_str(&toml, Vec::new()).expect("config");
        let gateway = Gateway::builder(config)
            .clock(Arc::new(clock.clone()))
            .build()
            .await
            .expect("gateway");
        // The production path: the serving workers, as `portcullis serve`.
        let served = gateway.clone();
        tasks.push(tokio::spawn(async move {
            let _ = portcullis::serve_public(&served, listener, std::future::pending()).await;
        }));
    }
    Replicas {
        a,
        b,
        op,
        clock,
        tasks,
    }
}

async fn login(r: &Replicas, browser: &mut Browser, user: &str) {
    let base = r.a.clone();
    let landed =
        r.op.login(
            browser,
            &format!("{base}/auth/login?return_to=/app"),
            user,
            user,
            move |u: &Url| u.as_str().starts_with(&base) && !u.path().starts_with("/auth/"),
        )
        .await;
    if let Landed::Page(p) = landed {
        panic!("login ended on a page {} {}: {}", p.status, p.url, p.body);
    }
}

async fn get_json(browser: &mut Browser, url: &str) -> (StatusCode, Value) {
    let resp = browser.request(Method::GET, url, None).await;
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn session_moves_and_logout_reaches_other_replica(backend: Backend) {
    // A long cache TTL: only the cross-replica invalidation can stop B in time.
    let r = start(&backend, 3600, "60s").await;
    let mut browser = Browser::new();
    login(&r, &mut browser, "alice").await;

    // Cookies are per host, not per port: the same browser talks to both.
    for base in [&r.a, &r.b, &r.b, &r.a] {
        let (status, me) = get_json(&mut browser, &format!("{base}/auth/me")).await;
        assert_eq!(status, StatusCode::OK, "{base}: {me}");
        assert_eq!(me["user"]["sub"], "alice");
        let (status, seen) = get_json(&mut browser, &format!("{base}/api/token")).await;
        assert_eq!(status, StatusCode::OK, "{base}: {seen}");
        assert!(
            seen["authorization"]
                .as_str()
                .is_some_and(|a| a.starts_with("Bearer "))
        );
    }

    // Logout on A; B (whose cache holds the session) must say 401 within 1 s.
    let xsrf = browser.cookie(&r.a, "XSRF-TOKEN").expect("XSRF-TOKEN");
    let cookie = browser.cookie(&r.a, "portcullis").expect("session cookie");
    let mut headers = HeaderMap::new();
    headers.insert(header::ACCEPT, "application/json".parse().expect("hv"));
    headers.insert("x-xsrf-token", xsrf.parse().expect("hv"));
    let resp = browser
        .request_with(Method::POST, &format!("{}/auth/logout", r.a), headers, None)
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let logged_out = Instant::now();

    // The browser dropped its cookie; an attacker who kept it replays it on B.
    let client = reqwest::Client::new();
    loop {
        let status = client
            .get(format!("{}/auth/me", r.b))
            .header(header::COOKIE, format!("portcullis={cookie}"))
            .send()
            .await
            .expect("request")
            .status();
        if status == StatusCode::UNAUTHORIZED {
            break;
        }
        assert_eq!(status, StatusCode::OK);
        assert!(
            logged_out.elapsed() < Duration::from_secs(1),
            "session still valid on B 1 s after logout on A"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(r);
    backend.cleanup().await;
}

async fn burst_on_expiring_token_refreshes_once(backend: Backend) {
    let r = start(&backend, 600, "2s").await;
    let mut browser = Browser::new();
    login(&r, &mut browser, "bob").await;
    let cookie = browser.cookie(&r.a, "portcullis").expect("session cookie");
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .expect("client");
    let get = |base: String| {
        let client = client.clone();
        let cookie = cookie.clone();
        async move {
            let resp = client
                .get(format!("{base}/api/token"))
                .header(header::COOKIE, format!("portcullis={cookie}"))
                .send()
                .await
                .expect("request");
            let status = resp.status();
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            (status, body)
        }
    };
    let (status, before) = get(r.a.clone()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(r.op.refresh_count().await, 0);

    // 570 s later the 600 s token is within `refresh_before` (60 s) of expiry.
    r.clock.advance(570);
    let requests: Vec<_> = (0..500)
        .map(|i| {
            let base = if i % 2 == 0 { r.a.clone() } else { r.b.clone() };
            tokio::spawn(get(base))
        })
        .collect();
    let mut tokens = std::collections::HashSet::new();
    let mut failures = Vec::new();
    for request in requests {
        let (status, body) = request.await.expect("task");
        if status != StatusCode::OK {
            failures.push((status, body.clone()));
        }
        tokens.insert(body["authorization"].as_str().unwrap_or("").to_owned());
    }
    let refreshes = r.op.refresh_count().await;
    let reused = r.op.refresh_token_reuse_detected().await;
    assert!(
        failures.is_empty(),
        "{} of 500 failed, first {:?}; IdP refreshes {refreshes}, reuse {reused}; events {}",
        failures.len(),
        failures.first(),
        r.op.events().await
    );
    assert_eq!(refreshes, 1, "exactly one IdP refresh");
    assert!(!reused, "a refresh token was reused");
    // Everyone ends up on the new token (a few early requests may still carry
    // the old, still valid one).
    let (_, after) = get(r.b.clone()).await;
    assert_ne!(after["authorization"], before["authorization"]);
    assert!(tokens.contains(after["authorization"].as_str().unwrap_or("")));
    drop(r);
    backend.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_session_moves_and_logout_reaches_other_replica() {
    session_moves_and_logout_reaches_other_replica(Backend::redis().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_session_moves_and_logout_reaches_other_replica() {
    session_moves_and_logout_reaches_other_replica(Backend::postgres().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_burst_on_expiring_token_refreshes_once() {
    burst_on_expiring_token_refreshes_once(Backend::redis().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_burst_on_expiring_token_refreshes_once() {
    burst_on_expiring_token_refreshes_once(Backend::postgres().await).await;
}
