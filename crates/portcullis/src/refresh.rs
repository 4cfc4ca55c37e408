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
//! Roles follow the IdP: a refresh that brings a new ID token replaces the
//! session's roles with what that token (and userinfo, as at login) says,
//! none when the claim is absent or empty. A refresh without a new ID token
//! keeps them: the IdP made no new statement about the user.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, Weak},
    time::{Duration, Instant},
};

use crate::{
    gateway::Shared,
    http::ApiError,
    oidc::{self, OidcError, id_token::Expectations},
    session::{RefreshLease, SessionHash, SessionRecord},
    time::UnixTime,
};

/// Lease lifetime; renewed every third of it while the IdP call runs, so a
/// crashed holder blocks others for at most this long.
const LEASE_TTL: Duration = Duration::from_secs(15);
/// How often a process without the lease re-reads the record.
const LEASE_POLL: Duration = Duration::from_millis(50);

/// Most sessions remembered for the 401-refresh rate limit. When that many
/// refreshed within the interval, further 401s do not refresh (the IdP is
/// protected first); the map never grows past it.
const AFTER_401_CAPACITY: usize = 10_000;

/// Per-session locks; entries die with their last holder. Also when each
/// session last refreshed because of an upstream 401.
#[derive(Default)]
pub struct RefreshLocks {
    locks: Mutex<HashMap<SessionHash, Weak<tokio::sync::Mutex<()>>>>,
    after_401: Mutex<HashMap<SessionHash, UnixTime>>,
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

    /// Whether session `id` may refresh because of an upstream 401 at `now`
    /// (none in the last `interval` seconds); if so, counts this one.
    fn take_401_refresh(&self, id: &SessionHash, now: UnixTime, interval: i64) -> bool {
        let recent = |at: UnixTime| at <= now && now - at < interval;
        let mut map = self.after_401.lock().unwrap_or_else(|p| p.into_inner());
        if map.get(id).is_some_and(|at| recent(*at)) {
            return false;
        }
        if map.len() >= AFTER_401_CAPACITY && !map.contains_key(id) {
            map.retain(|_, at| recent(*at));
            if map.len() >= AFTER_401_CAPACITY {
                return false;
            }
        }
        map.insert(id.clone(), now);
        true
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
/// refreshing it first if needed. Used before proxying.
pub(crate) async fn ensure_fresh(
    shared: &Shared,
    record: Arc<SessionRecord>,
) -> Result<Arc<SessionRecord>, ApiError> {
    let before = shared.config.session.refresh_before.as_secs() as i64;
    if !needs_refresh(&record, shared.clock.now(), before) {
        return Ok(record);
    }
    // Boxed: the refresh future is large and rare, and inlined it would be
    // moved with every proxied request's future.
    Box::pin(single_flight(shared, &record.id, move |r, now| {
        needs_refresh(r, now, before)
    }))
    .await
    .map(Arc::new)
}

/// The record with an access token that has not expired yet, refreshing only
/// if it has. Used by `/auth/me`, which must not refresh early.
pub(crate) async fn ensure_valid(
    shared: &Shared,
    record: Arc<SessionRecord>,
) -> Result<Arc<SessionRecord>, ApiError> {
    if still_valid(&record, shared.clock.now()) {
        return Ok(record);
    }
    Box::pin(single_flight(shared, &record.id, |r, now| {
        !still_valid(r, now)
    }))
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
) -> Result<SessionRecord, ApiError> {
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
    Box::pin(single_flight(shared, id, move |r, now| {
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
    }))
    .await
}

/// Run at most one refresh of session `id` at a time, in this process and
/// (through the store lease) across processes. `stale` says whether the
/// latest stored record still needs one; waiters that find it fresh reuse it.
async fn single_flight(
    shared: &Shared,
    id: &SessionHash,
    stale: impl Fn(&SessionRecord, UnixTime) -> bool,
) -> Result<SessionRecord, ApiError> {
    let lock = shared.refresh_locks.lock_for(id);
    let _guard = lock.lock().await;
    // Whoever held the lock before us may have refreshed already.
    let current = load(shared, id).await?;
    if !stale(&current, shared.clock.now()) {
        return Ok(current);
    }
    let wait_until = Instant::now() + lease_wait(shared);
    loop {
        if let Some(lease) = shared.store.acquire_refresh_lease(id, LEASE_TTL).await? {
            let outcome = refresh_holding(shared, id, &lease, &stale).await;
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
                Err(ApiError::Idp(OidcError::Unavailable(
                    "token refresh in progress elsewhere did not finish".into(),
                )))
            };
        }
    }
}

/// How long a process without the lease waits for the holder: one IdP call
/// plus margin.
fn lease_wait(shared: &Shared) -> Duration {
    shared.config.oidc.http_timeout + Duration::from_secs(2)
}

async fn load(shared: &Shared, id: &SessionHash) -> Result<SessionRecord, ApiError> {
    shared.store.load(id).await?.ok_or(ApiError::SessionExpired)
}

/// The refresh proper, with the lease held.
async fn refresh_holding(
    shared: &Shared,
    id: &SessionHash,
    lease: &RefreshLease,
    stale: &impl Fn(&SessionRecord, UnixTime) -> bool,
) -> Result<SessionRecord, ApiError> {
    // Re-read under the lease: the previous holder may have just saved.
    let current = load(shared, id).await?;
    let now = shared.clock.now();
    if !stale(&current, now) {
        return Ok(current);
    }
    let Some(refresh_token) = current.tokens.refresh_token.clone() else {
        return if still_valid(&current, now) {
            Ok(current)
        } else {
            end_session(shared, &current.id).await?;
            Err(ApiError::SessionExpired)
        };
    };

    let started = Instant::now();
    let outcome = with_lease_renewed(shared, id, lease, shared.oidc.refresh(&refresh_token)).await;
    metrics::histogram!(crate::metrics::REFRESH_DURATION).record(started.elapsed().as_secs_f64());
    let result = match &outcome {
        Ok(_) => "success",
        Err(OidcError::OAuth { .. }) => "refused",
        Err(_) => "error",
    };
    metrics::counter!(crate::metrics::REFRESH_TOTAL, "result" => result).increment(1);

    match outcome {
        Ok(tokens) => {
            let expected = current.version;
            let updated = apply(shared, current, tokens).await?;
            // Saved before any waiter proceeds: they will read these tokens.
            // The version check fences out a holder whose lease was lost.
            if shared.store.save_if_version(&updated, expected).await? {
                tracing::debug!(session = id.short(), "access token refreshed");
                return Ok(updated);
            }
            tracing::warn!(
                session = id.short(),
                "session changed during refresh; keeping the stored tokens"
            );
            let stored = load(shared, id).await?;
            if still_valid(&stored, shared.clock.now()) {
                Ok(stored)
            } else {
                Err(ApiError::Idp(OidcError::Unavailable(
                    "concurrent token refresh conflict".into(),
                )))
            }
        }
        Err(OidcError::OAuth { error, .. }) => {
            tracing::info!(session = id.short(), %error, "refresh refused; session ended");
            end_session(shared, id).await?;
            Err(ApiError::SessionExpired)
        }
        Err(e) if still_valid(&current, now) => {
            tracing::warn!(error = %e, "refresh failed; using the current access token");
            Ok(current)
        }
        Err(e) => Err(ApiError::Idp(e)),
    }
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
                end_session(shared, &record.id).await?;
                return Err(ApiError::SessionExpired);
            }
        };
        let roles_claim = &shared.config.oidc.roles_claim;
        // As at login: the ID token's claims, overlaid with userinfo's.
        let mut all = claims.all;
        let complete = match shared
            .oidc
            .userinfo(&tokens.access_token, &record.sub)
            .await
        {
            Ok(info) => {
                all.extend(info.unwrap_or_default());
                true
            }
            Err(OidcError::UserinfoSubjectMismatch) => {
                tracing::warn!(
                    "userinfo of a refreshed token names another subject; session ended"
                );
                end_session(shared, &record.id).await?;
                return Err(ApiError::SessionExpired);
            }
            Err(e) => {
                tracing::warn!(error = %e, "userinfo failed at refresh; roles can only shrink");
                false
            }
        };
        let mut merged = record.claims.clone();
        merged.extend(oidc::user_claims(&all));
        record.claims = merged;
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
        record.tokens.id_token = tokens.id_token;
    }
    record.tokens.access_token = tokens.access_token;
    // The header built for the old token would be rebuilt on every use.
    record.tokens.bearer = Default::default();
    record.tokens.access_expires_at = tokens.expires_in.map(|s| now + s);
    // IdPs that do not rotate send no new refresh token: keep the old one.
    if let Some(rt) = tokens.refresh_token {
        record.tokens.refresh_token = Some(rt);
    }
    record.version += 1;
    Ok(record)
}

