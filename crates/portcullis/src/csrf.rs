//! CSRF defence for state-changing requests: the double-submit token bound
//! to the session (header must equal the session's token, compared in
//! constant time) plus an `Origin` / `Sec-Fetch-Site` check.

use http::{HeaderMap, Method, header};
use subtle::ConstantTimeEq;

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CsrfError {
    #[error("missing CSRF header")]
    MissingToken,
    #[error("CSRF token does not match the session")]
    BadToken,
    #[error("cross-site request refused")]
    CrossSite,
}

/// POST, PUT, PATCH, DELETE and any method we do not know change state
/// (TRACE too: it is refused before it gets here, see `http::screen`).
pub fn is_unsafe(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The policy: where requests may come from and which header carries the token.
#[derive(Debug, Clone)]
pub struct CsrfPolicy {
    pub header: http::HeaderName,
    /// The gateway's own origin, e.g. `https://app.example.com`.
    pub public_origin: String,
    /// Extra origins allowed by CORS config.
    pub allowed_origins: Vec<String>,
}

impl CsrfPolicy {
    /// Check an unsafe request against the session's CSRF token. Every
    /// refusal counts in `portcullis_csrf_rejections_total`.
    pub fn check(&self, headers: &HeaderMap, session_token: &str) -> Result<(), CsrfError> {
        counted(self.token_and_origin(headers, session_token))
    }

    /// `Origin` must be ours or allowed; without `Origin`, `Sec-Fetch-Site`
    /// must not say cross-site. Requests with neither come from non-browser
    /// clients, which cannot ride a browser's cookies; the token still applies.
    /// This is also the whole check for WebSocket upgrades, which cannot carry
    /// the header (no cross-site WebSocket hijacking). Refusals are counted.
    pub fn check_origin(&self, headers: &HeaderMap) -> Result<(), CsrfError> {
        counted(self.origin_only(headers))
    }

    fn token_and_origin(&self, headers: &HeaderMap, session_token: &str) -> Result<(), CsrfError> {
        self.origin_only(headers)?;
        let sent = headers
            .get(&self.header)
            .ok_or(CsrfError::MissingToken)?
            .as_bytes();
        if sent.ct_eq(session_token.as_bytes()).into() {
            Ok(())
        } else {
            Err(CsrfError::BadToken)
        }
    }

    fn origin_only(&self, headers: &HeaderMap) -> Result<(), CsrfError> {
        if let Some(origin) = headers.get(header::ORIGIN) {
            let origin = origin.to_str().map_err(|_| CsrfError::CrossSite)?;
            let ok =
                origin == self.public_origin || self.allowed_origins.iter().any(|o| o == origin);
            return if ok {
                Ok(())
            } else {
                Err(CsrfError::CrossSite)
            };
        }
        const SEC_FETCH_SITE: http::HeaderName = http::HeaderName::from_static("sec-fetch-site");
        match headers.get(SEC_FETCH_SITE).map(|v| v.as_bytes()) {
            None | Some(b"same-origin") | Some(b"none") => Ok(()),
            Some(_) => Err(CsrfError::CrossSite),
        }
    }
}

fn counted(result: Result<(), CsrfError>) -> Result<(), CsrfError> {
    if let Err(e) = &result {
        count_refusal(e);
    }
    result
}

/// One count per refused request, labelled with why.
pub(crate) fn count_refusal(e: &CsrfError) {
    let reason = match e {
        CsrfError::MissingToken => "missing_token",
        CsrfError::BadToken => "bad_token",
        CsrfError::CrossSite => "cross_site",
    };
    metrics::counter!(crate::metrics::CSRF_REJECTIONS_TOTAL, "reason" => reason).increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> CsrfPolicy {
        CsrfPolicy {
            header: http::HeaderName::from_static("x-xsrf-token"),
            public_origin: "https://app.example.com".into(),
            allowed_origins: vec!["http://localhost:5173".into()],
        }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().expect("header value"));
        }
        h
    }

    #[test]
    fn token_must_match() {
        let p = policy();
        assert_eq!(p.check(&headers(&[]), "t"), Err(CsrfError::MissingToken));
        assert_eq!(
            p.check(&headers(&[("x-xsrf-token", "other")]), "t"),
            Err(CsrfError::BadToken)
        );
        assert_eq!(p.check(&headers(&[("x-xsrf-token", "t")]), "t"), Ok(()));
    }

    #[test]
    fn origin_rules() {
        let p = policy();
        let ok = |o: &str| p.check(&headers(&[("x-xsrf-token", "t"), ("origin", o)]), "t");
        assert_eq!(ok("https://app.example.com"), Ok(()));
        assert_eq!(ok("http://localhost:5173"), Ok(()));
        assert_eq!(ok("https://evil.example"), Err(CsrfError::CrossSite));
        assert_eq!(ok("null"), Err(CsrfError::CrossSite));
        let sfs = |v: &str| {
            p.check(
                &headers(&[("x-xsrf-token", "t"), ("sec-fetch-site", v)]),
                "t",
            )
        };
        assert_eq!(sfs("same-origin"), Ok(()));
        assert_eq!(sfs("cross-site"), Err(CsrfError::CrossSite));
        assert_eq!(sfs("same-site"), Err(CsrfError::CrossSite));
    }

    #[test]
    fn unsafe_methods() {
        assert!(is_unsafe(&Method::POST) && is_unsafe(&Method::DELETE));
        assert!(!is_unsafe(&Method::GET) && !is_unsafe(&Method::HEAD));
    }
}
