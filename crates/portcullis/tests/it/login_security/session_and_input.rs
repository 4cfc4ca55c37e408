//! Item 6: the session id is 256 random bits, HttpOnly/SameSite=Lax, rotated
//! at login and hashed at rest; tokens never reach the browser. Item 10: bad
//! cookies, oversized requests, garbage and slowness from the IdP get a clear
//! 4xx/5xx and leave other sessions alone.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use portcullis::session::SessionHash;
use reqwest::{Client, Response, StatusCode, header, redirect::Policy};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::{
    Harness, SESSION_COOKIE, browser, is_base64url, location, session_cookie, set_cookies,
};
use crate::common::crafted_idp::{CraftedIdp, RawReply, SUBJECT};

fn sha256_hex(value: &str) -> String {
    format!("{:x}", Sha256::digest(value.as_bytes()))
}

/// A browser logged in as `bystander`, whose session must survive the test.
async fn bystander(h: &Harness) -> Client {
    h.idp.configure(|b| b.set_claim("sub", json!("bystander")));
    let b = browser();
    h.login(&b).await;
    h.idp.configure(|b| {
        b.claims.remove("sub");
    });
    b
}

async fn assert_bystander_untouched(h: &Harness, b: &Client) {
    let (status, me) = h.me(b).await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me["user"]["sub"], "bystander");
    assert_eq!(h.sessions_of("bystander").await.len(), 1);
}

// ---- item 6

#[tokio::test]
async fn session_cookie_is_random_httponly_lax_and_hashed_at_rest() {
    let h = Harness::with_defaults().await;
    let b = browser();
    let resp = h.login(&b).await;
    let raw = set_cookies(&resp);
    let session = raw
        .iter()
        .find(|c| c.starts_with(&format!("{SESSION_COOKIE}=")))
        .unwrap_or_else(|| panic!("no session cookie in {raw:?}"));
    let mut parts = session.split(';').map(str::trim);
    let value = parts
        .next()
        .and_then(|p| p.strip_prefix(&format!("{SESSION_COOKIE}=")))
        .expect("cookie value");
    let attrs: Vec<String> = parts.map(str::to_ascii_lowercase).collect();
    assert_eq!(value.len(), 43, "{session}");
    assert!(is_base64url(value));
    assert_eq!(URL_SAFE_NO_PAD.decode(value).expect("base64url").len(), 32);
    for wanted in ["httponly", "samesite=lax", "path=/"] {
        assert!(
            attrs.iter().any(|a| a == wanted),
            "{wanted} missing: {session}"
        );
    }
    assert!(!attrs.iter().any(|a| a.starts_with("domain=")), "{session}");
    // The login cookie is cleared and the CSRF cookie is readable by the SPA.
    assert!(
        raw.iter()
            .any(|c| c.starts_with(&format!("{SESSION_COOKIE}-login-"))
                && c.contains("=;")
                && c.to_ascii_lowercase().contains("max-age=0")),
        "{raw:?}"
    );
    let csrf = raw
        .iter()
        .find(|c| c.starts_with("XSRF-TOKEN="))
        .expect("CSRF cookie");
    assert!(!csrf.to_ascii_lowercase().contains("httponly"), "{csrf}");

    // At rest: keyed by SHA-256 of the value, never the value.
    let hash = SessionHash::from_hex(&sha256_hex(value)).expect("hex");
    let record = h
        .store
        .load(&hash)
        .await
        .expect("load")
        .expect("stored by hash");
    assert_eq!(record.sub, SUBJECT);
    let all = h.sessions_of(SUBJECT).await;
    assert_eq!(all.len(), 1);
    assert_ne!(all[0].id.as_str(), value);

    // Another login elsewhere gets an unrelated value.
    let other = session_cookie(&h.login(&browser()).await).expect("second session");
    assert_ne!(other, value);
}

