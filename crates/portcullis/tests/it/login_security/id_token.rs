//! Item 4: no session before the ID token is fully validated — signature
//! against the JWKS (rotation, `kid` absent), alg allow-list (no `none`, no
//! HMAC with the public key), iss, aud, azp, exp, iat, nonce, sub.

use std::{sync::Arc, time::Duration};

use reqwest::StatusCode;
use serde_json::{Value, json};

use super::{Harness, browser, eventually, location};
use crate::common::crafted_idp::{
    Behaviour, CLIENT_ID, EcKey, IdTokenForm, KidHeader, hmac_jwt, now, unsigned_jwt,
};

/// Bend the token response, log in, and expect 400 for `reason` with no session.
/// The code must have been redeemed: the refusal is about the token, not the callback.
async fn assert_id_token_refused(reason: &str, change: impl FnOnce(&mut Behaviour)) {
    let h = Harness::with_defaults().await;
    h.idp.configure(change);
    let b = browser();
    let resp = h.login_until_callback(&b).await;
    let body = h.assert_refused(&b, resp, StatusCode::BAD_REQUEST).await;
    assert_eq!(h.idp.token_requests().len(), 1);
    let message = body["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(reason),
        "refused, but not for {reason:?}: {body}"
    );
}

#[tokio::test]
async fn wrong_iss_is_refused() {
    assert_id_token_refused("iss", |b| {
        b.set_claim("iss", json!("https://impostor.example"))
    })
    .await;
}

#[tokio::test]
async fn wrong_aud_is_refused() {
    assert_id_token_refused("aud", |b| b.set_claim("aud", json!("someone-else"))).await;
}

#[tokio::test]
async fn missing_aud_is_refused() {
    assert_id_token_refused("aud", |b| b.remove_claim("aud")).await;
}

#[tokio::test]
async fn several_audiences_without_azp_are_refused() {
    assert_id_token_refused("azp", |b| {
        b.set_claim("aud", json!([CLIENT_ID, "someone-else"]))
    })
    .await;
}

#[tokio::test]
async fn azp_naming_another_client_is_refused() {
    assert_id_token_refused("azp", |b| {
        b.set_claim("aud", json!([CLIENT_ID, "someone-else"]));
        b.set_claim("azp", json!("someone-else"));
    })
    .await;
}

#[tokio::test]
async fn several_audiences_with_our_azp_are_accepted() {
    let h = Harness::with_defaults().await;
    h.idp.configure(|b| {
        b.set_claim("aud", json!([CLIENT_ID, "someone-else"]));
        b.set_claim("azp", json!(CLIENT_ID));
    });
    let b = browser();
    h.login(&b).await;
    assert_eq!(h.me(&b).await.0, StatusCode::OK);
}

#[tokio::test]
async fn wrong_nonce_is_refused() {
    assert_id_token_refused("nonce", |b| {
        b.set_claim("nonce", json!("a-nonce-from-another-login"))
    })
    .await;
}

#[tokio::test]
async fn missing_nonce_is_refused() {
    assert_id_token_refused("nonce", |b| b.remove_claim("nonce")).await;
}

#[tokio::test]
async fn expired_token_is_refused() {
    assert_id_token_refused("expired", |b| {
        b.set_claim("iat", json!(now() - 7200));
        b.set_claim("exp", json!(now() - 3600));
    })
    .await;
}

#[tokio::test]
async fn missing_exp_is_refused() {
    assert_id_token_refused("exp", |b| b.remove_claim("exp")).await;
}

#[tokio::test]
async fn iat_in_the_future_is_refused() {
    assert_id_token_refused("iat", |b| b.set_claim("iat", json!(now() + 3600))).await;
}

#[tokio::test]
async fn missing_sub_is_refused() {
    assert_id_token_refused("sub", |b| b.remove_claim("sub")).await;
}

#[tokio::test]
async fn alg_none_is_refused() {
    assert_id_token_refused("ID token", |b| {
        let kid = b.signer.kid.clone();
        b.id_token = IdTokenForm::Custom(Arc::new(move |claims| unsigned_jwt(&kid, claims)));
    })
    .await;
}

#[tokio::test]
async fn hmac_signed_with_the_public_key_is_refused() {
    // Both shapes an attacker could take for "the public key": the JWK text and the raw point.
    for as_jwk in [true, false] {
        assert_id_token_refused("ID token", move |b| {
            let kid = b.signer.kid.clone();
            let secret = match as_jwk {
                true => b.signer.jwk().to_string().into_bytes(),
                false => b.signer.public_point().to_vec(),
            };
            b.id_token =
                IdTokenForm::Custom(Arc::new(move |claims| hmac_jwt(&kid, &secret, claims)));
        })
        .await;
    }
}

