//! The store traits, one per concern (after tower-sessions' small store
//! trait, with expiry and caching composed beside it):
//!
//! - [`SessionRecords`]: the session records themselves;
//! - [`ReplayGuard`]: single-use identifiers (back-channel logout `jti`,
//!   used login states);
//! - [`RefreshLeases`]: who may spend a session's refresh token right now;
//! - [`StoreUpkeep`]: expiry, readiness and the session count.
//!
//! [`SessionStore`] is all four, what the gateway holds (`Arc<dyn
//! SessionStore>`); every type that implements the four is one. No method
//! whose behaviour decides correctness has a default: an atomic
//! compare-and-swap, a lease or a touch that cannot undo a refresh are each
//! the backend's to write.

use std::sync::Arc;

use async_trait::async_trait;

use super::{RefreshLease, SessionHash, SessionRecord, StoreError};
use crate::time::UnixTime;

/// The session records (logins in flight live in the browser's sealed login
/// cookie, not here). Implementations must be safe to share across tasks and
/// (for remote stores) across replicas.
#[async_trait]
pub trait SessionRecords: Send + Sync + 'static {
    /// The record stored under `id`, if any. Expired records may be returned;
    /// callers check [`SessionRecord::is_expired`].
    async fn load(&self, id: &SessionHash) -> Result<Option<SessionRecord>, StoreError>;

    /// [`load`](Self::load) for the request path, which only reads the
    /// record: stores that keep records in memory override it to hand out a
    /// shared copy instead of cloning the record (tokens, claims) per request.
    async fn load_shared(
        &self,
        id: &SessionHash,
    ) -> Result<Option<Arc<SessionRecord>>, StoreError> {
        Ok(self.load(id).await?.map(Arc::new))
    }

    /// Insert or replace the record under `record.id`.
    async fn save(&self, record: &SessionRecord) -> Result<(), StoreError>;

    /// Save `record` only if the stored record's version is still
    /// `expected_version` (compare-and-swap, the fencing check for token
    /// refresh). Returns `false` on a version conflict or a missing record.
    /// Must be atomic against every other writer of the store.
    async fn save_if_version(
        &self,
        record: &SessionRecord,
        expected_version: u64,
    ) -> Result<bool, StoreError>;

    /// Record activity: set only `last_seen_at` and `idle_expires_at`, leaving
    /// tokens alone so a touch can never undo a concurrent token refresh.
    /// Returns whether the session existed.
    async fn touch(
        &self,
        id: &SessionHash,
        last_seen_at: UnixTime,
        idle_expires_at: UnixTime,
    ) -> Result<bool, StoreError>;

    /// Delete one session. Returns whether it existed.
    async fn delete(&self, id: &SessionHash) -> Result<bool, StoreError>;

    /// Delete every session of a subject. Returns how many.
    async fn delete_by_sub(&self, sub: &str) -> Result<u64, StoreError>;

    /// Delete every session with this IdP session id. Returns how many.
    async fn delete_by_sid(&self, sid: &str) -> Result<u64, StoreError>;

    /// Every stored session of a subject (expired ones included until GC).
    async fn list_by_sub(&self, sub: &str) -> Result<Vec<SessionRecord>, StoreError>;
}

/// Single-use identifiers, shared by every replica of the store.
#[async_trait]
pub trait ReplayGuard: Send + Sync + 'static {
    /// Remember the `jti` of an accepted back-channel logout token (or, as
    /// `login-state:<hash>`, a login state after its successful code exchange)
    /// until `expires_at`. Returns `true` the first time, `false` when it was
    /// seen before and is still live at `now` (a replay: refuse it). A store
    /// used by several replicas needs an atomic insert-if-absent so a replay
    /// is refused everywhere.
    async fn remember_jti(
        &self,
        jti: &str,
        expires_at: UnixTime,
        now: UnixTime,
    ) -> Result<bool, StoreError>;

    /// Forget a remembered `jti`: the back-channel logout it belonged to
    /// failed (its sessions could not be deleted), and the IdP's retry of
    /// the same token must be served, not refused as a replay.
    async fn forget_jti(&self, jti: &str) -> Result<(), StoreError>;
}

/// The refresh lease: at most one holder per session across every process
/// sharing the store, so a rotated refresh token is never spent twice.
#[async_trait]
pub trait RefreshLeases: Send + Sync + 'static {
    /// Try to take the refresh lease of session `id` for `ttl`. Returns the
    /// lease token when acquired, `None` when someone else holds it.
    async fn acquire_refresh_lease(
        &self,
        id: &SessionHash,
        ttl: std::time::Duration,
    ) -> Result<Option<RefreshLease>, StoreError>;

    /// Extend a lease we hold. Returns `false` if it was lost (expired and taken).
    async fn renew_refresh_lease(
        &self,
        id: &SessionHash,
        lease: &RefreshLease,
        ttl: std::time::Duration,
    ) -> Result<bool, StoreError>;

    /// Give a lease back (only if still ours).
    async fn release_refresh_lease(
        &self,
        id: &SessionHash,
        lease: &RefreshLease,
    ) -> Result<(), StoreError>;
}

/// Expiry, readiness and counting.
#[async_trait]
pub trait StoreUpkeep: Send + Sync + 'static {
    /// Delete sessions (and leases, used ids) expired at `now`. Returns how many sessions.
    async fn gc(&self, now: UnixTime) -> Result<u64, StoreError>;

    /// Cheap reachability check for readiness.
    async fn ping(&self) -> Result<(), StoreError>;

    /// How many sessions are stored (expired but not yet collected included),
    /// for the `portcullis_sessions_active` gauge; `None` when the backend
    /// cannot count cheaply.
    async fn count(&self) -> Result<Option<u64>, StoreError> {
        Ok(None)
    }
}

/// A whole session store: the four concerns together.
pub trait SessionStore: SessionRecords + ReplayGuard + RefreshLeases + StoreUpkeep {}

impl<T: SessionRecords + ReplayGuard + RefreshLeases + StoreUpkeep> SessionStore for T {}
