//! HTTP handlers: `/auth/*` (login, callback, me, logout), proxied routes,
//! static files, and the admin endpoints. Errors become responses in
//! `error.rs` only.

mod admin;
mod admin_sessions;
mod auth;
mod demo;
mod logout_channels;
pub(crate) mod pipeline;
mod silent_login;
mod static_files;

use std::{net::SocketAddr, sync::Arc};

use axum::{
    Router,
    extract::{ConnectInfo, Request, State},
    middleware,
    response::{IntoResponse, Response},
    routing::get,
};

use crate::state::Shared;

pub use crate::api_error::{Allow, ApiError};
pub use crate::security_headers::DEFAULT_CSP;
// The request-level building blocks the handlers below share with `proxy`
// live in their own modules (below both); named here for the handlers.
use crate::cookies;
pub(crate) use crate::security_headers::apply_security_headers;
pub(crate) use crate::session_lookup::{
    SessionLookup, all_session_cookie_hashes, current_session, current_session_by_hash,
    session_cookie_hash,
};

/// Longest request URI (path + query) we accept; longer → 414.
const MAX_URI_LEN: usize = 8 * 1024;

/// Largest request body the `auth_prefix` endpoints accept; larger → 413.
const AUTH_BODY_LIMIT: usize = 64 * 1024;

/// The public listener's service: the layers of [`public`] around either a
/// configured route (proxied straight away: the hot path) or the router of
/// the auth endpoints and static files.
#[derive(Clone)]
pub(crate) struct PublicService {
    shared: Arc<Shared>,
    /// The routes' upstream clients (see `proxy::Upstreams`).
    upstreams: Arc<crate::proxy::Upstreams>,
    /// `auth_prefix` endpoints, then static files.
    inner: Router,
}

/// The future of one public request.
pub(crate) type PublicFuture = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<Response, std::convert::Infallible>> + Send>,
>;

impl PublicService {
    pub(crate) fn new(shared: Arc<Shared>, upstreams: Arc<crate::proxy::Upstreams>) -> Self {
        Self {
            inner: inner_router(shared.clone()),
            shared,
            upstreams,
        }
    }

    /// Answer `req` from a connection with peer address `peer` (used for
    /// `X-Forwarded-For`). One box per request; a `Router` with `from_fn`
    /// layers boxed (and moved) the request's future at every layer.
    pub(crate) fn serve(this: &Arc<Self>, req: Request, peer: Option<SocketAddr>) -> PublicFuture {
        let this = this.clone();
        Box::pin(async move {
            Ok(pipeline::public(&this.shared, &this.upstreams, &this.inner, req, peer).await)
        })
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
        Box::pin(async move {
            Ok(pipeline::public(&this.shared, &this.upstreams, &this.inner, req, peer).await)
        })
    }
}

/// TRACE, TRACK, CONNECT: 405, never forwarded (TRACE would echo the bearer
/// token the gateway adds back to the page). Any case: methods are
/// case-sensitive, but some upstream stacks upper-case them before dispatch
/// (`trace` would become TRACE there).
fn is_refused_method(method: &http::Method) -> bool {
    let method = method.as_str();
    ["TRACE", "TRACK", "CONNECT"]
        .iter()
        .any(|m| m.eq_ignore_ascii_case(method))
}

/// What a 405 at `path` names in `Allow`: the methods of the endpoint, the
/// route (what the proxy forwards) or the static files that `path` reaches.
fn allowed_methods(shared: &Shared, path: &str) -> Allow {
    if let Some(rest) = auth_subpath(shared, path) {
        return match rest {
            "/logout" | "/backchannel-logout" => Allow::Post,
            _ => Allow::Read,
        };
    }
    // Refused before `screen`: read the path as routing would.
    let canonical = crate::path::canonical(path);
    let path = canonical.as_deref().unwrap_or(path);
    match shared.routes.match_route(path) {
        Some(_) => Allow::Proxied,
        None => Allow::Read,
    }
}

/// What no public handler may see, refused, and the path made canonical
/// (`path`; rewritten in the URI only when it changes, query kept):
/// - an HTTP/1.1 request without `Host`, any request with two (RFC 9112
///   section 3.2); HTTP/2 carries `:authority` instead;
/// - a path with no single reading (400).
fn screen(req: &mut Request) -> Result<(), ApiError> {
    // One lookup for both Host rules.
    let mut hosts = req.headers().get_all(http::header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (_, Some(_)) => return Err(ApiError::BadRequest("more than one Host header".into())),
        (None, None) if req.version() == http::Version::HTTP_11 => {
            return Err(ApiError::BadRequest("missing Host header".into()));
        }
        _ => {}
    }
    let canonical = match crate::path::canonical(req.uri().path()) {
        Ok(std::borrow::Cow::Borrowed(_)) => return Ok(()),
        Ok(std::borrow::Cow::Owned(path)) => path,
        Err(reason) => return Err(ApiError::BadRequest(reason.into())),
    };
    let uri = std::mem::take(req.uri_mut());
    let mut parts = uri.into_parts();
    let path_and_query = match parts.path_and_query.as_ref().and_then(|pq| pq.query()) {
        Some(query) => format!("{canonical}?{query}"),
        None => canonical,
    };
    parts.path_and_query = Some(
        http::uri::PathAndQuery::try_from(path_and_query)
            .map_err(|_| ApiError::BadRequest("invalid path".into()))?,
    );
    *req.uri_mut() =
        http::Uri::from_parts(parts).map_err(|_| ApiError::BadRequest("invalid path".into()))?;
    Ok(())
}

