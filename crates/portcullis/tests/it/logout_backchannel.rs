//! Back-Channel Logout 1.0 (docs/security.md section 8) and Front-Channel
//! Logout against [`CraftedIdp`], which signs whatever logout token the test
//! builds with the key it publishes. Every invalid token must get 400
//! `invalid_request` and end no session; a valid one ends exactly the
//! sessions it names.

use std::sync::Arc;

use jsonwebtoken::{Algorithm, Header};
use portcullis::session::{
    MemoryStore, SessionId, SessionRecord, SessionStore, SqliteStore, TokenSet, random_token,
};
use reqwest::{Client, StatusCode, header};
use serde_json::{Value, json};

use crate::common::crafted_idp::{
    CLIENT_ID, CLIENT_SECRET, CraftedIdp, EcKey, hmac_jwt, now, unsigned_jwt,
};

const EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

struct Harness {
    idp: CraftedIdp,
    signer: EcKey,
    base: String,
    store: Arc<dyn SessionStore>,
    server: tokio::task::JoinHandle<()>,
    http: Client,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Harness {
    async fn start(extra_oidc: &str, store: Arc<dyn SessionStore>) -> Self {
        let idp = CraftedIdp::start().await;
        let mut signer = None;
        idp.configure(|b| signer = Some(b.signer.clone()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the gateway");
        let base = format!("http://{}", listener.local_addr().expect("address"));
        let toml = format!(
            r#"
[server]
public_url = "{base}"
profile = "dev"
[admin]
listen = ""
[oidc]
issuer = "{issuer}"
client_id = "{CLIENT_ID}"
client_secret = "{CLIENT_SECRET}"
{extra_oidc}
[session]
store = "memory"
"#,
            issuer = idp.issuer,
        );
        let (_, server) = crate::common::gateway::serve(listener, &toml, store.clone()).await;
        Self {
            idp,
            signer: signer.expect("signer"),
            base,
            store,
            server,
            http: Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client"),
        }
    }

    async fn with_memory() -> Self {
        Self::start("", Arc::new(MemoryStore::new())).await
    }

    /// Claims of a valid logout token for `sub` / `sid` (either may be absent).
    fn claims(&self, sub: Option<&str>, sid: Option<&str>) -> Value {
        let mut c = json!({
            "iss": self.idp.issuer,
            "aud": CLIENT_ID,
            "iat": now(),
            "exp": now() + 120,
            "jti": random_token(16),
            "events": { EVENT: {} },
        });
        if let Some(sub) = sub {
            c["sub"] = json!(sub);
        }
        if let Some(sid) = sid {
            c["sid"] = json!(sid);
        }
        c
    }

    /// Signed by the IdP's published key, typed `logout+jwt`.
    fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.signer.kid.clone());
        header.typ = Some("logout+jwt".into());
        self.signer.sign_with_header(header, claims)
    }

    async fn post_form(&self, form: &[(&str, &str)]) -> reqwest::Response {
        self.http
            .post(format!("{}/auth/backchannel-logout", self.base))
            .form(form)
            .send()
            .await
            .expect("POST /auth/backchannel-logout")
    }

    async fn post_token(&self, token: &str) -> reqwest::Response {
        self.post_form(&[("logout_token", token)]).await
    }

    /// Store a live session for `sub`/`sid`; returns its cookie id.
    async fn session(&self, sub: &str, sid: Option<&str>) -> SessionId {
        let id = SessionId::generate();
        let now = now();
        let record = SessionRecord {
            id: id.hash(),
            sub: sub.into(),
            sid: sid.map(str::to_string),
            claims: Default::default(),
            roles: Vec::new(),
            tokens: TokenSet {
                access_token: format!("at-{}", random_token(8)).into(),
                refresh_token: None,
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
        id
    }

    async fn exists(&self, id: &SessionId) -> bool {
        self.store.load(&id.hash()).await.expect("load").is_some()
    }

    /// `/auth/me` with `id` as the session cookie.
    async fn me_status(&self, id: &SessionId) -> StatusCode {
        self.http
            .get(format!("{}/auth/me", self.base))
            .header(
                header::COOKIE,
                format!("portcullis={}", id.as_cookie_value()),
            )
            .send()
            .await
            .expect("GET /auth/me")
            .status()
    }
}

async fn assert_invalid(resp: reqwest::Response, what: &str) {
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{what}");
    assert_eq!(
        resp.headers()
            .get(header::CACHE_CONTROL)
            .map(|v| v.to_str().unwrap_or("")),
        Some("no-store"),
        "{what}"
    );
    let body: Value = resp.json().await.expect("JSON error body");
    assert_eq!(body["error"], "invalid_request", "{what}: {body}");
}

#[tokio::test]
async fn valid_token_with_sid_ends_exactly_that_idp_session() {
    let h = Harness::with_memory().await;
    let a1 = h.session("alice", Some("sid-a1")).await;
    let a2 = h.session("alice", Some("sid-a2")).await;
    let b = h.session("bob", Some("sid-b")).await;
    assert_eq!(h.me_status(&a1).await, StatusCode::OK);

    // No CSRF header, no cookie, no Origin: the IdP calls server to server.
    let resp = h
        .post_token(&h.sign(&h.claims(Some("alice"), Some("sid-a1"))))
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()[header::CACHE_CONTROL], "no-store");

    assert!(!h.exists(&a1).await);
    assert_eq!(h.me_status(&a1).await, StatusCode::UNAUTHORIZED);
    assert!(h.exists(&a2).await, "alice's other IdP session stays");
    assert!(h.exists(&b).await, "bob's session stays");
}

#[tokio::test]
async fn sid_of_another_subject_is_not_crossed() {
    let h = Harness::with_memory().await;
    let b = h.session("bob", Some("shared-sid")).await;
    let resp = h
        .post_token(&h.sign(&h.claims(Some("alice"), Some("shared-sid"))))
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(h.exists(&b).await);
}

#[tokio::test]
async fn sid_only_and_sub_only_tokens() {
    let h = Harness::with_memory().await;
    let a1 = h.session("alice", Some("sid-a1")).await;
    let a2 = h.session("alice", Some("sid-a2")).await;
    let a3 = h.session("alice", None).await;
    let b = h.session("bob", Some("sid-b")).await;

    let resp = h.post_token(&h.sign(&h.claims(None, Some("sid-a1")))).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(!h.exists(&a1).await);
    assert!(h.exists(&a2).await && h.exists(&a3).await && h.exists(&b).await);

    // Only `sub`: every session of the subject ends.
    let resp = h.post_token(&h.sign(&h.claims(Some("alice"), None))).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(!h.exists(&a2).await && !h.exists(&a3).await);
    assert!(h.exists(&b).await);
}

#[tokio::test]
async fn all_sessions_option_ends_every_session_of_the_subject() {
    let h = Harness::start(
        "backchannel_all_sessions = true",
        Arc::new(MemoryStore::new()),
    )
    .await;
    let a1 = h.session("alice", Some("sid-a1")).await;
    let a2 = h.session("alice", Some("sid-a2")).await;
    let b = h.session("bob", Some("sid-b")).await;
    let resp = h
        .post_token(&h.sign(&h.claims(Some("alice"), Some("sid-a1"))))
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(!h.exists(&a1).await && !h.exists(&a2).await);
    assert!(h.exists(&b).await);
}

#[tokio::test]
async fn generic_jwt_typ_is_accepted() {
    let h = Harness::with_memory().await;
    let a = h.session("alice", Some("sid-a")).await;
    // EcKey::sign uses the default header, `typ: JWT` (what Keycloak sends).
    let token = h
        .signer
        .sign(Some("k1"), &h.claims(Some("alice"), Some("sid-a")));
    assert_eq!(h.post_token(&token).await.status(), StatusCode::OK);
    assert!(!h.exists(&a).await);
}

#[tokio::test]
async fn every_invalid_token_is_refused_and_ends_nothing() {
    let h = Harness::with_memory().await;
    let a = h.session("alice", Some("sid-a")).await;
    let b = h.session("bob", Some("sid-b")).await;
    let valid = h.claims(Some("alice"), Some("sid-a"));
    let with = |edit: &dyn Fn(&mut Value)| {
        let mut c = valid.clone();
        c["jti"] = json!(random_token(16));
        edit(&mut c);
        c
    };
    let other_key = EcKey::generate("k1");

    let cases: Vec<(&str, String)> = vec![
        (
            "missing events",
            h.sign(&with(&|c| {
                c.as_object_mut().map(|o| o.remove("events"));
            })),
        ),
        (
            "wrong event",
            h.sign(&with(&|c| {
                c["events"] = json!({"http://schemas.openid.net/event/other": {}})
            })),
        ),
        (
            "event member not an object",
            h.sign(&with(&|c| c["events"] = json!({ EVENT: "yes" }))),
        ),
        (
            "contains nonce",
            h.sign(&with(&|c| c["nonce"] = json!("n-1"))),
        ),
        (
            "wrong aud",
            h.sign(&with(&|c| c["aud"] = json!("someone-else"))),
        ),
        (
            "wrong iss",
            h.sign(&with(&|c| c["iss"] = json!("https://evil.example"))),
        ),
        ("alg none", unsigned_jwt("k1", &with(&|_| {}))),
        (
            "HS256 with the public key as secret",
            hmac_jwt("k1", h.signer.public_point(), &with(&|_| {})),
        ),
        (
            "signed by an unpublished key",
            other_key.sign(Some("k1"), &with(&|_| {})),
        ),
        (
            "expired iat",
            h.sign(&with(&|c| {
                c["iat"] = json!(now() - 3600);
                c.as_object_mut().map(|o| o.remove("exp"));
            })),
        ),
        (
            "iat in the future",
            h.sign(&with(&|c| c["iat"] = json!(now() + 3600))),
        ),
        (
            "expired exp",
            h.sign(&with(&|c| c["exp"] = json!(now() - 600))),
        ),
        (
            "missing iat",
            h.sign(&with(&|c| {
                c.as_object_mut().map(|o| o.remove("iat"));
            })),
        ),
        (
            "neither sid nor sub",
            h.sign(&with(&|c| {
                let o = c.as_object_mut().expect("object");
                o.remove("sid");
                o.remove("sub");
            })),
        ),
        (
            "missing jti",
            h.sign(&with(&|c| {
                c.as_object_mut().map(|o| o.remove("jti"));
            })),
        ),
        ("wrong typ", {
            let mut header = Header::new(Algorithm::ES256);
            header.kid = Some("k1".into());
            header.typ = Some("at+jwt".into());
            h.signer.sign_with_header(header, &with(&|_| {}))
        }),
        ("garbage", "not.a.jwt".to_string()),
    ];
    for (what, token) in &cases {
        assert_invalid(h.post_token(token).await, what).await;
        assert!(
            h.exists(&a).await && h.exists(&b).await,
            "{what} ended a session"
        );
    }
    assert_invalid(
        h.post_form(&[("token", "x")]).await,
        "no logout_token field",
    )
    .await;
    assert!(h.exists(&a).await && h.exists(&b).await);

    // GET is not the protocol.
    let resp = h
        .http
        .get(format!("{}/auth/backchannel-logout", h.base))
        .send()
        .await
        .expect("GET");
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
}

async fn replay_is_refused(h: Harness) {
    let claims = h.claims(Some("alice"), Some("sid-a"));
    let token = h.sign(&claims);
    let first = h.session("alice", Some("sid-a")).await;
    assert_eq!(h.post_token(&token).await.status(), StatusCode::OK);
    assert!(!h.exists(&first).await);

    // The user logs in again in the same IdP session; the replayed token must not end it.
    let again = h.session("alice", Some("sid-a")).await;
    assert_invalid(h.post_token(&token).await, "replayed jti").await;
    assert!(h.exists(&again).await);
}

#[tokio::test]
async fn replayed_jti_is_refused_memory_store() {
    replay_is_refused(Harness::with_memory().await).await;
}

#[tokio::test]
async fn replayed_jti_is_refused_sqlite_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("s.db").display());
    let store = SqliteStore::connect(&url).await.expect("sqlite store");
    replay_is_refused(Harness::start("", Arc::new(store)).await).await;
}

