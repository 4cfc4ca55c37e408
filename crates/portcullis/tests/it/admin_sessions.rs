//! Session admin API on the admin listener: list and end sessions by subject
//! and by hash behind the admin bearer token; never on the public listener;
//! absent (404) without a configured token while health stays.

use portcullis::session::SessionRecords;
use std::{net::SocketAddr, sync::Arc};

use portcullis::{
    Gateway,
    config::Config,
    session::{MemoryStore, SessionId, SessionRecord, TokenSet, random_token},
};
use reqwest::{Client, Method, StatusCode, header};
use serde_json::Value;

use crate::common::crafted_idp::{CLIENT_ID, CLIENT_SECRET, CraftedIdp, now};
use jsonwebtoken::{Algorithm, Header};
use serde_json::json;

const TOKEN: &str = "admin-token-0123456789abcdef";

struct Harness {
    idp: CraftedIdp,
    public: String,
    admin: String,
    store: Arc<MemoryStore>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    http: Client,
}

impl Drop for Harness {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn serve(router: axum::Router) -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    let app = router.into_make_service_with_connect_info::<SocketAddr>();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (base, task)
}

impl Harness {
    async fn start(admin_section: &str) -> Self {
        let idp = CraftedIdp::start().await;
        let toml = format!(
            r#"
[server]
public_url = "http://127.0.0.1:8080"
profile = "dev"
[admin]
{admin_section}
[oidc]
issuer = "{issuer}"
client_id = "{CLIENT_ID}"
client_secret = "{CLIENT_SECRET}"
frontchannel_logout = true
[session]
store = "memory"
"#,
            issuer = idp.issuer,
        );
        let config = Config::from_toml_str(&toml, Vec::<(String, String)>::new())
            .unwrap_or_else(|e| panic!("test config invalid:\n{e}"));
        let store = Arc::new(MemoryStore::new());
        let gateway = Gateway::builder(config)
            .store(store.clone())
            .build()
            .await
            .expect("build the gateway");
        let (public, t1) = serve(gateway.router()).await;
        let (admin, t2) = serve(gateway.admin_router()).await;
        Self {
            idp,
            public,
            admin,
            store,
            tasks: vec![t1, t2],
            http: Client::new(),
        }
    }

    async fn session(&self, sub: &str) -> SessionId {
        self.session_with_sid(sub, &random_token(8)).await
    }

    async fn session_with_sid(&self, sub: &str, sid: &str) -> SessionId {
        let id = SessionId::generate();
        let now = now();
        let record = SessionRecord {
            id: id.hash(),
            sub: sub.into(),
            sid: Some(sid.into()),
            claims: Default::default(),
            roles: Vec::new(),
            tokens: TokenSet {
                access_token: format!("secret-access-{}", random_token(8)).into(),
                refresh_token: Some(format!("secret-refresh-{}", random_token(8)).into()),
                id_token: Some(format!("secret-id-{}", random_token(8)).into()),
                access_expires_at: Some(now + 300),
            },
            csrf_token: format!("csrf-{}", id.as_cookie_value()),
            user_agent: Some("Firefox 128 on Linux".into()),
            created_at: now,
            last_seen_at: now,
            expires_at: now + 3600,
            idle_expires_at: now + 1800,
            version: 1,
        };
        self.store.save(&record).await.expect("save");
        id
    }

    async fn call(
        &self,
        base: &str,
        method: Method,
        path: &str,
        token: Option<&str>,
    ) -> reqwest::Response {
        let mut req = self.http.request(method, format!("{base}{path}"));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send().await.expect("admin request")
    }

