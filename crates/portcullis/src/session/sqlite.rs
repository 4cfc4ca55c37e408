//! SQLite session store: one database file (or `sqlite::memory:`) for a single durable node.
//!
//! Each row keeps the whole serialized record in `payload`; the other columns
//! are copies for lookups and GC. Schema: `migrations/sqlite/`. Its
//! `login_states` table is unused since logins in flight live in the sealed
//! login cookie (`login_cookie.rs`); it stays for older replicas during
//! an upgrade and is neither read, written nor collected.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use super::seal::{Keyring, PayloadCodec};
use super::sql_row::{SessionRow, record_from_row};
use super::{
    RefreshLease, RefreshLeases, ReplayGuard, SessionHash, SessionRecord, SessionRecords,
    StoreError, StoreUpkeep, random_token, redact_url,
};
use crate::time::UnixTime;

/// How long a statement waits for another connection's write lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a request waits for a pooled connection. Short, so a wedged store
/// turns into a prompt 503 instead of requests piling up.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);
/// SQLite serializes writers anyway; a few connections let reads run beside a write (WAL).
const MAX_CONNECTIONS: u32 = 4;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

/// Session store in a SQLite database.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// Seals payloads when the store has a keyring (see [`SqliteStore::with_keyring`]).
    codec: PayloadCodec,
    /// Held while this store serves the file (see [`SqliteStore::claim_file`]).
    claim: Option<std::sync::Arc<super::sqlite_claim::FileClaim>>,
}

impl SqliteStore {
    /// Open (creating if missing) the database `url` names and migrate it.
    ///
    /// Accepts `sqlite://PATH` (relative to the working directory, or
    /// `sqlite:///abs/path.db`) and `sqlite::memory:`. The parent directory
    /// must exist. Each `sqlite::memory:` call opens a separate, empty database.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        if !url.starts_with("sqlite:") {
            return Err(StoreError::BadUrl(redact_url(url)));
        }
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::BadUrl(format!("{}: {e}", redact_url(url))))?
            .busy_timeout(BUSY_TIMEOUT);

        let (options, pool_options) = if in_memory {
            // An in-memory database lives only as long as a connection to it
            // is open, and a second connection could see a different one: keep
            // exactly one connection, forever.
            let pool = SqlitePoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None);
            (options, pool)
        } else {
            // WAL lets readers proceed during a write; NORMAL sync is durable
            // against crashes of the process and only risks the last commits on
            // power loss, acceptable for sessions.
            let options = options
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal);
            let pool = SqlitePoolOptions::new().max_connections(MAX_CONNECTIONS);
            (options, pool)
        };

        // `connect_with` opens one connection up front, so a bad path fails here.
        let pool = pool_options
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(|e| {
                StoreError::Unavailable(format!("cannot open {}: {e}", redact_url(url)))
            })?;
        let store = Self {
            pool,
            codec: PayloadCodec::plain(),
            claim: None,
        };
        store.migrate().await?;
        Ok(store)
    }

    /// Apply pending migrations. Idempotent: applied ones are skipped.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR
            .run(&self.pool)
            .await
            .map_err(|e| StoreError::Unavailable(format!("sqlite migration failed: {e}")))
    }

    /// Seal every payload written from now on with `keyring`, and open
    /// stored ones with it (encryption at rest).
    pub fn with_keyring(mut self, keyring: std::sync::Arc<Keyring>) -> Self {
        self.codec = PayloadCodec::sealed(keyring);
        self
    }

    /// Claim the database file for this process: exclusively when `cached`
    /// (nobody else may write behind the cache), shared otherwise. An
    /// in-memory database belongs to this process anyway.
    pub fn claim_file(mut self, url: &str, cached: bool) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::BadUrl(format!("{}: {e}", redact_url(url))))?;
        let path = options.get_filename();
        if !(url.contains(":memory:") || url.contains("mode=memory")) {
            self.claim = Some(std::sync::Arc::new(super::sqlite_claim::FileClaim::take(
                path, cached,
            )?));
        }
        Ok(self)
    }

    /// The connection pool, for admin queries and tests.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

/// Rows deleted per GC statement.
const GC_BATCH: i64 = 1000;

