//! Finding the request's session from its cookie and enforcing the idle and
//! absolute timeouts on every request.

use std::{borrow::Cow, sync::Arc};

use axum_extra::extract::{CookieJar, cookie::Cookie};
use http::{HeaderMap, header};

use super::ApiError;
use crate::{
    gateway::Shared,
    session::{SessionHash, SessionId, SessionRecord},
};

/// What the session cookie led to.
pub(crate) enum SessionLookup {
    /// No cookie, a malformed one, or an unknown id.
    None,
    /// The record existed but timed out; it has been deleted.
    Expired,
    /// Shared with the store's copy, if it keeps one (see
    /// `SessionStore::load_shared`).
    Active(Arc<SessionRecord>),
}

/// How often `last_seen_at` is written back: a write per request would make
/// the store the bottleneck; a few seconds of idle-timeout slack is harmless.
fn touch_interval(shared: &Shared) -> i64 {
    (shared.config.session.idle_timeout.as_secs() as i64 / 20).clamp(1, 60)
}

/// The hash of the session cookie in `headers`, chosen exactly as
/// [`CookieJar`] would (the last cookie of that name, percent-decoded) but
/// without parsing every other cookie into the jar.
pub(crate) fn session_cookie_hash(shared: &Shared, headers: &HeaderMap) -> Option<SessionHash> {
    session_cookie(&shared.config.session.cookie_name, headers)
}

fn session_cookie(name: &str, headers: &HeaderMap) -> Option<SessionHash> {
    let mut found: Option<Cow<'_, str>> = None;
    for pair in headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
    {
        // Only a pair with an escape needs decoding (its name may decode to
        // ours); the others are split and compared as they are.
        if pair.contains('%') {
            if let Ok(c) = Cookie::parse_encoded(pair)
                && c.name() == name
            {
                found = Some(Cow::Owned(c.value().to_string()));
            }
        } else if let Some((n, v)) = pair.split_once('=')
            // What `Cookie::parse` does with a pair that has nothing to decode.
            && n.trim() == name
        {
            found = Some(Cow::Borrowed(v.trim()));
        }
    }
    found.and_then(|v| SessionId::hash_of(&v))
}

pub(crate) async fn current_session(
    shared: &Shared,
    jar: &CookieJar,
) -> Result<SessionLookup, ApiError> {
    let hash = jar
        .get(&shared.config.session.cookie_name)
        .and_then(|c| SessionId::parse(c.value()))
        .map(|id| id.hash());
    current_session_by_hash(shared, hash).await
}

/// [`current_session`] for a cookie already hashed (see [`session_cookie_hash`]).
pub(crate) async fn current_session_by_hash(
    shared: &Shared,
    hash: Option<SessionHash>,
) -> Result<SessionLookup, ApiError> {
    let Some(hash) = hash else {
        return Ok(SessionLookup::None);
    };
    let Some(mut record) = shared.store.load_shared(&hash).await? else {
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
        let record = Arc::make_mut(&mut record);
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
    Ok(SessionLookup::Active(record))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    /// The same cookie as `CookieJar` picks, for duplicates, escapes and noise.
    #[test]
    fn session_cookie_is_found_as_the_jar_finds_it() {
        let a = "a".repeat(43);
        let b = "b".repeat(43);
        let cases: Vec<Vec<String>> = vec![
            vec![format!("portcullis={a}")],
            vec![format!("theme=dark; portcullis={a}; x=1")],
            vec![format!("portcullis={a}; portcullis={b}")],
            vec![format!("portcullis={a}"), format!("portcullis={b}")],
            vec![format!("portc%75llis={b}; portcullis={a}")],
            vec![format!("portcullis={a}; portc%75llis={b}")],
            vec![format!(" portcullis = {a} ")],
            vec![format!("xportcullis={a}; portcullisx={b}")],
            vec!["portcullis=short".to_string()],
            vec![format!("portcullis; =x; portcullis={a}")],
            vec![format!("portcullis=\"{a}\"")],
            vec![format!("portcullis={a}; portcullis")],
            vec![format!("portcullis={a}=")],
            vec!["theme=dark".to_string()],
            vec![],
        ];
        for values in cases {
            let mut h = HeaderMap::new();
            for v in &values {
                h.append(header::COOKIE, HeaderValue::from_str(v).unwrap());
            }
            let jar = CookieJar::from_headers(&h)
                .get("portcullis")
                .and_then(|c| SessionId::parse(c.value()))
                .map(|id| id.hash());
            let ours = session_cookie("portcullis", &h);
            assert_eq!(ours, jar, "{values:?}");
        }
    }
}