    async fn admin(&self, method: Method, path: &str) -> (StatusCode, Value) {
        let resp = self.call(&self.admin, method, path, Some(TOKEN)).await;
        let status = resp.status();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    async fn me_status(&self, id: &SessionId) -> StatusCode {
        self.http
            .get(format!("{}/auth/me", self.public))
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

#[tokio::test]
async fn list_and_delete_by_sub_and_by_hash() {
    let h = Harness::start(&format!("token = \"{TOKEN}\"")).await;
    let a1 = h.session("alice").await;
    let a2 = h.session("alice").await;
    let a3 = h.session("alice").await;
    let b = h.session("bob").await;

    let (status, body) = h.admin(Method::GET, "/admin/sessions?sub=alice").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let listed = body["sessions"].as_array().expect("sessions");
    assert_eq!(listed.len(), 3);
    let mut hashes: Vec<&str> = listed.iter().filter_map(|s| s["hash"].as_str()).collect();
    hashes.sort_unstable();
    let mut expected = vec![
        a1.hash().as_str().to_string(),
        a2.hash().as_str().to_string(),
        a3.hash().as_str().to_string(),
    ];
    expected.sort_unstable();
    assert_eq!(hashes, expected);
    assert_eq!(listed[0]["user_agent"], "Firefox 128 on Linux");
    assert!(listed[0]["created_at"].is_string() && listed[0]["last_seen_at"].is_string());
    let text = body.to_string();
    assert!(!text.contains("secret-"), "tokens leaked: {text}");
    for id in [&a1, &a2, &a3] {
        assert!(!text.contains(id.as_cookie_value()), "cookie value leaked");
    }

    // One session by hash: that browser is logged out, the others stay.
    assert_eq!(h.me_status(&a1).await, StatusCode::OK);
    let (status, body) = h
        .admin(
            Method::DELETE,
            &format!("/admin/sessions/{}", a1.hash().as_str()),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(h.me_status(&a1).await, StatusCode::UNAUTHORIZED);
    assert_eq!(h.me_status(&a2).await, StatusCode::OK);
    let (status, _) = h
        .admin(
            Method::DELETE,
            &format!("/admin/sessions/{}", a1.hash().as_str()),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "already gone");
    let (status, _) = h.admin(Method::DELETE, "/admin/sessions/not-a-hash").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Every session of a subject.
    let (status, body) = h.admin(Method::DELETE, "/admin/sessions?sub=alice").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["deleted"], 2);
    assert_eq!(h.me_status(&a2).await, StatusCode::UNAUTHORIZED);
    assert_eq!(h.me_status(&a3).await, StatusCode::UNAUTHORIZED);
    assert_eq!(h.me_status(&b).await, StatusCode::OK, "bob untouched");
    let (_, body) = h.admin(Method::GET, "/admin/sessions?sub=alice").await;
    assert_eq!(body["sessions"].as_array().map(Vec::len), Some(0));

    let (status, _) = h.admin(Method::GET, "/admin/sessions").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "sub is required");
}

#[tokio::test]
async fn missing_or_wrong_token_is_401_and_changes_nothing() {
    let h = Harness::start(&format!("token = \"{TOKEN}\"")).await;
    let a = h.session("alice").await;
    let hash_path = format!("/admin/sessions/{}", a.hash().as_str());
    let wrong = format!("{TOKEN}x");
    for token in [None, Some("wrong"), Some(wrong.as_str()), Some("")] {
        for (method, path) in [
            (Method::GET, "/admin/sessions?sub=alice"),
            (Method::DELETE, "/admin/sessions?sub=alice"),
            (Method::DELETE, hash_path.as_str()),
        ] {
            let resp = h.call(&h.admin, method.clone(), path, token).await;
            assert_eq!(
                resp.status(),
                StatusCode::UNAUTHORIZED,
                "{method} {path} {token:?}"
            );
            assert_eq!(resp.headers()[header::WWW_AUTHENTICATE], "Bearer");
        }
    }
    // Basic auth with the right secret is not a bearer token.
    let resp = h
        .http
        .get(format!("{}/admin/sessions?sub=alice", h.admin))
        .basic_auth(TOKEN, Some(""))
        .send()
        .await
        .expect("basic");
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(h.me_status(&a).await, StatusCode::OK);
}

#[tokio::test]
async fn public_listener_does_not_serve_admin() {
    let h = Harness::start(&format!("token = \"{TOKEN}\"")).await;
    let a = h.session("alice").await;
    for (method, path) in [
        (Method::GET, "/admin/sessions?sub=alice".to_string()),
        (Method::DELETE, "/admin/sessions?sub=alice".to_string()),
        (
            Method::DELETE,
            format!("/admin/sessions/{}", a.hash().as_str()),
        ),
    ] {
        let resp = h.call(&h.public, method.clone(), &path, Some(TOKEN)).await;
        assert!(
            matches!(
                resp.status(),
                StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED
            ),
            "{method} {path}: {}",
            resp.status()
        );
    }
    assert_eq!(h.me_status(&a).await, StatusCode::OK);
}

#[tokio::test]
async fn without_a_token_the_admin_api_is_404_and_health_stays() {
    let h = Harness::start("").await;
    h.session("alice").await;
    for token in [None, Some(TOKEN)] {
        let resp = h
            .call(&h.admin, Method::GET, "/admin/sessions?sub=alice", token)
            .await;
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
        let resp = h
            .call(&h.admin, Method::DELETE, "/admin/sessions?sub=alice", token)
            .await;
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    }
    let resp = h.call(&h.admin, Method::GET, "/healthz", None).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(h.store.list_by_sub("alice").await.expect("list").len(), 1);
}

/// The value of `portcullis_logouts_total{kind="..."}` in the Prometheus text (0 if absent).
async fn logouts(h: &Harness, kind: &str) -> f64 {
    let text = h
        .call(&h.admin, Method::GET, "/metrics", None)
        .await
        .text()
        .await
        .expect("metrics text");
    let prefix = format!("portcullis_logouts_total{{kind=\"{kind}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn every_logout_path_is_counted_by_kind() {
    let h = Harness::start(&format!("token = \"{TOKEN}\"")).await;
    // The recorder is process-wide and tests run in parallel: compare increases.
    let before: Vec<f64> = futures_util::future::join_all(
        ["user", "backchannel", "frontchannel", "admin"].map(|k| logouts(&h, k)),
    )
    .await;

    // user: POST /auth/logout with the session's CSRF token.
    let u = h.session("user-logout").await;
    let resp = h
        .http
        .post(format!("{}/auth/logout", h.public))
        .header(
            header::COOKIE,
            format!("portcullis={}", u.as_cookie_value()),
        )
        .header("x-xsrf-token", format!("csrf-{}", u.as_cookie_value()))
        .header(header::ACCEPT, "application/json")
        .send()
        .await
        .expect("logout");
    assert_eq!(resp.status(), StatusCode::OK);

    // backchannel: a logout token signed by the IdP.
    h.session_with_sid("bc-user", "bc-sid").await;
    let mut signer = None;
    h.idp.configure(|b| signer = Some(b.signer.clone()));
    let signer = signer.expect("signer");
    let mut header_ = Header::new(Algorithm::ES256);
    header_.kid = Some(signer.kid.clone());
    header_.typ = Some("logout+jwt".into());
    let token = signer.sign_with_header(
        header_,
        &json!({
            "iss": h.idp.issuer, "aud": CLIENT_ID, "iat": now(), "jti": random_token(12),
            "sid": "bc-sid", "sub": "bc-user",
            "events": {"http://schemas.openid.net/event/backchannel-logout": {}},
        }),
    );
    let resp = h
        .http
        .post(format!("{}/auth/backchannel-logout", h.public))
        .form(&[("logout_token", token)])
        .send()
        .await
        .expect("backchannel");
    assert_eq!(resp.status(), StatusCode::OK);

    // frontchannel: only the caller's own session.
    let fc = h.session_with_sid("fc-user", "fc-sid").await;
    let resp = h
        .http
        .get(format!("{}/auth/frontchannel-logout", h.public))
        .header(
            header::COOKIE,
            format!("portcullis={}", fc.as_cookie_value()),
        )
        .query(&[("iss", h.idp.issuer.as_str()), ("sid", "fc-sid")])
        .send()
        .await
        .expect("frontchannel");
    assert_eq!(resp.status(), StatusCode::OK);

    // admin.
    h.session("admin-user").await;
    let (status, _) = h
        .admin(Method::DELETE, "/admin/sessions?sub=admin-user")
        .await;
    assert_eq!(status, StatusCode::OK);

    for (kind, before) in ["user", "backchannel", "frontchannel", "admin"]
        .iter()
        .zip(before)
    {
        let after = logouts(&h, kind).await;
        assert!(after >= before + 1.0, "{kind}: {before} -> {after}");
    }
}