#[tokio::test]
async fn login_rotates_the_session_id_and_destroys_the_old_one() {
    let h = Harness::with_defaults().await;
    let b = browser();
    let first = session_cookie(&h.login(&b).await).expect("first session");
    let second = session_cookie(&h.login(&b).await).expect("second session");
    assert_ne!(first, second);
    let old = SessionHash::from_hex(&sha256_hex(&first)).expect("hex");
    assert!(
        h.store.load(&old).await.expect("load").is_none(),
        "old session kept"
    );
    assert_eq!(h.sessions_of(SUBJECT).await.len(), 1);
    assert_eq!(h.me(&b).await.0, StatusCode::OK);

    // A planted (fixated) cookie value is never adopted.
    let planted = "A".repeat(43);
    let jar = Arc::new(reqwest::cookie::Jar::default());
    let base: url::Url = h.base.parse().expect("base URL");
    jar.add_cookie_str(&format!("{SESSION_COOKIE}={planted}; Path=/"), &base);
    let fixated = Client::builder()
        .cookie_provider(jar)
        .redirect(Policy::none())
        .build()
        .expect("client");
    let issued = session_cookie(&h.login(&fixated).await).expect("session");
    assert_ne!(issued, planted);
}

/// Append every header and the body of `resp` to `seen`; return its Location.
async fn record(resp: Response, seen: &mut String) -> Option<String> {
    let location = resp
        .headers()
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    for (name, value) in resp.headers() {
        seen.push_str(&format!(
            "{name}: {}\n",
            String::from_utf8_lossy(value.as_bytes())
        ));
    }
    seen.push_str(&resp.text().await.unwrap_or_default());
    location
}

#[tokio::test]
async fn tokens_and_the_session_id_never_reach_the_browser() {
    let h = Harness::with_defaults().await;
    let b = browser();
    let mut seen = String::new();
    let authorize = record(h.start_login(&b, "/").await, &mut seen)
        .await
        .expect("redirect to the IdP");
    let idp_resp = b.get(authorize).send().await.expect("authorize");
    let callback = location(&idp_resp);
    let callback_resp = b.get(callback).send().await.expect("callback");
    let session = session_cookie(&callback_resp).expect("session cookie");
    record(callback_resp, &mut seen).await;
    let mut me_body = String::new();
    for _ in 0..2 {
        let resp = b.get(h.url("/auth/me")).send().await.expect("me");
        assert_eq!(resp.status(), StatusCode::OK);
        record(resp, &mut me_body).await;
    }
    seen.push_str(&me_body);

    let issued = h.idp.issued_tokens();
    assert_eq!(issued.len(), 3, "access, refresh and ID token");
    for token in issued {
        assert!(
            !seen.contains(&token),
            "a token reached the browser: {token}"
        );
    }
    assert!(
        !me_body.contains(&session),
        "/auth/me echoes the session id"
    );
}

// ---- item 10: garbage and slowness from the IdP

