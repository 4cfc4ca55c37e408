//! Silent re-login (`GET /auth/login?prompt=none`): the login runs in a
//! hidden iframe or a popup of the SPA, without user interaction, and its
//! outcome reaches the SPA as a `postMessage` instead of a redirect that
//! would lose the SPA's state.

use std::sync::LazyLock;

use axum::response::{IntoResponse, Response};
use base64::{Engine, engine::general_purpose::STANDARD};
use http::{HeaderValue, StatusCode, header};
use sha2::{Digest, Sha256};

/// The only `prompt` a client may ask for: anything that needs the user is
/// a normal login.
pub(crate) const SILENT_PROMPT: &str = "none";

/// Posts the outcome to the window that opened the login (popup) or framed
/// it (iframe), addressed to our own origin only, so no other site learns
/// whether the user has an IdP session.
const SCRIPT: &str = "(function(){var r=document.body.getAttribute('data-result');\
var t=window.opener||window.parent;\
if(t&&t!==window){t.postMessage({source:'portcullis',type:'silent-login',result:r},window.location.origin);}\
if(window.opener){window.close();}})();";

/// The script runs under a CSP that allows exactly it (by hash), and only
/// our own pages may frame the answer.
static CSP: LazyLock<HeaderValue> = LazyLock::new(|| {
    let hash = STANDARD.encode(Sha256::digest(SCRIPT.as_bytes()));
    HeaderValue::from_str(&format!(
        "default-src 'none'; script-src 'sha256-{hash}'; frame-ancestors 'self'; base-uri 'none'"
    ))
    .expect("a CSP of base64 and ASCII is a header value")
});

/// What the SPA learns. The IdP's `error` is passed on only for the three
/// answers that OIDC Core 3.1.2.6 defines for `prompt=none`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Success,
    LoginRequired,
    ConsentRequired,
    InteractionRequired,
    Error,
}

impl Outcome {
    pub(crate) fn from_idp_error(error: &str) -> Self {
        match error {
            "login_required" => Self::LoginRequired,
            "consent_required" => Self::ConsentRequired,
            "interaction_required" | "account_selection_required" => Self::InteractionRequired,
            _ => Self::Error,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::LoginRequired => "login_required",
            Self::ConsentRequired => "consent_required",
            Self::InteractionRequired => "interaction_required",
            Self::Error => "error",
        }
    }
}

/// The page the callback answers for a silent login (200 whatever the
/// outcome: the SPA reads the outcome from the message).
pub(crate) fn page(outcome: Outcome) -> Response {
    let body = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Signing in</title></head>\
         <body data-result=\"{}\"><script>{SCRIPT}</script></body></html>",
        outcome.as_str()
    );
    let mut resp = (StatusCode::OK, body).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CONTENT_SECURITY_POLICY, CSP.clone());
    h.insert(
        header::X_FRAME_OPTIONS,
        HeaderValue::from_static("SAMEORIGIN"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_prompt_none_errors_are_passed_on() {
        assert_eq!(
            Outcome::from_idp_error("login_required"),
            Outcome::LoginRequired
        );
        assert_eq!(
            Outcome::from_idp_error("consent_required"),
            Outcome::ConsentRequired
        );
        assert_eq!(
            Outcome::from_idp_error("account_selection_required"),
            Outcome::InteractionRequired
        );
        assert_eq!(Outcome::from_idp_error("access_denied"), Outcome::Error);
        assert_eq!(Outcome::from_idp_error("<script>"), Outcome::Error);
    }

    #[test]
    fn the_page_allows_only_its_own_script_and_same_origin_framing() {
        let resp = page(Outcome::Success);
        let csp = resp.headers()[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap();
        assert!(csp.contains("script-src 'sha256-"), "{csp}");
        assert!(csp.contains("frame-ancestors 'self'"), "{csp}");
        assert!(!csp.contains("unsafe-inline"), "{csp}");
    }
}
