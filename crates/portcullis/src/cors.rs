//! CORS for the few extra origins `cors.allowed_origins` names (e.g. a Vite
//! dev server). Off by default: with an empty allow-list this layer adds no
//! header at all, and the browser's same-origin policy does the work.
//!
//! With an allow-list: exact origin match only (never a wildcard, because
//! credentials are allowed), preflights are answered here with the configured
//! methods and headers (the CSRF header always among them), and every answer
//! that depends on `Origin` says so with `Vary: Origin`. Allowing an origin
//! here does not skip CSRF: unsafe requests still need the token.
//!
//! Either way this layer is the only source of CORS headers: preflights
//! (`OPTIONS` with `Access-Control-Request-Method`) are answered or refused
//! (403) here and never proxied, and the proxy removes every upstream
//! `Access-Control-*` response header.

use axum::{
    extract::Request,
    response::{IntoResponse, Response},
};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};

use crate::config::Config;

/// The preflight answer, computed once from the config.
#[derive(Debug, Clone)]
pub struct CorsPolicy {
    allowed_origins: Vec<String>,
    allow_methods: HeaderValue,
    allow_headers: HeaderValue,
    max_age: HeaderValue,
}

impl CorsPolicy {
    /// `None` when CORS is off (no allowed origins).
    pub fn from_config(config: &Config) -> Option<Self> {
        let cors = &config.cors;
        if cors.allowed_origins.is_empty() {
            return None;
        }
        let methods: Vec<&str> = cors.allowed_methods.iter().map(Method::as_str).collect();
        let mut headers: Vec<String> = cors
            .allowed_headers
            .iter()
            .map(|h| h.to_ascii_lowercase())
            .collect();
        let csrf = config.csrf.header.to_ascii_lowercase();
        if !headers.contains(&csrf) {
            headers.push(csrf);
        }
        Some(CorsPolicy {
            allowed_origins: cors.allowed_origins.clone(),
            // Validated method and header names joined with ", " are valid values.
            allow_methods: HeaderValue::from_str(&methods.join(", "))
                .unwrap_or(HeaderValue::from_static("GET")),
            allow_headers: HeaderValue::from_str(&headers.join(", "))
                .unwrap_or(HeaderValue::from_static("content-type")),
            max_age: HeaderValue::from(cors.max_age.as_secs()),
        })
    }

    /// The request's `Origin` when it is on the allow-list (exact match).
    pub(crate) fn allowed_origin(&self, headers: &HeaderMap) -> Option<HeaderValue> {
        let origin = headers.get(header::ORIGIN)?;
        let text = origin.to_str().ok()?;
        self.allowed_origins
            .iter()
            .any(|o| o == text)
            .then(|| origin.clone())
    }

    /// The answer to a preflight from an allowed `origin`.
    pub(crate) fn preflight_answer(&self, origin: HeaderValue) -> Response {
        let mut resp = StatusCode::NO_CONTENT.into_response();
        let h = resp.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        h.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            self.allow_methods.clone(),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            self.allow_headers.clone(),
        );
        h.insert(header::ACCESS_CONTROL_MAX_AGE, self.max_age.clone());
        add_preflight_vary(h);
        resp
    }

    /// The headers of an actual (non-preflight) answer: the allowed origin
    /// with credentials, and `Vary: Origin` whatever the origin was.
    pub(crate) fn decorate(&self, origin: Option<HeaderValue>, h: &mut HeaderMap) {
        if let Some(origin) = origin {
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
            h.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        add_vary(h, &[header::ORIGIN]);
    }
}

/// A preflight's answer depends on these request headers.
pub(crate) fn add_preflight_vary(h: &mut HeaderMap) {
    add_vary(
        h,
        &[
            header::ORIGIN,
            header::ACCESS_CONTROL_REQUEST_METHOD,
            header::ACCESS_CONTROL_REQUEST_HEADERS,
        ],
    );
}

/// `OPTIONS` with `Access-Control-Request-Method`: never forwarded (an
/// upstream's answer could open the same-origin policy), with or without
/// `Origin`.
pub(crate) fn is_preflight(req: &Request) -> bool {
    req.method() == Method::OPTIONS
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

/// Appends to `Vary` without duplicating what an upstream already listed.
fn add_vary(h: &mut HeaderMap, names: &[HeaderName]) {
    let present: Vec<String> = h
        .get_all(header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_ascii_lowercase())
        .collect();
    if present.iter().any(|p| p == "*") {
        return;
    }
    for name in names {
        if !present.iter().any(|p| p == name.as_str()) {
            h.append(header::VARY, HeaderValue::from(name.clone()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vary_is_appended_once() {
        let mut h = HeaderMap::new();
        h.insert(
            header::VARY,
            HeaderValue::from_static("Accept-Encoding, origin"),
        );
        add_vary(
            &mut h,
            &[header::ORIGIN, header::ACCESS_CONTROL_REQUEST_METHOD],
        );
        let all: Vec<_> = h.get_all(header::VARY).iter().collect();
        assert_eq!(
            all,
            ["Accept-Encoding, origin", "access-control-request-method"]
        );
    }
}
