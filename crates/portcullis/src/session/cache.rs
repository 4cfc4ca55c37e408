//! A local cache in front of a remote store, so the hot path does not hit
//! Redis or PostgreSQL on every request.
//!
//! Bounded and short-lived (default 2 s), and kept honest across replicas by
//! an [`InvalidationBus`] (Redis pub/sub, PostgreSQL LISTEN/NOTIFY): every
//! write or delete here evicts locally and tells the other replicas to evict,
//! so a logout on one replica stops the session everywhere within
//! milliseconds, and the cache TTL bounds the damage if a message is lost.
//! Leases and compare-and-swap always go to the store; taking a refresh
//! lease evicts the session so the holder re-reads the freshest tokens.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::broadcast;

use super::{
    RefreshLease, RefreshLeases, ReplayGuard, SessionHash, SessionRecord, SessionRecords,
    SessionStore, StoreError, StoreUpkeep,
};
use crate::time::{Clock, SystemClock, UnixTime};

/// What another replica must forget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalidation {
    Session(String),
    Subject(String),
    IdpSession(String),
    /// Messages may have been missed (the bus reconnected): forget everything.
    All,
}

impl Invalidation {
    /// Wire form: `s:<hash>`, `u:<sub>`, `d:<sid>`, `*`.
    pub fn encode(&self) -> String {
        match self {
            Invalidation::Session(id) => format!("s:{id}"),
            Invalidation::Subject(sub) => format!("u:{sub}"),
            Invalidation::IdpSession(sid) => format!("d:{sid}"),
            Invalidation::All => "*".into(),
        }
    }

    /// Unknown messages clear everything: safe, if slow.
    pub fn decode(text: &str) -> Self {
        match text.split_once(':') {
            Some(("s", id)) => Invalidation::Session(id.into()),
            Some(("u", sub)) => Invalidation::Subject(sub.into()),
            Some(("d", sid)) => Invalidation::IdpSession(sid.into()),
            _ => Invalidation::All,
        }
    }
}

/// Cross-replica invalidation messages.
#[async_trait]
pub trait InvalidationBus: Send + Sync + 'static {
    /// Tell every replica (this one included) to forget something.
    async fn publish(&self, message: Invalidation) -> Result<(), StoreError>;
    /// Messages from every replica, plus [`Invalidation::All`] after a reconnect.
    fn subscribe(&self) -> broadcast::Receiver<Invalidation>;
}

/// Cache size and lifetime.
#[derive(Debug, Clone, Copy)]
pub struct CacheOptions {
    /// How long a loaded record is served from memory (default 2 s).
    pub ttl: Duration,
    /// About this many records (default 10 000); beyond it the cache's S3-FIFO
    /// policy evicts, so records read once go before the ones in use.
    pub capacity: usize,
}

impl Default for CacheOptions {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(2),
            capacity: 10_000,
        }
    }
}

#[derive(Clone)]
struct Entry {
    // Shared with the requests that loaded it (see `load_shared`).
    record: Arc<SessionRecord>,
    loaded: Instant,
}

/// [`SessionStore`] decorator with a bounded, TTL'd local cache of loaded sessions.
pub struct CachedStore {
    inner: Arc<dyn SessionStore>,
    bus: Option<Arc<dyn InvalidationBus>>,
    options: CacheOptions,
    entries: Arc<Entries>,
    listener: Option<tokio::task::JoinHandle<()>>,
    /// `portcullis_session_cache_total` hit and miss handles, registered on
    /// first use (the recorder is installed by then): the `counter!` macro
    /// builds and looks up its labelled key on every call.
    counters: std::sync::OnceLock<(metrics::Counter, metrics::Counter)>,
}

