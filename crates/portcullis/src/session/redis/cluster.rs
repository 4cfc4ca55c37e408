//! Redis Cluster session store (`redis+cluster://HOST:PORT[,HOST:PORT...][/?options]`,
//! `rediss+cluster://` for TLS; the hosts are seed nodes).
//!
//! A cluster runs a script or a `MULTI` only over keys of one hash slot, so
//! the layout puts what must change together in one slot and lets the rest
//! change in separate steps:
//!
//! - `s:{<hash>}` (the record hash of `record.rs`) and `lease:{<hash>}` share
//!   the hash tag `{<hash>}`: a save, a compare-and-swap, a touch and a
//!   delete are each one script on that slot, atomic as on a single Redis.
//! - `u:<sub>` and `d:<sid>` (the per-user and per-IdP-session indexes) are
//!   hashes of session hash -> stamp, each key in a slot of its own. They are
//!   written in steps around the record, in an order that keeps them a
//!   superset of the truth: a save adds its entries (with a fresh stamp,
//!   also kept in the record as `st`) *before* it writes the record, so a
//!   record is never missing from its indexes; an entry is removed only when
//!   its stamp is still the one the record was saved with (a save that
//!   re-added it since wins), or when it is stale, i.e. its record is gone
//!   or names another subject and the entry is older than
//!   `index::INDEX_PRUNE_GRACE_MS` (so a save between its two steps is not
//!   pruned). Readers (`list_by_sub`, `delete_by_sub`, `delete_by_sid`)
//!   check every entry against its record and prune the stale ones.
//! - `x` (sessions by expiry, for GC and the session count) is one sorted
//!   set updated after a save; GC re-checks each record before deleting it,
//!   so a late `touch` (which does not update `x`) is never collected early.
//!   Records carry a Redis TTL as well, so a missed `x` update cannot leak.
//! - `jti:<id>` is one key per id, as on a single Redis.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{AsyncCommands, Client, Script};

use super::announced::check_announced_nodes;
use super::bus::{Publisher, RedisBus, RedisTransport, Subscriber};
use super::index::{INDEX_ADD, INDEX_DROP, new_stamp, prunable};
use super::record::{
    self, EXPIRY_GRACE_SECS, RECORD_LUA, decode_record, fetch_record, save_args, touch_args,
    unavailable,
};
use super::url::{cluster_nodes, split_cacert};
use super::{GC_BATCH, RedisOptions};
use crate::session::seal::PayloadCodec;
use crate::session::{
    RefreshLease, RefreshLeases, ReplayGuard, SessionHash, SessionRecord, SessionRecords,
    StoreError, StoreUpkeep,
};
use crate::time::UnixTime;

/// Session store on a Redis Cluster. See the module docs for the key layout.
#[derive(Clone)]
pub struct RedisClusterStore {
    conn: ClusterConnection,
    /// One plain client per seed node, for the invalidation subscriber.
    seeds: Vec<Client>,
    prefix: String,
    timeout: Duration,
    codec: PayloadCodec,
}

impl std::fmt::Debug for RedisClusterStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisClusterStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// What a conditional delete found.
enum Deleted {
    /// Deleted; the record's sub, sid (`""`: none) and index stamp.
    Yes {
        sub: String,
        sid: String,
        st: String,
    },
    /// Missing, or kept because it did not match.
    No,
    /// Kept by GC: it expires at this time, later than asked.
    Live(i64),
}

