//! The conformance suite every [`SessionStore`] backend must pass.
//!
//! Each check is a `pub async fn` over a fresh store; the
//! [`session_store_contract_tests!`](crate::session_store_contract_tests) macro
//! turns all of them into `#[tokio::test]`s for one backend:
//!
//! ```ignore
//! portcullis::session_store_contract_tests!(async {
//!     Arc::new(MemoryStore::new()) as Arc<dyn SessionStore>
//! });
//! ```
//!
//! `session_store_contract_tests!(serial EXPR)`, written inside a test,
//! runs every check there one after the other instead.
//!
//! The expression is evaluated once per test and must yield a fresh, isolated
//! store: either an `Arc<dyn SessionStore>`, or `(Arc<dyn SessionStore>, guard)`
//! where `guard` (a temp dir, a container, a schema to drop) is kept alive until
//! the check ends. The calling crate needs `tokio` with `macros` and
//! `rt-multi-thread`.
//!
//! Checks use the real clock for timestamps and random subjects, so backends
//! with native TTLs or a shared server (Redis, PostgreSQL) pass them too.

use std::collections::HashSet;
use std::sync::Arc;

use serde_json::json;

use super::{SessionHash, SessionId, SessionRecord, SessionStore, random_token};
use crate::time::{Clock, SystemClock, UnixTime};

/// What the macro's store expression may return.
pub trait StoreFixture {
    /// The store under test.
    fn store(&self) -> Arc<dyn SessionStore>;
}

impl StoreFixture for Arc<dyn SessionStore> {
    fn store(&self) -> Arc<dyn SessionStore> {
        Arc::clone(self)
    }
}

/// A store plus whatever must outlive it (dropped after the check).
impl<G> StoreFixture for (Arc<dyn SessionStore>, G) {
    fn store(&self) -> Arc<dyn SessionStore> {
        Arc::clone(&self.0)
    }
}

/// Expand to one `#[tokio::test]` per contract check. See the [module docs](crate::session::contract).
#[macro_export]
macro_rules! session_store_contract_tests {
    // Every check in one test, one after the other, each on a fresh fixture
    // from `$make`: for backends whose server is costly to start (a
    // cluster), written inside a test that started it.
    (serial $make:expr) => {
        $crate::session_store_contract_tests!(@list serial $make);
    };
    ($make:expr) => {
        $crate::session_store_contract_tests!(@list tests $make);
    };
    (@list $mode:ident $make:expr) => {
        $crate::session_store_contract_tests!(@$mode $make;
            round_trip_keeps_every_field,
            round_trip_without_optional_fields,
            load_unknown_is_none,
            save_overwrites,
            overwrite_moves_sub_and_sid,
            delete_reports_existence,
            delete_by_sub_is_scoped,
            delete_by_sid_is_scoped,
            list_by_sub_returns_only_that_subject,
            gc_removes_expired_and_keeps_live,
            ping_ok,
            many_records,
            touch_updates_only_activity,
            shared_load_sees_every_write,
            save_if_version_swaps_only_on_match,
            concurrent_save_if_version_has_one_winner,
            save_if_version_keeps_newer_activity,
            refresh_lease_is_exclusive_until_released,
            concurrent_refresh_lease_has_one_holder,
            expired_refresh_lease_can_be_taken_over,
            remember_jti_refuses_replay_until_expiry,
            concurrent_remember_jti_has_one_winner,
            forgotten_jti_is_accepted_again,
        );
    };
    (@serial $make:expr; $($check:ident),* $(,)?) => {
        $({
            eprintln!("contract check: {}", stringify!($check));
            let fixture = $make.await;
            let store = $crate::session::contract::StoreFixture::store(&fixture);
            $crate::session::contract::$check(store).await;
            drop(fixture);
        })*
    };
    (@tests $make:expr; $($check:ident),* $(,)?) => {
        $(
            // Multi-threaded so concurrency checks race for real.
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let fixture = $make.await;
                let store = $crate::session::contract::StoreFixture::store(&fixture);
                $crate::session::contract::$check(store).await;
                drop(fixture);
            }
        )*
    };
}