impl CachedStore {
    /// Cache `inner`; with a `bus`, listen for other replicas' invalidations.
    pub fn new(
        inner: Arc<dyn SessionStore>,
        bus: Option<Arc<dyn InvalidationBus>>,
        options: CacheOptions,
    ) -> Self {
        // A sharded concurrent cache with constant-time eviction: a full cache
        // costs an insert no more than an empty one (no scan under one lock).
        let entries = Arc::new(Entries::new(options.capacity.max(1)));
        let listener = bus.as_ref().map(|bus| {
            let mut rx = bus.subscribe();
            let entries = Arc::downgrade(&entries);
            tokio::spawn(async move {
                loop {
                    let message = match rx.recv().await {
                        Ok(m) => m,
                        Err(broadcast::error::RecvError::Lagged(_)) => Invalidation::All,
                        Err(broadcast::error::RecvError::Closed) => break,
                    };
                    let Some(entries) = entries.upgrade() else {
                        break;
                    };
                    apply(&entries, &message);
                }
            })
        });
        Self {
            inner,
            bus,
            options,
            entries,
            listener,
            counters: std::sync::OnceLock::new(),
        }
    }

    fn count(&self, hit: bool) {
        let (hits, misses) = self.counters.get_or_init(|| {
            (
                metrics::counter!(crate::metrics::SESSION_CACHE_TOTAL, "result" => "hit"),
                metrics::counter!(crate::metrics::SESSION_CACHE_TOTAL, "result" => "miss"),
            )
        });
        if hit { hits } else { misses }.increment(1);
    }

    fn remember(&self, record: &Arc<SessionRecord>) {
        self.entries.insert(
            record.id.as_str().to_owned(),
            Entry {
                record: Arc::clone(record),
                loaded: Instant::now(),
            },
        );
    }

    fn forget(&self, message: &Invalidation) {
        apply(&self.entries, message);
    }

    /// Evict here, then tell the other replicas. A failed publish is logged:
    /// the other replicas' entries still expire after the TTL.
    async fn invalidate(&self, message: Invalidation) {
        self.forget(&message);
        if let Some(bus) = &self.bus
            && let Err(e) = bus.publish(message).await
        {
            tracing::warn!(error = %e, "cannot publish session cache invalidation");
        }
    }
}

impl Drop for CachedStore {
    fn drop(&mut self) {
        if let Some(task) = self.listener.take() {
            task.abort();
        }
    }
}

type Entries = quick_cache::sync::Cache<String, Entry>;

fn apply(entries: &Entries, message: &Invalidation) {
    match message {
        Invalidation::Session(id) => {
            entries.remove(id);
        }
        Invalidation::Subject(sub) => entries.retain(|_, e| &e.record.sub != sub),
        Invalidation::IdpSession(sid) => {
            entries.retain(|_, e| e.record.sid.as_deref() != Some(sid.as_str()))
        }
        Invalidation::All => entries.clear(),
    }
}

#[async_trait]
impl SessionRecords for CachedStore {
    async fn load(&self, id: &SessionHash) -> Result<Option<SessionRecord>, StoreError> {
        Ok(self.load_shared(id).await?.map(Arc::unwrap_or_clone))
    }

    async fn load_shared(
        &self,
        id: &SessionHash,
    ) -> Result<Option<Arc<SessionRecord>>, StoreError> {
        let cached = self.entries.get(id.as_str()).and_then(|e| {
            // A copy that looks expired may only be stale (another replica
            // recorded activity since): ask the store before anyone acts on it.
            let expired = e.record.is_expired(SystemClock.now());
            (e.loaded.elapsed() < self.options.ttl && !expired).then(|| Arc::clone(&e.record))
        });
        if let Some(record) = cached {
            self.count(true);
            return Ok(Some(record));
        }
        self.count(false);
        let loaded = self.inner.load_shared(id).await?;
        match &loaded {
            Some(record) => self.remember(record),
            None => self.forget(&Invalidation::Session(id.as_str().to_owned())),
        }
        Ok(loaded)
    }

    async fn save(&self, record: &SessionRecord) -> Result<(), StoreError> {
        let result = self.inner.save(record).await;
        self.invalidate(Invalidation::Session(record.id.as_str().to_owned()))
            .await;
        result
    }

