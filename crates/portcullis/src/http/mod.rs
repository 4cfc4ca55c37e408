//! HTTP handlers: `/auth/*` (login, callback, me, logout), proxied routes,
//! static files, and the admin endpoints. Errors become responses in
//! `error.rs` only.

mod admin;
mod admin_sessions;
mod auth;
mod cookies;
pub mod error;
mod headers;
mod login_cookie;
mod logout_channels;
mod session;
mod static_files;

use std::{net::SocketAddr, sync::Arc};

use axum::{
    Router,
    extract::{ConnectInfo, Request, State},
    middleware,
    response::{IntoResponse, Response},
    routing::get,
};

use crate::{gateway::Shared, metrics::RouteKey};

pub use error::ApiError;
pub use headers::DEFAULT_CSP;
pub(crate) use login_cookie::LoginCookies;

/// Longest request URI (path + query) we accept; longer → 414.
const MAX_URI_LEN: usize = 8 * 1024;

/// The public listener's service: the layers of [`public`] around either a
/// configured route (proxied straight away: the hot path) or the router of
/// the auth endpoints and static files.
#[derive(Clone)]
pub(crate) struct PublicService {
    shared: Arc<Shared>,
    /// `auth_prefix` endpoints, then static files.
    inner: Router,
}

/// The future of one public request.
pub(crate) type PublicFuture = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<Response, std::convert::Infallible>> + Send>,
>;

impl PublicService {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self {
            inner: inner_router(shared.clone()),
            shared,
        }
    }

    pub(crate) fn shared(&self) -> &Shared {
        &self.shared
    }

    /// Answer `req` from a connection with peer address `peer` (used for
    /// `X-Forwarded-For`). One box per request; a `Router` with `from_fn`
    /// layers boxed (and moved) the request's future at every layer.
    pub(crate) fn serve(this: &Arc<Self>, req: Request, peer: Option<SocketAddr>) -> PublicFuture {
        let this = this.clone();
        Box::pin(async move { Ok(public(&this.shared, &this.inner, req, peer).await) })
    }
}

/// As a tower service (inside [`crate::Gateway::router`]), the peer address
/// comes from axum's `ConnectInfo`, when the router is served with it.
impl tower::Service<Request> for PublicService {
    type Response = Response;
    type Error = std::convert::Infallible;
    type Future = PublicFuture;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let this = self.clone();
        let peer = req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0);
        Box::pin(async move { Ok(public(&this.shared, &this.inner, req, peer).await) })
    }
}

/// The layers around every public request, outermost first:
/// - `metrics::track`: request id, span, metrics and access log cover every
///   answer, even a 414;
/// - `cors::cors`: outside everything else but metrics, so CORS headers also
///   reach error answers such as a 414 (see cors.rs);
/// - the URI length limit (414);
///
/// then the request goes to its route's proxy or to the inner router. Paths
/// under `auth_prefix` always reach the auth endpoints, even when a route
/// prefix (e.g. `/`) also matches them.
async fn public(
    shared: &Arc<Shared>,
    inner: &Router,
    req: Request,
    peer: Option<SocketAddr>,
) -> Response {
    let path = req.uri().path();
    let auth = auth_subpath(shared, path);
    let route = match auth {
        Some(_) => None,
        None => shared.proxy.match_route(path),
    };
    let key = route.map_or_else(|| RouteKey::unrouted(auth), |r| r.key());
    crate::metrics::track(shared, key, req, move |req, identity| {
        crate::cors::cors(shared, req, move |req| async move {
            if let Some(too_long) = uri_too_long(&req) {
                return too_long;
            }
            if let Some(route) = route {
                let caller = crate::proxy::Caller {
                    peer,
                    request_id: identity.request_id,
                    session: identity.session,
                };
                return Box::pin(crate::proxy::handle(shared, route, req, caller)).await;
            }
            // Handlers may extract `ConnectInfo`, as under `axum::serve`.
            let mut req = req;
            if let Some(peer) = peer
                && req.extensions().get::<ConnectInfo<SocketAddr>>().is_none()
            {
                req.extensions_mut().insert(ConnectInfo(peer));
            }
            // Both boxed: each path's future is kilobytes, and inline they
            // would make every request's future (copied as it is built) the
            // size of the larger.
            match Box::pin(tower::ServiceExt::oneshot(inner.clone(), req)).await {
                Ok(resp) => resp,
                Err(never) => match never {},
            }
        })
    })
    .await
}

/// For `auth_prefix` itself or a path below it, the rest after the prefix
/// (`""` or `/…`); `None` for every other path.
pub(crate) fn auth_subpath<'a>(shared: &Shared, path: &'a str) -> Option<&'a str> {
    path.strip_prefix(shared.config.server.auth_prefix.as_str())
        .filter(|rest| rest.is_empty() || rest.starts_with('/'))
}

fn inner_router(shared: Arc<Shared>) -> Router {
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
        .fallback(static_fallback)
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

/// Everything outside the auth prefix and the routes: static files.
async fn static_fallback(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let mut resp = static_files::serve(&shared, req).await;
    headers::apply_security_headers(&shared, resp.headers_mut());
    resp
}

/// A 414 when the request URI (path + query) is longer than [`MAX_URI_LEN`].
fn uri_too_long(req: &Request) -> Option<Response> {
    let len = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().len())
        .unwrap_or(0);
    (len > MAX_URI_LEN).then(|| {
        (
            http::StatusCode::URI_TOO_LONG,
            axum::Json(
                serde_json::json!({"error": "bad_request", "message": "request URI too long"}),
            ),
        )
            .into_response()
    })
}

pub(crate) use cookies::owned_names as owned_cookie_names;
pub(crate) use headers::apply_security_headers;
pub(crate) use session::{
    SessionLookup, current_session, current_session_by_hash, session_cookie_hash,
};
