//! Fixture for the browser-security tests: a gateway on port 0 with a memory
//! store, a manual clock and an echo upstream that counts what reaches it.
//! Sessions are put straight into the store, so these tests need no IdP (the
//! configured issuer is a closed port; the gateway starts without it).
#![allow(dead_code)]

use portcullis::session::SessionRecords;
use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use axum::{Json, Router, http::HeaderMap, response::IntoResponse, routing::any};
use portcullis::{
    Gateway,
    config::Config,
    session::{MemoryStore, SessionId, SessionRecord, TokenSet, random_token},
    time::{Clock, ManualClock},
};
use serde_json::json;
use tokio::net::TcpListener;

pub const KEY: &str = "cG9ydGN1bGxpcy10ZXN0LWtleS0wMTIzNDU2Nzg5YWI=";
pub const PROD_ORIGIN: &str = "https://app.example.com";
pub const START: i64 = 1_800_000_000;

pub struct Opts<'a> {
    pub profile: &'a str,
    /// Extra `[server]` keys.
    pub server: &'a str,
    /// Extra sections appended to the file.
    pub extra: &'a str,
}

impl Default for Opts<'_> {
    fn default() -> Self {
        Opts {
            profile: "dev",
            server: "",
            extra: "",
        }
    }
}

pub struct Gw {
    /// Where to send requests (always plain http on loopback).
    pub base: String,
    /// The origin the gateway believes it has (`public_url`).
    pub origin: String,
    pub cookie_name: String,
    pub store: Arc<MemoryStore>,
    pub clock: Arc<ManualClock>,
    pub upstream_hits: Arc<AtomicUsize>,
    pub http: reqwest::Client,
}

pub struct Login {
    /// `Cookie` header value carrying the session cookie.
    pub cookie: String,
    pub csrf: String,
}

async fn start_upstream(hits: Arc<AtomicUsize>) -> SocketAddr {
    let app = Router::new()
        .route(
            "/api/own-headers",
            any(|| async {
                (
                    [
                        ("content-security-policy", "sandbox"),
                        ("cache-control", "max-age=60"),
                    ],
                    "upstream",
                )
                    .into_response()
            }),
        )
        .fallback(any(move |method: axum::http::Method, h: HeaderMap| {
            let hits = hits.clone();
            async move {
                hits.fetch_add(1, Ordering::SeqCst);
                Json(json!({
                    "method": method.as_str(),
                    "authorization": h.get("authorization").and_then(|v| v.to_str().ok()),
                }))
            }
        }));
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind upstream");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

pub fn config_text(opts: &Opts<'_>, base: &str, upstream: SocketAddr) -> String {
    let (public_url, issuer) = match opts.profile {
        "prod" => (PROD_ORIGIN.to_string(), "https://127.0.0.1:1"),
        _ => (base.to_string(), "http://127.0.0.1:1"),
    };
    format!(
        r#"
[server]
public_url = "{public_url}"
profile = "{profile}"
{server}
[oidc]
issuer = "{issuer}"
client_id = "portal"
client_secret = "s3cr3t-client-value"
http_timeout = "2s"
[session]
store = "memory"
encryption_keys = ["{KEY}"]
[[routes]]
prefix = "/api/"
upstream = "http://{upstream}"
{extra}
"#,
        profile = opts.profile,
        server = opts.server,
        extra = opts.extra,
    )
}

pub async fn start(opts: Opts<'_>) -> Gw {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind gateway");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let hits = Arc::new(AtomicUsize::new(0));
    let upstream = start_upstream(hits.clone()).await;
    let text = config_text(&opts, &base, upstream);
    let config = Config::from_toml_str(&text, Vec::new()).expect("config");
    let origin = config.public_origin();
    let cookie_name = config.session.cookie_name.clone();
    let store = Arc::new(MemoryStore::new());
    let clock = Arc::new(ManualClock::new(START));
    let gateway = Gateway::builder(config)
        .store(store.clone())
        .clock(clock.clone())
        .build()
        .await
        .expect("gateway");
    // The production path: the serving workers, as `portcullis serve`.
    let served = gateway.clone();
    tokio::spawn(async move {
        let _ = portcullis::serve_public(&served, listener, std::future::pending()).await;
    });
    Gw {
        base,
        origin,
        cookie_name,
        store,
        clock,
        upstream_hits: hits,
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client"),
    }
}

impl Gw {
    /// A logged-in session, as the callback would have stored it.
    pub async fn login(&self) -> Login {
        let id = SessionId::generate();
        let now = self.clock.now();
        let mut claims = serde_json::Map::new();
        claims.insert("name".into(), json!("Alice"));
        let record = SessionRecord {
            id: id.hash(),
            sub: "alice".into(),
            sid: None,
            claims: claims.into(),
            roles: vec!["admin".into()],
            tokens: TokenSet {
                access_token: "at-alice".into(),
                refresh_token: None,
                id_token: None,
                access_expires_at: Some(now + 24 * 3600),
            },
            csrf_token: random_token(32),
            user_agent: None,
            created_at: now,
            last_seen_at: now,
            expires_at: now + 12 * 3600,
            idle_expires_at: now + 30 * 60,
            version: 1,
        };
        self.store.save(&record).await.expect("save session");
        Login {
            cookie: format!("{}={}", self.cookie_name, id.as_cookie_value()),
            csrf: record.csrf_token,
        }
    }

    pub fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, format!("{}{path}", self.base))
    }

    pub fn hits(&self) -> usize {
        self.upstream_hits.load(Ordering::SeqCst)
    }
}

/// Sum of `portcullis_csrf_rejections_total` over its labels.
pub fn csrf_rejections() -> f64 {
    let Some(handle) = portcullis::metrics::install() else {
        return 0.0;
    };
    handle
        .render()
        .lines()
        .filter(|l| l.starts_with("portcullis_csrf_rejections_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