/// A fully populated record created at `now` (idle expiry in 30 min, absolute
/// in 8 h), with a fresh id. Every optional field is `Some` so round trips
/// prove they are kept.
pub fn sample_record(sub: &str, sid: Option<&str>, now: UnixTime) -> (SessionId, SessionRecord) {
    let id = SessionId::generate();
    let claims = json!({
        "name": "Zoë Ünïcode 测试",
        "email": format!("{sub}@example.test"),
        "preferred_username": sub,
        "nested": { "groups": ["a", "b"], "n": 7, "ok": true, "none": null },
    });
    let claims = match claims {
        serde_json::Value::Object(map) => map.into(),
        _ => Default::default(),
    };
    let record = SessionRecord {
        id: id.hash(),
        sub: sub.to_string(),
        sid: sid.map(str::to_string),
        claims,
        roles: vec!["reader".into(), "writer".into()],
        tokens: super::TokenSet {
            access_token: format!("at-{}", random_token(24)).into(),
            refresh_token: Some(format!("rt-{}", random_token(24)).into()),
            id_token: Some(format!("it-{}", random_token(24)).into()),
            access_expires_at: Some(now + 300),
        },
        csrf_token: random_token(32),
        user_agent: Some("Firefox 128 on Linux".into()),
        created_at: now,
        last_seen_at: now,
        expires_at: now + 8 * 3600,
        idle_expires_at: now + 1800,
        version: 1,
    };
    (id, record)
}

/// A subject no other test (or earlier run against a shared server) uses.
fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", random_token(9))
}

fn now() -> UnixTime {
    SystemClock.now()
}

async fn save_all(store: &dyn SessionStore, records: &[&SessionRecord]) {
    for record in records {
        store.save(record).await.expect("save");
    }
}

async fn exists(store: &dyn SessionStore, id: &SessionHash) -> bool {
    store.load(id).await.expect("load").is_some()
}

fn ids(records: &[SessionRecord]) -> HashSet<SessionHash> {
    records.iter().map(|r| r.id.clone()).collect()
}

pub async fn round_trip_keeps_every_field(store: Arc<dyn SessionStore>) {
    let (_, record) = sample_record(&unique("alice"), Some(&unique("sid")), now());
    store.save(&record).await.expect("save");
    assert_eq!(
        store.load(&record.id).await.expect("load"),
        Some(record.clone())
    );
    // Compared separately because TokenSet's Debug hides the tokens.
    let loaded = store
        .load(&record.id)
        .await
        .expect("load")
        .expect("present");
    assert!(
        loaded.tokens == record.tokens,
        "tokens changed in the round trip"
    );
}

pub async fn round_trip_without_optional_fields(store: Arc<dyn SessionStore>) {
    let (_, mut record) = sample_record(&unique("alice"), None, now());
    record.claims.clear();
    record.roles.clear();
    record.tokens.refresh_token = None;
    record.tokens.id_token = None;
    record.tokens.access_expires_at = None;
    record.user_agent = None;
    record.version = u64::MAX;
    store.save(&record).await.expect("save");
    assert_eq!(store.load(&record.id).await.expect("load"), Some(record));
}

pub async fn load_unknown_is_none(store: Arc<dyn SessionStore>) {
    let unknown = SessionId::generate().hash();
    assert_eq!(store.load(&unknown).await.expect("load"), None);
}

pub async fn save_overwrites(store: Arc<dyn SessionStore>) {
    let t = now();
    let (_, mut record) = sample_record(&unique("alice"), Some(&unique("sid")), t);
    store.save(&record).await.expect("first save");

    record.version = 2;
    record.tokens.access_token = format!("at-{}", random_token(24)).into();
    record.tokens.access_expires_at = Some(t + 900);
    record.last_seen_at = t + 60;
    record.idle_expires_at = t + 60 + 1800;
    store.save(&record).await.expect("second save");

    let loaded = store
        .load(&record.id)
        .await
        .expect("load")
        .expect("present");
    assert_eq!(loaded, record);
    assert!(loaded.tokens == record.tokens, "new tokens were not saved");
    let listed = store.list_by_sub(&record.sub).await.expect("list");
    assert_eq!(
        listed.len(),
        1,
        "an overwrite must not add a second session"
    );
}

