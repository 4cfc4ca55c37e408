//! This process's side of refresh coordination: one refresh at a time per
//! session, the 401-triggered refresh rate limit, and refreshed records the
//! store could not take yet. Held in [`crate::state::Shared`]; used by
//! `refresh`.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex, Weak},
};

use crate::{
    session::{SessionHash, SessionRecord},
    time::UnixTime,
};

/// Most sessions remembered for the 401-refresh rate limit. When that many
/// refreshed within the interval, further 401s do not refresh (the IdP is
/// protected first); the map never grows past it.
const AFTER_401_CAPACITY: usize = 10_000;

/// Per-session locks; entries die with their last holder. Also when each
/// session last refreshed because of an upstream 401.
#[derive(Default)]
pub(crate) struct RefreshLocks {
    locks: Mutex<HashMap<SessionHash, Weak<tokio::sync::Mutex<()>>>>,
    after_401: Mutex<After401>,
    /// Refreshed records whose save failed (store down). The IdP has
    /// rotated the refresh token, so the one in the store is spent: the new
    /// one is kept here and saved before this session's next refresh, never
    /// lost, never replaced by sending the spent one.
    unsaved: Mutex<HashMap<SessionHash, (u64, SessionRecord)>>,
}

/// Most refreshed-but-unsaved records kept (a store outage at scale).
const UNSAVED_CAPACITY: usize = 10_000;

/// When each session last refreshed because of a 401, and the same entries
/// in the order they were made, so the oldest go first in O(1) each (a scan
/// of the whole map per request would let 10 000 sessions provoking 401s
/// cost 10 000 steps per request).
#[derive(Default)]
struct After401 {
    at: HashMap<SessionHash, UnixTime>,
    order: VecDeque<(UnixTime, SessionHash)>,
}

impl RefreshLocks {
    pub(crate) fn lock_for(&self, id: &SessionHash) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(l) = map.get(id).and_then(Weak::upgrade) {
            return l;
        }
        if map.len() > 1024 {
            map.retain(|_, w| w.strong_count() > 0);
        }
        let l = Arc::new(tokio::sync::Mutex::new(()));
        map.insert(id.clone(), Arc::downgrade(&l));
        l
    }

    pub(crate) fn keep_unsaved(&self, expected: u64, record: SessionRecord) {
        let mut map = self.unsaved.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() < UNSAVED_CAPACITY || map.contains_key(&record.id) {
            map.insert(record.id.clone(), (expected, record));
        } else {
            tracing::error!(
                session = record.id.short(),
                "rotated refresh token not saved and not kept"
            );
        }
    }

    pub(crate) fn take_unsaved(&self, id: &SessionHash) -> Option<(u64, SessionRecord)> {
        let mut map = self.unsaved.lock().unwrap_or_else(|p| p.into_inner());
        // Keeps the common path to one uncontended lock and no hashing.
        if map.is_empty() { None } else { map.remove(id) }
    }

    /// Every refreshed record still unsaved, taken out (at shutdown).
    pub(crate) fn take_all_unsaved(&self) -> Vec<(u64, SessionRecord)> {
        let mut map = self.unsaved.lock().unwrap_or_else(|p| p.into_inner());
        map.drain().map(|(_, kept)| kept).collect()
    }

    /// Whether session `id` may refresh because of an upstream 401 at `now`
    /// (none in the last `interval` seconds); if so, counts this one.
    pub(crate) fn take_401_refresh(&self, id: &SessionHash, now: UnixTime, interval: i64) -> bool {
        let recent = |at: UnixTime| at <= now && now - at < interval;
        let mut map = self.after_401.lock().unwrap_or_else(|p| p.into_inner());
        if map.at.get(id).is_some_and(|at| recent(*at)) {
            return false;
        }
        // Drop entries past the interval, oldest first. An entry superseded
        // by a later one of its session only leaves its queue slot. The
        // length bound only matters if the clock went backwards.
        while let Some((at, old)) = map.order.front().cloned() {
            let current = map.at.get(&old) == Some(&at);
            if current && recent(at) && map.order.len() <= 4 * AFTER_401_CAPACITY {
                break;
            }
            map.order.pop_front();
            if current {
                map.at.remove(&old);
            }
        }
        if map.at.len() >= AFTER_401_CAPACITY && !map.at.contains_key(id) {
            return false;
        }
        map.at.insert(id.clone(), now);
        map.order.push_back((now, id.clone()));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(n: usize) -> SessionHash {
        SessionHash::from_hex(&format!("{n:064x}")).expect("hex")
    }

    /// One 401-triggered refresh per session per interval, and the map
    /// stays bounded however many sessions provoke 401s.
    #[test]
    fn upstream_401_refreshes_are_limited_and_bounded() {
        let locks = RefreshLocks::default();
        let a = hash(1);
        assert!(locks.take_401_refresh(&a, 1000, 30));
        assert!(!locks.take_401_refresh(&a, 1000, 30));
        assert!(!locks.take_401_refresh(&a, 1029, 30));
        assert!(locks.take_401_refresh(&a, 1030, 30));
        for n in 0..AFTER_401_CAPACITY + 100 {
            locks.take_401_refresh(&hash(n + 10), 2000, 30);
        }
        let len = locks.after_401.lock().expect("map").at.len();
        assert!(len <= AFTER_401_CAPACITY, "{len}");
        // Once the old entries are past the interval, room is made again.
        assert!(locks.take_401_refresh(&hash(5), 2030, 30));
        assert!(locks.after_401.lock().expect("map").at.len() <= AFTER_401_CAPACITY);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 512, ..Default::default() })]

        /// For any sequence of 401s over a few sessions: a session's
        /// 401-refreshes are at least `interval` apart, and one is granted
        /// whenever the last was at least `interval` ago.
        #[test]
        fn upstream_401_refreshes_are_spaced_by_the_interval(
            events in proptest::collection::vec((0usize..4, 0i64..20), 1..200),
            interval in 1i64..60,
        ) {
            let locks = RefreshLocks::default();
            let mut now = 1_000;
            let mut last: [Option<i64>; 4] = [None; 4];
            for (session, step) in events {
                now += step;
                let allowed = locks.take_401_refresh(&hash(session), now, interval);
                let expected = last[session].is_none_or(|at| now - at >= interval);
                proptest::prop_assert_eq!(allowed, expected);
                if allowed {
                    last[session] = Some(now);
                }
            }
        }
    }
}
