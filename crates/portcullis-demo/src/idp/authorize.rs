//! `/authorize`: checks the authorization request, shows the login form, and on the right
//! password redirects back with a single-use code (and RFC 9207 `iss`).
//!
//! The form carries the request in hidden fields and the POST checks it all again, so the
//! IdP keeps no state until a login succeeds.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use url::Url;

use super::grants::{AuthCode, Login};
use super::html::{error_page, escape, page};
use super::params::Params;
use super::{DEMO_USERS, DemoUser, IdpState};
use crate::random;

/// Scopes the IdP knows; others are dropped from the grant.
pub(crate) const SUPPORTED_SCOPES: &[&str] =
    &["openid", "profile", "email", "offline_access", "roles"];

/// Authorization codes are good for one minute.
const CODE_TTL_SECS: u64 = 60;

/// A checked authorization request.
#[derive(Debug)]
struct AuthorizeRequest {
    client_id: String,
    redirect_uri: String,
    /// As requested; the hidden form field carries it back unchanged.
    scope: String,
    state: Option<String>,
    nonce: Option<String>,
    code_challenge: String,
}

impl AuthorizeRequest {
    /// Requested scopes the IdP supports, in request order.
    fn granted_scope(&self) -> String {
        let mut granted: Vec<&str> = Vec::new();
        for s in self.scope.split(' ') {
            if SUPPORTED_SCOPES.contains(&s) && !granted.contains(&s) {
                granted.push(s);
            }
        }
        granted.join(" ")
    }
}

/// `GET /authorize`: the login form, or why there will be none.
pub(crate) async fn show(
    State(state): State<Arc<IdpState>>,
    RawQuery(query): RawQuery,
) -> Response {
    let params = match Params::parse(query.unwrap_or_default().as_bytes()) {
        Ok(p) => p,
        Err(e) => return error_page(StatusCode::BAD_REQUEST, &e),
    };
    match check(&state, &params) {
        Ok(request) => login_form(&request, None, ""),
        Err(refusal) => refusal.into_response(&state.cfg.issuer),
    }
}

