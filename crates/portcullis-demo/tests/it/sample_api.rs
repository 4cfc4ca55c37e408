//! The sample API, with tokens from a real dev IdP.

use crate::common::*;
use serde_json::{Value, json};

async fn get(url: String, token: Option<&str>) -> reqwest::Response {
    let mut request = http().get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.expect("request")
}

#[tokio::test]
async fn no_or_bad_token_is_401_with_a_bearer_challenge() {
    let idp = start_idp().await;
    let api = start_api(&idp).await;
    let tokens = tokens_for(&idp, "alice").await;
    let id_token = str_field(&tokens, "id_token");
    for token in [None, Some("garbage"), Some(id_token)] {
        let response = get(format!("{api}/api/whoami"), token).await;
        assert_eq!(response.status(), 401);
        assert_eq!(
            response.headers()["www-authenticate"],
            r#"Bearer error="invalid_token""#
        );
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["error"], "unauthorized");
    }
}

#[tokio::test]
async fn token_from_another_idp_is_refused() {
    let idp = start_idp().await;
    let other = start_idp().await;
    let api = start_api(&idp).await;
    let foreign = tokens_for(&other, "alice").await;
    let response = get(
        format!("{api}/api/whoami"),
        Some(str_field(&foreign, "access_token")),
    )
    .await;
    assert_eq!(response.status(), 401);
}

#[tokio::test]
async fn valid_token_gets_whoami() {
    let idp = start_idp().await;
    let api = start_api(&idp).await;
    let tokens = tokens_for(&idp, "alice").await;
    let access_token = str_field(&tokens, "access_token");
    let response = get(format!("{api}/api/whoami"), Some(access_token)).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    let claims = verify(&idp, access_token, "portcullis-demo-api").await;
    assert_eq!(body["sub"], "alice");
    assert_eq!(body["roles"], json!(["admin", "hr"]));
    assert_eq!(body["token_expires_at"], claims["exp"]);
}

#[tokio::test]
async fn roles_gate_admin_and_hr() {
    let idp = start_idp().await;
    let api = start_api(&idp).await;
    for (user, admin, hr) in [("alice", 200, 200), ("bob", 403, 200), ("carol", 403, 403)] {
        let tokens = tokens_for(&idp, user).await;
        let token = str_field(&tokens, "access_token");
        let response = get(format!("{api}/api/admin/ping"), Some(token)).await;
        assert_eq!(response.status(), admin, "{user} admin");
        let body: Value = response.json().await.expect("json");
        if admin == 200 {
            assert_eq!(body, json!({"pong": "admin"}));
        } else {
            assert_eq!(body["error"], "forbidden");
        }
        let response = get(format!("{api}/api/hr/ping"), Some(token)).await;
        assert_eq!(response.status(), hr, "{user} hr");
    }
}

#[tokio::test]
async fn echo_returns_the_json_body_and_refuses_anything_else() {
    let idp = start_idp().await;
    let api = start_api(&idp).await;
    let tokens = tokens_for(&idp, "carol").await;
    let token = str_field(&tokens, "access_token");
    let response = http()
        .post(format!("{api}/api/echo"))
        .bearer_auth(token)
        .json(&json!({"hello": "world"}))
        .send()
        .await
        .expect("echo");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body, json!({"echo": {"hello": "world"}}));

    let response = http()
        .post(format!("{api}/api/echo"))
        .bearer_auth(token)
        .body("not json")
        .send()
        .await
        .expect("echo");
    assert_eq!(response.status(), 400);

    let response = get(format!("{api}/api/nope"), Some(token)).await;
    assert_eq!(response.status(), 404);
}

#[tokio::test]
async fn stream_yields_ten_events_then_ends() {
    let idp = start_idp().await;
    let api = start_api(&idp).await;
    let tokens = tokens_for(&idp, "bob").await;
    let response = get(
        format!("{api}/api/stream"),
        Some(str_field(&tokens, "access_token")),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .expect("ascii")
            .starts_with("text/event-stream")
    );
    let mut response = response;
    let mut body = String::new();
    let mut chunk_count = 0;
    while let Some(chunk) = response.chunk().await.expect("chunk") {
        body.push_str(std::str::from_utf8(&chunk).expect("utf-8"));
        chunk_count += 1;
    }
    let events: Vec<&str> = body
        .lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .collect();
    let expected: Vec<String> = (1..=10).map(|n| format!("{{\"n\":{n}}}")).collect();
    assert_eq!(events, expected);
    assert!(
        chunk_count > 1,
        "events arrive as they happen, not in one buffer"
    );
}
