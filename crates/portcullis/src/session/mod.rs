//! Server-side sessions: the record, the cookie id and its hash, and the
//! [`SessionStore`] trait every backend implements.
//!
//! The browser holds a 256-bit random [`SessionId`]; stores only ever see its
//! SHA-256, the [`SessionHash`]. Backends: `memory.rs`, `sqlite.rs`,
//! `redis/` (single node, Sentinel, Cluster), `postgres.rs`; `seal.rs` encrypts payloads at rest and
//! `cache.rs` puts a local cache in front of the remote ones.

mod bearer;
pub mod cache;
#[cfg(any(test, feature = "test-support"))]
pub mod contract;
mod id;
mod jti;
mod memory;
pub mod postgres;
pub mod redis;
pub mod seal;
mod sqlite;
#[cfg(test)]
mod tls_tests;

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::time::UnixTime;

pub use bearer::BearerHeader;
pub use id::{SessionHash, SessionId, hex_sha256, random_key_base64, random_token};
pub use memory::MemoryStore;
pub use sqlite::SqliteStore;
pub use store_options::{StoreOptions, open_store_with};

pub mod store_options;

/// Errors a store reports. Every one maps to 503 `store_unavailable`.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("session store unavailable: {0}")]
    Unavailable(String),
    #[error("session record is corrupt: {0}")]
    Corrupt(String),
    #[error("unsupported session store URL: {0}")]
    BadUrl(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        StoreError::Unavailable(e.to_string())
    }
}

/// The tokens the IdP issued for this session. Never leave the server.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TokenSet {
    pub access_token: String,
    pub refresh_token: Option<String>,
    pub id_token: Option<String>,
    /// When the access token expires (unix seconds), if the IdP said.
    pub access_expires_at: Option<UnixTime>,
    /// The `Authorization` value for `access_token`, built on first use
    /// (`BearerHeader::default()` when building a set).
    #[serde(skip)]
    pub bearer: BearerHeader,
}

impl std::fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSet")
            .field("access_expires_at", &self.access_expires_at)
            .finish_non_exhaustive()
    }
}

/// One logged-in browser session.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SessionRecord {
    /// SHA-256 of the cookie value; the store key.
    pub id: SessionHash,
    /// Subject at the IdP.
    pub sub: String,
    /// The IdP's session id (`sid` claim), used by logout.
    pub sid: Option<String>,
    /// Selected user claims (name, email, preferred_username, ...), shown by `/auth/me`.
    pub claims: serde_json::Map<String, serde_json::Value>,
    /// Roles read from `oidc.roles_claim`.
    pub roles: Vec<String>,
    pub tokens: TokenSet,
    /// The CSRF token the browser must echo in the CSRF header.
    pub csrf_token: String,
    /// Short summary of the User-Agent at login, for operators.
    pub user_agent: Option<String>,
    pub created_at: UnixTime,
    pub last_seen_at: UnixTime,
    /// Absolute expiry: `created_at + absolute_timeout`.
    pub expires_at: UnixTime,
    /// Idle expiry: `last_seen_at + idle_timeout`, capped at `expires_at`.
    pub idle_expires_at: UnixTime,
    /// Incremented by the gateway on every change it saves; stores persist it as given.
    pub version: u64,
}

impl SessionRecord {
    /// Whether the session is past its idle or absolute expiry at `now`.
    pub fn is_expired(&self, now: UnixTime) -> bool {
        now >= self.expires_at || now >= self.idle_expires_at
    }
}

