//! Finding the request's session from its cookie and enforcing the idle and
//! absolute timeouts on every request.

use std::sync::Arc;

use http::HeaderMap;

use crate::{
    api_error::ApiError,
    cookies,
    session::{SessionHash, SessionId, SessionRecord},
    state::Shared,
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
pub(crate) fn touch_interval(shared: &Shared) -> i64 {
    (shared.config.session.idle_timeout.as_secs() as i64 / 20).clamp(1, 60)
}

/// What a user who sent two session cookies is told: the second one may
/// have been set by another site under the same domain, and a new login
/// clears it (`/auth/login` and `/auth/callback` accept such a request, see
/// `http::pipeline::observe` and `cookies::planted_copy_removals`).
const AMBIGUOUS_SESSION: &str = "the request carries two different session cookies \
    (another site under this domain may have set one): log in again";

/// The hash of the session cookie in `headers`: the cookie named exactly
/// `session.cookie_name` (see [`cookies::find_exact`]); `Ok(None)` when
/// there is none or it is no well-formed id. Values that are no well-formed
/// id are ignored; two different well-formed ones are refused (400), never
/// guessed.
pub(crate) fn session_cookie_hash(
    shared: &Shared,
    headers: &HeaderMap,
) -> Result<Option<SessionHash>, ApiError> {
    session_cookie(&shared.config.session.cookie_name, headers)
}

fn session_cookie(name: &str, headers: &HeaderMap) -> Result<Option<SessionHash>, ApiError> {
    let value = cookies::find_exact(headers, name, "session", SessionId::well_formed)
        .map_err(|_| ApiError::BadRequest(AMBIGUOUS_SESSION.into()))?;
    Ok(value.and_then(|v| SessionId::hash_of(&v)))
}

/// The hashes of every distinct well-formed session cookie in `headers`
/// (for the login callback, which deletes them all; a request may carry a
/// planted one beside the user's own).
pub(crate) fn all_session_cookie_hashes(shared: &Shared, headers: &HeaderMap) -> Vec<SessionHash> {
    cookies::all_exact(
        headers,
        &shared.config.session.cookie_name,
        SessionId::well_formed,
    )
    .iter()
    .filter_map(|v| SessionId::hash_of(v))
    .collect()
}

pub(crate) async fn current_session(
    shared: &Shared,
    headers: &HeaderMap,
) -> Result<SessionLookup, ApiError> {
    let hash = session_cookie_hash(shared, headers)?;
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
        shared.demo_event(&hash, |_| crate::demo_events::EventKind::SessionEnded {
            reason: crate::demo_events::EndReason::Expired,
        });
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
        // The request span of `http::pipeline::observe`; every later line of the request carries it.
        tracing::Span::current().record("user", record.sub.as_str());
    }
    Ok(SessionLookup::Active(record))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderValue, header};

    fn headers(values: &[String]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(header::COOKIE, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn hash(v: &str) -> Option<SessionHash> {
        SessionId::hash_of(v)
    }

    /// Exact names only; the same value twice is one cookie; noise is skipped.
    #[test]
    fn session_cookie_is_found_by_its_exact_name() {
        let a = "a".repeat(43);
        let b = "b".repeat(43);
        let found: Vec<(Vec<String>, Option<SessionHash>)> = vec![
            (vec![format!("portcullis={a}")], hash(&a)),
            (vec![format!("theme=dark; portcullis={a}; x=1")], hash(&a)),
            (vec![format!("portcullis={a}; portcullis={a}")], hash(&a)),
            (
                vec![format!("portcullis={a}"), format!("portcullis={a}")],
                hash(&a),
            ),
            // Look-alikes are not ours: they neither count nor conflict.
            (vec![format!("portc%75llis={b}; portcullis={a}")], hash(&a)),
            (vec![format!("portcullis={a}; portc%75llis={b}")], hash(&a)),
            (vec![format!("Portcullis={b}; portcullis={a}")], hash(&a)),
            (vec![format!("portc%75llis={b}")], None),
            (vec![format!(" portcullis = {a} ")], hash(&a)),
            (vec![format!("\tportcullis={a}")], hash(&a)),
            (vec![format!("xportcullis={a}; portcullisx={b}")], None),
            (vec!["portcullis=short".to_string()], None),
            (vec![format!("portcullis; =x; portcullis={a}")], hash(&a)),
            (vec![format!("portcullis=\"{a}\"")], None),
            (vec![format!("portcullis={a}; portcullis")], hash(&a)),
            (vec![format!("portcullis={a}=")], None),
            // A value escape still decodes, as before.
            (vec![format!("portcullis=%61{}", &a[1..])], hash(&a)),
            (vec!["theme=dark".to_string()], None),
            (vec![], None),
        ];
        for (values, want) in found {
            let got = session_cookie("portcullis", &headers(&values));
            assert_eq!(got.ok(), Some(want), "{values:?}");
        }
    }

    #[test]
    fn two_different_session_cookies_are_ambiguous() {
        let a = "a".repeat(43);
        let b = "b".repeat(43);
        for values in [
            vec![format!("portcullis={a}; portcullis={b}")],
            vec![format!("portcullis={a}"), format!("portcullis={b}")],
            vec![format!("portcullis=%61{}; portcullis={b}", &a[1..])],
        ] {
            let got = session_cookie("portcullis", &headers(&values));
            assert!(
                matches!(&got, Err(ApiError::BadRequest(m)) if m.contains("log in again")),
                "{values:?}: {:?}",
                got.ok()
            );
        }
    }

    /// A sibling subdomain's `portcullis=x; Domain=.example.com` is sent
    /// beside the user's own cookie: not being a well-formed id, it is
    /// ignored rather than answered with 400 on every request.
    #[test]
    fn planted_malformed_session_cookie_is_ignored() {
        let a = "a".repeat(43);
        for values in [
            vec![format!("portcullis={a}; portcullis=")],
            vec![format!("portcullis=x; portcullis={a}")],
            vec![format!("portcullis={a}"), "portcullis=deleted".to_string()],
            vec![format!("portcullis={a}; portcullis={}", "a".repeat(44))],
        ] {
            let got = session_cookie("portcullis", &headers(&values));
            assert_eq!(got.ok(), Some(hash(&a)), "{values:?}");
        }
    }
}
