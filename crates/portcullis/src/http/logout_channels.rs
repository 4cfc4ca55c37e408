//! Logout initiated by the IdP: OIDC Back-Channel Logout 1.0
//! (`POST /auth/backchannel-logout`, a signed logout token sent server to
//! server) and Front-Channel Logout 1.0 (`GET /auth/frontchannel-logout`,
//! loaded by the IdP in an iframe of the user's browser).
//!
//! Both end sessions by the IdP's `sid` (or `sub`) through the store's
//! indexes, so every replica sharing the store sees the logout at once.

use std::sync::Arc;

use axum::{
    body::Bytes,
    extract::{Query, State},
    response::{IntoResponse, Response},
};
use http::{HeaderValue, StatusCode, header};
use serde::Deserialize;

use super::ApiError;
use crate::{gateway::Shared, oidc::LogoutToken, session::StoreError};

/// `POST /auth/backchannel-logout` (form field `logout_token`). Exempt from
/// CSRF: the caller is the IdP, authenticated by the token's signature.
/// 200 once the matching sessions are gone; 400 `invalid_request` for any
/// invalid or replayed token, deleting nothing.
pub(crate) async fn backchannel_logout(
    State(shared): State<Arc<Shared>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let token = url::form_urlencoded::parse(&body)
        .find(|(k, _)| k == "logout_token")
        .map(|(_, v)| v.into_owned())
        .ok_or_else(|| ApiError::InvalidRequest("missing logout_token".into()))?;
    let logout = shared.oidc.validate_logout_token(&token).await?;
    let now = shared.clock.now();
    // Remembered before anything is deleted: a replay must never delete,
    // even one racing the original on another replica.
    if !shared
        .store
        .remember_jti(&logout.jti, logout.jti_expires_at, now)
        .await?
    {
        return Err(ApiError::InvalidRequest(
            "logout token rejected: jti already used".into(),
        ));
    }
    let ended = end_sessions(&shared, &logout).await?;
    metrics::counter!(crate::metrics::LOGOUTS_TOTAL, "kind" => "backchannel").increment(1);
    tracing::info!(
        sessions = ended,
        by_sid = logout.sid.is_some(),
        "back-channel logout"
    );
    Ok(no_store(StatusCode::OK.into_response()))
}

/// The sessions a valid logout token ends: those of its `sid`, or every
/// session of its `sub` when it has no `sid` or the config says so.
async fn end_sessions(shared: &Shared, logout: &LogoutToken) -> Result<u64, StoreError> {
    let all_of_sub = shared.config.oidc.backchannel_all_sessions;
    match (&logout.sid, &logout.sub) {
        (Some(_), Some(sub)) if all_of_sub => shared.store.delete_by_sub(sub).await,
        (Some(sid), Some(sub)) => {
            // A sid belongs to one subject; refuse to cross over if it does not.
            let mut ended = 0;
            for record in shared.store.list_by_sub(sub).await? {
                if record.sid.as_deref() == Some(sid.as_str())
                    && shared.store.delete(&record.id).await?
                {
                    ended += 1;
                }
            }
            Ok(ended)
        }
        (Some(sid), None) => shared.store.delete_by_sid(sid).await,
        (None, Some(sub)) => shared.store.delete_by_sub(sub).await,
        // validate_logout_token guarantees one of them.
        (None, None) => Ok(0),
    }
}

#[derive(Deserialize)]
pub(crate) struct FrontChannelParams {
    iss: Option<String>,
    sid: Option<String>,
}

/// `GET /auth/frontchannel-logout?iss=...&sid=...`: the IdP's logout page
/// loads this in an iframe. With `iss` and `sid` (both, or neither, per the
/// spec), ends the sessions of that IdP session; without them, the session
/// of the cookie the browser sent, if any. Answers a tiny page the IdP may
/// frame.
pub(crate) async fn frontchannel_logout(
    State(shared): State<Arc<Shared>>,
    Query(params): Query<FrontChannelParams>,
    headers: http::HeaderMap,
) -> Result<Response, ApiError> {
    let ended = match (params.iss.as_deref(), params.sid.as_deref()) {
        (Some(iss), Some(sid)) if iss == shared.config.oidc.issuer && !sid.is_empty() => {
            shared.store.delete_by_sid(sid).await?
        }
        (Some(_), Some(_)) => {
            return Err(ApiError::InvalidRequest(
                "iss does not match the issuer".into(),
            ));
        }
        (Some(_), None) | (None, Some(_)) => {
            return Err(ApiError::InvalidRequest(
                "iss and sid must be sent together".into(),
            ));
        }
        (None, None) => match super::current_session(&shared, &headers).await? {
            super::SessionLookup::Active(record) => {
                u64::from(shared.store.delete(&record.id).await?)
            }
            _ => 0,
        },
    };
    if ended > 0 {
        metrics::counter!(crate::metrics::LOGOUTS_TOTAL, "kind" => "frontchannel").increment(1);
    }
    tracing::info!(sessions = ended, "front-channel logout");
    let mut resp = (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Signed out</title></head><body>Signed out.</body></html>",
    )
        .into_response();
    // The IdP frames this page; every other framing stays forbidden.
    let idp_origin = url::Url::parse(&shared.config.oidc.issuer)
        .map(|u| u.origin().ascii_serialization())
        .unwrap_or_default();
    if let Ok(csp) = HeaderValue::from_str(&format!(
        "default-src 'none'; frame-ancestors {idp_origin}; base-uri 'none'"
    )) {
        resp.headers_mut()
            .insert(header::CONTENT_SECURITY_POLICY, csp);
    }
    Ok(no_store(resp))
}

fn no_store(mut resp: Response) -> Response {
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}
