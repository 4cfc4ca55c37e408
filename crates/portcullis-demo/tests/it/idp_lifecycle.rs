//! The dev IdP after login: refresh rotation, revocation, logout, its key file, and its
//! refusal to serve beyond loopback.

use crate::common::*;
use portcullis_demo::{DevIdp, SampleApi};
use serde_json::Value;
use tokio::net::TcpListener;

#[tokio::test]
async fn refresh_rotates_and_reusing_an_old_token_revokes_the_family() {
    let idp = start_idp().await;
    let http = http();
    let first = tokens_for(&idp, "alice").await;
    let first_id = verify(&idp, str_field(&first, "id_token"), CLIENT_ID).await;
    let r1 = str_field(&first, "refresh_token");

    let response = refresh(&http, &idp, r1).await;
    assert_eq!(response.status(), 200);
    let second: Value = response.json().await.expect("json");
    let r2 = str_field(&second, "refresh_token");
    assert_ne!(r1, r2, "refresh token rotated");
    let id = verify(&idp, str_field(&second, "id_token"), CLIENT_ID).await;
    assert_eq!(id["sub"], first_id["sub"]);
    assert_eq!(id["iss"], first_id["iss"]);
    assert_eq!(id["aud"], first_id["aud"]);
    assert_eq!(id["sid"], first_id["sid"]);
    assert!(id.get("nonce").is_none(), "no nonce on refresh");
    verify(
        &idp,
        str_field(&second, "access_token"),
        "portcullis-demo-api",
    )
    .await;

    let reuse = refresh(&http, &idp, r1).await;
    assert_eq!(reuse.status(), 400);
    let body: Value = reuse.json().await.expect("json");
    assert_eq!(body["error"], "invalid_grant");

    let after = refresh(&http, &idp, r2).await;
    assert_eq!(after.status(), 400, "the whole family is revoked");
    let body: Value = after.json().await.expect("json");
    assert_eq!(body["error"], "invalid_grant");
}

#[tokio::test]
async fn revoke_kills_the_refresh_token_and_is_recorded() {
    let idp = start_idp().await;
    let http = http();
    let tokens = tokens_for(&idp, "bob").await;
    let refresh_token = str_field(&tokens, "refresh_token");
    let response = http
        .post(idp.url("/revoke"))
        .basic_auth(urlencode(CLIENT_ID), Some(urlencode(CLIENT_SECRET)))
        .form(&[
            ("token", refresh_token),
            ("token_type_hint", "refresh_token"),
        ])
        .send()
        .await
        .expect("revoke");
    assert_eq!(response.status(), 200);
    assert_eq!(idp.idp.revoked_tokens(), vec![refresh_token.to_owned()]);
    assert_eq!(refresh(&http, &idp, refresh_token).await.status(), 400);

    let unknown = http
        .post(idp.url("/revoke"))
        .form(&[
            ("token", "nope"),
            ("client_id", CLIENT_ID),
            ("client_secret", CLIENT_SECRET),
        ])
        .send()
        .await
        .expect("revoke");
    assert_eq!(unknown.status(), 200, "unknown tokens are fine (RFC 7009)");

    let unauthenticated = http
        .post(idp.url("/revoke"))
        .form(&[("token", refresh_token)])
        .send()
        .await
        .expect("revoke");
    assert_eq!(unauthenticated.status(), 401);
    assert_eq!(idp.idp.revoked_tokens().len(), 2);
}

#[tokio::test]
async fn end_session_redirects_to_a_registered_uri_and_ends_the_login() {
    let idp = start_idp().await;
    let http = http();
    let tokens = tokens_for(&idp, "alice").await;
    let mut url = url::Url::parse(&idp.url("/end_session")).expect("url");
    url.query_pairs_mut()
        .append_pair("id_token_hint", str_field(&tokens, "id_token"))
        .append_pair("post_logout_redirect_uri", POST_LOGOUT_URI)
        .append_pair("state", "bye");
    let response = http.get(url.as_str()).send().await.expect("end_session");
    assert_eq!(response.status(), 302);
    let (target, pairs) = location_params(&response);
    assert_eq!(target, POST_LOGOUT_URI);
    assert_eq!(param(&pairs, "state"), Some("bye"));
    let refreshed = refresh(&http, &idp, str_field(&tokens, "refresh_token")).await;
    assert_eq!(
        refreshed.status(),
        400,
        "refresh tokens of the sid are revoked"
    );
}

#[tokio::test]
async fn end_session_to_an_unregistered_uri_shows_a_page() {
    let idp = start_idp().await;
    let mut url = url::Url::parse(&idp.url("/end_session")).expect("url");
    url.query_pairs_mut()
        .append_pair("post_logout_redirect_uri", "https://evil.example/");
    let response = http().get(url.as_str()).send().await.expect("end_session");
    assert_eq!(response.status(), 200);
    assert!(response.headers().get("location").is_none());
    assert!(
        response
            .text()
            .await
            .expect("html")
            .contains("You are logged out")
    );
}

#[tokio::test]
async fn key_file_is_created_private_and_reused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("keys").join("idp-signing.pem");
    let cfg = config("http://127.0.0.1:1", Some(path.clone()));
    let first = DevIdp::new(cfg.clone()).expect("first");
    assert!(path.exists());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let second = DevIdp::new(cfg).expect("second");
    assert_eq!(first.kid(), second.kid());
    assert_eq!(first.jwks(), second.jwks());
    assert!(
        std::fs::read_to_string(&path)
            .expect("pem")
            .starts_with("-----BEGIN PRIVATE KEY-----")
    );

    let der_path = dir.path().join("idp-signing-key.der");
    let der = DevIdp::new(config("http://127.0.0.1:1", Some(der_path.clone()))).expect("der");
    assert_eq!(
        std::fs::read(&der_path).expect("der").first(),
        Some(&0x30),
        "raw DER"
    );
    let der_again = DevIdp::new(config("http://127.0.0.1:1", Some(der_path))).expect("der again");
    assert_eq!(der.kid(), der_again.kid());

    let ephemeral = DevIdp::new(config("http://127.0.0.1:1", None)).expect("ephemeral");
    assert_ne!(first.kid(), ephemeral.kid());
}

#[tokio::test]
async fn bad_config_is_refused() {
    for issuer in ["http://127.0.0.1:1/", "not a url", "ftp://127.0.0.1"] {
        assert!(DevIdp::new(config(issuer, None)).is_err(), "{issuer}");
    }
}

#[tokio::test]
async fn non_loopback_listener_is_refused() {
    let idp = DevIdp::new(config("http://127.0.0.1:1", None)).expect("idp");
    let listener = TcpListener::bind("0.0.0.0:0").await.expect("bind");
    let err = idp.serve(listener).await.expect_err("refused");
    assert!(
        matches!(err, portcullis_demo::DemoError::NotLoopback(_)),
        "{err}"
    );

    let api = SampleApi::new(
        "http://127.0.0.1:1".into(),
        "http://127.0.0.1:1/jwks".into(),
    );
    let listener = TcpListener::bind("0.0.0.0:0").await.expect("bind");
    assert!(api.serve(listener).await.is_err());
}