/// For `auth_prefix` itself or a path below it, the rest after the prefix
/// (`""` or `/…`); `None` for every other path.
pub(crate) fn auth_subpath<'a>(shared: &Shared, path: &'a str) -> Option<&'a str> {
    path.strip_prefix(shared.config.server.auth_prefix.as_str())
        .filter(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// Whether the client's `Accept` names HTML (a browser navigating): it then
/// gets a page or a redirect rather than JSON.
pub(crate) fn wants_html(headers: &http::HeaderMap) -> bool {
    accepts(headers, "text/html")
}

/// Whether the client's `Accept` names JSON (a script calling the endpoint).
pub(crate) fn wants_json(headers: &http::HeaderMap) -> bool {
    accepts(headers, "application/json")
}

/// A substring test, not full negotiation: any mention of `media_type` counts.
fn accepts(headers: &http::HeaderMap, media_type: &str) -> bool {
    headers
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains(media_type))
}

fn inner_router(shared: Arc<Shared>) -> Router {
    let prefix = shared.config.server.auth_prefix.clone();
    let auth = Router::new()
        .route("/login", get(auth::login))
        .route("/callback", get(auth::callback))
        .route("/me", get(auth::me))
        .route(
            "/logout",
            axum::routing::post(auth::logout)
                .get(|| async { ApiError::MethodNotAllowed(Allow::Post) }),
        )
        // From the IdP, server to server: no cookies, no CSRF token; the
        // logout token's signature authenticates it.
        .route(
            "/backchannel-logout",
            axum::routing::post(logout_channels::backchannel_logout)
                .get(|| async { ApiError::MethodNotAllowed(Allow::Post) }),
        )
        .route(
            "/frontchannel-logout",
            get(logout_channels::frontchannel_logout),
        )
        .fallback(|| async { ApiError::NotFound })
        // The auth endpoints read small forms at most (a logout token): a
        // larger body is refused with 413 before it is read, by its
        // `Content-Length`, or once it passes the limit (chunked, HTTP/2).
        // Inside the auth headers, so a 413 gets them too.
        .layer(tower_http::limit::RequestBodyLimitLayer::new(
            AUTH_BODY_LIMIT,
        ))
        // axum's extractors would allow 2 MiB otherwise.
        .layer(axum::extract::DefaultBodyLimit::max(AUTH_BODY_LIMIT))
        .layer(middleware::from_fn_with_state(
            shared.clone(),
            crate::security_headers::auth_headers,
        ));
    let router = Router::new().nest(&prefix, auth);
    // Only `portcullis demo` sets the event sink; without it these paths
    // do not exist and fall through to the static files.
    let router = match shared.demo {
        Some(_) => router
            .route("/demo/events", get(demo::events))
            .route("/demo/session", get(demo::session)),
        None => router,
    };
    router.fallback(static_fallback).with_state(shared)
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
    apply_security_headers(&shared, resp.headers_mut());
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

#[cfg(test)]
mod tests {
    use super::{is_refused_method, screen};
    use axum::{body::Body, extract::Request};
    use http::{Version, header::HOST};

    fn req(method: &str, uri: &str, version: Version, host: bool) -> Request {
        let mut b = Request::builder().method(method).uri(uri).version(version);
        if host {
            b = b.header(HOST, "gw");
        }
        b.body(Body::empty()).expect("request")
    }

    #[test]
    fn screen_rewrites_the_path_only_and_keeps_scheme_authority_and_query() {
        let mut r = req("GET", "/api/%61b?x=%61&y", Version::HTTP_11, true);
        screen(&mut r).expect("accepted");
        assert_eq!(r.uri(), "/api/ab?x=%61&y");
        // HTTP/2: no Host header, `:authority` in the URI.
        let mut r = req("GET", "https://gw/api/%7e", Version::HTTP_2, false);
        screen(&mut r).expect("accepted");
        assert_eq!(r.uri(), "https://gw/api/~");
        let mut r = req("GET", "/api/x", Version::HTTP_10, false);
        assert!(screen(&mut r).is_ok());
    }

    #[test]
    fn trace_track_connect_are_refused_in_any_case() {
        for m in ["TRACE", "TRACK", "CONNECT", "trace", "Track"] {
            assert!(is_refused_method(&m.parse().expect("method")), "{m}");
        }
        for m in ["GET", "POST", "OPTIONS", "TRACER"] {
            assert!(!is_refused_method(&m.parse().expect("method")), "{m}");
        }
    }

    #[test]
    fn screen_refuses_missing_host_and_ambiguous_paths() {
        let mut r = req("GET", "/api/x", Version::HTTP_11, false);
        assert!(matches!(
            screen(&mut r),
            Err(super::ApiError::BadRequest(_))
        ));
        let mut r = req("GET", "/api/x/..;/admin", Version::HTTP_2, false);
        assert!(matches!(
            screen(&mut r),
            Err(super::ApiError::BadRequest(_))
        ));
    }
}
