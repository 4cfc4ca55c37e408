//! `/end_session` (RP-initiated logout), `/logout` (sign-out started at the IdP, as a user
//! signing out of their IdP account elsewhere) and `/revoke` (RFC 7009).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use url::Url;

use super::errors::{OAuthError, no_store};
use super::html::{error_page, escape, page};
use super::params::Params;
use super::{IdpState, client_auth, tokens};

/// `GET /end_session?id_token_hint&post_logout_redirect_uri&state`: ends the login the hint
/// names (its refresh tokens stop working) and sends the browser back when the target is
/// registered.
pub(crate) async fn end_session(
    State(state): State<Arc<IdpState>>,
    RawQuery(query): RawQuery,
) -> Response {
    let params = match Params::parse(query.unwrap_or_default().as_bytes()) {
        Ok(p) => p,
        Err(e) => return error_page(StatusCode::BAD_REQUEST, &e),
    };
    if let Some(hint) = params.get("id_token_hint") {
        let Some(claims) = tokens::verify_id_token_hint(&state, hint) else {
            return error_page(StatusCode::BAD_REQUEST, "The id_token_hint is not valid.");
        };
        if let Some(sid) = &claims.sid {
            state.grants().revoke_sid(sid);
            send_backchannel_logout(&state, &claims.sub, sid).await;
        }
        tracing::info!(sub = %claims.sub, "dev IdP: logout");
    }
    let target = params.get("post_logout_redirect_uri");
    let registered = target.filter(|t| state.cfg.post_logout_redirect_uris.iter().any(|r| r == t));
    if let Some(target) = registered
        && let Some(location) = with_state(target, params.get("state"))
    {
        return (
            StatusCode::FOUND,
            [
                (header::LOCATION, location),
                (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            ],
        )
            .into_response();
    }
    let mut body = String::from("<h1>You are logged out</h1>\n");
    if let Some(target) = target {
        body.push_str(&format!(
            "<p class=\"note\">Not redirecting to <code>{}</code>: it is not a registered post-logout redirect URI.</p>",
            escape(target)
        ));
    }
    page(StatusCode::OK, "portcullis dev IdP: logged out", &body)
}

/// `GET /logout?sid=`: asks whether to end the IdP session `sid`. A form, not a link
/// that logs out, so a page that merely loads this URL ends nothing.
pub(crate) async fn sign_out_form(
    State(state): State<Arc<IdpState>>,
    RawQuery(query): RawQuery,
) -> Response {
    let params = match Params::parse(query.unwrap_or_default().as_bytes()) {
        Ok(p) => p,
        Err(e) => return error_page(StatusCode::BAD_REQUEST, &e),
    };
    let sid = params.get("sid").unwrap_or_default();
    let Some(login) = state.grants().live_login(sid) else {
        return signed_out_page(&state, "There is no such sign-in at this IdP (any more).");
    };
    let body = format!(
        "<h1>Sign out of the dev IdP</h1>\n\
         <p>Signed in as <code>{user}</code>. Signing out here ends this IdP session, and the \
         IdP tells the gateway by back-channel logout (server to server), which ends the \
         gateway session made from it.</p>\n\
         <form method=\"post\" action=\"logout\">\n\
         <input type=\"hidden\" name=\"sid\" value=\"{sid}\">\n\
         <button type=\"submit\" id=\"sign-out\">Sign out at the IdP</button>\n</form>",
        user = escape(&login.username),
        sid = escape(sid),
    );
    page(StatusCode::OK, "portcullis dev IdP: sign out", &body)
}

/// `POST /logout` (form `sid`): ends the IdP session and sends back-channel logout for it.
pub(crate) async fn sign_out(
    State(state): State<Arc<IdpState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let params = match Params::from_form(&headers, &body) {
        Ok(p) => p,
        Err(e) => return error_page(StatusCode::BAD_REQUEST, &e),
    };
    let sid = params.get("sid").unwrap_or_default().to_owned();
    let login = state.grants().live_login(&sid);
    let Some(login) = login else {
        return signed_out_page(&state, "There is no such sign-in at this IdP (any more).");
    };
    state.grants().revoke_sid(&sid);
    send_backchannel_logout(&state, &login.username, &sid).await;
    tracing::info!(sub = %login.username, "dev IdP: sign-out at the IdP");
    signed_out_page(
        &state,
        "You are signed out at the IdP. The gateway was told by back-channel logout.",
    )
}

fn signed_out_page(state: &IdpState, message: &str) -> Response {
    let mut body = format!(
        "<h1>Signed out</h1>\n<p id=\"signed-out\">{}</p>\n",
        escape(message)
    );
    if let Some(app) = state.cfg.post_logout_redirect_uris.first() {
        body.push_str(&format!(
            "<p><a href=\"{}\">Back to the app</a></p>",
            escape(app)
        ));
    }
    page(StatusCode::OK, "portcullis dev IdP: signed out", &body)
}

/// Back-Channel Logout 1.0: post a signed logout token for this login to the client's
/// `backchannel_logout_uri`, before the browser moves on, so the client's session is
/// gone when the user lands back there. Failures are logged; logout at the IdP proceeds.
async fn send_backchannel_logout(state: &IdpState, sub: &str, sid: &str) {
    let Some(uri) = &state.cfg.backchannel_logout_uri else {
        return;
    };
    let token = match tokens::logout_token(state, sub, sid) {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(error = %e, "dev IdP: could not mint a logout token");
            return;
        }
    };
    let client = match reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(BACKCHANNEL_TIMEOUT)
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "dev IdP: no HTTP client for back-channel logout");
            return;
        }
    };
    match client
        .post(uri)
        .form(&[("logout_token", token)])
        .send()
        .await
    {
        Ok(resp) if resp.status().is_success() => {
            tracing::info!("dev IdP: back-channel logout delivered");
        }
        Ok(resp) => tracing::warn!(status = %resp.status(), "dev IdP: back-channel logout refused"),
        Err(e) => tracing::warn!(error = %e, "dev IdP: back-channel logout failed"),
    }
}

/// How long `/end_session` waits for the client's back-channel endpoint.
const BACKCHANNEL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

fn with_state(target: &str, state: Option<&str>) -> Option<HeaderValue> {
    let mut url = Url::parse(target).ok()?;
    if let Some(state) = state {
        url.query_pairs_mut().append_pair("state", state);
    }
    HeaderValue::from_str(url.as_str()).ok()
}

/// `POST /revoke`: revokes a refresh token and every token of its family. Always 200 for
/// a well-formed, authenticated request, whether or not the token was known (RFC 7009 2.2).
pub(crate) async fn revoke(
    State(state): State<Arc<IdpState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match revoke_token(&state, &headers, &body) {
        Ok(()) => (StatusCode::OK, no_store()).into_response(),
        Err(e) => e.into_response(),
    }
}

fn revoke_token(state: &IdpState, headers: &HeaderMap, body: &[u8]) -> Result<(), OAuthError> {
    let params = Params::from_form(headers, body).map_err(OAuthError::invalid_request)?;
    let client_id = client_auth::authenticate(&state.cfg, headers, &params)?;
    let token = params
        .get("token")
        .ok_or_else(|| OAuthError::invalid_request("token missing"))?;
    let mut grants = state.grants();
    grants.record_revocation_call(token);
    // Access tokens are self-contained JWTs and simply run out; only refresh tokens are
    // remembered, so whatever `token_type_hint` says, that is where to look.
    grants.revoke_refresh_token(&client_id, token);
    drop(grants);
    tracing::info!(
        hint = params.get("token_type_hint").unwrap_or("none"),
        "dev IdP: revocation"
    );
    Ok(())
}