    async fn touch(
        &self,
        id: &SessionHash,
        last_seen_at: UnixTime,
        idle_expires_at: UnixTime,
    ) -> Result<bool, StoreError> {
        let existed = self.inner.touch(id, last_seen_at, idle_expires_at).await?;
        // Activity only: update our copy; other replicas' copies age out.
        match (existed, self.entries.get(id.as_str())) {
            (true, Some(mut e)) => {
                let record = Arc::make_mut(&mut e.record);
                record.last_seen_at = last_seen_at;
                record.idle_expires_at = idle_expires_at;
                // Only if still cached: an invalidation since then wins.
                let _ = self.entries.replace(id.as_str().to_owned(), e, true);
            }
            (false, Some(_)) => {
                self.entries.remove(id.as_str());
            }
            _ => {}
        }
        Ok(existed)
    }

    async fn delete(&self, id: &SessionHash) -> Result<bool, StoreError> {
        let result = self.inner.delete(id).await;
        self.invalidate(Invalidation::Session(id.as_str().to_owned()))
            .await;
        result
    }

    async fn delete_by_sub(&self, sub: &str) -> Result<u64, StoreError> {
        let result = self.inner.delete_by_sub(sub).await;
        self.invalidate(Invalidation::Subject(sub.to_owned())).await;
        result
    }

    async fn delete_by_sid(&self, sid: &str) -> Result<u64, StoreError> {
        let result = self.inner.delete_by_sid(sid).await;
        self.invalidate(Invalidation::IdpSession(sid.to_owned()))
            .await;
        result
    }

    async fn list_by_sub(&self, sub: &str) -> Result<Vec<SessionRecord>, StoreError> {
        self.inner.list_by_sub(sub).await
    }

    async fn save_if_version(
        &self,
        record: &SessionRecord,
        expected_version: u64,
    ) -> Result<bool, StoreError> {
        let result = self.inner.save_if_version(record, expected_version).await;
        self.invalidate(Invalidation::Session(record.id.as_str().to_owned()))
            .await;
        result
    }
}

#[async_trait]
impl ReplayGuard for CachedStore {
    async fn remember_jti(
        &self,
        jti: &str,
        expires_at: UnixTime,
        now: UnixTime,
    ) -> Result<bool, StoreError> {
        self.inner.remember_jti(jti, expires_at, now).await
    }

    async fn forget_jti(&self, jti: &str) -> Result<(), StoreError> {
        self.inner.forget_jti(jti).await
    }
}

#[async_trait]
impl RefreshLeases for CachedStore {
    async fn acquire_refresh_lease(
        &self,
        id: &SessionHash,
        ttl: Duration,
    ) -> Result<Option<RefreshLease>, StoreError> {
        let lease = self.inner.acquire_refresh_lease(id, ttl).await?;
        if lease.is_some() {
            // The holder must see tokens another replica may have just saved.
            self.forget(&Invalidation::Session(id.as_str().to_owned()));
        }
        Ok(lease)
    }

    async fn renew_refresh_lease(
        &self,
        id: &SessionHash,
        lease: &RefreshLease,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        self.inner.renew_refresh_lease(id, lease, ttl).await
    }

    async fn release_refresh_lease(
        &self,
        id: &SessionHash,
        lease: &RefreshLease,
    ) -> Result<(), StoreError> {
        self.inner.release_refresh_lease(id, lease).await
    }
}

#[async_trait]
impl StoreUpkeep for CachedStore {
    async fn gc(&self, now: UnixTime) -> Result<u64, StoreError> {
        let n = self.inner.gc(now).await?;
        if n > 0 {
            // Expired entries fail `is_expired` anyway; drop them to free memory.
            self.entries.retain(|_, e| !e.record.is_expired(now));
        }
        Ok(n)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }

    async fn count(&self) -> Result<Option<u64>, StoreError> {
        self.inner.count().await
    }
}

