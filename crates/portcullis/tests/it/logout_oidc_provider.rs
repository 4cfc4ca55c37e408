//! Logout against a real OpenID Provider (npm `oidc-provider`): back-channel
//! logout ends exactly the user's gateway session, logging out at the IdP
//! reaches the gateway, and `POST /auth/logout` revokes the refresh token at
//! the IdP (and logs out locally even when revocation fails).

use portcullis::session::SessionRecords;
use std::{future::Future, sync::Arc, time::Duration};

use crate::common::oidc_provider::{
    Browser, CLIENT_ID, CLIENT_SECRET, Landed, OidcProvider, OpOptions, SCOPES,
};
use portcullis::session::MemoryStore;
use reqwest::{Method, StatusCode, header::HeaderMap};
use serde_json::Value;
use tokio::net::TcpListener;
use url::Url;

/// Poll `check` until it holds (the IdP calls back asynchronously).
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

struct Setup {
    base: String,
    op: OidcProvider,
    store: Arc<MemoryStore>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Setup {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn setup() -> Setup {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind gateway");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let op = OidcProvider::start(OpOptions {
        redirect_uris: vec![format!("{base}/auth/callback")],
        post_logout_redirect_uris: vec![format!("{base}/")],
        backchannel_logout_uri: Some(format!("{base}/auth/backchannel-logout")),
        ..Default::default()
    })
    .await;
    let scopes = SCOPES.map(|s| format!("{s:?}")).join(", ");
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
scopes = [{scopes}]
roles_claim = "roles"
[session]
store = "memory"
"#,
        issuer = op.issuer
    );
    let store = Arc::new(MemoryStore::new());
    let (_, server) = crate::common::gateway::serve(listener, &toml, store.clone()).await;
    Setup {
        base,
        op,
        store,
        server,
    }
}

async fn login(s: &Setup, browser: &mut Browser, user: &str) {
    let base = s.base.clone();
    let landed =
        s.op.login(
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

async fn me_status(s: &Setup, browser: &mut Browser) -> StatusCode {
    browser
        .request(Method::GET, &format!("{}/auth/me", s.base), None)
        .await
        .status()
}

/// `POST /auth/logout` with the CSRF header; returns the JSON answer.
async fn logout(s: &Setup, browser: &mut Browser) -> (StatusCode, HeaderMap, Value) {
    browser.logout_json(&s.base).await
}

#[tokio::test]
async fn backchannel_logout_from_the_idp_ends_only_that_users_session() {
    let s = setup().await;
    let mut alice = Browser::new();
    let mut bob = Browser::new();
    login(&s, &mut alice, "alice").await;
    login(&s, &mut bob, "bob").await;
    assert_eq!(me_status(&s, &mut alice).await, StatusCode::OK);
    assert_eq!(me_status(&s, &mut bob).await, StatusCode::OK);
    let sid = s.store.list_by_sub("alice").await.expect("list")[0]
        .sid
        .clone();
    assert!(sid.is_some(), "the OP puts sid in the ID token");

    let outcome = s.op.backchannel_logout("alice", None).await;
    assert_eq!(outcome[0]["ok"], true, "{outcome}");
    assert_eq!(outcome[0]["sid"].as_str(), sid.as_deref());

    assert_eq!(me_status(&s, &mut alice).await, StatusCode::UNAUTHORIZED);
    assert!(s.store.list_by_sub("alice").await.expect("list").is_empty());
    assert_eq!(me_status(&s, &mut bob).await, StatusCode::OK);
}

#[tokio::test]
async fn logging_out_at_the_idp_ends_the_gateway_session() {
    let s = setup().await;
    let mut alice = Browser::new();
    let mut bob = Browser::new();
    login(&s, &mut alice, "alice").await;
    login(&s, &mut bob, "bob").await;

    // Alice signs out at the IdP itself (not through the gateway).
    let end_session = s.op.discovery().await["end_session_endpoint"]
        .as_str()
        .expect("end_session_endpoint")
        .to_string();
    s.op.rp_logout(&mut alice, &end_session, |_| false).await;
    eventually("alice's gateway session ends", || async {
        s.store.list_by_sub("alice").await.expect("list").is_empty()
    })
    .await;
    assert!(
        !s.op.events_of("backchannel.success").await.is_empty(),
        "{}",
        s.op.events().await
    );
    assert_eq!(me_status(&s, &mut alice).await, StatusCode::UNAUTHORIZED);
    assert_eq!(me_status(&s, &mut bob).await, StatusCode::OK);
}

#[tokio::test]
async fn logout_revokes_the_refresh_token_at_the_idp() {
    let s = setup().await;
    let mut alice = Browser::new();
    login(&s, &mut alice, "alice").await;
    let tokens = s.store.list_by_sub("alice").await.expect("list")[0]
        .tokens
        .clone();
    let refresh = String::from(tokens.refresh_token.expect("refresh token"));

    let (status, headers, body) = logout(&s, &mut alice).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(headers["clear-site-data"], "\"cookies\"");
    let logout_url = body["logout_url"].as_str().expect("logout_url");
    let q: std::collections::HashMap<_, _> = Url::parse(logout_url)
        .expect("url")
        .query_pairs()
        .into_owned()
        .collect();
    assert_eq!(q["post_logout_redirect_uri"], format!("{}/", s.base));
    assert_eq!(me_status(&s, &mut alice).await, StatusCode::UNAUTHORIZED);

    eventually("the refresh token is revoked at the IdP", || async {
        s.op.revocations().await.as_array().is_some_and(|calls| {
            calls.iter().any(|c| {
                c["token"] == refresh.as_str()
                    && c["kind"] == "RefreshToken"
                    && c["found"] == true
                    && c["client_id"] == CLIENT_ID
            })
        })
    })
    .await;
    eventually("the access token is revoked too", || async {
        s.op.revocations().await.as_array().is_some_and(|calls| {
            calls
                .iter()
                .any(|c| c["token"] == tokens.access_token.as_str())
        })
    })
    .await;
    // A refresh with the revoked token is refused by the IdP.
    assert!(
        s.op.events_of("grant.revoked").await.len()
            + s.op.events_of("refresh_token.destroyed").await.len()
            > 0,
        "{}",
        s.op.events().await
    );
}

#[tokio::test]
async fn failing_revocation_does_not_keep_the_session_alive() {
    let s = setup().await;
    let mut alice = Browser::new();
    login(&s, &mut alice, "alice").await;
    let revocation = s.op.discovery().await["revocation_endpoint"]
        .as_str()
        .expect("revocation_endpoint")
        .to_string();
    let path = Url::parse(&revocation).expect("url").path().to_string();
    s.op.fail_path(&path, 500, r#"{"error":"server_error"}"#, None)
        .await;

    let (status, _, body) = logout(&s, &mut alice).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(me_status(&s, &mut alice).await, StatusCode::UNAUTHORIZED);
    assert!(s.store.list_by_sub("alice").await.expect("list").is_empty());
}
