//! Logins in flight, kept in the browser: one sealed cookie per pending login
//! (state, nonce, PKCE verifier, return_to, start time), named after its
//! state (`<session cookie>-login-<8 hex of SHA-256(state)>`), so an
//! anonymous `GET /auth/login` leaves nothing on the server (issue 16: a
//! login flood cannot grow state) and logins started in several tabs at once
//! never overwrite each other: each response sets only its own cookie.
//!
//! The cookies are sealed with AES-256-GCM by a [`Keyring`] derived from
//! `session.encryption_keys` for this purpose only (HKDF, own key ids). The
//! associated data binds each cookie to its name and to the deployment
//! (issuer, client_id, public_url): a login cookie never opens as a session
//! record nor the other way round, under another name, or in another
//! deployment that shares the keys. Without encryption keys a random
//! per-gateway key seals it: a login must then finish in the process that
//! started it (the config requires keys for the shared stores in the prod
//! profile).
//!
//! Single use: the callback removes the cookie it used, and [`UsedStates`]
//! remembers claimed states in this process (bounded) so a racing or
//! replayed callback with a copy of the cookie never reaches the IdP.

use std::{
    collections::{HashSet, VecDeque},
    sync::{Mutex, PoisonError},
};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use sha2::{Digest, Sha256};

use crate::{
    config::{Config, Secret},
    oidc::{LoginState, Nonce, PkceVerifier},
    session::seal::{Keyring, SealError},
    time::UnixTime,
};

/// Lifetime of a login in flight (cookie Max-Age and the start time check), seconds.
pub(crate) const LOGIN_TTL: i64 = 600;
/// Pending logins one browser keeps (logins started in several tabs); a new
/// one beyond expires the oldest.
pub(crate) const MAX_PENDING: usize = 6;
/// Longest `return_to` we keep (bytes).
pub(crate) const MAX_RETURN_TO: usize = 512;
/// Longest cookie value we open. The longest we seal (a `return_to` of
/// [`MAX_RETURN_TO`]) is about 920 bytes: six of them stay near 6 KB of
/// `Cookie` header, far below `server.max_header_bytes`.
pub(crate) const MAX_VALUE_LEN: usize = 1200;
/// Claimed states remembered per process (about 100 bytes each).
const MAX_USED_STATES: usize = 10_000;

/// HKDF info for the cookie key: a login cookie key is never a session key.
const KEY_PURPOSE: &[u8] = b"portcullis login cookie key v1";
/// Start of the associated data of every login cookie (session records use
/// `portcullis/session/<id>`); the cookie name and the deployment follow.
const AAD_PREFIX: &[u8] = b"portcullis/login-cookie/v2";

/// Could `value` be a login cookie this gateway sealed (URL-safe base64 that
/// fits a cookie)? Anything else is noise planted beside it, never a rival.
pub(crate) fn well_formed(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= MAX_VALUE_LEN
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The name suffix of the cookie for `state`: 8 hex digits of SHA-256(state).
/// Only a key to find the cookie; the sealed state itself is compared in full.
pub(crate) fn name_suffix(state: &str) -> String {
    Sha256::digest(state.as_bytes())[..4]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Whether `suffix` has the shape of [`name_suffix`] (8 lowercase hex digits).
pub(crate) fn is_name_suffix(suffix: &[u8]) -> bool {
    suffix.len() == 8
        && suffix
            .iter()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
}

/// One login in flight.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct PendingLogin {
    pub state: LoginState,
    pub nonce: Nonce,
    pub pkce_verifier: PkceVerifier,
    /// Same-origin path to return to after login.
    pub return_to: String,
    pub created_at: UnixTime,
    /// Started with `prompt=none`: the callback answers the silent-login
    /// page (a message to the SPA), not a redirect.
    pub silent: bool,
}

impl PendingLogin {
    pub fn expires_at(&self) -> UnixTime {
        self.created_at.saturating_add(LOGIN_TTL)
    }

    /// `t s n v r`, space-separated: compact (six fit in a few KB of
    /// `Cookie` header) and unambiguous, as the random tokens and the time
    /// never hold a space and `return_to` (no whitespace either) comes last.
    /// A silent login's `return_to` is written `!/path` (a path starts with
    /// `/`, so the mark is unambiguous and older cookies still read).
    fn encode(&self) -> Option<Vec<u8>> {
        let tokens = [
            self.state.as_str(),
            self.nonce.as_str(),
            self.pkce_verifier.as_str(),
        ];
        if tokens.iter().any(|t| t.is_empty() || t.contains(' ')) {
            return None;
        }
        Some(
            format!(
                "{} {} {} {} {}{}",
                self.created_at,
                self.state.as_str(),
                self.nonce.as_str(),
                self.pkce_verifier.as_str(),
                if self.silent { "!" } else { "" },
                self.return_to
            )
            .into_bytes(),
        )
    }

    fn decode(plain: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(plain).ok()?;
        let mut parts = text.splitn(5, ' ');
        let created_at = parts.next()?.parse().ok()?;
        let mut token = || parts.next().filter(|t| !t.is_empty()).map(str::to_string);
        let (state, nonce, pkce_verifier) = (token()?, token()?, token()?);
        let return_to = token()?;
        let (silent, return_to) = match return_to.strip_prefix('!') {
            Some(path) => (true, path.to_string()),
            None => (false, return_to),
        };
        Some(Self {
            state: LoginState::new(state),
            nonce: Nonce::new(nonce),
            pkce_verifier: PkceVerifier::new(pkce_verifier),
            return_to,
            created_at,
            silent,
        })
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
    #[error("login cookie was not sealed by this deployment under this name, or was tampered with")]
    Forged,
    #[error("login cookie has expired")]
    Expired,
}

/// Seals and opens login cookies, and remembers which states were used.
pub(crate) struct LoginCookies {
    keyring: Keyring,
    /// The deployment part of the associated data (issuer, client_id, public_url).
    deployment: Vec<u8>,
    used: Mutex<UsedStates>,
}

impl std::fmt::Debug for LoginCookies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginCookies")
            .field("keyring", &self.keyring)
            .finish_non_exhaustive()
    }
}

