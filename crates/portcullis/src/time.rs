//! Wall-clock time as unix seconds, behind a trait so tests can move time.

use std::sync::{
    Arc,
    atomic::{AtomicI64, Ordering},
};

/// Seconds since the unix epoch.
pub type UnixTime = i64;

/// Source of the current time. The gateway never calls `SystemTime::now` directly.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> UnixTime;
}

/// The real clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> UnixTime {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0)
    }
}

/// A clock tests can set and advance.
#[derive(Debug, Clone, Default)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    pub fn new(now: UnixTime) -> Self {
        Self(Arc::new(AtomicI64::new(now)))
    }
    pub fn set(&self, now: UnixTime) {
        self.0.store(now, Ordering::SeqCst);
    }
    pub fn advance(&self, secs: i64) {
        self.0.fetch_add(secs, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> UnixTime {
        self.0.load(Ordering::SeqCst)
    }
}

/// RFC 3339 (UTC, seconds) rendering used in JSON bodies.
pub fn rfc3339(t: UnixTime) -> String {
    let st = std::time::UNIX_EPOCH + std::time::Duration::from_secs(t.max(0) as u64);
    humantime::format_rfc3339_seconds(st).to_string()
}
