//! HTTP handlers: `/auth/*` (login, callback, me, logout), proxied routes,
//! static files, and the admin endpoints. Errors become responses in
//! `error.rs` only.

mod admin;
mod auth;
mod cookies;
pub mod error;
mod headers;
mod session;
mod static_files;

use std::sync::Arc;

use axum::{
    Router,
    extract::{Request, State},
    middleware,
    response::{IntoResponse, Response},
    routing::get,
};

use crate::gateway::Shared;

pub use error::ApiError;

/// Longest request URI (path + query) we accept; longer → 414.
const MAX_URI_LEN: usize = 8 * 1024;

pub(crate) fn public_router(shared: Arc<Shared>) -> Router {
    let prefix = shared.config.server.auth_prefix.clone();
    let auth = Router::new()
        .route("/login", get(auth::login))
        .route("/callback", get(auth::callback))
        .route("/me", get(auth::me))
        .route(
            "/logout",
            axum::routing::post(auth::logout).get(|| async { ApiError::MethodNotAllowed }),
        )
        .fallback(|| async { ApiError::NotFound })
        .layer(middleware::from_fn_with_state(
            shared.clone(),
            headers::auth_headers,
        ));
    Router::new()
        .nest(&prefix, auth)
        .fallback(dispatch)
        .layer(middleware::from_fn(limit_uri))
        .with_state(shared)
}

pub(crate) fn admin_router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/healthz", get(admin::healthz))
        .route("/readyz", get(admin::readyz))
        .with_state(shared)
}

/// Everything outside the auth prefix: a configured route, else static files.
async fn dispatch(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    if let Some(route) = shared.proxy.match_route(req.uri().path()) {
        return crate::proxy::handle(shared.clone(), route, req).await;
    }
    let mut resp = static_files::serve(&shared, req).await;
    headers::apply_security_headers(&shared, resp.headers_mut());
    resp
}

async fn limit_uri(req: Request, next: middleware::Next) -> Response {
    let len = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().len())
        .unwrap_or(0);
    if len > MAX_URI_LEN {
        return (
            http::StatusCode::URI_TOO_LONG,
            axum::Json(
                serde_json::json!({"error": "bad_request", "message": "request URI too long"}),
            ),
        )
            .into_response();
    }
    next.run(req).await
}

pub(crate) use cookies::owned_names as owned_cookie_names;
pub(crate) use session::{SessionLookup, current_session};
