//! `[oidc]`: the IdP, the client credentials and what ID tokens may look like.

use std::time::Duration;

use jsonwebtoken::Algorithm;
use toml::Value;

use super::{Reported, Validator, tls::RawTls};
use crate::config::{ClientAuthMethod, OidcConfig, Secret, is_same_origin_path, load::RawOidc};

const DEFAULT_SCOPES: &[&str] = &["openid", "profile", "email", "offline_access"];
const DEFAULT_ALGS: &[&str] = &["RS256", "PS256", "ES256", "EdDSA"];
/// What the gateway itself sends on an authorization request: an extra
/// parameter may not replace one (a second `redirect_uri` or `state` would
/// at best break the login and at worst weaken it).
const RESERVED_AUTH_PARAMS: &[&str] = &[
    "response_type",
    "client_id",
    "redirect_uri",
    "scope",
    "state",
    "nonce",
    "code_challenge",
    "code_challenge_method",
    "response_mode",
    "request",
    "request_uri",
];
/// What the gateway itself sends on a token request, and client authentication.
const RESERVED_TOKEN_PARAMS: &[&str] = &[
    "grant_type",
    "code",
    "redirect_uri",
    "code_verifier",
    "refresh_token",
    "client_id",
    "client_secret",
    "client_assertion",
    "client_assertion_type",
];
const ALLOWED_ALGS: &str = "RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA";

