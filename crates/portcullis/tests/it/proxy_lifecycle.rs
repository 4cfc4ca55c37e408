//! The proxy and the token lifecycle against the real OpenID Provider (npm
//! `oidc-provider`, refresh-token rotation and reuse detection on) and local
//! upstreams on port 0: header hygiene, streaming (SSE, a 50 MiB download),
//! WebSocket tunnelling, role rules, single-flight refresh under load, the
//! upstream-401 retry, and what happens when the IdP refuses or is down.
//!
//! The gateway runs on a [`ManualClock`] so tests move a session's access
//! token into the refresh window or past its expiry without waiting.

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use crate::common::oidc_provider::{
    Browser, CLIENT_ID, CLIENT_SECRET, Landed, OidcProvider, OpOptions,
};
use axum::{
    Json, Router,
    body::{Body, Bytes},
    extract::{Request, State},
    http::HeaderMap,
    routing::{any, get},
};
use futures_util::{SinkExt, StreamExt};
use portcullis::{
    Gateway,
    config::Config,
    session::{MemoryStore, SessionStore},
    time::ManualClock,
};
use reqwest::{Method, StatusCode, header};
use serde_json::{Value, json};
use tokio::{net::TcpListener, sync::Notify};
use url::Url;

const MIB: usize = 1024 * 1024;

/// What the test upstream saw, and gates that hold its streams.
#[derive(Default)]
struct Upstream {
    /// Every request path that reached the upstream.
    paths: Mutex<Vec<String>>,
    /// `Authorization` values seen by `/api/strict`.
    strict_auth: Mutex<Vec<String>>,
    /// Bodies seen by `/api/strict`.
    strict_bodies: Mutex<Vec<usize>>,
    /// How many more `/api/strict` requests get 401.
    strict_reject: AtomicUsize,
    /// Released by the test once it has the first SSE event / download bytes.
    sse_gate: Notify,
    download_gate: Notify,
    /// When the upstream wrote its last SSE event / download chunk.
    sse_done: Mutex<Option<Instant>>,
    download_done: Mutex<Option<Instant>>,
}

fn headers_json(h: &HeaderMap) -> Value {
    let mut map = serde_json::Map::new();
    for (k, v) in h {
        let v = v.to_str().unwrap_or("<binary>").to_string();
        match map.get_mut(k.as_str()) {
            Some(Value::Array(a)) => a.push(json!(v)),
            _ => {
                map.insert(k.as_str().to_string(), json!([v]));
            }
        }
    }
    Value::Object(map)
}

fn first(seen: &Value, name: &str) -> Option<String> {
    seen["headers"][name][0].as_str().map(str::to_string)
}

/// A body fed from a channel: each message one chunk.
fn channel_body(rx: tokio::sync::mpsc::Receiver<Bytes>) -> Body {
    Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
    }))
}

