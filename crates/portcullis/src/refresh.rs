//! Access-token refresh, exactly one per session at a time.
//!
//! Two layers keep a rotated refresh token from ever being sent twice:
//! - in this process, concurrent requests of one session queue on a
//!   per-session async lock; the first refreshes, the others re-read the saved
//!   record and reuse its tokens (single flight);
//! - across processes sharing the store, the holder of that lock also takes
//!   the store's refresh lease (`SessionStore::acquire_refresh_lease`), renews
//!   it while the IdP call runs and releases it after. A process that cannot
//!   get the lease waits (bounded) for the holder's result in the store.
//!   The new tokens are saved with `save_if_version`, the fencing check: a
//!   holder whose lease ran out and was taken over cannot overwrite newer tokens.
//!
//! Remote stores only implement the trait methods; nothing here changes.
//!
//! A refresh because the upstream answered 401 is rate limited per session
//! (`session.refresh_on_401_interval`, in this process only): an upstream or
//! a client provoking 401s cannot make the gateway call the IdP per request.
//!
//! Errors say who failed ([`RefreshError`]). Only the IdP's refusal
//! (`invalid_grant`, an identity change) ends the session; an IdP that cannot
//! answer leaves it as it is, and a refresh token the IdP already rotated is
//! saved before anything else can fail, so it is never lost or sent twice.
//!
//! Roles follow the IdP: a refresh that brings a new ID token replaces the
//! session's roles with what that token (and userinfo, as at login) says,
//! none when the claim is absent or empty. A refresh without a new ID token
//! keeps them: the IdP made no new statement about the user.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use crate::{
    demo_events::{EndReason, EventKind, RefreshReason, TokenInfo},
    fault::Fault,
    oidc::{self, OidcError, id_token::Expectations},
    session::{RefreshLease, SessionHash, SessionRecord, StoreError},
    state::Shared,
    time::UnixTime,
};

/// Why a session could not get a usable access token.
#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    /// The IdP refused (or named another user): the session has been ended.
    #[error("session ended: {0}")]
    Ended(String),
    /// The session is no longer in the store (logged out or expired).
    #[error("session not found")]
    Gone,
    /// The IdP could not answer; the session is kept as it was.
    #[error(transparent)]
    IdpUnavailable(OidcError),
    /// Another replica holds the refresh and did not finish in time.
    #[error("token refresh in progress elsewhere did not finish")]
    Busy,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl RefreshError {
    pub fn fault(&self) -> Fault {
        match self {
            RefreshError::Ended(_) => Fault::IdpRefused,
            RefreshError::Gone => Fault::Client,
            RefreshError::IdpUnavailable(_) | RefreshError::Busy => Fault::IdpUnavailable,
            RefreshError::Store(_) => Fault::Store,
        }
    }
}

/// Lease lifetime; renewed every third of it while the IdP call runs, so a
/// crashed holder blocks others for at most this long.
const LEASE_TTL: Duration = Duration::from_secs(15);
/// How often a process without the lease re-reads the record.
const LEASE_POLL: Duration = Duration::from_millis(50);

fn needs_refresh(r: &SessionRecord, now: UnixTime, before: i64) -> bool {
    r.tokens
        .access_expires_at
        .is_some_and(|exp| exp - before <= now)
}

fn still_valid(r: &SessionRecord, now: UnixTime) -> bool {
    r.tokens.access_expires_at.is_none_or(|exp| exp > now)
}

/// The record with an access token that is good for at least `refresh_before`,
/// refreshing it first if needed. Used before proxying.
pub(crate) async fn ensure_fresh(
    shared: &Shared,
    record: Arc<SessionRecord>,
) -> Result<Arc<SessionRecord>, RefreshError> {
    let before = shared.config.session.refresh_before.as_secs() as i64;
    if !needs_refresh(&record, shared.clock.now(), before) {
        return Ok(record);
    }
    // Boxed: the refresh future is large and rare, and inlined it would be
    // moved with every proxied request's future.
    Box::pin(single_flight(
        shared,
        &record.id,
        RefreshReason::Proactive,
        move |r, now| needs_refresh(r, now, before),
    ))
    .await
    .map(Arc::new)
}

/// The record with an access token that has not expired yet, refreshing only
/// if it has. Used by `/auth/me`, which must not refresh early.
pub(crate) async fn ensure_valid(
    shared: &Shared,
    record: Arc<SessionRecord>,
) -> Result<Arc<SessionRecord>, RefreshError> {
    if still_valid(&record, shared.clock.now()) {
        return Ok(record);
    }
    Box::pin(single_flight(
        shared,
        &record.id,
        RefreshReason::Expired,
        |r, now| !still_valid(r, now),
    ))
    .await
    .map(Arc::new)
}