impl Validator<'_> {
    pub(super) fn oidc(&mut self, raw: RawOidc) -> Option<OidcConfig> {
        let issuer = self
            .required_string("oidc.issuer", raw.issuer)
            .and_then(|s| self.issuer("oidc.issuer", s));
        let client_id = self
            .required_string("oidc.client_id", raw.client_id)
            .and_then(|s| match s.trim() {
                "" => self.reject("oidc.client_id", "must not be empty"),
                _ => Some(s),
            });
        let client_secret = self.client_secret(raw.client_secret, raw.client_secret_file);
        let token_endpoint_auth_method = self
            .string_or(
                "oidc.token_endpoint_auth_method",
                raw.token_endpoint_auth_method,
                "client_secret_basic",
            )
            .and_then(|m| match m.as_str() {
                "client_secret_basic" => Some(ClientAuthMethod::Basic),
                "client_secret_post" => Some(ClientAuthMethod::Post),
                _ => self.reject(
                    "oidc.token_endpoint_auth_method",
                    format!(
                        "expected \"client_secret_basic\" or \"client_secret_post\", found \"{m}\""
                    ),
                ),
            });
        let scopes = self
            .strings_or("oidc.scopes", raw.scopes, DEFAULT_SCOPES)
            .and_then(|list| self.scopes("oidc.scopes", list));
        let roles_claim = self
            .string_or("oidc.roles_claim", raw.roles_claim, "roles")
            .and_then(|c| match c.split('.').any(str::is_empty) {
                true => self.reject(
                    "oidc.roles_claim",
                    "must be a dotted claim path like \"realm_access.roles\"",
                ),
                false => Some(c),
            });
        let post_logout_redirect = self
            .string_or("oidc.post_logout_redirect", raw.post_logout_redirect, "/")
            .and_then(|p| match is_same_origin_path(&p) {
                true => Some(p),
                false => self.reject(
                    "oidc.post_logout_redirect",
                    "must be a same-origin path starting with a single / (not //, /\\ or a URL)",
                ),
            });
        let allowed_algs = self
            .strings_or("oidc.allowed_algs", raw.allowed_algs, DEFAULT_ALGS)
            .and_then(|list| match list.is_empty() {
                true => self.reject("oidc.allowed_algs", "must name at least one algorithm"),
                false => self.each("oidc.allowed_algs", list, |v, key, s| match algorithm(&s) {
                    Ok(alg) => Some(alg),
                    Err(message) => v.reject(key, message),
                }),
            });
        let http_timeout = self.duration_or(
            "oidc.http_timeout",
            raw.http_timeout,
            Duration::from_secs(10),
            true,
        );
        let clock_skew = self.duration_or(
            "oidc.clock_skew",
            raw.clock_skew,
            Duration::from_secs(60),
            false,
        );
        let userinfo = self.bool_or("oidc.userinfo", raw.userinfo, true);
        let backchannel_all_sessions = self.bool_or(
            "oidc.backchannel_all_sessions",
            raw.backchannel_all_sessions,
            false,
        );
        let frontchannel_logout =
            self.bool_or("oidc.frontchannel_logout", raw.frontchannel_logout, false);
        let breaker_failures =
            self.count_in("oidc.breaker_failures", raw.breaker_failures, 5, 1..=1000);
        let breaker_backoff = self.duration_or(
            "oidc.breaker_backoff",
            raw.breaker_backoff,
            Duration::from_secs(1),
            true,
        );
        let breaker_max_backoff = self.duration_or(
            "oidc.breaker_max_backoff",
            raw.breaker_max_backoff,
            Duration::from_secs(60),
            true,
        );
        let extra_auth_params = self.extra_params(
            "oidc.extra_auth_params",
            raw.extra_auth_params,
            RESERVED_AUTH_PARAMS,
        );
        let extra_token_params = self.extra_params(
            "oidc.extra_token_params",
            raw.extra_token_params,
            RESERVED_TOKEN_PARAMS,
        );
        if let (Some(b), Some(m)) = (breaker_backoff, breaker_max_backoff)
            && m < b
        {
            self.reject::<()>(
                "oidc.breaker_max_backoff",
                "must be at least oidc.breaker_backoff",
            );
        }
        let tls = self
            .tls(
                RawTls {
                    prefix: "oidc",
                    ca_file: raw.ca_file,
                    tls_roots: raw.tls_roots,
                    client_cert_file: None,
                    client_key_file: None,
                },
                None,
            )
            .map(|settings| settings.trust);
        Some(OidcConfig {
            frontchannel_logout: frontchannel_logout?,
            breaker_failures: breaker_failures?,
            breaker_backoff: breaker_backoff?,
            breaker_max_backoff: breaker_max_backoff?,
            issuer: issuer?,
            client_id: client_id?,
            client_secret: client_secret?,
            token_endpoint_auth_method: token_endpoint_auth_method?,
            scopes: scopes?,
            roles_claim: roles_claim?,
            post_logout_redirect: post_logout_redirect?,
            allowed_algs: allowed_algs?,
            http_timeout: http_timeout?,
            clock_skew: clock_skew?,
            userinfo: userinfo?,
            backchannel_all_sessions: backchannel_all_sessions?,
            extra_auth_params: extra_auth_params?,
            extra_token_params: extra_token_params?,
            tls: tls?,
        })
    }

    /// The issuer is kept exactly as written: discovery must match it byte for byte.
    fn issuer(&mut self, key: &str, text: String) -> Option<String> {
        let url = self.url(key, &text)?;
        self.browser_scheme(key, &url)?;
        if url.query().is_some() || url.fragment().is_some() {
            return self.reject(key, "must not have a query or fragment");
        }
        Some(text)
    }

    fn client_secret(&mut self, inline: Option<Value>, file: Option<Value>) -> Option<Secret> {
        const KEY: &str = "oidc.client_secret";
        const FILE_KEY: &str = "oidc.client_secret_file";
        match (self.string(KEY, inline), self.string(FILE_KEY, file)) {
            (Err(Reported), _) | (_, Err(Reported)) => None,
            (Ok(Some(_)), Ok(Some(_))) => {
                self.reject(KEY, "set only one of client_secret and client_secret_file")
            }
            (Ok(Some(secret)), Ok(None)) if secret.is_empty() => {
                self.reject(KEY, "must not be empty")
            }
            (Ok(Some(secret)), Ok(None)) => Some(Secret::new(secret)),
            (Ok(None), Ok(Some(path))) => {
                let text = self.read_file(FILE_KEY, &path)?;
                match text.trim() {
                    "" => self.reject(FILE_KEY, format!("{path} is empty")),
                    secret => Some(Secret::new(secret)),
                }
            }
            (Ok(None), Ok(None)) => self.reject(
                KEY,
                "missing client secret (set client_secret or client_secret_file, \
                 or env PORTCULLIS__OIDC__CLIENT_SECRET or PORTCULLIS__OIDC__CLIENT_SECRET_FILE)",
            ),
        }
    }

    /// A table of extra request parameters, name → string value.
    fn extra_params(
        &mut self,
        key: &str,
        value: Option<Value>,
        reserved: &[&str],
    ) -> Option<Vec<(String, String)>> {
        let table = match value {
            None => return Some(Vec::new()),
            Some(Value::Table(t)) => t,
            Some(other) => {
                return self.reject(
                    key,
                    format!("expected a table of strings, found {}", other.type_str()),
                );
            }
        };
        let mut out = Vec::with_capacity(table.len());
        let mut ok = true;
        for (name, value) in table {
            let item = format!("{key}.{name}");
            if name.is_empty() || name.contains(|c: char| c.is_whitespace() || c.is_control()) {
                ok = false;
                self.issue(&item, "a parameter name must be one non-empty word");
            } else if reserved.iter().any(|r| r.eq_ignore_ascii_case(&name)) {
                ok = false;
                self.issue(&item, "is set by the gateway and cannot be overridden");
            } else if let Ok(Some(v)) = self.string(&item, Some(value)) {
                out.push((name, v));
            } else {
                ok = false;
            }
        }
        ok.then_some(out)
    }

    fn scopes(&mut self, key: &str, scopes: Vec<String>) -> Option<Vec<String>> {
        let mut ok = true;
        for (i, scope) in scopes.iter().enumerate() {
            if scope.is_empty() || scope.contains(|c: char| c.is_whitespace() || c.is_control()) {
                ok = false;
                self.issue(&format!("{key}[{i}]"), "a scope must be one non-empty word");
            }
        }
        if !scopes.iter().any(|s| s == "openid") {
            ok = false;
            self.issue(key, "must contain \"openid\"");
        }
        ok.then_some(scopes)
    }
}

