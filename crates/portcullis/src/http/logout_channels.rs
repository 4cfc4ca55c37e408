//! Logout initiated by the IdP: OIDC Back-Channel Logout 1.0
//! (`POST /auth/backchannel-logout`, a signed logout token sent server to
//! server) and Front-Channel Logout 1.0 (`GET /auth/frontchannel-logout`,
//! loaded by the IdP in an iframe of the user's browser).
//!
//! Back-channel ends sessions by the IdP's `sid` (or `sub`) through the
//! store's indexes, so every replica sharing the store sees the logout at once.
//!
//! Front-channel is off unless `oidc.frontchannel_logout = true` (404): it is
//! an anonymous GET any page can trigger. When on, it ends only the session of
//! the cookie the request carries, and only if `iss` and `sid` match that
//! session, so it can never end another user's session, and a cross-site link
//! without the victim's IdP `sid` ends nothing. Browsers send the `SameSite=Lax`
//! session cookie to a cross-site iframe only when the IdP is same-site with
//! the gateway; otherwise the request ends nothing server-side, and
//! back-channel logout is the one that works.

use std::sync::Arc;

use axum::{
    body::Bytes,
    extract::{Query, State},
    response::{IntoResponse, Response},
};
use http::{HeaderValue, StatusCode, header};
use serde::Deserialize;

use super::ApiError;
use crate::{oidc::LogoutToken, session::StoreError, state::Shared, tunnel_ends::SessionEnd};

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
    // A delete that fails (store down) answers 503 and forgets the `jti`,
    // so the IdP's retry of the same token is served, not refused.
    let ended = match end_sessions(&shared, &logout).await {
        Ok(n) => n,
        Err(e) => {
            if let Err(forget) = shared.store.forget_jti(&logout.jti).await {
                tracing::error!(error = %forget, "back-channel logout failed and its jti stays recorded; the IdP's retry will be refused");
            }
            return Err(e.into());
        }
    };
    metrics::counter!(crate::metrics::LOGOUTS_TOTAL, "kind" => "backchannel").increment(1);
    tracing::info!(
        sessions = ended,
        by_sid = logout.sid.is_some(),
        "back-channel logout"
    );
    Ok(no_store(StatusCode::OK.into_response()))
}

/// The sessions a valid logout token ends: those of its `sid`, or every
/// session of its `sub` when it has no `sid` or the config says so — of
/// those, only the ones created by `issued_before` (should a `jti` be lost,
/// say with a memory store's restart, a replay still cannot end a session
/// begun after the logout). Their WebSocket tunnels
/// in this process close at once.
async fn end_sessions(shared: &Shared, logout: &LogoutToken) -> Result<u64, StoreError> {
    let all_of_sub = shared.config.oidc.backchannel_all_sessions;
    match (&logout.sid, &logout.sub) {
        (Some(_), Some(sub)) if all_of_sub => end_matching(shared, sub, logout, |_| true).await,
        // A sid belongs to one subject; refuse to cross over if it does not.
        (Some(sid), Some(sub)) => {
            end_matching(shared, sub, logout, |r| r.sid.as_deref() == Some(sid)).await
        }
        (None, Some(sub)) => end_matching(shared, sub, logout, |_| true).await,
        // The IdP session has ended there, so no later session can carry
        // its sid: nothing to filter by time.
        (Some(sid), None) => {
            let n = shared.store.delete_by_sid(sid).await?;
            if let Some(demo) = &shared.demo {
                for session in demo.sessions_of_sid(sid) {
                    demo.emit(&session, shared.clock.now(), backchannel_ended());
                }
            }
            shared
                .tunnel_ends
                .notify(SessionEnd::IdpSession(sid.clone()));
            Ok(n)
        }
        // validate_logout_token guarantees one of them.
        (None, None) => Ok(0),
    }
}

async fn end_matching(
    shared: &Shared,
    sub: &str,
    logout: &LogoutToken,
    matches: impl Fn(&crate::session::SessionRecord) -> bool,
) -> Result<u64, StoreError> {
    let mut ended = 0;
    for record in shared.store.list_by_sub(sub).await? {
        if record.created_at <= logout.issued_before
            && matches(&record)
            && shared.store.delete(&record.id).await?
        {
            shared.demo_event(&record.id, |_| backchannel_ended());
            shared.tunnel_ends.notify(SessionEnd::Session(record.id));
            ended += 1;
        }
    }
    Ok(ended)
}

fn backchannel_ended() -> crate::demo_events::EventKind {
    crate::demo_events::EventKind::SessionEnded {
        reason: crate::demo_events::EndReason::BackchannelLogout,
    }
}

#[derive(Deserialize)]
pub(crate) struct FrontChannelParams {
    iss: Option<String>,
    sid: Option<String>,
}

/// `GET /auth/frontchannel-logout?iss=...&sid=...`: the IdP's logout page
/// loads this in an iframe. 404 unless `oidc.frontchannel_logout`. Ends the
/// session of the cookie sent, if `iss` is the issuer and `sid` is that
/// session's IdP session id; nothing else, ever (no cookie, another `sid`:
/// nothing ends). `iss` and `sid` are required: without them any page could
/// log the user out with a link. Answers a tiny page the IdP may frame.
pub(crate) async fn frontchannel_logout(
    State(shared): State<Arc<Shared>>,
    Query(params): Query<FrontChannelParams>,
    headers: http::HeaderMap,
) -> Result<Response, ApiError> {
    if !shared.config.oidc.frontchannel_logout {
        return Err(ApiError::NotFound);
    }
    let sid = match (params.iss.as_deref(), params.sid.as_deref()) {
        (Some(iss), Some(sid)) if iss == shared.config.oidc.issuer && !sid.is_empty() => sid,
        (Some(_), Some(_)) => {
            return Err(ApiError::InvalidRequest(
                "iss does not match the issuer".into(),
            ));
        }
        _ => {
            return Err(ApiError::InvalidRequest("iss and sid are required".into()));
        }
    };
    let ended = match super::current_session(&shared, &headers).await? {
        super::SessionLookup::Active(record) if record.sid.as_deref() == Some(sid) => {
            let ended = shared.store.delete(&record.id).await?;
            shared
                .tunnel_ends
                .notify(SessionEnd::Session(record.id.clone()));
            u64::from(ended)
        }
        _ => 0,
    };
    if ended > 0 {
        metrics::counter!(crate::metrics::LOGOUTS_TOTAL, "kind" => "frontchannel").increment(1);
    }
    tracing::info!(sessions = ended, "front-channel logout");
    // The browser forgets the ended session too (when it let us see it).
    let cfg = &shared.config;
    let jar = if ended > 0 {
        axum_extra::extract::CookieJar::new()
            .add(super::cookies::removal(
                cfg,
                cfg.session.cookie_name.clone(),
                true,
            ))
            .add(super::cookies::removal(cfg, cfg.csrf.cookie.clone(), false))
    } else {
        axum_extra::extract::CookieJar::new()
    };
    let mut resp = (
        jar,
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