/// Storage for sessions (logins in flight live in the browser's sealed login
/// cookie, not here). Implementations must be safe
/// to share across tasks and (for remote stores) across replicas.
#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
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

    /// Record activity: set only `last_seen_at` and `idle_expires_at`, leaving
    /// tokens alone so a touch can never undo a concurrent token refresh.
    /// Returns whether the session existed.
    ///
    /// The default is load-modify-save; backends override it with an atomic update.
    async fn touch(
        &self,
        id: &SessionHash,
        last_seen_at: UnixTime,
        idle_expires_at: UnixTime,
    ) -> Result<bool, StoreError> {
        match self.load(id).await? {
            Some(mut r) => {
                r.last_seen_at = last_seen_at;
                r.idle_expires_at = idle_expires_at;
                self.save(&r).await?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Delete one session. Returns whether it existed.
    async fn delete(&self, id: &SessionHash) -> Result<bool, StoreError>;

    /// Delete every session of a subject. Returns how many.
    async fn delete_by_sub(&self, sub: &str) -> Result<u64, StoreError>;

    /// Delete every session with this IdP session id. Returns how many.
    async fn delete_by_sid(&self, sid: &str) -> Result<u64, StoreError>;

    /// Every stored session of a subject (expired ones included until GC).
    async fn list_by_sub(&self, sub: &str) -> Result<Vec<SessionRecord>, StoreError>;

    /// Delete sessions (and leases, used ids) expired at `now`. Returns how many sessions.
    async fn gc(&self, now: UnixTime) -> Result<u64, StoreError>;

    /// Cheap reachability check for readiness.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Remember the `jti` of an accepted back-channel logout token (or, as
    /// `login-state:<hash>`, a login state after its successful code exchange)
    /// until `expires_at`. Returns `true` the first time, `false` when it was
    /// seen before and is still live at `now` (a replay: refuse it).
    ///
    /// No default: a store used by several replicas needs an atomic
    /// insert-if-absent so a replay is refused everywhere.
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

    /// How many sessions are stored (expired but not yet collected included),
    /// for the `portcullis_sessions_active` gauge; `None` when the backend
    /// cannot count cheaply.
    async fn count(&self) -> Result<Option<u64>, StoreError> {
        Ok(None)
    }

    /// Save `record` only if the stored record's version is still
    /// `expected_version` (compare-and-swap, the fencing check for token
    /// refresh). Returns `false` on a version conflict or a missing record.
    ///
    /// The default is load-compare-save and NOT atomic; every backend must
    /// override it.
    async fn save_if_version(
        &self,
        record: &SessionRecord,
        expected_version: u64,
    ) -> Result<bool, StoreError> {
        match self.load(&record.id).await? {
            Some(current) if current.version == expected_version => {
                self.save(record).await?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Try to take the refresh lease of session `id` for `ttl`: at most one
    /// holder per session across every process sharing the store. Returns
    /// the lease token when acquired, `None` when someone else holds it.
    ///
    /// The default grants every request (correct only for a single process
    /// that also serializes refreshes in memory); backends override it.
    async fn acquire_refresh_lease(
        &self,
        id: &SessionHash,
        ttl: std::time::Duration,
    ) -> Result<Option<RefreshLease>, StoreError> {
        let _ = (id, ttl);
        Ok(Some(RefreshLease(random_token(16))))
    }

    /// Extend a lease we hold. Returns `false` if it was lost (expired and taken).
    async fn renew_refresh_lease(
        &self,
        id: &SessionHash,
        lease: &RefreshLease,
        ttl: std::time::Duration,
    ) -> Result<bool, StoreError> {
        let _ = (id, lease, ttl);
        Ok(true)
    }

    /// Give a lease back (only if still ours).
    async fn release_refresh_lease(
        &self,
        id: &SessionHash,
        lease: &RefreshLease,
    ) -> Result<(), StoreError> {
        let _ = (id, lease);
        Ok(())
    }
}

/// Proof of holding a session's refresh lease: a random token only the
/// holder knows, so release and renew are compare-and-delete/extend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshLease(pub String);

/// Open the store a `session.store` URL names (`memory`, `sqlite://PATH`,
/// `sqlite::memory:`, `redis://`, `rediss://`, `redis+sentinel://`,
/// `redis+cluster://`, `rediss+cluster://`, `postgres://`) with default [`StoreOptions`]: payloads NOT sealed, local
/// cache on for remote stores. Runs migrations for SQL stores. The gateway
/// uses [`open_store_with`] and [`StoreOptions::from_config`].
pub async fn open_store(url: &str) -> Result<Arc<dyn SessionStore>, StoreError> {
    open_store_with(url, &StoreOptions::default()).await
}

/// Drop credentials from a store URL before it is shown anywhere.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}