/// An in-process bus, for tests and for several caches over one store in one process.
#[derive(Clone)]
pub struct LocalBus {
    tx: broadcast::Sender<Invalidation>,
}

impl Default for LocalBus {
    fn default() -> Self {
        Self {
            tx: broadcast::channel(1024).0,
        }
    }
}

#[async_trait]
impl InvalidationBus for LocalBus {
    async fn publish(&self, message: Invalidation) -> Result<(), StoreError> {
        let _ = self.tx.send(message);
        Ok(())
    }
    fn subscribe(&self) -> broadcast::Receiver<Invalidation> {
        self.tx.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::MemoryStore;
    use crate::session::contract::sample_record;

    mod contract {
        use super::*;

        crate::session_store_contract_tests!(async {
            let inner: Arc<dyn SessionStore> = Arc::new(MemoryStore::new());
            Arc::new(CachedStore::new(inner, None, CacheOptions::default()))
                as Arc<dyn SessionStore>
        });
    }

    async fn eventually(mut check: impl AsyncFnMut() -> bool) -> bool {
        for _ in 0..200 {
            if check().await {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        false
    }

    /// The value of `portcullis_session_cache_total{result}` in the
    /// process-global registry (other tests count too, so compare deltas).
    fn cache_count(handle: &metrics_exporter_prometheus::PrometheusHandle, result: &str) -> u64 {
        let wanted = format!("portcullis_session_cache_total{{result=\"{result}\"}} ");
        handle
            .render()
            .lines()
            .find_map(|l| l.strip_prefix(&wanted)?.trim().parse().ok())
            .unwrap_or(0)
    }

    #[tokio::test]
    async fn hits_and_misses_are_counted() {
        let handle = crate::metrics::install().expect("recorder");
        let inner: Arc<dyn SessionStore> = Arc::new(MemoryStore::new());
        let cache = CachedStore::new(inner, None, CacheOptions::default());
        let (_, record) = sample_record("counted", None, SystemClock.now());
        cache.save(&record).await.unwrap();
        let (hits, misses) = (cache_count(handle, "hit"), cache_count(handle, "miss"));
        assert!(cache.load(&record.id).await.unwrap().is_some()); // miss, then cached
        assert!(cache.load(&record.id).await.unwrap().is_some()); // hit
        assert!(cache_count(handle, "miss") > misses);
        assert!(cache_count(handle, "hit") > hits);
    }

    #[tokio::test]
    async fn hits_skip_the_store_and_deletes_reach_other_replicas() {
        let shared: Arc<dyn SessionStore> = Arc::new(MemoryStore::new());
        let bus: Arc<dyn InvalidationBus> = Arc::new(LocalBus::default());
        let options = CacheOptions {
            ttl: Duration::from_secs(60),
            capacity: 100,
        };
        let a = CachedStore::new(shared.clone(), Some(bus.clone()), options);
        let b = CachedStore::new(shared.clone(), Some(bus), options);
        let (_, record) = sample_record("alice", Some("sid-1"), SystemClock.now());
        a.save(&record).await.expect("save");
        assert_eq!(
            b.load(&record.id).await.expect("load"),
            Some(record.clone())
        );

        // Changed behind the cache's back: b still serves its copy (a hit).
        let mut changed = record.clone();
        changed.roles = vec!["admin".into()];
        shared.save(&changed).await.expect("direct save");
        assert_eq!(b.load(&record.id).await.expect("hit"), Some(record.clone()));

        // A delete through a evicts b's copy via the bus.
        a.delete(&record.id).await.expect("delete");
        assert!(eventually(async || b.load(&record.id).await.expect("load").is_none()).await);
    }

    #[tokio::test]
    async fn entries_expire_and_capacity_is_bounded() {
        let shared: Arc<dyn SessionStore> = Arc::new(MemoryStore::new());
        let cache = CachedStore::new(
            shared.clone(),
            None,
            CacheOptions {
                ttl: Duration::from_millis(30),
                capacity: 3,
            },
        );
        let mut records = Vec::new();
        for i in 0..5 {
            let (_, r) = sample_record(&format!("u{i}"), None, SystemClock.now());
            cache.save(&r).await.expect("save");
            cache.load(&r.id).await.expect("load");
            records.push(r);
        }
        assert!(cache.entries.len() <= 3, "{}", cache.entries.len());

        let r = &records[4];
        let mut changed = r.clone();
        changed.roles = vec!["new".into()];
        shared.save(&changed).await.expect("direct save");
        assert!(
            eventually(
                async || cache.load(&r.id).await.expect("load").map(|x| x.roles)
                    == Some(vec!["new".to_string()])
            )
            .await
        );
    }

    #[tokio::test]
    async fn a_flood_of_one_time_sessions_does_not_evict_the_ones_in_use() {
        // An attacker with many sessions, each used once, must not push the
        // active users' sessions out of the cache (and onto the store).
        let shared: Arc<dyn SessionStore> = Arc::new(MemoryStore::new());
        let cache = CachedStore::new(
            shared.clone(),
            None,
            CacheOptions {
                ttl: Duration::from_secs(600),
                capacity: 100,
            },
        );
        let now = SystemClock.now();
        let (_, hot) = sample_record("alice", None, now);
        shared.save(&hot).await.expect("save");
        cache.load(&hot.id).await.expect("load");
        cache.load(&hot.id).await.expect("hit");
        for i in 0..2_000 {
            let (_, r) = sample_record(&format!("flood{i}"), None, now);
            shared.save(&r).await.expect("save");
            cache.load(&r.id).await.expect("load");
            if i % 50 == 0 {
                cache.load(&hot.id).await.expect("still in use");
            }
        }
        assert!(cache.entries.len() <= 110, "{}", cache.entries.len());
        // Gone from the store, still served from memory: it was never evicted.
        shared.delete(&hot.id).await.expect("delete");
        assert!(cache.load(&hot.id).await.expect("load").is_some());
    }

    #[tokio::test]
    async fn a_copy_that_looks_expired_is_checked_with_the_store() {
        let shared: Arc<dyn SessionStore> = Arc::new(MemoryStore::new());
        let cache = CachedStore::new(
            shared.clone(),
            None,
            CacheOptions {
                ttl: Duration::from_secs(60),
                capacity: 10,
            },
        );
        let now = SystemClock.now();
        let (_, mut record) = sample_record("alice", None, now - 100);
        record.idle_expires_at = now - 1;
        shared.save(&record).await.expect("save");
        assert!(cache.load(&record.id).await.expect("load").is_some());
        // Another replica recorded activity: the store is newer than our copy.
        shared
            .touch(&record.id, now, now + 600)
            .await
            .expect("touch");
        let loaded = cache
            .load(&record.id)
            .await
            .expect("load")
            .expect("present");
        assert_eq!(loaded.idle_expires_at, now + 600);
    }

    #[tokio::test]
    async fn subject_and_sid_invalidation() {
        let entries = Entries::new(10);
        let (_, a) = sample_record("alice", Some("s1"), 1);
        let (_, b) = sample_record("bob", Some("s2"), 1);
        for r in [&a, &b] {
            entries.insert(
                r.id.as_str().to_owned(),
                Entry {
                    record: Arc::new(r.clone()),
                    loaded: Instant::now(),
                },
            );
        }
        apply(&entries, &Invalidation::decode("d:s2"));
        assert_eq!(entries.len(), 1);
        apply(&entries, &Invalidation::decode("u:alice"));
        assert!(entries.is_empty());
        assert_eq!(Invalidation::decode("garbage"), Invalidation::All);
        assert_eq!(
            Invalidation::decode(&Invalidation::Session("x:y".into()).encode()),
            Invalidation::Session("x:y".into())
        );
    }
}
