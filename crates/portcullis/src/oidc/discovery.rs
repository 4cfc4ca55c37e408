//! OpenID Provider metadata (OIDC Discovery 1.0), fetched from
//! `issuer + /.well-known/openid-configuration`.

use serde::Deserialize;

use super::{OidcError, http_client};

/// The fields of the discovery document the gateway uses.
#[derive(Debug, Clone, Deserialize)]
pub struct ProviderMetadata {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub jwks_uri: String,
    #[serde(default)]
    pub userinfo_endpoint: Option<String>,
    #[serde(default)]
    pub end_session_endpoint: Option<String>,
    #[serde(default)]
    pub revocation_endpoint: Option<String>,
    #[serde(default)]
    pub authorization_response_iss_parameter_supported: bool,
    #[serde(default)]
    pub code_challenge_methods_supported: Option<Vec<String>>,
}

pub(super) async fn discover(
    http: &reqwest::Client,
    issuer: &str,
) -> Result<ProviderMetadata, OidcError> {
    Ok(fetch(http, issuer).await?.0)
}

/// The validated document and the `Cache-Control: max-age` it came with.
pub(super) async fn fetch(
    http: &reqwest::Client,
    issuer: &str,
) -> Result<(ProviderMetadata, Option<std::time::Duration>), OidcError> {
    http_client::observed("discovery", fetch_once(http, issuer)).await
}

async fn fetch_once(
    http: &reqwest::Client,
    issuer: &str,
) -> Result<(ProviderMetadata, Option<std::time::Duration>), OidcError> {
    let url = format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    );
    let resp = http
        .get(&url)
        .send()
        .await
        .map_err(|e| http_client::transport_error("discovery", e))?;
    let max_age = http_client::max_age(resp.headers());
    let meta: ProviderMetadata = http_client::json_response("discovery", resp).await?;
    // OIDC Discovery 4.3: the issuer in the document must be identical to the one we asked.
    if meta.issuer != issuer {
        return Err(OidcError::IssuerMismatch {
            configured: issuer.to_string(),
            discovered: meta.issuer,
        });
    }
    for (name, value) in [
        ("authorization_endpoint", &meta.authorization_endpoint),
        ("token_endpoint", &meta.token_endpoint),
        ("jwks_uri", &meta.jwks_uri),
    ] {
        if url::Url::parse(value).is_err() {
            return Err(OidcError::InvalidResponse(format!(
                "discovery: {name} is not a URL"
            )));
        }
    }
    if let Some(methods) = &meta.code_challenge_methods_supported
        && !methods.iter().any(|m| m == "S256")
    {
        return Err(OidcError::InvalidResponse(
            "discovery: IdP does not support PKCE S256".into(),
        ));
    }
    Ok((meta, max_age))
}
