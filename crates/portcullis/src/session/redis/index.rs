//! The per-user and per-IdP-session indexes of the cluster store: hashes of
//! session hash -> stamp, each in a slot of its own, written in steps
//! around the record (the rules are in `cluster.rs`'s module docs).

use redis::Script;

use super::record::RECORD_LUA;
use crate::session::random_token;

/// An index entry whose record is gone or moved is pruned only once it is
/// this old: younger ones may belong to a save between its two steps.
pub(super) const INDEX_PRUNE_GRACE_MS: u128 = 60_000;

/// A fresh index stamp: the time it was written (for pruning) and a nonce.
pub(super) fn new_stamp() -> String {
    format!("{}.{}", now_ms(), random_token(6))
}

fn now_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default()
}

/// Whether an entry with `stamp` is old enough to prune when stale.
pub(super) fn prunable(stamp: &str) -> bool {
    let written: u128 = stamp
        .split('.')
        .next()
        .and_then(|ms| ms.parse().ok())
        .unwrap_or(0);
    now_ms().saturating_sub(written) > INDEX_PRUNE_GRACE_MS
}

/// KEYS[1] an index; sets entry ARGV[1] to stamp ARGV[2], key lives until ARGV[3].
pub(super) static INDEX_ADD: std::sync::LazyLock<Script> = std::sync::LazyLock::new(|| {
    Script::new(&format!(
        "{RECORD_LUA}{}",
        r#"
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
extend(KEYS[1], tonumber(ARGV[3]))
return 1
"#
    ))
});

/// KEYS[1] an index; removes entry ARGV[1] only if its stamp is ARGV[2].
pub(super) static INDEX_DROP: std::sync::LazyLock<Script> = std::sync::LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then return redis.call('HDEL', KEYS[1], ARGV[1]) end
return 0
"#,
    )
});
