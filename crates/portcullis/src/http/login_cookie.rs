//! Logins in flight, kept in the browser: the login cookie holds the newest
//! [`MAX_PENDING`] pending logins (state, nonce, PKCE verifier, return_to,
//! start time), sealed with AES-256-GCM, so an anonymous `GET /auth/login`
//! leaves nothing on the server (issue 16: a login flood cannot grow state).
//!
//! The cookie is sealed by a [`Keyring`] derived from `session.encryption_keys`
//! for this purpose only (HKDF, own key ids) and under its own associated data,
//! so a login cookie never opens as a session record nor the other way round.
//! Without encryption keys a random per-gateway key seals it: a login must then
//! finish in the process that started it (the config requires keys for the
//! shared stores in the prod profile).
//!
//! Single use: the callback removes the entry it used from the cookie, and
//! [`UsedStates`] remembers claimed states in this process (bounded) so a
//! racing or replayed callback with a copy of the cookie never reaches the IdP.

use std::{
    collections::{HashSet, VecDeque},
    sync::{Mutex, PoisonError},
};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{
    config::Secret,
    oidc::{LoginState, Nonce, PkceVerifier},
    session::seal::{Keyring, SealError},
    time::UnixTime,
};

/// Lifetime of a login in flight (cookie Max-Age and the start time check), seconds.
pub(crate) const LOGIN_TTL: i64 = 600;
/// Pending logins one browser keeps (logins started in several tabs); older ones drop out.
pub(crate) const MAX_PENDING: usize = 6;
/// Longest `return_to` we keep (bytes), so [`MAX_PENDING`] short ones or four
/// of this length fit in one cookie.
/// Could `value` be a login cookie this gateway sealed (URL-safe base64 that
/// fits a cookie)? Anything else is noise planted beside it, never a rival.
pub(crate) fn well_formed(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 4096
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

pub(crate) const MAX_RETURN_TO: usize = 512;
/// Longest cookie value we set or open. Browsers keep name + value up to 4096
/// bytes; this leaves room for the longest name (`__Host-` + session cookie + `-login`).
pub(crate) const MAX_VALUE_LEN: usize = 3800;
/// Claimed states remembered per process (about 100 bytes each).
const MAX_USED_STATES: usize = 10_000;

/// HKDF info for the cookie key: a login cookie key is never a session key.
const KEY_PURPOSE: &[u8] = b"portcullis login cookie key v1";
/// Associated data of every login cookie (session records use `portcullis/session/<id>`).
const AAD: &[u8] = b"portcullis/login-cookie/v1";

/// One login in flight. Short field names: the cookie is size-limited.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PendingLogin {
    #[serde(rename = "s")]
    pub state: LoginState,
    #[serde(rename = "n")]
    pub nonce: Nonce,
    #[serde(rename = "v")]
    pub pkce_verifier: PkceVerifier,
    /// Same-origin path to return to after login.
    #[serde(rename = "r")]
    pub return_to: String,
    #[serde(rename = "t")]
    pub created_at: UnixTime,
}

impl PendingLogin {
    pub fn expires_at(&self) -> UnixTime {
        self.created_at.saturating_add(LOGIN_TTL)
    }
}

impl std::fmt::Debug for PendingLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingLogin")
            .field("return_to", &self.return_to)
            .field("created_at", &self.created_at)
            .finish_non_exhaustive()
    }
}

/// Why a login cookie was refused. Messages never contain cookie content.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum LoginCookieError {
    #[error("login cookie is too long")]
    TooLong,
    #[error("login cookie is malformed")]
    Malformed,
    #[error("login cookie was not sealed by this deployment or was tampered with")]
    Forged,
}

/// Seals and opens login cookies, and remembers which states were used.
pub(crate) struct LoginCookies {
    keyring: Keyring,
    used: Mutex<UsedStates>,
}

impl std::fmt::Debug for LoginCookies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginCookies")
            .field("keyring", &self.keyring)
            .finish_non_exhaustive()
    }
}

impl LoginCookies {
    /// Keys derived from `session.encryption_keys`, or a random per-gateway key without any.
    pub fn new(session_keys: &[Secret]) -> Result<Self, SealError> {
        let keyring = if session_keys.is_empty() {
            Keyring::random()?
        } else {
            Keyring::derived_from_secrets(session_keys, KEY_PURPOSE)?
        };
        Ok(Self {
            keyring,
            used: Mutex::default(),
        })
    }

