//! The authorization code flow with PKCE S256: the authorize URL, the code
//! exchange, refresh, userinfo, revocation (RFC 7009) and the RP-initiated
//! logout URL.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use serde::Deserialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::{LoginState, Nonce, OidcClient, OidcError, PkceVerifier, http_client};
use crate::{
    config::ClientAuthMethod,
    session::{AccessToken, random_token},
};

/// A freshly built authorization request: the URL to send the browser to
/// and the secrets to keep server-side until the callback.
pub struct AuthorizationRequest {
    pub url: String,
    pub state: LoginState,
    pub nonce: Nonce,
    pub pkce_verifier: PkceVerifier,
}

/// The token endpoint's answer.
#[derive(Deserialize)]
pub struct TokenResponse {
    /// Built into its `Authorization` value as it is read.
    pub access_token: AccessToken,
    #[serde(default)]
    pub token_type: Option<String>,
    #[serde(default)]
    pub expires_in: Option<i64>,
    #[serde(default)]
    pub refresh_token: Option<String>,
    #[serde(default)]
    pub id_token: Option<String>,
}

#[derive(Deserialize)]
struct OAuthErrorBody {
    error: String,
    #[serde(default)]
    error_description: Option<String>,
}

/// `BASE64URL(SHA256(verifier))` (RFC 7636 4.2).
pub fn pkce_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

