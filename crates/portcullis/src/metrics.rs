//! Prometheus metrics: the process-global recorder, the `/metrics` text, and
//! the per-request middleware that counts and times every public request and
//! writes the access-log line.
//!
//! The `metrics` facade has one recorder per process. [`install`] sets ours
//! once (a [`OnceLock`]), so a process that builds many gateways (tests, an
//! app embedding several) shares one registry instead of failing the second
//! time. If the embedding application installed its own recorder first, our
//! counters go there and `/metrics` answers 404.
//!
//! Label cardinality is bounded: `route` is a configured route prefix, an
//! auth endpoint name (`/auth/login`), `auth` for other auth paths, or
//! `static`; never a raw path, never a user id.

use std::{
    sync::{Arc, OnceLock},
    time::Instant,
};

use axum::{
    extract::{Request, State},
    middleware::Next,
    response::{IntoResponse, Response},
};
use http::{HeaderValue, StatusCode, header};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing::Instrument as _;

use crate::{gateway::Shared, session::SessionId};

/// Requests on the public listener, by `route` and `status`.
pub const REQUESTS_TOTAL: &str = "portcullis_requests_total";
/// Wall time of public requests until the response head, by `route`.
pub const REQUEST_DURATION: &str = "portcullis_request_duration_seconds";
/// Time to the upstream's response head, by `route`.
pub const UPSTREAM_DURATION: &str = "portcullis_upstream_duration_seconds";
/// Upstream failures by `route` and `kind` (`connect`, `timeout`).
pub const UPSTREAM_ERRORS_TOTAL: &str = "portcullis_upstream_errors_total";
/// Finished callbacks by `result` (`success`, `rejected`, `error`).
pub const LOGINS_TOTAL: &str = "portcullis_logins_total";
/// Logouts by `kind` (`user`, `backchannel`).
pub const LOGOUTS_TOTAL: &str = "portcullis_logouts_total";
/// Token refreshes by `result` (`success`, `refused`, `error`).
pub const REFRESH_TOTAL: &str = "portcullis_refresh_total";
/// Time of one refresh call to the IdP.
pub const REFRESH_DURATION: &str = "portcullis_refresh_duration_seconds";
/// Sessions in the store, as last counted by the GC task.
pub const SESSIONS_ACTIVE: &str = "portcullis_sessions_active";
/// Failed session-store calls that reached a client as 503.
pub const STORE_ERRORS_TOTAL: &str = "portcullis_store_errors_total";
/// Unsafe requests refused by the CSRF check.
pub const CSRF_REJECTIONS_TOTAL: &str = "portcullis_csrf_rejections_total";
/// Always 1, with the `version` label.
pub const BUILD_INFO: &str = "portcullis_build_info";

/// Histogram buckets (seconds) for request, upstream and refresh durations.
const DURATION_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Install the Prometheus recorder once per process; later calls return the
/// same handle. `None` when another recorder was installed first.
pub fn install() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), DURATION_BUCKETS)
                .ok()?;
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder is already installed; /metrics is disabled");
                return None;
            }
            describe();
            metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
            Some(handle)
        })
        .as_ref()
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(REQUESTS_TOTAL, "Public requests by route and status");
    describe_histogram!(REQUEST_DURATION, Unit::Seconds, "Public request duration");
    describe_histogram!(UPSTREAM_DURATION, Unit::Seconds, "Upstream response time");
    describe_counter!(UPSTREAM_ERRORS_TOTAL, "Upstream failures by kind");
    describe_counter!(LOGINS_TOTAL, "Login callbacks by result");
    describe_counter!(LOGOUTS_TOTAL, "Logouts by kind");
    describe_counter!(REFRESH_TOTAL, "Access-token refreshes by result");
    describe_histogram!(REFRESH_DURATION, Unit::Seconds, "Refresh call duration");
    describe_gauge!(SESSIONS_ACTIVE, "Sessions in the store (counted by GC)");
    describe_counter!(STORE_ERRORS_TOTAL, "Failed session-store calls");
    describe_counter!(CSRF_REJECTIONS_TOTAL, "Requests refused by the CSRF check");
    describe_gauge!(BUILD_INFO, "Build information");
}

