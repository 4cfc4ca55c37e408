//! `/token` (authorization code with PKCE, and refresh with rotation) and `/userinfo`.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::json;
use sha2::{Digest as _, Sha256};

use super::errors::{OAuthError, no_store};
use super::grants::{GrantError, Login};
use super::params::{Params, bearer};
use super::{DemoUser, IdpState, client_auth, tokens};
use crate::random;

/// `POST /token`.
pub(crate) async fn token(
    State(state): State<Arc<IdpState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    exchange(&state, &headers, &body).unwrap_or_else(IntoResponse::into_response)
}

fn exchange(state: &IdpState, headers: &HeaderMap, body: &[u8]) -> Result<Response, OAuthError> {
    let params = Params::from_form(headers, body).map_err(OAuthError::invalid_request)?;
    let client_id = client_auth::authenticate(&state.cfg, headers, &params)?;
    match params.get("grant_type") {
        Some("authorization_code") => authorization_code(state, &client_id, &params),
        Some("refresh_token") => refresh(state, &client_id, &params),
        Some(other) => Err(OAuthError::unsupported_grant_type(format!(
            "grant_type `{other}` is not supported"
        ))),
        None => Err(OAuthError::invalid_request("grant_type missing")),
    }
}

fn authorization_code(
    state: &IdpState,
    client_id: &str,
    params: &Params,
) -> Result<Response, OAuthError> {
    let required = |name: &str| {
        params
            .get(name)
            .ok_or_else(|| OAuthError::invalid_request(format!("{name} missing")))
    };
    let code = required("code")?;
    let redirect_uri = required("redirect_uri")?;
    let verifier = required("code_verifier")?;

    // Redeeming marks the code used whatever happens next, so a failed attempt cannot be
    // followed by another guess at the verifier.
    let now = random::now();
    let record = state
        .grants()
        .redeem_code(code, now)
        .map_err(|e| grant_error(e, "authorization code"))?;
    if record.login.client_id != client_id {
        return Err(grant_error(GrantError::WrongClient, "authorization code"));
    }
    if record.redirect_uri != redirect_uri {
        return Err(OAuthError::invalid_grant("redirect_uri does not match"));
    }
    if !pkce_matches(verifier, &record.code_challenge) {
        return Err(OAuthError::invalid_grant("code_verifier does not match"));
    }

    let issued = tokens::issue(state, &record.login, record.nonce.as_deref())?;
    let refresh_token = random::token()?;
    state.grants().start_family(
        Some(code),
        record.login.clone(),
        &refresh_token,
        now + state.cfg.refresh_token_ttl.as_secs(),
    );
    tracing::info!(sub = %record.login.username, "dev IdP: code exchanged");
    Ok(token_response(&record.login, issued, &refresh_token))
}

fn refresh(state: &IdpState, client_id: &str, params: &Params) -> Result<Response, OAuthError> {
    let old = params
        .get("refresh_token")
        .ok_or_else(|| OAuthError::invalid_request("refresh_token missing"))?;
    let new = random::token()?;
    let now = random::now();
    let expires_at = now + state.cfg.refresh_token_ttl.as_secs();
    let mut login = state
        .grants()
        .rotate(client_id, old, &new, expires_at, now)
        .map_err(|e| grant_error(e, "refresh token"))?;
    if let Some(requested) = params.get("scope") {
        // A refresh may narrow the scope, never widen it (RFC 6749 6).
        let granted: Vec<&str> = login.scope.split(' ').collect();
        if let Some(extra) = requested.split(' ').find(|s| !granted.contains(s)) {
            return Err(OAuthError::invalid_scope(format!(
                "scope `{extra}` was not granted"
            )));
        }
        login.scope = requested.to_owned();
    }
    let issued = tokens::issue(state, &login, None)?;
    tracing::info!(sub = %login.username, "dev IdP: refresh token rotated");
    Ok(token_response(&login, issued, &new))
}

fn token_response(login: &Login, issued: tokens::Issued, refresh_token: &str) -> Response {
    let body = json!({
        "access_token": issued.access_token,
        "token_type": "Bearer",
        "expires_in": issued.expires_in,
        "id_token": issued.id_token,
        "refresh_token": refresh_token,
        "scope": login.scope,
    });
    (no_store(), Json(body)).into_response()
}

fn grant_error(e: GrantError, what: &str) -> OAuthError {
    OAuthError::invalid_grant(format!("{what}: {}", e.description()))
}

/// RFC 7636 4.6: BASE64URL(SHA256(verifier)) equals the challenge; the verifier must be
/// 43 to 128 unreserved characters.
fn pkce_matches(verifier: &str, challenge: &str) -> bool {
    let well_formed = (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
    well_formed && URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes())) == challenge
}

/// `GET`/`POST /userinfo` with `Authorization: Bearer <access token>`.
pub(crate) async fn userinfo(State(state): State<Arc<IdpState>>, headers: HeaderMap) -> Response {
    let Some(token) = bearer(&headers) else {
        return OAuthError::invalid_token("bearer token required").into_response();
    };
    let Some(claims) = tokens::verify_access_token(&state, token) else {
        return OAuthError::invalid_token("access token invalid or expired").into_response();
    };
    match DemoUser::find(&claims.sub) {
        Some(user) => (no_store(), Json(user.claims())).into_response(),
        None => OAuthError::invalid_token("unknown subject").into_response(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn pkce_rfc7636_appendix_b() {
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
        assert!(super::pkce_matches(verifier, challenge));
        assert!(!super::pkce_matches("short", challenge));
    }
}
