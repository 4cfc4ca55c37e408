//! The IdP's signing keys: fetched from `jwks_uri`, cached, and re-fetched
//! when a token names a `kid` we do not know (key rotation). Such re-fetches
//! happen at most once per [`REFETCH_INTERVAL`] so forged kids cannot make us
//! hammer the IdP; the initial fetch does not count against that limit.

use std::{sync::Arc, time::Duration};

use jsonwebtoken::{
    Algorithm, DecodingKey,
    jwk::{Jwk, JwkSet, KeyAlgorithm, PublicKeyUse},
};
use tokio::sync::{Mutex, RwLock};

use super::{OidcError, http_client};

const REFETCH_INTERVAL: Duration = Duration::from_secs(10);

pub struct JwksCache {
    http: reqwest::Client,
    uri: String,
    keys: RwLock<Arc<JwkSet>>,
    /// When an unknown `kid` last caused a re-fetch, and whether it failed.
    last_refetch: Mutex<Option<(tokio::time::Instant, bool)>>,
}

impl JwksCache {
    pub(super) fn new(http: reqwest::Client, uri: String) -> Self {
        Self {
            http,
            uri,
            keys: RwLock::new(Arc::new(JwkSet { keys: Vec::new() })),
            last_refetch: Mutex::new(None),
        }
    }

    /// A cache holding `keys` already (tests).
    #[cfg(test)]
    pub(super) fn with_keys(http: reqwest::Client, uri: String, keys: JwkSet) -> Self {
        let cache = Self::new(http, uri);
        Self {
            keys: RwLock::new(Arc::new(keys)),
            ..cache
        }
    }

    /// Fetch the key set now.
    pub(super) async fn refresh(&self) -> Result<(), OidcError> {
        self.refresh_with_max_age().await.map(|_| ())
    }

    /// Fetch the key set now; returns the response's `Cache-Control: max-age`.
    /// On failure the keys we have stay in use.
    pub(super) async fn refresh_with_max_age(&self) -> Result<Option<Duration>, OidcError> {
        http_client::observed("jwks", self.fetch()).await
    }

    async fn fetch(&self) -> Result<Option<Duration>, OidcError> {
        let resp = self
            .http
            .get(&self.uri)
            .send()
            .await
            .map_err(|e| http_client::transport_error("jwks", e))?;
        let max_age = http_client::max_age(resp.headers());
        let raw: serde_json::Value = http_client::json_response("jwks", resp).await?;
        let set = parse_jwks(raw)?;
        *self.keys.write().await = Arc::new(set);
        Ok(max_age)
    }

    pub(super) fn uri(&self) -> &str {
        &self.uri
    }

    /// Re-fetch unless we did so very recently. Returns whether it fetched.
    /// Within the interval after a failed re-fetch the answer stays
    /// "unavailable": a key we could not look up is not a refused token, and
    /// treating it as one would end sessions during an IdP blip.
    async fn refresh_rate_limited(&self) -> Result<bool, OidcError> {
        // Held across the fetch so concurrent unknown kids cause one fetch, not many.
        let mut last = self.last_refetch.lock().await;
        if let Some((t, failed)) = *last
            && t.elapsed() < REFETCH_INTERVAL
        {
            return if failed {
                Err(OidcError::Unavailable(
                    "jwks: re-fetch for an unknown key failed recently".into(),
                ))
            } else {
                Ok(false)
            };
        }
        let outcome = self.refresh().await;
        *last = Some((tokio::time::Instant::now(), outcome.is_err()));
        outcome.map(|()| true)
    }