/// Delete the session and close its WebSocket tunnels in this process.
async fn end_session(shared: &Shared, id: &SessionHash) -> Result<(), ApiError> {
    shared.store.delete(id).await?;
    shared
        .tunnel_ends
        .notify(crate::proxy::SessionEnd::Session(id.clone()));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(n: usize) -> SessionHash {
        SessionHash::from_hex(&format!("{n:064x}")).expect("hex")
    }

    /// One 401-triggered refresh per session per interval, and the map
    /// stays bounded however many sessions provoke 401s.
    #[test]
    fn upstream_401_refreshes_are_limited_and_bounded() {
        let locks = RefreshLocks::default();
        let a = hash(1);
        assert!(locks.take_401_refresh(&a, 1000, 30));
        assert!(!locks.take_401_refresh(&a, 1000, 30));
        assert!(!locks.take_401_refresh(&a, 1029, 30));
        assert!(locks.take_401_refresh(&a, 1030, 30));
        for n in 0..AFTER_401_CAPACITY + 100 {
            locks.take_401_refresh(&hash(n + 10), 2000, 30);
        }
        let len = locks.after_401.lock().expect("map").len();
        assert!(len <= AFTER_401_CAPACITY, "{len}");
        // Once the old entries are past the interval, room is made again.
        assert!(locks.take_401_refresh(&hash(5), 2030, 30));
        assert!(locks.after_401.lock().expect("map").len() <= AFTER_401_CAPACITY);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 512, ..Default::default() })]

        /// For any sequence of 401s over a few sessions: a session's
        /// 401-refreshes are at least `interval` apart, and one is granted
        /// whenever the last was at least `interval` ago.
        #[test]
        fn upstream_401_refreshes_are_spaced_by_the_interval(
            events in proptest::collection::vec((0usize..4, 0i64..20), 1..200),
            interval in 1i64..60,
        ) {
            let locks = RefreshLocks::default();
            let mut now = 1_000;
            let mut last: [Option<i64>; 4] = [None; 4];
            for (session, step) in events {
                now += step;
                let allowed = locks.take_401_refresh(&hash(session), now, interval);
                let expected = last[session].is_none_or(|at| now - at >= interval);
                proptest::prop_assert_eq!(allowed, expected);
                if allowed {
                    last[session] = Some(now);
                }
            }
        }
    }
}
