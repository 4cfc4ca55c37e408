//! A failing IdP or store never logs anyone out (issue 18 items 1-4):
//! - only the IdP's refusal ends a session; 5xx, 429, a non-OAuth error page,
//!   an unreachable IdP and a JWKS that cannot be fetched during key
//!   rotation keep it, answering 503 with `Retry-After` when no valid
//!   token is left;
//! - a rotated refresh token that came back is kept, never lost or sent
//!   twice, also when the store cannot save it (and saved at shutdown);
//! - `/auth/me` answers from the session while the IdP is down;
//! - after repeated failures the circuit breaker stops token requests, and
//!   one probe closes it again; `/readyz` stays ready and says so;
//! - a back-channel logout whose delete fails can be retried by the IdP,
//!   and a replayed one never ends a session begun after it.
//!
//! Real serving path ([`crate::common::harness::Harness`]), crafted IdP, sessions
//! stored directly, a manual clock.

use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, Header};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{
    crafted_idp::{CLIENT_ID, EcKey, RawReply, SUBJECT, now},
    harness::Harness,
};
use portcullis::session::{SessionId, random_token};

/// A token endpoint answer standing in for an IdP in trouble.
fn reply(status: u16, content_type: &'static str, body: &str) -> RawReply {
    RawReply {
        status,
        content_type,
        body: body.into(),
    }
}

async fn status_and_retry_after(resp: reqwest::Response) -> (StatusCode, Option<String>, Value) {
    let status = resp.status();
    let retry = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = resp.json().await.unwrap_or(Value::Null);
    (status, retry, body)
}

/// The IdP rotated its signing key and its JWKS endpoint fails just then:
/// the refreshed ID token cannot be checked. The token endpoint has already
/// spent the old refresh token, so the new one must be kept (and used next
/// time), and the session must live on.
#[tokio::test]
async fn jwks_refetch_failure_at_refresh_keeps_the_session_and_the_rotated_refresh_token() {
    let h = Harness::start("", "").await;
    let (id, record) = h.session("sid-jwks", &["admin"], 30).await;
    let new_key = EcKey::generate("k2");
    h.idp.configure(|b| {
        b.signer = new_key.clone();
        b.jwks_status = Some(503);
    });
    // Inside the refresh window (60 s): this request refreshes.
    let resp = h.get("/api/a", &id).await;
    assert_eq!(resp.status(), StatusCode::OK, "served");
    let after = h.record(&id).await.expect("the session lives on");
    let issued = h.idp.issued_tokens();
    let rotated = issued
        .iter()
        .rev()
        .find(|t| t.starts_with("rt-"))
        .expect("a rotated refresh token")
        .clone();
    assert_eq!(
        after.tokens.refresh_token.as_deref(),
        Some(rotated.as_str())
    );
    assert_ne!(after.tokens.access_token, record.tokens.access_token);
    assert_eq!(
        after.roles,
        ["admin"],
        "roles unchanged without a checked ID token"
    );
    // Again within the JWKS re-fetch interval: still no logout.
    h.clock.advance(300);
    let resp = h.get("/api/b", &id).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(h.record(&id).await.is_some(), "still signed in");
    // The JWKS is back: the next refresh sends the kept token, once.
    h.idp.configure(|b| {
        b.jwks_status = None;
        b.published = vec![new_key.clone()];
    });
    h.clock.advance(300);
    assert_eq!(h.get("/api/c", &id).await.status(), StatusCode::OK);
    let sent = h.refresh_tokens_sent();
    assert_eq!(sent.len(), 3, "{sent:?}");
    assert_eq!(sent[1], rotated, "the kept token was used");
    assert_eq!(
        sent.iter().collect::<std::collections::HashSet<_>>().len(),
        3,
        "no refresh token sent twice: {sent:?}"
    );
}

/// `/auth/me` on page load with an expired access token while the IdP is
/// down: the user is signed in, and the SPA must not show an error.
#[tokio::test]
async fn auth_me_answers_from_the_session_while_the_idp_is_down() {
    let h = Harness::start("", "").await;
    let (id, _) = h.session("sid-me", &["user"], -10).await;
    h.idp
        .configure(|b| b.token_reply = Some(reply(503, "text/plain", "down")));
    let (status, _, body) = status_and_retry_after(h.get("/auth/me", &id).await).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["authenticated"], true);
    assert_eq!(body["roles"], json!(["user"]));
    // An API call cannot be served without a token: 503, come back later.
    let (status, retry, body) = status_and_retry_after(h.get("/api/x", &id).await).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["error"], "idp_unavailable");
    assert_eq!(retry.as_deref(), Some("5"));
    assert!(h.record(&id).await.is_some());
}