async fn start_upstream(state: Arc<Upstream>) -> SocketAddr {
    async fn echo(State(s): State<Arc<Upstream>>, req: Request) -> Json<Value> {
        s.paths
            .lock()
            .expect("paths")
            .push(req.uri().path().to_string());
        let headers = headers_json(req.headers());
        let path = req.uri().path().to_string();
        Json(json!({ "path": path, "headers": headers }))
    }
    async fn strict(State(s): State<Arc<Upstream>>, req: Request) -> (StatusCode, String) {
        let auth = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let body = axum::body::to_bytes(req.into_body(), 8 * MIB)
            .await
            .map(|b| b.len())
            .unwrap_or(usize::MAX);
        s.strict_auth.lock().expect("auth").push(auth);
        s.strict_bodies.lock().expect("bodies").push(body);
        let reject = s
            .strict_reject
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if reject {
            (StatusCode::UNAUTHORIZED, "token refused".into())
        } else {
            (StatusCode::OK, format!("ok {body}"))
        }
    }
    async fn sse(State(s): State<Arc<Upstream>>) -> axum::response::Response {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            let _ = tx.send(Bytes::from_static(b"data: first\n\n")).await;
            // The second event only once the browser has the first.
            s.sse_gate.notified().await;
            let _ = tx.send(Bytes::from_static(b"data: second\n\n")).await;
            *s.sse_done.lock().expect("sse_done") = Some(Instant::now());
        });
        axum::response::Response::builder()
            .header("content-type", "text/event-stream")
            .body(channel_body(rx))
            .expect("sse response")
    }
    async fn download(State(s): State<Arc<Upstream>>) -> axum::response::Response {
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tokio::spawn(async move {
            let chunk = Bytes::from(vec![7u8; MIB]);
            let _ = tx.send(chunk.clone()).await;
            // The remaining 49 MiB only once the browser has the first bytes:
            // a gateway that buffered the whole body would never deliver them.
            s.download_gate.notified().await;
            for _ in 1..50 {
                if tx.send(chunk.clone()).await.is_err() {
                    return;
                }
            }
            *s.download_done.lock().expect("download_done") = Some(Instant::now());
        });
        axum::response::Response::builder()
            .header("content-type", "application/octet-stream")
            .body(channel_body(rx))
            .expect("download response")
    }
    let app = Router::new()
        .route("/api/strict", any(strict))
        .route("/api/sse", get(sse))
        .route("/api/download", get(download))
        // Never answers: the route's timeout must.
        .route("/api/slow/never", get(std::future::pending::<()>))
        .fallback(echo)
        .with_state(state);
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind upstream");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// A WebSocket echo server that records the handshake's `Authorization`.
async fn start_ws_upstream(seen_auth: Arc<Mutex<Vec<String>>>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind ws");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let seen_auth = seen_auth.clone();
            tokio::spawn(async move {
                // The handshake callback's error type is tungstenite's, large by design.
                #[allow(clippy::result_large_err)]
                let callback =
                    |req: &tokio_tungstenite::tungstenite::handshake::server::Request, resp| {
                        let auth = req
                            .headers()
                            .get("authorization")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_string();
                        seen_auth.lock().expect("seen").push(auth);
                        Ok(resp)
                    };
                let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    if msg.is_text() || msg.is_binary() {
                        if ws.send(msg).await.is_err() {
                            return;
                        }
                    } else if msg.is_close() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

struct Setup {
    base: String,
    /// Further gateways (replicas) sharing the store, when asked for.
    replicas: Vec<String>,
    op: OidcProvider,
    store: Arc<dyn SessionStore>,
    clock: ManualClock,
    upstream: Arc<Upstream>,
    ws_auth: Arc<Mutex<Vec<String>>>,
}

async fn setup() -> Setup {
    setup_with(vec![Arc::new(MemoryStore::new())]).await
}

/// One gateway per store handle (the first one logs users in), all on one clock.
async fn setup_with(stores: Vec<Arc<dyn SessionStore>>) -> Setup {
    setup_opts(stores, "").await
}

/// `session_extra`: more `[session]` lines for every gateway.
async fn setup_opts(stores: Vec<Arc<dyn SessionStore>>, session_extra: &str) -> Setup {
    let mut listeners = Vec::new();
    for _ in &stores {
        listeners.push(
            TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind gateway"),
        );
    }
    let bases: Vec<String> = listeners
        .iter()
        .map(|l| format!("http://{}", l.local_addr().expect("addr")))
        .collect();
    let base = bases[0].clone();
    let op = OidcProvider::start(OpOptions {
        redirect_uris: vec![format!("{base}/auth/callback")],
        post_logout_redirect_uris: vec![format!("{base}/")],
        access_token_ttl: 300,
        // Longer than any clock jump below, so refreshed ID tokens stay valid.
        id_token_ttl: 3600,
        rotate_refresh_token: true,
        ..Default::default()
    })
    .await;
    let upstream = Arc::new(Upstream::default());
    let up = start_upstream(upstream.clone()).await;
    let ws_auth = Arc::new(Mutex::new(Vec::new()));
    let ws_up = start_ws_upstream(ws_auth.clone()).await;
    // A port that was just free: nothing listens there.
    let down = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let clock = ManualClock::new(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("time")
            .as_secs() as i64,
    );
    for ((listener, public), store) in listeners.into_iter().zip(&bases).zip(&stores) {
        let toml = format!(
            r#"
[server]
public_url = "{public}"
profile = "dev"
[oidc]
issuer = "{issuer}"
client_id = "{CLIENT_ID}"
client_secret = "{CLIENT_SECRET}"
scopes = ["openid", "profile", "email", "roles", "offline_access"]
roles_claim = "roles"
[session]
store = "memory"
refresh_before = "60s"
{session_extra}
[[routes]]
prefix = "/api/"
upstream = "http://{up}"
[[routes]]
prefix = "/api/admin/"
upstream = "http://{up}"
require_roles = ["admin"]
[[routes]]
prefix = "/public/"
upstream = "http://{up}"
token = "none"
[[routes]]
prefix = "/ws/"
upstream = "http://{ws_up}"
[[routes]]
prefix = "/api/slow/"
upstream = "http://{up}"
timeout = "500ms"
[[routes]]
prefix = "/down/"
upstream = "http://{down}"
"#,
            issuer = op.issuer
        );
        let config = Config::from_toml_str(&toml, Vec::new()).expect("config");
        let gateway = Gateway::builder(config)
            .store(store.clone())
            .clock(Arc::new(clock.clone()))
            .build()
            .await
            .expect("gateway");
        let app = gateway
            .router()
            .into_make_service_with_connect_info::<SocketAddr>();
        tokio::spawn(async move { axum::serve(listener, app).await });
    }
    let store = stores[0].clone();
    let replicas = bases[1..].to_vec();
    Setup {
        base,
        replicas,
        op,
        store,
        clock,
        upstream,
        ws_auth,
    }
}

impl Setup {
    async fn login(&self, user: &str) -> Browser {
        let mut browser = Browser::new();
        let base = self.base.clone();
        let landed = self
            .op
            .login(
                &mut browser,
                &format!("{base}/auth/login?return_to=/app"),
                user,
                user,
                move |u: &Url| u.as_str().starts_with(&base) && !u.path().starts_with("/auth/"),
            )
            .await;
        if let Landed::Page(p) = landed {
            panic!("login ended on a page {} {}: {}", p.status, p.url, p.body);
        }
        browser
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn session_of(&self, sub: &str) -> Option<portcullis::session::SessionRecord> {
        self.store
            .list_by_sub(sub)
            .await
            .expect("list")
            .into_iter()
            .next()
    }

    /// Move the gateway's clock to `secs` before the session's access token expires.
    async fn to_before_expiry(&self, sub: &str, secs: i64) {
        let record = self.session_of(sub).await.expect("session");
        let exp = record
            .tokens
            .access_expires_at
            .expect("access token expiry");
        self.clock.set(exp - secs);
    }
}

async fn get_json(browser: &mut Browser, url: &str) -> (StatusCode, Value) {
    let resp = browser.request(Method::GET, url, None).await;
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn bearer_reaches_upstream_and_credentials_and_hop_headers_do_not() {
    let s = setup().await;
    let mut anonymous = Browser::new();
    let (status, body) = get_json(&mut anonymous, &s.url("/api/x")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"], "unauthorized");

    let mut browser = s.login("alice").await;
    let record = s.session_of("alice").await.expect("session");
    let mut h = HeaderMap::new();
    h.insert("authorization", "Basic c3B5OnNweQ==".parse().expect("hv"));
    h.insert("connection", "keep-alive, x-drop-me".parse().expect("hv"));
    h.insert("x-drop-me", "1".parse().expect("hv"));
    h.insert("keep-alive", "timeout=5".parse().expect("hv"));
    h.insert("proxy-authorization", "Basic eA==".parse().expect("hv"));
    h.insert("x-forwarded-for", "6.6.6.6".parse().expect("hv"));
    h.insert("x-forwarded-host", "evil.example".parse().expect("hv"));
    h.insert("x-forwarded-proto", "https".parse().expect("hv"));
    h.insert("x-request-id", "req-12345".parse().expect("hv"));
    h.insert("x-app", "kept".parse().expect("hv"));
    browser.set_cookie(&s.base, "theme", "dark");
    let resp = browser
        .request_with(Method::GET, &s.url("/api/echo?q=1"), h, None)
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["x-request-id"], "req-12345");
    let seen: Value = resp.json().await.expect("json");

    assert_eq!(
        first(&seen, "authorization"),
        Some(format!("Bearer {}", record.tokens.access_token.as_str()))
    );
    assert_eq!(
        seen["headers"]["authorization"].as_array().map(Vec::len),
        Some(1)
    );
    let cookie = first(&seen, "cookie").unwrap_or_default();
    assert!(
        cookie.contains("theme=dark"),
        "other cookies pass: {cookie}"
    );
    assert!(
        !cookie.contains("portcullis=") && !cookie.contains("XSRF-TOKEN"),
        "gateway cookies must not pass: {cookie}"
    );
    for gone in ["x-drop-me", "keep-alive", "proxy-authorization"] {
        assert!(
            seen["headers"][gone].is_null(),
            "{gone} must be stripped: {seen}"
        );
    }
    assert_eq!(first(&seen, "x-app").as_deref(), Some("kept"));
    assert_eq!(
        first(&seen, "x-forwarded-for").as_deref(),
        Some("127.0.0.1")
    );
    let host = Url::parse(&s.base).expect("base");
    assert_eq!(
        first(&seen, "x-forwarded-host"),
        Some(format!(
            "{}:{}",
            host.host_str().expect("host"),
            host.port().expect("port")
        ))
    );
    assert_eq!(first(&seen, "x-forwarded-proto").as_deref(), Some("http"));
    assert_eq!(first(&seen, "x-request-id").as_deref(), Some("req-12345"));

    // Without an incoming X-Request-ID one is made and returned.
    let resp = browser
        .request(Method::GET, &s.url("/api/echo"), None)
        .await;
    let made = resp.headers()["x-request-id"]
        .to_str()
        .expect("id")
        .to_string();
    let seen: Value = resp.json().await.expect("json");
    assert!(!made.is_empty());
    assert_eq!(first(&seen, "x-request-id"), Some(made));

    // Traversal attempts never leave the prefix; the upstream sees none of them.
    s.upstream.paths.lock().expect("paths").clear();
    let cookie_all = browser
        .cookie_header(&Url::parse(&s.base).expect("base"))
        .expect("cookies");
    for bad in [
        "/api/../admin",
        "/api/%2e%2e/admin",
        "/api/%2E%2E%2Fadmin",
        "/api/..%2fadmin",
        "/api/%252e%252e/admin",
    ] {
        // Sent raw: URL libraries would normalise the dots away.
        let status = raw_get(&s.base, bad, &cookie_all).await;
        assert_eq!(status, 400, "{bad}");
    }
    let paths = s.upstream.paths.lock().expect("paths").clone();
    assert!(paths.is_empty(), "{paths:?}");
}

/// A raw HTTP/1.1 GET of `path` (unnormalised); returns the status code.
async fn raw_get(base: &str, path: &str, cookie: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(req.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    stream.read_to_end(&mut buf).await.expect("read");
    let text = String::from_utf8_lossy(&buf);
    text.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {text}"))
}

#[tokio::test]
async fn role_rules_give_200_or_403() {
    let s = setup().await;
    for (user, expected) in [
        ("alice", StatusCode::OK),
        ("bob", StatusCode::FORBIDDEN),
        ("carol", StatusCode::FORBIDDEN),
    ] {
        let mut browser = s.login(user).await;
        let (status, body) = get_json(&mut browser, &s.url("/api/admin/report")).await;
        assert_eq!(status, expected, "{user}: {body}");
        if expected == StatusCode::FORBIDDEN {
            assert_eq!(body["error"], "forbidden");
        }
        // The plain API route has no role rule.
        let (status, _) = get_json(&mut browser, &s.url("/api/other")).await;
        assert_eq!(status, StatusCode::OK, "{user}");
    }
    // A `token = "none"` route needs no session and sends no token.
    let mut anonymous = Browser::new();
    let (status, seen) = get_json(&mut anonymous, &s.url("/public/x")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(seen["headers"]["authorization"].is_null());
}

#[tokio::test]
async fn sse_first_event_arrives_before_upstream_finishes() {
    let s = setup().await;
    let mut browser = s.login("alice").await;
    let mut resp = browser.request(Method::GET, &s.url("/api/sse"), None).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()[header::CONTENT_TYPE], "text/event-stream");
    let first = tokio::time::timeout(Duration::from_secs(10), resp.chunk())
        .await
        .expect("first event must arrive while the upstream is still open")
        .expect("chunk")
        .expect("some bytes");
    let first_at = Instant::now();
    assert!(String::from_utf8_lossy(&first).contains("data: first"));
    assert!(
        s.upstream.sse_done.lock().expect("done").is_none(),
        "upstream has not finished yet"
    );
    s.upstream.sse_gate.notify_one();
    let mut rest = Vec::new();
    while let Some(c) = resp.chunk().await.expect("chunk") {
        rest.extend_from_slice(&c);
    }
    assert!(String::from_utf8_lossy(&rest).contains("data: second"));
    let done_at = s.upstream.sse_done.lock().expect("done").expect("finished");
    assert!(
        first_at < done_at,
        "first event before the upstream finished"
    );
}

#[tokio::test]
async fn fifty_mib_download_streams() {
    let s = setup().await;
    let mut browser = s.login("alice").await;
    let mut resp = browser
        .request(Method::GET, &s.url("/api/download"), None)
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let first = tokio::time::timeout(Duration::from_secs(10), resp.chunk())
        .await
        .expect("first bytes must arrive before the upstream produced the rest")
        .expect("chunk")
        .expect("bytes");
    let first_at = Instant::now();
    assert!(s.upstream.download_done.lock().expect("done").is_none());
    s.upstream.download_gate.notify_one();
    let mut total = first.len();
    while let Some(c) = resp.chunk().await.expect("chunk") {
        total += c.len();
    }
    assert_eq!(total, 50 * MIB);
    let done_at = s
        .upstream
        .download_done
        .lock()
        .expect("done")
        .expect("upstream finished");
    assert!(first_at < done_at);
}

#[tokio::test]
async fn websocket_echo_with_token_and_origin_check() {
    use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest};
    let s = setup().await;
    let browser = s.login("alice").await;
    let record = s.session_of("alice").await.expect("session");
    let base = Url::parse(&s.base).expect("base");
    let cookie = browser.cookie_header(&base).expect("cookies");
    let ws_url = s.base.replacen("http://", "ws://", 1) + "/ws/echo";

    let mut req = ws_url.as_str().into_client_request().expect("request");
    req.headers_mut()
        .insert("cookie", cookie.parse().expect("hv"));
    req.headers_mut()
        .insert("origin", s.base.parse().expect("hv"));
    let (mut ws, resp) = tokio_tungstenite::connect_async(req)
        .await
        .expect("websocket through the gateway");
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    ws.send(Message::text("hello")).await.expect("send");
    let echoed = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .expect("echo in time")
        .expect("message")
        .expect("ok");
    assert_eq!(echoed.to_text().expect("text"), "hello");
    ws.send(Message::binary(vec![1u8, 2, 3]))
        .await
        .expect("send bin");
    let echoed = ws.next().await.expect("message").expect("ok");
    assert_eq!(echoed.into_data().as_ref(), &[1u8, 2, 3]);
    let _ = ws.close(None).await;
    assert_eq!(
        s.ws_auth.lock().expect("auth").first().cloned(),
        Some(format!("Bearer {}", record.tokens.access_token.as_str()))
    );

    // Cross-site WebSocket hijacking: another Origin is refused.
    let mut req = ws_url.as_str().into_client_request().expect("request");
    req.headers_mut()
        .insert("cookie", cookie.parse().expect("hv"));
    req.headers_mut()
        .insert("origin", "https://evil.example".parse().expect("hv"));
    match tokio_tungstenite::connect_async(req).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), StatusCode::FORBIDDEN)
        }
        other => panic!("cross-site upgrade must fail with 403: {other:?}"),
    }
    assert_eq!(s.ws_auth.lock().expect("auth").len(), 1);

    // No session: 401, never tunnelled.
    let mut req = ws_url.as_str().into_client_request().expect("request");
    req.headers_mut()
        .insert("origin", s.base.parse().expect("hv"));
    match tokio_tungstenite::connect_async(req).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), StatusCode::UNAUTHORIZED)
        }
        other => panic!("anonymous upgrade must fail with 401: {other:?}"),
    }
}

