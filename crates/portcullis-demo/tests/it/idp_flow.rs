//! The dev IdP's authorization-code flow, end to end over HTTP.

use crate::common::*;
use serde_json::Value;

#[tokio::test]
async fn discovery_names_every_endpoint_under_the_issuer() {
    let idp = start_idp().await;
    let meta: Value = http()
        .get(idp.url("/.well-known/openid-configuration"))
        .send()
        .await
        .expect("discovery")
        .json()
        .await
        .expect("json");
    assert_eq!(meta["issuer"], idp.issuer.as_str());
    for (key, path) in [
        ("authorization_endpoint", "/authorize"),
        ("token_endpoint", "/token"),
        ("userinfo_endpoint", "/userinfo"),
        ("jwks_uri", "/jwks"),
        ("end_session_endpoint", "/end_session"),
        ("revocation_endpoint", "/revoke"),
    ] {
        assert_eq!(meta[key], idp.url(path).as_str(), "{key}");
    }
    assert_eq!(
        meta["code_challenge_methods_supported"],
        serde_json::json!(["S256"])
    );
    assert_eq!(
        meta["id_token_signing_alg_values_supported"],
        serde_json::json!(["ES256"])
    );
    assert_eq!(meta["authorization_response_iss_parameter_supported"], true);
    assert_eq!(idp.idp.jwks()["keys"][0]["kid"], idp.idp.kid());
}

#[tokio::test]
async fn code_flow_with_client_secret_basic_issues_verifiable_tokens() {
    let idp = start_idp().await;
    let http = http();
    let pkce = pkce("basic");
    let url = authorize_url(&idp, &pkce, REDIRECT_URI, "state-1");

    let page = http.get(&url).send().await.expect("authorize");
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["cache-control"], "no-store");
    let html = page.text().await.expect("html");
    for needle in [
        "name=\"username\"",
        "name=\"password\"",
        "type=\"submit\"",
        "alice",
        "bob",
        "carol",
    ] {
        assert!(html.contains(needle), "login page lacks {needle}");
    }

    let response = submit_login(&http, &idp, &url, "alice", "alice").await;
    assert_eq!(response.status(), 302);
    let (target, pairs) = location_params(&response);
    assert_eq!(target, REDIRECT_URI);
    assert_eq!(param(&pairs, "state"), Some("state-1"));
    assert_eq!(param(&pairs, "iss"), Some(idp.issuer.as_str()));
    let code = param(&pairs, "code").expect("code");

    let response = exchange(&http, &idp, code, &pkce.verifier).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let tokens: Value = response.json().await.expect("json");
    assert_eq!(tokens["token_type"], "Bearer");
    assert_eq!(tokens["expires_in"], 300);
    assert!(tokens["refresh_token"].is_string());
    assert!(str_field(&tokens, "scope").contains("openid"));

    let id = verify(&idp, str_field(&tokens, "id_token"), CLIENT_ID).await;
    assert_eq!(id["iss"], idp.issuer.as_str());
    assert_eq!(id["aud"], CLIENT_ID);
    assert_eq!(id["sub"], "alice");
    assert_eq!(id["nonce"], "nonce-state-1");
    assert_eq!(id["name"], "Alice Example");
    assert_eq!(id["email"], "alice@example.com");
    assert_eq!(id["email_verified"], true);
    assert_eq!(id["roles"], serde_json::json!(["admin", "hr"]));
    assert!(id["sid"].as_str().is_some_and(|s| s.len() >= 22));
    assert!(id["auth_time"].is_u64());

    let access = verify(
        &idp,
        str_field(&tokens, "access_token"),
        "portcullis-demo-api",
    )
    .await;
    assert_eq!(access["sub"], "alice");
    assert_eq!(access["client_id"], CLIENT_ID);
    assert_eq!(access["sid"], id["sid"]);
    assert!(access["jti"].is_string());

    let info: Value = http
        .get(idp.url("/userinfo"))
        .bearer_auth(str_field(&tokens, "access_token"))
        .send()
        .await
        .expect("userinfo")
        .json()
        .await
        .expect("json");
    assert_eq!(info["sub"], "alice");
    assert_eq!(info["preferred_username"], "alice");
    assert_eq!(info["roles"], serde_json::json!(["admin", "hr"]));
}

#[tokio::test]
async fn code_flow_with_client_secret_post() {
    let idp = start_idp().await;
    let http = http();
    let pkce = pkce("post");
    let code = login_code(&http, &idp, "bob", &pkce).await;
    let response = http
        .post(idp.url("/token"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", REDIRECT_URI),
            ("code_verifier", pkce.verifier.as_str()),
            ("client_id", CLIENT_ID),
            ("client_secret", CLIENT_SECRET),
        ])
        .send()
        .await
        .expect("token");
    assert_eq!(response.status(), 200);
    let tokens: Value = response.json().await.expect("json");
    let id = verify(&idp, str_field(&tokens, "id_token"), CLIENT_ID).await;
    assert_eq!(id["sub"], "bob");
    assert_eq!(id["roles"], serde_json::json!(["hr"]));
}

