//! What the IdP remembers between requests: authorization codes, refresh-token families and
//! revocation calls. Tokens are kept by SHA-256 fingerprint, never by value.
//!
//! A family is every refresh token descended from one login. Only its newest token is
//! live; presenting an older one is reuse (a sign of theft), which revokes the family.

use std::collections::HashMap;

use sha2::{Digest as _, Sha256};

/// SHA-256 of `value`, hex.
pub(crate) fn fingerprint(value: &str) -> String {
    Sha256::digest(value.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What one successful login at `/authorize` granted.
#[derive(Debug, Clone)]
pub(crate) struct Login {
    pub(crate) client_id: String,
    pub(crate) username: String,
    pub(crate) sid: String,
    pub(crate) scope: String,
    pub(crate) auth_time: u64,
}

/// An issued authorization code.
#[derive(Debug, Clone)]
pub(crate) struct AuthCode {
    pub(crate) login: Login,
    pub(crate) redirect_uri: String,
    pub(crate) nonce: Option<String>,
    pub(crate) code_challenge: String,
    pub(crate) expires_at: u64,
    redeemed: bool,
    /// The refresh-token family the redemption started, revoked if the code comes back.
    family: Option<String>,
}

impl AuthCode {
    pub(crate) fn new(
        login: Login,
        redirect_uri: String,
        nonce: Option<String>,
        code_challenge: String,
        expires_at: u64,
    ) -> Self {
        Self {
            login,
            redirect_uri,
            nonce,
            code_challenge,
            expires_at,
            redeemed: false,
            family: None,
        }
    }
}

#[derive(Debug)]
struct Family {
    login: Login,
    /// Fingerprint of the one live refresh token.
    current: String,
    expires_at: u64,
    revoked: bool,
}

/// Why a code or refresh token was refused; all map to `invalid_grant`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GrantError {
    Unknown,
    Expired,
    /// A code redeemed twice, or a refresh token that was already rotated.
    Reused,
    Revoked,
    WrongClient,
}

impl GrantError {
    pub(crate) fn description(self) -> &'static str {
        match self {
            Self::Unknown => "unknown grant",
            Self::Expired => "grant expired",
            Self::Reused => "grant already used; tokens issued from it are revoked",
            Self::Revoked => "grant revoked",
            Self::WrongClient => "grant was issued to another client",
        }
    }
}

/// The IdP's in-memory state. Callers hold its lock only briefly, never across an await.
#[derive(Debug, Default)]
pub(crate) struct Grants {
    codes: HashMap<String, AuthCode>,
    families: HashMap<String, Family>,
    /// Every refresh token ever issued (fingerprint) to its family, so reuse is recognised.
    refresh_tokens: HashMap<String, String>,
    revocation_calls: Vec<String>,
}

impl Grants {
    pub(crate) fn insert_code(&mut self, code: &str, record: AuthCode, now: u64) {
        self.prune(now);
        self.codes.insert(fingerprint(code), record);
    }

    /// Redeems a code exactly once. A second redemption revokes what the first one issued.
    pub(crate) fn redeem_code(&mut self, code: &str, now: u64) -> Result<AuthCode, GrantError> {
        let record = self
            .codes
            .get_mut(&fingerprint(code))
            .ok_or(GrantError::Unknown)?;
        if record.redeemed {
            if let Some(family) = record.family.clone() {
                self.revoke_family(&family);
            }
            return Err(GrantError::Reused);
        }
        record.redeemed = true;
        if record.expires_at <= now {
            return Err(GrantError::Expired);
        }
        Ok(record.clone())
    }

    /// Starts a refresh-token family for a login, remembering which code began it.
    pub(crate) fn start_family(
        &mut self,
        code: Option<&str>,
        login: Login,
        refresh_token: &str,
        expires_at: u64,
    ) {
        let family_id = fingerprint(refresh_token);
        if let Some(record) = code.and_then(|c| self.codes.get_mut(&fingerprint(c))) {
            record.family = Some(family_id.clone());
        }
        self.refresh_tokens
            .insert(family_id.clone(), family_id.clone());
        self.families.insert(
            family_id.clone(),
            Family {
                login,
                current: family_id,
                expires_at,
                revoked: false,
            },
        );
    }

