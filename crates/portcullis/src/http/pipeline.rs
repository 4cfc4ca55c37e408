//! The path of one public request, stage by stage, outermost first. Each
//! stage is a plain function here; the order is the design.
//!
//! 1. **screen** ([`super::screen`]): TRACE/TRACK/CONNECT (405), a missing
//!    or doubled `Host`, a path with no single reading (400) are refused, and
//!    the path is made canonical. First, so that every later stage — the auth
//!    prefix test, the route match, role rules, CSRF, static files and the
//!    upstream — reads the same path.
//! 2. **route**: the auth endpoints, a configured route, or static files,
//!    decided once on the canonical path. Paths under `auth_prefix` always
//!    reach the auth endpoints, even when a route prefix (`/`) also matches.
//!    Before [`observe`], because the metrics label is the route.
//! 3. **observe** ([`observe`]): request id, session cookie hash (two
//!    different session cookies are refused here), the span every log line of
//!    the request carries, metrics and the access log. Outside everything
//!    below, so that every answer is counted and logged — even a 414 or a
//!    refusal from stage 1.
//! 4. **cors** ([`cors`]): outside everything else but observe, so CORS
//!    headers also reach error answers (an allowed SPA must be able to read a
//!    401 body), and preflights are answered or refused before any handler.
//! 5. **limits**: the URI length (414), then a refusal from stages 1-2.
//! 6. **dispatch**: the route's proxy (the hot path) or the inner router
//!    (auth endpoints, static files). Both boxed: each future is kilobytes,
//!    and inline they would make every request's future the size of the
//!    larger.
//!
//! [`RequestContext`] is what stages 2-3 found out, built once and passed
//! down, so nothing looks again.

use std::{net::SocketAddr, sync::Arc, time::Instant};

use axum::{
    Router,
    extract::{ConnectInfo, Request},
    response::{IntoResponse, Response},
};
use tracing::Instrument as _;

use super::{ApiError, allowed_methods, auth_subpath, is_refused_method, screen, uri_too_long};
use crate::{
    context::RequestContext,
    cors::CorsPolicy,
    csrf::CsrfError,
    metrics::{RouteKey, UpstreamDuration, X_REQUEST_ID, new_request_id},
    proxy::Upstreams,
    session::SessionHash,
    state::Shared,
};

/// One public request through every stage.
pub(crate) async fn public(
    shared: &Arc<Shared>,
    upstreams: &Upstreams,
    inner: &Router,
    mut req: Request,
    peer: Option<SocketAddr>,
) -> Response {
    // 1. screen
    let mut refused = if is_refused_method(req.method()) {
        Some(ApiError::MethodNotAllowed(allowed_methods(
            shared,
            req.uri().path(),
        )))
    } else {
        screen(&mut req).err()
    };
    // 2. route
    let path = req.uri().path();
    let auth = match refused {
        Some(_) => None,
        None => auth_subpath(shared, path),
    };
    let route = match (&refused, auth) {
        (None, None) => shared.routes.route_for(path).unwrap_or_else(|e| {
            refused = Some(e.into());
            None
        }),
        _ => None,
    };
    let key = route.map_or_else(|| RouteKey::unrouted(auth), |r| r.key());
    // 3. observe
    observe(shared, key, peer, req, move |req, ctx| {
        // 4. cors
        cors(shared.cors.as_ref(), req, move |req| async move {
            // 5. limits
            if let Some(too_long) = uri_too_long(&req) {
                return too_long;
            }
            if let Some(refused) = refused {
                return refused.into_response();
            }
            // 6. dispatch
            if let Some(route) = route {
                return Box::pin(crate::proxy::handle(shared, upstreams, route, req, ctx)).await;
            }
            // Handlers may extract `ConnectInfo`, as under `axum::serve`.
            let mut req = req;
            if let Some(peer) = ctx.peer
                && req.extensions().get::<ConnectInfo<SocketAddr>>().is_none()
            {
                req.extensions_mut().insert(ConnectInfo(peer));
            }
            match Box::pin(tower::ServiceExt::oneshot(inner.clone(), req)).await {
                Ok(resp) => resp,
                Err(never) => match never {},
            }
        })
    })
    .await
}