impl OidcClient {
    /// Build a new authorization request with fresh state, nonce and PKCE
    /// verifier. `prompt` (a silent login's `none`) wins over a configured one.
    pub async fn authorization_request(
        &self,
        prompt: Option<&str>,
    ) -> Result<AuthorizationRequest, OidcError> {
        let meta = self.metadata().await?;
        let state = LoginState::random();
        let nonce = Nonce::random();
        let pkce_verifier = PkceVerifier::random();
        let mut url = url::Url::parse(&meta.authorization_endpoint).map_err(|_| {
            OidcError::InvalidResponse("authorization_endpoint is not a URL".into())
        })?;
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.client_id)
            .append_pair("redirect_uri", &self.redirect_uri)
            .append_pair("scope", &self.scopes.join(" "))
            .append_pair("state", state.as_str())
            .append_pair("nonce", nonce.as_str())
            .append_pair("code_challenge", &pkce_challenge(pkce_verifier.as_str()))
            .append_pair("code_challenge_method", "S256");
        {
            let mut query = url.query_pairs_mut();
            for (name, value) in &self.extra_auth_params {
                if !(prompt.is_some() && name == "prompt") {
                    query.append_pair(name, value);
                }
            }
            if let Some(prompt) = prompt {
                query.append_pair("prompt", prompt);
            }
        }
        Ok(AuthorizationRequest {
            url: url.into(),
            state,
            nonce,
            pkce_verifier,
        })
    }

    /// Exchange an authorization code at the token endpoint.
    pub async fn exchange_code(
        &self,
        code: &str,
        pkce_verifier: &PkceVerifier,
    ) -> Result<TokenResponse, OidcError> {
        self.token_request(
            "token",
            &[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", &self.redirect_uri),
                ("code_verifier", pkce_verifier.as_str()),
            ],
        )
        .await
    }

    /// Redeem a refresh token.
    pub async fn refresh(&self, refresh_token: &str) -> Result<TokenResponse, OidcError> {
        self.token_request(
            "refresh",
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token),
            ],
        )
        .await
    }

    /// A token request, unless the circuit breaker is open. `endpoint` is
    /// its metrics label: `token` (code exchange) or `refresh`, so that
    /// failing refreshes show apart from failing logins.
    async fn token_request(
        &self,
        endpoint: &'static str,
        params: &[(&str, &str)],
    ) -> Result<TokenResponse, OidcError> {
        let permit = match self.breaker.permit() {
            Ok(p) => p,
            Err(e) => {
                http_client::count(endpoint, "circuit_open");
                return Err(e);
            }
        };
        // Configured extras go after the protocol's own parameters, which
        // config validation keeps them from repeating.
        let mut all = params.to_vec();
        all.extend(
            self.extra_token_params
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str())),
        );
        let out = http_client::observed(endpoint, self.token_call(&all)).await;
        permit.done(&out);
        out
    }

    async fn token_call(&self, params: &[(&str, &str)]) -> Result<TokenResponse, OidcError> {
        let meta = self.metadata().await?;
        let resp = self
            .authenticated_post(&meta.token_endpoint, params)
            .send()
            .await
            .map_err(|e| http_client::transport_error("token endpoint", e))?;
        let status = resp.status();
        // 5xx, 429 (rate limited) and 408 say "not now", never "no".
        if status.is_server_error()
            || status == http::StatusCode::TOO_MANY_REQUESTS
            || status == http::StatusCode::REQUEST_TIMEOUT
        {
            return Err(OidcError::Unavailable(format!(
                "token endpoint: HTTP {status}"
            )));
        }
        let body = http_client::read_body("token endpoint", resp).await?;
        if !status.is_success() {
            // Only an OAuth error body (RFC 6749 5.2) is the IdP's refusal. A
            // 4xx without one (a proxy's or WAF's HTML page) is something in
            // between failing, not the IdP deciding: it must not end sessions.
            let Ok(err) = serde_json::from_slice::<OAuthErrorBody>(&body) else {
                return Err(OidcError::InvalidResponse(format!(
                    "token endpoint: HTTP {status} without an OAuth error"
                )));
            };
            return Err(OidcError::OAuth {
                status: status.as_u16(),
                error: err.error,
                description: err.error_description,
            });
        }
        let tokens: TokenResponse = serde_json::from_slice(&body).map_err(|e| {
            OidcError::InvalidResponse(format!("token endpoint: not a token response ({e})"))
        })?;
        if let Some(t) = &tokens.token_type
            && !t.eq_ignore_ascii_case("bearer")
        {
            return Err(OidcError::InvalidResponse(format!(
                "token endpoint: unsupported token_type {t}"
            )));
        }
        Ok(tokens)
    }

    /// A POST to an IdP endpoint with client authentication as configured.
    fn authenticated_post(&self, url: &str, params: &[(&str, &str)]) -> reqwest::RequestBuilder {
        let mut form: Vec<(&str, &str)> = params.to_vec();
        let req = self.http().post(url);
        match self.auth_method {
            ClientAuthMethod::Basic => {
                // RFC 6749 2.3.1: id and secret are form-urlencoded before Basic encoding.
                let enc = |s: &str| {
                    url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>()
                };
                let credentials = format!(
                    "{}:{}",
                    enc(&self.client_id),
                    enc(self.client_secret.expose())
                );
                let value = format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(credentials)
                );
                req.header(http::header::AUTHORIZATION, value).form(&form)
            }
            ClientAuthMethod::Post => {
                form.push(("client_id", &self.client_id));
                form.push(("client_secret", self.client_secret.expose()));
                req.form(&form)
            }
        }
    }

    /// Userinfo claims; their `sub` must equal the ID token's.
    pub async fn userinfo(
        &self,
        access_token: &str,
        expected_sub: &str,
    ) -> Result<Option<Map<String, Value>>, OidcError> {
        if !self.use_userinfo {
            return Ok(None);
        }
        let meta = self.metadata().await?;
        let Some(endpoint) = meta.userinfo_endpoint.as_deref() else {
            return Ok(None);
        };
        let call = self.userinfo_call(endpoint, access_token, expected_sub);
        http_client::observed("userinfo", call).await.map(Some)
    }

    async fn userinfo_call(
        &self,
        endpoint: &str,
        access_token: &str,
        expected_sub: &str,
    ) -> Result<Map<String, Value>, OidcError> {
        let resp = self
            .http()
            .get(endpoint)
            .bearer_auth(access_token)
            .header(http::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| http_client::transport_error("userinfo", e))?;
        let claims: Map<String, Value> = http_client::json_response("userinfo", resp).await?;
        if claims.get("sub").and_then(Value::as_str) != Some(expected_sub) {
            return Err(OidcError::UserinfoSubjectMismatch);
        }
        Ok(claims)
    }

    /// Revoke a token at the IdP (RFC 7009) when it offers revocation.
    /// Returns `Ok(false)` when there is no revocation endpoint.
    pub async fn revoke(&self, token: &str, hint: &str) -> Result<bool, OidcError> {
        let meta = self.metadata().await?;
        let Some(endpoint) = meta.revocation_endpoint.as_deref() else {
            return Ok(false);
        };
        let call = self.revoke_call(endpoint, token, hint);
        http_client::observed("revocation", call)
            .await
            .map(|()| true)
    }

    async fn revoke_call(&self, endpoint: &str, token: &str, hint: &str) -> Result<(), OidcError> {
        let resp = self
            .authenticated_post(endpoint, &[("token", token), ("token_type_hint", hint)])
            .send()
            .await
            .map_err(|e| http_client::transport_error("revocation", e))?;
        if !resp.status().is_success() {
            return Err(OidcError::Unavailable(format!(
                "revocation: HTTP {}",
                resp.status()
            )));
        }
        Ok(())
    }

    /// The RP-initiated logout URL, or `None` when the IdP has no end_session_endpoint.
    pub async fn end_session_url(
        &self,
        id_token_hint: Option<&str>,
        post_logout_redirect_uri: &str,
    ) -> Result<Option<String>, OidcError> {
        let meta = self.metadata().await?;
        let Some(endpoint) = meta.end_session_endpoint.as_deref() else {
            return Ok(None);
        };
        let mut url = url::Url::parse(endpoint)
            .map_err(|_| OidcError::InvalidResponse("end_session_endpoint is not a URL".into()))?;
        {
            let mut q = url.query_pairs_mut();
            if let Some(hint) = id_token_hint {
                q.append_pair("id_token_hint", hint);
            }
            q.append_pair("client_id", &self.client_id)
                .append_pair("post_logout_redirect_uri", post_logout_redirect_uri)
                .append_pair("state", &random_token(16));
        }
        Ok(Some(url.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_matches_rfc7636_example() {
        // RFC 7636 Appendix B.
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }
}