/// Overwriting with another sub/sid must move the record in every lookup.
pub async fn overwrite_moves_sub_and_sid(store: Arc<dyn SessionStore>) {
    let (old_sub, new_sub) = (unique("old"), unique("new"));
    let (old_sid, new_sid) = (unique("sid-old"), unique("sid-new"));
    let (_, mut record) = sample_record(&old_sub, Some(&old_sid), now());
    store.save(&record).await.expect("save");
    record.sub = new_sub.clone();
    record.sid = Some(new_sid.clone());
    record.version = 2;
    store.save(&record).await.expect("overwrite");

    assert!(
        store
            .list_by_sub(&old_sub)
            .await
            .expect("list old")
            .is_empty()
    );
    assert_eq!(
        store.list_by_sub(&new_sub).await.expect("list new"),
        vec![record.clone()]
    );
    assert_eq!(store.delete_by_sid(&old_sid).await.expect("by old sid"), 0);
    assert_eq!(store.delete_by_sub(&old_sub).await.expect("by old sub"), 0);
    assert!(exists(&*store, &record.id).await);
    assert_eq!(store.delete_by_sid(&new_sid).await.expect("by new sid"), 1);
    assert!(!exists(&*store, &record.id).await);
}

pub async fn delete_reports_existence(store: Arc<dyn SessionStore>) {
    let (_, record) = sample_record(&unique("alice"), None, now());
    store.save(&record).await.expect("save");
    assert!(store.delete(&record.id).await.expect("first delete"));
    assert!(!store.delete(&record.id).await.expect("second delete"));
    assert_eq!(store.load(&record.id).await.expect("load"), None);
    assert!(
        store
            .list_by_sub(&record.sub)
            .await
            .expect("list")
            .is_empty()
    );
}

pub async fn delete_by_sub_is_scoped(store: Arc<dyn SessionStore>) {
    let t = now();
    let (alice, bob) = (unique("alice"), unique("bob"));
    let (_, a1) = sample_record(&alice, Some(&unique("sid")), t);
    let (_, a2) = sample_record(&alice, None, t);
    let (_, b1) = sample_record(&bob, Some(&unique("sid")), t);
    save_all(&*store, &[&a1, &a2, &b1]).await;

    assert_eq!(store.delete_by_sub(&alice).await.expect("delete alice"), 2);
    assert!(!exists(&*store, &a1.id).await);
    assert!(!exists(&*store, &a2.id).await);
    assert_eq!(
        store.load(&b1.id).await.expect("load bob"),
        Some(b1.clone())
    );
    assert_eq!(store.delete_by_sub(&alice).await.expect("again"), 0);
    assert_eq!(
        store
            .delete_by_sub(&unique("nobody"))
            .await
            .expect("nobody"),
        0
    );
}

pub async fn delete_by_sid_is_scoped(store: Arc<dyn SessionStore>) {
    let t = now();
    let alice = unique("alice");
    let (sid1, sid2) = (unique("sid1"), unique("sid2"));
    // Two browser sessions can share one IdP session (same sid).
    let (_, a1) = sample_record(&alice, Some(&sid1), t);
    let (_, a2) = sample_record(&alice, Some(&sid1), t);
    let (_, a3) = sample_record(&alice, Some(&sid2), t);
    let (_, a4) = sample_record(&alice, None, t);
    save_all(&*store, &[&a1, &a2, &a3, &a4]).await;

    assert_eq!(store.delete_by_sid(&sid1).await.expect("delete sid1"), 2);
    assert!(!exists(&*store, &a1.id).await);
    assert!(!exists(&*store, &a2.id).await);
    assert!(exists(&*store, &a3.id).await);
    assert!(
        exists(&*store, &a4.id).await,
        "a session without sid must survive"
    );
    assert_eq!(store.delete_by_sid(&sid1).await.expect("again"), 0);
}