#[tokio::test]
async fn two_hundred_concurrent_requests_refresh_once() {
    let s = setup().await;
    let browser = s.login("alice").await;
    let before = s.session_of("alice").await.expect("session");
    // Inside the refresh window, still valid; a slow token endpoint widens the race.
    s.to_before_expiry("alice", 30).await;
    s.op.delay_path("/token", Duration::from_millis(300)).await;

    let base = Url::parse(&s.base).expect("base");
    let cookie = browser.cookie_header(&base).expect("cookies");
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let client = client.clone();
            let cookie = cookie.clone();
            let url = s.url(&format!("/api/echo/{i}"));
            tokio::spawn(async move {
                let resp = client
                    .get(url)
                    .header(header::COOKIE, cookie)
                    .send()
                    .await
                    .expect("request");
                let status = resp.status();
                let seen: Value = resp.json().await.unwrap_or(Value::Null);
                (status, first(&seen, "authorization"))
            })
        })
        .collect();
    let mut tokens = std::collections::HashSet::new();
    for t in tasks {
        let (status, auth) = t.await.expect("join");
        assert_eq!(status, StatusCode::OK);
        tokens.insert(auth.expect("authorization"));
    }
    let after = s.session_of("alice").await.expect("session kept");
    assert_ne!(after.tokens.access_token, before.tokens.access_token);
    assert_ne!(
        after.tokens.refresh_token, before.tokens.refresh_token,
        "rotated"
    );
    assert_eq!(
        tokens,
        std::collections::HashSet::from([format!("Bearer {}", after.tokens.access_token.as_str())]),
        "every request used the one refreshed token"
    );
    assert_eq!(
        s.op.refresh_count().await,
        1,
        "exactly one refresh at the IdP"
    );
    assert!(!s.op.refresh_token_reuse_detected().await);
}