    /// Replaces the live refresh token `old` with `new`. Presenting a token that was already
    /// replaced revokes the whole family.
    pub(crate) fn rotate(
        &mut self,
        client_id: &str,
        old: &str,
        new: &str,
        expires_at: u64,
        now: u64,
    ) -> Result<Login, GrantError> {
        let old = fingerprint(old);
        let family_id = self
            .refresh_tokens
            .get(&old)
            .cloned()
            .ok_or(GrantError::Unknown)?;
        let family = self
            .families
            .get_mut(&family_id)
            .ok_or(GrantError::Unknown)?;
        if family.login.client_id != client_id {
            return Err(GrantError::WrongClient);
        }
        if family.revoked {
            return Err(GrantError::Revoked);
        }
        if family.current != old {
            family.revoked = true;
            tracing::warn!(sub = %family.login.username, "dev IdP: refresh token reused; family revoked");
            return Err(GrantError::Reused);
        }
        if family.expires_at <= now {
            return Err(GrantError::Expired);
        }
        let new = fingerprint(new);
        family.current = new.clone();
        family.expires_at = expires_at;
        let login = family.login.clone();
        self.refresh_tokens.insert(new, family_id);
        Ok(login)
    }

    /// Revokes the family of a refresh token, if `client_id` owns it (RFC 7009 2.1).
    pub(crate) fn revoke_refresh_token(&mut self, client_id: &str, token: &str) {
        let Some(family_id) = self.refresh_tokens.get(&fingerprint(token)).cloned() else {
            return;
        };
        if self
            .families
            .get(&family_id)
            .is_some_and(|f| f.login.client_id == client_id)
        {
            self.revoke_family(&family_id);
        }
    }

    /// The login with this `sid`, if any of its refresh-token families is still live.
    pub(crate) fn live_login(&self, sid: &str) -> Option<Login> {
        self.families
            .values()
            .find(|f| f.login.sid == sid && !f.revoked)
            .map(|f| f.login.clone())
    }

    /// Revokes every family born of the login with this `sid`.
    pub(crate) fn revoke_sid(&mut self, sid: &str) {
        for family in self.families.values_mut() {
            if family.login.sid == sid {
                family.revoked = true;
            }
        }
    }

    pub(crate) fn record_revocation_call(&mut self, token: &str) {
        self.revocation_calls.push(token.to_owned());
    }

    pub(crate) fn revocation_calls(&self) -> Vec<String> {
        self.revocation_calls.clone()
    }

    fn revoke_family(&mut self, family_id: &str) {
        if let Some(family) = self.families.get_mut(family_id) {
            family.revoked = true;
        }
    }

    /// Forgets expired codes and families so a long demo does not grow without bound.
    fn prune(&mut self, now: u64) {
        self.codes.retain(|_, c| c.expires_at > now);
        self.families.retain(|_, f| f.expires_at > now);
        let families = &self.families;
        self.refresh_tokens
            .retain(|_, id| families.contains_key(id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn login() -> Login {
        Login {
            client_id: "c".into(),
            username: "alice".into(),
            sid: "s1".into(),
            scope: "openid".into(),
            auth_time: 1,
        }
    }

    #[test]
    fn rotation_and_reuse_detection() {
        let mut g = Grants::default();
        g.start_family(None, login(), "r1", 100);
        assert!(g.rotate("c", "r1", "r2", 100, 10).is_ok());
        assert_eq!(
            g.rotate("c", "r1", "r3", 100, 10).unwrap_err(),
            GrantError::Reused
        );
        assert_eq!(
            g.rotate("c", "r2", "r4", 100, 10).unwrap_err(),
            GrantError::Revoked
        );
    }

    #[test]
    fn code_is_single_use_and_reuse_revokes_family() {
        let mut g = Grants::default();
        let code = AuthCode::new(login(), "https://rp/cb".into(), None, "x".into(), 100);
        g.insert_code("k", code, 10);
        assert!(g.redeem_code("k", 10).is_ok());
        g.start_family(Some("k"), login(), "r1", 1000);
        assert_eq!(g.redeem_code("k", 10).unwrap_err(), GrantError::Reused);
        assert_eq!(
            g.rotate("c", "r1", "r2", 1000, 10).unwrap_err(),
            GrantError::Revoked
        );
    }

    #[test]
    fn wrong_client_does_not_rotate() {
        let mut g = Grants::default();
        g.start_family(None, login(), "r1", 100);
        assert_eq!(
            g.rotate("other", "r1", "r2", 100, 10).unwrap_err(),
            GrantError::WrongClient
        );
        assert!(g.rotate("c", "r1", "r2", 100, 10).is_ok());
    }
}
