//! Fixtures shared by `operations.rs` and `log_capture.rs`: a dev gateway on
//! port 0 in front of a fresh `oidc-provider`, login, admin scrapes.
#![allow(dead_code)]

use std::{
    future::Future,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{Json, Router, body::Body, http::HeaderMap, routing::get};
use http_body_util::BodyExt;
use portcullis::{Gateway, session::MemoryStore};
use reqwest::StatusCode;
use serde_json::json;
use tokio::net::TcpListener;
use tower::ServiceExt;
use url::Url;

pub use crate::common::oidc_provider::{
    Browser, CLIENT_ID, CLIENT_SECRET, Landed, OidcProvider, OpOptions, SCOPES,
};

/// Poll `check` until it holds.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn start_upstream() -> SocketAddr {
    let app = Router::new().route(
        "/api/token",
        get(|h: HeaderMap| async move {
            let header = |name: &str| h.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
            Json(json!({
                "authorization": header("authorization"),
                "traceparent": header("traceparent"),
                "x-request-id": header("x-request-id"),
            }))
        }),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

pub struct Setup {
    pub base: String,
    pub op: OidcProvider,
    pub store: Arc<MemoryStore>,
    pub gateway: Gateway,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Setup {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// A dev gateway on port 0 in front of a fresh OP. `refresh_before` longer
/// than the OP's access-token lifetime makes every proxied call refresh.
/// With `idp_down`, the OP's discovery answers 503 while the gateway starts.
pub async fn setup(refresh_before: &str, idp_down: bool) -> Setup {
    setup_with(refresh_before, idp_down, "").await
}

/// [`setup`] with extra `[server]` lines.
pub async fn setup_with(refresh_before: &str, idp_down: bool, server_extra: &str) -> Setup {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let op = OidcProvider::start(OpOptions {
        redirect_uris: vec![format!("{base}/auth/callback")],
        post_logout_redirect_uris: vec![format!("{base}/")],
        access_token_ttl: 300,
        ..Default::default()
    })
    .await;
    if idp_down {
        op.fail_path(
            "/.well-known/openid-configuration",
            503,
            "{\"error\":\"down\"}",
            None,
        )
        .await;
    }
    let upstream = start_upstream().await;
    let scopes = SCOPES.map(|s| format!("{s:?}")).join(", ");
    let toml = format!(
        r#"
[server]
public_url = "{base}"
profile = "dev"
{server_extra}
[oidc]
issuer = "{issuer}"
client_id = "{CLIENT_ID}"
client_secret = "{CLIENT_SECRET}"
scopes = [{scopes}]
[session]
store = "memory"
refresh_before = "{refresh_before}"
[[routes]]
prefix = "/api/"
upstream = "http://{upstream}"
"#,
        issuer = op.issuer
    );
    let store = Arc::new(MemoryStore::new());
    let (gateway, server) = crate::common::gateway::serve(listener, &toml, store.clone()).await;
    Setup {
        base,
        op,
        store,
        gateway,
        server,
    }
}

/// Log `user` in; every URL the browser is redirected through is pushed to `seen`.
pub async fn login(s: &Setup, browser: &mut Browser, user: &str, seen: Arc<Mutex<Vec<String>>>) {
    let base = s.base.clone();
    let landed =
        s.op.login(
            browser,
            &format!("{base}/auth/login?return_to=/app"),
            user,
            user,
            move |u: &Url| {
                seen.lock().expect("lock").push(u.to_string());
                u.as_str().starts_with(&base) && !u.path().starts_with("/auth/")
            },
        )
        .await;
    match landed {
        Landed::Stopped(url) => assert_eq!(url.path(), "/app"),
        Landed::Page(p) => panic!("login ended on a page {} {}: {}", p.status, p.url, p.body),
    }
}

pub async fn admin_get(gateway: &Gateway, path: &str) -> (StatusCode, String) {
    let resp = gateway
        .admin_router()
        .oneshot(
            axum::http::Request::get(path)
                .body(Body::empty())
                .expect("request"),
        )
        .await
        .expect("admin answers");
    let status = resp.status();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// The value of the series `name` whose labels include all of `labels` (0 if absent).
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

pub async fn scrape(gateway: &Gateway) -> String {
    let (status, body) = admin_get(gateway, "/metrics").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}