#[tokio::test]
async fn replay_is_refused_by_another_replica_sharing_the_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("s.db").display());
    let shared: Arc<dyn SessionStore> =
        Arc::new(SqliteStore::connect(&url).await.expect("sqlite store"));
    let one = Harness::start("", shared.clone()).await;
    let claims = one.claims(Some("alice"), Some("sid-a"));
    let token = one.sign(&claims);
    assert_eq!(one.post_token(&token).await.status(), StatusCode::OK);
    // A second process on the same database: another in-memory jti cache, same table.
    let other: Arc<dyn SessionStore> =
        Arc::new(SqliteStore::connect(&url).await.expect("sqlite store"));
    let seen = other
        .remember_jti(claims["jti"].as_str().expect("jti"), now() + 300, now())
        .await
        .expect("remember_jti");
    assert!(!seen, "the second replica must see the jti as used");
}

/// `GET /auth/frontchannel-logout?iss=&sid=` with `id`'s cookie (if any).
async fn frontchannel(
    h: &Harness,
    iss: Option<&str>,
    sid: Option<&str>,
    cookie: Option<&SessionId>,
) -> reqwest::Response {
    let mut u = url::Url::parse(&format!("{}/auth/frontchannel-logout", h.base)).expect("url");
    if let Some(iss) = iss {
        u.query_pairs_mut().append_pair("iss", iss);
    }
    if let Some(sid) = sid {
        u.query_pairs_mut().append_pair("sid", sid);
    }
    let mut req = h.http.get(u);
    if let Some(id) = cookie {
        req = req.header(
            header::COOKIE,
            format!("portcullis={}", id.as_cookie_value()),
        );
    }
    req.send().await.expect("GET /auth/frontchannel-logout")
}

