//! Redis session store (`redis://`, `rediss://`, `redis+sentinel://`) for
//! replicas, plus the pub/sub [`InvalidationBus`] its caches share.
//!
//! Keys, all under a configurable prefix (default `portcullis:`):
//! `s:<hash>` a hash with the sealed record (`p`), its version (`v`), activity
//! (`ls`, `ie`), absolute expiry (`exp`), `sub` and `sid`; `u:<sub>` and
//! `d:<sid>` sets of session hashes (logout by user or IdP session); `x` a
//! sorted set of session hashes by expiry (GC); `lease:<hash>` refresh leases;
//! `jti:<id>` used one-time ids. (Logins in flight live in the browser's
//! sealed login cookie; `l:` and `lx` keys of older versions expire or can be deleted.) Every multi-key change is
//! one Lua script, so it is atomic. Scripts build key names from the prefix,
//! so this store needs a single Redis (or Sentinel), not Redis Cluster.
//! Records also carry a Redis TTL (their expiry plus a grace period) so a
//! store without a GC task does not grow without bound.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Client, Script};
use tokio::sync::broadcast;

use super::cache::{Invalidation, InvalidationBus};
use super::seal::PayloadCodec;
use super::{
    RefreshLease, SessionHash, SessionRecord, SessionStore, StoreError, random_token, redact_url,
};
use crate::time::UnixTime;

/// Records outlive their expiry by this much in Redis, so `load` can still
/// tell "expired" from "never existed" and replicas with skewed clocks agree.
const EXPIRY_GRACE_SECS: i64 = 300;
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

fn unavailable(e: redis::RedisError) -> StoreError {
    StoreError::Unavailable(format!("redis: {e}"))
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
        RedisBus::start(self.link.clone(), format!("{}invalidate", self.prefix))
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
        script
            .arg(&self.prefix)
            .arg(record.id.as_str())
            .arg(payload)
            .arg(record.version.to_string())
            .arg(record.last_seen_at)
            .arg(record.idle_expires_at)
            .arg(record.expires_at)
            .arg(&record.sub)
            .arg(record.sid.as_deref().unwrap_or(""))
            .arg(if record.sid.is_some() { "1" } else { "0" })
            .arg(EXPIRY_GRACE_SECS)
            .arg(expected.map(|v| v.to_string()).unwrap_or_default());
        let done: i64 = self.run(script.invoke_async(&mut conn)).await?;
        Ok(done == 1)
    }

    async fn load_hash(&self, id: &str) -> Result<Option<SessionRecord>, StoreError> {
        let mut conn = self.conn();
        let key = self.key("s:", id);
        let (payload, last_seen, idle): (Option<Vec<u8>>, Option<i64>, Option<i64>) = self
            .run(
                redis::cmd("HMGET")
                    .arg(&key)
                    .arg("p")
                    .arg("ls")
                    .arg("ie")
                    .query_async(&mut conn),
            )
            .await?;
        let Some(payload) = payload else {
            return Ok(None);
        };
        let Some(mut record) = self.codec.decode_session(id, &payload)? else {
            return Ok(None);
        };
        // `touch` updates these fields alone; they are newer than the payload's copies.
        if let (Some(ls), Some(ie)) = (last_seen, idle) {
            record.last_seen_at = ls;
            record.idle_expires_at = ie;
        }
        Ok(Some(record))
    }
}

