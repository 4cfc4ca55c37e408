//! Remembering the `jti` of accepted back-channel logout tokens in this
//! process, so a replayed token is refused (Back-Channel Logout 1.0, 2.6).
//! Used by [`super::MemoryStore`]; remote stores keep theirs in the store
//! so all replicas share one set.

use std::{
    collections::HashMap,
    sync::{Mutex, PoisonError},
};

use crate::time::UnixTime;

/// Seen `jti`s with the time until which each must be remembered.
#[derive(Debug, Default)]
pub(crate) struct JtiCache {
    seen: Mutex<HashMap<String, UnixTime>>,
}

impl JtiCache {
    /// Record `jti` until `expires_at`. Returns `true` the first time, `false`
    /// while an earlier record of it is still live at `now`.
    pub(crate) fn remember(&self, jti: &str, expires_at: UnixTime, now: UnixTime) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        // Logout tokens are rare: pruning on every call keeps the map small.
        seen.retain(|_, until| *until > now);
        if seen.contains_key(jti) {
            return false;
        }
        seen.insert(jti.to_string(), expires_at);
        true
    }

    pub(crate) fn forget(&self, jti: &str) {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(jti);
    }

    /// Forget entries that are no longer live at `now`.
    pub(crate) fn gc(&self, now: UnixTime) {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|_, until| *until > now);
    }
}

#[cfg(test)]
mod tests {
    use super::JtiCache;

    #[test]
    fn second_use_is_refused_until_expiry() {
        let cache = JtiCache::default();
        assert!(cache.remember("a", 100, 10));
        assert!(!cache.remember("a", 100, 50));
        assert!(cache.remember("b", 100, 50));
        // Past its lifetime the token is refused for age, so the jti may go.
        assert!(cache.remember("a", 300, 100));
    }
}
