//! Admin listener endpoints: liveness and readiness.

use std::sync::Arc;

use axum::{Json, extract::State, response::IntoResponse};
use http::StatusCode;
use serde_json::json;

use crate::gateway::Shared;

pub(crate) async fn healthz() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

/// Ready when the store answers and the IdP metadata and keys are loaded.
/// Tries to load them if they are not yet, so readiness recovers by itself.
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
    if failing.is_empty() {
        (StatusCode::OK, Json(json!({"status": "ready"})))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "not_ready", "failing": failing})),
        )
    }
}
