//! PostgreSQL session store (`postgres://`, `postgresql://`) for replicas,
//! plus the LISTEN/NOTIFY [`InvalidationBus`] its caches share.
//!
//! Same row shape as SQLite (schema: `migrations/postgres/`): a sealed payload
//! plus plaintext lookup columns. Compare-and-swap is `UPDATE … WHERE version`;
//! refresh leases are rows taken with an upsert that only overwrites an
//! expired lease, timed by the database clock. The `login_states` table is
//! unused (logins in flight live in the sealed login cookie) and kept for
//! older replicas during an upgrade.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};

use super::bus::{ReconnectingBus, Subscription, Transport};
use super::seal::PayloadCodec;
use super::sql_row::{SessionRow, record_from_row};
use super::{
    RefreshLease, RefreshLeases, ReplayGuard, SessionHash, SessionRecord, SessionRecords,
    StoreError, StoreUpkeep, random_token, redact_url,
};
use crate::store_url::{SSLROOTCERT, postgres_tls_problem, query_value};
use crate::time::UnixTime;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

/// How many expired rows one GC statement deletes.
const GC_BATCH: i64 = 1000;

/// Connection settings for [`PostgresStore::connect`].
#[derive(Debug, Clone)]
pub struct PostgresOptions {
    /// Upper bound for one store operation, pool wait included (default 2 s).
    pub timeout: Duration,
    /// Pool size (default 16).
    pub max_connections: u32,
    /// Use this schema (created if missing) instead of the URL's search_path.
    pub schema: Option<String>,
    /// Apply pending migrations on connect (`session.migrate`, default true).
    pub migrate: bool,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(2),
            max_connections: 16,
            schema: None,
            migrate: true,
        }
    }
}

