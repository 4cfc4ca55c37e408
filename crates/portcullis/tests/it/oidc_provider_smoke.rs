//! Checks the test OpenID Provider (tests/oidc-provider) the other integration
//! tests run against: discovery, JWKS, and a full code flow with PKCE, refresh
//! token rotation, reuse detection and revocation.

use crate::common::oidc_provider::{
    Browser, CLIENT_ID, CLIENT_SECRET, OidcProvider, OpOptions, jwt_payload, pkce_pair, query_map,
};
use serde_json::Value;

const REDIRECT_URI: &str = "http://127.0.0.1:9/auth/callback";

fn op_options() -> OpOptions {
    OpOptions {
        redirect_uris: vec![REDIRECT_URI.to_owned()],
        post_logout_redirect_uris: vec!["http://127.0.0.1:9/".to_owned()],
        ..Default::default()
    }
}

async fn token_request(op: &OidcProvider, form: &[(&str, &str)]) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(op.url("/token"))
        .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
        .form(form)
        .send()
        .await
        .expect("token request");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("token response JSON"))
}

#[tokio::test]
async fn discovery_and_jwks() {
    let op = OidcProvider::start(op_options()).await;
    assert!(op.issuer.starts_with("http://127.0.0.1:"));

    let d = op.discovery().await;
    assert_eq!(d["issuer"], op.issuer.as_str());
    assert_eq!(d["authorization_response_iss_parameter_supported"], true);
    assert_eq!(
        d["code_challenge_methods_supported"],
        serde_json::json!(["S256"])
    );
    assert_eq!(
        d["revocation_endpoint"],
        op.url("/token/revocation").as_str()
    );
    assert_eq!(d["end_session_endpoint"], op.url("/session/end").as_str());
    assert_eq!(d["backchannel_logout_supported"], true);
    for scope in ["openid", "profile", "email", "roles", "offline_access"] {
        assert!(
            d["scopes_supported"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s == scope),
            "scope {scope} missing: {}",
            d["scopes_supported"]
        );
    }

    let jwks: Value = reqwest::get(d["jwks_uri"].as_str().unwrap())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let keys = jwks["keys"].as_array().expect("keys");
    let algs: Vec<&str> = keys.iter().filter_map(|k| k["alg"].as_str()).collect();
    assert!(algs.contains(&"RS256") && algs.contains(&"ES256"), "{jwks}");
    assert!(
        keys.iter()
            .all(|k| k["kid"].is_string() && k.get("d").is_none()),
        "{jwks}"
    );
}

