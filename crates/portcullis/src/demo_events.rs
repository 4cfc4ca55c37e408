//! The demo's event stream: what the gateway did for each session (login,
//! code exchange, token attached, refresh, logout), for `portcullis demo`'s
//! page to show as a timeline.
//!
//! Demo only, by construction: no config key creates a [`DemoEvents`]; only
//! [`crate::gateway::GatewayBuilder::demo_events`] sets it, which `serve`
//! never calls. Without it the gateway pays one `Option` check where an
//! event would be emitted, nothing else.
//!
//! Redacted by construction too: an event is built from expiry times,
//! roles, paths and at most an 8-hex-digit prefix of a token's SHA-256 (to
//! show that a token changed), never from a token's text.

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use serde::Serialize;
use tokio::sync::broadcast;

use crate::{
    session::{SessionHash, hex_sha256},
    time::UnixTime,
};

/// Events kept per session, so a page loaded after the login callback still
/// sees the login; older ones give way.
const HISTORY: usize = 100;
/// Sessions remembered; the least recently created give way.
const SESSIONS: usize = 256;
/// Live events buffered per subscriber before it skips ahead.
const LIVE_BUFFER: usize = 256;

/// Why a token was refreshed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RefreshReason {
    /// Before an API call, because the token would expire within `session.refresh_before`.
    Proactive,
    /// `/auth/me` found the token already expired.
    Expired,
    /// The upstream answered 401 with the current token.
    UpstreamRejected,
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// `POST /auth/logout`.
    Logout,
    /// The IdP's back-channel logout token named it.
    BackchannelLogout,
    /// Idle or absolute timeout.
    Expired,
    /// The IdP refused the refresh token.
    RefreshRefused,
}

/// One thing the gateway did; never holds token text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EventKind {
    /// `/auth/login` sent the browser to the IdP (reported at the callback,
    /// when the session it led to exists).
    LoginRedirect,
    /// The authorization code was exchanged for tokens at the IdP.
    CodeExchanged {
        access_token: Option<TokenInfo>,
        refresh_token: bool,
        id_token: bool,
    },
    /// The session was created and its cookie set.
    SessionCreated {
        sub: String,
        roles: Vec<String>,
        idle_expires_at: UnixTime,
        expires_at: UnixTime,
    },
    /// An API call went upstream with the session's access token.
    TokenAttached {
        method: String,
        path: String,
        access_token: Option<TokenInfo>,
    },
    /// The upstream answered 401; the gateway refreshes once and retries.
    UpstreamRejected { method: String, path: String },
    /// The access token was refreshed at the IdP.
    Refreshed {
        reason: RefreshReason,
        access_token: Option<TokenInfo>,
        refresh_token_rotated: bool,
        refresh_count: u64,
    },
    /// The session is gone.
    SessionEnded { reason: EndReason },
}

/// What may be said about an access token: when it expires and a short
/// fingerprint, never the token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenInfo {
    /// The first 8 hex digits of the token's SHA-256: tells tokens apart.
    pub fingerprint: String,
    pub expires_at: Option<UnixTime>,
}

impl TokenInfo {
    pub fn of(token: &str, expires_at: Option<UnixTime>) -> Self {
        Self {
            fingerprint: fingerprint(token),
            expires_at,
        }
    }
}

/// The first 8 hex digits of `token`'s SHA-256.
pub fn fingerprint(token: &str) -> String {
    hex_sha256(token.as_bytes())[..8].to_string()
}

/// An event as the stream carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DemoEvent {
    /// Increasing across the process: the page drops what it has seen.
    pub seq: u64,
    pub at: UnixTime,
    #[serde(flatten)]
    pub kind: EventKind,
}

/// The live feed: events of every session, filtered per subscriber.
type Live = (SessionHash, DemoEvent);

#[derive(Default)]
struct SessionLog {
    events: VecDeque<DemoEvent>,
    refresh_count: u64,
    sid: Option<String>,
}

#[derive(Default)]
struct Logs {
    by_session: HashMap<SessionHash, SessionLog>,
    /// Creation order, for eviction.
    order: VecDeque<SessionHash>,
}

/// The event sink the demo gives the gateway, and the page's source.
pub struct DemoEvents {
    live: broadcast::Sender<Live>,
    logs: Mutex<Logs>,
    seq: AtomicU64,
    idp_logout_url: Option<String>,
}

impl Default for DemoEvents {
    fn default() -> Self {
        Self::new(None)
    }
}

impl DemoEvents {
    /// `idp_logout_url`: a page of the IdP that ends an IdP session, given
    /// as `?sid=`; shown to the page as "log out at the IdP".
    pub fn new(idp_logout_url: Option<String>) -> Self {
        Self {
            live: broadcast::channel(LIVE_BUFFER).0,
            logs: Mutex::default(),
            seq: AtomicU64::new(1),
            idp_logout_url,
        }
    }