/// Session store in PostgreSQL.
#[derive(Clone)]
pub struct PostgresStore {
    pool: PgPool,
    timeout: Duration,
    codec: PayloadCodec,
    channel: String,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("channel", &self.channel)
            .finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Connect to `url` (and migrate if asked).
    pub async fn connect(
        url: &str,
        options: PostgresOptions,
        codec: PayloadCodec,
    ) -> Result<Self, StoreError> {
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(StoreError::BadUrl(redact_url(url)));
        }
        let parsed = url::Url::parse(url)
            .map_err(|e| StoreError::BadUrl(format!("{}: {e}", redact_url(url))))?;
        if let Some(problem) = postgres_tls_problem(&parsed) {
            return Err(StoreError::BadUrl(problem));
        }
        // Read the CA here for a clear startup error; sqlx would only say
        // "TLS error" on the first connection.
        if let Some(path) = query_value(&parsed, SSLROOTCERT) {
            let pem = std::fs::read(&path)
                .map_err(|e| StoreError::BadUrl(format!("sslrootcert {path}: {e}")))?;
            if !pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") {
                return Err(StoreError::BadUrl(format!(
                    "sslrootcert {path}: no PEM certificate in the file"
                )));
            }
        }
        let mut connect = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::BadUrl(format!("{}: {e}", redact_url(url))))?;
        let statement_timeout = format!("{}", options.timeout.as_millis());
        connect = match &options.schema {
            Some(schema) => connect.options([
                ("search_path", schema.as_str()),
                ("statement_timeout", statement_timeout.as_str()),
            ]),
            None => connect.options([("statement_timeout", statement_timeout.as_str())]),
        };
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(options.timeout)
            .connect_with(connect)
            .await
            .map_err(|e| {
                StoreError::Unavailable(format!("cannot connect to {}: {e}", redact_url(url)))
            })?;
        if let Some(schema) = &options.schema {
            sqlx::query(&format!(
                "CREATE SCHEMA IF NOT EXISTS \"{}\"",
                schema.replace('"', "")
            ))
            .execute(&pool)
            .await?;
        }
        let channel = format!(
            "portcullis_invalidate_{}",
            options
                .schema
                .as_deref()
                .unwrap_or("default")
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
                .take(30)
                .collect::<String>()
        );
        let store = Self {
            pool,
            timeout: options.timeout,
            codec,
            channel,
        };
        if options.migrate {
            store.migrate().await?;
        }
        Ok(store)
    }

    /// Apply pending migrations. Idempotent; concurrent replicas serialize on
    /// sqlx's advisory lock.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR
            .run(&self.pool)
            .await
            .map_err(|e| StoreError::Unavailable(format!("postgres migration failed: {e}")))
    }

    /// The connection pool, for admin queries and tests.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The LISTEN/NOTIFY bus for caches over this store; spawns the listener task.
    pub fn invalidation_bus(&self) -> Arc<PgBus> {
        ReconnectingBus::start(
            PgTransport {
                pool: self.pool.clone(),
            },
            self.channel.clone(),
        )
    }

    async fn run<T>(
        &self,
        op: impl std::future::Future<Output = Result<T, sqlx::Error>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.timeout, op).await {
            Ok(result) => result.map_err(StoreError::from),
            Err(_) => Err(StoreError::Unavailable(format!(
                "postgres: no answer within {:?}",
                self.timeout
            ))),
        }
    }

    async fn write(
        &self,
        record: &SessionRecord,
        expected: Option<u64>,
    ) -> Result<bool, StoreError> {
        let SessionRow { payload, version } = SessionRow::encode(&self.codec, record)?;
        let query = match expected {
            None => sqlx::query(
                "INSERT INTO sessions
                     (id, sub, sid, payload, expires_at, idle_expires_at, last_seen_at, version, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, now())
                 ON CONFLICT (id) DO UPDATE SET
                     sub = excluded.sub, sid = excluded.sid, payload = excluded.payload,
                     expires_at = excluded.expires_at, idle_expires_at = excluded.idle_expires_at,
                     last_seen_at = excluded.last_seen_at, version = excluded.version,
                     created_at = excluded.created_at, updated_at = now()",
            ),
            Some(_) => sqlx::query(
                "UPDATE sessions SET
                     sub = $2, sid = $3, payload = $4, expires_at = $5,
                     idle_expires_at = GREATEST(idle_expires_at, $6),
                     last_seen_at = GREATEST(last_seen_at, $7),
                     version = $8, created_at = $9, updated_at = now()
                 WHERE id = $1 AND version = $10",
            ),
        };
        let expected = expected.map(|v| i64::try_from(v).unwrap_or(i64::MAX));
        let query = query
            .bind(record.id.as_str())
            .bind(&record.sub)
            .bind(record.sid.as_deref())
            .bind(payload)
            .bind(record.expires_at)
            .bind(record.idle_expires_at)
            .bind(record.last_seen_at)
            .bind(version)
            .bind(record.created_at);
        let query = match expected {
            Some(v) => query.bind(v),
            None => query,
        };
        let done = self.run(query.execute(&self.pool)).await?;
        Ok(done.rows_affected() > 0)
    }
}

#[async_trait]
impl SessionRecords for PostgresStore {
    async fn load(&self, id: &SessionHash) -> Result<Option<SessionRecord>, StoreError> {
        let row = self
            .run(
                sqlx::query(
                    "SELECT id, payload, last_seen_at, idle_expires_at FROM sessions WHERE id = $1",
                )
                .bind(id.as_str())
                .fetch_optional(&self.pool),
            )
            .await?;
        match row {
            Some(row) => record_from_row(&self.codec, &row),
            None => Ok(None),
        }
    }

    async fn save(&self, record: &SessionRecord) -> Result<(), StoreError> {
        self.write(record, None).await.map(|_| ())
    }

    async fn save_if_version(
        &self,
        record: &SessionRecord,
        expected_version: u64,
    ) -> Result<bool, StoreError> {
        self.write(record, Some(expected_version)).await
    }

