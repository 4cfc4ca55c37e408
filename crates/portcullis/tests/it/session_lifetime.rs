//! What a session's end must end with it, and what a hostile upstream or
//! client must not make the gateway do (issue 16 items 6 and 7):
//! - WebSocket tunnels close on logout, back-channel logout, admin revoke,
//!   expiry, an end on another replica and the loss of the route's role,
//!   and after the idle timeout; a busy tunnel keeps its session alive;
//! - an upstream answering 401 to everything triggers one token refresh per
//!   session per `session.refresh_on_401_interval`, not one per request;
//! - roles follow the IdP at refresh, also when a dotted roles claim is gone.
//!
//! Against [`CraftedIdp`] (any refresh token is accepted; each refresh
//! answers with an ID token whose claims the test sets) and local upstreams
//! on port 0. Sessions are stored directly; the gateway runs on a
//! [`ManualClock`], so expiry is a clock move, not a wait.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{
    Router,
    http::StatusCode as AxumStatus,
    routing::{get, post},
};
use futures_util::{SinkExt, StreamExt};
use jsonwebtoken::{Algorithm, Header};
use portcullis::{
    Gateway,
    config::Config,
    session::{MemoryStore, SessionId, SessionRecord, SessionStore, TokenSet, random_token},
    time::ManualClock,
};
use reqwest::{StatusCode, header};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest};

use crate::common::crafted_idp::{CLIENT_ID, CLIENT_SECRET, CraftedIdp, IdTokenForm, SUBJECT, now};

/// Upper bound for anything the gateway must do "promptly"; tests wait on
/// events, never for a fixed time.
const PROMPTLY: Duration = Duration::from_secs(10);
const ADMIN_TOKEN: &str = "admin-token-0123456789";

struct Harness {
    idp: CraftedIdp,
    /// Gateways sharing `store` (replicas); the first is the main one.
    bases: Vec<String>,
    /// The first gateway's admin router (bearer [`ADMIN_TOKEN`]).
    admin: String,
    store: Arc<dyn SessionStore>,
    clock: ManualClock,
    servers: Vec<tokio::task::JoinHandle<()>>,
    http: reqwest::Client,
}

impl Drop for Harness {
    fn drop(&mut self) {
        for s in &self.servers {
            s.abort();
        }
    }
}

/// `/api/strict` always 401, everything else 200.
/// Admin actions `/api/admin/revoked-token` carried out (only one test uses it).
static ADMIN_ACTIONS_DONE: AtomicUsize = AtomicUsize::new(0);

