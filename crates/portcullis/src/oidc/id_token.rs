//! ID-token validation (OIDC Core 3.1.3.7): signature against the IdP's JWKS
//! with an algorithm allow-list, then iss, aud, azp, exp, iat, nonce, sub.
//!
//! The JOSE work is `jsonwebtoken`'s; time-based checks use the gateway's
//! clock so they can be tested.

use jsonwebtoken::{Algorithm, Validation};
use serde_json::{Map, Value};

use super::{OidcClient, OidcError};

/// The validated claims of an ID token.
#[derive(Debug, Clone)]
pub struct IdTokenClaims {
    pub sub: String,
    pub sid: Option<String>,
    pub exp: i64,
    /// Every claim, for roles and user claims.
    pub all: Map<String, Value>,
}

/// What a particular ID token must match besides the static checks.
pub struct Expectations<'a> {
    /// The nonce sent in the authorization request (login). `None` for refresh.
    pub nonce: Option<&'a super::Nonce>,
    /// The session's subject (refresh): a refreshed ID token must keep it.
    pub sub: Option<&'a str>,
}

fn invalid(msg: impl Into<String>) -> OidcError {
    OidcError::InvalidIdToken(msg.into())
}

impl OidcClient {
    /// Validate `token` fully. Any failure means: no session.
    pub async fn validate_id_token(
        &self,
        token: &str,
        expect: Expectations<'_>,
    ) -> Result<IdTokenClaims, OidcError> {
        let (_, claims) = self.verify_signature(token).await?;
        self.check_claims(claims, expect)
    }

    /// Check a compact JWS the IdP signed (ID token, logout token): the
    /// header's `alg` must be on the allow-list and not HMAC, the key comes
    /// from the JWKS by `kid`, and the signature must verify. Returns the
    /// header and the claims, none of which are checked yet.
    ///
    /// Failures are [`OidcError::InvalidIdToken`]; callers validating other
    /// token kinds re-tag them.
    pub(crate) async fn verify_signature(
        &self,
        token: &str,
    ) -> Result<(jsonwebtoken::Header, Map<String, Value>), OidcError> {
        // decode_header refuses `alg: none` (not an Algorithm jsonwebtoken knows).
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| invalid(format!("malformed header ({e})")))?;
        if !self.allowed_algs.contains(&header.alg) || is_hmac(header.alg) {
            return Err(invalid(format!("algorithm {:?} not allowed", header.alg)));
        }
        let key = self
            .keys()
            .await?
            .key_for(header.kid.as_deref(), header.alg)
            .await?;

        let mut validation = Validation::new(header.alg);
        validation.algorithms = vec![header.alg];
        // Claims are checked by the caller against our own clock and rules.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &validation)
            .map_err(|e| invalid(format!("signature or format invalid ({e})")))?;
        Ok((header, data.claims))
    }

    fn check_claims(
        &self,
        claims: Map<String, Value>,
        expect: Expectations<'_>,
    ) -> Result<IdTokenClaims, OidcError> {
        let now = self.now();
        let skew = self.clock_skew;

        match claims.get("iss").and_then(Value::as_str) {
            Some(iss) if iss == self.issuer => {}
            _ => return Err(invalid("iss does not match the issuer")),
        }

        let audiences: Vec<&str> = match claims.get("aud") {
            Some(Value::String(a)) => vec![a.as_str()],
            Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).collect(),
            _ => return Err(invalid("aud missing")),
        };
        if !audiences.contains(&self.client_id.as_str()) {
            return Err(invalid("aud does not contain the client id"));
        }
        let azp = claims.get("azp").and_then(Value::as_str);
        if audiences.len() > 1 && azp.is_none() {
            return Err(invalid("several audiences but no azp"));
        }
        if let Some(azp) = azp
            && azp != self.client_id
        {
            return Err(invalid("azp is not the client id"));
        }

        let exp = claims
            .get("exp")
            .and_then(Value::as_i64)
            .ok_or_else(|| invalid("exp missing"))?;
        // Saturating: a signed `exp` of i64::MAX must not overflow (panic or wrap).
        if now > exp.saturating_add(skew) {
            return Err(invalid("token expired"));
        }
        let iat = claims
            .get("iat")
            .and_then(Value::as_i64)
            .ok_or_else(|| invalid("iat missing"))?;
        if iat > now.saturating_add(skew) {
            return Err(invalid("iat is in the future"));
        }
        if let Some(nbf) = claims.get("nbf").and_then(Value::as_i64)
            && nbf > now.saturating_add(skew)
        {
            return Err(invalid("token not yet valid"));
        }

        if let Some(expected) = expect.nonce {
            let nonce = claims.get("nonce").and_then(Value::as_str);
            let same = nonce.is_some_and(|n| expected.matches(n));
            if !same {
                return Err(invalid("nonce does not match"));
            }
        }

        let sub = match claims.get("sub").and_then(Value::as_str) {
            Some(s) if !s.is_empty() => s.to_string(),
            _ => return Err(invalid("sub missing")),
        };
        if let Some(expected) = expect.sub
            && expected != sub
        {
            return Err(invalid("sub changed"));
        }
        let sid = claims
            .get("sid")
            .and_then(Value::as_str)
            .map(str::to_string);
        Ok(IdTokenClaims {
            sub,
            sid,
            exp,
            all: claims,
        })
    }
}

fn is_hmac(alg: Algorithm) -> bool {
    matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
}
