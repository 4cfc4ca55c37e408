//! Minting and checking the IdP's JWTs: access tokens (audience `portcullis-demo-api`) and
//! ID tokens (audience the client), all ES256 with the one signing key.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::grants::Login;
use super::{ACCESS_TOKEN_AUDIENCE, DemoUser, IdpState};
use crate::{DemoError, random};

/// ID tokens live five minutes: long enough to be validated, not meant to be reused.
const ID_TOKEN_TTL_SECS: u64 = 5 * 60;

/// Claims of an access token.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct AccessClaims {
    pub(crate) iss: String,
    pub(crate) sub: String,
    pub(crate) aud: String,
    pub(crate) client_id: String,
    pub(crate) scope: String,
    pub(crate) roles: Vec<String>,
    pub(crate) sid: String,
    pub(crate) iat: u64,
    pub(crate) exp: u64,
    pub(crate) jti: String,
}

#[derive(Debug, Serialize)]
struct IdClaims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    azp: &'a str,
    exp: u64,
    iat: u64,
    auth_time: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    nonce: Option<&'a str>,
    sid: &'a str,
    at_hash: String,
    name: &'a str,
    email: &'a str,
    email_verified: bool,
    preferred_username: &'a str,
    roles: &'a [&'a str],
}

/// What `/end_session` needs from an `id_token_hint`.
#[derive(Debug, Deserialize)]
pub(crate) struct IdTokenHint {
    pub(crate) sub: String,
    pub(crate) sid: Option<String>,
}

/// A freshly minted access token and ID token.
#[derive(Debug)]
pub(crate) struct Issued {
    pub(crate) access_token: String,
    pub(crate) id_token: String,
    pub(crate) expires_in: u64,
}

/// Mints the tokens for `login`; `nonce` only at the code exchange, never on refresh.
pub(crate) fn issue(
    state: &IdpState,
    login: &Login,
    nonce: Option<&str>,
) -> Result<Issued, DemoError> {
    let user = DemoUser::find(&login.username)
        .ok_or_else(|| DemoError::Config(format!("unknown user {}", login.username)))?;
    let cfg = &state.cfg;
    let now = random::now();
    let expires_in = cfg.access_token_ttl.as_secs();
    let access = AccessClaims {
        iss: cfg.issuer.clone(),
        sub: user.sub().to_owned(),
        aud: ACCESS_TOKEN_AUDIENCE.to_owned(),
        client_id: login.client_id.clone(),
        scope: login.scope.clone(),
        roles: user.roles.iter().map(|r| (*r).to_owned()).collect(),
        sid: login.sid.clone(),
        iat: now,
        exp: now + expires_in,
        jti: random::token()?,
    };
    let access_token = state.key.sign(&access)?;
    let id = IdClaims {
        iss: &cfg.issuer,
        sub: user.sub(),
        aud: &login.client_id,
        azp: &login.client_id,
        exp: now + ID_TOKEN_TTL_SECS,
        iat: now,
        auth_time: login.auth_time,
        nonce,
        sid: &login.sid,
        at_hash: left_half_hash(&access_token),
        name: user.name,
        email: user.email,
        email_verified: true,
        preferred_username: user.username,
        roles: user.roles,
    };
    Ok(Issued {
        id_token: state.key.sign(&id)?,
        access_token,
        expires_in,
    })
}

/// Claims of a Back-Channel Logout token (OIDC Back-Channel Logout 1.0, 2.4).
#[derive(Debug, Serialize)]
struct LogoutClaims<'a> {
    iss: &'a str,
    aud: &'a str,
    iat: u64,
    exp: u64,
    jti: String,
    sub: &'a str,
    sid: &'a str,
    events: serde_json::Value,
}

/// A signed logout token (`typ: logout+jwt`) ending the login `sid` of `sub`.
pub(crate) fn logout_token(state: &IdpState, sub: &str, sid: &str) -> Result<String, DemoError> {
    let now = random::now();
    let claims = LogoutClaims {
        iss: &state.cfg.issuer,
        aud: &state.cfg.client_id,
        iat: now,
        exp: now + 120,
        jti: random::token()?,
        sub,
        sid,
        events: serde_json::json!({ "http://schemas.openid.net/event/backchannel-logout": {} }),
    };
    state.key.sign_typed("logout+jwt", &claims)
}

/// The claims of a valid, unexpired access token this IdP issued.
pub(crate) fn verify_access_token(state: &IdpState, token: &str) -> Option<AccessClaims> {
    let mut validation = Validation::new(Algorithm::ES256);
    validation.leeway = 0;
    validation.set_issuer(&[&state.cfg.issuer]);
    validation.set_audience(&[ACCESS_TOKEN_AUDIENCE]);
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    state.key.verify(token, &validation)
}

/// An ID token this IdP issued to the client, expired or not (RP-initiated logout sends
/// whatever ID token it holds).
pub(crate) fn verify_id_token_hint(state: &IdpState, token: &str) -> Option<IdTokenHint> {
    let mut validation = Validation::new(Algorithm::ES256);
    validation.validate_exp = false;
    validation.set_issuer(&[&state.cfg.issuer]);
    validation.set_audience(&[&state.cfg.client_id]);
    validation.set_required_spec_claims(&["iss", "aud", "sub"]);
    state.key.verify(token, &validation)
}

/// `at_hash` (OIDC Core 3.1.3.6): base64url of the left half of SHA-256 of the token.
fn left_half_hash(token: &str) -> String {
    URL_SAFE_NO_PAD.encode(&Sha256::digest(token.as_bytes())[..16])
}
