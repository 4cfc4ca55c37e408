//! The one place errors become HTTP responses: every module error converts
//! into [`ApiError`], which renders the contract's JSON body
//! `{"error": code, "message": text}` (docs/http-interface.md).
//!
//! Each error knows who failed ([`Fault`]); a transient fault (IdP or store
//! unavailable) answers 503 with `Retry-After`, and is logged as an error
//! with `source=`, so an operator can tell an IdP outage from a store outage
//! from a bug at a glance.

use axum::{
    Json,
    response::{IntoResponse, Response},
};
use http::{HeaderValue, StatusCode, header};

use crate::{
    csrf::CsrfError, fault::Fault, oidc::OidcError, refresh::RefreshError, session::StoreError,
};

impl From<crate::routes::CaseShadowed> for ApiError {
    fn from(e: crate::routes::CaseShadowed) -> Self {
        ApiError::BadRequest(e.to_string())
    }
}

/// Seconds a client should wait before retrying a 503: long enough not to
/// hammer a recovering dependency, short enough that a blip goes unnoticed.
const RETRY_AFTER_SECS: &str = "5";

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("authentication required")]
    Unauthorized,
    #[error("session expired")]
    SessionExpired,
    /// The IdP refused to refresh (or named another user): the session has
    /// been ended. Answers as [`ApiError::SessionExpired`]; logged as the IdP's.
    #[error("session ended by the identity provider: {0}")]
    SessionEndedByIdp(String),
    #[error("CSRF check failed: {0}")]
    Csrf(#[from] CsrfError),
    #[error("missing required role")]
    Forbidden,
    #[error("{0}")]
    BadRequest(String),
    #[error("login failed: {0}")]
    LoginFailed(String),
    /// A request from the IdP (back-channel logout token) that fails validation.
    #[error("{0}")]
    InvalidRequest(String),
    /// 405; the header names what the target does accept.
    #[error("method not allowed")]
    MethodNotAllowed(Allow),
    #[error("not found")]
    NotFound,
    #[error("upstream unavailable: {0}")]
    UpstreamUnavailable(String),
    #[error("upstream timed out")]
    UpstreamTimeout,
    #[error(transparent)]
    Idp(OidcError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The `Allow` of a 405 (RFC 9110 section 15.5.6: the methods the target
/// resource supports, which differ by resource here).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allow {
    /// `/auth/logout`, `/auth/backchannel-logout`.
    Post,
    /// The other auth endpoints and static files.
    Read,
    /// A configured route: what the gateway forwards (every method but
    /// TRACE, TRACK and CONNECT; the registered ones are named).
    Proxied,
}

impl Allow {
    /// The header value.
    pub fn methods(self) -> &'static str {
        match self {
            Allow::Post => "POST",
            Allow::Read => "GET, HEAD",
            Allow::Proxied => "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS",
        }
    }
}

impl From<OidcError> for ApiError {
    fn from(e: OidcError) -> Self {
        match e {
            // The IdP said no or sent a token we cannot trust: the login fails, the IdP is fine.
            OidcError::OAuth { .. }
            | OidcError::InvalidIdToken(_)
            | OidcError::UserinfoSubjectMismatch => ApiError::LoginFailed(e.to_string()),
            OidcError::InvalidLogoutToken(_) => ApiError::InvalidRequest(e.to_string()),
            other => ApiError::Idp(other),
        }
    }
}

impl From<RefreshError> for ApiError {
    fn from(e: RefreshError) -> Self {
        match e {
            // Ended by the IdP's refusal, or already gone: the user must log in.
            RefreshError::Ended(reason) => ApiError::SessionEndedByIdp(reason),
            RefreshError::Gone => ApiError::SessionExpired,
            RefreshError::IdpUnavailable(e) => ApiError::Idp(e),
            busy @ RefreshError::Busy => ApiError::Idp(OidcError::Unavailable(busy.to_string())),
            RefreshError::Store(e) => ApiError::Store(e),
        }
    }
}

impl ApiError {
    /// Who failed.
    pub fn fault(&self) -> Fault {
        match self {
            ApiError::LoginFailed(_) | ApiError::SessionEndedByIdp(_) => Fault::IdpRefused,
            ApiError::UpstreamUnavailable(_) | ApiError::UpstreamTimeout => Fault::Upstream,
            ApiError::Idp(e) => e.fault(),
            ApiError::Store(_) => Fault::Store,
            ApiError::Unauthorized
            | ApiError::SessionExpired
            | ApiError::Csrf(_)
            | ApiError::Forbidden
            | ApiError::BadRequest(_)
            | ApiError::InvalidRequest(_)
            | ApiError::MethodNotAllowed(_)
            | ApiError::NotFound => Fault::Client,
        }
    }

    /// Status and contract error code.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::SessionExpired | ApiError::SessionEndedByIdp(_) => {
                (StatusCode::UNAUTHORIZED, "session_expired")
            }
            ApiError::Csrf(_) => (StatusCode::FORBIDDEN, "csrf"),
            ApiError::Forbidden => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::BadRequest(_) | ApiError::LoginFailed(_) => {
                (StatusCode::BAD_REQUEST, "bad_request")
            }
            ApiError::InvalidRequest(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
            ApiError::MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::UpstreamUnavailable(_) => (StatusCode::BAD_GATEWAY, "upstream_unavailable"),
            ApiError::UpstreamTimeout => (StatusCode::GATEWAY_TIMEOUT, "upstream_unavailable"),
            ApiError::Idp(_) => (StatusCode::SERVICE_UNAVAILABLE, "idp_unavailable"),
            ApiError::Store(_) => (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable"),
        }
    }

    fn log(&self) {
        // CSRF refusals are counted where they are decided, with their
        // reason (`csrf::count_refusal`); counting them here too counted each twice.
        if let ApiError::Store(_) = self {
            metrics::counter!(crate::metrics::STORE_ERRORS_TOTAL).increment(1)
        }
        let (status, code) = self.status_and_code();
        let source = self.fault().as_str();
        if status.is_server_error() {
            tracing::error!(%status, code, source, reason = %self, "request failed");
        } else if !matches!(self, ApiError::Unauthorized | ApiError::NotFound) {
            tracing::warn!(%status, code, source, reason = %self, "request refused");
        }
    }

    /// A small HTML page for browsers that landed on a failing navigation (login, callback).
    pub fn into_html_response(self, home: &str) -> Response {
        self.log();
        let (status, _) = self.status_and_code();
        let body = format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>Sign-in problem</title></head>\
             <body><h1>Sign-in problem</h1><p>{}</p><p><a href=\"{}\">Back to the application</a></p></body></html>",
            html_escape(&self.to_string()),
            html_escape(home)
        );
        let mut resp = (status, body).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        retry_after(&mut resp);
        resp
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.log();
        let (status, code) = self.status_and_code();
        let message = match &self {
            // Do not echo internals of the IdP or store to clients.
            ApiError::Idp(_) => "the identity provider is unavailable".to_string(),
            ApiError::Store(_) => "the session store is unavailable".to_string(),
            other => other.to_string(),
        };
        let mut resp = (
            status,
            Json(serde_json::json!({ "error": code, "message": message })),
        )
            .into_response();
        if let ApiError::MethodNotAllowed(allow) = self {
            resp.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(allow.methods()));
        }
        retry_after(&mut resp);
        resp
    }
}

