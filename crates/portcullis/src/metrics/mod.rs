//! Prometheus metrics: the process-global recorder, the `/metrics` text, and
//! the per-route series the request pipeline (`http::pipeline`) records into.
//!
//! The `metrics` facade has one recorder per process. [`install`] sets ours
//! once (a [`OnceLock`]), so a process that builds many gateways (tests, an
//! app embedding several) shares one registry instead of failing the second
//! time. If the embedding application installed its own recorder first, our
//! counters go there and `/metrics` answers 404.
//!
//! Every series is described (its `# HELP` line) in [`describe`]; the
//! `process_*` series come from [`process`] on each scrape.
//!
//! Label cardinality is bounded: `route` is a configured route prefix, an
//! auth endpoint name (`/auth/login`), `auth` for other auth paths, or
//! `static`; never a raw path, never a user id.

mod process;

use std::sync::{
    OnceLock,
    atomic::{AtomicU64, Ordering},
};

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use metrics::{Counter, Gauge, Histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Requests on the public listener, by `route` and `status`.
pub const REQUESTS_TOTAL: &str = "portcullis_requests_total";
/// Public requests being handled: from their arrival until their response
/// head is sent (a streamed body is not waited for).
pub const REQUESTS_IN_FLIGHT: &str = "portcullis_requests_in_flight";
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
/// Every call to the IdP by `endpoint` (`discovery`, `jwks`, `token` for
/// the code exchange, `refresh` for the refresh grant at the token endpoint,
/// `userinfo`, `revocation`) and `outcome` (`ok`, `refused`, `unavailable`,
/// `circuit_open`: not sent because the breaker is open).
pub const IDP_REQUESTS_TOTAL: &str = "portcullis_idp_requests_total";
/// Time of one call to the IdP, by `endpoint`.
pub const IDP_REQUEST_DURATION: &str = "portcullis_idp_request_duration_seconds";
/// The IdP circuit breaker: 0 closed, 1 open, 2 one probe in flight.
pub const IDP_CIRCUIT_STATE: &str = "portcullis_idp_circuit_state";
/// Times the IdP circuit breaker opened.
pub const IDP_CIRCUIT_OPENED_TOTAL: &str = "portcullis_idp_circuit_opened_total";
/// Time of one refresh call to the IdP.
pub const REFRESH_DURATION: &str = "portcullis_refresh_duration_seconds";
/// Sessions in the store, as last counted by the GC task.
pub const SESSIONS_ACTIVE: &str = "portcullis_sessions_active";
/// Session loads through the local cache of a remote store, by `result`
/// (`hit`, `miss`).
pub const SESSION_CACHE_TOTAL: &str = "portcullis_session_cache_total";
/// Stored records that did not open with the configured keys, by `record`
/// (`session`, `login`).
pub const SESSIONS_UNSEALABLE_TOTAL: &str = "portcullis_sessions_unsealable_total";
/// Failed session-store calls that reached a client as 503.
pub const STORE_ERRORS_TOTAL: &str = "portcullis_store_errors_total";
/// Unsafe requests refused by the CSRF check.
pub const CSRF_REJECTIONS_TOTAL: &str = "portcullis_csrf_rejections_total";
/// Connections closed by a limit, by `listener` (`public`, `admin`) and
/// `reason` (`header_timeout`, `idle`, `body_timeout`).
pub const CONNECTIONS_CLOSED_TOTAL: &str = "portcullis_connections_closed_total";
/// By `listener` and `limit`: `max_connections`, times a listener reached
/// the cap and stopped accepting; `per_ip`, connections closed at once
/// because their client held `server.max_connections_per_ip`.
pub const CONNECTION_LIMIT_REACHED_TOTAL: &str = "portcullis_connection_limit_reached_total";
/// Idle HTTP/1 keep-alive connections waiting outside hyper (parked), by
/// `listener`.
pub const CONNECTIONS_PARKED: &str = "portcullis_connections_parked";
/// Always 1, with the `version` label.
pub const BUILD_INFO: &str = "portcullis_build_info";

/// `X-Request-ID`, as a constant name (a `&str` name allocates on every insert).
pub(crate) const X_REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");

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

/// The `# HELP` text of every series. The exporter prints it only for
/// described names, so a series added without a line here has no HELP
/// (`promtool check metrics` and the tests catch that).
fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    for (name, help) in COUNTERS {
        describe_counter!(*name, *help);
    }
    for (name, help) in GAUGES {
        describe_gauge!(*name, *help);
    }
    for (name, help) in HISTOGRAMS {
        describe_histogram!(*name, Unit::Seconds, *help);
    }
}