/// Refresh after the upstream refused `rejected` (a 401): unless someone has
/// already replaced that access token, refresh now, whatever its expiry says
/// — at most once per `session.refresh_on_401_interval`. Otherwise the
/// record comes back with the same token and the caller passes the 401 on.
pub(crate) async fn after_rejection(
    shared: &Shared,
    rejected: &SessionRecord,
) -> Result<SessionRecord, RefreshError> {
    let rejected_token = rejected.tokens.access_token.clone();
    let interval = shared
        .config
        .session
        .refresh_on_401_interval
        .as_secs()
        .max(1) as i64;
    // Decided once, by the first check that finds the token still current
    // (under the session's lock): re-checks must not count again.
    let allowed = std::sync::OnceLock::new();
    let id = &rejected.id;
    Box::pin(single_flight(
        shared,
        id,
        RefreshReason::UpstreamRejected,
        move |r, now| {
            r.tokens.access_token == rejected_token
                && *allowed.get_or_init(|| {
                    let ok = shared.refresh_locks.take_401_refresh(id, now, interval);
                    if !ok {
                        tracing::debug!(session = id.short(), "upstream 401; refresh rate limited");
                        metrics::counter!(crate::metrics::REFRESH_TOTAL, "result" => "limited")
                            .increment(1);
                    }
                    ok
                })
        },
    ))
    .await
}

/// Run at most one refresh of session `id` at a time, in this process and
/// (through the store lease) across processes. `stale` says whether the
/// latest stored record still needs one; waiters that find it fresh reuse it.
async fn single_flight(
    shared: &Shared,
    id: &SessionHash,
    reason: RefreshReason,
    stale: impl Fn(&SessionRecord, UnixTime) -> bool,
) -> Result<SessionRecord, RefreshError> {
    let lock = shared.refresh_locks.lock_for(id);
    let _guard = lock.lock().await;
    // Whoever held the lock before us may have refreshed already.
    let current = load(shared, id).await?;
    let now = shared.clock.now();
    if !stale(&current, now) {
        return Ok(current);
    }
    // The IdP's circuit is open: no refresh can happen now, so answer at
    // once, without taking the store's lease on every request.
    if shared.oidc.breaker.is_open() {
        return if still_valid(&current, now) {
            Ok(current)
        } else {
            Err(RefreshError::IdpUnavailable(OidcError::Unavailable(
                "token endpoint: circuit open after repeated failures".into(),
            )))
        };
    }
    let wait_until = Instant::now() + lease_wait(shared);
    loop {
        if let Some(lease) = shared.store.acquire_refresh_lease(id, LEASE_TTL).await? {
            let outcome = refresh_holding(shared, id, &lease, reason, &stale).await;
            if let Err(e) = shared.store.release_refresh_lease(id, &lease).await {
                // It expires by itself; the refresh result stands.
                tracing::warn!(session = id.short(), error = %e, "refresh lease release failed");
            }
            return outcome;
        }
        // Another process is refreshing: wait for its tokens in the store.
        tokio::time::sleep(LEASE_POLL).await;
        let current = load(shared, id).await?;
        let now = shared.clock.now();
        if !stale(&current, now) {
            return Ok(current);
        }
        if Instant::now() >= wait_until {
            tracing::warn!(
                session = id.short(),
                "refresh lease still held elsewhere; giving up waiting"
            );
            return if still_valid(&current, now) {
                Ok(current)
            } else {
                Err(RefreshError::Busy)
            };
        }
    }
}

/// How long a process without the lease waits for the holder: one IdP call
/// plus margin.
fn lease_wait(shared: &Shared) -> Duration {
    shared.config.oidc.http_timeout + Duration::from_secs(2)
}

async fn load(shared: &Shared, id: &SessionHash) -> Result<SessionRecord, RefreshError> {
    shared.store.load(id).await?.ok_or(RefreshError::Gone)
}

