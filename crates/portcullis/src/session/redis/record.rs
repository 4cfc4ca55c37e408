//! What the single-node and the Cluster Redis stores share: the record hash
//! layout and its codec, the Lua that writes one record, and the one-key
//! commands (used ids, refresh leases) both send the same way.
//!
//! A record is the hash `s:<hash>`: the sealed record (`p`), its version
//! (`v`), activity (`ls`, `ie`), absolute expiry (`exp`), `sub`, `sid`, and
//! on a cluster the stamp of its index entries (`st`). Every Lua here touches
//! only the keys it is given, so it runs unchanged inside one hash slot.

use std::time::Duration;

use redis::aio::ConnectionLike;
use redis::{RedisResult, Script, ScriptInvocation};

use super::super::seal::PayloadCodec;
use super::super::{RefreshLease, SessionRecord, StoreError, random_token};
use crate::time::UnixTime;

/// Records outlive their expiry by this much in Redis, so `load` can still
/// tell "expired" from "never existed" and replicas with skewed clocks agree.
pub(super) const EXPIRY_GRACE_SECS: i64 = 300;

pub(super) fn unavailable(e: redis::RedisError) -> StoreError {
    StoreError::Unavailable(format!("redis: {e}"))
}

pub(super) fn millis(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// Lua functions over one record hash `rk`, with the arguments
/// [`save_args`] and [`touch_args`] lay out.
///
/// `put` writes the record (a compare-and-swap when ARGV[12] is set) and
/// returns `nil` on a version conflict, else `{old sub, old sid, Redis
/// expiry, session expiry}`. `touch` updates activity only and returns the
/// session expiry, or `nil` when there is no record. `extend` pushes a key's
/// expiry out to `at`, never in.
pub(super) const RECORD_LUA: &str = r#"
local function put(rk)
  if ARGV[12] ~= '' and redis.call('HGET', rk, 'v') ~= ARGV[12] then return nil end
  local old = redis.call('HMGET', rk, 'sub', 'sid', 'ls', 'ie')
  local ls, ie, exp = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
  -- A compare-and-swap (token refresh) never moves activity back: a touch
  -- that landed while the refresh ran survives.
  if ARGV[12] ~= '' then
    if old[3] then ls = math.max(ls, tonumber(old[3])) end
    if old[4] then ie = math.max(ie, tonumber(old[4])) end
  end
  redis.call('HSET', rk, 'p', ARGV[3], 'v', ARGV[4], 'ls', ls, 'ie', ie, 'exp', exp, 'sub', ARGV[8])
  if ARGV[10] == '1' then redis.call('HSET', rk, 'sid', ARGV[9]) else redis.call('HDEL', rk, 'sid') end
  local at = math.min(ie, exp) + tonumber(ARGV[11])
  redis.call('EXPIREAT', rk, at)
  return {old[1], old[2], at, math.min(ie, exp)}
end
local function touch(rk)
  local exp = redis.call('HGET', rk, 'exp')
  if not exp then return nil end
  redis.call('HSET', rk, 'ls', ARGV[3], 'ie', ARGV[4])
  local m = math.min(tonumber(exp), tonumber(ARGV[4]))
  redis.call('EXPIREAT', rk, m + tonumber(ARGV[5]))
  return m
end
local function extend(k, at)
  local ttl = redis.call('TTL', k)
  local now = tonumber(redis.call('TIME')[1])
  if ttl < 0 or now + ttl < at then redis.call('EXPIREAT', k, at) end
end
"#;

/// ARGV for `put`: prefix, id, payload, version, activity, expiry, sub, sid
/// (and whether there is one), grace, expected version (`''`: plain save).
pub(super) fn save_args(
    script: &mut ScriptInvocation<'_>,
    prefix: &str,
    record: &SessionRecord,
    payload: Vec<u8>,
    expected: Option<u64>,
) {
    script
        .arg(prefix)
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
}

/// ARGV for `touch`: prefix, id, last seen, idle expiry, grace.
pub(super) fn touch_args(
    script: &mut ScriptInvocation<'_>,
    prefix: &str,
    id: &str,
    last_seen_at: UnixTime,
    idle_expires_at: UnixTime,
) {
    script
        .arg(prefix)
        .arg(id)
        .arg(last_seen_at)
        .arg(idle_expires_at)
        .arg(EXPIRY_GRACE_SECS);
}

/// The stored fields of one record: payload, `ls`, `ie`, `sub`, `sid`.
pub(super) type RecordFields = (
    Option<Vec<u8>>,
    Option<i64>,
    Option<i64>,
    Option<String>,
    Option<String>,
);

/// Read the fields of the record hash `key`.
pub(super) async fn fetch_record<C: ConnectionLike + Send>(
    conn: &mut C,
    key: &str,
) -> RedisResult<RecordFields> {
    redis::cmd("HMGET")
        .arg(key)
        .arg(&["p", "ls", "ie", "sub", "sid"][..])
        .query_async(conn)
        .await
}

/// The record in `fields`; `None` when absent or sealed with an unknown key.
pub(super) fn decode_record(
    codec: &PayloadCodec,
    id: &str,
    fields: RecordFields,
) -> Result<Option<SessionRecord>, StoreError> {
    let (payload, last_seen, idle, _, _) = fields;
    let Some(payload) = payload else {
        return Ok(None);
    };
    let Some(mut record) = codec.decode_session(id, &payload)? else {
        return Ok(None);
    };
    // `touch` updates these fields alone; they are newer than the payload's copies.
    if let (Some(ls), Some(ie)) = (last_seen, idle) {
        record.last_seen_at = ls;
        record.idle_expires_at = ie;
    }
    Ok(Some(record))
}

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

/// Remember `jti` under `key` until `expires_at`; `true` the first time.
pub(super) async fn remember_jti<C: ConnectionLike + Send>(
    conn: &mut C,
    key: String,
    expires_at: UnixTime,
    now: UnixTime,
) -> RedisResult<bool> {
    let mut script = REMEMBER_JTI.prepare_invoke();
    script
        .key(key)
        .arg(expires_at)
        .arg(now)
        .arg(expires_at + EXPIRY_GRACE_SECS);
    Ok(script.invoke_async::<i64>(conn).await? == 1)
}

/// Take the lease `key` for `ttl` if nobody holds it.
pub(super) async fn acquire_lease<C: ConnectionLike + Send>(
    conn: &mut C,
    key: String,
    ttl: Duration,
) -> RedisResult<Option<RefreshLease>> {
    let token = random_token(16);
    let set: Option<String> = redis::cmd("SET")
        .arg(key)
        .arg(&token)
        .arg("NX")
        .arg("PX")
        .arg(millis(ttl))
        .query_async(conn)
        .await?;
    Ok(set.map(|_| RefreshLease(token)))
}

/// Extend the lease `key` if it is still `lease`.
pub(super) async fn renew_lease<C: ConnectionLike + Send>(
    conn: &mut C,
    key: String,
    lease: &RefreshLease,
    ttl: Duration,
) -> RedisResult<bool> {
    let mut script = RENEW_LEASE.prepare_invoke();
    script.key(key).arg(&lease.0).arg(millis(ttl));
    Ok(script.invoke_async::<i64>(conn).await? == 1)
}

/// Delete the lease `key` if it is still `lease`.
pub(super) async fn release_lease<C: ConnectionLike + Send>(
    conn: &mut C,
    key: String,
    lease: &RefreshLease,
) -> RedisResult<()> {
    let mut script = RELEASE_LEASE.prepare_invoke();
    script.key(key).arg(&lease.0);
    script.invoke_async::<i64>(conn).await.map(|_| ())
}