/// Token endpoint answers that are not the IdP refusing: rate limited,
/// or an HTML error page of something in front of it. None ends the session.
#[tokio::test]
async fn token_endpoint_rate_limit_or_error_page_does_not_end_the_session() {
    // The breaker would stop the calls after five failures; here each kind
    // of answer must reach the gateway.
    let h = Harness::start("breaker_failures = 100", "").await;
    for (n, answer) in [
        reply(429, "application/json", r#"{"error":"slow_down"}"#),
        reply(408, "text/plain", "timeout"),
        reply(403, "text/html", "<h1>Forbidden by WAF</h1>"),
        reply(404, "text/html", "<h1>Not Found</h1>"),
        reply(400, "application/json", "not json at all"),
    ]
    .into_iter()
    .enumerate()
    {
        let (id, _) = h.session(&format!("sid-{n}"), &[], -10).await;
        let shown = format!("{} {}", answer.status, answer.body);
        h.idp.configure(|b| b.token_reply = Some(answer));
        let (status, retry, body) = status_and_retry_after(h.get("/api/x", &id).await).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{shown}: {body}");
        assert_eq!(retry.as_deref(), Some("5"), "{shown}");
        assert!(h.record(&id).await.is_some(), "{shown}: session kept");
    }
    // The refusal proper ends it.
    let (id, _) = h.session("sid-refused", &[], -10).await;
    h.idp.configure(|b| {
        b.token_reply = Some(reply(
            400,
            "application/json",
            r#"{"error":"invalid_grant"}"#,
        ))
    });
    let (status, _, body) = status_and_retry_after(h.get("/api/x", &id).await).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["error"], "session_expired");
    assert!(h.record(&id).await.is_none());
}

/// The store cannot save the refreshed tokens: the request is served with
/// the new access token, and the rotated refresh token is kept in the
/// process and saved before the next refresh, which sends it — never the
/// spent one.
#[tokio::test]
async fn rotated_refresh_token_survives_a_failed_save() {
    let h = Harness::start("", "").await;
    let (id, record) = h.session("sid-save", &[], 30).await;
    h.store.fail_saves(true);
    assert_eq!(h.get("/api/a", &id).await.status(), StatusCode::OK);
    h.store.fail_saves(false);
    let first = h.refresh_tokens_sent();
    assert_eq!(first, [record.tokens.refresh_token.as_deref().expect("rt")]);
    let rotated = h
        .idp
        .issued_tokens()
        .into_iter()
        .rev()
        .find(|t| t.starts_with("rt-"))
        .expect("rotated");
    assert_eq!(h.get("/api/b", &id).await.status(), StatusCode::OK);
    assert_eq!(
        stored_refresh_token(&h, &id).await.as_deref(),
        Some(rotated.as_str()),
        "kept token saved"
    );
    // Next refresh window: the rotated token goes to the IdP, once.
    h.clock.advance(300);
    assert_eq!(h.get("/api/c", &id).await.status(), StatusCode::OK);
    let sent = h.refresh_tokens_sent();
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert_eq!(sent[1], rotated);
}

/// The same failed save, then a graceful stop (`SIGTERM`) before the
/// session's next request: the rotated refresh token, which only the process
/// held, is saved during shutdown. Lost with the process, it would end the
/// session at its next refresh on any replica (the store's token is spent).
#[tokio::test]
async fn rotated_refresh_token_kept_after_a_failed_save_survives_sigterm() {
    let mut h = Harness::start("", "").await;
    let (id, record) = h.session("sid-term", &[], 30).await;
    h.store.fail_saves(true);
    assert_eq!(h.get("/api/a", &id).await.status(), StatusCode::OK);
    h.store.fail_saves(false);
    assert_eq!(
        stored_refresh_token(&h, &id).await,
        record.tokens.refresh_token,
        "only the process holds the rotated token"
    );
    let rotated = h
        .idp
        .issued_tokens()
        .into_iter()
        .rev()
        .find(|t| t.starts_with("rt-"))
        .expect("rotated");
    h.shutdown().await;
    assert_eq!(
        stored_refresh_token(&h, &id).await.as_deref(),
        Some(rotated.as_str()),
        "saved at shutdown"
    );
}

