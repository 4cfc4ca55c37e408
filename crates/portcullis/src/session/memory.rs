//! In-process session store: hash maps behind locks, for a single node and tests.
//!
//! Nothing survives a restart, and replicas do not share it: use SQLite for a
//! single durable node, Redis or PostgreSQL for several.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use async_trait::async_trait;
use hashbrown::HashTable;

use super::{
    RefreshLease, RefreshLeases, ReplayGuard, SessionHash, SessionRecord, SessionRecords,
    StoreError, StoreUpkeep, random_token,
};
use crate::time::UnixTime;

/// Sessions keyed by hash, with `sub` and `sid` indexes so logout does not
/// scan every session. Nothing is held twice: `records` is keyed by the id
/// inside each record, and the indexes hold hashes only, checked against the
/// records themselves on lookup (hashes may collide). Owned keys (a copy of
/// the id per map, a `String` and a `HashSet` per subject and IdP session)
/// cost some 700 bytes per session.
#[derive(Default)]
struct Sessions {
    // Shared with the requests that loaded them (see `load_shared`).
    records: HashTable<Arc<SessionRecord>>,
    by_sub: HashTable<IndexEntry>,
    by_sid: HashTable<IndexEntry>,
}

/// The sessions under one index key: the hash of the key (`sub` or `sid`;
/// keys whose hashes collide share the entry) and the hashes of the
/// sessions' ids.
struct IndexEntry {
    key: u64,
    records: RecordHashes,
}

/// Most keys have one session. A subject signed in from many browsers gets a
/// set, so adding and removing one of its sessions stays O(1). The set holds
/// keyed hashes already, so each value is its own hash. Equal values are
/// allowed (colliding ids): each session adds one and its removal takes one.
enum RecordHashes {
    One(u64),
    Many(Box<HashTable<u64>>),
}

#[derive(Clone, Copy)]
enum Index {
    Sub,
    Sid,
}

impl Sessions {
    fn get(&self, hash: u64, id: &SessionHash) -> Option<&Arc<SessionRecord>> {
        self.records.find(hash, |r| r.id == *id)
    }

    fn insert(&mut self, hasher: &impl BuildHasher, record: SessionRecord) {
        let hash = hasher.hash_one(&record.id);
        // An overwrite may change sub or sid; drop the old index entries first.
        self.remove(hasher, hash, &record.id);
        index_add(&mut self.by_sub, hasher.hash_one(record.sub.as_str()), hash);
        if let Some(sid) = &record.sid {
            index_add(&mut self.by_sid, hasher.hash_one(sid.as_str()), hash);
        }
        self.records
            .insert_unique(hash, Arc::new(record), |r| hasher.hash_one(&r.id));
    }

    fn remove(
        &mut self,
        hasher: &impl BuildHasher,
        hash: u64,
        id: &SessionHash,
    ) -> Option<Arc<SessionRecord>> {
        let (record, _) = self
            .records
            .find_entry(hash, |r| r.id == *id)
            .ok()?
            .remove();
        index_remove(&mut self.by_sub, hasher.hash_one(record.sub.as_str()), hash);
        if let Some(sid) = &record.sid {
            index_remove(&mut self.by_sid, hasher.hash_one(sid.as_str()), hash);
        }
        Some(record)
    }