/// `session.keep_id_token = false`: a refresh checks the IdP's new ID token
/// (same user) but keeps neither it nor any other.
#[tokio::test]
async fn without_keep_id_token_a_refresh_keeps_no_id_token() {
    let s = setup_opts(vec![Arc::new(MemoryStore::new())], "keep_id_token = false").await;
    let mut browser = s.login("alice").await;
    let before = s.session_of("alice").await.expect("session");
    assert!(before.tokens.id_token.is_none());
    s.to_before_expiry("alice", 30).await;
    let resp = browser
        .request(Method::GET, &s.url("/api/echo/1"), None)
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(s.op.refresh_count().await, 1);
    let after = s.session_of("alice").await.expect("session kept");
    assert_ne!(after.tokens.access_token, before.tokens.access_token);
    assert!(
        after.tokens.id_token.is_none(),
        "refreshed ID token not kept"
    );
}

#[tokio::test]
async fn upstream_401_refreshes_once_and_retries() {
    let s = setup().await;
    let mut browser = s.login("alice").await;
    let before = s.session_of("alice").await.expect("session");
    s.upstream.strict_reject.store(1, Ordering::SeqCst);
    let resp = browser
        .request(Method::GET, &s.url("/api/strict"), None)
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let after = s.session_of("alice").await.expect("session");
    let seen = s.upstream.strict_auth.lock().expect("auth").clone();
    assert_eq!(
        seen,
        vec![
            format!("Bearer {}", before.tokens.access_token.as_str()),
            format!("Bearer {}", after.tokens.access_token.as_str())
        ]
    );
    assert_ne!(before.tokens.access_token, after.tokens.access_token);
    assert_eq!(s.op.refresh_count().await, 1);

    // A small POST body is buffered and sent again on the retry (after the
    // 401-refresh interval, so this 401 may refresh again).
    s.clock.advance(31);
    let xsrf = browser.cookie(&s.base, "XSRF-TOKEN").expect("xsrf");
    let mut h = HeaderMap::new();
    h.insert("x-xsrf-token", xsrf.parse().expect("hv"));
    s.upstream.strict_reject.store(1, Ordering::SeqCst);
    s.upstream.strict_bodies.lock().expect("bodies").clear();
    let body = "a".repeat(1000);
    let resp = browser
        .request_with(Method::POST, &s.url("/api/strict"), h.clone(), Some(body))
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.text().await.expect("text"), "ok 1000");
    assert_eq!(
        *s.upstream.strict_bodies.lock().expect("b"),
        vec![1000, 1000]
    );
    assert_eq!(s.op.refresh_count().await, 2);

    // A body over 1 MiB is not buffered: no retry, the upstream's 401 comes back.
    s.upstream.strict_reject.store(1, Ordering::SeqCst);
    s.upstream.strict_bodies.lock().expect("bodies").clear();
    let big = "b".repeat(MIB + 1);
    let resp = browser
        .request_with(Method::POST, &s.url("/api/strict"), h, Some(big))
        .await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(*s.upstream.strict_bodies.lock().expect("b"), vec![MIB + 1]);
    assert_eq!(s.op.refresh_count().await, 2, "no refresh without a retry");
    assert!(!s.op.refresh_token_reuse_detected().await);
}