/// Every 503 says when to come back (RFC 9110 10.2.3), so well-behaved
/// clients and the JS client back off instead of retrying at once.
fn retry_after(resp: &mut Response) {
    if resp.status() == StatusCode::SERVICE_UNAVAILABLE {
        resp.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from_static(RETRY_AFTER_SECS),
        );
    }
}

pub(crate) fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Who failed survives the conversion: an IdP refusal at refresh answers
    /// like an expired session but is logged as the IdP's, and transient
    /// faults answer 503 with `Retry-After`.
    #[test]
    fn refresh_errors_keep_who_failed() {
        let ended = ApiError::from(RefreshError::Ended("invalid_grant".into()));
        assert_eq!(ended.fault(), Fault::IdpRefused);
        assert_eq!(
            ended.status_and_code(),
            (StatusCode::UNAUTHORIZED, "session_expired")
        );
        assert_eq!(ApiError::from(RefreshError::Gone).fault(), Fault::Client);
        for transient in [
            RefreshError::Busy,
            RefreshError::IdpUnavailable(OidcError::Unavailable("down".into())),
            RefreshError::Store(StoreError::Unavailable("down".into())),
        ] {
            let e = ApiError::from(transient);
            assert!(e.fault().is_transient(), "{e}");
            let resp = e.into_response();
            assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(resp.headers()[header::RETRY_AFTER], "5");
        }
    }
}