async fn start_upstream() -> SocketAddr {
    let app = Router::new()
        .route("/api/strict", get(|| async { AxumStatus::UNAUTHORIZED }))
        // 401 for a session's first token (`at-` and 11 characters, see
        // `Harness::session`), the action done with one the IdP issued (longer).
        .route(
            "/api/admin/revoked-token",
            post(|h: axum::http::HeaderMap| async move {
                let issued = h
                    .get("authorization")
                    .is_some_and(|v| v.len() > "Bearer at-".len() + 11);
                if !issued {
                    return AxumStatus::UNAUTHORIZED;
                }
                ADMIN_ACTIONS_DONE.fetch_add(1, Ordering::SeqCst);
                AxumStatus::OK
            }),
        )
        .fallback(|| async { "ok" });
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// A WebSocket echo server.
async fn start_ws_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind ws");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

impl Harness {
    /// `replicas` gateways on one memory store and one clock; `extra`
    /// is TOML added to `[server]`, `oidc` to `[oidc]`.
    async fn start(replicas: usize, server: &str, oidc: &str) -> Self {
        let idp = CraftedIdp::start().await;
        let up = start_upstream().await;
        let ws_up = start_ws_upstream().await;
        let store: Arc<dyn SessionStore> = Arc::new(MemoryStore::new());
        let clock = ManualClock::new(now());
        let mut bases = Vec::new();
        let mut servers = Vec::new();
        let mut admin = String::new();
        for _ in 0..replicas {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let base = format!("http://{}", listener.local_addr().expect("addr"));
            let toml = format!(
                r#"
[server]
public_url = "{base}"
profile = "dev"
{server}
[admin]
listen = ""
token = "{ADMIN_TOKEN}"
[oidc]
issuer = "{issuer}"
client_id = "{CLIENT_ID}"
client_secret = "{CLIENT_SECRET}"
{oidc}
[session]
store = "memory"
[[routes]]
prefix = "/api/"
upstream = "http://{up}"
[[routes]]
prefix = "/api/admin/"
upstream = "http://{up}"
require_roles = ["admin"]
[[routes]]
prefix = "/ws/"
upstream = "http://{ws_up}"
[[routes]]
prefix = "/ws/admin/"
upstream = "http://{ws_up}"
require_roles = ["admin"]
"#,
                issuer = idp.issuer,
            );
            let config = Config::from_toml_str(&toml, Vec::<(String, String)>::new())
                .unwrap_or_else(|e| panic!("test config invalid:\n{e}"));
            let gateway = Gateway::builder(config)
                .store(store.clone())
                .clock(Arc::new(clock.clone()))
                .build()
                .await
                .expect("gateway");
            let app = gateway
                .router()
                .into_make_service_with_connect_info::<SocketAddr>();
            servers.push(tokio::spawn(async move {
                let _ = axum::serve(listener, app).await;
            }));
            if admin.is_empty() {
                let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
                admin = format!("http://{}", listener.local_addr().expect("addr"));
                let router = gateway.admin_router();
                servers.push(tokio::spawn(async move {
                    let _ = axum::serve(listener, router).await;
                }));
            }
            bases.push(base);
        }
        Self {
            idp,
            bases,
            admin,
            store,
            clock,
            servers,
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client"),
        }
    }

    /// Store a live session of [`SUBJECT`] with a refresh token and `roles`.
    async fn session(&self, sid: &str, roles: &[&str]) -> (SessionId, SessionRecord) {
        let id = SessionId::generate();
        let now = now();
        let record = SessionRecord {
            id: id.hash(),
            sub: SUBJECT.into(),
            sid: Some(sid.into()),
            claims: Default::default(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            tokens: TokenSet {
                access_token: format!("at-{}", random_token(8)).into(),
                refresh_token: Some(format!("rt-{}", random_token(8)).into()),
                id_token: None,
                access_expires_at: Some(now + 300),
            },
            csrf_token: random_token(32),
            user_agent: Some("test".into()),
            created_at: now,
            last_seen_at: now,
            expires_at: now + 3600,
            idle_expires_at: now + 1800,
            version: 1,
        };
        self.store.save(&record).await.expect("save session");
        (id, record)
    }

    fn cookie(id: &SessionId) -> String {
        format!("portcullis={}", id.as_cookie_value())
    }

    async fn get(&self, path: &str, id: &SessionId) -> StatusCode {
        self.http
            .get(format!("{}{path}", self.bases[0]))
            .header(header::COOKIE, Self::cookie(id))
            .send()
            .await
            .expect("GET")
            .status()
    }

    /// A WebSocket to `/ws/echo` through gateway `replica`, checked to echo.
    async fn websocket(&self, replica: usize, id: &SessionId) -> Ws {
        self.websocket_to(replica, id, "/ws/echo").await
    }

    /// A WebSocket to `path` through gateway `replica`, checked to echo.
    async fn websocket_to(&self, replica: usize, id: &SessionId, path: &str) -> Ws {
        let base = &self.bases[replica];
        let url = base.replacen("http://", "ws://", 1) + path;
        let mut req = url.as_str().into_client_request().expect("request");
        req.headers_mut()
            .insert("cookie", Self::cookie(id).parse().expect("hv"));
        req.headers_mut()
            .insert("origin", base.parse().expect("hv"));
        let (mut ws, resp) = tokio_tungstenite::connect_async(req)
            .await
            .expect("websocket through the gateway");
        assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
        ws.send(Message::text("hello")).await.expect("send");
        let echoed = tokio::time::timeout(PROMPTLY, ws.next())
            .await
            .expect("echo in time")
            .expect("message")
            .expect("ok");
        assert_eq!(echoed.to_text().expect("text"), "hello");
        ws
    }

    /// How many refresh-token grants reached the IdP.
    fn refreshes(&self) -> usize {
        self.idp
            .token_requests()
            .iter()
            .filter(|r| r.form.get("grant_type").map(String::as_str) == Some("refresh_token"))
            .count()
    }

    async fn record(&self, id: &SessionId) -> Option<SessionRecord> {
        self.store.load(&id.hash()).await.expect("load")
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// `text` goes through the tunnel and comes back.
async fn echo(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text)).await.expect("send");
    let echoed = tokio::time::timeout(PROMPTLY, ws.next())
        .await
        .expect("echo in time")
        .expect("message")
        .expect("open");
    assert_eq!(echoed.to_text().expect("text"), text);
}

/// The tunnel is closed: the next read ends (no message, a close or an
/// error) well within [`PROMPTLY`], not after the test's patience.
async fn assert_closes<S>(ws: &mut S, what: &str)
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    let deadline = tokio::time::Instant::now() + PROMPTLY;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => panic!("{what}: the tunnel is still open"),
            Ok(None) | Ok(Some(Err(_))) => return,
            Ok(Some(Ok(m))) if m.is_close() => return,
            Ok(Some(Ok(_))) => {}
        }
    }
}