impl RedisClusterStore {
    /// Connect to the cluster `url` names; any reachable seed will do.
    pub async fn connect(
        url: &str,
        options: RedisOptions,
        codec: PayloadCodec,
    ) -> Result<Self, StoreError> {
        if options.key_prefix.contains(['{', '}']) {
            return Err(StoreError::BadUrl(
                "session.key_prefix must not contain { or } on a Redis Cluster \
                 (braces choose the hash slot)"
                    .into(),
            ));
        }
        let (url, certs) = split_cacert(url)?;
        let nodes = cluster_nodes(&url)?;
        let bad = |e: redis::RedisError| StoreError::BadUrl(format!("redis cluster URL: {e}"));
        let mut builder = ClusterClientBuilder::new(nodes.clone())
            .connection_timeout(options.timeout)
            .response_timeout(options.timeout)
            .retries(3);
        if let Some(certs) = &certs {
            builder = builder.certs(certs.clone());
        }
        let client = builder.build().map_err(bad)?;
        let conn = tokio::time::timeout(options.timeout * 2, client.get_async_connection())
            .await
            .map_err(|_| StoreError::Unavailable("redis cluster: timeout connecting".into()))?
            .map_err(|e| StoreError::Unavailable(format!("redis cluster: {e}")))?;
        let seeds = nodes
            .iter()
            .map(|n| match &certs {
                Some(certs) => Client::build_with_tls(n.as_str(), certs.clone()),
                None => Client::open(n.as_str()),
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(bad)?;
        check_announced_nodes(&seeds, options.timeout).await?;
        Ok(Self {
            conn,
            seeds,
            prefix: options.key_prefix,
            timeout: options.timeout,
            codec,
        })
    }

    /// A cluster connection for tests and admin tools.
    pub fn connection(&self) -> ClusterConnection {
        self.conn.clone()
    }

    /// The key prefix this store uses.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The pub/sub bus for caches over this store; spawns the subscriber task.
    pub fn invalidation_bus(&self) -> Arc<RedisBus> {
        RedisTransport::bus(
            Publisher::Cluster(self.conn.clone()),
            Subscriber::Seeds(self.seeds.clone()),
            format!("{}invalidate", self.prefix),
        )
    }

    /// `s:{<hash>}`: the record, in the session's slot.
    pub fn record_key(&self, id: &str) -> String {
        format!("{}s:{{{id}}}", self.prefix)
    }

    fn lease_key(&self, id: &str) -> String {
        format!("{}lease:{{{id}}}", self.prefix)
    }

    fn key(&self, kind: &str, id: &str) -> String {
        format!("{}{kind}{id}", self.prefix)
    }

    async fn run<T>(
        &self,
        op: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.timeout, op).await {
            Ok(result) => result.map_err(unavailable),
            Err(_) => Err(StoreError::Unavailable(format!(
                "redis cluster: no answer within {:?}",
                self.timeout
            ))),
        }
    }

    async fn index_add(
        &self,
        key: String,
        id: &str,
        stamp: &str,
        at: i64,
    ) -> Result<(), StoreError> {
        let mut script = INDEX_ADD.prepare_invoke();
        script.key(key).arg(id).arg(stamp).arg(at);
        self.run(script.invoke_async::<i64>(&mut self.conn.clone()))
            .await
            .map(|_| ())
    }

    /// Remove `id` from the index `key` if its stamp is still `stamp`.
    async fn index_drop(&self, key: String, id: &str, stamp: &str) -> Result<(), StoreError> {
        let mut script = INDEX_DROP.prepare_invoke();
        script.key(key).arg(id).arg(stamp);
        self.run(script.invoke_async::<i64>(&mut self.conn.clone()))
            .await
            .map(|_| ())
    }

    /// Best-effort cleanup after a record is deleted; a failure leaves stale
    /// entries that readers prune.
    async fn forget(&self, id: &str, sub: &str, sid: &str, st: &str) {
        let mut steps = vec![self.index_drop(self.key("u:", sub), id, st)];
        if !sid.is_empty() {
            steps.push(self.index_drop(self.key("d:", sid), id, st));
        }
        for step in steps {
            if let Err(e) = step.await {
                tracing::debug!(error = %e, "session index cleanup failed; left for readers");
            }
        }
        let mut conn = self.conn.clone();
        if let Err(e) = self
            .run(conn.zrem::<_, _, i64>(self.key("x", ""), id))
            .await
        {
            tracing::debug!(error = %e, "session expiry index cleanup failed");
        }
    }

    /// Delete record `id` (and its lease) if `field` is `value` (any record
    /// when `field` is empty) and, for GC, if it is expired at `gc_now`.
    async fn delete_where(
        &self,
        id: &str,
        field: &str,
        value: &str,
        gc_now: Option<UnixTime>,
    ) -> Result<Deleted, StoreError> {
        let mut script = DELETE.prepare_invoke();
        script
            .key(self.record_key(id))
            .key(self.lease_key(id))
            .arg(field)
            .arg(value)
            .arg(gc_now.map(|t| t.to_string()).unwrap_or_default());
        let r: Vec<String> = self
            .run(script.invoke_async(&mut self.conn.clone()))
            .await?;
        Ok(match r.as_slice() {
            [done, sub, sid, st] if done == "1" => Deleted::Yes {
                sub: sub.clone(),
                sid: sid.clone(),
                st: st.clone(),
            },
            [_, at] if !at.is_empty() => at.parse().map(Deleted::Live).unwrap_or(Deleted::No),
            _ => Deleted::No,
        })
    }

    /// Every (session hash, stamp) entry of the index `key`.
    async fn entries(&self, key: &str) -> Result<Vec<(String, String)>, StoreError> {
        self.run(self.conn.clone().hgetall(key)).await
    }

    /// Drop a stale entry once it is past the grace period.
    async fn prune(&self, key: &str, id: &str, stamp: &str) -> Result<(), StoreError> {
        if prunable(stamp) {
            self.index_drop(key.to_owned(), id, stamp).await?;
        }
        Ok(())
    }

    async fn delete_by_index(
        &self,
        kind: &str,
        field: &str,
        value: &str,
    ) -> Result<u64, StoreError> {
        let key = self.key(kind, value);
        let mut n = 0;
        for (id, stamp) in self.entries(&key).await? {
            match self.delete_where(&id, field, value, None).await? {
                Deleted::Yes { sub, sid, st } => {
                    n += 1;
                    self.forget(&id, &sub, &sid, &st).await;
                }
                Deleted::No | Deleted::Live(_) => self.prune(&key, &id, &stamp).await?,
            }
        }
        Ok(n)
    }

    async fn write(
        &self,
        record: &SessionRecord,
        expected: Option<u64>,
    ) -> Result<bool, StoreError> {
        let payload = self.codec.encode_session(record)?;
        let id = record.id.as_str();
        let stamp = new_stamp();
        // Index entries first (see module docs); they live as long as the
        // record can.
        let at = record.expires_at.max(record.idle_expires_at) + EXPIRY_GRACE_SECS;
        self.index_add(self.key("u:", &record.sub), id, &stamp, at)
            .await?;
        if let Some(sid) = &record.sid {
            self.index_add(self.key("d:", sid), id, &stamp, at).await?;
        }
        let mut script = SAVE.prepare_invoke();
        script.key(self.record_key(id));
        save_args(&mut script, &self.prefix, record, payload, expected);
        script.arg(&stamp);
        let r: Vec<String> = self
            .run(script.invoke_async(&mut self.conn.clone()))
            .await?;
        let [done, old_sub, old_sid, old_st, expiry] = r.as_slice() else {
            return Ok(false);
        };
        if done != "1" {
            return Ok(false);
        }
        // After the record: the expiry index and the entries it moved off.
        // None of these can make an index miss the record.
        let mut conn = self.conn.clone();
        let zadd = conn.zadd::<_, _, _, i64>(
            self.key("x", ""),
            id,
            expiry.parse::<i64>().unwrap_or(record.expires_at),
        );
        if let Err(e) = self.run(zadd).await {
            tracing::debug!(error = %e, "session expiry index update failed");
        }
        if !old_sub.is_empty() && *old_sub != record.sub {
            let _ = self.index_drop(self.key("u:", old_sub), id, old_st).await;
        }
        if !old_sid.is_empty() && Some(old_sid.as_str()) != record.sid.as_deref() {
            let _ = self.index_drop(self.key("d:", old_sid), id, old_st).await;
        }
        Ok(true)
    }
}

/// KEYS[1] the record; ARGV as `record::save_args`, then ARGV[13] the index
/// stamp. Returns `{'1', old sub, old sid, old stamp, expiry}` or `{'0'}`.
static SAVE: std::sync::LazyLock<Script> = std::sync::LazyLock::new(|| {
    Script::new(&format!(
        "{RECORD_LUA}{}",
        r#"
local r = put(KEYS[1])
if not r then return {'0'} end
local st = redis.call('HGET', KEYS[1], 'st')
redis.call('HSET', KEYS[1], 'st', ARGV[13])
return {'1', r[1] or '', r[2] or '', st or '', tostring(r[4])}
"#
    ))
});

static TOUCH: std::sync::LazyLock<Script> = std::sync::LazyLock::new(|| {
    Script::new(&format!(
        "{RECORD_LUA}if touch(KEYS[1]) then return 1 end return 0"
    ))
});

/// KEYS: the record and its lease (one slot). ARGV: field to match (`''`:
/// any), its value, GC time (`''`: not GC). Returns `{'1', sub, sid,
/// stamp}` when deleted, `{'0', expiry}` when GC keeps a live record, else `{'0', ''}`.
static DELETE: std::sync::LazyLock<Script> = std::sync::LazyLock::new(|| {
    Script::new(
        r#"
local f = redis.call('HMGET', KEYS[1], 'sub', 'sid', 'st', 'exp', 'ie')
if not f[4] then return {'0', ''} end
if ARGV[1] == 'sub' and f[1] ~= ARGV[2] then return {'0', ''} end
if ARGV[1] == 'sid' and f[2] ~= ARGV[2] then return {'0', ''} end
if ARGV[3] ~= '' then
  local m = math.min(tonumber(f[4]), tonumber(f[5] or f[4]))
  if m > tonumber(ARGV[3]) then return {'0', tostring(m)} end
end
redis.call('DEL', KEYS[1], KEYS[2])
return {'1', f[1] or '', f[2] or '', f[3] or ''}
"#,
    )
});

#[async_trait]
impl SessionRecords for RedisClusterStore {
    async fn load(&self, id: &SessionHash) -> Result<Option<SessionRecord>, StoreError> {
        let key = self.record_key(id.as_str());
        let fields = self.run(fetch_record(&mut self.conn.clone(), &key)).await?;
        decode_record(&self.codec, id.as_str(), fields)
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
        let mut script = TOUCH.prepare_invoke();
        script.key(self.record_key(id.as_str()));
        touch_args(
            &mut script,
            &self.prefix,
            id.as_str(),
            last_seen_at,
            idle_expires_at,
        );
        let done: i64 = self
            .run(script.invoke_async(&mut self.conn.clone()))
            .await?;
        Ok(done == 1)
    }