/// Stage 3: gives the request its id, finds its session cookie's hash,
/// opens the span (request id and a short session-hash prefix, never the
/// cookie), records the metrics and logs one access line. `next` gets the
/// [`RequestContext`].
pub(crate) async fn observe<F, Fut>(
    shared: &Shared,
    route: RouteKey,
    peer: Option<SocketAddr>,
    mut req: Request,
    next: F,
) -> Response
where
    F: FnOnce(Request, RequestContext) -> Fut,
    Fut: Future<Output = Response>,
{
    let start = Instant::now();
    let in_flight = shared.metrics.in_flight();
    let request_id = match req
        .headers()
        .get(&X_REQUEST_ID)
        .filter(|v| v.len() <= 128 && v.to_str().is_ok_and(|s| !s.is_empty()))
    {
        Some(v) => v.clone(),
        None => {
            let v = new_request_id();
            req.headers_mut().insert(X_REQUEST_ID, v.clone());
            v
        }
    };
    let method = req.method().clone();
    // Hashed once here; the session lookup gets it from the context.
    // Two different session cookies are refused here, before any handler
    // could pick one (see `cookies::find_exact`).
    // Login and callback run as without a session instead: a second cookie
    // planted by a sibling subdomain must not keep the user from logging in
    // again, and the callback clears such copies.
    let (session, ambiguous) = match super::session_cookie_hash(shared, req.headers()) {
        Ok(session) => (session, None),
        Err(_) if route.starts_a_session() => (None, None),
        Err(e) => (None, Some(e)),
    };
    let span = tracing::info_span!(
        "request",
        request_id = request_id.to_str().unwrap_or("-"),
        session = session.as_ref().map_or("-", SessionHash::short),
        // Filled in by the session lookup when `server.log_user` is on.
        user = tracing::field::Empty,
        // The W3C trace id of an incoming `traceparent` (forwarded to upstreams
        // unchanged), to find the request in the caller's traces.
        trace_id = trace_id(&req).unwrap_or("-"),
    );
    let ctx = RequestContext {
        request_id: request_id.clone(),
        session,
        peer,
    };
    let mut resp = match ambiguous {
        None => next(req, ctx).instrument(span.clone()).await,
        Some(e) => span.in_scope(|| {
            tracing::warn!(reason = %e, "request refused");
            e.into_response()
        }),
    };
    let elapsed = start.elapsed();
    drop(in_flight);
    let status = resp.status();
    shared
        .metrics
        .record_request(route, status, elapsed.as_secs_f64());
    resp.headers_mut().entry(X_REQUEST_ID).or_insert(request_id);
    // Set by the proxy on responses that came from an upstream.
    let upstream_ms = resp
        .extensions()
        .get::<UpstreamDuration>()
        .map(|d| d.0.as_secs_f64() * 1000.0);
    span.in_scope(|| {
        tracing::info!(
            target: "portcullis::access",
            method = %method,
            route = shared.metrics.label(route),
            status = status.as_u16(),
            duration_ms = elapsed.as_secs_f64() * 1000.0,
            upstream_ms,
            "request"
        );
    });
    resp
}

/// The trace id of a well-formed `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`).
fn trace_id(req: &Request) -> Option<&str> {
    // A constant name: looking up a `&str` would parse and hash it each time.
    const TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");
    let value = req.headers().get(TRACEPARENT)?.to_str().ok()?;
    let mut parts = value.split('-');
    let (_version, trace, parent, _flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    (hex(trace, 32) && hex(parent, 16) && trace.bytes().any(|b| b != b'0')).then_some(trace)
}

/// Stage 4: the only source of CORS headers (see `cors.rs` for the policy).
/// CORS off: every preflight is refused here (403, no CORS headers), and the
/// proxy strips upstream `Access-Control-*` headers.
pub(crate) async fn cors<F, Fut>(policy: Option<&CorsPolicy>, req: Request, next: F) -> Response
where
    F: FnOnce(Request) -> Fut,
    Fut: Future<Output = Response>,
{
    let cross_site = || {
        crate::csrf::count_refusal(&CsrfError::CrossSite);
        ApiError::Csrf(CsrfError::CrossSite).into_response()
    };
    let Some(policy) = policy else {
        if crate::cors::is_preflight(&req) {
            return cross_site();
        }
        return next(req).await;
    };
    let origin = policy.allowed_origin(req.headers());
    if crate::cors::is_preflight(&req) {
        return match origin {
            Some(origin) => policy.preflight_answer(origin),
            // A preflight from anywhere else is refused here, never proxied.
            None => {
                let mut resp = cross_site();
                crate::cors::add_preflight_vary(resp.headers_mut());
                resp
            }
        };
    }
    let mut resp = next(req).await;
    policy.decorate(origin, resp.headers_mut());
    resp
}
