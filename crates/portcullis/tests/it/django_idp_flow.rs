//! The main flows against a second real OpenID Provider, django-oauth-toolkit
//! (`common::django_idp`), on the production serving path: login (code +
//! PKCE, `client_secret_basic`), `/auth/me` with the `roles` claim, a proxied
//! call whose bearer token the upstream checks at DOT's userinfo endpoint, a
//! `require_roles` rule, refresh with rotation (and a replayed rotated token)
//! and RP-initiated logout at DOT's end-session endpoint.
//!
//! The gateway runs on a [`ManualClock`]: a refresh is a clock move past the
//! access token's expiry, not a wait. DOT's own clock is real, and its ID
//! tokens live an hour, longer than any move here.

use portcullis::session::SessionRecords;
use std::{net::SocketAddr, sync::Arc};

use crate::common::browser::{Browser, Landed};
use crate::common::django_idp::{CLIENT_ID, CLIENT_SECRET, DjangoIdp, DotOptions, SCOPES};
use axum::{
    Json, Router,
    extract::State,
    http::{HeaderMap, StatusCode as AxumStatus},
    routing::get,
};
use portcullis::{
    session::{MemoryStore, SessionRecord},
    time::{Clock, ManualClock},
};
use reqwest::{Method, StatusCode, header};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use url::Url;

/// An upstream API that accepts a request only if its bearer token is a
/// live access token at DOT (checked at the userinfo endpoint, as a
/// resource server without JWT access tokens would), and answers what it saw.
async fn start_upstream(userinfo: String) -> SocketAddr {
    async fn whoami(
        State(userinfo): State<String>,
        headers: HeaderMap,
    ) -> (AxumStatus, Json<Value>) {
        let authorization = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let Some(token) = authorization.strip_prefix("Bearer ") else {
            return (
                AxumStatus::UNAUTHORIZED,
                Json(json!({"error": "no bearer"})),
            );
        };
        let Ok(resp) = reqwest::Client::new()
            .get(&userinfo)
            .bearer_auth(token)
            .send()
            .await
        else {
            return (AxumStatus::BAD_GATEWAY, Json(json!({"error": "idp"})));
        };
        if !resp.status().is_success() {
            return (AxumStatus::UNAUTHORIZED, Json(json!({"error": "token"})));
        }
        let claims: Value = resp.json().await.unwrap_or(Value::Null);
        let cookie = headers.get("cookie").and_then(|v| v.to_str().ok());
        (
            AxumStatus::OK,
            Json(json!({"authorization": authorization, "userinfo": claims, "cookie": cookie})),
        )
    }
    let app = Router::new()
        .route("/api/whoami", get(whoami))
        .route("/api/admin/whoami", get(whoami))
        .with_state(userinfo);
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind upstream");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

struct Setup {
    base: String,
    idp: DjangoIdp,
    store: Arc<MemoryStore>,
    clock: ManualClock,
}

async fn setup() -> Setup {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind gateway");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let idp = DjangoIdp::start(DotOptions {
        redirect_uris: vec![format!("{base}/auth/callback")],
        post_logout_redirect_uris: vec![format!("{base}/")],
        access_token_seconds: 300,
        ..Default::default()
    })
    .await;
    let upstream = start_upstream(format!("{}/userinfo/", idp.issuer)).await;
    let scopes = SCOPES.map(|s| format!("{s:?}")).join(", ");
    let toml = format!(
        r#"
[server]
public_url = "{base}"
profile = "dev"
[oidc]
issuer = "{issuer}"
client_id = "{CLIENT_ID}"
client_secret = "{CLIENT_SECRET}"
token_endpoint_auth_method = "client_secret_basic"
scopes = [{scopes}]
roles_claim = "roles"
[session]
store = "memory"
refresh_before = "60s"
[[routes]]
prefix = "/api/"
upstream = "http://{upstream}"
[[routes]]
prefix = "/api/admin/"
upstream = "http://{upstream}"
require_roles = ["admin"]
"#,
        issuer = idp.issuer
    );
    let store = Arc::new(MemoryStore::new());
    let clock = ManualClock::new(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("time")
            .as_secs() as i64,
    );
    crate::common::gateway::serve_with_clock(
        listener,
        &toml,
        store.clone(),
        Some(Arc::new(clock.clone())),
    )
    .await;
    Setup {
        base,
        idp,
        store,
        clock,
    }
}

