//! Redis session store (`redis://`, `rediss://`, `redis+sentinel://`) for
//! replicas, plus the pub/sub [`RedisBus`] its caches share; `cluster.rs`
//! is the Redis Cluster store (`redis+cluster://`).
//!
//! Keys, all under a configurable prefix (default `portcullis:`):
//! `s:<hash>` the record hash (layout in `record.rs`); `u:<sub>` and
//! `d:<sid>` sets of session hashes (logout by user or IdP session); `x` a
//! sorted set of session hashes by expiry (GC); `lease:<hash>` refresh leases;
//! `jti:<id>` used one-time ids. (Logins in flight live in the browser's
//! sealed login cookie; `l:` and `lx` keys of older versions expire or can be
//! deleted.) Every multi-key change is one Lua script, so it is atomic.
//! Scripts build key names from the prefix, so this store needs a single
//! Redis (or Sentinel); `cluster.rs` keeps the same record layout in one
//! hash slot per session. Records also carry a Redis TTL (their expiry plus
//! a grace period) so a store without a GC task does not grow without bound.

mod announced;
mod bus;
pub mod cluster;
mod index;
mod record;
mod url;

pub use bus::RedisBus;
pub use cluster::RedisClusterStore;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Client, Script};

use self::bus::{Publisher, RedisTransport, Subscriber};
use self::record::{RECORD_LUA, decode_record, fetch_record, save_args, touch_args, unavailable};
use self::url::client_for;
use super::seal::PayloadCodec;
use super::{
    RefreshLease, RefreshLeases, ReplayGuard, SessionHash, SessionRecord, SessionRecords,
    StoreError, StoreUpkeep, redact_url,
};
use crate::time::UnixTime;

/// How many expired records one GC script deletes before yielding.
const GC_BATCH: usize = 500;

/// Connection settings for [`RedisStore::connect`].
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// Prefix of every key and of the invalidation channel (default `portcullis:`).
    pub key_prefix: String,
    /// Upper bound for one store operation, connection included (default 2 s).
    pub timeout: Duration,
}

impl Default for RedisOptions {
    fn default() -> Self {
        Self {
            key_prefix: "portcullis:".into(),
            timeout: Duration::from_secs(2),
        }
    }
}

/// Session store in Redis.
#[derive(Clone)]
pub struct RedisStore {
    link: Arc<RwLock<Link>>,
    /// Set for `redis+sentinel://`: finds the new master after a failover.
    sentinel: Option<Arc<SentinelResolver>>,
    prefix: String,
    timeout: Duration,
    codec: PayloadCodec,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// The current connection (replaced after a Sentinel failover).
struct Link {
    client: Client,
    conn: ConnectionManager,
}

/// Re-asks the Sentinels for the master when store calls fail.
struct SentinelResolver {
    sentinel: tokio::sync::Mutex<redis::sentinel::SentinelClient>,
    config: ConnectionManagerConfig,
    resolving: AtomicBool,
}

fn read(link: &RwLock<Link>) -> std::sync::RwLockReadGuard<'_, Link> {
    link.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn manager_config(timeout: Duration) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(timeout)
        .set_response_timeout(timeout)
        // Reconnect quickly and keep trying: requests during an outage fail
        // on our own timeout, and the first one after it finds a connection.
        .set_number_of_retries(2)
        .set_factor(50)
        .set_max_delay(500)
}