/// `POST /authorize`: the login form submitted.
pub(crate) async fn submit(
    State(state): State<Arc<IdpState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let params = match Params::from_form(&headers, &body) {
        Ok(p) => p,
        Err(e) => return error_page(StatusCode::BAD_REQUEST, &e),
    };
    let request = match check(&state, &params) {
        Ok(r) => r,
        Err(refusal) => return refusal.into_response(&state.cfg.issuer),
    };
    let username = params.get("username").unwrap_or_default();
    let password = params.get("password").unwrap_or_default();
    let Some(user) = DemoUser::authenticate(username, password) else {
        tracing::info!(username, "dev IdP: wrong username or password");
        return login_form(&request, Some("Wrong username or password."), username);
    };
    match issue_code(&state, &request, user) {
        Ok(code) => {
            tracing::info!(sub = user.sub(), client_id = %request.client_id, "dev IdP: login");
            let mut reply = vec![("code", code.as_str())];
            if let Some(s) = &request.state {
                reply.push(("state", s));
            }
            reply.push(("iss", &state.cfg.issuer));
            redirect(&request.redirect_uri, &reply)
        }
        Err(e) => {
            tracing::error!(error = %e, "dev IdP: could not issue a code");
            error_page(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
        }
    }
}

fn issue_code(
    state: &IdpState,
    request: &AuthorizeRequest,
    user: &DemoUser,
) -> Result<String, crate::DemoError> {
    let code = random::token()?;
    let now = random::now();
    let login = Login {
        client_id: request.client_id.clone(),
        username: user.username.to_owned(),
        sid: random::token()?,
        scope: request.granted_scope(),
        auth_time: now,
    };
    let record = AuthCode::new(
        login,
        request.redirect_uri.clone(),
        request.nonce.clone(),
        request.code_challenge.clone(),
        now + CODE_TTL_SECS,
    );
    state.grants().insert_code(&code, record, now);
    Ok(code)
}

/// Checks a request in the order RFC 6749 4.1.2.1 asks: until client and redirect URI are
/// known good, errors are shown here (never redirected); after that they go back to the
/// client as `error=` redirects.
fn check(state: &IdpState, params: &Params) -> Result<AuthorizeRequest, Refusal> {
    let cfg = &state.cfg;
    let client_id = params.get("client_id").unwrap_or_default();
    if client_id != cfg.client_id {
        return Err(Refusal::Page("Unknown or missing client_id."));
    }
    let redirect_uri = params.get("redirect_uri").unwrap_or_default();
    if !cfg.redirect_uris.iter().any(|r| r == redirect_uri) {
        return Err(Refusal::Page(
            "The redirect_uri is missing or not registered for this client.",
        ));
    }
    let state_param = params.get("state");
    let refuse = |error, description| Refusal::Redirect {
        redirect_uri: redirect_uri.to_owned(),
        error,
        description,
        state: state_param.map(str::to_owned),
    };
    if params.get("response_type") != Some("code") {
        return Err(refuse(
            "unsupported_response_type",
            "only response_type=code",
        ));
    }
    let scope = params.get("scope").unwrap_or_default();
    if !scope.split(' ').any(|s| s == "openid") {
        return Err(refuse("invalid_scope", "scope must contain openid"));
    }
    if params.get("request").is_some() || params.get("request_uri").is_some() {
        return Err(refuse(
            "request_not_supported",
            "request objects are not supported",
        ));
    }
    let Some(code_challenge) = params.get("code_challenge") else {
        return Err(refuse("invalid_request", "PKCE code_challenge required"));
    };
    if params.get("code_challenge_method") != Some("S256") {
        return Err(refuse(
            "invalid_request",
            "code_challenge_method must be S256",
        ));
    }
    let well_formed = code_challenge.len() == 43
        && code_challenge
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !well_formed {
        return Err(refuse(
            "invalid_request",
            "code_challenge is not a base64url SHA-256",
        ));
    }
    if params.get("prompt") == Some("none") {
        return Err(refuse(
            "login_required",
            "the dev IdP keeps no login session",
        ));
    }
    Ok(AuthorizeRequest {
        client_id: client_id.to_owned(),
        redirect_uri: redirect_uri.to_owned(),
        scope: scope.to_owned(),
        state: state_param.map(str::to_owned),
        nonce: params.get("nonce").map(str::to_owned),
        code_challenge: code_challenge.to_owned(),
    })
}

/// Why an authorization request gets no login form.
#[derive(Debug)]
enum Refusal {
    /// Shown to the user: neither client nor redirect URI can be trusted with a redirect.
    Page(&'static str),
    /// Sent back to the client's (registered) redirect URI as `error=`.
    Redirect {
        redirect_uri: String,
        error: &'static str,
        description: &'static str,
        state: Option<String>,
    },
}

impl Refusal {
    fn into_response(self, issuer: &str) -> Response {
        match self {
            Self::Page(message) => error_page(StatusCode::BAD_REQUEST, message),
            Self::Redirect {
                redirect_uri,
                error,
                description,
                state,
            } => {
                let mut reply = vec![("error", error), ("error_description", description)];
                if let Some(s) = &state {
                    reply.push(("state", s));
                }
                reply.push(("iss", issuer));
                redirect(&redirect_uri, &reply)
            }
        }
    }
}

/// 302 to a registered redirect URI with `pairs` added to its query.
fn redirect(redirect_uri: &str, pairs: &[(&str, &str)]) -> Response {
    let Ok(mut url) = Url::parse(redirect_uri) else {
        return error_page(StatusCode::INTERNAL_SERVER_ERROR, "bad redirect URI");
    };
    url.query_pairs_mut().extend_pairs(pairs);
    let Ok(location) = HeaderValue::from_str(url.as_str()) else {
        return error_page(StatusCode::INTERNAL_SERVER_ERROR, "bad redirect URI");
    };
    (
        StatusCode::FOUND,
        [
            (header::LOCATION, location),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
    )
        .into_response()
}

fn login_form(request: &AuthorizeRequest, error: Option<&str>, username: &str) -> Response {
    let mut hidden = vec![
        ("response_type", "code"),
        ("client_id", request.client_id.as_str()),
        ("redirect_uri", request.redirect_uri.as_str()),
        ("scope", request.scope.as_str()),
        ("code_challenge", request.code_challenge.as_str()),
        ("code_challenge_method", "S256"),
    ];
    if let Some(s) = &request.state {
        hidden.push(("state", s));
    }
    if let Some(n) = &request.nonce {
        hidden.push(("nonce", n));
    }

    let mut body = String::from("<h1>Sign in to the portcullis demo</h1>\n");
    let _ = writeln!(
        body,
        "<p class=\"note\">Development identity provider. Client <code>{}</code> asks for <code>{}</code>.</p>",
        escape(&request.client_id),
        escape(&request.scope),
    );
    if let Some(error) = error {
        let _ = writeln!(
            body,
            "<p class=\"error\" role=\"alert\">{}</p>",
            escape(error)
        );
    }
    body.push_str("<form method=\"post\" action=\"authorize\">\n");
    for (name, value) in hidden {
        let _ = writeln!(
            body,
            "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
            escape(name),
            escape(value)
        );
    }
    let _ = writeln!(
        body,
        "<label>Username <input type=\"text\" name=\"username\" value=\"{}\" autocomplete=\"username\" autofocus required></label>\n\
         <label>Password <input type=\"password\" name=\"password\" autocomplete=\"current-password\" required></label>\n\
         <button type=\"submit\">Sign in</button>\n</form>",
        escape(username)
    );
    body.push_str(
        "<table>\n<caption>Demo users (the password is the username)</caption>\n\
         <tr><th>username</th><th>name</th><th>roles</th></tr>\n",
    );
    for user in DEMO_USERS {
        let roles = if user.roles.is_empty() {
            "(none)".to_owned()
        } else {
            user.roles.join(", ")
        };
        let _ = writeln!(
            body,
            "<tr><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
            escape(user.username),
            escape(user.name),
            escape(&roles)
        );
    }
    body.push_str("</table>");
    page(StatusCode::OK, "portcullis dev IdP: sign in", &body)
}