    /// The cookie value for `logins` (oldest first): the newest [`MAX_PENDING`]
    /// that fit in [`MAX_VALUE_LEN`]. `None` when `logins` is empty.
    pub fn seal(&self, logins: &[PendingLogin]) -> Result<Option<String>, SealError> {
        let mut keep = &logins[logins.len().saturating_sub(MAX_PENDING)..];
        while !keep.is_empty() {
            let json = serde_json::to_vec(keep).map_err(|_| SealError::Encrypt)?;
            let value = URL_SAFE_NO_PAD.encode(self.keyring.seal(AAD, &json)?);
            if value.len() <= MAX_VALUE_LEN {
                return Ok(Some(value));
            }
            // Too long for one cookie: the oldest tab's login gives way.
            keep = &keep[1..];
        }
        Ok(None)
    }

    /// The logins in a cookie `value`, oldest first, without those expired at `now`.
    pub fn open(&self, value: &str, now: UnixTime) -> Result<Vec<PendingLogin>, LoginCookieError> {
        if value.len() > MAX_VALUE_LEN {
            return Err(LoginCookieError::TooLong);
        }
        let sealed = URL_SAFE_NO_PAD
            .decode(value)
            .map_err(|_| LoginCookieError::Malformed)?;
        let json = self.keyring.open(AAD, &sealed).map_err(|e| match e {
            SealError::Malformed => LoginCookieError::Malformed,
            _ => LoginCookieError::Forged,
        })?;
        // Sealed by us, so well-formed unless the format changed between versions.
        let mut logins: Vec<PendingLogin> =
            serde_json::from_slice(&json).map_err(|_| LoginCookieError::Malformed)?;
        logins.retain(|l| l.expires_at() > now && l.created_at <= now.saturating_add(LOGIN_TTL));
        let excess = logins.len().saturating_sub(MAX_PENDING);
        logins.drain(..excess);
        Ok(logins)
    }

    /// Take the login for `state` out of `logins` (constant-time comparison).
    pub fn take(logins: &mut Vec<PendingLogin>, state: &str) -> Option<PendingLogin> {
        let pos = logins.iter().position(|l| l.state.matches(state))?;
        Some(logins.remove(pos))
    }

    /// Claim `login`'s state for one callback in this process: `false` if it
    /// was claimed before (a racing or replayed callback).
    pub fn claim(&self, login: &PendingLogin, now: UnixTime) -> bool {
        self.used
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .claim(login.state.as_str(), login.expires_at(), now)
    }
}

/// States of callbacks handled in this process, until their login would have
/// expired anyway, at most [`MAX_USED_STATES`] (a flood of callbacks evicts
/// the oldest; their cookie entries are consumed and codes are single use at
/// the IdP, so this only has to catch races and quick replays).
#[derive(Default)]
struct UsedStates {
    seen: HashSet<[u8; 32]>,
    order: VecDeque<([u8; 32], UnixTime)>,
}

