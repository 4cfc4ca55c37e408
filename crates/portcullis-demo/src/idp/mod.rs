//! The development OpenID Connect provider: code flow with PKCE S256, ES256 tokens,
//! rotating refresh tokens with reuse detection, revocation, RP-initiated logout and a
//! sign-out page of its own (`/logout?sid=`) that sends back-channel logout.
//!
//! It is meant for `portcullis demo` and for tests: loopback only, users fixed
//! ([`DEMO_USERS`]), state in memory. It is strict where a real provider is strict, so a
//! gateway that works against it is not relying on leniency.

mod authorize;
mod client_auth;
mod discovery;
mod errors;
mod grants;
mod html;
mod keys;
mod logout;
mod params;
mod token;
mod tokens;
mod users;

use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use url::Url;

pub use users::{DEMO_USERS, DemoUser};

use crate::DemoError;
use grants::Grants;
use keys::SigningKey;

/// The audience of every access token the IdP issues: the sample API.
pub const ACCESS_TOKEN_AUDIENCE: &str = "portcullis-demo-api";

/// How the development IdP is set up: its issuer URL and its one confidential client.
#[derive(Clone)]
pub struct DevIdpConfig {
    /// Issuer URL without trailing slash, e.g. `http://127.0.0.1:41234`; the endpoints
    /// (`/authorize`, `/token`, ...) hang off it.
    pub issuer: String,
    /// The one registered client.
    pub client_id: String,
    /// Its secret (`client_secret_basic` or `client_secret_post`).
    pub client_secret: String,
    /// Redirect URIs, matched exactly.
    pub redirect_uris: Vec<String>,
    /// Where `/end_session` may send the browser afterwards, matched exactly.
    pub post_logout_redirect_uris: Vec<String>,
    /// Access-token lifetime; default 5 minutes.
    pub access_token_ttl: Duration,
    /// Refresh-token lifetime, renewed at each rotation; default 12 hours.
    pub refresh_token_ttl: Duration,
    /// Where the signing key is kept (created if missing, mode 0600); `None` (default) keeps
    /// it in memory only, so tokens die with the process.
    pub key_file: Option<PathBuf>,
    /// The client's Back-Channel Logout endpoint (for portcullis: public URL +
    /// `/auth/backchannel-logout`). When set, a logout at `/end_session` posts a signed
    /// logout token there. Default `None`.
    pub backchannel_logout_uri: Option<String>,
}

impl DevIdpConfig {
    /// A config with the demo defaults and no redirect URIs registered yet.
    pub fn new(
        issuer: impl Into<String>,
        client_id: impl Into<String>,
        client_secret: impl Into<String>,
    ) -> Self {
        Self {
            issuer: issuer.into(),
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            redirect_uris: Vec::new(),
            post_logout_redirect_uris: Vec::new(),
            access_token_ttl: Duration::from_secs(5 * 60),
            refresh_token_ttl: Duration::from_secs(12 * 60 * 60),
            key_file: None,
            backchannel_logout_uri: None,
        }
    }

    fn validate(&self) -> Result<(), DemoError> {
        let bad = |what: String| Err(DemoError::Config(what));
        let issuer = Url::parse(&self.issuer)
            .map_err(|e| DemoError::Config(format!("issuer `{}`: {e}", self.issuer)))?;
        if !matches!(issuer.scheme(), "http" | "https")
            || self.issuer.ends_with('/')
            || issuer.query().is_some()
            || issuer.fragment().is_some()
        {
            return bad(format!(
                "issuer `{}` must be an http(s) URL without trailing slash, query or fragment",
                self.issuer
            ));
        }
        if self.client_id.is_empty() || self.client_secret.is_empty() {
            return bad("client_id and client_secret must not be empty".into());
        }
        for uri in self
            .redirect_uris
            .iter()
            .chain(&self.post_logout_redirect_uris)
            .chain(&self.backchannel_logout_uri)
        {
            match Url::parse(uri) {
                Ok(url) if url.fragment().is_none() => {}
                _ => return bad(format!("`{uri}` is not an absolute URL without fragment")),
            }
        }
        if self.access_token_ttl.as_secs() == 0 || self.refresh_token_ttl.as_secs() == 0 {
            return bad("token lifetimes must be at least one second".into());
        }
        Ok(())
    }

    fn endpoint(&self, path: &str) -> String {
        format!("{}{path}", self.issuer)
    }
}

impl fmt::Debug for DevIdpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DevIdpConfig")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("redirect_uris", &self.redirect_uris)
            .field("post_logout_redirect_uris", &self.post_logout_redirect_uris)
            .field("access_token_ttl", &self.access_token_ttl)
            .field("refresh_token_ttl", &self.refresh_token_ttl)
            .field("key_file", &self.key_file)
            .field("backchannel_logout_uri", &self.backchannel_logout_uri)
            .finish()
    }
}

/// Shared by every handler.
#[derive(Debug)]
struct IdpState {
    cfg: DevIdpConfig,
    key: SigningKey,
    grants: Mutex<Grants>,
}

impl IdpState {
    /// The grant store. A panic elsewhere cannot leave it half-updated in a way that
    /// matters for a demo, so a poisoned lock is simply taken over.
    fn grants(&self) -> MutexGuard<'_, Grants> {
        self.grants.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The development OIDC provider. Cheap to clone; clones share state.
#[derive(Debug, Clone)]
pub struct DevIdp {
    state: Arc<IdpState>,
}

impl DevIdp {
    /// Checks the config and loads or generates the signing key.
    pub fn new(cfg: DevIdpConfig) -> Result<Self, DemoError> {
        cfg.validate()?;
        let key = SigningKey::load_or_create(cfg.key_file.as_deref())?;
        Ok(Self {
            state: Arc::new(IdpState {
                cfg,
                key,
                grants: Mutex::new(Grants::default()),
            }),
        })
    }

    /// The issuer URL.
    pub fn issuer(&self) -> &str {
        &self.state.cfg.issuer
    }

    /// The signing key's id (`kid`).
    pub fn kid(&self) -> &str {
        self.state.key.kid()
    }

    /// Every IdP endpoint, at the paths discovery names.
    pub fn router(&self) -> Router {
        Router::new()
            .route(
                "/.well-known/openid-configuration",
                get(discovery::configuration),
            )
            .route("/jwks", get(discovery::jwks))
            .route("/authorize", get(authorize::show).post(authorize::submit))
            .route("/token", post(token::token))
            .route("/userinfo", get(token::userinfo).post(token::userinfo))
            .route("/end_session", get(logout::end_session))
            .route("/logout", get(logout::sign_out_form).post(logout::sign_out))
            .route("/revoke", post(logout::revoke))
            .with_state(self.state.clone())
    }

    /// The JSON Web Key Set `/jwks` serves.
    pub fn jwks(&self) -> Value {
        json!({ "keys": [self.state.key.jwk()] })
    }

    /// Every token presented to `/revoke` by an authenticated client, oldest first.
    pub fn revoked_tokens(&self) -> Vec<String> {
        self.state.grants().revocation_calls()
    }

    /// Serves [`router`](Self::router) on `listener` until the future is dropped. Binds
    /// nothing itself; refuses a listener whose local address is not loopback.
    pub async fn serve(self, listener: TcpListener) -> Result<(), DemoError> {
        crate::net::serve_loopback(listener, self.router()).await
    }
}
