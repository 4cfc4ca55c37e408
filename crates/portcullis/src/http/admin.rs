//! Admin listener endpoints: liveness and readiness.

use std::sync::Arc;

use axum::{Json, extract::State, response::IntoResponse};
use http::StatusCode;
use serde_json::json;

use crate::state::Shared;

pub(crate) async fn healthz() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

/// Ready when the store answers and the IdP metadata and keys have been
/// loaded (tried now if they are not yet, so readiness recovers by itself).
/// Once loaded they stay cached, and an IdP outage after that does not make
/// the gateway unready: static files and every still-valid access token keep
/// working, and taking every replica out of the load balancer would turn a
/// partial outage into a full one. It shows under `degraded` instead, while
/// the IdP's circuit breaker is open.
pub(crate) async fn readyz(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let store = shared.store.ping().await;
    let idp = if shared.oidc.is_ready().await {
        Ok(())
    } else {
        shared.oidc.warm_up().await
    };
    let mut failing = Vec::new();
    if let Err(e) = &store {
        failing.push(json!({"check": "store", "error": e.to_string()}));
    }
    if let Err(e) = &idp {
        failing.push(json!({"check": "idp", "error": e.to_string()}));
    }
    let mut degraded = Vec::new();
    if idp.is_ok() && shared.oidc.breaker.is_open() {
        degraded.push(json!({
            "check": "idp",
            "error": "token endpoint failing: circuit breaker open",
        }));
    }
    if failing.is_empty() {
        (
            StatusCode::OK,
            Json(json!({"status": "ready", "degraded": degraded})),
        )
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "not_ready", "failing": failing, "degraded": degraded})),
        )
    }
}