/// The IdP is down: after `breaker_failures` failed token requests the
/// gateway stops sending them; sessions with a valid token keep working,
/// expired ones get 503 at once; after the back-off one probe closes it.
#[tokio::test]
async fn idp_outage_opens_the_circuit_and_stops_token_calls() {
    let h = Harness::start(
        "breaker_failures = 3\nbreaker_backoff = \"200ms\"\nbreaker_max_backoff = \"400ms\"",
        "",
    )
    .await;
    h.idp
        .configure(|b| b.token_reply = Some(reply(502, "text/plain", "bad gateway")));
    let (valid, _) = h.session("sid-valid", &[], 3000).await;
    let (window, _) = h.session("sid-window", &[], 30).await;
    let mut expired = Vec::new();
    for n in 0..3 {
        let (id, _) = h.session(&format!("sid-exp-{n}"), &[], -10).await;
        let resp = h.get("/api/x", &id).await;
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        expired.push(id);
    }
    let calls = h.idp.token_requests().len();
    assert_eq!(calls, 3);
    let (_, body) = h.admin_get("/readyz").await;
    let ready: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(ready["status"], "ready", "{ready}");
    assert_eq!(ready["degraded"][0]["check"], "idp", "{ready}");

    // Open: no token requests at all.
    let started = Instant::now();
    for id in &expired {
        let resp = h.get("/api/x", id).await;
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "answered at once"
    );
    assert_eq!(h.get("/api/x", &valid).await.status(), StatusCode::OK);
    assert_eq!(
        h.get("/api/x", &window).await.status(),
        StatusCode::OK,
        "a token still valid is used without a refresh attempt"
    );
    assert_eq!(h.idp.token_requests().len(), calls, "no call while open");
    for id in expired.iter().chain([&valid, &window]) {
        assert!(h.record(id).await.is_some(), "nobody logged out");
    }

    // The IdP is back: after the back-off one request probes and succeeds.
    h.idp.configure(|b| b.token_reply = None);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if h.get("/api/x", &expired[0]).await.status() == StatusCode::OK {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the circuit closes after the back-off"
        );
        tokio::task::yield_now().await;
    }
    assert_eq!(h.idp.token_requests().len(), calls + 1, "one probe");
    assert_eq!(h.get("/api/x", &expired[1]).await.status(), StatusCode::OK);
    let (_, body) = h.admin_get("/readyz").await;
    let ready: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(ready["degraded"], json!([]), "{ready}");
}

fn logout_token(h: &Harness, sub: Option<&str>, sid: Option<&str>) -> String {
    let mut c = json!({
        "iss": h.idp.issuer,
        "aud": CLIENT_ID,
        "iat": now(),
        "exp": now() + 120,
        "jti": random_token(16),
        "events": { "http://schemas.openid.net/event/backchannel-logout": {} },
    });
    if let Some(sub) = sub {
        c["sub"] = json!(sub);
    }
    if let Some(sid) = sid {
        c["sid"] = json!(sid);
    }
    let mut header = Header::new(Algorithm::ES256);
    header.typ = Some("logout+jwt".into());
    let signer = h.idp.signer();
    header.kid = Some(signer.kid.clone());
    signer.sign_with_header(header, &c)
}

async fn post_logout(h: &Harness, token: &str) -> StatusCode {
    h.http
        .post(format!("{}/auth/backchannel-logout", h.base))
        .form(&[("logout_token", token)])
        .send()
        .await
        .expect("POST")
        .status()
}

/// The store fails the delete: the IdP gets 503 and its retry of the same
/// token must still be served (not refused as a replay).
#[tokio::test]
async fn failed_backchannel_delete_lets_the_idp_retry() {
    let h = Harness::start("", "").await;
    let (id, _) = h.session("sid-bc", &[], 300).await;
    let token = logout_token(&h, Some(SUBJECT), Some("sid-bc"));
    h.store.fail_deletes(true);
    assert_eq!(
        post_logout(&h, &token).await,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert!(h.record(&id).await.is_some());
    h.store.fail_deletes(false);
    assert_eq!(
        post_logout(&h, &token).await,
        StatusCode::OK,
        "the retry is served"
    );
    assert!(h.record(&id).await.is_none(), "logged out");
    assert_eq!(
        post_logout(&h, &token).await,
        StatusCode::BAD_REQUEST,
        "then a replay"
    );
}

/// A logout token ends only sessions begun before it was issued (plus the
/// clock skew): should its `jti` be forgotten (a memory store restarted), a
/// replay still cannot end the session of a user who signed in again.
#[tokio::test]
async fn logout_token_never_ends_a_session_begun_after_it() {
    let h = Harness::start("", "").await;
    let (old, _) = h.session("sid-1", &[], 300).await;
    let token = logout_token(&h, Some(SUBJECT), None);
    // Signed in again, later than the token's iat plus the clock skew.
    h.clock.advance(90);
    let (new, _) = h.session("sid-2", &[], 300).await;
    assert_eq!(post_logout(&h, &token).await, StatusCode::OK);
    assert!(h.record(&old).await.is_none(), "the session it names ends");
    assert!(h.record(&new).await.is_some(), "the later one lives");
}

/// The refresh token the store holds for the session.
async fn stored_refresh_token(h: &Harness, id: &SessionId) -> Option<Box<str>> {
    h.record(id).await.expect("session").tokens.refresh_token
}
