//! The upstream HTTP client (one per upstream, pooled per serving worker),
//! with connect and response-header timeouts mapped to 502/504. Plain-http
//! upstreams use the HTTP/1.1 pool of `pool.rs`; https ones hyper-util's
//! client (HTTP/1.1 or HTTP/2, as ALPN decides), with the route's TLS
//! settings (`tls.rs`: trusted roots, client certificate).

use std::time::Duration;

use axum::{body::Body, extract::Request};
use hyper_rustls::HttpsConnector;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use tokio::time::Instant;

use super::pool::Pool;
use crate::{
    api_error::ApiError,
    deadlines,
    routes::{Route, RouteTable},
    tls::{TlsError, TlsSettings},
};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

pub(super) enum UpstreamClient {
    /// A plain-http upstream: per-worker HTTP/1.1 connection stacks.
    Http1 {
        /// `Host` for its requests: the authority, port only when not the
        /// scheme's default (what a client would build per request).
        host: http::HeaderValue,
        pool: Pool,
    },
    /// https: hyper-util's client, one per serving worker so a worker's
    /// requests use connections driven by its own runtime (see
    /// `workers.rs`). ALPN may pick HTTP/2, where the client sends
    /// `:authority` and no `Host`, so `Host` is left to the client.
    Pooled(Vec<Client<HttpsConnector<HttpConnector>, Body>>),
}

/// One client per upstream of the route table, in its index order: kept
/// beside [`crate::state::Shared`] (by the public service) rather than in
/// it, so that `proxy` sits above the state it reads.
pub(crate) struct Upstreams(Vec<UpstreamClient>);

impl Upstreams {
    /// Fails when a TLS file that passed config validation can no longer be read.
    pub(crate) fn new(table: &RouteTable, workers: usize) -> Result<Self, TlsError> {
        table
            .upstreams()
            .map(|r| UpstreamClient::new(&r.upstream, r.timeout, workers, &r.tls))
            .collect::<Result<_, _>>()
            .map(Self)
    }

    pub(super) fn for_route(&self, route: &Route) -> &UpstreamClient {
        &self.0[route.upstream()]
    }
}

impl UpstreamClient {
    /// A client for one upstream with a pool for each of `workers`;
    /// connecting may take at most `CONNECT_TIMEOUT` or the route's
    /// `timeout`, whichever is shorter. `tls` is read (its files loaded)
    /// only for an https upstream.
    pub(super) fn new(
        upstream: &url::Url,
        timeout: Duration,
        workers: usize,
        tls: &TlsSettings,
    ) -> Result<Self, TlsError> {
        let connect_timeout = CONNECT_TIMEOUT.min(timeout);
        let host = crate::routes::authority(upstream)
            .filter(|_| upstream.scheme() == "http")
            .and_then(|authority| http::HeaderValue::from_str(&authority).ok());
        if let Some(host) = host
            && let Some(pool) = Pool::new(upstream, connect_timeout, workers)
        {
            return Ok(Self::Http1 { host, pool });
        }
        let tls = crate::tls::client_config(tls)?;
        Ok(Self::Pooled(
            (0..workers.max(1))
                .map(|_| pool(connect_timeout, tls.clone()))
                .collect(),
        ))
    }

    /// The `Host` to send, when the client does not set it itself.
    pub(super) fn host(&self) -> Option<&http::HeaderValue> {
        match self {
            Self::Http1 { host, .. } => Some(host),
            Self::Pooled(_) => None,
        }
    }

    /// Whether requests are sent with an origin-form URI (path and query;
    /// the authority in `Host`) rather than an absolute one.
    pub(super) fn takes_origin_form(&self) -> bool {
        matches!(self, Self::Http1 { .. })
    }

    /// Send and wait for the response head until `timeout` after `started`;
    /// the body then streams.
    pub(super) async fn send(
        &self,
        req: Request,
        started: Instant,
        timeout: Duration,
    ) -> Result<http::Response<Body>, ApiError> {
        let clients = match self {
            Self::Http1 { pool, .. } => {
                // The proxy builds origin-form URIs for this client (see
                // `takes_origin_form`).
                return match deadlines::timeout(started, timeout, pool.send(req)).await {
                    Err(_) => Err(ApiError::UpstreamTimeout),
                    Ok(Err(e)) => Err(ApiError::UpstreamUnavailable(e.to_string())),
                    Ok(Ok(resp)) => Ok(resp),
                };
            }
            Self::Pooled(clients) => clients,
        };
        let client = &clients[crate::worker_index::current() % clients.len()];
        match deadlines::timeout(started, timeout, client.request(req)).await {
            Err(_) => Err(ApiError::UpstreamTimeout),
            Ok(Err(e)) => Err(ApiError::UpstreamUnavailable(
                match crate::tls::refusal_reason(&e) {
                    Some(reason) => reason,
                    None if e.is_connect() => "connection failed".into(),
                    None => "request failed".into(),
                },
            )),
            Ok(Ok(resp)) => Ok(resp.map(Body::new)),
        }
    }
}

fn pool(
    connect_timeout: Duration,
    tls: rustls::ClientConfig,
) -> Client<HttpsConnector<HttpConnector>, Body> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(connect_timeout));
    http.set_nodelay(true);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .build(https)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the HTTP client itself would send: the port only when it is not
    /// the scheme's default.
    #[test]
    fn host_is_the_upstream_authority() {
        for (upstream, host) in [
            ("http://127.0.0.1:4111", "127.0.0.1:4111"),
            ("http://api.internal/", "api.internal"),
            ("http://api.internal:80/base", "api.internal"),
            ("http://[::1]:8080", "[::1]:8080"),
        ] {
            let url = url::Url::parse(upstream).unwrap();
            let client =
                UpstreamClient::new(&url, Duration::from_secs(1), 2, &TlsSettings::default())
                    .unwrap();
            assert_eq!(client.host().unwrap(), host, "{upstream}");
            assert!(matches!(client, UpstreamClient::Http1 { .. }), "{upstream}");
        }
        // https: HTTP/1 or HTTP/2 is only known per connection; the client decides.
        let url = url::Url::parse("https://api.example.com:8443").unwrap();
        let client =
            UpstreamClient::new(&url, Duration::from_secs(1), 2, &TlsSettings::default()).unwrap();
        assert!(client.host().is_none());
        assert!(matches!(client, UpstreamClient::Pooled(c) if c.len() == 2));
    }
}