#[tokio::test]
async fn refused_refresh_ends_the_session() {
    let s = setup().await;
    let mut browser = s.login("alice").await;
    assert!(!s.op.revoke_grants(Some("alice")).await.is_empty());
    s.to_before_expiry("alice", 30).await;
    let (status, body) = get_json(&mut browser, &s.url("/api/x")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["error"], "session_expired");
    assert!(s.session_of("alice").await.is_none(), "session destroyed");
    let (status, me) = get_json(&mut browser, &s.url("/auth/me")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(me["authenticated"], false);
}

#[tokio::test]
async fn idp_down_uses_a_valid_token_and_refuses_an_expired_one() {
    let s = setup().await;
    let mut browser = s.login("alice").await;
    let before = s.session_of("alice").await.expect("session");
    s.op.fail_path("/token", 503, r#"{"error":"server_error"}"#, None)
        .await;

    // Refresh due but the IdP is down: the still-valid token is used.
    s.to_before_expiry("alice", 30).await;
    let (status, seen) = get_json(&mut browser, &s.url("/api/x")).await;
    assert_eq!(status, StatusCode::OK, "{seen}");
    assert_eq!(
        first(&seen, "authorization"),
        Some(format!("Bearer {}", before.tokens.access_token.as_str()))
    );

    // Expired and the IdP is down: 503, and the session stays for later.
    s.to_before_expiry("alice", -5).await;
    let (status, body) = get_json(&mut browser, &s.url("/api/x")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"], "idp_unavailable");
    assert!(s.session_of("alice").await.is_some(), "session kept");

    // IdP back: the next request refreshes and goes through.
    s.op.clear_faults().await;
    let (status, _) = get_json(&mut browser, &s.url("/api/x")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(s.op.refresh_count().await, 1);
}

#[tokio::test]
async fn auth_me_refreshes_only_an_expired_token() {
    let s = setup().await;
    let mut browser = s.login("alice").await;
    s.to_before_expiry("alice", 30).await;
    let (status, me) = get_json(&mut browser, &s.url("/auth/me")).await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(
        s.op.refresh_count().await,
        0,
        "no refresh inside the window"
    );

    s.to_before_expiry("alice", -5).await;
    let (status, me) = get_json(&mut browser, &s.url("/auth/me")).await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me["roles"], json!(["admin", "hr"]));
    assert_eq!(
        s.op.refresh_count().await,
        1,
        "an expired token is refreshed"
    );
    let record = s.session_of("alice").await.expect("session");
    assert!(record.tokens.access_expires_at.expect("exp") > s.clock_now());
}

impl Setup {
    fn clock_now(&self) -> i64 {
        use portcullis::time::Clock;
        self.clock.now()
    }
}

/// 100 requests to each of two gateways sharing a store (as two replicas
/// would), on a session due for refresh: one IdP refresh in total.
async fn replicas_refresh_once(stores: Vec<Arc<dyn SessionStore>>) {
    let s = setup_with(stores).await;
    let browser = s.login("alice").await;
    s.to_before_expiry("alice", 30).await;
    s.op.delay_path("/token", Duration::from_millis(300)).await;
    let cookie = browser
        .cookie_header(&Url::parse(&s.base).expect("base"))
        .expect("cookies");
    let client = reqwest::Client::new();
    let mut tasks = Vec::new();
    for i in 0..200 {
        let base = if i % 2 == 0 { &s.base } else { &s.replicas[0] };
        let url = format!("{base}/api/echo/{i}");
        let (client, cookie) = (client.clone(), cookie.clone());
        tasks.push(tokio::spawn(async move {
            let resp = client
                .get(url)
                .header(header::COOKIE, cookie)
                .send()
                .await
                .expect("request");
            let status = resp.status();
            let seen: Value = resp.json().await.unwrap_or(Value::Null);
            (status, first(&seen, "authorization"))
        }));
    }
    let after_tokens: Vec<_> = futures_util::future::join_all(tasks).await;
    let after = s.session_of("alice").await.expect("session kept");
    for t in after_tokens {
        let (status, auth) = t.expect("join");
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            auth,
            Some(format!("Bearer {}", after.tokens.access_token.as_str()))
        );
    }
    assert_eq!(s.op.refresh_count().await, 1, "one refresh across replicas");
    assert!(!s.op.refresh_token_reuse_detected().await);
}

#[tokio::test]
async fn replicas_sharing_sqlite_refresh_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("sessions.db").display());
    // Two pools on one file: the lease lives in the database, not in memory.
    let a = portcullis::session::SqliteStore::connect(&url)
        .await
        .expect("sqlite a");
    let b = portcullis::session::SqliteStore::connect(&url)
        .await
        .expect("sqlite b");
    replicas_refresh_once(vec![Arc::new(a), Arc::new(b)]).await;
}