impl RedisStore {
    /// Connect to the Redis `url` names. The store is usable once this returns;
    /// afterwards the connection is re-established by itself after an outage.
    pub async fn connect(
        url: &str,
        options: RedisOptions,
        codec: PayloadCodec,
    ) -> Result<Self, StoreError> {
        let (client, sentinel) = client_for(url).await?;
        let config = manager_config(options.timeout);
        let conn = tokio::time::timeout(
            options.timeout * 2,
            ConnectionManager::new_with_config(client.clone(), config),
        )
        .await
        .map_err(|_| {
            StoreError::Unavailable(format!("redis: timeout connecting to {}", redact_url(url)))
        })?
        .map_err(|e| StoreError::Unavailable(format!("redis {}: {e}", redact_url(url))))?;
        let sentinel = sentinel.map(|sentinel| {
            Arc::new(SentinelResolver {
                sentinel: tokio::sync::Mutex::new(sentinel),
                config: manager_config(options.timeout),
                resolving: AtomicBool::new(false),
            })
        });
        Ok(Self {
            link: Arc::new(RwLock::new(Link { client, conn })),
            sentinel,
            prefix: options.key_prefix,
            timeout: options.timeout,
            codec,
        })
    }

    /// The key prefix this store uses.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// A connection for tests and admin tools (raw reads, cleanup).
    pub fn connection(&self) -> ConnectionManager {
        self.conn()
    }

    fn conn(&self) -> ConnectionManager {
        read(&self.link).conn.clone()
    }

