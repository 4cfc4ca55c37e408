//! A session store that fails on command: a [`MemoryStore`] whose writes
//! (delete, save) answer `StoreError::Unavailable` while the test says so.
//! For the promises that hold while the store is down.

#![allow(dead_code)]

use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use async_trait::async_trait;
use portcullis::{
    session::{
        MemoryStore, RefreshLease, RefreshLeases, ReplayGuard, SessionHash, SessionRecord,
        SessionRecords, StoreError, StoreUpkeep,
    },
    time::UnixTime,
};

#[derive(Default)]
pub struct FlakyStore {
    inner: MemoryStore,
    deletes_fail: AtomicBool,
    saves_fail: AtomicBool,
}

impl FlakyStore {
    pub fn new() -> Self {
        Self::default()
    }
    /// `delete`, `delete_by_sub` and `delete_by_sid` fail while on.
    pub fn fail_deletes(&self, on: bool) {
        self.deletes_fail.store(on, Ordering::SeqCst);
    }
    /// `save` and `save_if_version` fail while on.
    pub fn fail_saves(&self, on: bool) {
        self.saves_fail.store(on, Ordering::SeqCst);
    }
    fn check(flag: &AtomicBool) -> Result<(), StoreError> {
        match flag.load(Ordering::SeqCst) {
            true => Err(StoreError::Unavailable("flaky store: down".into())),
            false => Ok(()),
        }
    }
}

#[async_trait]
impl SessionRecords for FlakyStore {
    async fn load(&self, id: &SessionHash) -> Result<Option<SessionRecord>, StoreError> {
        self.inner.load(id).await
    }

    async fn save(&self, record: &SessionRecord) -> Result<(), StoreError> {
        Self::check(&self.saves_fail)?;
        self.inner.save(record).await
    }

    async fn touch(
        &self,
        id: &SessionHash,
        last_seen_at: UnixTime,
        idle_expires_at: UnixTime,
    ) -> Result<bool, StoreError> {
        self.inner.touch(id, last_seen_at, idle_expires_at).await
    }

    async fn delete(&self, id: &SessionHash) -> Result<bool, StoreError> {
        Self::check(&self.deletes_fail)?;
        self.inner.delete(id).await
    }

    async fn delete_by_sub(&self, sub: &str) -> Result<u64, StoreError> {
        Self::check(&self.deletes_fail)?;
        self.inner.delete_by_sub(sub).await
    }

    async fn delete_by_sid(&self, sid: &str) -> Result<u64, StoreError> {
        Self::check(&self.deletes_fail)?;
        self.inner.delete_by_sid(sid).await
    }

    async fn list_by_sub(&self, sub: &str) -> Result<Vec<SessionRecord>, StoreError> {
        self.inner.list_by_sub(sub).await
    }

    async fn save_if_version(
        &self,
        record: &SessionRecord,
        expected_version: u64,
    ) -> Result<bool, StoreError> {
        Self::check(&self.saves_fail)?;
        self.inner.save_if_version(record, expected_version).await
    }
}

#[async_trait]
impl ReplayGuard for FlakyStore {
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
impl RefreshLeases for FlakyStore {
    async fn acquire_refresh_lease(
        &self,
        id: &SessionHash,
        ttl: Duration,
    ) -> Result<Option<RefreshLease>, StoreError> {
        self.inner.acquire_refresh_lease(id, ttl).await
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
impl StoreUpkeep for FlakyStore {
    async fn gc(&self, now: UnixTime) -> Result<u64, StoreError> {
        self.inner.gc(now).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }

    async fn count(&self) -> Result<Option<u64>, StoreError> {
        self.inner.count().await
    }
}
