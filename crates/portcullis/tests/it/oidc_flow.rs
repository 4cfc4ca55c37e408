//! The full login flow against a real OpenID Provider (npm `oidc-provider`):
//! login redirect parameters, the OP's login form, callback, `/auth/me` with
//! roles, the proxied API with the user's token, logout URL, session gone.

use portcullis::session::SessionRecords;
use std::{net::SocketAddr, sync::Arc};

use crate::common::oidc_provider::{
    Browser, CLIENT_ID, CLIENT_SECRET, Landed, OidcProvider, OpOptions, SCOPES,
};
use axum::{Json, Router, http::HeaderMap, routing::get};
use portcullis::session::MemoryStore;
use reqwest::{Method, StatusCode, header};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use url::Url;

/// An upstream that echoes the Authorization header it received.
async fn start_upstream() -> SocketAddr {
    let app = Router::new().route(
        "/api/token",
        get(|h: HeaderMap| async move {
            Json(json!({
                "authorization": h.get("authorization").and_then(|v| v.to_str().ok()),
                "cookie": h.get("cookie").and_then(|v| v.to_str().ok()),
            }))
        }),
    );
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind upstream");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

struct Setup {
    base: String,
    op: OidcProvider,
    store: Arc<MemoryStore>,
}

async fn setup(auth_method: &str) -> Setup {
    setup_with(auth_method, "").await
}

/// `session_extra`: more `[session]` lines.
async fn setup_with(auth_method: &str, session_extra: &str) -> Setup {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind gateway");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let op = OidcProvider::start(OpOptions {
        redirect_uris: vec![format!("{base}/auth/callback")],
        post_logout_redirect_uris: vec![format!("{base}/")],
        token_endpoint_auth_method: auth_method.into(),
        ..Default::default()
    })
    .await;
    let upstream = start_upstream().await;
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
token_endpoint_auth_method = "{auth_method}"
scopes = [{scopes}]
roles_claim = "roles"
[session]
store = "memory"
{session_extra}
[[routes]]
prefix = "/api/"
upstream = "http://{upstream}"
"#,
        issuer = op.issuer
    );
    let store = Arc::new(MemoryStore::new());
    crate::common::gateway::serve(listener, &toml, store.clone()).await;
    Setup { base, op, store }
}

/// Log `user` in through the OP's form; returns where the gateway sent the browser.
async fn login(s: &Setup, browser: &mut Browser, user: &str) -> Url {
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
    match landed {
        Landed::Stopped(url) => url,
        Landed::Page(p) => panic!("login ended on a page {} {}: {}", p.status, p.url, p.body),
    }
}