/// Defaults for the tunnel tests: a check interval long enough that only
/// the in-process notice can close the tunnel promptly.
const SLOW_CHECK: &str = r#"websocket_session_check = "1h""#;

#[tokio::test]
async fn websocket_closes_on_logout() {
    let h = Harness::start(1, SLOW_CHECK, "").await;
    let (id, record) = h.session("sid-1", &[]).await;
    let mut ws = h.websocket(0, &id).await;
    let resp = h
        .http
        .post(format!("{}/auth/logout", h.bases[0]))
        .header(header::COOKIE, Harness::cookie(&id))
        .header("x-xsrf-token", &record.csrf_token)
        .header(header::ORIGIN, &h.bases[0])
        .header(header::ACCEPT, "application/json")
        .send()
        .await
        .expect("logout");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_closes(&mut ws, "after logout").await;
}

#[tokio::test]
async fn websocket_closes_on_backchannel_logout() {
    let h = Harness::start(1, SLOW_CHECK, "").await;
    let (id, _) = h.session("sid-bc", &[]).await;
    let (other, _) = h.session("sid-other", &[]).await;
    let mut ws = h.websocket(0, &id).await;
    let mut kept = h.websocket(0, &other).await;
    let mut signer = None;
    h.idp.configure(|b| signer = Some(b.signer.clone()));
    let signer = signer.expect("signer");
    let mut head = Header::new(Algorithm::ES256);
    head.kid = Some(signer.kid.clone());
    head.typ = Some("logout+jwt".into());
    let token = signer.sign_with_header(
        head,
        &json!({
            "iss": h.idp.issuer, "aud": CLIENT_ID, "iat": now(), "exp": now() + 120,
            "jti": random_token(12), "sid": "sid-bc", "sub": SUBJECT,
            "events": {"http://schemas.openid.net/event/backchannel-logout": {}},
        }),
    );
    let resp = h
        .http
        .post(format!("{}/auth/backchannel-logout", h.bases[0]))
        .form(&[("logout_token", token)])
        .send()
        .await
        .expect("backchannel");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_closes(&mut ws, "after back-channel logout").await;
    // The other session of the same user (another sid) keeps its tunnel.
    kept.send(Message::text("still")).await.expect("send");
    let echoed = tokio::time::timeout(PROMPTLY, kept.next())
        .await
        .expect("echo")
        .expect("message")
        .expect("ok");
    assert_eq!(echoed.to_text().expect("text"), "still");
}

#[tokio::test]
async fn websocket_closes_on_admin_revoke() {
    let h = Harness::start(1, SLOW_CHECK, "").await;
    let (one, _) = h.session("sid-one", &[]).await;
    let (all, _) = h.session("sid-all", &[]).await;
    let mut ws_one = h.websocket(0, &one).await;
    let mut ws_all = h.websocket(0, &all).await;
    let resp = h
        .http
        .delete(format!(
            "{}/admin/sessions/{}",
            h.admin,
            one.hash().as_str()
        ))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("admin delete one");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_closes(&mut ws_one, "after admin revoke of the session").await;
    let resp = h
        .http
        .delete(format!("{}/admin/sessions?sub={SUBJECT}", h.admin))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("admin delete by sub");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_closes(&mut ws_all, "after admin revoke of the subject").await;
}