    /// The ids of the sessions whose `sub` (or `sid`) is `key`, each once.
    fn ids_under(&self, hasher: &impl BuildHasher, index: Index, key: &str) -> Vec<SessionHash> {
        let key_hash = hasher.hash_one(key);
        let (entries, matches): (_, fn(&SessionRecord, &str) -> bool) = match index {
            Index::Sub => (&self.by_sub, |r, key| r.sub == key),
            Index::Sid => (&self.by_sid, |r, key| r.sid.as_deref() == Some(key)),
        };
        let mut hashes: Vec<u64> = match entries.find(key_hash, |e| e.key == key_hash) {
            None => return Vec::new(),
            Some(IndexEntry {
                records: RecordHashes::One(h),
                ..
            }) => vec![*h],
            Some(IndexEntry {
                records: RecordHashes::Many(set),
                ..
            }) => set.iter().copied().collect(),
        };
        hashes.sort_unstable();
        hashes.dedup();
        // `iter_hash` may also yield records of other hashes: the key decides,
        // and a record reached through two hashes is listed once.
        let mut ids: Vec<SessionHash> = hashes
            .into_iter()
            .flat_map(|h| self.records.iter_hash(h))
            .filter(|r| matches(r, key))
            .map(|r| r.id.clone())
            .collect();
        ids.sort_unstable_by(|a, b| a.as_str().cmp(b.as_str()));
        ids.dedup();
        ids
    }

    /// Remove every session in `ids`. Returns how many existed.
    fn remove_all(&mut self, hasher: &impl BuildHasher, ids: &[SessionHash]) -> u64 {
        ids.iter()
            .filter(|id| self.remove(hasher, hasher.hash_one(*id), id).is_some())
            .count() as u64
    }
}

fn index_add(index: &mut HashTable<IndexEntry>, key: u64, record: u64) {
    let Some(entry) = index.find_mut(key, |e| e.key == key) else {
        let records = RecordHashes::One(record);
        index.insert_unique(key, IndexEntry { key, records }, |e| e.key);
        return;
    };
    match &mut entry.records {
        RecordHashes::One(first) => {
            let mut set = HashTable::with_capacity(2);
            for h in [*first, record] {
                set.insert_unique(h, h, |v| *v);
            }
            entry.records = RecordHashes::Many(Box::new(set));
        }
        RecordHashes::Many(set) => {
            set.insert_unique(record, record, |v| *v);
        }
    }
}

fn index_remove(index: &mut HashTable<IndexEntry>, key: u64, record: u64) {
    let Ok(mut entry) = index.find_entry(key, |e| e.key == key) else {
        return;
    };
    let records = &mut entry.get_mut().records;
    match records {
        RecordHashes::One(h) if *h == record => {
            // Empty entries would otherwise accumulate one per key ever seen.
            entry.remove();
        }
        RecordHashes::One(_) => {}
        RecordHashes::Many(set) => {
            if let Ok(found) = set.find_entry(record, |v| *v == record) {
                found.remove();
            }
            // Back to one value frees the set a burst of logins grew.
            if let (1, Some(h)) = (set.len(), set.iter().next().copied()) {
                *records = RecordHashes::One(h);
            }
        }
    }
}

/// Session store held in this process's memory.
#[derive(Default)]
pub struct MemoryStore<S = RandomState> {
    // Sessions are read on every request, so readers share the lock.
    sessions: RwLock<Sessions>,
    // Keyed, so no one chooses `sub`s or ids that collide; outside the lock
    // so a request hashes its id before taking it.
    hasher: S,
    // Refresh leases: holder token and deadline per session. Monotonic time:
    // a lease only has to be exclusive within this process.
    leases: Mutex<HashMap<SessionHash, (String, std::time::Instant)>>,
    // `jti`s of accepted back-channel logout tokens (replay protection).
    jtis: super::jti::JtiCache,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }
}

impl<S> MemoryStore<S> {
    // Poisoning means a thread panicked while holding the lock. Nothing in
    // these short critical sections is expected to panic, and the maps stay
    // usable if one did: recover rather than fail every later request.
    fn read(&self) -> RwLockReadGuard<'_, Sessions> {
        self.sessions.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Sessions> {
        self.sessions
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn leases(&self) -> MutexGuard<'_, HashMap<SessionHash, (String, std::time::Instant)>> {
        self.leases.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<S> std::fmt::Debug for MemoryStore<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Counts only: records hold tokens.
        f.debug_struct("MemoryStore")
            .field("sessions", &self.read().records.len())
            .finish()
    }
}