impl UsedStates {
    fn claim(&mut self, state: &str, expires_at: UnixTime, now: UnixTime) -> bool {
        while let Some(&(hash, exp)) = self.order.front() {
            if exp > now && self.order.len() < MAX_USED_STATES {
                break;
            }
            self.order.pop_front();
            self.seen.remove(&hash);
        }
        let hash: [u8; 32] = Sha256::digest(state.as_bytes()).into();
        if !self.seen.insert(hash) {
            return false;
        }
        self.order.push_back((hash, expires_at));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NOW: UnixTime = 1_800_000_000;

    fn cookies(key: &str) -> LoginCookies {
        LoginCookies::new(&[Secret::new(key)]).expect("keys")
    }

    fn key() -> String {
        crate::session::random_key_base64()
    }

    fn pending(i: usize, return_to: &str) -> PendingLogin {
        PendingLogin {
            state: LoginState::random(),
            nonce: Nonce::random(),
            pkce_verifier: PkceVerifier::random(),
            return_to: return_to.to_string(),
            created_at: NOW + i as i64,
        }
    }

    #[test]
    fn round_trip_keeps_the_newest_and_drops_expired() {
        let c = cookies(&key());
        let logins: Vec<_> = (0..MAX_PENDING + 2).map(|i| pending(i, "/a")).collect();
        let value = c.seal(&logins).expect("seal").expect("value");
        let opened = c.open(&value, NOW + 10).expect("open");
        assert_eq!(opened, logins[2..]);
        // At NOW + LOGIN_TTL + 2 the logins started at NOW, +1 and +2 are over.
        let later = c.open(&value, NOW + LOGIN_TTL + 2).expect("open");
        assert_eq!(later, logins[3..]);
        assert!(
            c.open(&value, NOW + 2 * LOGIN_TTL)
                .expect("open")
                .is_empty()
        );
    }

    #[test]
    fn the_longest_cookie_fits_in_4kb() {
        let c = cookies(&key());
        // `"` doubles in JSON: the worst case for a return_to of the maximum length.
        for rt in ["/".repeat(MAX_RETURN_TO), format!("/{}", "\"".repeat(511))] {
            let logins: Vec<_> = (0..MAX_PENDING).map(|i| pending(i, &rt)).collect();
            let value = c.seal(&logins).expect("seal").expect("value");
            assert!(value.len() <= MAX_VALUE_LEN);
            let kept = c.open(&value, NOW).expect("open");
            assert!(kept.len() >= 2, "the newest logins stay: {}", kept.len());
            assert_eq!(kept.last(), logins.last());
        }
        let plain: Vec<_> = (0..MAX_PENDING)
            .map(|i| pending(i, &"/".repeat(MAX_RETURN_TO)))
            .collect();
        let value = c.seal(&plain).expect("seal").expect("value");
        assert_eq!(c.open(&value, NOW).expect("open").len(), 4);
    }

    #[test]
    fn a_session_key_ring_does_not_open_a_login_cookie() {
        let k = key();
        let c = cookies(&k);
        let value = c.seal(&[pending(0, "/")]).expect("seal").expect("value");
        let sealed = URL_SAFE_NO_PAD.decode(&value).expect("base64");
        let session_ring = Keyring::from_secrets(&[Secret::new(k)]).expect("ring");
        assert!(matches!(
            session_ring.open(AAD, &sealed),
            Err(SealError::UnknownKey(_))
        ));
        // And a session-style sealed value does not open as a login cookie.
        let record = session_ring.seal(AAD, b"[]").expect("seal");
        assert_eq!(
            c.open(&URL_SAFE_NO_PAD.encode(record), NOW),
            Err(LoginCookieError::Forged)
        );
    }

    #[test]
    fn a_state_is_claimed_once_and_the_memory_is_bounded() {
        let mut used = UsedStates::default();
        assert!(used.claim("a", NOW + 10, NOW));
        assert!(!used.claim("a", NOW + 10, NOW + 1));
        // After its login expired the record goes (the cookie entry is refused anyway).
        assert!(used.claim("a", NOW + 20, NOW + 10));
        for i in 0..MAX_USED_STATES + 10 {
            used.claim(&i.to_string(), NOW + 600, NOW);
        }
        assert!(used.order.len() <= MAX_USED_STATES && used.seen.len() <= MAX_USED_STATES);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, .. ProptestConfig::default() })]

        #[test]
        fn open_never_panics_on_arbitrary_text(value in ".{0,600}") {
            let c = cookies(&key());
            prop_assert!(c.open(&value, NOW).is_err());
        }

        #[test]
        fn open_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let c = cookies(&key());
            prop_assert!(c.open(&URL_SAFE_NO_PAD.encode(&bytes), NOW).is_err());
        }

        #[test]
        fn a_tampered_cookie_never_opens(pos in any::<prop::sample::Index>(), bit in 0u8..8) {
            let c = cookies(&key());
            let value = c.seal(&[pending(0, "/x")]).expect("seal").expect("value");
            let mut sealed = URL_SAFE_NO_PAD.decode(&value).expect("base64");
            let i = pos.index(sealed.len());
            sealed[i] ^= 1 << bit;
            prop_assert!(c.open(&URL_SAFE_NO_PAD.encode(&sealed), NOW).is_err());
        }
    }
}