/// Build the client for `redis://`, `rediss://` or
/// `redis+sentinel://[user:pass@]host:port[,host:port...]/SERVICE[/DB]`.
async fn client_for(
    url: &str,
) -> Result<(Client, Option<redis::sentinel::SentinelClient>), StoreError> {
    let bad = |why: &str| StoreError::BadUrl(format!("{}: {why}", redact_url(url)));
    if let Some(rest) = url.strip_prefix("redis+sentinel://") {
        let (auth, rest) = match rest.rsplit_once('@') {
            Some((auth, rest)) => (Some(auth), rest),
            None => (None, rest),
        };
        let (hosts, path) = rest
            .split_once('/')
            .ok_or_else(|| bad("missing /SERVICE"))?;
        let mut parts = path.split('/');
        let service = parts
            .next()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| bad("missing service name"))?;
        let db: i64 = match parts.next() {
            Some(db) if !db.is_empty() => db.parse().map_err(|_| bad("bad db number"))?,
            _ => 0,
        };
        let sentinels: Vec<String> = hosts
            .split(',')
            .filter(|h| !h.is_empty())
            .map(|h| format!("redis://{h}"))
            .collect();
        if sentinels.is_empty() {
            return Err(bad("no sentinel host"));
        }
        let mut node = redis::sentinel::SentinelNodeConnectionInfo::default();
        let mut redis_info = redis::RedisConnectionInfo {
            db,
            ..Default::default()
        };
        if let Some(auth) = auth {
            let (user, pass) = auth.split_once(':').unwrap_or(("", auth));
            let decode = |s: &str| {
                url::form_urlencoded::parse(s.as_bytes())
                    .map(|(k, _)| k.into_owned())
                    .next()
                    .unwrap_or_default()
            };
            if !user.is_empty() {
                redis_info.username = Some(decode(user));
            }
            redis_info.password = Some(decode(pass));
        }
        node.redis_connection_info = Some(redis_info);
        let mut sentinel = redis::sentinel::SentinelClient::build(
            sentinels,
            service.to_string(),
            Some(node),
            redis::sentinel::SentinelServerType::Master,
        )
        .map_err(|e| bad(&e.to_string()))?;
        let client = sentinel
            .async_get_client()
            .await
            .map_err(|e| StoreError::Unavailable(format!("redis sentinel: {e}")))?;
        return Ok((client, Some(sentinel)));
    }
    if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
        return Err(bad("not a redis URL"));
    }
    Client::open(url)
        .map(|c| (c, None))
        .map_err(|e| bad(&e.to_string()))
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
local function extend(k, at)
  local ttl = redis.call('TTL', k)
  local now = tonumber(redis.call('TIME')[1])
  if ttl < 0 or now + ttl < at then redis.call('EXPIREAT', k, at) end
end
"#;

static SAVE: std::sync::LazyLock<Script> = std::sync::LazyLock::new(|| {
    Script::new(&format!(
        "{DEL_FN}{}",
        r#"
local p, id = ARGV[1], ARGV[2]
local rk = p .. 's:' .. id
if ARGV[12] ~= '' and redis.call('HGET', rk, 'v') ~= ARGV[12] then return 0 end
local old = redis.call('HMGET', rk, 'sub', 'sid', 'ls', 'ie')
local ls, ie, exp = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
-- A compare-and-swap (token refresh) never moves activity back: a touch
-- that landed while the refresh ran survives.
if ARGV[12] ~= '' then
  if old[3] then ls = math.max(ls, tonumber(old[3])) end
  if old[4] then ie = math.max(ie, tonumber(old[4])) end
end
if old[1] and old[1] ~= ARGV[8] then redis.call('SREM', p .. 'u:' .. old[1], id) end
if old[2] and (ARGV[10] == '0' or old[2] ~= ARGV[9]) then redis.call('SREM', p .. 'd:' .. old[2], id) end
redis.call('HSET', rk, 'p', ARGV[3], 'v', ARGV[4], 'ls', ls, 'ie', ie, 'exp', exp, 'sub', ARGV[8])
local at = math.min(ie, exp) + tonumber(ARGV[11])
if ARGV[10] == '1' then
  redis.call('HSET', rk, 'sid', ARGV[9])
  redis.call('SADD', p .. 'd:' .. ARGV[9], id)
  extend(p .. 'd:' .. ARGV[9], at)
else
  redis.call('HDEL', rk, 'sid')
end
redis.call('EXPIREAT', rk, at)
redis.call('SADD', p .. 'u:' .. ARGV[8], id)
extend(p .. 'u:' .. ARGV[8], at)
redis.call('ZADD', p .. 'x', math.min(ie, exp), id)
return 1
"#
    ))
});