pub async fn list_by_sub_returns_only_that_subject(store: Arc<dyn SessionStore>) {
    let t = now();
    let (alice, bob) = (unique("alice"), unique("bob"));
    let (_, a1) = sample_record(&alice, Some(&unique("sid")), t);
    let (_, a2) = sample_record(&alice, None, t + 1);
    let (_, b1) = sample_record(&bob, None, t);
    save_all(&*store, &[&a1, &a2, &b1]).await;

    let listed = store.list_by_sub(&alice).await.expect("list alice");
    assert_eq!(ids(&listed), ids(&[a1.clone(), a2.clone()]));
    for record in &listed {
        let original = if record.id == a1.id { &a1 } else { &a2 };
        assert_eq!(record, original, "listed records must be complete");
    }
    assert_eq!(store.list_by_sub(&bob).await.expect("list bob"), vec![b1]);
    assert!(
        store
            .list_by_sub(&unique("nobody"))
            .await
            .expect("nobody")
            .is_empty()
    );
}

pub async fn gc_removes_expired_and_keeps_live(store: Arc<dyn SessionStore>) {
    // Expiries are in the real future so TTL-based stores keep every record
    // until gc; gc is then asked about a later `now`.
    let t = now();
    let gc_at = t + 600;
    let sub = unique("alice");

    let (_, live) = sample_record(&sub, None, t); // idle until t+1800
    let (_, mut idle_expired) = sample_record(&sub, None, t);
    idle_expired.idle_expires_at = t + 60;
    let (_, mut absolute_expired) = sample_record(&sub, None, t);
    absolute_expired.expires_at = t + 120;
    absolute_expired.idle_expires_at = t + 120;
    // Expired exactly at `gc_at`, matching SessionRecord::is_expired.
    let (_, mut on_boundary) = sample_record(&sub, None, t);
    on_boundary.idle_expires_at = gc_at;
    save_all(
        &*store,
        &[&live, &idle_expired, &absolute_expired, &on_boundary],
    )
    .await;

    assert_eq!(
        store.gc(t).await.expect("early gc"),
        0,
        "nothing is expired yet"
    );
    assert_eq!(store.gc(gc_at).await.expect("gc"), 3);

    assert_eq!(
        store.load(&live.id).await.expect("load live"),
        Some(live.clone())
    );
    assert!(!exists(&*store, &idle_expired.id).await);
    assert!(!exists(&*store, &absolute_expired.id).await);
    assert!(!exists(&*store, &on_boundary.id).await);
    assert_eq!(store.list_by_sub(&sub).await.expect("list"), vec![live]);
}

pub async fn ping_ok(store: Arc<dyn SessionStore>) {
    store.ping().await.expect("ping");
}

pub async fn many_records(store: Arc<dyn SessionStore>) {
    const SUBJECTS: usize = 10;
    const PER_SUBJECT: usize = 20;
    let t = now();
    let subs: Vec<String> = (0..SUBJECTS).map(|i| unique(&format!("user{i}"))).collect();
    let mut records = Vec::with_capacity(SUBJECTS * PER_SUBJECT);
    for i in 0..SUBJECTS * PER_SUBJECT {
        let (_, record) = sample_record(&subs[i % SUBJECTS], Some(&format!("sid-{i}")), t);
        store.save(&record).await.expect("save");
        records.push(record);
    }

    for record in &records {
        assert_eq!(
            store.load(&record.id).await.expect("load").as_ref(),
            Some(record)
        );
    }
    for sub in &subs {
        assert_eq!(
            store.list_by_sub(sub).await.expect("list").len(),
            PER_SUBJECT
        );
    }
    assert_eq!(
        store.delete_by_sub(&subs[0]).await.expect("delete"),
        PER_SUBJECT as u64
    );
    assert_eq!(
        store.list_by_sub(&subs[1]).await.expect("list").len(),
        PER_SUBJECT
    );
}

