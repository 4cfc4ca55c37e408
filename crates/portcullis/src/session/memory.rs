//! In-process session store: hash maps behind locks, for a single node and tests.
//!
//! Nothing survives a restart, and replicas do not share it: use SQLite for a
//! single durable node, Redis or PostgreSQL for several.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use async_trait::async_trait;

use super::{
    RefreshLease, RefreshLeases, ReplayGuard, SessionHash, SessionRecord, SessionRecords,
    StoreError, StoreUpkeep, random_token,
};
use crate::time::UnixTime;

/// Sessions keyed by hash, with `sub` and `sid` indexes so logout does not
/// scan every session.
#[derive(Default)]
struct Sessions {
    // Shared with the requests that loaded them (see `load_shared`).
    records: HashMap<SessionHash, Arc<SessionRecord>>,
    by_sub: HashMap<String, HashSet<SessionHash>>,
    by_sid: HashMap<String, HashSet<SessionHash>>,
}

impl Sessions {
    fn insert(&mut self, record: SessionRecord) {
        // An overwrite may change sub or sid; drop the old index entries first.
        self.remove(&record.id);
        index_add(&mut self.by_sub, &record.sub, &record.id);
        if let Some(sid) = &record.sid {
            index_add(&mut self.by_sid, sid, &record.id);
        }
        self.records.insert(record.id.clone(), Arc::new(record));
    }

    fn remove(&mut self, id: &SessionHash) -> Option<Arc<SessionRecord>> {
        let record = self.records.remove(id)?;
        index_remove(&mut self.by_sub, &record.sub, id);
        if let Some(sid) = &record.sid {
            index_remove(&mut self.by_sid, sid, id);
        }
        Some(record)
    }

    /// Remove every session whose hash is in `ids` (an index entry). Returns how many.
    fn remove_all(&mut self, ids: Option<HashSet<SessionHash>>) -> u64 {
        ids.unwrap_or_default()
            .iter()
            .filter(|id| self.remove(id).is_some())
            .count() as u64
    }
}

fn index_add(index: &mut HashMap<String, HashSet<SessionHash>>, key: &str, id: &SessionHash) {
    index.entry(key.to_string()).or_default().insert(id.clone());
}

fn index_remove(index: &mut HashMap<String, HashSet<SessionHash>>, key: &str, id: &SessionHash) {
    if let Some(ids) = index.get_mut(key) {
        ids.remove(id);
        // Empty sets would otherwise accumulate one per subject ever seen.
        if ids.is_empty() {
            index.remove(key);
        }
    }
}

/// Session store held in this process's memory.
#[derive(Default)]
pub struct MemoryStore {
    // Sessions are read on every request, so readers share the lock.
    sessions: RwLock<Sessions>,
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

impl std::fmt::Debug for MemoryStore {
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
impl SessionRecords for MemoryStore {
    async fn load(&self, id: &SessionHash) -> Result<Option<SessionRecord>, StoreError> {
        Ok(self.read().records.get(id).map(|r| SessionRecord::clone(r)))
    }

    async fn load_shared(
        &self,
        id: &SessionHash,
    ) -> Result<Option<Arc<SessionRecord>>, StoreError> {
        Ok(self.read().records.get(id).cloned())
    }

    async fn save(&self, record: &SessionRecord) -> Result<(), StoreError> {
        self.write().insert(record.clone());
        Ok(())
    }

    async fn touch(
        &self,
        id: &SessionHash,
        last_seen_at: UnixTime,
        idle_expires_at: UnixTime,
    ) -> Result<bool, StoreError> {
        Ok(match self.write().records.get_mut(id) {
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
        Ok(self.write().remove(id).is_some())
    }

    async fn delete_by_sub(&self, sub: &str) -> Result<u64, StoreError> {
        let mut sessions = self.write();
        let ids = sessions.by_sub.get(sub).cloned();
        Ok(sessions.remove_all(ids))
    }

    async fn delete_by_sid(&self, sid: &str) -> Result<u64, StoreError> {
        let mut sessions = self.write();
        let ids = sessions.by_sid.get(sid).cloned();
        Ok(sessions.remove_all(ids))
    }

    async fn list_by_sub(&self, sub: &str) -> Result<Vec<SessionRecord>, StoreError> {
        let sessions = self.read();
        let mut out: Vec<SessionRecord> = sessions
            .by_sub
            .get(sub)
            .into_iter()
            .flatten()
            .filter_map(|id| sessions.records.get(id).map(|r| SessionRecord::clone(r)))
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
        match sessions.records.get(&record.id) {
            Some(current) if current.version == expected_version => {
                // `touch` may have moved activity on since `record` was read.
                let mut record = record.clone();
                record.last_seen_at = record.last_seen_at.max(current.last_seen_at);
                record.idle_expires_at = record.idle_expires_at.max(current.idle_expires_at);
                sessions.insert(record);
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}

#[async_trait]
impl ReplayGuard for MemoryStore {
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
impl RefreshLeases for MemoryStore {
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
impl StoreUpkeep for MemoryStore {
    async fn gc(&self, now: UnixTime) -> Result<u64, StoreError> {
        let removed = {
            let mut sessions = self.write();
            let expired: HashSet<SessionHash> = sessions
                .records
                .values()
                .filter(|r| r.is_expired(now))
                .map(|r| r.id.clone())
                .collect();
            sessions.remove_all(Some(expired))
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
        store.write().insert(record.clone());
        let shown = format!("{store:?}");
        assert!(shown.contains("sessions: 1"));
        assert!(!shown.contains(&record.tokens.access_token));
    }
}
