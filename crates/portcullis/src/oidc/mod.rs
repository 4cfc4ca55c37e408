//! The OpenID Connect relying party: discovery, JWKS, the code flow with
//! PKCE, ID-token validation, refresh, userinfo and logout URLs.
//!
//! [`OidcClient`] is shared by all requests; it caches the provider metadata
//! and keys and talks to the IdP with a client that never follows redirects.

pub mod breaker;
mod claims;
mod discovery;
mod flow;
mod http_client;
pub mod id_token;
mod jwks;
mod login_secrets;
pub mod logout_token;
#[cfg(test)]
mod proptests;

use std::{sync::Arc, time::Duration};

use tokio::sync::RwLock;

use crate::{config::Config, time::Clock};

pub use claims::{roles_from_claims, user_claims};
pub use discovery::ProviderMetadata;
pub use flow::{AuthorizationRequest, TokenResponse, pkce_challenge};
pub use id_token::IdTokenClaims;
pub use jwks::JwksCache;
pub use login_secrets::{LoginState, Nonce, PkceVerifier};
pub use logout_token::LogoutToken;

/// Everything that can go wrong talking to or trusting the IdP.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    /// Network failure, timeout or 5xx: the IdP is down, not wrong.
    #[error("identity provider unavailable: {0}")]
    Unavailable(String),
    /// The IdP answered something that is not what the protocol says (non-JSON, missing fields).
    #[error("identity provider sent an invalid response: {0}")]
    InvalidResponse(String),
    /// The discovery document names another issuer than the configured one.
    #[error("issuer mismatch: configured {configured:?}, discovery says {discovered:?}")]
    IssuerMismatch {
        configured: String,
        discovered: String,
    },
    /// An OAuth error response (4xx), e.g. `invalid_grant`.
    #[error("identity provider refused: {error}")]
    OAuth {
        status: u16,
        error: String,
        description: Option<String>,
    },
    /// The ID token failed validation; no session may be created.
    #[error("ID token rejected: {0}")]
    InvalidIdToken(String),
    /// A back-channel logout token failed validation; no session is touched.
    #[error("logout token rejected: {0}")]
    InvalidLogoutToken(String),
    /// Userinfo `sub` differs from the ID token's.
    #[error("userinfo subject does not match the ID token")]
    UserinfoSubjectMismatch,
}

impl OidcError {
    /// Who failed. The IdP refused when it answered by the protocol and said
    /// no (an OAuth error on the token endpoint, an ID token that fails
    /// validation against keys we could fetch, userinfo naming another
    /// subject); unavailable when it could not answer usefully. Only a
    /// refusal may end a session.
    pub fn fault(&self) -> crate::fault::Fault {
        use crate::fault::Fault;
        match self {
            OidcError::Unavailable(_) | OidcError::InvalidResponse(_) => Fault::IdpUnavailable,
            // A discovery document naming another issuer is our configuration's problem.
            OidcError::IssuerMismatch { .. } => Fault::Internal,
            OidcError::OAuth { .. }
            | OidcError::InvalidIdToken(_)
            | OidcError::UserinfoSubjectMismatch => Fault::IdpRefused,
            // The IdP is the client here, and its token is the bad input.
            OidcError::InvalidLogoutToken(_) => Fault::Client,
        }
    }
}

/// Shared relying-party state.
pub struct OidcClient {
    pub(crate) issuer: String,
    pub(crate) client_id: String,
    pub(crate) client_secret: crate::config::Secret,
    pub(crate) auth_method: crate::config::ClientAuthMethod,
    pub(crate) scopes: Vec<String>,
    pub(crate) redirect_uri: String,
    pub(crate) extra_auth_params: Vec<(String, String)>,
    pub(crate) extra_token_params: Vec<(String, String)>,
    pub(crate) allowed_algs: Vec<jsonwebtoken::Algorithm>,
    pub(crate) clock_skew: i64,
    pub(crate) use_userinfo: bool,
    http: reqwest::Client,
    metadata: RwLock<Option<Arc<ProviderMetadata>>>,
    jwks: RwLock<Option<Arc<JwksCache>>>,
    clock: Arc<dyn Clock>,
    /// Guards the token endpoint (see [`breaker`]).
    pub(crate) breaker: breaker::Breaker,
}

impl OidcClient {
    pub fn new(config: &Config, clock: Arc<dyn Clock>) -> Result<Self, OidcError> {
        let oidc = &config.oidc;
        Ok(Self {
            issuer: oidc.issuer.clone(),
            client_id: oidc.client_id.clone(),
            client_secret: oidc.client_secret.clone(),
            auth_method: oidc.token_endpoint_auth_method,
            scopes: oidc.scopes.clone(),
            redirect_uri: config.redirect_uri(),
            extra_auth_params: oidc.extra_auth_params.clone(),
            extra_token_params: oidc.extra_token_params.clone(),
            allowed_algs: oidc.allowed_algs.clone(),
            clock_skew: oidc.clock_skew.as_secs() as i64,
            use_userinfo: oidc.userinfo,
            http: http_client::build(oidc.http_timeout, &oidc.tls)?,
            metadata: RwLock::new(None),
            jwks: RwLock::new(None),
            clock,
            breaker: breaker::Breaker::new(
                config.oidc.breaker_failures,
                config.oidc.breaker_backoff,
                config.oidc.breaker_max_backoff,
            ),
        })
    }

