//! Provider parameters (issue 21 item 3), silent re-login (issue 20 item 1)
//! and the CSRF token in `/auth/me` for cross-host SPAs (issue 20 item 5).

use reqwest::StatusCode;
use url::Url;

use super::{Harness, browser, location, session_cookie};
use crate::common::crafted_idp::CraftedIdp;

fn query(url: &str) -> std::collections::HashMap<String, String> {
    Url::parse(url)
        .expect("URL")
        .query_pairs()
        .into_owned()
        .collect()
}

#[tokio::test]
async fn extra_params_reach_the_idp_on_authorize_and_token_requests() {
    let h = Harness::start(
        CraftedIdp::start().await,
        r#"extra_auth_params = { audience = "https://api.example", prompt = "consent" }
extra_token_params = { resource = "https://api.example" }"#,
    )
    .await;
    let b = browser();
    let resp = h.login(&b).await;
    assert!(session_cookie(&resp).is_some());
    let authorize = h.idp.authorize_requests();
    assert_eq!(authorize[0]["audience"], "https://api.example");
    assert_eq!(authorize[0]["prompt"], "consent");
    assert_eq!(authorize[0]["response_type"], "code");
    let token = h.idp.token_requests();
    assert_eq!(token[0].form["resource"], "https://api.example");
    assert_eq!(token[0].form["grant_type"], "authorization_code");
}

#[test]
fn extra_params_cannot_replace_the_gateways_own() {
    for (key, name) in [
        ("extra_auth_params", "redirect_uri"),
        ("extra_auth_params", "state"),
        ("extra_auth_params", "code_challenge_method"),
        ("extra_token_params", "grant_type"),
        ("extra_token_params", "client_secret"),
    ] {
        let toml = format!(
            r#"
[server]
public_url = "http://127.0.0.1:1"
profile = "dev"
[oidc]
issuer = "http://127.0.0.1:2"
client_id = "c"
client_secret = "s"
{key} = {{ {name} = "x" }}
[session]
store = "memory"
"#
        );
        let err = portcullis::config::Config::from_toml_str(&toml, Vec::new())
            .expect_err(&format!("{key}.{name} must be refused"))
            .to_string();
        assert!(
            err.contains(&format!("oidc.{key}.{name}")) && err.contains("set by the gateway"),
            "{err}"
        );
    }
}

#[tokio::test]
async fn a_prompt_other_than_none_is_refused() {
    let h = Harness::with_defaults().await;
    let resp = browser()
        .get(h.url("/auth/login?prompt=login"))
        .send()
        .await
        .expect("GET /auth/login");
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert!(h.idp.authorize_requests().is_empty());
}

/// The login in a hidden iframe: the callback answers a page that posts the
/// outcome to the SPA (same origin only), and sets the session as usual.
#[tokio::test]
async fn silent_login_answers_a_message_page_and_creates_the_session() {
    let h = Harness::with_defaults().await;
    let b = browser();
    let resp = b
        .get(h.url("/auth/login?prompt=none"))
        .send()
        .await
        .expect("GET /auth/login");
    let authorize = location(&resp);
    assert_eq!(query(&authorize)["prompt"], "none");
    let resp = b.get(&authorize).send().await.expect("GET /authorize");
    let callback = location(&resp);
    let resp = b.get(&callback).send().await.expect("GET /auth/callback");
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(session_cookie(&resp).is_some(), "the session is set");
    let csp = resp.headers()["content-security-policy"]
        .to_str()
        .expect("csp")
        .to_owned();
    assert!(csp.contains("frame-ancestors 'self'") && csp.contains("script-src 'sha256-"));
    let body = resp.text().await.expect("body");
    assert!(body.contains("data-result=\"success\""), "{body}");
    assert!(
        body.contains("window.location.origin"),
        "posted to our origin only"
    );
    let (status, me) = h.me(&b).await;
    assert_eq!(status, StatusCode::OK, "{me}");
}

/// Without an IdP session the IdP answers `login_required`: the SPA hears
/// it (and may fall back to a full login); no session is created.
#[tokio::test]
async fn silent_login_without_an_idp_session_reports_login_required() {
    let h = Harness::with_defaults().await;
    let b = browser();
    let resp = b
        .get(h.url("/auth/login?prompt=none"))
        .send()
        .await
        .expect("GET /auth/login");
    let state = query(&location(&resp))["state"].clone();
    let mut callback = Url::parse(&h.url("/auth/callback")).expect("url");
    callback
        .query_pairs_mut()
        .append_pair("error", "login_required")
        .append_pair("state", &state);
    let resp = b.get(callback).send().await.expect("GET /auth/callback");
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(session_cookie(&resp).is_none());
    let body = resp.text().await.expect("body");
    assert!(body.contains("data-result=\"login_required\""), "{body}");
    h.assert_no_session(&b).await;
}

#[tokio::test]
async fn csrf_token_is_in_auth_me_only_when_configured() {
    let off = Harness::with_defaults().await;
    let b = browser();
    off.login(&b).await;
    let (_, me) = off.me(&b).await;
    assert!(me.get("csrf_token").is_none(), "{me}");

    let on = Harness::start(CraftedIdp::start().await, "[csrf]\ntoken_in_me = true").await;
    let b = browser();
    on.login(&b).await;
    let (_, me) = on.me(&b).await;
    let record = &on.sessions_of(crate::common::crafted_idp::SUBJECT).await[0];
    assert_eq!(me["csrf_token"], record.csrf_token.as_str());
}