/// `touch` changes last-seen and idle expiry only: tokens saved by a
/// concurrent refresh must survive it.
pub async fn touch_updates_only_activity(store: Arc<dyn SessionStore>) {
    let t = now();
    let (_, mut record) = sample_record(&unique("alice"), None, t);
    store.save(&record).await.expect("save");
    // A refresh saves new tokens; a request that loaded the old record then touches.
    record.tokens.access_token = format!("at-new-{}", random_token(8)).into();
    record.version += 1;
    store.save(&record).await.expect("save refreshed");
    assert!(
        store
            .touch(&record.id, t + 5, t + 600)
            .await
            .expect("touch"),
        "touch of an existing session reports true"
    );
    let loaded = store
        .load(&record.id)
        .await
        .expect("load")
        .expect("present");
    assert_eq!(loaded.last_seen_at, t + 5);
    assert_eq!(loaded.idle_expires_at, t + 600);
    assert!(
        loaded.tokens == record.tokens,
        "touch must not undo a refresh"
    );
    assert_eq!(loaded.version, record.version);
    let unknown = SessionId::generate().hash();
    assert!(!store.touch(&unknown, t, t).await.expect("touch unknown"));
}

async fn present_shared(store: &dyn SessionStore, id: &SessionHash) -> Arc<SessionRecord> {
    store
        .load_shared(id)
        .await
        .expect("load_shared")
        .expect("present")
}

/// `load_shared` (the request path) returns what `load` does, and a copy
/// a request still holds never changes under it: later loads see a touch,
/// an overwrite and a delete, the held copy keeps what it had.
pub async fn shared_load_sees_every_write(store: Arc<dyn SessionStore>) {
    let t = now();
    let (_, mut record) = sample_record(&unique("alice"), Some(&unique("sid")), t);
    store.save(&record).await.expect("save");
    let held = present_shared(&*store, &record.id).await;
    assert_eq!(*held, record);
    assert!(held.tokens == record.tokens, "tokens differ from load's");

    assert!(
        store
            .touch(&record.id, t + 5, t + 600)
            .await
            .expect("touch")
    );
    let touched = present_shared(&*store, &record.id).await;
    assert_eq!(
        (touched.last_seen_at, touched.idle_expires_at),
        (t + 5, t + 600)
    );

    record.tokens.access_token = format!("at-new-{}", random_token(8)).into();
    record.version += 1;
    record.last_seen_at = t + 5;
    record.idle_expires_at = t + 600;
    store.save(&record).await.expect("overwrite");
    let saved = present_shared(&*store, &record.id).await;
    assert!(saved.tokens == record.tokens, "the overwrite is not seen");
    assert_eq!(
        (held.last_seen_at, held.version),
        (t, 1),
        "a held copy changed under its holder"
    );

    store.delete(&record.id).await.expect("delete");
    assert!(
        store
            .load_shared(&record.id)
            .await
            .expect("load_shared")
            .is_none()
    );
}

/// The version after a CAS save, read back.
async fn stored_version(store: &dyn SessionStore, id: &SessionHash) -> u64 {
    store
        .load(id)
        .await
        .expect("load")
        .expect("present")
        .version
}

pub async fn save_if_version_swaps_only_on_match(store: Arc<dyn SessionStore>) {
    let (_, mut record) = sample_record(&unique("alice"), None, now());
    assert!(
        !store
            .save_if_version(&record, 1)
            .await
            .expect("cas missing"),
        "CAS on a missing record must fail"
    );
    store.save(&record).await.expect("save");
    record.version = 2;
    record.tokens.access_token = format!("at-v2-{}", random_token(8)).into();
    assert!(store.save_if_version(&record, 1).await.expect("cas v1"));
    let loaded = store
        .load(&record.id)
        .await
        .expect("load")
        .expect("present");
    assert!(loaded.tokens == record.tokens);
    assert_eq!(loaded.version, 2);

    // A writer that read version 1 has lost: nothing changes.
    let mut stale = record.clone();
    stale.version = 2;
    stale.tokens.access_token = "at-stale".into();
    assert!(!store.save_if_version(&stale, 1).await.expect("cas stale"));
    let loaded = store
        .load(&record.id)
        .await
        .expect("load")
        .expect("present");
    assert_eq!(loaded.tokens.access_token, record.tokens.access_token);
    assert_eq!(stored_version(&*store, &record.id).await, 2);
}

