//! Session admin API on the admin listener: list and end a user's sessions.
//! Every call needs `Authorization: Bearer <admin.token>`; without a
//! configured token these routes are not mounted at all (404).
//!
//! Answers show session hashes and metadata, never tokens or cookie values.

use std::sync::Arc;

use axum::{
    Json,
    extract::{Path, Query, Request, State},
    middleware::Next,
    response::{IntoResponse, Response},
};
use http::{HeaderMap, HeaderValue, header};
use serde::Deserialize;
use serde_json::json;
use subtle::ConstantTimeEq;

use super::ApiError;
use crate::{
    config::Secret,
    session::{SessionHash, SessionRecord, hex_sha256},
    state::Shared,
    time::rfc3339,
};

/// Whether the request carries exactly the admin bearer token. Both sides
/// are hashed first so the constant-time compare does not leak the length.
fn bearer_matches(headers: &HeaderMap, token: &Secret) -> bool {
    let Some(given) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        })
    else {
        return false;
    };
    hex_sha256(given.as_bytes())
        .as_bytes()
        .ct_eq(hex_sha256(token.expose().as_bytes()).as_bytes())
        .into()
}

/// Middleware on the admin session routes: 401 without the right bearer token.
pub(crate) async fn require_admin_token(
    State(shared): State<Arc<Shared>>,
    req: Request,
    next: Next,
) -> Response {
    let ok = shared
        .config
        .admin
        .token
        .as_ref()
        .is_some_and(|t| bearer_matches(req.headers(), t));
    if !ok {
        let mut resp = ApiError::Unauthorized.into_response();
        resp.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return resp;
    }
    next.run(req).await
}

#[derive(Deserialize)]
pub(crate) struct BySub {
    sub: Option<String>,
}

fn required_sub(q: BySub) -> Result<String, ApiError> {
    match q.sub {
        Some(s) if !s.is_empty() => Ok(s),
        _ => Err(ApiError::BadRequest(
            "query parameter sub is required".into(),
        )),
    }
}

/// What an operator may see of a session.
fn summary(r: &SessionRecord, now: i64) -> serde_json::Value {
    json!({
        "hash": r.id.as_str(),
        "sub": r.sub,
        "created_at": rfc3339(r.created_at),
        "last_seen_at": rfc3339(r.last_seen_at),
        "expires_at": rfc3339(r.expires_at),
        "idle_expires_at": rfc3339(r.idle_expires_at),
        "user_agent": r.user_agent,
        "expired": r.is_expired(now),
    })
}

/// `GET /admin/sessions?sub=...`.
pub(crate) async fn list(
    State(shared): State<Arc<Shared>>,
    Query(q): Query<BySub>,
) -> Result<Response, ApiError> {
    let sub = required_sub(q)?;
    let now = shared.clock.now();
    let sessions: Vec<_> = shared
        .store
        .list_by_sub(&sub)
        .await?
        .iter()
        .map(|r| summary(r, now))
        .collect();
    Ok(Json(json!({ "sub": sub, "sessions": sessions })).into_response())
}

/// `DELETE /admin/sessions?sub=...`: end every session of a subject.
pub(crate) async fn delete_by_sub(
    State(shared): State<Arc<Shared>>,
    Query(q): Query<BySub>,
) -> Result<Response, ApiError> {
    let sub = required_sub(q)?;
    let deleted = shared.store.delete_by_sub(&sub).await?;
    // Their WebSocket tunnels here close now; other replicas' at their next check.
    shared
        .tunnel_ends
        .notify(crate::tunnel_ends::SessionEnd::Subject(sub.clone()));
    if deleted > 0 {
        metrics::counter!(crate::metrics::LOGOUTS_TOTAL, "kind" => "admin").increment(1);
    }
    tracing::info!(deleted, "admin ended the sessions of a subject");
    Ok(Json(json!({ "deleted": deleted })).into_response())
}

/// `DELETE /admin/sessions/{hash}`: end one session; 404 when unknown.
pub(crate) async fn delete_one(
    State(shared): State<Arc<Shared>>,
    Path(hash): Path<String>,
) -> Result<Response, ApiError> {
    let hash = SessionHash::from_hex(&hash)
        .ok_or_else(|| ApiError::BadRequest("not a session hash (64 hex digits)".into()))?;
    if !shared.store.delete(&hash).await? {
        return Err(ApiError::NotFound);
    }
    shared
        .tunnel_ends
        .notify(crate::tunnel_ends::SessionEnd::Session(hash.clone()));
    metrics::counter!(crate::metrics::LOGOUTS_TOTAL, "kind" => "admin").increment(1);
    tracing::info!(session = hash.short(), "admin ended a session");
    Ok(Json(json!({ "deleted": 1 })).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_must_match_exactly() {
        let token = Secret::new("0123456789abcdef-admin");
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
            h
        };
        assert!(bearer_matches(
            &with("Bearer 0123456789abcdef-admin"),
            &token
        ));
        assert!(bearer_matches(
            &with("bearer 0123456789abcdef-admin"),
            &token
        ));
        assert!(!bearer_matches(
            &with("Bearer 0123456789abcdef-admiN"),
            &token
        ));
        assert!(!bearer_matches(&with("Bearer 0123456789abcdef"), &token));
        assert!(!bearer_matches(
            &with("Basic 0123456789abcdef-admin"),
            &token
        ));
        assert!(!bearer_matches(&HeaderMap::new(), &token));
    }
}