/// Each part with its length first: no two lists of parts give the same bytes.
fn push_part(out: &mut Vec<u8>, part: &[u8]) {
    out.extend_from_slice(&(part.len() as u32).to_be_bytes());
    out.extend_from_slice(part);
}

impl LoginCookies {
    /// Keys derived from `session.encryption_keys` (a random per-gateway key
    /// without any), bound to this deployment's issuer, client and URL.
    pub fn new(config: &Config) -> Result<Self, SealError> {
        Self::with_keys(
            &config.session.encryption_keys,
            [
                config.oidc.issuer.as_str(),
                config.oidc.client_id.as_str(),
                config.server.public_url.as_str(),
            ],
        )
    }

    fn with_keys(session_keys: &[Secret], deployment: [&str; 3]) -> Result<Self, SealError> {
        let keyring = if session_keys.is_empty() {
            Keyring::random()?
        } else {
            Keyring::derived_from_secrets(session_keys, KEY_PURPOSE)?
        };
        let mut bound = Vec::new();
        for part in deployment {
            push_part(&mut bound, part.as_bytes());
        }
        Ok(Self {
            keyring,
            deployment: bound,
            used: Mutex::default(),
        })
    }

    /// Associated data of the cookie named `name`.
    fn aad(&self, name: &str) -> Vec<u8> {
        let mut aad = AAD_PREFIX.to_vec();
        push_part(&mut aad, name.as_bytes());
        aad.extend_from_slice(&self.deployment);
        aad
    }

    /// The value of the cookie `name` for `login`.
    pub fn seal(&self, name: &str, login: &PendingLogin) -> Result<String, SealError> {
        let plain = login.encode().ok_or(SealError::Encrypt)?;
        Ok(URL_SAFE_NO_PAD.encode(self.keyring.seal(&self.aad(name), &plain)?))
    }

    /// The login in the cookie `name` = `value`, unless it expired at `now`.
    pub fn open(
        &self,
        name: &str,
        value: &str,
        now: UnixTime,
    ) -> Result<PendingLogin, LoginCookieError> {
        if value.len() > MAX_VALUE_LEN {
            return Err(LoginCookieError::TooLong);
        }
        let sealed = URL_SAFE_NO_PAD
            .decode(value)
            .map_err(|_| LoginCookieError::Malformed)?;
        let plain = self
            .keyring
            .open(&self.aad(name), &sealed)
            .map_err(|e| match e {
                SealError::Malformed => LoginCookieError::Malformed,
                _ => LoginCookieError::Forged,
            })?;
        // Sealed by us, so well-formed unless the format changed between versions.
        let login = PendingLogin::decode(&plain).ok_or(LoginCookieError::Malformed)?;
        if login.expires_at() <= now || login.created_at > now.saturating_add(LOGIN_TTL) {
            return Err(LoginCookieError::Expired);
        }
        Ok(login)
    }

    /// Whether `login` is the one for `state` (constant-time comparison).
    pub fn is_for(login: &PendingLogin, state: &str) -> bool {
        login.state.matches(state)
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
    const DEPLOYMENT: [&str; 3] = [
        "https://idp.example.com",
        "portal",
        "https://app.example.com/",
    ];
    const NAME: &str = "__Host-portcullis-login-0123abcd";

    fn cookies(key: &str) -> LoginCookies {
        LoginCookies::with_keys(&[Secret::new(key)], DEPLOYMENT).expect("keys")
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
            silent: false,
        }
    }

    #[test]
    fn round_trip_and_expiry() {
        let c = cookies(&key());
        let login = pending(0, "/a?b=c d\"");
        let value = c.seal(NAME, &login).expect("seal");
        assert!(well_formed(&value));
        assert_eq!(c.open(NAME, &value, NOW + 10), Ok(login.clone()));
        assert_eq!(
            c.open(NAME, &value, NOW + LOGIN_TTL),
            Err(LoginCookieError::Expired)
        );
        // A start time far in the future (never sealed by us, but checked anyway).
        assert_eq!(
            c.open(NAME, &value, NOW - LOGIN_TTL - 1),
            Err(LoginCookieError::Expired)
        );
        assert!(LoginCookies::is_for(&login, login.state.as_str()));
        assert!(!LoginCookies::is_for(&login, login.nonce.as_str()));
    }