// No method awaits while holding a guard: every lock is taken and released
// inside one synchronous statement block.
#[async_trait]
impl<S: BuildHasher + Send + Sync + 'static> SessionRecords for MemoryStore<S> {
    async fn load(&self, id: &SessionHash) -> Result<Option<SessionRecord>, StoreError> {
        let hash = self.hasher.hash_one(id);
        Ok(self.read().get(hash, id).map(|r| SessionRecord::clone(r)))
    }

    async fn load_shared(
        &self,
        id: &SessionHash,
    ) -> Result<Option<Arc<SessionRecord>>, StoreError> {
        let hash = self.hasher.hash_one(id);
        Ok(self.read().get(hash, id).cloned())
    }

    async fn save(&self, record: &SessionRecord) -> Result<(), StoreError> {
        self.write().insert(&self.hasher, record.clone());
        Ok(())
    }

    async fn touch(
        &self,
        id: &SessionHash,
        last_seen_at: UnixTime,
        idle_expires_at: UnixTime,
    ) -> Result<bool, StoreError> {
        let hash = self.hasher.hash_one(id);
        Ok(match self.write().records.find_mut(hash, |r| r.id == *id) {
            Some(r) => {
                // Copies only if a request still holds the old one.
                let r = Arc::make_mut(r);
                r.last_seen_at = last_seen_at;
                r.idle_expires_at = idle_expires_at;
                true
            }
            None => false,
        })
    }

    async fn delete(&self, id: &SessionHash) -> Result<bool, StoreError> {
        let hash = self.hasher.hash_one(id);
        Ok(self.write().remove(&self.hasher, hash, id).is_some())
    }

    async fn delete_by_sub(&self, sub: &str) -> Result<u64, StoreError> {
        let mut sessions = self.write();
        let ids = sessions.ids_under(&self.hasher, Index::Sub, sub);
        Ok(sessions.remove_all(&self.hasher, &ids))
    }

    async fn delete_by_sid(&self, sid: &str) -> Result<u64, StoreError> {
        let mut sessions = self.write();
        let ids = sessions.ids_under(&self.hasher, Index::Sid, sid);
        Ok(sessions.remove_all(&self.hasher, &ids))
    }

    async fn list_by_sub(&self, sub: &str) -> Result<Vec<SessionRecord>, StoreError> {
        let sessions = self.read();
        let mut out: Vec<SessionRecord> = sessions
            .ids_under(&self.hasher, Index::Sub, sub)
            .iter()
            .filter_map(|id| {
                let record = sessions.get(self.hasher.hash_one(id), id)?;
                Some(SessionRecord::clone(record))
            })
            .collect();
        // Same order as the SQL stores, so callers see a stable listing.
        out.sort_by(|a, b| (a.created_at, a.id.as_str()).cmp(&(b.created_at, b.id.as_str())));
        Ok(out)
    }

    async fn save_if_version(
        &self,
        record: &SessionRecord,
        expected_version: u64,
    ) -> Result<bool, StoreError> {
        // Compare and insert under one write guard: atomic.
        let mut sessions = self.write();
        match sessions.get(self.hasher.hash_one(&record.id), &record.id) {
            Some(current) if current.version == expected_version => {
                // `touch` may have moved activity on since `record` was read.
                let mut record = record.clone();
                record.last_seen_at = record.last_seen_at.max(current.last_seen_at);
                record.idle_expires_at = record.idle_expires_at.max(current.idle_expires_at);
                sessions.insert(&self.hasher, record);
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}

#[async_trait]
impl<S: BuildHasher + Send + Sync + 'static> ReplayGuard for MemoryStore<S> {
    async fn remember_jti(
        &self,
        jti: &str,
        expires_at: UnixTime,
        now: UnixTime,
    ) -> Result<bool, StoreError> {
        Ok(self.jtis.remember(jti, expires_at, now))
    }

    async fn forget_jti(&self, jti: &str) -> Result<(), StoreError> {
        self.jtis.forget(jti);
        Ok(())
    }
}

#[async_trait]
impl<S: BuildHasher + Send + Sync + 'static> RefreshLeases for MemoryStore<S> {
    async fn acquire_refresh_lease(
        &self,
        id: &SessionHash,
        ttl: std::time::Duration,
    ) -> Result<Option<RefreshLease>, StoreError> {
        let now = std::time::Instant::now();
        let mut leases = self.leases();
        if leases.get(id).is_some_and(|(_, until)| *until > now) {
            return Ok(None);
        }
        if leases.len() > 1024 {
            leases.retain(|_, (_, until)| *until > now);
        }
        let token = random_token(16);
        leases.insert(id.clone(), (token.clone(), now + ttl));
        Ok(Some(RefreshLease(token)))
    }

    async fn renew_refresh_lease(
        &self,
        id: &SessionHash,
        lease: &RefreshLease,
        ttl: std::time::Duration,
    ) -> Result<bool, StoreError> {
        let now = std::time::Instant::now();
        Ok(match self.leases().get_mut(id) {
            // Expired but not taken by anyone else is still ours.
            Some((token, until)) if *token == lease.0 => {
                *until = now + ttl;
                true
            }
            _ => false,
        })
    }

    async fn release_refresh_lease(
        &self,
        id: &SessionHash,
        lease: &RefreshLease,
    ) -> Result<(), StoreError> {
        let mut leases = self.leases();
        if leases.get(id).is_some_and(|(token, _)| *token == lease.0) {
            leases.remove(id);
        }
        Ok(())
    }
}

