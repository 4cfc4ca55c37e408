//! Access-token refresh before expiry, one refresh per session at a time.
//!
//! Concurrent requests of one session queue on a per-session async lock; the
//! first refreshes and saves, the others re-read the saved record and reuse
//! its tokens, so a rotated refresh token is never sent twice from this
//! process. (A store-level lease for replicas plugs in here later.)

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, Weak},
};

use crate::{
    gateway::Shared,
    http::ApiError,
    oidc::{self, OidcError, id_token::Expectations},
    session::{SessionHash, SessionRecord},
    time::UnixTime,
};

/// Per-session locks; entries die with their last holder.
#[derive(Default)]
pub struct RefreshLocks {
    locks: Mutex<HashMap<SessionHash, Weak<tokio::sync::Mutex<()>>>>,
}

impl RefreshLocks {
    fn lock_for(&self, id: &SessionHash) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(l) = map.get(id).and_then(Weak::upgrade) {
            return l;
        }
        if map.len() > 1024 {
            map.retain(|_, w| w.strong_count() > 0);
        }
        let l = Arc::new(tokio::sync::Mutex::new(()));
        map.insert(id.clone(), Arc::downgrade(&l));
        l
    }
}

fn needs_refresh(r: &SessionRecord, now: UnixTime, before: i64) -> bool {
    r.tokens
        .access_expires_at
        .is_some_and(|exp| exp - before <= now)
}

fn still_valid(r: &SessionRecord, now: UnixTime) -> bool {
    r.tokens.access_expires_at.is_none_or(|exp| exp > now)
}

/// The record with an access token that is good for at least `refresh_before`,
/// refreshing it first if needed.
pub(crate) async fn ensure_fresh(
    shared: &Shared,
    record: SessionRecord,
) -> Result<SessionRecord, ApiError> {
    let before = shared.config.session.refresh_before.as_secs() as i64;
    if !needs_refresh(&record, shared.clock.now(), before) {
        return Ok(record);
    }
    let lock = shared.refresh_locks.lock_for(&record.id);
    let _guard = lock.lock().await;
    // Whoever held the lock before us may have refreshed already.
    let Some(current) = shared.store.load(&record.id).await? else {
        return Err(ApiError::SessionExpired);
    };
    let now = shared.clock.now();
    if !needs_refresh(&current, now, before) {
        return Ok(current);
    }
    let Some(refresh_token) = current.tokens.refresh_token.clone() else {
        return if still_valid(&current, now) {
            Ok(current)
        } else {
            shared.store.delete(&current.id).await?;
            Err(ApiError::SessionExpired)
        };
    };
    match shared.oidc.refresh(&refresh_token).await {
        Ok(tokens) => {
            let updated = apply(shared, current, tokens).await?;
            // Saved before any waiter proceeds: they will read these tokens.
            shared.store.save(&updated).await?;
            tracing::debug!(session = updated.id.short(), "access token refreshed");
            Ok(updated)
        }
        Err(OidcError::OAuth { error, .. }) => {
            tracing::info!(session = current.id.short(), %error, "refresh refused; session ended");
            shared.store.delete(&current.id).await?;
            Err(ApiError::SessionExpired)
        }
        Err(e) if still_valid(&current, now) => {
            tracing::warn!(error = %e, "refresh failed; using the current access token");
            Ok(current)
        }
        Err(e) => Err(ApiError::Idp(e)),
    }
}

async fn apply(
    shared: &Shared,
    mut record: SessionRecord,
    tokens: oidc::TokenResponse,
) -> Result<SessionRecord, ApiError> {
    let now = shared.clock.now();
    if let Some(id_token) = tokens.id_token.as_deref() {
        // A refreshed ID token must be the same user from the same issuer.
        let claims = match shared
            .oidc
            .validate_id_token(
                id_token,
                Expectations {
                    nonce: None,
                    sub: Some(&record.sub),
                },
            )
            .await
        {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "refreshed ID token rejected; session ended");
                shared.store.delete(&record.id).await?;
                return Err(ApiError::SessionExpired);
            }
        };
        let mut merged = record.claims.clone();
        merged.extend(oidc::user_claims(&claims.all));
        record.claims = merged;
        let roles = oidc::roles_from_claims(&claims.all, &shared.config.oidc.roles_claim);
        if !roles.is_empty() || claims.all.contains_key(&shared.config.oidc.roles_claim) {
            record.roles = roles;
        }
        record.tokens.id_token = tokens.id_token;
    }
    record.tokens.access_token = tokens.access_token;
    record.tokens.access_expires_at = tokens.expires_in.map(|s| now + s);
    // IdPs that do not rotate send no new refresh token: keep the old one.
    if let Some(rt) = tokens.refresh_token {
        record.tokens.refresh_token = Some(rt);
    }
    record.version += 1;
    Ok(record)
}
