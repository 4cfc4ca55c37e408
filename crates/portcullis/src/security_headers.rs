//! Security headers on responses the gateway generates itself (auth
//! endpoints, static files). Proxied API responses keep their own headers.

use std::sync::Arc;

use axum::{
    extract::{Request, State},
    middleware::Next,
    response::Response,
};
use http::{HeaderMap, HeaderValue, header};

use crate::{config::Profile, state::Shared};

pub use crate::config::DEFAULT_CSP;

pub(crate) fn apply_security_headers(shared: &Shared, h: &mut HeaderMap) {
    // Validated as a header value when the config was loaded.
    if let Ok(csp) = HeaderValue::from_str(&shared.config.server.csp) {
        h.entry(header::CONTENT_SECURITY_POLICY).or_insert(csp);
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if shared.config.server.profile == Profile::Prod && shared.config.secure_cookies() {
        h.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000; includeSubDomains"),
        );
    }
}

/// `/auth/*`: security headers plus `Cache-Control: no-store` (these answers are per-user).
pub(crate) async fn auth_headers(
    State(shared): State<Arc<Shared>>,
    req: Request,
    next: Next,
) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    apply_security_headers(&shared, h);
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    resp
}