static TOUCH: std::sync::LazyLock<Script> = std::sync::LazyLock::new(|| {
    Script::new(
        r#"
local p, id = ARGV[1], ARGV[2]
local rk = p .. 's:' .. id
local exp = redis.call('HGET', rk, 'exp')
if not exp then return 0 end
redis.call('HSET', rk, 'ls', ARGV[3], 'ie', ARGV[4])
local m = math.min(tonumber(exp), tonumber(ARGV[4]))
redis.call('ZADD', p .. 'x', m, id)
redis.call('EXPIREAT', rk, m + tonumber(ARGV[5]))
return 1
"#,
    )
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

/// A live `jti` (expiry after `now`) is a replay; a dead one is taken over.
static REMEMBER_JTI: std::sync::LazyLock<Script> = std::sync::LazyLock::new(|| {
    Script::new(
        r#"
local cur = redis.call('GET', KEYS[1])
if cur and tonumber(cur) > tonumber(ARGV[2]) then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EXAT', ARGV[3])
return 1
"#,
    )
});

static RENEW_LEASE: std::sync::LazyLock<Script> = std::sync::LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"#,
    )
});

static RELEASE_LEASE: std::sync::LazyLock<Script> = std::sync::LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"#,
    )
});

fn millis(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

#[async_trait]
impl SessionStore for RedisStore {
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
        script
            .arg(&self.prefix)
            .arg(id.as_str())
            .arg(last_seen_at)
            .arg(idle_expires_at)
            .arg(EXPIRY_GRACE_SECS);
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
            if let Some(r) = self.load_hash(&id).await? {
                if r.sub == sub {
                    records.push(r);
                }
            }
        }
        records.sort_by(|a, b| (a.created_at, a.id.as_str()).cmp(&(b.created_at, b.id.as_str())));
        Ok(records)
    }

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

    async fn remember_jti(
        &self,
        jti: &str,
        expires_at: UnixTime,
        now: UnixTime,
    ) -> Result<bool, StoreError> {
        let mut conn = self.conn();
        let mut script = REMEMBER_JTI.prepare_invoke();
        script
            .key(self.key("jti:", jti))
            .arg(expires_at)
            .arg(now)
            .arg(expires_at + EXPIRY_GRACE_SECS);
        let fresh: i64 = self.run(script.invoke_async(&mut conn)).await?;
        Ok(fresh == 1)
    }

    async fn forget_jti(&self, jti: &str) -> Result<(), StoreError> {
        let mut conn = self.conn();
        self.run(conn.del::<_, ()>(self.key("jti:", jti))).await
    }

    async fn count(&self) -> Result<Option<u64>, StoreError> {
        let mut conn = self.conn();
        let n: u64 = self.run(conn.zcard(self.key("x", ""))).await?;
        Ok(Some(n))
    }

    async fn acquire_refresh_lease(
        &self,
        id: &SessionHash,
        ttl: Duration,
    ) -> Result<Option<RefreshLease>, StoreError> {
        let token = random_token(16);
        let mut conn = self.conn();
        let set: Option<String> = self
            .run(
                redis::cmd("SET")
                    .arg(self.key("lease:", id.as_str()))
                    .arg(&token)
                    .arg("NX")
                    .arg("PX")
                    .arg(millis(ttl))
                    .query_async(&mut conn),
            )
            .await?;
        Ok(set.map(|_| RefreshLease(token)))
    }

    async fn renew_refresh_lease(
        &self,
        id: &SessionHash,
        lease: &RefreshLease,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let mut conn = self.conn();
        let mut script = RENEW_LEASE.prepare_invoke();
        script
            .key(self.key("lease:", id.as_str()))
            .arg(&lease.0)
            .arg(millis(ttl));
        let done: i64 = self.run(script.invoke_async(&mut conn)).await?;
        Ok(done == 1)
    }

    async fn release_refresh_lease(
        &self,
        id: &SessionHash,
        lease: &RefreshLease,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let mut script = RELEASE_LEASE.prepare_invoke();
        script.key(self.key("lease:", id.as_str())).arg(&lease.0);
        self.run(script.invoke_async::<i64>(&mut conn))
            .await
            .map(|_| ())
    }
}