#[tokio::test]
async fn bad_signature_from_another_key_with_the_same_kid_is_refused() {
    assert_id_token_refused("signature", |b| {
        let published_kid = b.signer.kid.clone();
        b.signer = EcKey::generate(&published_kid);
    })
    .await;
}

#[tokio::test]
async fn token_response_without_id_token_is_refused() {
    assert_id_token_refused("id_token", |b| b.id_token = IdTokenForm::Omitted).await;
}

#[tokio::test]
async fn userinfo_with_another_subject_is_refused() {
    assert_id_token_refused("userinfo", |b| {
        b.userinfo = Some(json!({"sub": "someone-else"}))
    })
    .await;
}

#[tokio::test]
async fn kid_absent_with_exactly_one_key_is_accepted() {
    let h = Harness::with_defaults().await;
    h.idp.configure(|b| b.kid_header = KidHeader::Absent);
    let b = browser();
    h.login(&b).await;
    assert_eq!(h.me(&b).await.0, StatusCode::OK);
}

#[tokio::test]
async fn kid_absent_with_several_keys_is_refused() {
    let idp = crate::common::crafted_idp::CraftedIdp::start().await;
    idp.configure(|b| b.published.push(EcKey::generate("k2")));
    let h = Harness::start(idp, "").await;
    h.idp.configure(|b| b.kid_header = KidHeader::Absent);
    let b = browser();
    let resp = h.login_until_callback(&b).await;
    h.assert_refused(&b, resp, StatusCode::BAD_REQUEST).await;
}

/// How long to keep retrying while the gateway's JWKS re-fetch rate limit (10 s) runs out.
const REFETCH_WINDOW: Duration = Duration::from_secs(25);

#[tokio::test]
async fn unknown_kid_triggers_one_jwks_refetch_and_a_rotated_key_is_accepted() {
    let h = Harness::with_defaults().await;
    let fetched_at_start = h.idp.jwks_fetches();
    assert!(fetched_at_start >= 1, "the gateway loads the JWKS at start");
    // The IdP rotates after the gateway cached its keys: new signer, published too.
    let rotated = EcKey::generate("k2");
    h.idp.configure(|b| {
        b.published.push(rotated.clone());
        b.signer = rotated;
    });

    // The gateway re-fetches at most once per 10 s, counting its start-up
    // fetch, so logins right after start may still be refused: retry until
    // the key is found. Every refused attempt must leave no session.
    let (h, b) = (&h, browser());
    let b = &b;
    let resp = eventually(REFETCH_WINDOW, || async move {
        let resp = h.login_until_callback(b).await;
        if resp.status().is_redirection() {
            return Some(resp);
        }
        h.assert_refused(b, resp, StatusCode::BAD_REQUEST).await;
        None
    })
    .await;
    assert_eq!(location(&resp), "/");
    assert_eq!(h.me(b).await.0, StatusCode::OK);
    assert_eq!(
        h.idp.jwks_fetches(),
        fetched_at_start + 1,
        "exactly one re-fetch for the new kid"
    );

    // The new key is cached now: another login needs no fetch.
    h.login(&browser()).await;
    assert_eq!(h.idp.jwks_fetches(), fetched_at_start + 1);
}

#[tokio::test]
async fn unknown_kid_that_stays_unknown_is_refused_and_refetched_at_most_once() {
    let h = Harness::with_defaults().await;
    let fetched_at_start = h.idp.jwks_fetches();
    // Signed by a key the IdP never publishes.
    h.idp.configure(|b| b.signer = EcKey::generate("ghost"));
    let (h, b) = (&h, browser());
    let b = &b;
    eventually(REFETCH_WINDOW, || async move {
        let resp = h.login_until_callback(b).await;
        let body: Value = h.assert_refused(b, resp, StatusCode::BAD_REQUEST).await;
        let message = body["message"].as_str().unwrap_or_default();
        assert!(message.contains("key"), "{body}");
        (h.idp.jwks_fetches() > fetched_at_start).then_some(())
    })
    .await;
    assert_eq!(h.idp.jwks_fetches(), fetched_at_start + 1);
    // Right after a re-fetch, forged kids do not make the gateway hammer the IdP.
    for _ in 0..3 {
        let resp = h.login_until_callback(b).await;
        h.assert_refused(b, resp, StatusCode::BAD_REQUEST).await;
    }
    assert_eq!(h.idp.jwks_fetches(), fetched_at_start + 1);
}