    fn logs(&self) -> std::sync::MutexGuard<'_, Logs> {
        self.logs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Record `kind` for `session` at `at` and tell its subscribers.
    pub fn emit(&self, session: &SessionHash, at: UnixTime, kind: EventKind) {
        let mut logs = self.logs();
        let log = logs.entry(session);
        if let EventKind::Refreshed { refresh_count, .. } = &kind {
            log.refresh_count = *refresh_count;
        }
        let event = DemoEvent {
            seq: self.seq.fetch_add(1, Ordering::Relaxed),
            at,
            kind,
        };
        if log.events.len() == HISTORY {
            log.events.pop_front();
        }
        log.events.push_back(event.clone());
        // Under the lock, so a subscriber sees each event once: in its
        // history snapshot or live. No subscriber is no error.
        let _ = self.live.send((session.clone(), event));
    }

    /// A refresh of `session` happened: its count so far, this one included.
    pub fn next_refresh_count(&self, session: &SessionHash) -> u64 {
        self.logs()
            .by_session
            .get(session)
            .map_or(0, |l| l.refresh_count)
            + 1
    }

    /// The refreshes `session` has had.
    pub fn refresh_count(&self, session: &SessionHash) -> u64 {
        self.logs()
            .by_session
            .get(session)
            .map_or(0, |l| l.refresh_count)
    }

    /// Remember the IdP session id of `session` (a logout token may name only that).
    pub fn set_sid(&self, session: &SessionHash, sid: Option<String>) {
        self.logs().entry(session).sid = sid;
    }

    /// The sessions known to belong to IdP session `sid`.
    pub fn sessions_of_sid(&self, sid: &str) -> Vec<SessionHash> {
        self.logs()
            .by_session
            .iter()
            .filter(|(_, l)| l.sid.as_deref() == Some(sid))
            .map(|(h, _)| h.clone())
            .collect()
    }

    /// `session`'s events so far and a receiver of what comes next (of
    /// every session: filter with [`Self::is_for`]).
    pub fn subscribe(
        &self,
        session: &SessionHash,
    ) -> (
        Vec<DemoEvent>,
        broadcast::Receiver<(SessionHash, DemoEvent)>,
    ) {
        let logs = self.logs();
        let history = logs
            .by_session
            .get(session)
            .map(|l| l.events.iter().cloned().collect())
            .unwrap_or_default();
        (history, self.live.subscribe())
    }

    /// The IdP logout page for IdP session `sid`, if the demo has one.
    pub fn idp_logout_url(&self, sid: &str) -> Option<String> {
        let base = self.idp_logout_url.as_deref()?;
        let mut url = url::Url::parse(base).ok()?;
        url.query_pairs_mut().append_pair("sid", sid);
        Some(url.into())
    }
}

impl Logs {
    fn entry(&mut self, session: &SessionHash) -> &mut SessionLog {
        if !self.by_session.contains_key(session) {
            while self.order.len() >= SESSIONS {
                if let Some(old) = self.order.pop_front() {
                    self.by_session.remove(&old);
                }
            }
            self.order.push_back(session.clone());
        }
        self.by_session.entry(session.clone()).or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_is_per_session_and_bounded() {
        let events = DemoEvents::default();
        let (a, b) = (
            crate::session::SessionId::generate().hash(),
            crate::session::SessionId::generate().hash(),
        );
        for i in 0..(HISTORY as i64 + 5) {
            events.emit(&a, i, EventKind::LoginRedirect);
        }
        events.emit(&b, 0, EventKind::LoginRedirect);
        let (history_a, _) = events.subscribe(&a);
        let (history_b, _) = events.subscribe(&b);
        assert_eq!(history_a.len(), HISTORY);
        assert_eq!(history_a[0].at, 5);
        assert_eq!(history_b.len(), 1);
    }

    #[test]
    fn sessions_are_bounded_oldest_first() {
        let events = DemoEvents::default();
        let first = crate::session::SessionId::generate().hash();
        events.emit(&first, 0, EventKind::LoginRedirect);
        for _ in 0..SESSIONS {
            let h = crate::session::SessionId::generate().hash();
            events.emit(&h, 0, EventKind::LoginRedirect);
        }
        assert!(events.subscribe(&first).0.is_empty());
        assert_eq!(events.logs().by_session.len(), SESSIONS);
    }

    #[test]
    fn refresh_counts_and_idp_logout_url() {
        let events = DemoEvents::new(Some("http://127.0.0.1:1/logout".into()));
        let s = crate::session::SessionId::generate().hash();
        assert_eq!(events.next_refresh_count(&s), 1);
        events.emit(
            &s,
            1,
            EventKind::Refreshed {
                reason: RefreshReason::Proactive,
                access_token: None,
                refresh_token_rotated: true,
                refresh_count: 1,
            },
        );
        assert_eq!(events.refresh_count(&s), 1);
        assert_eq!(
            events.idp_logout_url("a b").as_deref(),
            Some("http://127.0.0.1:1/logout?sid=a+b")
        );
        assert_eq!(fingerprint("x").len(), 8);
    }
}