    #[test]
    fn the_longest_cookie_is_small() {
        let c = cookies(&key());
        // Multi-byte characters and quotes: nothing is escaped, bytes count.
        for rt in [
            "/".repeat(MAX_RETURN_TO),
            format!("/{}", "\"".repeat(MAX_RETURN_TO - 1)),
            format!("/{}", "é".repeat((MAX_RETURN_TO - 1) / 2)),
        ] {
            let value = c.seal(NAME, &pending(0, &rt)).expect("seal");
            assert!(value.len() <= 950, "{}", value.len());
            assert!(well_formed(&value));
        }
    }

    #[test]
    fn name_suffix_is_eight_hex_digits_of_the_state() {
        let s = name_suffix("state");
        assert_eq!(s.len(), 8);
        assert!(is_name_suffix(s.as_bytes()));
        assert_eq!(s, name_suffix("state"));
        assert_ne!(s, name_suffix("state2"));
        for bad in ["0123abc", "0123abcde", "0123ABCD", "0123abcg"] {
            assert!(!is_name_suffix(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn a_cookie_moved_to_another_name_does_not_open() {
        let c = cookies(&key());
        let value = c.seal(NAME, &pending(0, "/")).expect("seal");
        for other in [
            "__Host-portcullis-login-0123abce",
            "portcullis-login-0123abcd",
            "__Host-portcullis-login",
        ] {
            assert_eq!(
                c.open(other, &value, NOW),
                Err(LoginCookieError::Forged),
                "{other}"
            );
        }
    }

    #[test]
    fn a_cookie_of_another_deployment_with_the_same_keys_does_not_open() {
        let k = key();
        let value = cookies(&k).seal(NAME, &pending(0, "/")).expect("seal");
        for (i, other) in [
            "https://idp2.example.com",
            "portal2",
            "https://app2.example.com/",
        ]
        .into_iter()
        .enumerate()
        {
            let mut deployment = DEPLOYMENT;
            deployment[i] = other;
            let c = LoginCookies::with_keys(&[Secret::new(k.clone())], deployment).expect("keys");
            assert_eq!(c.open(NAME, &value, NOW), Err(LoginCookieError::Forged));
        }
        // Parts cannot be shifted from one field to the next.
        let c = LoginCookies::with_keys(
            &[Secret::new(k.clone())],
            ["https://idp.example.comportal", "", DEPLOYMENT[2]],
        )
        .expect("keys");
        assert_eq!(c.open(NAME, &value, NOW), Err(LoginCookieError::Forged));
        assert!(cookies(&k).open(NAME, &value, NOW).is_ok());
    }

    #[test]
    fn a_session_key_ring_does_not_open_a_login_cookie() {
        let k = key();
        let c = cookies(&k);
        let value = c.seal(NAME, &pending(0, "/")).expect("seal");
        let sealed = URL_SAFE_NO_PAD.decode(&value).expect("base64");
        let session_ring = Keyring::from_secrets(&[Secret::new(k)]).expect("ring");
        assert!(matches!(
            session_ring.open(&c.aad(NAME), &sealed),
            Err(SealError::UnknownKey(_))
        ));
        // And a session-style sealed value does not open as a login cookie.
        let record = session_ring.seal(&c.aad(NAME), b"1 a b c /").expect("seal");
        assert_eq!(
            c.open(NAME, &URL_SAFE_NO_PAD.encode(record), NOW),
            Err(LoginCookieError::Forged)
        );
    }

    #[test]
    fn a_state_is_claimed_once_and_the_memory_is_bounded() {
        let mut used = UsedStates::default();
        assert!(used.claim("a", NOW + 10, NOW));
        assert!(!used.claim("a", NOW + 10, NOW + 1));
        // After its login expired the record goes (the cookie is refused anyway).
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
            prop_assert!(c.open(NAME, &value, NOW).is_err());
        }

        #[test]
        fn open_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let c = cookies(&key());
            prop_assert!(c.open(NAME, &URL_SAFE_NO_PAD.encode(&bytes), NOW).is_err());
        }

        #[test]
        fn a_tampered_cookie_never_opens(pos in any::<prop::sample::Index>(), bit in 0u8..8) {
            let c = cookies(&key());
            let value = c.seal(NAME, &pending(0, "/x")).expect("seal");
            let mut sealed = URL_SAFE_NO_PAD.decode(&value).expect("base64");
            let i = pos.index(sealed.len());
            sealed[i] ^= 1 << bit;
            prop_assert!(c.open(NAME, &URL_SAFE_NO_PAD.encode(&sealed), NOW).is_err());
        }

        #[test]
        fn any_safe_return_to_round_trips(rt in "/[^\\\\\\s\\p{Cc}]{0,100}") {
            let c = cookies(&key());
            let login = pending(0, &rt);
            let value = c.seal(NAME, &login).expect("seal");
            prop_assert_eq!(c.open(NAME, &value, NOW), Ok(login));
        }
    }
}