async fn get_json(browser: &mut Browser, url: &str) -> (StatusCode, Value) {
    let resp = browser.request(Method::GET, url, None).await;
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn full_login_me_proxy_and_logout_against_oidc_provider() {
    let s = setup("client_secret_basic").await;
    let mut browser = Browser::new();

    // The login redirect: code flow, PKCE S256, state and nonce, exact redirect_uri.
    let resp = browser
        .request(Method::GET, &format!("{}/auth/login", s.base), None)
        .await;
    assert_eq!(resp.status(), StatusCode::FOUND);
    let authorize = Url::parse(resp.headers()[header::LOCATION].to_str().expect("location"))
        .expect("authorize url");
    assert!(authorize.as_str().starts_with(&s.op.issuer));
    let q: std::collections::HashMap<_, _> = authorize.query_pairs().into_owned().collect();
    assert_eq!(q["response_type"], "code");
    assert_eq!(q["client_id"], CLIENT_ID);
    assert_eq!(q["redirect_uri"], format!("{}/auth/callback", s.base));
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["code_challenge"].len(), 43);
    assert!(q["state"].len() >= 43 && q["nonce"].len() >= 43);
    assert!(q["scope"].split(' ').any(|x| x == "openid"));

    let landed = login(&s, &mut browser, "alice").await;
    assert_eq!(landed.path(), "/app");

    let (status, me) = get_json(&mut browser, &format!("{}/auth/me", s.base)).await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me["authenticated"], true);
    assert_eq!(me["user"]["sub"], "alice");
    assert_eq!(me["roles"], json!(["admin", "hr"]));
    let sessions = s.store.list_by_sub("alice").await.expect("list");
    assert_eq!(sessions.len(), 1);
    assert!(
        sessions[0].tokens.refresh_token.is_some(),
        "refresh token kept server-side"
    );

    // The upstream sees the user's access token and none of the gateway's cookies.
    let (status, seen) = get_json(&mut browser, &format!("{}/api/token", s.base)).await;
    assert_eq!(status, StatusCode::OK);
    let expected = format!("Bearer {}", sessions[0].tokens.access_token.as_str());
    assert_eq!(seen["authorization"], json!(expected));
    // (The OP's own cookies share the 127.0.0.1 host and may pass; ours may not.)
    let cookie = seen["cookie"].as_str().unwrap_or("");
    assert!(
        !cookie.contains("portcullis") && !cookie.contains("XSRF-TOKEN"),
        "{cookie}"
    );

    // Logout: CSRF header required, then a logout URL at the OP's end_session endpoint.
    let xsrf = browser.cookie(&s.base, "XSRF-TOKEN").expect("XSRF-TOKEN");
    let mut headers = HeaderMap::new();
    headers.insert(header::ACCEPT, "application/json".parse().expect("hv"));
    let refused = browser
        .request_with(
            Method::POST,
            &format!("{}/auth/logout", s.base),
            headers.clone(),
            None,
        )
        .await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    headers.insert("x-xsrf-token", xsrf.parse().expect("hv"));
    let resp = browser
        .request_with(
            Method::POST,
            &format!("{}/auth/logout", s.base),
            headers,
            None,
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["clear-site-data"], "\"cookies\"");
    let body: Value = resp.json().await.expect("json");
    let logout_url = Url::parse(body["logout_url"].as_str().expect("logout_url")).expect("url");
    assert!(logout_url.as_str().starts_with(&s.op.issuer));
    let q: std::collections::HashMap<_, _> = logout_url.query_pairs().into_owned().collect();
    assert!(q.contains_key("id_token_hint") && q.contains_key("state"));
    assert_eq!(q["post_logout_redirect_uri"], format!("{}/", s.base));

    let (status, me) = get_json(&mut browser, &format!("{}/auth/me", s.base)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(me, json!({"authenticated": false}));
    assert!(s.store.list_by_sub("alice").await.expect("list").is_empty());
    let (status, err) = get_json(&mut browser, &format!("{}/api/token", s.base)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(err["error"], "unauthorized");
}

/// `session.keep_id_token = false`: the ID token is checked at login but not
/// kept, and the logout URL names the client instead; the OP accepts it and
/// sends the browser back to the post-logout URI.
#[tokio::test]
async fn without_keep_id_token_no_id_token_is_stored_and_logout_names_the_client() {
    let s = setup_with("client_secret_basic", "keep_id_token = false").await;
    let mut browser = Browser::new();
    login(&s, &mut browser, "alice").await;
    let sessions = s.store.list_by_sub("alice").await.expect("list");
    assert_eq!(sessions.len(), 1);
    assert!(sessions[0].tokens.id_token.is_none(), "ID token not kept");
    assert!(sessions[0].tokens.refresh_token.is_some());
    let (status, me) = get_json(&mut browser, &format!("{}/auth/me", s.base)).await;
    assert_eq!(
        (status, &me["user"]["sub"]),
        (StatusCode::OK, &json!("alice"))
    );

    let (status, _, body) = browser.logout_json(&s.base).await;
    assert_eq!(status, StatusCode::OK);
    let logout_url = body["logout_url"].as_str().expect("logout_url").to_owned();
    let q: std::collections::HashMap<_, _> = Url::parse(&logout_url)
        .expect("url")
        .query_pairs()
        .into_owned()
        .collect();
    assert!(!q.contains_key("id_token_hint"), "{logout_url}");
    assert_eq!(q["client_id"], CLIENT_ID);
    assert_eq!(q["post_logout_redirect_uri"], format!("{}/", s.base));
    // The OP takes the client alone: its sign-out form, then back to us.
    let base = format!("{}/", s.base);
    let landed =
        s.op.rp_logout(&mut browser, &logout_url, |u| u.as_str().starts_with(&base))
            .await;
    match landed {
        Landed::Stopped(url) => assert!(url.as_str().starts_with(&base), "{url}"),
        Landed::Page(p) => panic!(
            "OP logout ended on a page {} {}: {}",
            p.status, p.url, p.body
        ),
    }
    assert!(s.store.list_by_sub("alice").await.expect("list").is_empty());
}

#[tokio::test]
async fn client_secret_post_and_role_less_user() {
    let s = setup("client_secret_post").await;
    let mut browser = Browser::new();
    login(&s, &mut browser, "carol").await;
    let (status, me) = get_json(&mut browser, &format!("{}/auth/me", s.base)).await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me["user"]["sub"], "carol");
    assert_eq!(me["roles"], json!([]));
}

/// Silent re-login (`prompt=none`) against a real OP: with a live OP session
/// it completes without a form and the callback answers the message page;
/// without one the OP answers `login_required` and the SPA hears that.
#[tokio::test]
async fn silent_login_against_oidc_provider() {
    let s = setup("client_secret_basic").await;
    let never = |_: &Url| false;

    let mut fresh = Browser::new();
    let landed = fresh
        .navigate_until(&format!("{}/auth/login?prompt=none", s.base), &never)
        .await;
    let Landed::Page(page) = landed else {
        panic!("silent login stopped")
    };
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(
        page.url
            .as_str()
            .starts_with(&format!("{}/auth/callback", s.base))
    );
    assert!(
        page.body.contains("data-result=\"login_required\""),
        "{}",
        page.body
    );

    let mut browser = Browser::new();
    login(&s, &mut browser, "alice").await;
    // The gateway session ends (here: deleted), the OP session lives on.
    for r in s.store.list_by_sub("alice").await.expect("list") {
        s.store.delete(&r.id).await.expect("delete");
    }
    let (status, _) = get_json(&mut browser, &format!("{}/auth/me", s.base)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let landed = browser
        .navigate_until(&format!("{}/auth/login?prompt=none", s.base), &never)
        .await;
    let Landed::Page(page) = landed else {
        panic!("silent login stopped")
    };
    assert!(
        page.body.contains("data-result=\"success\""),
        "{}",
        page.body
    );
    let (status, me) = get_json(&mut browser, &format!("{}/auth/me", s.base)).await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me["user"]["sub"], "alice");
}