/// Counters and their HELP text.
pub(crate) const COUNTERS: &[(&str, &str)] = &[
    (REQUESTS_TOTAL, "Public requests by route and status code."),
    (
        UPSTREAM_ERRORS_TOTAL,
        "Upstream failures by route and kind (connect, timeout).",
    ),
    (
        LOGINS_TOTAL,
        "Finished login callbacks by result (success, rejected, error).",
    ),
    (
        LOGOUTS_TOTAL,
        "Logouts by kind (user, backchannel, frontchannel, admin).",
    ),
    (
        REFRESH_TOTAL,
        "Access-token refreshes by result (success, refused, error, limited).",
    ),
    (
        IDP_REQUESTS_TOTAL,
        "Calls to the IdP by endpoint and outcome (ok, refused, unavailable, circuit_open).",
    ),
    (
        IDP_CIRCUIT_OPENED_TOTAL,
        "Times the IdP circuit breaker opened.",
    ),
    (
        SESSION_CACHE_TOTAL,
        "Session loads through the local cache of a remote store, by result (hit, miss).",
    ),
    (
        SESSIONS_UNSEALABLE_TOTAL,
        "Stored records that did not open with the configured encryption keys, by record.",
    ),
    (
        STORE_ERRORS_TOTAL,
        "Session-store failures that reached a client as 503.",
    ),
    (
        CSRF_REJECTIONS_TOTAL,
        "Unsafe requests refused by the CSRF check.",
    ),
    (
        CONNECTIONS_CLOSED_TOTAL,
        "Connections closed by the header, idle or body timeout, by listener and reason.",
    ),
    (
        CONNECTION_LIMIT_REACHED_TOTAL,
        "Connection limits reached: max_connections (times), per_ip (connections closed).",
    ),
];

/// Gauges and their HELP text.
pub(crate) const GAUGES: &[(&str, &str)] = &[
    (
        REQUESTS_IN_FLIGHT,
        "Public requests being handled, until their response head is sent.",
    ),
    (
        IDP_CIRCUIT_STATE,
        "IdP circuit breaker: 0 closed, 1 open, 2 one probe in flight.",
    ),
    (
        SESSIONS_ACTIVE,
        "Sessions in the store, as last counted by the GC task.",
    ),
    (
        CONNECTIONS_PARKED,
        "Idle HTTP/1 keep-alive connections waiting outside hyper (parked), by listener.",
    ),
    (BUILD_INFO, "Always 1; the version label is the gateway's."),
];

/// Histograms (all in seconds) and their HELP text.
pub(crate) const HISTOGRAMS: &[(&str, &str)] = &[
    (
        REQUEST_DURATION,
        "Public request time until the response head, by route.",
    ),
    (
        UPSTREAM_DURATION,
        "Time to the upstream's response head, by route.",
    ),
    (REFRESH_DURATION, "Time of one refresh call to the IdP."),
    (
        IDP_REQUEST_DURATION,
        "Time of one call to the IdP, by endpoint.",
    ),
];

/// Fold recorded histogram samples into their buckets every 5 s until the
/// returned task is aborted. The recorder keeps every sample until then, so
/// without a scraper its memory would grow with each request.
pub(crate) fn spawn_upkeep() -> Option<tokio::task::JoinHandle<()>> {
    let handle = install()?;
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
        loop {
            tick.tick().await;
            handle.run_upkeep();
        }
    }))
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
                {
                    let mut text = handle.render();
                    text.push_str(&process::render());
                    text
                },
            )
                .into_response()
        }
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// The `route` label of a public request, as an index into the labels that
/// [`RequestMetrics::new`] fixes at startup: `static`, `auth`, the auth
/// endpoints, then the proxied routes in `Proxy` order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RouteKey(usize);

/// Auth endpoints with a label of their own (`<auth_prefix>/login`, …).
const AUTH_ENDPOINTS: [&str; 5] = [
    "/login",
    "/callback",
    "/me",
    "/logout",
    "/backchannel-logout",
];

impl RouteKey {
    const STATIC: Self = Self(0);
    const AUTH: Self = Self(1);

    /// The key of proxied route number `index` (in `Proxy` order).
    pub(crate) fn route(index: usize) -> Self {
        Self(2 + AUTH_ENDPOINTS.len() + index)
    }

    /// Whether this is `<auth_prefix>/login` or `/callback`, the endpoints
    /// that start a new session whatever cookies the request carries.
    pub(crate) fn starts_a_session(self) -> bool {
        matches!(
            self.0.checked_sub(2).and_then(|i| AUTH_ENDPOINTS.get(i)),
            Some(&("/login" | "/callback"))
        )
    }