impl Setup {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Logs `user` in through Django's login form; returns the browser, landed on `/app`.
    async fn login(&self, user: &str) -> Browser {
        let mut browser = Browser::new();
        let base = self.base.clone();
        let landed = self
            .idp
            .login(
                &mut browser,
                &self.url("/auth/login?return_to=/app"),
                user,
                user,
                move |u: &Url| u.as_str().starts_with(&base) && !u.path().starts_with("/auth/"),
            )
            .await;
        match landed {
            Landed::Stopped(url) => assert_eq!(url.path(), "/app"),
            Landed::Page(p) => panic!("login ended on a page {} {}: {}", p.status, p.url, p.body),
        }
        browser
    }

    /// The one gateway session of `user`.
    async fn session_of(&self, user: &str) -> SessionRecord {
        let mut sessions = self
            .store
            .list_by_sub(self.idp.sub(user))
            .await
            .expect("list");
        assert_eq!(sessions.len(), 1, "sessions of {user}");
        sessions.remove(0)
    }

    /// Moves the gateway's clock past the session's access-token expiry.
    async fn expire_access_token(&self, user: &str) {
        let exp = self
            .session_of(user)
            .await
            .tokens
            .access_expires_at
            .expect("DOT sends expires_in");
        self.clock.set(exp + 5);
    }
}

async fn get_json(browser: &mut Browser, url: &str) -> (StatusCode, Value) {
    let resp = browser.request(Method::GET, url, None).await;
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn login_me_proxy_and_roles_against_django_oauth_toolkit() {
    let s = setup().await;
    let discovery = s.idp.discovery().await;
    assert_eq!(discovery["issuer"], json!(s.idp.issuer));

    // The authorize request: code flow, PKCE S256, our scopes.
    let mut browser = Browser::new();
    let resp = browser
        .request(Method::GET, &s.url("/auth/login"), None)
        .await;
    assert_eq!(resp.status(), StatusCode::FOUND);
    let authorize = Url::parse(resp.headers()[header::LOCATION].to_str().expect("location"))
        .expect("authorize url");
    assert!(
        authorize
            .as_str()
            .starts_with(&format!("{}/authorize/", s.idp.issuer))
    );
    let q: std::collections::HashMap<_, _> = authorize.query_pairs().into_owned().collect();
    assert_eq!(q["response_type"], "code");
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["scope"], SCOPES.join(" "));

    let mut alice = s.login("alice").await;
    let (status, me) = get_json(&mut alice, &s.url("/auth/me")).await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me["authenticated"], true);
    assert_eq!(me["user"]["sub"], s.idp.sub("alice"));
    assert_eq!(me["roles"], json!(["admin", "hr"]));
    let session = s.session_of("alice").await;
    assert!(
        session.tokens.refresh_token.is_some(),
        "DOT sent a refresh token"
    );

    // The upstream gets alice's access token, and DOT accepts it.
    let (status, seen) = get_json(&mut alice, &s.url("/api/whoami")).await;
    assert_eq!(status, StatusCode::OK, "{seen}");
    let bearer = format!("Bearer {}", session.tokens.access_token.as_str());
    assert_eq!(seen["authorization"], json!(bearer));
    assert_eq!(seen["userinfo"]["sub"], s.idp.sub("alice"));
    assert_eq!(seen["userinfo"]["roles"], json!(["admin", "hr"]));
    let cookie = seen["cookie"].as_str().unwrap_or("");
    assert!(
        !cookie.contains("portcullis") && !cookie.contains("XSRF-TOKEN"),
        "{cookie}"
    );

    // The role rule: alice (admin) passes, carol (no roles) does not.
    let (status, seen) = get_json(&mut alice, &s.url("/api/admin/whoami")).await;
    assert_eq!(status, StatusCode::OK, "{seen}");
    let mut carol = s.login("carol").await;
    let (status, me) = get_json(&mut carol, &s.url("/auth/me")).await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me["roles"], json!([]));
    let (status, _) = get_json(&mut carol, &s.url("/api/admin/whoami")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, seen) = get_json(&mut carol, &s.url("/api/whoami")).await;
    assert_eq!(status, StatusCode::OK, "{seen}");
    assert_eq!(seen["userinfo"]["sub"], s.idp.sub("carol"));
}