    /// The decoding key for a token header: by `kid`, or the only usable key
    /// when the token has no `kid`. Unknown kid → one re-fetch, then error.
    pub async fn key_for(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<DecodingKey, OidcError> {
        if let Some(key) = self.find(kid, alg).await? {
            return Ok(key);
        }
        if kid.is_some()
            && self.refresh_rate_limited().await?
            && let Some(key) = self.find(kid, alg).await?
        {
            return Ok(key);
        }
        Err(OidcError::InvalidIdToken(match kid {
            Some(_) => "signing key id not found in the IdP's JWKS".into(),
            None => "token has no kid and the JWKS has more than one usable key".into(),
        }))
    }

    async fn find(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<Option<DecodingKey>, OidcError> {
        let set = self.keys.read().await.clone();
        let usable: Vec<&Jwk> = set.keys.iter().filter(|k| usable_for(k, alg)).collect();
        let jwk = match kid {
            Some(kid) => usable
                .into_iter()
                .find(|k| k.common.key_id.as_deref() == Some(kid)),
            None if usable.len() == 1 => usable.into_iter().next(),
            None => None,
        };
        match jwk {
            Some(jwk) => DecodingKey::from_jwk(jwk)
                .map(Some)
                .map_err(|e| OidcError::InvalidResponse(format!("jwks: unusable key ({e})"))),
            None => Ok(None),
        }
    }
}

/// Parse a JWKS leniently: keys we cannot use (unknown kty, `oct`, encryption keys)
/// are skipped instead of failing the whole set. An empty result is an error.
pub(super) fn parse_jwks(raw: serde_json::Value) -> Result<JwkSet, OidcError> {
    let list = raw
        .get("keys")
        .and_then(|k| k.as_array())
        .ok_or_else(|| OidcError::InvalidResponse("jwks: no \"keys\" array".into()))?;
    let keys: Vec<Jwk> = list
        .iter()
        .filter_map(|k| serde_json::from_value::<Jwk>(k.clone()).ok())
        .filter(|k| {
            !matches!(
                k.algorithm,
                jsonwebtoken::jwk::AlgorithmParameters::OctetKey(_)
            )
        })
        .collect();
    if keys.is_empty() {
        return Err(OidcError::InvalidResponse(
            "jwks: no usable signing keys".into(),
        ));
    }
    Ok(JwkSet { keys })
}

/// A key may verify `alg` if its type fits the algorithm family, it is not
/// an encryption key, and its own `alg` (when given) is that algorithm.
fn usable_for(jwk: &Jwk, alg: Algorithm) -> bool {
    use jsonwebtoken::jwk::AlgorithmParameters as P;
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return false;
    }
    let family_ok = match &jwk.algorithm {
        P::RSA(_) => matches!(
            alg,
            Algorithm::RS256
                | Algorithm::RS384
                | Algorithm::RS512
                | Algorithm::PS256
                | Algorithm::PS384
                | Algorithm::PS512
        ),
        P::EllipticCurve(_) => matches!(alg, Algorithm::ES256 | Algorithm::ES384),
        P::OctetKeyPair(_) => alg == Algorithm::EdDSA,
        P::OctetKey(_) => false,
    };
    let alg_ok = match jwk.common.key_algorithm {
        None => true,
        Some(ka) => key_alg_matches(ka, alg),
    };
    family_ok && alg_ok
}

fn key_alg_matches(ka: KeyAlgorithm, alg: Algorithm) -> bool {
    matches!(
        (ka, alg),
        (KeyAlgorithm::RS256, Algorithm::RS256)
            | (KeyAlgorithm::RS384, Algorithm::RS384)
            | (KeyAlgorithm::RS512, Algorithm::RS512)
            | (KeyAlgorithm::PS256, Algorithm::PS256)
            | (KeyAlgorithm::PS384, Algorithm::PS384)
            | (KeyAlgorithm::PS512, Algorithm::PS512)
            | (KeyAlgorithm::ES256, Algorithm::ES256)
            | (KeyAlgorithm::ES384, Algorithm::ES384)
            | (KeyAlgorithm::EdDSA, Algorithm::EdDSA)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_or_symmetric_jwks_is_rejected() {
        assert!(parse_jwks(serde_json::json!({"keys": []})).is_err());
        assert!(parse_jwks(serde_json::json!({"nokeys": 1})).is_err());
        assert!(
            parse_jwks(serde_json::json!({"keys": [{"kty":"oct","k":"c2VjcmV0","kid":"h"}]}))
                .is_err()
        );
    }
}
