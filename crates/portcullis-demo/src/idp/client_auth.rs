//! Client authentication at `/token` and `/revoke`: `client_secret_basic` or
//! `client_secret_post`, exactly one of them (RFC 6749 2.3.1).

use axum::http::{HeaderMap, header};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use super::DevIdpConfig;
use super::errors::OAuthError;
use super::grants::fingerprint;
use super::params::{Params, form_decode};

/// Authenticates the client, returning its id.
pub(crate) fn authenticate(
    cfg: &DevIdpConfig,
    headers: &HeaderMap,
    params: &Params,
) -> Result<String, OAuthError> {
    let basic = basic_credentials(headers)?;
    let (client_id, secret) = match (basic, params.get("client_secret")) {
        (Some(_), Some(_)) => {
            return Err(OAuthError::invalid_request(
                "use one client authentication method, not both",
            ));
        }
        (Some((id, secret)), None) => {
            if params.get("client_id").is_some_and(|form_id| form_id != id) {
                return Err(OAuthError::invalid_client("client_id does not match"));
            }
            (id, secret)
        }
        (None, Some(secret)) => match params.get("client_id") {
            Some(id) => (id.to_owned(), secret.to_owned()),
            None => return Err(OAuthError::invalid_client("client_id missing")),
        },
        (None, None) => return Err(OAuthError::invalid_client("client authentication required")),
    };
    // Digests make the comparison's timing independent of how much of the secret matched.
    if client_id != cfg.client_id || fingerprint(&secret) != fingerprint(&cfg.client_secret) {
        tracing::info!(client_id, "dev IdP: client authentication failed");
        return Err(OAuthError::invalid_client("client authentication failed"));
    }
    Ok(client_id)
}

/// The id and secret of an `Authorization: Basic` header, if there is one.
fn basic_credentials(headers: &HeaderMap) -> Result<Option<(String, String)>, OAuthError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let bad = || OAuthError::invalid_client("malformed Basic credentials");
    let value = value.to_str().map_err(|_| bad())?;
    let (scheme, encoded) = value.split_once(' ').ok_or_else(bad)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(OAuthError::invalid_client(
            "unsupported authentication scheme",
        ));
    }
    let decoded = STANDARD.decode(encoded.trim()).map_err(|_| bad())?;
    let decoded = String::from_utf8(decoded).map_err(|_| bad())?;
    let (id, secret) = decoded.split_once(':').ok_or_else(bad)?;
    let id = form_decode(id).ok_or_else(bad)?;
    let secret = form_decode(secret).ok_or_else(bad)?;
    Ok(Some((id, secret)))
}
