//! The IdP's signing keys as the sample API knows them: fetched over HTTP, cached, and
//! fetched again when a token names a key not seen yet (the IdP may have rotated).

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use jsonwebtoken::DecodingKey;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk};
use serde_json::Value;

/// Unknown `kid`s trigger at most one fetch per this interval, so forged tokens cannot make
/// the API hammer the IdP.
const MIN_REFETCH_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Default)]
struct Cached {
    /// By `kid`; a key published without one is under "".
    keys: HashMap<String, DecodingKey>,
    fetched_at: Option<Instant>,
}

/// A cached JWKS.
pub(crate) struct JwksCache {
    http: reqwest::Client,
    url: String,
    cached: Mutex<Cached>,
}

impl std::fmt::Debug for JwksCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksCache")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl JwksCache {
    pub(crate) fn new(url: String) -> Self {
        // No redirects: the JWKS comes from where it was configured, nowhere else.
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap_or_default();
        Self {
            http,
            url,
            cached: Mutex::new(Cached::default()),
        }
    }

    /// The key for a token's `kid` (a token without `kid` is fine while there is one key).
    pub(crate) async fn key_for(&self, kid: Option<&str>) -> Option<DecodingKey> {
        let refetch = {
            let cached = self.cached.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(key) = lookup(&cached.keys, kid) {
                return Some(key);
            }
            cached.keys.is_empty()
                || cached
                    .fetched_at
                    .is_none_or(|at| at.elapsed() >= MIN_REFETCH_INTERVAL)
        };
        if !refetch {
            return None;
        }
        match self.fetch().await {
            Ok(keys) => {
                let found = lookup(&keys, kid);
                let mut cached = self.cached.lock().unwrap_or_else(PoisonError::into_inner);
                *cached = Cached {
                    keys,
                    fetched_at: Some(Instant::now()),
                };
                found
            }
            Err(e) => {
                tracing::warn!(url = %self.url, error = %e, "sample API: JWKS fetch failed");
                None
            }
        }
    }

    async fn fetch(&self) -> Result<HashMap<String, DecodingKey>, reqwest::Error> {
        let set: Value = self
            .http
            .get(&self.url)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let keys = set
            .get("keys")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        Ok(keys.iter().filter_map(usable_key).collect())
    }
}

fn lookup(keys: &HashMap<String, DecodingKey>, kid: Option<&str>) -> Option<DecodingKey> {
    match kid {
        Some(kid) => keys.get(kid).cloned(),
        None if keys.len() == 1 => keys.values().next().cloned(),
        None => None,
    }
}

/// P-256 signature keys only; anything else in the set is skipped, not an error.
fn usable_key(value: &Value) -> Option<(String, DecodingKey)> {
    let jwk: Jwk = serde_json::from_value(value.clone()).ok()?;
    let AlgorithmParameters::EllipticCurve(ec) = &jwk.algorithm else {
        return None;
    };
    if ec.curve != EllipticCurve::P256 {
        return None;
    }
    let for_signing = value.get("use").is_none_or(|u| u == "sig");
    let es256 = value.get("alg").is_none_or(|a| a == "ES256");
    if !(for_signing && es256) {
        return None;
    }
    let key = DecodingKey::from_jwk(&jwk).ok()?;
    Some((jwk.common.key_id.clone().unwrap_or_default(), key))
}