#[async_trait]
impl<S: BuildHasher + Send + Sync + 'static> StoreUpkeep for MemoryStore<S> {
    async fn gc(&self, now: UnixTime) -> Result<u64, StoreError> {
        let removed = {
            let mut sessions = self.write();
            let expired: Vec<SessionHash> = sessions
                .records
                .iter()
                .filter(|r| r.is_expired(now))
                .map(|r| r.id.clone())
                .collect();
            sessions.remove_all(&self.hasher, &expired)
        };
        self.jtis.gc(now);
        Ok(removed)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn count(&self) -> Result<Option<u64>, StoreError> {
        Ok(Some(self.read().records.len() as u64))
    }
}

#[cfg(test)]
mod tests {
    use crate::session::SessionStore;
    use std::sync::Arc;

    use super::*;
    use crate::session::contract::sample_record;

    crate::session_store_contract_tests!(async {
        Arc::new(MemoryStore::new()) as Arc<dyn SessionStore>
    });

    /// Every id, `sub` and `sid` hashes to the same value: lookups must be
    /// decided by the records, never by the hashes.
    #[derive(Default)]
    struct OneHash;

    impl BuildHasher for OneHash {
        type Hasher = OneHash;
        fn build_hasher(&self) -> OneHash {
            OneHash
        }
    }

    impl std::hash::Hasher for OneHash {
        fn finish(&self) -> u64 {
            7
        }
        fn write(&mut self, _: &[u8]) {}
    }

    mod every_hash_collides {
        use super::*;

        crate::session_store_contract_tests!(async {
            Arc::new(MemoryStore::<OneHash>::default()) as Arc<dyn SessionStore>
        });
    }

    #[tokio::test]
    async fn indexes_hold_hashes_and_no_record() {
        // An index entry of one session is three words and owns nothing (no
        // copy of the id, `sub` or `sid`); only `records` holds the record,
        // so `touch` updates it in place.
        assert_eq!(size_of::<IndexEntry>(), 3 * size_of::<u64>());
        let store = MemoryStore::new();
        let (_, a) = sample_record("alice", Some("sid-a"), 1_000);
        store.save(&a).await.expect("save");
        let sessions = store.read();
        let stored = sessions
            .get(store.hasher.hash_one(&a.id), &a.id)
            .expect("stored");
        assert_eq!(Arc::strong_count(stored), 1);
        assert_eq!((sessions.by_sub.len(), sessions.by_sid.len()), (1, 1));
    }