/// `GET /metrics` on the admin router: Prometheus text format.
pub(crate) async fn render() -> Response {
    match install() {
        Some(handle) => {
            handle.run_upkeep();
            (
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                )],
                handle.render(),
            )
                .into_response()
        }
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// The bounded `route` label of a request path.
pub(crate) fn route_label(shared: &Shared, path: &str) -> String {
    let prefix = &shared.config.server.auth_prefix;
    if let Some(rest) = path.strip_prefix(prefix.as_str())
        && (rest.is_empty() || rest.starts_with('/'))
    {
        return match rest {
            "/login" | "/callback" | "/me" | "/logout" | "/backchannel-logout" => {
                format!("{prefix}{rest}")
            }
            _ => "auth".to_string(),
        };
    }
    match shared.proxy.match_route(path) {
        Some(route) => route.prefix.clone(),
        None => "static".to_string(),
    }
}

/// Outermost layer of the public router: gives every request an id (kept
/// from `X-Request-ID` when sane, else generated; passed on to upstreams and
/// echoed in the response), opens the span that every log line of the
/// request carries (request id and a short session-hash prefix, never the
/// cookie itself), records the metrics, and logs one access line.
pub(crate) async fn track(
    State(shared): State<Arc<Shared>>,
    mut req: Request,
    next: Next,
) -> Response {
    let start = Instant::now();
    let request_id = match req
        .headers()
        .get("x-request-id")
        .filter(|v| v.len() <= 128 && v.to_str().is_ok_and(|s| !s.is_empty()))
    {
        Some(v) => v.clone(),
        None => {
            let v = HeaderValue::from_str(&crate::session::random_token(16))
                .unwrap_or(HeaderValue::from_static("-"));
            req.headers_mut().insert("x-request-id", v.clone());
            v
        }
    };
    let route = route_label(&shared, req.uri().path());
    let method = req.method().clone();
    let session = session_prefix(&shared, &req);
    let span = tracing::info_span!(
        "request",
        request_id = request_id.to_str().unwrap_or("-"),
        session = session.as_deref().unwrap_or("-"),
        // Filled in by the session lookup when `server.log_user` is on.
        user = tracing::field::Empty,
        // The W3C trace id of an incoming `traceparent` (forwarded to upstreams
        // unchanged), to find the request in the caller's traces.
        trace_id = trace_id(&req).unwrap_or("-"),
    );
    let mut resp = next.run(req).instrument(span.clone()).await;
    let elapsed = start.elapsed();
    let status = resp.status();
    metrics::counter!(REQUESTS_TOTAL, "route" => route.clone(), "status" => status.as_u16().to_string())
        .increment(1);
    metrics::histogram!(REQUEST_DURATION, "route" => route.clone()).record(elapsed.as_secs_f64());
    resp.headers_mut()
        .entry("x-request-id")
        .or_insert(request_id);
    span.in_scope(|| {
        tracing::info!(
            target: "portcullis::access",
            method = %method,
            route = %route,
            status = status.as_u16(),
            duration_ms = elapsed.as_secs_f64() * 1000.0,
            "request"
        );
    });
    resp
}

/// The trace id of a well-formed `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`).
fn trace_id(req: &Request) -> Option<&str> {
    let value = req.headers().get("traceparent")?.to_str().ok()?;
    let mut parts = value.split('-');
    let (_version, trace, parent, _flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    (hex(trace, 32) && hex(parent, 16) && trace.bytes().any(|b| b != b'0')).then_some(trace)
}

/// First characters of the SHA-256 of the session cookie, for log correlation.
fn session_prefix(shared: &Shared, req: &Request) -> Option<String> {
    let name = &shared.config.session.cookie_name;
    req.headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| k == name)
        .and_then(|(_, v)| SessionId::parse(v))
        .map(|id| id.hash().short().to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn install_is_idempotent() {
        let a = super::install().map(|h| h as *const _);
        let b = super::install().map(|h| h as *const _);
        assert_eq!(a, b);
        assert!(a.is_some());
    }
}