    async fn delete(&self, id: &SessionHash) -> Result<bool, StoreError> {
        match self.delete_where(id.as_str(), "", "", None).await? {
            Deleted::Yes { sub, sid, st } => {
                self.forget(id.as_str(), &sub, &sid, &st).await;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn delete_by_sub(&self, sub: &str) -> Result<u64, StoreError> {
        self.delete_by_index("u:", "sub", sub).await
    }

    async fn delete_by_sid(&self, sid: &str) -> Result<u64, StoreError> {
        self.delete_by_index("d:", "sid", sid).await
    }

    async fn list_by_sub(&self, sub: &str) -> Result<Vec<SessionRecord>, StoreError> {
        let key = self.key("u:", sub);
        let mut records = Vec::new();
        for (id, stamp) in self.entries(&key).await? {
            let record_key = self.record_key(&id);
            let fields = self
                .run(fetch_record(&mut self.conn.clone(), &record_key))
                .await?;
            if fields.3.as_deref() != Some(sub) {
                self.prune(&key, &id, &stamp).await?;
                continue;
            }
            if let Some(r) = decode_record(&self.codec, &id, fields)? {
                records.push(r);
            }
        }
        records.sort_by(|a, b| (a.created_at, a.id.as_str()).cmp(&(b.created_at, b.id.as_str())));
        Ok(records)
    }
}

#[async_trait]
impl ReplayGuard for RedisClusterStore {
    async fn remember_jti(
        &self,
        jti: &str,
        expires_at: UnixTime,
        now: UnixTime,
    ) -> Result<bool, StoreError> {
        let key = self.key("jti:", jti);
        self.run(record::remember_jti(
            &mut self.conn.clone(),
            key,
            expires_at,
            now,
        ))
        .await
    }

    async fn forget_jti(&self, jti: &str) -> Result<(), StoreError> {
        let key = self.key("jti:", jti);
        self.run(self.conn.clone().del::<_, ()>(key)).await
    }
}

#[async_trait]
impl RefreshLeases for RedisClusterStore {
    async fn acquire_refresh_lease(
        &self,
        id: &SessionHash,
        ttl: Duration,
    ) -> Result<Option<RefreshLease>, StoreError> {
        let key = self.lease_key(id.as_str());
        self.run(record::acquire_lease(&mut self.conn.clone(), key, ttl))
            .await
    }

    async fn renew_refresh_lease(
        &self,
        id: &SessionHash,
        lease: &RefreshLease,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let key = self.lease_key(id.as_str());
        self.run(record::renew_lease(&mut self.conn.clone(), key, lease, ttl))
            .await
    }

    async fn release_refresh_lease(
        &self,
        id: &SessionHash,
        lease: &RefreshLease,
    ) -> Result<(), StoreError> {
        let key = self.lease_key(id.as_str());
        self.run(record::release_lease(&mut self.conn.clone(), key, lease))
            .await
    }
}

#[async_trait]
impl StoreUpkeep for RedisClusterStore {
    async fn gc(&self, now: UnixTime) -> Result<u64, StoreError> {
        let expiry = self.key("x", "");
        let mut total = 0;
        loop {
            let ids: Vec<String> = self
                .run(
                    redis::cmd("ZRANGEBYSCORE")
                        .arg(&expiry)
                        .arg("-inf")
                        .arg(now)
                        .arg("LIMIT")
                        .arg(0)
                        .arg(GC_BATCH)
                        .query_async(&mut self.conn.clone()),
                )
                .await?;
            for id in &ids {
                let mut conn = self.conn.clone();
                match self.delete_where(id, "", "", Some(now)).await? {
                    Deleted::Yes { sub, sid, st } => {
                        total += 1;
                        self.forget(id, &sub, &sid, &st).await;
                        // Checked here: a GC that cannot clean up must not loop.
                        self.run(conn.zrem::<_, _, i64>(&expiry, id)).await?;
                    }
                    // Touched since: file it under its real expiry.
                    Deleted::Live(at) => {
                        self.run(conn.zadd::<_, _, _, i64>(&expiry, id, at)).await?;
                    }
                    Deleted::No => {
                        self.run(conn.zrem::<_, _, i64>(&expiry, id)).await?;
                    }
                }
            }
            if ids.len() < GC_BATCH {
                return Ok(total);
            }
        }
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.run(redis::cmd("PING").query_async::<String>(&mut self.conn.clone()))
            .await
            .map(|_| ())
    }

    async fn count(&self) -> Result<Option<u64>, StoreError> {
        let n: u64 = self.run(self.conn.clone().zcard(self.key("x", ""))).await?;
        Ok(Some(n))
    }
}

#[cfg(test)]
#[path = "cluster_tests.rs"]
mod tests;