/// The refresh proper, with the lease held.
async fn refresh_holding(
    shared: &Shared,
    id: &SessionHash,
    lease: &RefreshLease,
    reason: RefreshReason,
    stale: &impl Fn(&SessionRecord, UnixTime) -> bool,
) -> Result<SessionRecord, RefreshError> {
    // Re-read under the lease: the previous holder may have just saved.
    let mut current = load(shared, id).await?;
    // A refresh of ours whose save failed: its tokens come first.
    if let Some((expected, kept)) = shared.refresh_locks.take_unsaved(id)
        && current.version == expected
    {
        match shared.store.save_if_version(&kept, expected).await {
            Ok(true) => current = kept,
            Ok(false) => {}
            Err(e) => {
                shared.refresh_locks.keep_unsaved(expected, kept);
                return Err(e.into());
            }
        }
    }
    let now = shared.clock.now();
    if !stale(&current, now) {
        return Ok(current);
    }
    let Some(refresh_token) = current.tokens.refresh_token.clone() else {
        return if still_valid(&current, now) {
            Ok(current)
        } else {
            end_session(shared, &current.id).await?;
            report_ended(shared, id);
            Err(RefreshError::Ended(
                "access token expired and no refresh token".into(),
            ))
        };
    };

    let started = Instant::now();
    let outcome = with_lease_renewed(shared, id, lease, shared.oidc.refresh(&refresh_token)).await;
    metrics::histogram!(crate::metrics::REFRESH_DURATION).record(started.elapsed().as_secs_f64());
    let result = match &outcome {
        Ok(_) => "success",
        Err(e) if e.fault() == Fault::IdpRefused => "refused",
        Err(_) => "error",
    };
    metrics::counter!(crate::metrics::REFRESH_TOTAL, "result" => result).increment(1);

    let tokens = match outcome {
        Ok(tokens) => tokens,
        Err(e) if e.fault() == Fault::IdpRefused => {
            tracing::info!(session = id.short(), error = %e, "refresh refused; session ended");
            end_session(shared, id).await?;
            report_ended(shared, id);
            return Err(RefreshError::Ended(e.to_string()));
        }
        // Transient: nothing was spent, the session stays as it is.
        Err(e) if still_valid(&current, now) => {
            tracing::warn!(error = %e, "refresh failed; using the current access token");
            return Ok(current);
        }
        Err(e) => return Err(RefreshError::IdpUnavailable(e)),
    };
    let expected = current.version;
    let old_refresh_token = current.tokens.refresh_token.clone();
    let updated = apply(shared, current, tokens).await?;
    // For the demo's timeline, once the new tokens are in use (saved or kept).
    let report = || {
        shared.demo_event(id, |demo| EventKind::Refreshed {
            reason,
            access_token: Some(TokenInfo::of(
                updated.tokens.access_token.as_str(),
                updated.tokens.access_expires_at,
            )),
            refresh_token_rotated: updated.tokens.refresh_token != old_refresh_token,
            refresh_count: demo.next_refresh_count(id),
        })
    };
    // Saved before any waiter proceeds: they will read these tokens.
    // The version check fences out a holder whose lease was lost.
    match shared.store.save_if_version(&updated, expected).await {
        Ok(true) => {
            tracing::debug!(session = id.short(), "access token refreshed");
            report();
            return Ok(updated);
        }
        Ok(false) => {}
        Err(e) => {
            // The old refresh token is spent: keep the new one for the next
            // refresh, and serve this request with the new access token.
            tracing::warn!(session = id.short(), error = %e, "refreshed tokens not saved; kept in this process");
            shared.refresh_locks.keep_unsaved(expected, updated.clone());
            report();
            return Ok(updated);
        }
    }
    tracing::warn!(
        session = id.short(),
        "session changed during refresh; keeping the stored tokens"
    );
    let stored = load(shared, id).await?;
    if still_valid(&stored, shared.clock.now()) {
        Ok(stored)
    } else {
        Err(RefreshError::Busy)
    }
}

/// At shutdown, once no request runs any more: save the refreshed records a
/// store outage left in this process ([`refresh_holding`] keeps them). The
/// refresh tokens in the store are spent, so a record dropped with the
/// process ends its session at the next refresh (the IdP refuses the spent
/// token). Stops at the first store error: the store is still down.
/// Returns how many were saved and how many are lost.
pub(crate) async fn save_unsaved(shared: &Shared) -> (usize, usize) {
    let kept = shared.refresh_locks.take_all_unsaved();
    let total = kept.len();
    let mut saved = 0;
    for (expected, record) in kept {
        match shared.store.save_if_version(&record, expected).await {
            Ok(true) => saved += 1,
            // Changed meanwhile (ended, or saved by the next refresh here).
            Ok(false) => {}
            Err(e) => {
                tracing::error!(
                    error = %e,
                    lost = total - saved,
                    "shutdown: refreshed sessions kept during a store outage could not be saved; their users must log in again"
                );
                return (saved, total - saved);
            }
        }
    }
    if total > 0 {
        tracing::info!(
            saved,
            "shutdown: saved the refreshed sessions kept during a store outage"
        );
    }
    (saved, 0)
}