#[tokio::test]
async fn full_code_flow_with_refresh_rotation() {
    let op = OidcProvider::start(op_options()).await;
    let mut browser = Browser::new();
    let (verifier, challenge) = pkce_pair();
    let authorize = op.authorize_url(REDIRECT_URI, "state-1", "nonce-1", &challenge);
    let at_redirect_uri = |u: &url::Url| u.as_str().starts_with(REDIRECT_URI);

    // Wrong password: the login page again, no redirect.
    let page = op
        .login(&mut browser, &authorize, "alice", "wrong", at_redirect_uri)
        .await
        .page();
    assert_eq!(page.status, 200);
    assert!(page.body.contains("id=\"error\""), "{}", page.body);

    // Login; consent is granted by the OP without a page.
    let callback = op
        .login(&mut browser, &authorize, "alice", "alice", at_redirect_uri)
        .await
        .stopped();
    let q = query_map(&callback);
    assert_eq!(q["state"], "state-1");
    assert_eq!(q["iss"], op.issuer);
    let code = q["code"].clone();

    // Code exchange needs the PKCE verifier.
    let (status, body) = token_request(
        &op,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT_URI),
        ],
    )
    .await;
    assert_eq!(status, 400, "{body}");

    // Fresh code (the OP session and grant now exist: no form, no consent).
    let callback = op
        .login(&mut browser, &authorize, "alice", "alice", at_redirect_uri)
        .await
        .stopped();
    let code = query_map(&callback)["code"].clone();
    let (status, tokens) = token_request(
        &op,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT_URI),
            ("code_verifier", &verifier),
        ],
    )
    .await;
    assert_eq!(status, 200, "{tokens}");
    assert_eq!(tokens["token_type"], "Bearer");
    assert_eq!(tokens["expires_in"], 300);
    let access_token = tokens["access_token"].as_str().expect("access_token");
    let refresh_1 = tokens["refresh_token"]
        .as_str()
        .expect("refresh_token")
        .to_owned();
    let id = jwt_payload(tokens["id_token"].as_str().expect("id_token"));
    assert_eq!(id["iss"], op.issuer.as_str());
    assert_eq!(id["aud"], CLIENT_ID);
    assert_eq!(id["sub"], "alice");
    assert_eq!(id["nonce"], "nonce-1");
    assert_eq!(id["roles"], serde_json::json!(["admin", "hr"]));
    assert_eq!(id["email"], "alice@example.com");
    assert_eq!(id["preferred_username"], "alice");
    // `sid` only for clients registered with a backchannel_logout_uri (see below).

    // Userinfo.
    let userinfo: Value = reqwest::Client::new()
        .get(op.url("/me"))
        .bearer_auth(access_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(userinfo["sub"], "alice");
    assert_eq!(userinfo["roles"], serde_json::json!(["admin", "hr"]));

    // Refresh rotates the refresh token and returns a new ID token.
    let (status, refreshed) = token_request(
        &op,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh_1),
        ],
    )
    .await;
    assert_eq!(status, 200, "{refreshed}");
    let refresh_2 = refreshed["refresh_token"]
        .as_str()
        .expect("rotated")
        .to_owned();
    assert_ne!(refresh_2, refresh_1);
    let id2 = jwt_payload(refreshed["id_token"].as_str().expect("id_token on refresh"));
    assert_eq!((&id2["iss"], &id2["sub"]), (&id["iss"], &id["sub"]));
    assert_eq!(op.refresh_count().await, 1);
    assert!(!op.refresh_token_reuse_detected().await);

    // Reusing the consumed token fails and revokes the grant (new one too).
    let (status, err) = token_request(
        &op,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh_1),
        ],
    )
    .await;
    assert_eq!(
        (status, err["error"].as_str()),
        (400, Some("invalid_grant")),
        "{err}"
    );
    assert!(op.refresh_token_reuse_detected().await);
    assert!(!op.events_of("grant.revoked").await.is_empty());
    let (status, _) = token_request(
        &op,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh_2),
        ],
    )
    .await;
    assert_eq!(status, 400);

    // Revocation calls are recorded.
    let resp = reqwest::Client::new()
        .post(op.url("/token/revocation"))
        .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
        .form(&[
            ("token", refresh_2.as_str()),
            ("token_type_hint", "refresh_token"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let revocations = op.revocations().await;
    let revocations = revocations.as_array().unwrap();
    assert_eq!(revocations.len(), 1);
    assert_eq!(revocations[0]["client_id"], CLIENT_ID);
    assert_eq!(revocations[0]["token"], refresh_2.as_str());
    assert_eq!(revocations[0]["token_type_hint"], "refresh_token");

    // An admin-style revocation at the OP kills a live refresh token.
    let callback = op
        .login(&mut browser, &authorize, "alice", "alice", at_redirect_uri)
        .await
        .stopped();
    let code = query_map(&callback)["code"].clone();
    let (status, tokens) = token_request(
        &op,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT_URI),
            ("code_verifier", &verifier),
        ],
    )
    .await;
    assert_eq!(status, 200, "{tokens}");
    assert!(!op.revoke_grants(Some("alice")).await.is_empty());
    let (status, err) = token_request(
        &op,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", tokens["refresh_token"].as_str().unwrap()),
        ],
    )
    .await;
    assert_eq!(
        (status, err["error"].as_str()),
        (400, Some("invalid_grant")),
        "{err}"
    );
}