#[async_trait]
impl SessionRecords for SqliteStore {
    async fn load(&self, id: &SessionHash) -> Result<Option<SessionRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT id, payload, last_seen_at, idle_expires_at FROM sessions WHERE id = ?1",
        )
        .bind(id.as_str())
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(row) => record_from_row(&self.codec, &row),
            None => Ok(None),
        }
    }

    async fn save(&self, record: &SessionRecord) -> Result<(), StoreError> {
        let SessionRow { payload, version } = SessionRow::encode(&self.codec, record)?;
        sqlx::query(
            "INSERT INTO sessions
                 (id, sub, sid, payload, expires_at, idle_expires_at, version, created_at, updated_at, last_seen_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, unixepoch(), ?9)
             ON CONFLICT (id) DO UPDATE SET
                 sub = excluded.sub,
                 sid = excluded.sid,
                 payload = excluded.payload,
                 expires_at = excluded.expires_at,
                 idle_expires_at = excluded.idle_expires_at,
                 version = excluded.version,
                 created_at = excluded.created_at,
                 updated_at = excluded.updated_at,
                 last_seen_at = excluded.last_seen_at",
        )
        .bind(record.id.as_str())
        .bind(&record.sub)
        .bind(record.sid.as_deref())
        .bind(payload)
        .bind(record.expires_at)
        .bind(record.idle_expires_at)
        .bind(version)
        .bind(record.created_at)
        .bind(record.last_seen_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn touch(
        &self,
        id: &SessionHash,
        last_seen_at: UnixTime,
        idle_expires_at: UnixTime,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE sessions SET last_seen_at = ?2, idle_expires_at = ?3, updated_at = unixepoch()
             WHERE id = ?1",
        )
        .bind(id.as_str())
        .bind(last_seen_at)
        .bind(idle_expires_at)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn delete(&self, id: &SessionHash) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM sessions WHERE id = ?1")
            .bind(id.as_str())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn delete_by_sub(&self, sub: &str) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM sessions WHERE sub = ?1")
            .bind(sub)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    async fn delete_by_sid(&self, sid: &str) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM sessions WHERE sid = ?1")
            .bind(sid)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    async fn list_by_sub(&self, sub: &str) -> Result<Vec<SessionRecord>, StoreError> {
        let rows =
            sqlx::query("SELECT id, payload, last_seen_at, idle_expires_at FROM sessions WHERE sub = ?1 ORDER BY created_at, id")
                .bind(sub)
                .fetch_all(&self.pool)
                .await?;
        let mut records = Vec::with_capacity(rows.len());
        for row in &rows {
            records.extend(record_from_row(&self.codec, row)?);
        }
        Ok(records)
    }

    async fn save_if_version(
        &self,
        record: &SessionRecord,
        expected_version: u64,
    ) -> Result<bool, StoreError> {
        // Same payload encoding as `save`.
        let SessionRow { payload, version } = SessionRow::encode(&self.codec, record)?;
        let expected = i64::try_from(expected_version).unwrap_or(i64::MAX);
        // One conditional UPDATE: the version check and the write are atomic.
        // Activity columns only move forward, so a concurrent `touch` survives.
        let done = sqlx::query(
            "UPDATE sessions SET
                 sub = ?2, sid = ?3, payload = ?4, expires_at = ?5, version = ?6,
                 idle_expires_at = max(idle_expires_at, ?7),
                 last_seen_at = max(last_seen_at, ?8),
                 updated_at = unixepoch()
             WHERE id = ?1 AND version = ?9",
        )
        .bind(record.id.as_str())
        .bind(&record.sub)
        .bind(record.sid.as_deref())
        .bind(payload)
        .bind(record.expires_at)
        .bind(version)
        .bind(record.idle_expires_at)
        .bind(record.last_seen_at)
        .bind(expected)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }
}

#[async_trait]
impl ReplayGuard for SqliteStore {
    async fn remember_jti(
        &self,
        jti: &str,
        expires_at: UnixTime,
        now: UnixTime,
    ) -> Result<bool, StoreError> {
        // One statement: insert, or take over a row whose lifetime is over.
        // Zero rows affected means a live row exists: a replay.
        let done = sqlx::query(
            "INSERT INTO logout_jtis (jti, expires_at) VALUES (?1, ?2)
             ON CONFLICT (jti) DO UPDATE SET expires_at = excluded.expires_at
             WHERE logout_jtis.expires_at <= ?3",
        )
        .bind(jti)
        .bind(expires_at)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn forget_jti(&self, jti: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM logout_jtis WHERE jti = ?1")
            .bind(jti)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

#[async_trait]
impl RefreshLeases for SqliteStore {
    async fn acquire_refresh_lease(
        &self,
        id: &SessionHash,
        ttl: Duration,
    ) -> Result<Option<RefreshLease>, StoreError> {
        let now = unix_millis();
        let token = random_token(16);
        // Insert, or take over an expired lease; a live one leaves the row
        // untouched and zero rows affected.
        let done = sqlx::query(
            "INSERT INTO refresh_leases (id, token, expires_at_ms) VALUES (?1, ?2, ?3)
             ON CONFLICT (id) DO UPDATE SET
                 token = excluded.token,
                 expires_at_ms = excluded.expires_at_ms
             WHERE refresh_leases.expires_at_ms <= ?4",
        )
        .bind(id.as_str())
        .bind(&token)
        .bind(now.saturating_add(millis(ttl)))
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok((done.rows_affected() > 0).then_some(RefreshLease(token)))
    }

    async fn renew_refresh_lease(
        &self,
        id: &SessionHash,
        lease: &RefreshLease,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE refresh_leases SET expires_at_ms = ?3 WHERE id = ?1 AND token = ?2",
        )
        .bind(id.as_str())
        .bind(&lease.0)
        .bind(unix_millis().saturating_add(millis(ttl)))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn release_refresh_lease(
        &self,
        id: &SessionHash,
        lease: &RefreshLease,
    ) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM refresh_leases WHERE id = ?1 AND token = ?2")
            .bind(id.as_str())
            .bind(&lease.0)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

#[async_trait]
impl StoreUpkeep for SqliteStore {
    async fn gc(&self, now: UnixTime) -> Result<u64, StoreError> {
        // Same boundary as `SessionRecord::is_expired`: expired at `now >= expiry`.
        // In batches, so a large backlog never holds SQLite's write lock for long.
        let mut sessions = 0;
        for (sql, counted) in [
            (
                "DELETE FROM sessions WHERE id IN (SELECT id FROM sessions
                     WHERE expires_at <= ?1 OR idle_expires_at <= ?1 LIMIT ?2)",
                true,
            ),
            (
                "DELETE FROM logout_jtis WHERE jti IN (SELECT jti FROM logout_jtis
                     WHERE expires_at <= ?1 LIMIT ?2)",
                false,
            ),
            (
                "DELETE FROM refresh_leases WHERE id IN (SELECT id FROM refresh_leases
                     WHERE expires_at_ms <= ?1 * 1000 LIMIT ?2)",
                false,
            ),
        ] {
            loop {
                let done = sqlx::query(sql)
                    .bind(now)
                    .bind(GC_BATCH)
                    .execute(&self.pool)
                    .await?;
                if counted {
                    sessions += done.rows_affected();
                }
                if done.rows_affected() < GC_BATCH as u64 {
                    break;
                }
            }
        }
        Ok(sessions)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn count(&self) -> Result<Option<u64>, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sessions")
            .fetch_one(&self.pool)
            .await?;
        Ok(Some(n.max(0) as u64))
    }
}

/// Wall-clock unix milliseconds: leases are shared by every process on the database.
fn unix_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(millis)
        .unwrap_or(0)
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use crate::session::SessionStore;
    use std::sync::Arc;
    use std::time::Instant;

    use super::*;
    use crate::session::contract::sample_record;

    /// A fresh database file in its own temp dir; the dir lives as long as the store is used.
    async fn file_store() -> (SqliteStore, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("sessions.db").display());
        let store = SqliteStore::connect(&url).await.expect("open file store");
        (store, dir)
    }

    mod file_contract {
        use super::*;

        crate::session_store_contract_tests!(async {
            let (store, dir) = file_store().await;
            (Arc::new(store) as Arc<dyn SessionStore>, dir)
        });
    }

    mod memory_contract {
        use super::*;

        crate::session_store_contract_tests!(async {
            let store = SqliteStore::connect("sqlite::memory:")
                .await
                .expect("open in-memory store");
            Arc::new(store) as Arc<dyn SessionStore>
        });
    }

    #[tokio::test]
    async fn gc_deletes_a_backlog_larger_than_one_batch() {
        let (store, _dir) = file_store().await;
        let now = 1_000_000;
        let expired = GC_BATCH as usize + 500;
        for i in 0..expired {
            let (_, mut r) = crate::session::contract::sample_record(&format!("u{i}"), None, now);
            r.expires_at = now - 1;
            store.save(&r).await.expect("save expired");
        }
        let (_, live) = crate::session::contract::sample_record("live", None, now);
        store.save(&live).await.expect("save live");
        assert_eq!(store.gc(now).await.expect("gc"), expired as u64);
        assert!(store.load(&live.id).await.expect("load").is_some());
        assert_eq!(store.gc(now).await.expect("gc again"), 0);
    }

    #[tokio::test]
    async fn file_survives_reopen() {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("sessions.db").display());
        let (_, record) = sample_record("alice", Some("sid-1"), 1_000);

        let store = SqliteStore::connect(&url).await.expect("first open");
        store.save(&record).await.expect("save");
        store.pool().close().await;
        drop(store);

        let store = SqliteStore::connect(&url).await.expect("reopen");
        assert_eq!(store.load(&record.id).await.expect("load"), Some(record));
    }

    #[tokio::test]
    async fn migrate_is_idempotent() {
        let (store, _dir) = file_store().await;
        store.migrate().await.expect("second migrate");
        store.migrate().await.expect("third migrate");
        store.ping().await.expect("ping");
    }

    #[tokio::test]
    async fn in_memory_databases_are_isolated() {
        let a = SqliteStore::connect("sqlite::memory:").await.expect("a");
        let b = SqliteStore::connect("sqlite::memory:").await.expect("b");
        let (_, record) = sample_record("alice", None, 1_000);
        a.save(&record).await.expect("save");
        assert_eq!(b.load(&record.id).await.expect("load"), None);
    }

    async fn insert_raw_session(store: &SqliteStore, id: &str, sub: &str, payload: &[u8]) {
        sqlx::query(
            "INSERT INTO sessions
                 (id, sub, sid, payload, expires_at, idle_expires_at, version, created_at, updated_at, last_seen_at)
             VALUES (?1, ?2, NULL, ?3, 9999999999, 9999999999, 1, 0, 0, 0)",
        )
        .bind(id)
        .bind(sub)
        .bind(payload)
        .execute(store.pool())
        .await
        .expect("raw insert");
    }

    #[tokio::test]
    async fn corrupt_payload_is_an_error_not_a_panic() {
        let (store, _dir) = file_store().await;
        let id = "ab".repeat(32);
        insert_raw_session(&store, &id, "mallory", b"not json at all").await;
        let hash = SessionHash::from_hex(&id).expect("hex");

        assert!(matches!(
            store.load(&hash).await,
            Err(StoreError::Corrupt(_))
        ));
        assert!(matches!(
            store.list_by_sub("mallory").await,
            Err(StoreError::Corrupt(_))
        ));
        // Deletion still works, so an operator can clear the bad row.
        assert!(store.delete(&hash).await.expect("delete"));
    }

    #[tokio::test]
    async fn corrupt_message_does_not_quote_payload() {
        let (store, _dir) = file_store().await;
        let id = "cd".repeat(32);
        insert_raw_session(&store, &id, "mallory", br#"{"version": "SECRET-TOKEN"}"#).await;
        let hash = SessionHash::from_hex(&id).expect("hex");
        match store.load(&hash).await {
            Err(StoreError::Corrupt(msg)) => assert!(!msg.contains("SECRET"), "{msg}"),
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn payload_under_another_id_is_corrupt() {
        let (store, _dir) = file_store().await;
        let (_, record) = sample_record("alice", None, 1_000);
        let payload = serde_json::to_vec(&record).expect("json");
        let other = "ef".repeat(32);
        insert_raw_session(&store, &other, "alice", &payload).await;
        let hash = SessionHash::from_hex(&other).expect("hex");
        assert!(matches!(
            store.load(&hash).await,
            Err(StoreError::Corrupt(_))
        ));
    }

    #[tokio::test]
    async fn unwritable_path_fails_fast() {
        let started = Instant::now();
        let result = SqliteStore::connect("sqlite:///proc/nope/x.db").await;
        assert!(
            matches!(result, Err(StoreError::Unavailable(_))),
            "{result:?}"
        );
        assert!(
            started.elapsed() < ACQUIRE_TIMEOUT,
            "took {:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn closed_pool_is_unavailable() {
        let (store, _dir) = file_store().await;
        store.pool().close().await;
        assert!(matches!(
            store.ping().await,
            Err(StoreError::Unavailable(_))
        ));
        let (_, record) = sample_record("alice", None, 1_000);
        assert!(matches!(
            store.save(&record).await,
            Err(StoreError::Unavailable(_))
        ));
    }

    #[tokio::test]
    async fn non_sqlite_url_is_rejected() {
        let result = SqliteStore::connect("postgres://u:pw@h/db").await;
        match result {
            Err(StoreError::BadUrl(shown)) => assert!(!shown.contains("pw"), "{shown}"),
            other => panic!("expected BadUrl, got {other:?}"),
        }
    }
}
