//! `/.well-known/openid-configuration` and `/jwks`.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::IntoResponse;
use serde_json::json;

use super::IdpState;

pub(crate) async fn configuration(State(state): State<Arc<IdpState>>) -> impl IntoResponse {
    let cfg = &state.cfg;
    Json(json!({
        "issuer": cfg.issuer,
        "authorization_endpoint": cfg.endpoint("/authorize"),
        "token_endpoint": cfg.endpoint("/token"),
        "userinfo_endpoint": cfg.endpoint("/userinfo"),
        "jwks_uri": cfg.endpoint("/jwks"),
        "end_session_endpoint": cfg.endpoint("/end_session"),
        "revocation_endpoint": cfg.endpoint("/revoke"),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "scopes_supported": super::authorize::SUPPORTED_SCOPES,
        "claims_supported": [
            "iss", "sub", "aud", "exp", "iat", "auth_time", "nonce", "sid", "azp", "at_hash",
            "name", "email", "email_verified", "preferred_username", "roles"
        ],
        "authorization_response_iss_parameter_supported": true,
        "frontchannel_logout_supported": false,
        "backchannel_logout_supported": cfg.backchannel_logout_uri.is_some(),
        "backchannel_logout_session_supported": cfg.backchannel_logout_uri.is_some(),
    }))
}

pub(crate) async fn jwks(State(state): State<Arc<IdpState>>) -> impl IntoResponse {
    (
        [(
            header::CACHE_CONTROL,
            HeaderValue::from_static("max-age=60"),
        )],
        Json(json!({ "keys": [state.key.jwk()] })),
    )
}