#[tokio::test]
async fn revocation_of_live_refresh_token_and_no_rotation() {
    let op = OidcProvider::start(OpOptions {
        rotate_refresh_token: false,
        access_token_ttl: 60,
        ..op_options()
    })
    .await;
    let mut browser = Browser::new();
    let (verifier, challenge) = pkce_pair();
    let authorize = op.authorize_url(REDIRECT_URI, "s", "n", &challenge);
    let callback = op
        .login(&mut browser, &authorize, "carol", "carol", |u| {
            u.as_str().starts_with(REDIRECT_URI)
        })
        .await
        .stopped();
    let code = query_map(&callback)["code"].clone();
    let (status, tokens) = token_request(
        &op,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT_URI),
            ("code_verifier", &verifier),
        ],
    )
    .await;
    assert_eq!(status, 200, "{tokens}");
    assert_eq!(tokens["expires_in"], 60);
    assert_eq!(
        jwt_payload(tokens["id_token"].as_str().unwrap())["roles"],
        serde_json::json!([])
    );
    let refresh = tokens["refresh_token"].as_str().unwrap().to_owned();

    // Without rotation the same refresh token keeps working.
    for _ in 0..2 {
        let (status, refreshed) = token_request(
            &op,
            &[("grant_type", "refresh_token"), ("refresh_token", &refresh)],
        )
        .await;
        assert_eq!(status, 200, "{refreshed}");
        assert!(
            refreshed.get("refresh_token").is_none()
                || refreshed["refresh_token"] == refresh.as_str(),
            "{refreshed}"
        );
    }

    // Fault injection on the token endpoint.
    op.fail_path(
        "/token",
        503,
        r#"{"error":"temporarily_unavailable"}"#,
        Some(1),
    )
    .await;
    let (status, body) = token_request(
        &op,
        &[("grant_type", "refresh_token"), ("refresh_token", &refresh)],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (503, Some("temporarily_unavailable"))
    );
    let (status, _) = token_request(
        &op,
        &[("grant_type", "refresh_token"), ("refresh_token", &refresh)],
    )
    .await;
    assert_eq!(status, 200, "fault was for one request only");

    let resp = reqwest::Client::new()
        .post(op.url("/token/revocation"))
        .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
        .form(&[
            ("token", refresh.as_str()),
            ("token_type_hint", "refresh_token"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let revocations = op.revocations().await;
    assert_eq!(revocations[0]["found"], true, "{revocations}");
    assert_eq!(revocations[0]["kind"], "RefreshToken");
    assert_eq!(revocations[0]["sub"], "carol");
    let (status, _) = token_request(
        &op,
        &[("grant_type", "refresh_token"), ("refresh_token", &refresh)],
    )
    .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn backchannel_logout_reaches_loopback_client() {
    use axum::{Form, Router, extract::State, routing::post};
    use std::collections::HashMap;
    use tokio::sync::mpsc;

    // A receiver standing in for the gateway's back-channel logout endpoint.
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    let app = Router::new()
        .route(
            "/auth/backchannel-logout",
            post(
                |State(tx): State<mpsc::UnboundedSender<String>>,
                 Form(f): Form<HashMap<String, String>>| async move {
                    tx.send(f.get("logout_token").cloned().unwrap_or_default())
                        .unwrap();
                    ""
                },
            ),
        )
        .with_state(tx);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let op = OidcProvider::start(OpOptions {
        backchannel_logout_uri: Some(format!("http://127.0.0.1:{port}/auth/backchannel-logout")),
        ..op_options()
    })
    .await;
    let mut browser = Browser::new();
    let (verifier, challenge) = pkce_pair();
    let authorize = op.authorize_url(REDIRECT_URI, "s", "n", &challenge);
    let callback = op
        .login(&mut browser, &authorize, "bob", "bob", |u| {
            u.as_str().starts_with(REDIRECT_URI)
        })
        .await
        .stopped();
    let code = query_map(&callback)["code"].clone();
    let (status, tokens) = token_request(
        &op,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT_URI),
            ("code_verifier", &verifier),
        ],
    )
    .await;
    assert_eq!(status, 200, "{tokens}");
    let id = jwt_payload(tokens["id_token"].as_str().unwrap());
    let sid = id["sid"].as_str().expect("sid in ID token").to_owned();
    assert_eq!(op.sessions().await[0]["sid"], sid.as_str());

    let sent = op.backchannel_logout("bob", None).await;
    assert_eq!(sent[0]["ok"], true, "{sent}");
    let logout_token = rx.recv().await.expect("logout token");
    let claims = jwt_payload(&logout_token);
    assert_eq!(claims["iss"], op.issuer.as_str());
    assert_eq!(claims["aud"], CLIENT_ID);
    assert_eq!(claims["sub"], "bob");
    assert_eq!(claims["sid"], sid.as_str());
    assert!(
        claims["jti"].is_string() && claims.get("nonce").is_none(),
        "{claims}"
    );
    assert!(claims["events"]["http://schemas.openid.net/event/backchannel-logout"].is_object());

    // RP-initiated logout through the browser: back to post_logout_redirect_uri
    // with state, and the OP itself sends a logout token.
    let mut end_session = url::Url::parse(
        op.discovery().await["end_session_endpoint"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    end_session
        .query_pairs_mut()
        .append_pair("id_token_hint", tokens["id_token"].as_str().unwrap())
        .append_pair("post_logout_redirect_uri", "http://127.0.0.1:9/")
        .append_pair("state", "bye");
    let back = op
        .rp_logout(&mut browser, end_session.as_str(), |u| {
            u.as_str().starts_with("http://127.0.0.1:9/")
        })
        .await
        .stopped();
    assert_eq!(query_map(&back)["state"], "bye");
    let claims = jwt_payload(&rx.recv().await.expect("logout token from end_session"));
    assert_eq!(
        (claims["sub"].as_str(), claims["sid"].as_str()),
        (Some("bob"), Some(sid.as_str()))
    );
    assert!(!op.events_of("end_session.success").await.is_empty());
    // The grant is gone: the refresh token no longer works.
    let (status, _) = token_request(
        &op,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", tokens["refresh_token"].as_str().unwrap()),
        ],
    )
    .await;
    assert_eq!(status, 400);
}
