//! Admin listener endpoints: liveness and readiness.

use std::sync::Arc;

use axum::{Json, extract::State, response::IntoResponse};
use http::StatusCode;
use serde_json::json;

use crate::gateway::Shared;

pub(crate) async fn healthz() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

/// Ready when the store answers. The IdP's state is reported, not required:
/// during an IdP outage static files and every still-valid access token keep
/// working, and taking every replica out of the load balancer would turn a
/// partial outage into a full one. The IdP shows under `degraded` while its
/// metadata and keys cannot be loaded or its circuit breaker is open.
/// Tries to load them if they are not yet, so the report recovers by itself.
pub(crate) async fn readyz(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let store = shared.store.ping().await;
    let idp = if shared.oidc.breaker.is_open() {
        Err("token endpoint failing: circuit breaker open".to_string())
    } else if shared.oidc.is_ready().await {
        Ok(())
    } else {
        shared.oidc.warm_up().await.map_err(|e| e.to_string())
    };
    let degraded = match &idp {
        Ok(()) => vec![],
        Err(e) => vec![json!({"check": "idp", "error": e})],
    };
    match store {
        Ok(()) => (
            StatusCode::OK,
            Json(json!({"status": "ready", "degraded": degraded})),
        ),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({
                "status": "not_ready",
                "failing": [{"check": "store", "error": e.to_string()}],
                "degraded": degraded,
            })),
        ),
    }
}
