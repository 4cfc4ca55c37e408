//! OpenID Connect Back-Channel Logout 1.0, section 2.6: validating the
//! `logout_token` the IdP posts to `/auth/backchannel-logout`.
//!
//! The signature check (JWKS, alg allow-list, no `none`, no HMAC) is the one
//! ID tokens use ([`OidcClient::verify_signature`]); the claim rules are the
//! spec's. Replay (`jti`) is checked by the caller against the session
//! store, so every replica sees the same set of used `jti`s.

use serde_json::{Map, Value};

use super::{OidcClient, OidcError};
use crate::time::UnixTime;

/// The `events` member that marks a JWT as a logout token.
pub const BACKCHANNEL_LOGOUT_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

/// How old (`iat`) a logout token may be. The IdP sends it right away, so a
/// few minutes cover retries; older ones are refused as possible replays.
pub const LOGOUT_TOKEN_MAX_AGE: i64 = 300;

/// Longest `jti` we remember; longer ones are refused rather than stored.
const MAX_JTI_LEN: usize = 256;

/// A validated logout token: which sessions to end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogoutToken {
    /// Subject whose sessions end (all of them when `sid` is absent).
    pub sub: Option<String>,
    /// The IdP session that ended.
    pub sid: Option<String>,
    /// Token id, to be remembered until [`LogoutToken::jti_expires_at`].
    pub jti: String,
    /// Until when the `jti` must be remembered: after that the token is
    /// refused for its age anyway.
    pub jti_expires_at: UnixTime,
    /// Only sessions created at or before this time are ended: its `iat`
    /// plus the allowed clock skew. A replayed token can then never end a
    /// session that began after the logout it announces.
    pub issued_before: UnixTime,
}

fn invalid(msg: impl Into<String>) -> OidcError {
    OidcError::InvalidLogoutToken(msg.into())
}

fn non_empty_string(claims: &Map<String, Value>, name: &str) -> Result<Option<String>, OidcError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
        Some(_) => Err(invalid(format!("{name} must be a non-empty string"))),
    }
}

impl OidcClient {
    /// Validate a logout token fully (except `jti` replay). Any failure is
    /// [`OidcError::InvalidLogoutToken`], or [`OidcError::Unavailable`] when
    /// the keys cannot be fetched.
    pub async fn validate_logout_token(&self, token: &str) -> Result<LogoutToken, OidcError> {
        let (header, claims) = self.verify_signature(token).await.map_err(|e| match e {
            OidcError::InvalidIdToken(m) => invalid(m),
            other => other,
        })?;
        // Section 2.4 types logout tokens explicitly as `logout+jwt`; many
        // IdPs (Keycloak) still send the generic `JWT`. Any other type is a
        // different kind of token (`at+jwt`, ...) and must not end sessions.
        if let Some(typ) = header.typ.as_deref() {
            let typ = typ.to_ascii_lowercase();
            let typ = typ.strip_prefix("application/").unwrap_or(&typ);
            if typ != "logout+jwt" && typ != "jwt" {
                return Err(invalid(format!("typ {typ:?} is not logout+jwt")));
            }
        }
        self.check_logout_claims(&claims)
    }

    fn check_logout_claims(&self, claims: &Map<String, Value>) -> Result<LogoutToken, OidcError> {
        let now = self.now();
        let skew = self.clock_skew;

        match claims.get("iss").and_then(Value::as_str) {
            Some(iss) if iss == self.issuer => {}
            _ => return Err(invalid("iss does not match the issuer")),
        }
        let aud_ok = match claims.get("aud") {
            Some(Value::String(a)) => a == &self.client_id,
            Some(Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(&self.client_id)),
            _ => false,
        };
        if !aud_ok {
            return Err(invalid("aud does not contain the client id"));
        }
        let iat = claims
            .get("iat")
            .and_then(Value::as_i64)
            .ok_or_else(|| invalid("iat missing"))?;
        if iat > now.saturating_add(skew) {
            return Err(invalid("iat is in the future"));
        }
        // Saturating: an `iat` of i64::MIN must read as ancient, not wrap to fresh.
        if now.saturating_sub(iat) > LOGOUT_TOKEN_MAX_AGE + skew {
            return Err(invalid("iat is too old"));
        }
        let exp = match claims.get("exp") {
            None => None,
            Some(v) => Some(v.as_i64().ok_or_else(|| invalid("exp is not a number"))?),
        };
        if let Some(exp) = exp
            && now > exp.saturating_add(skew)
        {
            return Err(invalid("token expired"));
        }
        let is_logout_event = claims
            .get("events")
            .and_then(Value::as_object)
            .and_then(|events| events.get(BACKCHANNEL_LOGOUT_EVENT))
            .is_some_and(Value::is_object);
        if !is_logout_event {
            return Err(invalid(
                "events does not contain the back-channel logout event",
            ));
        }
        // A nonce would make it usable as an ID token; the spec forbids it.
        if claims.contains_key("nonce") {
            return Err(invalid("nonce present"));
        }
        let sub = non_empty_string(claims, "sub")?;
        let sid = non_empty_string(claims, "sid")?;
        if sub.is_none() && sid.is_none() {
            return Err(invalid("neither sid nor sub present"));
        }
        let jti = non_empty_string(claims, "jti")?.ok_or_else(|| invalid("jti missing"))?;
        if jti.len() > MAX_JTI_LEN {
            return Err(invalid("jti too long"));
        }
        let refused_after = iat.saturating_add(LOGOUT_TOKEN_MAX_AGE + skew);
        let jti_expires_at =
            exp.map_or(refused_after, |e| e.saturating_add(skew).min(refused_after));
        Ok(LogoutToken {
            sub,
            sid,
            jti,
            jti_expires_at: jti_expires_at.max(now),
            issued_before: iat.saturating_add(skew),
        })
    }
}