#[tokio::test]
async fn websocket_closes_when_session_expires() {
    let h = Harness::start(1, r#"websocket_session_check = "100ms""#, "").await;
    let (id, record) = h.session("sid-exp", &[]).await;
    let mut ws = h.websocket(0, &id).await;
    // Past the idle expiry (nothing touched the session since).
    h.clock.set(record.idle_expires_at + 1);
    assert_closes(&mut ws, "after idle expiry").await;

    // And past the absolute expiry, however active the session was.
    h.clock.set(now());
    let (id, record) = h.session("sid-abs", &[]).await;
    let mut ws = h.websocket(0, &id).await;
    h.clock.set(record.expires_at);
    assert_closes(&mut ws, "after absolute expiry").await;
}

/// An end the other replica never hears about in-process (a logout, admin
/// revoke, back-channel logout there): the store check catches it.
#[tokio::test]
async fn websocket_closes_when_session_ends_on_another_replica() {
    let h = Harness::start(2, r#"websocket_session_check = "100ms""#, "").await;
    let (id, record) = h.session("sid-r", &[]).await;
    let mut ws = h.websocket(1, &id).await;
    let resp = h
        .http
        .post(format!("{}/auth/logout", h.bases[0]))
        .header(header::COOKIE, Harness::cookie(&id))
        .header("x-xsrf-token", &record.csrf_token)
        .header(header::ORIGIN, &h.bases[0])
        .header(header::ACCEPT, "application/json")
        .send()
        .await
        .expect("logout");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_closes(&mut ws, "after logout on the other replica").await;
}

#[tokio::test]
async fn websocket_closes_after_idle_timeout() {
    let h = Harness::start(1, r#"websocket_idle_timeout = "300ms""#, "").await;
    let (id, _) = h.session("sid-idle", &[]).await;
    let mut ws = h.websocket(0, &id).await;
    let opened = std::time::Instant::now();
    assert_closes(&mut ws, "after the idle timeout").await;
    assert!(opened.elapsed() >= Duration::from_millis(300));
    // The session itself lives on.
    assert!(h.record(&id).await.is_some());
}

/// The default idle timeout is long: an echo still works after several
/// exchanges (traffic counts as activity in both directions).
#[tokio::test]
async fn websocket_with_traffic_stays_open() {
    let h = Harness::start(1, r#"websocket_idle_timeout = "2s""#, "").await;
    let (id, _) = h.session("sid-busy", &[]).await;
    let mut ws = h.websocket(0, &id).await;
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        ws.send(Message::text("ping")).await.expect("send");
        let echoed = tokio::time::timeout(PROMPTLY, ws.next())
            .await
            .expect("echo")
            .expect("message")
            .expect("open");
        assert_eq!(echoed.to_text().expect("text"), "ping");
        // Pace the traffic without a fixed sleep: wait on the tunnel itself.
        let _ = tokio::time::timeout(Duration::from_millis(200), ws.next()).await;
    }
}

/// A refresh (on this or another replica) brought fewer roles: the store
/// check sees the change and a tunnel on a `require_roles` route closes;
/// one on a route without the rule stays.
#[tokio::test]
async fn websocket_closes_when_role_is_removed() {
    let h = Harness::start(1, r#"websocket_session_check = "100ms""#, "").await;
    let (id, record) = h.session("sid-role", &["admin", "hr"]).await;
    let mut admin = h.websocket_to(0, &id, "/ws/admin/echo").await;
    let mut open = h.websocket(0, &id).await;
    // As a refresh saves it: the IdP no longer grants `admin`.
    let mut fewer = record.clone();
    fewer.roles = vec!["hr".into()];
    fewer.version += 1;
    h.store.save(&fewer).await.expect("save");
    assert_closes(&mut admin, "after the route's role was removed").await;
    // The session itself and its other tunnel live on.
    for _ in 0..3 {
        echo(&mut open, "still").await;
    }
    assert!(h.record(&id).await.is_some());
}

/// A user who only uses the WebSocket sends no HTTP request that would
/// touch the session: the tunnel's traffic must, or the session idles out
/// under a busy tunnel (and the tunnel with it).
#[tokio::test]
async fn busy_websocket_keeps_its_session_alive() {
    let h = Harness::start(1, r#"websocket_session_check = "100ms""#, "").await;
    let (id, record) = h.session("sid-busy-ws", &[]).await;
    let mut ws = h.websocket(0, &id).await;
    // Twenty minutes of WebSocket traffic later (idle timeout 30 min).
    let later = record.last_seen_at + 1200;
    h.clock.set(later);
    let deadline = tokio::time::Instant::now() + PROMPTLY;
    loop {
        echo(&mut ws, "busy").await;
        if h.record(&id).await.expect("session").last_seen_at == later {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the busy tunnel never touched its session"
        );
    }
    // Past the idle expiry the session had when the tunnel opened: the
    // session and its tunnel live on across several checks.
    let past = record.idle_expires_at + 1;
    h.clock.set(past);
    for _ in 0..3 {
        echo(&mut ws, "still").await;
        // Pace without a fixed sleep: wait on the tunnel itself.
        let _ = tokio::time::timeout(Duration::from_millis(200), ws.next()).await;
    }
    let stored = h.record(&id).await.expect("session");
    assert!(!stored.is_expired(past), "{stored:?}");
}

#[tokio::test]
async fn upstream_401_storm_triggers_one_refresh_per_interval() {
    let h = Harness::start(1, "", "").await;
    let (id, _) = h.session("sid-401", &[]).await;
    for _ in 0..20 {
        assert_eq!(h.get("/api/strict", &id).await, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(h.refreshes(), 1, "one IdP refresh for 20 upstream 401s");
    // Unrelated requests are unaffected.
    assert_eq!(h.get("/api/ok", &id).await, StatusCode::OK);
    // Once the interval (default 30 s) has passed: one more.
    h.clock.advance(31);
    for _ in 0..5 {
        assert_eq!(h.get("/api/strict", &id).await, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(h.refreshes(), 2);
    assert!(h.record(&id).await.is_some(), "the session lives on");
}

/// The access token is inside the refresh window: the next proxied request
/// refreshes it, and the refreshed ID token says what the roles are now.
async fn refresh_with_claims(h: &Harness, realm_access: Value) -> (SessionId, StatusCode) {
    let (id, record) = h.session(&random_token(6), &["admin"]).await;
    assert_eq!(h.get("/api/admin/x", &id).await, StatusCode::OK);
    h.idp
        .configure(|b| b.set_claim("realm_access", realm_access));
    let before = h.refreshes();
    h.clock
        .set(record.tokens.access_expires_at.expect("exp") - 30);
    let status = h.get("/api/admin/x", &id).await;
    assert_eq!(h.refreshes(), before + 1, "refreshed");
    h.clock.set(now());
    (id, status)
}

#[tokio::test]
async fn role_removed_at_idp_is_dropped_at_refresh_with_dotted_claim() {
    let h = Harness::start(1, "", r#"roles_claim = "realm_access.roles""#).await;
    // The IdP still grants it: kept.
    let (id, status) = refresh_with_claims(&h, json!({"roles": ["admin", "hr"]})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(h.record(&id).await.expect("session").roles, ["admin", "hr"]);
    // Last role removed, the IdP leaves the object empty: no roles.
    let (id, status) = refresh_with_claims(&h, json!({})).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(h.record(&id).await.expect("session").roles.is_empty());
    // Or sends an empty list: no roles.
    let (id, status) = refresh_with_claims(&h, json!({"roles": []})).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(h.record(&id).await.expect("session").roles.is_empty());
}

/// Attack: a role removed at the IdP, a request on a `require_roles` route
/// whose token the upstream refuses (revoked, or an IdP that sends no
/// `expires_in`, so every refresh starts from a 401). The refresh drops the
/// role; the retry must be checked against the new roles, not the old.
#[tokio::test]
async fn role_removed_at_a_401_refresh_is_checked_before_the_retry() {
    let h = Harness::start(1, "", r#"roles_claim = "realm_access.roles""#).await;
    let (id, record) = h.session(&random_token(6), &["admin"]).await;
    h.idp
        .configure(|b| b.set_claim("realm_access", json!({"roles": ["user"]})));
    let before = ADMIN_ACTIONS_DONE.load(Ordering::SeqCst);
    let resp = h
        .http
        .post(format!("{}/api/admin/revoked-token", h.bases[0]))
        .header(header::COOKIE, Harness::cookie(&id))
        .header("x-xsrf-token", &record.csrf_token)
        .send()
        .await
        .expect("POST");
    assert_eq!(h.refreshes(), 1, "the 401 refreshed the session");
    let after = h.record(&id).await.expect("session kept");
    assert_eq!(after.roles, ["user"], "the refresh dropped admin");
    assert_eq!(
        ADMIN_ACTIONS_DONE.load(Ordering::SeqCst),
        before,
        "the admin action ran with the refreshed token of a session without admin"
    );
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
}

/// No new ID token in the refresh response: no new statement from the IdP,
/// so the roles stay as they were.
#[tokio::test]
async fn refresh_without_id_token_keeps_roles() {
    let h = Harness::start(1, "", r#"roles_claim = "realm_access.roles""#).await;
    h.idp.configure(|b| b.id_token = IdTokenForm::Omitted);
    let (id, status) = refresh_with_claims(&h, json!({})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(h.record(&id).await.expect("session").roles, ["admin"]);
}
