//! Server-side sessions: the record, the cookie id and its hash, and the
//! [`SessionStore`] trait every backend implements.
//!
//! The browser holds a 256-bit random [`SessionId`]; stores only ever see its
//! SHA-256, the [`SessionHash`]. Backends: `memory.rs`, `sqlite.rs`,
//! `redis/` (single node, Sentinel, Cluster), `postgres.rs`; `seal.rs` encrypts payloads at rest and
//! `cache.rs` puts a local cache in front of the remote ones.

mod access_token;
pub mod bus;
pub mod cache;
#[cfg(any(test, feature = "test-support"))]
pub mod contract;
mod id;
mod jti;
mod memory;
pub mod postgres;
pub mod redis;
pub mod seal;
mod sql_row;
mod sqlite;
mod sqlite_claim;
mod store;
#[cfg(test)]
mod tls_tests;
mod user_claims;

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::time::UnixTime;

pub use crate::store_url::{is_persistent, redact_url};
pub use access_token::AccessToken;
pub use id::{SessionHash, SessionId, hex_sha256, random_key_base64, random_token};
pub use memory::MemoryStore;
pub use sqlite::SqliteStore;
pub use store::{RefreshLeases, ReplayGuard, SessionRecords, SessionStore, StoreUpkeep};
pub use store_options::{StoreOptions, open_store_with};
pub use user_claims::UserClaims;

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
    /// Held as the `Authorization` value the proxy sends (see [`AccessToken`]).
    pub access_token: AccessToken,
    /// `Box<str>`, not `String`: token texts are replaced, never edited, and
    /// the 8 bytes each saves keep a record in mimalloc's 320-byte class
    /// (`tests::a_record_in_its_arc_fits_the_320_byte_class`).
    pub refresh_token: Option<Box<str>>,
    pub id_token: Option<Box<str>>,
    /// When the access token expires (unix seconds), if the IdP said.
    pub access_expires_at: Option<UnixTime>,
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
    pub claims: UserClaims,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Records as the stores wrote them while `access_token` was a `String`.
    const STORED: [&str; 2] = [
        concat!(
            r#"{"id":"0f4e6b8a9c2d1e3f5a7b9c0d2e4f6a8b0c1d3e5f7a9b1c2d4e6f8a0b2c3d4e5f","#,
            r#""sub":"alice","sid":"sid-1","claims":{"name":"Zoë"},"roles":["admin"],"#,
            r#""tokens":{"access_token":"eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2ln","#,
            r#""refresh_token":"rt-\"quoted\"\\back","id_token":"eyJ.eyJub25jZSI6Im4ifQ.sig","#,
            r#""access_expires_at":1700000300},"csrf_token":"c","#,
            r#""user_agent":"Firefox 128 on Linux","created_at":1700000000,"#,
            r#""last_seen_at":1700000000,"expires_at":1700028800,"#,
            r#""idle_expires_at":1700001800,"version":3}"#
        ),
        // No refresh or ID token, no expiry, and an access token that is no
        // header value (a newline in it): stored and read back all the same.
        concat!(
            r#"{"id":"1f4e6b8a9c2d1e3f5a7b9c0d2e4f6a8b0c1d3e5f7a9b1c2d4e6f8a0b2c3d4e5f","#,
            r#""sub":"bob","sid":null,"claims":{},"roles":[],"#,
            r#""tokens":{"access_token":"at-zoë\nline two","refresh_token":null,"#,
            r#""id_token":null,"access_expires_at":null},"csrf_token":"c","#,
            r#""user_agent":null,"created_at":1700000000,"last_seen_at":1700000000,"#,
            r#""expires_at":1700028800,"idle_expires_at":1700001800,"version":1}"#
        ),
    ];

    #[test]
    fn a_record_stored_before_loads_and_writes_back_byte_for_byte() {
        for stored in STORED {
            let record: SessionRecord = serde_json::from_str(stored).unwrap();
            assert_eq!(serde_json::to_string(&record).unwrap(), stored);
            let again: SessionRecord = serde_json::from_slice(stored.as_bytes()).unwrap();
            assert!(again.tokens == record.tokens);
        }
        let [full, bare] = STORED.map(|s| serde_json::from_str::<SessionRecord>(s).unwrap());
        let t = &full.tokens;
        assert_eq!(
            t.access_token.as_str(),
            "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2ln"
        );
        assert_eq!(
            t.access_token.authorization().unwrap(),
            "Bearer eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2ln"
        );
        assert_eq!(t.refresh_token.as_deref(), Some(r#"rt-"quoted"\back"#));
        assert_eq!(t.access_expires_at, Some(1_700_000_300));
        let t = &bare.tokens;
        assert_eq!(t.access_token.as_str(), "at-zoë\nline two");
        assert!(t.access_token.authorization().is_none());
        assert_eq!((&t.refresh_token, &t.id_token), (&None, &None));
    }

    /// The memory store keeps a record in an `Arc` (16 bytes more), and the
    /// gateway's mimalloc serves an 8-aligned request whose size is not a
    /// power of two as `size + 7` once its page has no free block at hand,
    /// so an `Arc` of 314 to 320 bytes takes the 384-byte class (measured:
    /// docs/performance.md, where a session's bytes go).
    #[test]
    fn a_record_in_its_arc_fits_the_320_byte_class() {
        let arc = size_of::<SessionRecord>() + 16;
        assert!(arc + 7 <= 320, "Arc<SessionRecord> is {arc} bytes");
    }

    #[test]
    fn debug_shows_no_token() {
        let record: SessionRecord = serde_json::from_str(STORED[0]).unwrap();
        let shown = format!("{record:?}");
        for secret in ["eyJhbGciOiJSUzI1NiJ9", "rt-", "eyJub25jZSI6Im4ifQ"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(shown.contains("access_expires_at"));
    }
}