    /// After a failed call on a Sentinel-managed store, ask the Sentinels
    /// for the master again (in the background, one lookup at a time) and
    /// switch to it if it moved.
    fn reresolve(&self) {
        let Some(resolver) = self.sentinel.clone() else {
            return;
        };
        if resolver.resolving.swap(true, Ordering::AcqRel) {
            return;
        }
        let link = self.link.clone();
        tokio::spawn(async move {
            let client = resolver.sentinel.lock().await.async_get_client().await;
            match client {
                Ok(client) => {
                    let moved = client.get_connection_info().addr
                        != read(&link).client.get_connection_info().addr;
                    if moved {
                        match ConnectionManager::new_with_config(
                            client.clone(),
                            resolver.config.clone(),
                        )
                        .await
                        {
                            Ok(conn) => {
                                tracing::warn!(
                                    "redis master moved (Sentinel failover); reconnected"
                                );
                                let mut guard = link.write().unwrap_or_else(|p| p.into_inner());
                                *guard = Link { client, conn };
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "cannot connect to the new redis master")
                            }
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "redis sentinel lookup failed"),
            }
            resolver.resolving.store(false, Ordering::Release);
        });
    }

    /// The pub/sub bus for caches over this store; spawns the subscriber task.
    pub fn invalidation_bus(&self) -> Arc<RedisBus> {
        RedisTransport::bus(
            Publisher::Master(self.link.clone()),
            Subscriber::Master(self.link.clone()),
            format!("{}invalidate", self.prefix),
        )
    }

    fn key(&self, kind: &str, id: &str) -> String {
        format!("{}{kind}{id}", self.prefix)
    }

    /// Run one operation under the store timeout.
    async fn run<T>(
        &self,
        op: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StoreError> {
        let result = match tokio::time::timeout(self.timeout, op).await {
            Ok(result) => result.map_err(unavailable),
            Err(_) => Err(StoreError::Unavailable(format!(
                "redis: no answer within {:?}",
                self.timeout
            ))),
        };
        if result.is_err() {
            self.reresolve();
        }
        result
    }

    async fn write(
        &self,
        record: &SessionRecord,
        expected: Option<u64>,
    ) -> Result<bool, StoreError> {
        let payload = self.codec.encode_session(record)?;
        let mut conn = self.conn();
        let mut script = SAVE.prepare_invoke();
        save_args(&mut script, &self.prefix, record, payload, expected);
        let done: i64 = self.run(script.invoke_async(&mut conn)).await?;
        Ok(done == 1)
    }

    async fn load_hash(&self, id: &str) -> Result<Option<SessionRecord>, StoreError> {
        let mut conn = self.conn();
        let key = self.key("s:", id);
        let fields = self.run(fetch_record(&mut conn, &key)).await?;
        decode_record(&self.codec, id, fields)
    }
}

/// Shared Lua: delete one session and its index entries; 1 if it existed.
const DEL_FN: &str = r#"
local function del(p, id)
  local rk = p .. 's:' .. id
  local f = redis.call('HMGET', rk, 'sub', 'sid')
  redis.call('ZREM', p .. 'x', id)
  if f[1] then redis.call('SREM', p .. 'u:' .. f[1], id) end
  if f[2] then redis.call('SREM', p .. 'd:' .. f[2], id) end
  return redis.call('DEL', rk)
end
"#;

static SAVE: std::sync::LazyLock<Script> = std::sync::LazyLock::new(|| {
    Script::new(&format!(
        "{RECORD_LUA}{DEL_FN}{}",
        r#"
local p, id = ARGV[1], ARGV[2]
local r = put(p .. 's:' .. id)
if not r then return 0 end
if r[1] and r[1] ~= ARGV[8] then redis.call('SREM', p .. 'u:' .. r[1], id) end
if r[2] and (ARGV[10] == '0' or r[2] ~= ARGV[9]) then redis.call('SREM', p .. 'd:' .. r[2], id) end
if ARGV[10] == '1' then
  redis.call('SADD', p .. 'd:' .. ARGV[9], id)
  extend(p .. 'd:' .. ARGV[9], r[3])
end
redis.call('SADD', p .. 'u:' .. ARGV[8], id)
extend(p .. 'u:' .. ARGV[8], r[3])
redis.call('ZADD', p .. 'x', r[4], id)
return 1
"#
    ))
});

static TOUCH: std::sync::LazyLock<Script> = std::sync::LazyLock::new(|| {
    Script::new(&format!(
        "{RECORD_LUA}{}",
        r#"
local m = touch(ARGV[1] .. 's:' .. ARGV[2])
if not m then return 0 end
redis.call('ZADD', ARGV[1] .. 'x', m, ARGV[2])
return 1
"#
    ))
});

static DELETE: std::sync::LazyLock<Script> =
    std::sync::LazyLock::new(|| Script::new(&format!("{DEL_FN}return del(ARGV[1], ARGV[2])")));

/// ARGV[3] is the index kind: `u:` (by subject) or `d:` (by IdP session).
static DELETE_BY_INDEX: std::sync::LazyLock<Script> = std::sync::LazyLock::new(|| {
    Script::new(&format!(
        "{DEL_FN}{}",
        r#"
local p, field = ARGV[1], ARGV[4]
local ik = p .. ARGV[3] .. ARGV[2]
local n = 0
for _, id in ipairs(redis.call('SMEMBERS', ik)) do
  if redis.call('HGET', p .. 's:' .. id, field) == ARGV[2] then n = n + del(p, id) end
end
redis.call('DEL', ik)
return n
"#
    ))
});

static GC: std::sync::LazyLock<Script> = std::sync::LazyLock::new(|| {
    Script::new(&format!(
        "{DEL_FN}{}",
        r#"
local p, now, batch = ARGV[1], ARGV[2], tonumber(ARGV[3])
local ids = redis.call('ZRANGEBYSCORE', p .. 'x', '-inf', now, 'LIMIT', 0, batch)
local n = 0
for _, id in ipairs(ids) do n = n + del(p, id) end
return {n, #ids}
"#
    ))
});

#[async_trait]
impl SessionRecords for RedisStore {
    async fn load(&self, id: &SessionHash) -> Result<Option<SessionRecord>, StoreError> {
        self.load_hash(id.as_str()).await
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
        let mut conn = self.conn();
        let mut script = TOUCH.prepare_invoke();
        touch_args(
            &mut script,
            &self.prefix,
            id.as_str(),
            last_seen_at,
            idle_expires_at,
        );
        let done: i64 = self.run(script.invoke_async(&mut conn)).await?;
        Ok(done == 1)
    }

    async fn delete(&self, id: &SessionHash) -> Result<bool, StoreError> {
        let mut conn = self.conn();
        let mut script = DELETE.prepare_invoke();
        script.arg(&self.prefix).arg(id.as_str());
        let n: i64 = self.run(script.invoke_async(&mut conn)).await?;
        Ok(n > 0)
    }

    async fn delete_by_sub(&self, sub: &str) -> Result<u64, StoreError> {
        let mut conn = self.conn();
        let mut script = DELETE_BY_INDEX.prepare_invoke();
        script.arg(&self.prefix).arg(sub).arg("u:").arg("sub");
        let n: u64 = self.run(script.invoke_async(&mut conn)).await?;
        Ok(n)
    }

    async fn delete_by_sid(&self, sid: &str) -> Result<u64, StoreError> {
        let mut conn = self.conn();
        let mut script = DELETE_BY_INDEX.prepare_invoke();
        script.arg(&self.prefix).arg(sid).arg("d:").arg("sid");
        let n: u64 = self.run(script.invoke_async(&mut conn)).await?;
        Ok(n)
    }

    async fn list_by_sub(&self, sub: &str) -> Result<Vec<SessionRecord>, StoreError> {
        let mut conn = self.conn();
        let ids: Vec<String> = self.run(conn.smembers(self.key("u:", sub))).await?;
        let mut records = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(r) = self.load_hash(&id).await?
                && r.sub == sub
            {
                records.push(r);
            }
        }
        records.sort_by(|a, b| (a.created_at, a.id.as_str()).cmp(&(b.created_at, b.id.as_str())));
        Ok(records)
    }
}

#[async_trait]
impl ReplayGuard for RedisStore {
    async fn remember_jti(
        &self,
        jti: &str,
        expires_at: UnixTime,
        now: UnixTime,
    ) -> Result<bool, StoreError> {
        let mut conn = self.conn();
        let key = self.key("jti:", jti);
        self.run(record::remember_jti(&mut conn, key, expires_at, now))
            .await
    }

    async fn forget_jti(&self, jti: &str) -> Result<(), StoreError> {
        let mut conn = self.conn();
        self.run(conn.del::<_, ()>(self.key("jti:", jti))).await
    }
}

#[async_trait]
impl RefreshLeases for RedisStore {
    async fn acquire_refresh_lease(
        &self,
        id: &SessionHash,
        ttl: Duration,
    ) -> Result<Option<RefreshLease>, StoreError> {
        let mut conn = self.conn();
        let key = self.key("lease:", id.as_str());
        self.run(record::acquire_lease(&mut conn, key, ttl)).await
    }

    async fn renew_refresh_lease(
        &self,
        id: &SessionHash,
        lease: &RefreshLease,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let mut conn = self.conn();
        let key = self.key("lease:", id.as_str());
        self.run(record::renew_lease(&mut conn, key, lease, ttl))
            .await
    }

    async fn release_refresh_lease(
        &self,
        id: &SessionHash,
        lease: &RefreshLease,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let key = self.key("lease:", id.as_str());
        self.run(record::release_lease(&mut conn, key, lease)).await
    }
}

#[async_trait]
impl StoreUpkeep for RedisStore {
    async fn gc(&self, now: UnixTime) -> Result<u64, StoreError> {
        let mut total = 0u64;
        loop {
            let mut conn = self.conn();
            let mut script = GC.prepare_invoke();
            script.arg(&self.prefix).arg(now).arg(GC_BATCH);
            let (deleted, scanned): (u64, usize) = self.run(script.invoke_async(&mut conn)).await?;
            total += deleted;
            if scanned < GC_BATCH {
                return Ok(total);
            }
        }
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.conn();
        self.run(redis::cmd("PING").query_async::<String>(&mut conn))
            .await
            .map(|_| ())
    }

    async fn count(&self) -> Result<Option<u64>, StoreError> {
        let mut conn = self.conn();
        let n: u64 = self.run(conn.zcard(self.key("x", ""))).await?;
        Ok(Some(n))
    }
}

#[cfg(test)]
pub(crate) mod tests;