fn report_ended(shared: &Shared, id: &SessionHash) {
    shared.demo_event(id, |_| EventKind::SessionEnded {
        reason: EndReason::RefreshRefused,
    });
}

/// Run `call` while renewing the lease every third of its TTL.
async fn with_lease_renewed<T>(
    shared: &Shared,
    id: &SessionHash,
    lease: &RefreshLease,
    call: impl Future<Output = T>,
) -> T {
    tokio::pin!(call);
    let mut tick =
        tokio::time::interval_at(tokio::time::Instant::now() + LEASE_TTL / 3, LEASE_TTL / 3);
    loop {
        tokio::select! {
            out = &mut call => return out,
            _ = tick.tick() => {
                match shared.store.renew_refresh_lease(id, lease, LEASE_TTL).await {
                    Ok(true) => {}
                    // The save's version check still protects the record.
                    Ok(false) => tracing::warn!(session = id.short(), "refresh lease lost"),
                    Err(e) => tracing::warn!(session = id.short(), error = %e, "refresh lease renewal failed"),
                }
            }
        }
    }
}

async fn apply(
    shared: &Shared,
    mut record: SessionRecord,
    tokens: oidc::TokenResponse,
) -> Result<SessionRecord, RefreshError> {
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
            Ok(c) => Some(c),
            Err(e) if e.fault() == Fault::IdpRefused => {
                tracing::warn!(error = %e, "refreshed ID token rejected; session ended");
                end_session(shared, &record.id).await?;
                return Err(RefreshError::Ended(e.to_string()));
            }
            // The keys to check it could not be fetched (the IdP rotated its
            // key and is down now). The token endpoint has spent the old
            // refresh token already: keep the new tokens, as if the IdP had
            // sent no ID token (roles stay as they are); the next refresh
            // brings a new one.
            Err(e) => {
                tracing::warn!(error = %e, "refreshed ID token not checkable now; tokens kept, roles unchanged");
                None
            }
        };
        if let Some(claims) = claims {
            apply_identity(shared, &mut record, claims, &tokens).await?;
            // Without `keep_id_token` this also drops one kept before the switch.
            record.tokens.id_token = tokens
                .id_token
                .as_deref()
                .filter(|_| shared.config.session.keep_id_token)
                .map(Into::into);
        }
    }
    record.tokens.access_token = tokens.access_token;
    record.tokens.access_expires_at = tokens.expires_in.map(|s| now + s);
    // IdPs that do not rotate send no new refresh token: keep the old one.
    if let Some(rt) = tokens.refresh_token {
        record.tokens.refresh_token = Some(rt.into());
    }
    record.version += 1;
    Ok(record)
}

/// Roles and claims from a refreshed, validated ID token (and userinfo, as
/// at login).
async fn apply_identity(
    shared: &Shared,
    record: &mut SessionRecord,
    claims: oidc::IdTokenClaims,
    tokens: &oidc::TokenResponse,
) -> Result<(), RefreshError> {
    let roles_claim = &shared.config.oidc.roles_claim;
    // As at login: the ID token's claims, overlaid with userinfo's.
    let mut all = claims.all;
    let complete = match shared
        .oidc
        .userinfo(tokens.access_token.as_str(), &record.sub)
        .await
    {
        Ok(info) => {
            all.extend(info.unwrap_or_default());
            true
        }
        Err(OidcError::UserinfoSubjectMismatch) => {
            tracing::warn!("userinfo of a refreshed token names another subject; session ended");
            end_session(shared, &record.id).await?;
            return Err(RefreshError::Ended("userinfo names another subject".into()));
        }
        Err(e) => {
            tracing::warn!(error = %e, "userinfo failed at refresh; roles can only shrink");
            false
        }
    };
    let mut merged = record.claims.to_map();
    merged.extend(oidc::user_claims(&all));
    record.claims = merged.into();
    // The IdP's answer wins, also when the claim is absent or empty
    // (the last role removed). Without userinfo's part of the answer, a
    // role is kept only if both the old roles and the new token have it.
    let roles = oidc::roles_from_claims(&all, roles_claim);
    record.roles = if complete {
        roles
    } else {
        roles
            .into_iter()
            .filter(|r| record.roles.contains(r))
            .collect()
    };
    Ok(())
}

/// Delete the session and close its WebSocket tunnels in this process.
async fn end_session(shared: &Shared, id: &SessionHash) -> Result<(), RefreshError> {
    shared.store.delete(id).await?;
    shared
        .tunnel_ends
        .notify(crate::tunnel_ends::SessionEnd::Session(id.clone()));
    Ok(())
}