    /// The provider metadata, fetched on first use and then cached.
    pub async fn metadata(&self) -> Result<Arc<ProviderMetadata>, OidcError> {
        if let Some(m) = self.metadata.read().await.as_ref() {
            return Ok(m.clone());
        }
        let mut slot = self.metadata.write().await;
        if let Some(m) = slot.as_ref() {
            return Ok(m.clone());
        }
        let m = Arc::new(discovery::discover(&self.http, &self.issuer).await?);
        *slot = Some(m.clone());
        Ok(m)
    }

    /// Whether discovery has succeeded (for readiness).
    pub async fn is_ready(&self) -> bool {
        self.metadata.read().await.is_some() && self.jwks.read().await.is_some()
    }

    /// Load metadata and keys now (start-up warm-up and readiness).
    pub async fn warm_up(&self) -> Result<(), OidcError> {
        self.keys().await?;
        Ok(())
    }

    async fn keys(&self) -> Result<Arc<JwksCache>, OidcError> {
        if let Some(k) = self.jwks.read().await.as_ref() {
            return Ok(k.clone());
        }
        let meta = self.metadata().await?;
        let mut slot = self.jwks.write().await;
        if let Some(k) = slot.as_ref() {
            return Ok(k.clone());
        }
        let cache = Arc::new(JwksCache::new(self.http.clone(), meta.jwks_uri.clone()));
        cache.refresh().await?;
        *slot = Some(cache.clone());
        Ok(cache)
    }

    /// Fetch metadata and keys again (background refresh). Keeps what we had
    /// when the IdP fails. Returns how long the IdP allows caching them: the
    /// smaller `Cache-Control: max-age` of the two responses, if any.
    pub async fn reload(&self) -> Result<Option<Duration>, OidcError> {
        let (meta, meta_age) = discovery::fetch(&self.http, &self.issuer).await?;
        let meta = Arc::new(meta);
        let current = self.jwks.read().await.clone();
        let (cache, keys_age) = match current {
            Some(cache) if cache.uri() == meta.jwks_uri => {
                let age = cache.refresh_with_max_age().await?;
                (cache, age)
            }
            _ => {
                let cache = Arc::new(JwksCache::new(self.http.clone(), meta.jwks_uri.clone()));
                let age = cache.refresh_with_max_age().await?;
                (cache, age)
            }
        };
        *self.metadata.write().await = Some(meta);
        *self.jwks.write().await = Some(cache);
        Ok(match (meta_age, keys_age) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        })
    }

    /// Keep metadata and keys fresh until the task is aborted: re-fetch after
    /// the IdP's max-age (bounded to [`MIN_RELOAD`]..[`MAX_RELOAD`], default
    /// [`DEFAULT_RELOAD`]); on failure retry with exponential backoff from
    /// 1 s up to [`MAX_RETRY`], serving the last good copy meanwhile.
    pub(crate) async fn reload_forever(&self) {
        let mut backoff = Duration::from_secs(1);
        loop {
            let wait = match self.reload().await {
                Ok(age) => {
                    backoff = Duration::from_secs(1);
                    age.unwrap_or(DEFAULT_RELOAD).clamp(MIN_RELOAD, MAX_RELOAD)
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?backoff, "identity provider metadata refresh failed");
                    let wait = backoff;
                    backoff = (backoff * 2).min(MAX_RETRY);
                    wait
                }
            };
            tokio::time::sleep(wait).await;
        }
    }

    fn now(&self) -> i64 {
        self.clock.now()
    }

    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.http
    }
}

/// Background re-fetch of metadata and keys when the IdP sends no max-age.
pub const DEFAULT_RELOAD: Duration = Duration::from_secs(15 * 60);
/// Shortest background re-fetch interval, whatever max-age says.
pub const MIN_RELOAD: Duration = Duration::from_secs(60);
/// Longest background re-fetch interval, whatever max-age says.
pub const MAX_RELOAD: Duration = Duration::from_secs(24 * 3600);
/// Longest wait between retries while the IdP is down.
pub const MAX_RETRY: Duration = Duration::from_secs(60);

/// Default timeout for the IdP client when none is configured.
pub const DEFAULT_HTTP_TIMEOUT: Duration = Duration::from_secs(10);

#[cfg(test)]
impl OidcClient {
    /// A client with `metadata` and `keys` already loaded (no discovery, no
    /// JWKS fetch), for tests of token validation.
    pub(crate) fn preloaded(
        config: &Config,
        clock: Arc<dyn Clock>,
        metadata: ProviderMetadata,
        keys: jsonwebtoken::jwk::JwkSet,
    ) -> Self {
        let mut client = Self::new(config, clock).expect("OIDC client");
        let cache = JwksCache::with_keys(client.http.clone(), metadata.jwks_uri.clone(), keys);
        client.metadata = RwLock::new(Some(Arc::new(metadata)));
        client.jwks = RwLock::new(Some(Arc::new(cache)));
        client
    }
}
