//! The sample upstream API the gateway proxies to under `/api/`. It trusts nothing but a
//! valid `Authorization: Bearer` access token from the dev IdP (checked against its JWKS),
//! and checks roles itself as defence in depth.

mod auth;
mod handlers;
mod jwks;

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};
use tokio::net::TcpListener;

use crate::DemoError;
use auth::ApiState;
use jwks::JwksCache;

/// The sample API. Cheap to clone; clones share the JWKS cache.
#[derive(Debug, Clone)]
pub struct SampleApi {
    state: Arc<ApiState>,
}

impl SampleApi {
    /// An API accepting access tokens from `issuer`, whose keys are fetched from
    /// `jwks_url` when first needed (and again when a token names an unknown `kid`).
    pub fn new(issuer: String, jwks_url: String) -> Self {
        Self {
            state: Arc::new(ApiState {
                issuer,
                jwks: JwksCache::new(jwks_url),
            }),
        }
    }

    /// `GET /api/whoami`, `GET /api/admin/ping`, `GET /api/hr/ping`, `POST /api/echo`,
    /// `GET /api/stream`; anything else under any path is a JSON 404.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/api/whoami", get(handlers::whoami))
            .route("/api/admin/ping", get(handlers::admin_ping))
            .route("/api/hr/ping", get(handlers::hr_ping))
            .route("/api/echo", post(handlers::echo))
            .route("/api/stream", get(handlers::stream))
            .fallback(handlers::not_found)
            .with_state(self.state.clone())
    }

    /// Serves [`router`](Self::router) on `listener` until the future is dropped; refuses
    /// a listener whose local address is not loopback.
    pub async fn serve(self, listener: TcpListener) -> Result<(), DemoError> {
        crate::net::serve_loopback(listener, self.router()).await
    }
}