#[tokio::test]
async fn replicas_sharing_a_memory_store_refresh_once() {
    let store: Arc<dyn SessionStore> = Arc::new(MemoryStore::new());
    replicas_refresh_once(vec![store.clone(), store]).await;
}

#[tokio::test]
async fn upstream_down_is_502_and_slow_is_504() {
    let s = setup().await;
    let mut browser = s.login("alice").await;
    let (status, body) = get_json(&mut browser, &s.url("/down/x")).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert_eq!(body["error"], "upstream_unavailable");
    let started = Instant::now();
    let (status, body) = get_json(&mut browser, &s.url("/api/slow/never")).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
    assert_eq!(body["error"], "upstream_unavailable");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn chunked_upload_streams_and_is_not_retried() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = setup().await;
    let browser = s.login("alice").await;
    let cookie = browser
        .cookie_header(&Url::parse(&s.base).expect("base"))
        .expect("cookies");
    let xsrf = browser.cookie(&s.base, "XSRF-TOKEN").expect("xsrf");
    s.upstream.strict_reject.store(1, Ordering::SeqCst);
    let addr = s.base.trim_start_matches("http://").to_string();
    let mut stream = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    let head = format!(
        "POST /api/strict HTTP/1.1\r\nHost: {addr}\r\nCookie: {cookie}\r\nX-XSRF-TOKEN: {xsrf}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.expect("head");
    let chunk = vec![b'c'; 64 * 1024];
    for _ in 0..32 {
        stream
            .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
            .await
            .expect("size");
        stream.write_all(&chunk).await.expect("chunk");
        stream.write_all(b"\r\n").await.expect("crlf");
    }
    stream.write_all(b"0\r\n\r\n").await.expect("end");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.expect("read");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    // Streamed once to the upstream, whole; no refresh, no second attempt.
    assert_eq!(*s.upstream.strict_bodies.lock().expect("b"), vec![2 * MIB]);
    assert_eq!(s.op.refresh_count().await, 0);
}
