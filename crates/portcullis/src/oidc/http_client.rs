//! The HTTP client used for every IdP call: rustls with the roots of
//! `oidc.ca_file` / `oidc.tls_roots` (`tls.rs`), timeouts, no redirects
//! (a redirect from a token endpoint is never legitimate and invites SSRF),
//! and response bodies read with a size cap.

use std::time::Duration;

use serde::de::DeserializeOwned;

use super::OidcError;
use crate::tls::{TlsSettings, TrustConfig};

/// Largest IdP response body we read (metadata, JWKS, token, userinfo).
const MAX_BODY: usize = 1024 * 1024;

pub(super) fn build(timeout: Duration, trust: &TrustConfig) -> Result<reqwest::Client, OidcError> {
    let settings = TlsSettings {
        trust: trust.clone(),
        identity: None,
    };
    let mut tls = crate::tls::client_config(&settings)
        .map_err(|e| OidcError::Unavailable(format!("IdP client TLS: {e}")))?;
    // What reqwest offers when it builds its own TLS config.
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .connect_timeout(timeout)
        .user_agent(concat!("portcullis/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| OidcError::Unavailable(format!("cannot build HTTP client: {e}")))
}

pub(super) fn transport_error(what: &str, e: reqwest::Error) -> OidcError {
    let kind = if e.is_timeout() {
        "timed out".into()
    } else if let Some(reason) = crate::tls::refusal_reason(&e) {
        reason
    } else if e.is_connect() {
        "connection failed".into()
    } else {
        "request failed".into()
    };
    OidcError::Unavailable(format!("{what}: {kind}"))
}

/// Run one IdP call, counting it by endpoint and outcome and timing it.
pub(super) async fn observed<T>(
    endpoint: &'static str,
    call: impl Future<Output = Result<T, OidcError>>,
) -> Result<T, OidcError> {
    let started = std::time::Instant::now();
    let out = call.await;
    metrics::histogram!(crate::metrics::IDP_REQUEST_DURATION, "endpoint" => endpoint)
        .record(started.elapsed().as_secs_f64());
    count(endpoint, outcome(&out));
    out
}

pub(super) fn count(endpoint: &'static str, outcome: &'static str) {
    metrics::counter!(crate::metrics::IDP_REQUESTS_TOTAL, "endpoint" => endpoint, "outcome" => outcome)
        .increment(1);
}

fn outcome<T>(out: &Result<T, OidcError>) -> &'static str {
    match out {
        Ok(_) => "ok",
        Err(e) if e.fault() == crate::fault::Fault::IdpRefused => "refused",
        Err(_) => "unavailable",
    }
}

/// Read a body of at most [`MAX_BODY`] bytes.
pub(super) async fn read_body(
    what: &str,
    mut resp: reqwest::Response,
) -> Result<Vec<u8>, OidcError> {
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| transport_error(what, e))? {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(OidcError::InvalidResponse(format!(
                "{what}: response too large"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// GET-style response handling: 2xx JSON → `T`; 5xx → unavailable; anything else → invalid.
pub(super) async fn json_response<T: DeserializeOwned>(
    what: &str,
    resp: reqwest::Response,
) -> Result<T, OidcError> {
    let status = resp.status();
    if status.is_server_error() {
        return Err(OidcError::Unavailable(format!("{what}: HTTP {status}")));
    }
    if !status.is_success() {
        return Err(OidcError::InvalidResponse(format!("{what}: HTTP {status}")));
    }
    let body = read_body(what, resp).await?;
    serde_json::from_slice(&body)
        .map_err(|e| OidcError::InvalidResponse(format!("{what}: not valid JSON ({e})")))
}

/// `Cache-Control: max-age=N` of a response; `no-store`/`no-cache` count as 0.
pub(super) fn max_age(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::CACHE_CONTROL)?.to_str().ok()?;
    let mut found = None;
    for directive in value.split(',').map(str::trim) {
        let lower = directive.to_ascii_lowercase();
        if lower == "no-store" || lower == "no-cache" {
            return Some(Duration::ZERO);
        }
        if let Some(n) = lower.strip_prefix("max-age=") {
            found = n
                .trim_matches('"')
                .parse::<u64>()
                .ok()
                .map(Duration::from_secs);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cc(v: &str) -> Option<Duration> {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(reqwest::header::CACHE_CONTROL, v.parse().unwrap());
        max_age(&h)
    }

    #[test]
    fn cache_control_max_age() {
        assert_eq!(cc("public, max-age=300"), Some(Duration::from_secs(300)));
        assert_eq!(cc("no-cache"), Some(Duration::ZERO));
        assert_eq!(cc("private"), None);
        assert_eq!(cc("max-age=abc"), None);
        assert_eq!(max_age(&reqwest::header::HeaderMap::new()), None);
    }
}