fn algorithm(name: &str) -> Result<Algorithm, String> {
    Ok(match name {
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "PS256" => Algorithm::PS256,
        "PS384" => Algorithm::PS384,
        "PS512" => Algorithm::PS512,
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        "EdDSA" => Algorithm::EdDSA,
        _ if name.eq_ignore_ascii_case("none") => {
            return Err("\"none\" is refused: ID tokens must be signed".to_owned());
        }
        "HS256" | "HS384" | "HS512" => {
            return Err(format!(
                "{name} is refused: an HMAC ID token is signed with the client secret, \
                 which the gateway must not accept as proof"
            ));
        }
        _ => {
            return Err(format!(
                "unknown algorithm \"{name}\" (allowed: {ALLOWED_ALGS})"
            ));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::config::load::tests::{PROD, dev_with, expect_issue, lit, prod_with, temp_file};

    #[test]
    fn issuer_is_required_and_kept_byte_for_byte() {
        let text = PROD.replace("issuer = \"https://idp.example.com/realms/demo\"\n", "");
        expect_issue(Config::from_toml_str(&text, Vec::new()), "oidc.issuer");
        let c = prod_with(&[("oidc.issuer", "\"https://IdP.example.com/realms/demo/\"")]).unwrap();
        assert_eq!(c.oidc.issuer, "https://IdP.example.com/realms/demo/");
    }

    #[test]
    fn issuer_scheme_follows_the_profile() {
        expect_issue(
            prod_with(&[("oidc.issuer", "\"http://127.0.0.1:9000\"")]),
            "oidc.issuer",
        );
        expect_issue(
            dev_with(&[("oidc.issuer", "\"http://idp.example.com\"")]),
            "oidc.issuer",
        );
        expect_issue(
            prod_with(&[("oidc.issuer", "\"not a url\"")]),
            "oidc.issuer",
        );
        expect_issue(
            prod_with(&[("oidc.issuer", "\"https://idp.example.com/?a=b\"")]),
            "oidc.issuer",
        );
        dev_with(&[("oidc.issuer", "\"http://localhost:9000/realms/x\"")]).unwrap();
    }

    #[test]
    fn client_id_is_required_and_not_empty() {
        expect_issue(prod_with(&[("oidc.client_id", "\"  \"")]), "oidc.client_id");
        let text = PROD.replace("client_id = \"portal\"\n", "");
        expect_issue(Config::from_toml_str(&text, Vec::new()), "oidc.client_id");
    }

    #[test]
    fn client_secret_rules() {
        let text = PROD.replace("client_secret = \"s3cr3t-client-value\"\n", "");
        let message = expect_issue(
            Config::from_toml_str(&text, Vec::new()),
            "oidc.client_secret",
        );
        assert!(message.starts_with("missing client secret"), "{message}");
        // Every way to set it is named, the environment variable included.
        for way in [
            "client_secret_file",
            "PORTCULLIS__OIDC__CLIENT_SECRET",
            "PORTCULLIS__OIDC__CLIENT_SECRET_FILE",
        ] {
            assert!(message.contains(way), "{message}");
        }
        expect_issue(
            prod_with(&[("oidc.client_secret", "\"\"")]),
            "oidc.client_secret",
        );
        let both = prod_with(&[("oidc.client_secret_file", "\"/etc/secret\"")]);
        expect_issue(both, "oidc.client_secret");
    }

    #[test]
    fn client_secret_file_is_read_and_trimmed() {
        let file = temp_file("  file-secret-value \n");
        let text = PROD.replace(
            "client_secret = \"s3cr3t-client-value\"",
            &format!(
                "client_secret_file = {}",
                lit(&file.path().display().to_string())
            ),
        );
        let c = Config::from_toml_str(&text, Vec::new()).unwrap();
        assert_eq!(c.oidc.client_secret.expose(), "file-secret-value");
        assert!(!format!("{c:?}").contains("file-secret-value"));

        let empty = temp_file("\n \n");
        let text = PROD.replace(
            "client_secret = \"s3cr3t-client-value\"",
            &format!(
                "client_secret_file = {}",
                lit(&empty.path().display().to_string())
            ),
        );
        expect_issue(
            Config::from_toml_str(&text, Vec::new()),
            "oidc.client_secret_file",
        );

        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        let text = PROD.replace(
            "client_secret = \"s3cr3t-client-value\"",
            &format!(
                "client_secret_file = {}",
                lit(&missing.display().to_string())
            ),
        );
        let message = expect_issue(
            Config::from_toml_str(&text, Vec::new()),
            "oidc.client_secret_file",
        );
        assert!(message.contains("missing"), "{message}");
    }

    #[test]
    fn token_endpoint_auth_method_values() {
        let c =
            prod_with(&[("oidc.token_endpoint_auth_method", "\"client_secret_post\"")]).unwrap();
        assert_eq!(c.oidc.token_endpoint_auth_method, ClientAuthMethod::Post);
        expect_issue(
            prod_with(&[("oidc.token_endpoint_auth_method", "\"private_key_jwt\"")]),
            "oidc.token_endpoint_auth_method",
        );
    }

    #[test]
    fn scopes_must_contain_openid() {
        expect_issue(
            prod_with(&[("oidc.scopes", r#"["profile"]"#)]),
            "oidc.scopes",
        );
        expect_issue(
            prod_with(&[("oidc.scopes", r#"["openid", "a b"]"#)]),
            "oidc.scopes[1]",
        );
    }

    #[test]
    fn roles_claim_must_be_a_dotted_path() {
        let c = prod_with(&[("oidc.roles_claim", "\"realm_access.roles\"")]).unwrap();
        assert_eq!(c.oidc.roles_claim, "realm_access.roles");
        for bad in ["\"\"", "\"a..b\"", "\".roles\""] {
            expect_issue(prod_with(&[("oidc.roles_claim", bad)]), "oidc.roles_claim");
        }
    }

    #[test]
    fn post_logout_redirect_must_be_a_same_origin_path() {
        for bad in [
            r#""//evil.com""#,
            r#""/\\evil.com""#,
            r#""https://evil.com""#,
            r#""evil""#,
            r#""javascript:x""#,
        ] {
            expect_issue(
                prod_with(&[("oidc.post_logout_redirect", bad)]),
                "oidc.post_logout_redirect",
            );
        }
        let c = prod_with(&[("oidc.post_logout_redirect", "\"/bye?x=1\"")]).unwrap();
        assert_eq!(c.oidc.post_logout_redirect, "/bye?x=1");
    }

    #[test]
    fn allowed_algs_refuse_none_and_hmac() {
        let message = expect_issue(
            prod_with(&[("oidc.allowed_algs", r#"["RS256", "none"]"#)]),
            "oidc.allowed_algs[1]",
        );
        assert!(message.contains("none"), "{message}");
        let message = expect_issue(
            prod_with(&[("oidc.allowed_algs", r#"["HS256"]"#)]),
            "oidc.allowed_algs[0]",
        );
        assert!(message.contains("HMAC"), "{message}");
        expect_issue(
            prod_with(&[("oidc.allowed_algs", r#"["RS257"]"#)]),
            "oidc.allowed_algs[0]",
        );
        expect_issue(
            prod_with(&[("oidc.allowed_algs", "[]")]),
            "oidc.allowed_algs",
        );
        let all = r#"["RS256","RS384","RS512","PS256","PS384","PS512","ES256","ES384","EdDSA"]"#;
        assert_eq!(
            prod_with(&[("oidc.allowed_algs", all)])
                .unwrap()
                .oidc
                .allowed_algs
                .len(),
            9
        );
    }
}
