//! A pooled upstream HTTP client (one per upstream) (HTTP/1.1 and HTTP/2, http and https),
//! with connect and response-header timeouts mapped to 502/504.

use std::time::Duration;

use axum::{body::Body, extract::Request};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};

use crate::http::ApiError;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

pub(super) struct UpstreamClient {
    client: Client<HttpsConnector<HttpConnector>, Body>,
}

impl UpstreamClient {
    /// A client for one upstream; connecting may take at most `CONNECT_TIMEOUT`
    /// or the route's `timeout`, whichever is shorter.
    pub(super) fn new(timeout: Duration) -> Self {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(CONNECT_TIMEOUT.min(timeout)));
        http.set_nodelay(true);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .build(https);
        Self { client }
    }

    /// Send and wait for the response head at most `timeout`; the body then streams.
    pub(super) async fn send(
        &self,
        req: Request,
        timeout: Duration,
    ) -> Result<http::Response<Incoming>, ApiError> {
        match tokio::time::timeout(timeout, self.client.request(req)).await {
            Err(_) => Err(ApiError::UpstreamTimeout),
            Ok(Err(e)) => Err(ApiError::UpstreamUnavailable(if e.is_connect() {
                "connection failed".into()
            } else {
                "request failed".into()
            })),
            Ok(Ok(resp)) => Ok(resp),
        }
    }
}