/// An expired access token is refreshed at DOT, which rotates the refresh
/// token: the old access and refresh tokens are dead there, the new ones work.
#[tokio::test]
async fn refresh_rotates_tokens_at_django_oauth_toolkit() {
    let s = setup().await;
    let mut alice = s.login("alice").await;
    let before = s.session_of("alice").await;

    s.expire_access_token("alice").await;
    let (status, seen) = get_json(&mut alice, &s.url("/api/whoami")).await;
    assert_eq!(status, StatusCode::OK, "{seen}");
    let after = s.session_of("alice").await;
    assert_ne!(after.tokens.access_token, before.tokens.access_token);
    assert_ne!(after.tokens.refresh_token, before.tokens.refresh_token);
    assert!(after.tokens.access_expires_at.expect("exp") > s.clock.now());
    let bearer = format!("Bearer {}", after.tokens.access_token.as_str());
    assert_eq!(seen["authorization"], json!(bearer));
    assert_eq!(after.roles, vec!["admin".to_owned(), "hr".to_owned()]);

    let (status, _) = s.idp.userinfo(before.tokens.access_token.as_str()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "old access token revoked");
    let (status, me) = get_json(&mut alice, &s.url("/auth/me")).await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me["roles"], json!(["admin", "hr"]));
}

/// A refresh token stolen before a rotation is replayed at DOT: DOT refuses
/// it and revokes the whole token family (REFRESH_TOKEN_REUSE_PROTECTION),
/// so the gateway's next refresh is refused and the session ends.
#[tokio::test]
async fn replayed_rotated_refresh_token_ends_the_session() {
    let s = setup().await;
    let mut alice = s.login("alice").await;
    let stolen = s
        .session_of("alice")
        .await
        .tokens
        .refresh_token
        .expect("refresh token");
    s.expire_access_token("alice").await;
    let (status, _) = get_json(&mut alice, &s.url("/api/whoami")).await;
    assert_eq!(status, StatusCode::OK);

    let (status, answer) = s
        .idp
        .token_request(&[("grant_type", "refresh_token"), ("refresh_token", &stolen)])
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert_eq!(answer["error"], "invalid_grant");

    s.expire_access_token("alice").await;
    let (status, body) = get_json(&mut alice, &s.url("/api/whoami")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(
        s.store
            .list_by_sub(s.idp.sub("alice"))
            .await
            .expect("list")
            .is_empty(),
        "session ended"
    );
}

/// Logout: the gateway ends its session and sends the browser to DOT's
/// end-session endpoint, which ends the Django session, deletes the user's
/// tokens and returns to the post-logout redirect URI with the state.
#[tokio::test]
async fn rp_initiated_logout_at_django_oauth_toolkit() {
    let s = setup().await;
    let mut alice = s.login("alice").await;
    let session = s.session_of("alice").await;

    let xsrf = alice.cookie(&s.base, "XSRF-TOKEN").expect("XSRF-TOKEN");
    let mut headers = HeaderMap::new();
    headers.insert(header::ACCEPT, "application/json".parse().expect("hv"));
    headers.insert("x-xsrf-token", xsrf.parse().expect("hv"));
    let resp = alice
        .request_with(Method::POST, &s.url("/auth/logout"), headers, None)
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.expect("json");
    let logout_url = body["logout_url"].as_str().expect("logout_url").to_owned();
    assert!(logout_url.starts_with(&format!("{}/logout/", s.idp.issuer)));
    let q: std::collections::HashMap<_, _> = Url::parse(&logout_url)
        .expect("url")
        .query_pairs()
        .into_owned()
        .collect();
    assert!(q.contains_key("id_token_hint"));
    assert_eq!(q["post_logout_redirect_uri"], s.url("/"));
    let (status, _) = get_json(&mut alice, &s.url("/auth/me")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let base = s.base.clone();
    let back = alice
        .navigate_until(&logout_url, &move |u: &Url| u.as_str().starts_with(&base))
        .await
        .stopped();
    assert_eq!(back.path(), "/");
    let back_q: std::collections::HashMap<_, _> = back.query_pairs().into_owned().collect();
    assert_eq!(back_q.get("state"), q.get("state"));

    // DOT deleted alice's tokens and ended its own session: a new login asks again.
    let (status, _) = s.idp.userinfo(session.tokens.access_token.as_str()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let refresh = session.tokens.refresh_token.expect("refresh token");
    let (status, answer) = s
        .idp
        .token_request(&[("grant_type", "refresh_token"), ("refresh_token", &refresh)])
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    let page = alice.navigate(&s.url("/auth/login")).await;
    assert!(
        page.url
            .as_str()
            .starts_with(&s.idp.url("/accounts/login/")),
        "{}",
        page.url
    );
}