pub async fn concurrent_save_if_version_has_one_winner(store: Arc<dyn SessionStore>) {
    let (_, record) = sample_record(&unique("alice"), None, now());
    store.save(&record).await.expect("save");
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let store = Arc::clone(&store);
            let mut r = record.clone();
            r.version = 2;
            r.tokens.access_token = format!("at-writer-{i}").into();
            tokio::spawn(async move { (i, store.save_if_version(&r, 1).await.expect("cas")) })
        })
        .collect();
    let mut winners = Vec::new();
    for t in tasks {
        let (i, won) = t.await.expect("join");
        if won {
            winners.push(i);
        }
    }
    assert_eq!(winners.len(), 1, "exactly one CAS must win: {winners:?}");
    let loaded = store
        .load(&record.id)
        .await
        .expect("load")
        .expect("present");
    assert_eq!(
        loaded.tokens.access_token.as_str(),
        format!("at-writer-{}", winners[0])
    );
}

pub async fn save_if_version_keeps_newer_activity(store: Arc<dyn SessionStore>) {
    let t = now();
    let (_, mut record) = sample_record(&unique("alice"), None, t);
    store.save(&record).await.expect("save");
    // A request touches the session while a refresh (holding the old copy) runs.
    assert!(
        store
            .touch(&record.id, t + 30, t + 3600)
            .await
            .expect("touch")
    );
    record.version = 2;
    assert!(store.save_if_version(&record, 1).await.expect("cas"));
    let loaded = store
        .load(&record.id)
        .await
        .expect("load")
        .expect("present");
    assert_eq!(loaded.last_seen_at, t + 30);
    assert_eq!(loaded.idle_expires_at, t + 3600);
    assert_eq!(loaded.version, 2);
}

pub async fn refresh_lease_is_exclusive_until_released(store: Arc<dyn SessionStore>) {
    let id = SessionId::generate().hash();
    let other = SessionId::generate().hash();
    let ttl = std::time::Duration::from_secs(30);
    let lease = store
        .acquire_refresh_lease(&id, ttl)
        .await
        .expect("acquire")
        .expect("free lease is granted");
    assert!(
        store
            .acquire_refresh_lease(&id, ttl)
            .await
            .expect("again")
            .is_none(),
        "a held lease is not granted twice"
    );
    let other_lease = store
        .acquire_refresh_lease(&other, ttl)
        .await
        .expect("other");
    assert!(other_lease.is_some(), "leases are per session");
    assert!(
        store
            .renew_refresh_lease(&id, &lease, ttl)
            .await
            .expect("renew")
    );

    // Releasing with a token that is not the holder's changes nothing.
    let forged = super::RefreshLease("not-the-holder".into());
    store
        .release_refresh_lease(&id, &forged)
        .await
        .expect("release forged");
    assert!(
        !store
            .renew_refresh_lease(&id, &forged, ttl)
            .await
            .expect("renew forged")
    );
    assert!(
        store
            .acquire_refresh_lease(&id, ttl)
            .await
            .expect("still held")
            .is_none()
    );

    store
        .release_refresh_lease(&id, &lease)
        .await
        .expect("release");
    assert!(
        store
            .acquire_refresh_lease(&id, ttl)
            .await
            .expect("after release")
            .is_some(),
        "a released lease can be taken"
    );
}

pub async fn concurrent_refresh_lease_has_one_holder(store: Arc<dyn SessionStore>) {
    let id = SessionId::generate().hash();
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let store = Arc::clone(&store);
            let id = id.clone();
            tokio::spawn(async move {
                store
                    .acquire_refresh_lease(&id, std::time::Duration::from_secs(30))
                    .await
                    .expect("acquire")
            })
        })
        .collect();
    let mut granted = 0;
    for t in tasks {
        if t.await.expect("join").is_some() {
            granted += 1;
        }
    }
    assert_eq!(
        granted, 1,
        "exactly one concurrent acquirer holds the lease"
    );
}

