//! HTTP handlers: `/auth/*` (login, callback, me, logout), proxied routes,
//! static files, and the admin endpoints. Errors become responses in
//! `error.rs` only.

mod admin;
mod admin_sessions;
mod auth;
mod cookies;
pub mod error;
mod headers;
mod logout_channels;
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
pub use headers::DEFAULT_CSP;

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
        // From the IdP, server to server: no cookies, no CSRF token; the
        // logout token's signature authenticates it.
        .route(
            "/backchannel-logout",
            axum::routing::post(logout_channels::backchannel_logout)
                .get(|| async { ApiError::MethodNotAllowed }),
        )
        .route(
            "/frontchannel-logout",
            get(logout_channels::frontchannel_logout),
        )
        .fallback(|| async { ApiError::NotFound })
        .layer(middleware::from_fn_with_state(
            shared.clone(),
            headers::auth_headers,
        ));
    Router::new()
        .nest(&prefix, auth)
        .fallback(dispatch)
        // One middleware running the three public layers in order, rather
        // than three stacked `from_fn` layers: each of those boxes and clones
        // the inner service and boxes its future on every request.
        .layer(middleware::from_fn_with_state(
            shared.clone(),
            public_layers,
        ))
        .with_state(shared)
}

pub(crate) fn admin_router(shared: Arc<Shared>) -> Router {
    let router = Router::new()
        .route("/healthz", get(admin::healthz))
        .route("/readyz", get(admin::readyz))
        .route("/metrics", get(crate::metrics::render));
    // Without an admin token the session API does not exist (404).
    let router = match shared.config.admin.token {
        Some(_) => router.merge(admin_session_routes(shared.clone())),
        None => router,
    };
    router.with_state(shared)
}

/// `/admin/sessions`: list and end sessions, behind the admin bearer token.
fn admin_session_routes(shared: Arc<Shared>) -> Router<Arc<Shared>> {
    Router::new()
        .route(
            "/admin/sessions",
            get(admin_sessions::list).delete(admin_sessions::delete_by_sub),
        )
        .route(
            "/admin/sessions/{hash}",
            axum::routing::delete(admin_sessions::delete_one),
        )
        .route_layer(middleware::from_fn_with_state(
            shared,
            admin_sessions::require_admin_token,
        ))
}

/// The layers around every public request, outermost first:
/// - `metrics::track`: request id, span, metrics and access log cover every
///   answer, even a 414;
/// - `cors::cors`: outside everything else but metrics, so CORS headers also
///   reach error answers such as a 414 (see cors.rs);
/// - [`limit_uri`].
async fn public_layers(
    State(shared): State<Arc<Shared>>,
    req: Request,
    next: middleware::Next,
) -> Response {
    let shared = &*shared;
    crate::metrics::track(shared, req, move |req| {
        crate::cors::cors(shared, req, move |req| limit_uri(req, next))
    })
    .await
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
pub(crate) use headers::apply_security_headers;
pub(crate) use session::{
    SessionLookup, current_session, current_session_by_hash, session_cookie_hash,
};