/// An anonymous cross-site GET must not be a logout switch unless the
/// operator asked for front-channel logout.
#[tokio::test]
async fn frontchannel_logout_is_off_by_default() {
    let h = Harness::with_memory().await;
    let a = h.session("alice", Some("sid-a")).await;
    let resp = frontchannel(&h, Some(&h.idp.issuer), Some("sid-a"), Some(&a)).await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let resp = frontchannel(&h, None, None, Some(&a)).await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert!(h.exists(&a).await);
}

async fn with_frontchannel() -> Harness {
    Harness::start("frontchannel_logout = true", Arc::new(MemoryStore::new())).await
}

#[tokio::test]
async fn frontchannel_logout_ends_the_callers_own_idp_session() {
    let h = with_frontchannel().await;
    let a = h.session("alice", Some("sid-a")).await;
    let b = h.session("bob", Some("sid-b")).await;
    for (iss, sid) in [
        (Some("https://evil.example"), Some("sid-a")),
        (None, Some("sid-a")),
        (Some(h.idp.issuer.as_str()), None),
    ] {
        let resp = frontchannel(&h, iss, sid, Some(&a)).await;
        assert_invalid(resp, &format!("{iss:?} {sid:?}")).await;
        assert!(h.exists(&a).await);
    }

    let resp = frontchannel(&h, Some(&h.idp.issuer), Some("sid-a"), Some(&a)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()[header::CACHE_CONTROL], "no-store");
    let csp = resp.headers()[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .expect("csp");
    // Only the IdP may frame it.
    assert!(
        csp.contains(&format!("frame-ancestors {}", h.idp.issuer)),
        "{csp}"
    );
    // The browser is told to forget the session too.
    assert!(
        resp.headers()
            .get_all(header::SET_COOKIE)
            .iter()
            .any(|c| c.to_str().is_ok_and(|c| c.starts_with("portcullis=;"))),
        "session cookie removed"
    );
    assert!(!h.exists(&a).await);
    assert!(h.exists(&b).await);
}

/// Knowing (or guessing) bob's sid is not enough: without bob's own cookie,
/// nothing of bob's ends: not with alice's cookie, not with none.
#[tokio::test]
async fn frontchannel_logout_cannot_end_another_users_session() {
    let h = with_frontchannel().await;
    let a = h.session("alice", Some("sid-a")).await;
    let b = h.session("bob", Some("sid-b")).await;
    let b2 = h.session("bob", Some("sid-b")).await;
    for cookie in [None, Some(&a)] {
        let resp = frontchannel(&h, Some(&h.idp.issuer), Some("sid-b"), cookie).await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert!(resp.headers().get(header::SET_COOKIE).is_none());
    }
    assert!(h.exists(&a).await && h.exists(&b).await && h.exists(&b2).await);
    // Bob's own browser ends bob's session of that cookie, and only it.
    let resp = frontchannel(&h, Some(&h.idp.issuer), Some("sid-b"), Some(&b)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(!h.exists(&b).await);
    assert!(h.exists(&b2).await && h.exists(&a).await);
}

/// Logout CSRF: a cross-site link to the endpoint (a top-level GET, which
/// carries the SameSite=Lax cookie) without `iss`/`sid` ends nothing.
#[tokio::test]
async fn frontchannel_logout_without_iss_and_sid_ends_nothing() {
    let h = with_frontchannel().await;
    let a = h.session("alice", Some("sid-a")).await;
    let resp = frontchannel(&h, None, None, Some(&a)).await;
    assert_invalid(resp, "no parameters").await;
    assert!(h.exists(&a).await);
}