pub async fn expired_refresh_lease_can_be_taken_over(store: Arc<dyn SessionStore>) {
    let id = SessionId::generate().hash();
    let short = std::time::Duration::from_millis(300);
    let first = store
        .acquire_refresh_lease(&id, short)
        .await
        .expect("acquire")
        .expect("granted");
    // Poll until the TTL has run out (stores may round to their own clock).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let second = loop {
        if let Some(l) = store
            .acquire_refresh_lease(&id, std::time::Duration::from_secs(30))
            .await
            .expect("acquire after ttl")
        {
            break l;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "an expired lease must become available"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_ne!(first, second);
    // The old holder lost it: it can neither renew nor release the new lease.
    assert!(
        !store
            .renew_refresh_lease(&id, &first, short)
            .await
            .expect("renew lost")
    );
    store
        .release_refresh_lease(&id, &first)
        .await
        .expect("release lost");
    assert!(
        store
            .acquire_refresh_lease(&id, short)
            .await
            .expect("still held by second")
            .is_none()
    );
}

/// Back-channel logout replay protection: a `jti` is accepted once while
/// live, again only after its lifetime; `gc` drops dead ones.
pub async fn remember_jti_refuses_replay_until_expiry(store: Arc<dyn SessionStore>) {
    let now = now();
    let jti = unique("jti");
    let other = unique("jti");
    let remember = |jti: String, expires_at: UnixTime, at: UnixTime| {
        let store = Arc::clone(&store);
        async move {
            store
                .remember_jti(&jti, expires_at, at)
                .await
                .expect("remember_jti")
        }
    };
    assert!(remember(jti.clone(), now + 300, now).await, "first use");
    assert!(!remember(jti.clone(), now + 300, now + 10).await, "replay");
    assert!(remember(other.clone(), now + 300, now).await, "other jti");
    // After its lifetime the token is refused for age, so the jti may be reused.
    assert!(
        remember(jti.clone(), now + 900, now + 301).await,
        "after expiry"
    );
    assert!(!remember(jti, now + 900, now + 302).await, "live again");
    store.gc(now + 1000).await.expect("gc");
    assert!(remember(other, now + 1300, now + 1000).await, "after gc");
}

/// A back-channel logout whose delete failed forgets its `jti`: the
/// IdP's retry of the same token is accepted; other `jti`s are untouched.
pub async fn forgotten_jti_is_accepted_again(store: Arc<dyn SessionStore>) {
    let now = now();
    let (jti, other) = (unique("jti"), unique("jti"));
    for j in [&jti, &other] {
        assert!(
            store
                .remember_jti(j, now + 300, now)
                .await
                .expect("remember")
        );
    }
    store.forget_jti(&jti).await.expect("forget");
    store
        .forget_jti(&unique("never-seen"))
        .await
        .expect("forget unknown");
    assert!(
        store
            .remember_jti(&jti, now + 300, now)
            .await
            .expect("again"),
        "retry accepted"
    );
    assert!(
        !store
            .remember_jti(&other, now + 300, now)
            .await
            .expect("other"),
        "other still a replay"
    );
}

/// Callbacks racing on two replicas with one login state (an IdP that
/// accepts a code twice): exactly one may record the state as used.
pub async fn concurrent_remember_jti_has_one_winner(store: Arc<dyn SessionStore>) {
    const RACERS: usize = 20;
    let key = unique("login-state");
    let now = now();
    let barrier = Arc::new(tokio::sync::Barrier::new(RACERS));
    let tasks: Vec<_> = (0..RACERS)
        .map(|_| {
            let (store, key, barrier) = (Arc::clone(&store), key.clone(), Arc::clone(&barrier));
            tokio::spawn(async move {
                barrier.wait().await;
                store.remember_jti(&key, now + 600, now).await
            })
        })
        .collect();
    let mut winners = 0;
    for task in tasks {
        if task.await.expect("task").expect("remember_jti") {
            winners += 1;
        }
    }
    assert_eq!(winners, 1, "exactly one concurrent remember must win");
}