    /// How many session hashes an index holds.
    fn index_size(index: &HashTable<IndexEntry>) -> usize {
        index
            .iter()
            .map(|e| match &e.records {
                RecordHashes::One(_) => 1,
                RecordHashes::Many(set) => set.len(),
            })
            .sum()
    }

    #[tokio::test]
    async fn a_subject_with_many_sessions_has_one_index_entry() {
        let store = MemoryStore::new();
        let mut ids = Vec::new();
        for _ in 0..500 {
            let (_, r) = sample_record("kiosk", Some("sid-k"), 1_000);
            store.save(&r).await.expect("save");
            ids.push(r.id);
        }
        {
            let sessions = store.read();
            assert_eq!(
                (sessions.by_sub.len(), index_size(&sessions.by_sub)),
                (1, 500)
            );
        }
        for id in &ids[..499] {
            assert!(store.delete(id).await.expect("delete"));
        }
        {
            // One session left: the set is gone.
            let sessions = store.read();
            let entry = sessions.by_sub.iter().next().expect("entry");
            assert!(matches!(entry.records, RecordHashes::One(_)));
        }
        assert_eq!(store.delete_by_sid("sid-k").await.expect("by sid"), 1);
        let sessions = store.read();
        assert!(sessions.by_sub.is_empty() && sessions.by_sid.is_empty());
    }

    #[tokio::test]
    async fn colliding_keys_stay_apart() {
        let store = MemoryStore::<OneHash>::default();
        let (_, a1) = sample_record("alice", Some("sid-1"), 1_000);
        let (_, a2) = sample_record("alice", Some("sid-2"), 1_000);
        let (_, b) = sample_record("bob", Some("sid-1x"), 1_000);
        for r in [&a1, &a2, &b] {
            store.save(r).await.expect("save");
        }
        // Saving again adds no second index entry.
        store.save(&a1).await.expect("save again");
        assert_eq!(index_size(&store.read().by_sub), 3);

        assert_eq!(store.list_by_sub("alice").await.expect("list").len(), 2);
        assert_eq!(
            store.list_by_sub("bob").await.expect("list"),
            vec![b.clone()]
        );
        assert_eq!(store.delete_by_sid("sid-1").await.expect("by sid"), 1);
        assert!(store.load(&b.id).await.expect("load").is_some());
        assert_eq!(store.delete_by_sub("alice").await.expect("by sub"), 1);
        assert_eq!(store.delete_by_sub("carol").await.expect("by sub"), 0);
        assert_eq!(
            store.list_by_sub("bob").await.expect("list"),
            vec![b.clone()]
        );
        assert!(store.delete(&b.id).await.expect("delete"));

        let sessions = store.read();
        assert!(sessions.records.is_empty());
        assert!(sessions.by_sub.is_empty() && sessions.by_sid.is_empty());
    }

    #[tokio::test]
    async fn indexes_do_not_leak_after_delete_and_gc() {
        let store = MemoryStore::new();
        let (_, a) = sample_record("alice", Some("sid-a"), 1_000);
        let (_, mut b) = sample_record("bob", Some("sid-b"), 1_000);
        b.expires_at = 1_001;
        store.save(&a).await.expect("save a");
        store.save(&b).await.expect("save b");

        assert!(store.delete(&a.id).await.expect("delete a"));
        assert_eq!(store.gc(2_000).await.expect("gc"), 1);

        let sessions = store.read();
        assert!(sessions.records.is_empty());
        assert!(
            sessions.by_sub.is_empty(),
            "empty sub index entries must go"
        );
        assert!(
            sessions.by_sid.is_empty(),
            "empty sid index entries must go"
        );
    }

    #[test]
    fn debug_shows_counts_not_tokens() {
        let store = MemoryStore::new();
        let (_, record) = sample_record("alice", None, 1_000);
        store.write().insert(&store.hasher, record.clone());
        let shown = format!("{store:?}");
        assert!(shown.contains("sessions: 1"));
        assert!(!shown.contains(record.tokens.access_token.as_str()));
    }
}