    /// The key of a request that no route proxies, from the rest of its
    /// path after the auth prefix (`crate::http::auth_subpath`): an auth
    /// endpoint, `auth` for other paths under the prefix, else `static`.
    pub(crate) fn unrouted(auth_subpath: Option<&str>) -> Self {
        match auth_subpath {
            Some(rest) => AUTH_ENDPOINTS
                .iter()
                .position(|e| *e == rest)
                .map_or(Self::AUTH, |i| Self(2 + i)),
            None => Self::STATIC,
        }
    }
}

/// `"100101102…999"`: every status code's three digits, so a `status` label
/// is a `'static` slice rather than a fresh `String` per request.
static STATUS_DIGITS: OnceLock<String> = OnceLock::new();

/// The `status` label: the code's three digits.
fn status_label(status: StatusCode) -> metrics::SharedString {
    let digits = STATUS_DIGITS.get_or_init(|| (100..1000u16).map(|c| c.to_string()).collect());
    let i = usize::from(status.as_u16() - 100) * 3;
    match digits.get(i..i + 3) {
        Some(s) => metrics::SharedString::const_str(s),
        None => metrics::SharedString::from_owned(status.as_u16().to_string()),
    }
}

/// A fresh request id: 22 base64url characters, like the 16 random bytes
/// these used to be, but without a system call per request. Request ids are
/// correlation handles, not secrets: a per-process random prefix (64 bits
/// from the OS CSPRNG, drawn once) keeps replicas apart and a counter keeps
/// this process's ids unique.
pub(crate) fn new_request_id() -> HeaderValue {
    const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    static PREFIX: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = *PREFIX.get_or_init(|| {
        let mut buf = [0u8; 8];
        getrandom::fill(&mut buf).expect("OS random number generator failed");
        u64::from_le_bytes(buf)
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut out = [0u8; 22];
    for (i, value) in [prefix, n].into_iter().enumerate() {
        // 11 characters of 6 bits hold all 64 bits.
        for j in 0..11 {
            let shift = 6 * (10 - j);
            let digit = if shift >= 64 {
                0
            } else {
                (value >> shift) & 0x3f
            };
            out[i * 11 + j] = B64[digit as usize];
        }
    }
    HeaderValue::from_bytes(&out).unwrap_or(HeaderValue::from_static("-"))
}

/// Handles of the per-request metrics, registered on first use (the
/// recorder is installed by then) and then found by index: the
/// `metrics::counter!` macros build (and allocate) a labelled key and look
/// it up in the registry on every call. The label set is fixed at startup
/// (see [`RouteKey`]), so requests take no lock and hash nothing here.
pub(crate) struct RequestMetrics {
    /// Indexed by [`RouteKey`].
    routes: Box<[RouteMetrics]>,
    in_flight: OnceLock<Gauge>,
}

/// One request counted in [`REQUESTS_IN_FLIGHT`] until dropped, so that a
/// request whose client went away (its future dropped) is uncounted too.
pub(crate) struct InFlight<'a>(&'a Gauge);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

struct RouteMetrics {
    label: metrics::SharedString,
    duration: OnceLock<Histogram>,
    /// Only for proxied routes, registered on first use so that other routes
    /// get no empty upstream series.
    upstream: OnceLock<Histogram>,
    /// One per status code 100..=999, the range `StatusCode` allows.
    requests: Box<[OnceLock<Counter>]>,
}

impl RequestMetrics {
    /// The labels of `auth_prefix`'s endpoints and of the proxied routes'
    /// `prefixes`, in `Proxy` order.
    pub(crate) fn new<'a>(auth_prefix: &str, prefixes: impl IntoIterator<Item = &'a str>) -> Self {
        let routes = ["static", "auth"]
            .into_iter()
            .map(metrics::SharedString::const_str)
            .chain(
                AUTH_ENDPOINTS
                    .iter()
                    .map(|e| metrics::SharedString::from_owned(format!("{auth_prefix}{e}"))),
            )
            .chain(
                prefixes
                    .into_iter()
                    .map(|p| metrics::SharedString::from_owned(p.to_owned())),
            )
            .map(|label| RouteMetrics {
                label,
                duration: OnceLock::new(),
                upstream: OnceLock::new(),
                requests: (100..1000).map(|_| OnceLock::new()).collect(),
            })
            .collect();
        Self {
            routes,
            in_flight: OnceLock::new(),
        }
    }

    /// Count a request in [`REQUESTS_IN_FLIGHT`] while the guard lives.
    pub(crate) fn in_flight(&self) -> InFlight<'_> {
        let gauge = self
            .in_flight
            .get_or_init(|| metrics::gauge!(REQUESTS_IN_FLIGHT));
        gauge.increment(1.0);
        InFlight(gauge)
    }

    /// The `route` label of `key`.
    pub(crate) fn label(&self, key: RouteKey) -> &str {
        self.routes.get(key.0).map_or("static", |m| &m.label)
    }

    /// One finished public request: [`REQUESTS_TOTAL`] and [`REQUEST_DURATION`].
    pub(crate) fn record_request(&self, key: RouteKey, status: StatusCode, seconds: f64) {
        let Some(m) = self.routes.get(key.0) else {
            return;
        };
        if let Some(counter) = m.requests.get(usize::from(status.as_u16() - 100)) {
            counter
                .get_or_init(|| {
                    metrics::counter!(REQUESTS_TOTAL, "route" => m.label.clone(), "status" => status_label(status))
                })
                .increment(1);
        }
        m.duration
            .get_or_init(|| metrics::histogram!(REQUEST_DURATION, "route" => m.label.clone()))
            .record(seconds);
    }

    /// Time to an upstream's response head: [`UPSTREAM_DURATION`].
    pub(crate) fn record_upstream(&self, key: RouteKey, seconds: f64) {
        if let Some(m) = self.routes.get(key.0) {
            m.upstream
                .get_or_init(|| metrics::histogram!(UPSTREAM_DURATION, "route" => m.label.clone()))
                .record(seconds);
        }
    }
}