    async fn touch(
        &self,
        id: &SessionHash,
        last_seen_at: UnixTime,
        idle_expires_at: UnixTime,
    ) -> Result<bool, StoreError> {
        let done = self
            .run(
                sqlx::query(
                    "UPDATE sessions SET last_seen_at = $2, idle_expires_at = $3, updated_at = now()
                     WHERE id = $1",
                )
                .bind(id.as_str())
                .bind(last_seen_at)
                .bind(idle_expires_at)
                .execute(&self.pool),
            )
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn delete(&self, id: &SessionHash) -> Result<bool, StoreError> {
        let done = self
            .run(
                sqlx::query("DELETE FROM sessions WHERE id = $1")
                    .bind(id.as_str())
                    .execute(&self.pool),
            )
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn delete_by_sub(&self, sub: &str) -> Result<u64, StoreError> {
        let done = self
            .run(
                sqlx::query("DELETE FROM sessions WHERE sub = $1")
                    .bind(sub)
                    .execute(&self.pool),
            )
            .await?;
        Ok(done.rows_affected())
    }

    async fn delete_by_sid(&self, sid: &str) -> Result<u64, StoreError> {
        let done = self
            .run(
                sqlx::query("DELETE FROM sessions WHERE sid = $1")
                    .bind(sid)
                    .execute(&self.pool),
            )
            .await?;
        Ok(done.rows_affected())
    }

    async fn list_by_sub(&self, sub: &str) -> Result<Vec<SessionRecord>, StoreError> {
        let rows = self
            .run(
                sqlx::query(
                    "SELECT id, payload, last_seen_at, idle_expires_at FROM sessions
                     WHERE sub = $1 ORDER BY created_at, id",
                )
                .bind(sub)
                .fetch_all(&self.pool),
            )
            .await?;
        let mut records = Vec::with_capacity(rows.len());
        for row in &rows {
            if let Some(r) = record_from_row(&self.codec, row)? {
                records.push(r);
            }
        }
        Ok(records)
    }
}

#[async_trait]
impl ReplayGuard for PostgresStore {
    async fn remember_jti(
        &self,
        jti: &str,
        expires_at: UnixTime,
        now: UnixTime,
    ) -> Result<bool, StoreError> {
        // Insert, or take over a row whose lifetime is over; zero rows: a replay.
        let done = self
            .run(
                sqlx::query(
                    "INSERT INTO logout_jtis (jti, expires_at) VALUES ($1, $2)
                     ON CONFLICT (jti) DO UPDATE SET expires_at = excluded.expires_at
                     WHERE logout_jtis.expires_at <= $3",
                )
                .bind(jti)
                .bind(expires_at)
                .bind(now)
                .execute(&self.pool),
            )
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn forget_jti(&self, jti: &str) -> Result<(), StoreError> {
        self.run(
            sqlx::query("DELETE FROM logout_jtis WHERE jti = $1")
                .bind(jti)
                .execute(&self.pool),
        )
        .await
        .map(|_| ())
    }
}

#[async_trait]
impl RefreshLeases for PostgresStore {
    async fn acquire_refresh_lease(
        &self,
        id: &SessionHash,
        ttl: Duration,
    ) -> Result<Option<RefreshLease>, StoreError> {
        let token = random_token(16);
        // Insert, or take over only an expired lease; RETURNING tells us who won.
        let won: Option<String> = self
            .run(
                sqlx::query_scalar(
                    "INSERT INTO refresh_leases (id, token, expires_at)
                     VALUES ($1, $2, now() + make_interval(secs => $3))
                     ON CONFLICT (id) DO UPDATE
                         SET token = excluded.token, expires_at = excluded.expires_at
                         WHERE refresh_leases.expires_at <= now()
                     RETURNING token",
                )
                .bind(id.as_str())
                .bind(&token)
                .bind(ttl.as_secs_f64())
                .fetch_optional(&self.pool),
            )
            .await?;
        Ok(won.filter(|t| *t == token).map(RefreshLease))
    }

    async fn renew_refresh_lease(
        &self,
        id: &SessionHash,
        lease: &RefreshLease,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let done = self
            .run(
                sqlx::query(
                    "UPDATE refresh_leases SET expires_at = now() + make_interval(secs => $3)
                     WHERE id = $1 AND token = $2",
                )
                .bind(id.as_str())
                .bind(&lease.0)
                .bind(ttl.as_secs_f64())
                .execute(&self.pool),
            )
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn release_refresh_lease(
        &self,
        id: &SessionHash,
        lease: &RefreshLease,
    ) -> Result<(), StoreError> {
        self.run(
            sqlx::query("DELETE FROM refresh_leases WHERE id = $1 AND token = $2")
                .bind(id.as_str())
                .bind(&lease.0)
                .execute(&self.pool),
        )
        .await?;
        Ok(())
    }
}

#[async_trait]
impl StoreUpkeep for PostgresStore {
    async fn gc(&self, now: UnixTime) -> Result<u64, StoreError> {
        // Batches keep each transaction (and its row locks) short.
        let mut total = 0;
        loop {
            let done = self
                .run(
                    sqlx::query(
                        "DELETE FROM sessions WHERE id IN (
                             SELECT id FROM sessions
                             WHERE expires_at <= $1 OR idle_expires_at <= $1
                             LIMIT $2 FOR UPDATE SKIP LOCKED)",
                    )
                    .bind(now)
                    .bind(GC_BATCH)
                    .execute(&self.pool),
                )
                .await?;
            total += done.rows_affected();
            if done.rows_affected() < GC_BATCH as u64 {
                break;
            }
        }
        self.run(
            sqlx::query("DELETE FROM logout_jtis WHERE expires_at <= $1")
                .bind(now)
                .execute(&self.pool),
        )
        .await?;
        self.run(
            sqlx::query("DELETE FROM refresh_leases WHERE expires_at < now() - interval '1 hour'")
                .execute(&self.pool),
        )
        .await?;
        Ok(total)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.run(sqlx::query("SELECT 1").execute(&self.pool))
            .await
            .map(|_| ())
    }

    async fn count(&self) -> Result<Option<u64>, StoreError> {
        let n: i64 = self
            .run(sqlx::query_scalar("SELECT count(*) FROM sessions").fetch_one(&self.pool))
            .await?;
        Ok(Some(u64::try_from(n).unwrap_or(0)))
    }
}

/// PostgreSQL LISTEN/NOTIFY as the transport of the [`ReconnectingBus`].
pub struct PgTransport {
    pool: PgPool,
}

/// Cache invalidation over PostgreSQL LISTEN/NOTIFY.
pub type PgBus = ReconnectingBus<PgTransport>;

pub struct PgSubscription(PgListener);

#[async_trait]
impl Subscription for PgSubscription {
    async fn next(&mut self) -> Option<String> {
        // `try_recv`, not `recv`: the connection loss must reach the bus,
        // which reconnects and clears the caches, not be hidden inside sqlx.
        match self.0.try_recv().await {
            Ok(Some(n)) => Some(n.payload().to_owned()),
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(error = %e, "session invalidation listener failed");
                None
            }
        }
    }
}

#[async_trait]
impl Transport for PgTransport {
    type Subscription = PgSubscription;

    async fn subscribe(&self, _: usize, channel: &str) -> Result<PgSubscription, StoreError> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen(channel).await?;
        Ok(PgSubscription(listener))
    }

    async fn publish(&self, channel: &str, text: String) -> Result<(), StoreError> {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(channel)
            .bind(text)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::session::SessionStore;
    use crate::session::contract::sample_record;
    use crate::session::seal::Keyring;

    pub(crate) fn database_url() -> String {
        std::env::var("DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
    }

    /// Drops the test's schema when dropped.
    pub(crate) struct SchemaGuard(pub String);

    impl Drop for SchemaGuard {
        fn drop(&mut self) {
            let schema = self.0.clone();
            // Drop runs inside the test's runtime: use a runtime of our own on a thread.
            let _ = std::thread::spawn(move || {
                let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    return;
                };
                rt.block_on(async {
                    if let Ok(pool) = PgPoolOptions::new()
                        .max_connections(1)
                        .connect(&database_url())
                        .await
                    {
                        let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
                            .execute(&pool)
                            .await;
                        pool.close().await;
                    }
                });
            })
            .join();
        }
    }

    pub(crate) async fn store_with(codec: PayloadCodec) -> (PostgresStore, SchemaGuard) {
        let schema = format!(
            "pctest_{}",
            random_token(9).to_lowercase().replace('-', "_")
        );
        let options = PostgresOptions {
            schema: Some(schema.clone()),
            max_connections: 4,
            ..PostgresOptions::default()
        };
        let store = PostgresStore::connect(&database_url(), options, codec)
            .await
            .expect("postgres at DATABASE_URL");
        (store, SchemaGuard(schema))
    }

    fn ring(byte: u8) -> Arc<Keyring> {
        Arc::new(Keyring::from_bytes(&[[byte; 32]]).expect("ring"))
    }

    mod contract {
        use super::*;

        crate::session_store_contract_tests!(async {
            let (store, guard) = store_with(PayloadCodec::sealed(ring(7))).await;
            (Arc::new(store) as Arc<dyn SessionStore>, guard)
        });
    }

    #[tokio::test]
    async fn raw_row_holds_no_token_or_email_and_wrong_key_is_no_session() {
        let (store, _guard) = store_with(PayloadCodec::sealed(ring(1))).await;
        let now = crate::time::Clock::now(&crate::time::SystemClock);
        let (_, record) = sample_record("alice", Some("sid-1"), now);
        store.save(&record).await.expect("save");
        let raw: String = sqlx::query_scalar("SELECT s::text FROM sessions s WHERE id = $1")
            .bind(record.id.as_str())
            .fetch_one(store.pool())
            .await
            .expect("raw row");
        let payload: Vec<u8> = sqlx::query_scalar("SELECT payload FROM sessions WHERE id = $1")
            .bind(record.id.as_str())
            .fetch_one(store.pool())
            .await
            .expect("payload");
        for secret in [
            record.tokens.access_token.as_str(),
            record.tokens.refresh_token.as_deref().unwrap_or("x"),
            "alice@example.test",
            record.csrf_token.as_str(),
        ] {
            assert!(!raw.contains(secret), "row text contains {secret}");
            assert!(
                !payload
                    .windows(secret.len())
                    .any(|w| w == secret.as_bytes())
            );
        }
        let other = PostgresStore {
            codec: PayloadCodec::sealed(ring(2)),
            ..store.clone()
        };
        assert_eq!(other.load(&record.id).await.expect("load"), None);
        assert_eq!(other.list_by_sub("alice").await.expect("list"), vec![]);
    }

    #[tokio::test]
    async fn migrate_is_idempotent_and_gc_batches() {
        let (store, _guard) = store_with(PayloadCodec::plain()).await;
        store.migrate().await.expect("again");
        let now = 1_000;
        for i in 0..(GC_BATCH + 5) {
            let (_, mut r) = sample_record(&format!("u{i}"), None, now);
            r.idle_expires_at = now + 1;
            store.save(&r).await.expect("save");
        }
        assert_eq!(store.gc(now + 10).await.expect("gc"), (GC_BATCH + 5) as u64);
        assert_eq!(store.count().await.expect("count"), Some(0));
    }

    #[tokio::test]
    async fn unreachable_server_fails_within_the_timeout() {
        let started = std::time::Instant::now();
        let options = PostgresOptions {
            timeout: Duration::from_millis(300),
            ..PostgresOptions::default()
        };
        let result = PostgresStore::connect(
            "postgres://u:pw@127.0.0.1:1/x",
            options,
            PayloadCodec::plain(),
        )
        .await;
        match result {
            Err(StoreError::Unavailable(msg)) => assert!(!msg.contains("pw"), "{msg}"),
            other => panic!("expected Unavailable, got {other:?}"),
        }
        assert!(started.elapsed() < Duration::from_secs(3));
    }
}