#[tokio::test]
async fn wrong_client_secret_is_invalid_client() {
    let idp = start_idp().await;
    let http = http();
    let pkce = pkce("bad-client");
    let code = login_code(&http, &idp, "alice", &pkce).await;
    let response = http
        .post(idp.url("/token"))
        .basic_auth(CLIENT_ID, Some("wrong"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", REDIRECT_URI),
            ("code_verifier", pkce.verifier.as_str()),
        ])
        .send()
        .await
        .expect("token");
    assert_eq!(response.status(), 401);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"], "invalid_client");
}

#[tokio::test]
async fn pkce_verifier_mismatch_is_invalid_grant() {
    let idp = start_idp().await;
    let http = http();
    let pkce_used = pkce("one");
    let code = login_code(&http, &idp, "alice", &pkce_used).await;
    let response = exchange(&http, &idp, &code, &pkce("other").verifier).await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"], "invalid_grant");
    // The failed attempt used the code up.
    let response = exchange(&http, &idp, &code, &pkce_used.verifier).await;
    assert_eq!(response.status(), 400);
}

#[tokio::test]
async fn code_reuse_is_invalid_grant_and_revokes_its_refresh_token() {
    let idp = start_idp().await;
    let http = http();
    let pkce = pkce("reuse");
    let code = login_code(&http, &idp, "alice", &pkce).await;
    let first: Value = exchange(&http, &idp, &code, &pkce.verifier)
        .await
        .json()
        .await
        .expect("json");
    let again = exchange(&http, &idp, &code, &pkce.verifier).await;
    assert_eq!(again.status(), 400);
    let body: Value = again.json().await.expect("json");
    assert_eq!(body["error"], "invalid_grant");

    let response = refresh(&http, &idp, str_field(&first, "refresh_token")).await;
    assert_eq!(
        response.status(),
        400,
        "tokens from a replayed code are revoked"
    );
}

#[tokio::test]
async fn wrong_password_shows_the_form_again_without_a_code() {
    let idp = start_idp().await;
    let http = http();
    let url = authorize_url(&idp, &pkce("wrong"), REDIRECT_URI, "s");
    let response = submit_login(&http, &idp, &url, "alice", "bob").await;
    assert_eq!(response.status(), 200);
    assert!(response.headers().get("location").is_none());
    let html = response.text().await.expect("html");
    assert!(html.contains("Wrong username or password"));
    assert!(html.contains("name=\"password\""));
}

#[tokio::test]
async fn unregistered_redirect_uri_gets_an_error_page_not_a_redirect() {
    let idp = start_idp().await;
    let http = http();
    for redirect_uri in [
        "https://evil.example/cb",
        "http://127.0.0.1:1/auth/callback/x",
    ] {
        let url = authorize_url(&idp, &pkce("r"), redirect_uri, "s");
        let response = http.get(&url).send().await.expect("authorize");
        assert_eq!(response.status(), 400);
        assert!(response.headers().get("location").is_none());
        let html = response.text().await.expect("html");
        assert!(html.contains("redirect_uri") && !html.contains("name=\"password\""));
    }
}

#[tokio::test]
async fn missing_pkce_is_sent_back_as_invalid_request() {
    let idp = start_idp().await;
    let url = authorize_url(&idp, &pkce("x"), REDIRECT_URI, "s")
        .replace("code_challenge_method=S256", "code_challenge_method=plain");
    let response = http().get(&url).send().await.expect("authorize");
    assert_eq!(response.status(), 302);
    let (target, pairs) = location_params(&response);
    assert_eq!(target, REDIRECT_URI);
    assert_eq!(param(&pairs, "error"), Some("invalid_request"));
    assert_eq!(param(&pairs, "state"), Some("s"));
    assert!(param(&pairs, "code").is_none());
}

#[tokio::test]
async fn echoed_parameters_are_html_escaped() {
    let idp = start_idp().await;
    let url = authorize_url(
        &idp,
        &pkce("x"),
        REDIRECT_URI,
        "\"><script>alert(1)</script>",
    );
    let html = http()
        .get(&url)
        .send()
        .await
        .expect("authorize")
        .text()
        .await
        .expect("html");
    assert!(!html.contains("<script>"));
    assert!(html.contains("&quot;&gt;&lt;script&gt;"));
}

#[tokio::test]
async fn userinfo_refuses_a_bad_token() {
    let idp = start_idp().await;
    let tokens = tokens_for(&idp, "carol").await;
    let tampered = format!("{}x", str_field(&tokens, "access_token"));
    for token in [tampered.as_str(), str_field(&tokens, "id_token")] {
        let response = http()
            .get(idp.url("/userinfo"))
            .bearer_auth(token)
            .send()
            .await
            .expect("userinfo");
        assert_eq!(response.status(), 401);
        assert!(response.headers().contains_key("www-authenticate"));
    }
}