/// How long the upstream took to answer with its response head; put in the
/// response extensions by the proxy so the access line can show it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct UpstreamDuration(pub std::time::Duration);

#[cfg(test)]
mod tests {
    #[test]
    fn install_is_idempotent() {
        let a = super::install().map(|h| h as *const _);
        let b = super::install().map(|h| h as *const _);
        assert_eq!(a, b);
        assert!(a.is_some());
    }

    /// Every series the code describes is in the table of
    /// docs/operations.md, and every `portcullis_*` row there is described.
    #[test]
    fn the_documented_series_are_the_described_ones() {
        let docs = include_str!("../../../../docs/operations.md");
        let documented: std::collections::BTreeSet<&str> = docs
            .lines()
            .filter_map(|l| l.strip_prefix("| `")?.split('`').next())
            .filter(|n| n.starts_with("portcullis_"))
            .collect();
        let described: std::collections::BTreeSet<&str> = super::COUNTERS
            .iter()
            .chain(super::GAUGES)
            .chain(super::HISTOGRAMS)
            .map(|(name, _)| *name)
            .collect();
        assert_eq!(documented, described);
    }

    /// Each described series is rendered with its HELP and TYPE lines.
    #[test]
    fn every_described_series_renders_with_help() {
        let handle = super::install().expect("recorder");
        // Zero-valued touches: they register a series without moving any
        // count another test of this binary reads.
        for (name, _) in super::COUNTERS {
            metrics::counter!(*name, "test" => "help").increment(0);
        }
        for (name, _) in super::GAUGES {
            metrics::gauge!(*name, "test" => "help").increment(0.0);
        }
        for (name, _) in super::HISTOGRAMS {
            metrics::histogram!(*name, "test" => "help").record(0.0);
        }
        let text = handle.render();
        for (table, kind) in [
            (super::COUNTERS, "counter"),
            (super::GAUGES, "gauge"),
            (super::HISTOGRAMS, "histogram"),
        ] {
            for (name, help) in table {
                assert!(
                    text.contains(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n")),
                    "{name}:\n{text}"
                );
            }
        }
    }

    #[test]
    fn request_ids_are_unique_base64url() {
        let a = super::new_request_id();
        let b = super::new_request_id();
        assert_ne!(a, b);
        for v in [&a, &b] {
            let s = v.to_str().unwrap();
            assert_eq!(s.len(), 22);
            assert!(
                s.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
            );
        }
        assert_eq!(a.as_bytes()[..11], b.as_bytes()[..11]);
    }

    /// Only login and callback may run beside two session cookies.
    #[test]
    fn only_login_and_callback_start_a_session() {
        use super::RouteKey;
        for (rest, starts) in [
            (Some("/login"), true),
            (Some("/callback"), true),
            (Some("/me"), false),
            (Some("/logout"), false),
            (Some("/backchannel-logout"), false),
            (Some("/other"), false),
            (None, false),
        ] {
            assert_eq!(
                RouteKey::unrouted(rest).starts_a_session(),
                starts,
                "{rest:?}"
            );
        }
        for i in 0..3 {
            assert!(!RouteKey::route(i).starts_a_session());
        }
    }

    #[test]
    fn status_labels_are_the_three_digits() {
        use http::StatusCode;
        for code in [100u16, 200, 404, 503, 999] {
            let s = StatusCode::from_u16(code).unwrap();
            assert_eq!(&*super::status_label(s), code.to_string());
        }
    }
}