#[tokio::test]
async fn garbage_token_responses_are_refused_and_leave_other_sessions_alone() {
    // Every answer must reach the gateway: no circuit breaker in between.
    let h = Harness::start(CraftedIdp::start().await, "breaker_failures = 100").await;
    let bystander = bystander(&h).await;
    let json = "application/json";
    let cases = [
        (200, "text/html", "<html><body>Welcome!</body></html>", 503),
        (200, json, "{}", 503),
        (200, json, "[1, 2, 3]", 503),
        (200, json, r#"{"access_token": "at", "id_token": "#, 503),
        (
            200,
            json,
            r#"{"access_token": "at", "token_type": "mac"}"#,
            503,
        ),
        (500, "text/plain", "internal error", 503),
        (502, "text/html", "<h1>Bad gateway</h1>", 503),
        (400, json, r#"{"error": "invalid_grant"}"#, 400),
        // Not an OAuth error: something in front of the IdP failing.
        (401, "text/plain", "no", 503),
        (429, json, r#"{"error": "slow_down"}"#, 503),
    ];
    for (status, content_type, body, expected) in cases {
        h.idp.configure(|b| {
            b.token_reply = Some(RawReply {
                status,
                content_type,
                body: body.to_string(),
            })
        });
        let b = browser();
        let resp = h.login_until_callback(&b).await;
        let expected = StatusCode::from_u16(expected).expect("status");
        let answer = h.assert_refused(&b, resp, expected).await;
        if expected == StatusCode::SERVICE_UNAVAILABLE {
            assert_eq!(answer["error"], "idp_unavailable", "{status} {body}");
        }
    }
    assert_bystander_untouched(&h, &bystander).await;
}

#[tokio::test]
async fn jwks_without_usable_keys_refuses_the_login() {
    for jwks in [
        json!({"keys": []}),
        json!({"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "k1"}]}),
        json!({"no_keys": true}),
    ] {
        let idp = CraftedIdp::start().await;
        idp.configure(|b| b.jwks_body = Some(jwks.clone()));
        let h = Harness::start(idp, "").await;
        let b = browser();
        let resp = h.login_until_callback(&b).await;
        let status = resp.status();
        assert!(
            status.is_client_error() || status.is_server_error(),
            "{jwks}: {status}"
        );
        h.assert_refused(&b, resp, status).await;
    }
}

#[tokio::test]
async fn slow_token_endpoint_gives_503_within_the_timeout() {
    let h = Harness::start(CraftedIdp::start().await, r#"http_timeout = "1s""#).await;
    let bystander = bystander(&h).await;
    h.idp
        .configure(|b| b.token_delay = Some(Duration::from_secs(3)));
    let b = browser();
    let callback = h.begin_login(&b, "/").await;
    let started = Instant::now();
    let resp = b.get(callback).send().await.expect("callback");
    let took = started.elapsed();
    assert!(took < Duration::from_millis(2500), "took {took:?}");
    let body = h
        .assert_refused(&b, resp, StatusCode::SERVICE_UNAVAILABLE)
        .await;
    assert_eq!(body["error"], "idp_unavailable");
    assert_bystander_untouched(&h, &bystander).await;
}

// ---- item 10: bad input from the browser

#[tokio::test]
async fn malformed_session_cookies_are_401_not_500() {
    let h = Harness::with_defaults().await;
    let bystander = bystander(&h).await;
    let raw = Client::builder()
        .redirect(Policy::none())
        .build()
        .expect("client");
    let long = "a".repeat(5000);
    let unknown = "B".repeat(43);
    for value in [
        "%%%",
        long.as_str(),
        unknown.as_str(),
        "\"quoted\"",
        "",
        "a=b=c",
    ] {
        let resp = raw
            .get(h.url("/auth/me"))
            .header(header::COOKIE, format!("{SESSION_COOKIE}={value}"))
            .send()
            .await
            .expect("me");
        let status = resp.status();
        let body: serde_json::Value = resp.json().await.expect("JSON");
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "cookie {value:.40}: {body}"
        );
        assert_eq!(body["authenticated"], false);
    }
    assert_bystander_untouched(&h, &bystander).await;
}

#[tokio::test]
async fn oversized_requests_are_refused() {
    let h = Harness::with_defaults().await;
    let bystander = bystander(&h).await;
    let logins_before = h.idp.authorize_requests().len();
    let b = browser();
    let pad = "a".repeat(9 * 1024);
    for path in [
        format!("/auth/login?return_to=/&pad={pad}"),
        format!("/auth/callback?state={pad}&code=x"),
        format!("/auth/me?{pad}"),
    ] {
        let resp = b.get(h.url(&path)).send().await.expect("request");
        assert!(
            matches!(
                resp.status(),
                StatusCode::URI_TOO_LONG | StatusCode::BAD_REQUEST
            ),
            "{:.30}: {}",
            path,
            resp.status()
        );
    }
    // A header block far beyond any sane size is refused, not served.
    let huge = "x".repeat(1024 * 1024);
    match b
        .get(h.url("/auth/me"))
        .header("x-padding", huge)
        .send()
        .await
    {
        Ok(resp) => assert!(resp.status().is_client_error(), "{}", resp.status()),
        Err(e) => assert!(!e.is_timeout(), "{e}"),
    }
    assert_eq!(h.idp.authorize_requests().len(), logins_before);
    assert_bystander_untouched(&h, &bystander).await;
}