/// Cache invalidation over Redis pub/sub. A background task keeps one
/// subscriber connection and, after every (re)connect, tells the caches to
/// drop everything, since messages sent while it was away are lost.
pub struct RedisBus {
    link: Arc<RwLock<Link>>,
    channel: String,
    tx: broadcast::Sender<Invalidation>,
    task: tokio::task::JoinHandle<()>,
}

impl RedisBus {
    fn start(link: Arc<RwLock<Link>>, channel: String) -> Arc<Self> {
        let (tx, _) = broadcast::channel(4096);
        let task = tokio::spawn(subscribe_loop(link.clone(), channel.clone(), tx.clone()));
        Arc::new(Self {
            link,
            channel,
            tx,
            task,
        })
    }
}

impl Drop for RedisBus {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn subscribe_loop(
    link: Arc<RwLock<Link>>,
    channel: String,
    tx: broadcast::Sender<Invalidation>,
) {
    let mut backoff = Duration::from_millis(50);
    let mut first = true;
    loop {
        // The current master's client: it changes after a Sentinel failover.
        let client = read(&link).client.clone();
        match client.get_async_pubsub().await {
            Ok(mut pubsub) => match pubsub.subscribe(&channel).await {
                Ok(()) => {
                    backoff = Duration::from_millis(50);
                    if !first {
                        let _ = tx.send(Invalidation::All);
                    }
                    first = false;
                    let mut messages = pubsub.on_message();
                    while let Some(msg) = messages.next().await {
                        let text = String::from_utf8_lossy(msg.get_payload_bytes());
                        let _ = tx.send(Invalidation::decode(&text));
                    }
                    tracing::warn!("session invalidation subscription lost; reconnecting");
                    let _ = tx.send(Invalidation::All);
                }
                Err(e) => tracing::debug!(error = %e, "cannot subscribe to invalidations"),
            },
            Err(e) => tracing::debug!(error = %e, "cannot connect invalidation subscriber"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}

#[async_trait]
impl InvalidationBus for RedisBus {
    async fn publish(&self, message: Invalidation) -> Result<(), StoreError> {
        let mut conn = read(&self.link).conn.clone();
        let op = conn.publish::<_, _, i64>(&self.channel, message.encode());
        match tokio::time::timeout(Duration::from_secs(2), op).await {
            Ok(r) => r.map(|_| ()).map_err(unavailable),
            Err(_) => Err(StoreError::Unavailable("redis: publish timed out".into())),
        }
    }

    fn subscribe(&self) -> broadcast::Receiver<Invalidation> {
        self.tx.subscribe()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::session::contract::sample_record;
    use crate::session::seal::Keyring;

    pub(crate) fn redis_url() -> String {
        std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
    }

    /// Deletes every key under the test's prefix when dropped.
    pub(crate) struct PrefixGuard(pub String);

    impl Drop for PrefixGuard {
        fn drop(&mut self) {
            let Ok(client) = Client::open(redis_url()) else {
                return;
            };
            let Ok(mut conn) = client.get_connection() else {
                return;
            };
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(format!("{}*", self.0))
                .query(&mut conn)
                .unwrap_or_default();
            if !keys.is_empty() {
                let _: redis::RedisResult<i64> = redis::cmd("DEL").arg(keys).query(&mut conn);
            }
        }
    }

    pub(crate) async fn store_with(codec: PayloadCodec) -> (RedisStore, PrefixGuard) {
        let prefix = format!("pctest:{}:", random_token(9));
        let options = RedisOptions {
            key_prefix: prefix.clone(),
            ..RedisOptions::default()
        };
        let store = RedisStore::connect(&redis_url(), options, codec)
            .await
            .expect("redis at REDIS_URL");
        (store, PrefixGuard(prefix))
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

    mod cached_contract {
        use super::*;
        use crate::session::cache::{CacheOptions, CachedStore};

        crate::session_store_contract_tests!(async {
            let (store, guard) = store_with(PayloadCodec::sealed(ring(7))).await;
            let bus = store.invalidation_bus();
            let cached = CachedStore::new(Arc::new(store), Some(bus), CacheOptions::default());
            (Arc::new(cached) as Arc<dyn SessionStore>, guard)
        });
    }

    #[tokio::test]
    async fn raw_value_holds_no_token_or_email_and_wrong_key_is_no_session() {
        let (store, _guard) = store_with(PayloadCodec::sealed(ring(1))).await;
        let now = crate::time::Clock::now(&crate::time::SystemClock);
        let (_, record) = sample_record("alice", Some("sid-1"), now);
        store.save(&record).await.expect("save");
        let mut conn = store.connection();
        let raw: Vec<(Vec<u8>, Vec<u8>)> = conn
            .hgetall(format!("{}s:{}", store.prefix(), record.id.as_str()))
            .await
            .expect("raw");
        let all: Vec<u8> = raw.into_iter().flat_map(|(k, v)| [k, v].concat()).collect();
        for secret in [
            record.tokens.access_token.as_str(),
            record.tokens.refresh_token.as_deref().unwrap_or("x"),
            record.tokens.id_token.as_deref().unwrap_or("x"),
            "alice@example.test",
            record.csrf_token.as_str(),
        ] {
            assert!(
                !all.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "raw Redis value contains {secret}"
            );
        }

        // Same data, other key: no session, not an error.
        let other = RedisStore {
            codec: PayloadCodec::sealed(ring(2)),
            ..store.clone()
        };
        assert_eq!(other.load(&record.id).await.expect("load"), None);
        // Rotation: new key first, old one still opens; the next write re-seals.
        let rotated = RedisStore {
            codec: PayloadCodec::sealed(Arc::new(
                Keyring::from_bytes(&[[2; 32], [1; 32]]).expect("ring"),
            )),
            ..store.clone()
        };
        let loaded = rotated
            .load(&record.id)
            .await
            .expect("load")
            .expect("opens");
        rotated.save(&loaded).await.expect("re-seal");
        assert_eq!(other.load(&record.id).await.expect("load"), Some(loaded));
        assert_eq!(store.load(&record.id).await.expect("old key only"), None);
    }

    #[tokio::test]
    async fn records_carry_a_ttl() {
        let (store, _guard) = store_with(PayloadCodec::plain()).await;
        let now = crate::time::Clock::now(&crate::time::SystemClock);
        let (_, record) = sample_record("alice", None, now);
        store.save(&record).await.expect("save");
        let mut conn = store.connection();
        let ttl: i64 = conn
            .ttl(format!("{}s:{}", store.prefix(), record.id.as_str()))
            .await
            .expect("ttl");
        // Idle expiry is 30 min out, plus the grace period.
        assert!((1700..=1800 + EXPIRY_GRACE_SECS).contains(&ttl), "{ttl}");
    }

    #[tokio::test]
    async fn unreachable_server_fails_within_the_timeout() {
        let started = std::time::Instant::now();
        let options = RedisOptions {
            timeout: Duration::from_millis(300),
            ..RedisOptions::default()
        };
        // Port 1 on loopback: nothing listens.
        let result =
            RedisStore::connect("redis://127.0.0.1:1", options, PayloadCodec::plain()).await;
        assert!(matches!(result, Err(StoreError::Unavailable(_))));
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn sentinel_url_is_parsed_and_redacted() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("rt");
        let result = rt.block_on(client_for("redis+sentinel://u:pw@127.0.0.1:1/"));
        match result {
            Err(StoreError::BadUrl(msg)) => assert!(!msg.contains("pw"), "{msg}"),
            other => panic!("expected BadUrl, got {:?}", other.map(|_| ())),
        }
    }
}
