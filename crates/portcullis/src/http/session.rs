//! Finding the request's session from its cookie and enforcing the idle and
//! absolute timeouts on every request.

use axum_extra::extract::CookieJar;

use super::ApiError;
use crate::{
    gateway::Shared,
    session::{SessionId, SessionRecord},
};

/// What the session cookie led to.
pub(crate) enum SessionLookup {
    /// No cookie, a malformed one, or an unknown id.
    None,
    /// The record existed but timed out; it has been deleted.
    Expired,
    Active(Box<SessionRecord>),
}

/// How often `last_seen_at` is written back: a write per request would make
/// the store the bottleneck; a few seconds of idle-timeout slack is harmless.
fn touch_interval(shared: &Shared) -> i64 {
    (shared.config.session.idle_timeout.as_secs() as i64 / 20).clamp(1, 60)
}

pub(crate) async fn current_session(
    shared: &Shared,
    jar: &CookieJar,
) -> Result<SessionLookup, ApiError> {
    let Some(id) = jar
        .get(&shared.config.session.cookie_name)
        .and_then(|c| SessionId::parse(c.value()))
    else {
        return Ok(SessionLookup::None);
    };
    let hash = id.hash();
    let Some(mut record) = shared.store.load(&hash).await? else {
        return Ok(SessionLookup::None);
    };
    let now = shared.clock.now();
    if record.is_expired(now) {
        shared.store.delete(&hash).await?;
        tracing::info!(session = hash.short(), "session expired");
        return Ok(SessionLookup::Expired);
    }
    if now - record.last_seen_at >= touch_interval(shared) {
        let idle = shared.config.session.idle_timeout.as_secs() as i64;
        record.last_seen_at = now;
        record.idle_expires_at = (now + idle).min(record.expires_at);
        shared
            .store
            .touch(&hash, record.last_seen_at, record.idle_expires_at)
            .await?;
    }
    if shared.config.server.log_user {
        // The request span of `metrics::track`; every later line of the request carries it.
        tracing::Span::current().record("user", record.sub.as_str());
    }
    Ok(SessionLookup::Active(Box::new(record)))
}
