//! Field-by-field validation of the raw configuration into a typed
//! [`Config`], pushing one [`ConfigIssue`] per problem and going on.
//!
//! Every helper that returns `None` has recorded an issue first, so a `None`
//! anywhere means the whole load fails with a non-empty error. The rules of
//! each section live in the submodules; the typed leaf readers shared by all
//! of them live here.

use std::{collections::HashMap, net::SocketAddr, time::Duration};

use toml::Value;
use url::{Host, Url};

use super::{Config, ConfigIssue, Profile, load::RawConfig};

mod oidc;
mod routes;
mod server;
mod session;
mod tls;

/// Validates `raw` into a [`Config`]. `env_strings` holds the raw text of
/// every environment override by dotted key (see `load.rs`).
pub(super) fn validate(
    raw: RawConfig,
    env_strings: &HashMap<String, String>,
    issues: &mut Vec<ConfigIssue>,
) -> Option<Config> {
    let mut v = Validator {
        issues,
        env_strings,
        profile: None,
        public_url: None,
        auth_prefix: None,
    };
    // Server first: the other sections' rules depend on profile, public_url
    // and auth_prefix.
    let server = v.server(raw.server);
    let admin = v.admin(raw.admin);
    let oidc = v.oidc(raw.oidc);
    let session = v.session(raw.session);
    let csrf = v.csrf(raw.csrf, session.as_ref().map(|s| s.cookie_name.as_str()));
    let cors = v.cors(raw.cors);
    let routes = v.routes(raw.routes);
    let static_files = v.static_files(raw.static_files);
    Some(Config {
        server: server?,
        admin: admin?,
        oidc: oidc?,
        session: session?,
        csrf: csrf?,
        cors: cors?,
        routes: routes?,
        static_files: static_files?,
    })
}

/// Marker: the problem has been recorded as an issue.
struct Reported;

/// `Ok(None)`: the key is absent. `Err`: present but unusable (reported).
type Parsed<T> = Result<Option<T>, Reported>;

struct Validator<'a> {
    issues: &'a mut Vec<ConfigIssue>,
    env_strings: &'a HashMap<String, String>,
    /// Known once `server.profile` is valid; profile-dependent rules are
    /// skipped while it is not, to avoid follow-on noise.
    profile: Option<Profile>,
    public_url: Option<Url>,
    auth_prefix: Option<String>,
}

impl Validator<'_> {
    fn issue(&mut self, key: &str, message: impl Into<String>) -> Reported {
        self.issues.push(ConfigIssue::new(key, message));
        Reported
    }

    /// Records `message` and yields `None`, for `and_then` chains.
    fn reject<T>(&mut self, key: &str, message: impl Into<String>) -> Option<T> {
        self.issue(key, message);
        None
    }

    // ---- typed leaves (never echo the value: it may be a secret) ----

    fn string(&mut self, key: &str, value: Option<Value>) -> Parsed<String> {
        match value {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => match self.env_strings.get(key) {
                // An override like `PORTCULLIS__OIDC__CLIENT_ID=12345` parsed as an integer.
                Some(raw) => Ok(Some(raw.clone())),
                None => Err(self.issue(
                    key,
                    format!("expected a string, found {}", other.type_str()),
                )),
            },
        }
    }

    fn strings(&mut self, key: &str, value: Option<Value>) -> Parsed<Vec<String>> {
        let items = match value {
            None => return Ok(None),
            Some(Value::Array(items)) => items,
            Some(other) => {
                return Err(self.issue(
                    key,
                    format!("expected an array of strings, found {}", other.type_str()),
                ));
            }
        };
        let mut out = Vec::with_capacity(items.len());
        let mut bad = false;
        for (i, item) in items.into_iter().enumerate() {
            match item {
                Value::String(s) => out.push(s),
                other => {
                    bad = true;
                    self.issue(
                        &format!("{key}[{i}]"),
                        format!("expected a string, found {}", other.type_str()),
                    );
                }
            }
        }
        if bad { Err(Reported) } else { Ok(Some(out)) }
    }

    fn required_string(&mut self, key: &str, value: Option<Value>) -> Option<String> {
        match self.string(key, value) {
            Ok(Some(s)) => Some(s),
            Ok(None) => self.reject(
                key,
                format!("missing required key (or env {})", env_var(key)),
            ),
            Err(Reported) => None,
        }
    }

    fn string_or(&mut self, key: &str, value: Option<Value>, default: &str) -> Option<String> {
        self.string(key, value)
            .ok()
            .map(|s| s.unwrap_or_else(|| default.to_owned()))
    }

    fn strings_or(
        &mut self,
        key: &str,
        value: Option<Value>,
        default: &[&str],
    ) -> Option<Vec<String>> {
        self.strings(key, value)
            .ok()
            .map(|s| s.unwrap_or_else(|| default.iter().map(|&d| d.to_owned()).collect()))
    }

    fn bool_or(&mut self, key: &str, value: Option<Value>, default: bool) -> Option<bool> {
        match value {
            None => Some(default),
            Some(Value::Boolean(b)) => Some(b),
            Some(other) => self.reject(
                key,
                format!("expected a boolean, found {}", other.type_str()),
            ),
        }
    }

    /// A humantime duration (`30s`, `1h30m`); `positive` rejects zero.
    fn duration_or(
        &mut self,
        key: &str,
        value: Option<Value>,
        default: Duration,
        positive: bool,
    ) -> Option<Duration> {
        let text = match value {
            None => return Some(default),
            Some(Value::String(s)) => s,
            Some(other) => {
                return self.reject(
                    key,
                    format!(
                        "expected a duration string like \"30s\", found {}",
                        other.type_str()
                    ),
                );
            }
        };
        match humantime::parse_duration(&text) {
            Err(_) => self.reject(
                key,
                format!("invalid duration \"{text}\" (e.g. \"30s\", \"15m\", \"1h30m\")"),
            ),
            Ok(d) if positive && d.is_zero() => self.reject(key, "must be greater than zero"),
            Ok(d) => Some(d),
        }
    }

    fn socket_addr(&mut self, key: &str, text: &str) -> Option<SocketAddr> {
        text.parse().ok().or_else(|| {
            self.reject(
                key,
                format!(
                    "invalid socket address \"{text}\" (expected IP:PORT, e.g. 127.0.0.1:8080)"
                ),
            )
        })
    }

    fn url(&mut self, key: &str, text: &str) -> Option<Url> {
        match Url::parse(text) {
            Ok(url) => Some(url),
            Err(err) => self.reject(key, format!("invalid URL: {err}")),
        }
    }

    /// https always; http only in dev and only on a loopback host.
    fn browser_scheme(&mut self, key: &str, url: &Url) -> Option<()> {
        const DEV_HTTP: &str = "http is allowed only on loopback hosts \
            (localhost, 127.0.0.1, [::1]) in the dev profile; use https";
        match (url.scheme(), self.profile) {
            ("https", _) | ("http", None) => Some(()),
            ("http", Some(Profile::Dev)) if is_loopback(url) => Some(()),
            ("http", Some(Profile::Dev)) => self.reject(key, DEV_HTTP),
            ("http", Some(Profile::Prod)) => self.reject(key, "must use https in the prod profile"),
            (scheme, _) => {
                let message = format!("must be an https URL, found scheme \"{scheme}\"");
                self.reject(key, message)
            }
        }
    }

    fn read_file(&mut self, key: &str, path: &str) -> Option<String> {
        match std::fs::read_to_string(path) {
            Ok(text) => Some(text),
            Err(err) => self.reject(key, format!("cannot read {path}: {err}")),
        }
    }

    /// Converts every element (reporting each bad one as `key[i]`); `None`
    /// if any failed.
    fn each<T>(
        &mut self,
        key: &str,
        items: Vec<String>,
        mut convert: impl FnMut(&mut Self, &str, String) -> Option<T>,
    ) -> Option<Vec<T>> {
        let converted: Vec<Option<T>> = items
            .into_iter()
            .enumerate()
            .map(|(i, item)| convert(self, &format!("{key}[{i}]"), item))
            .collect();
        converted.into_iter().collect()
    }
}

/// The environment variable that sets the key at dotted path `key`:
/// `routes[0].prefix` → `PORTCULLIS__ROUTES__0__PREFIX`.
pub(super) fn env_var(key: &str) -> String {
    let path = key.replace('[', ".").replace(']', "").replace('.', "__");
    format!("PORTCULLIS__{}", path.to_ascii_uppercase())
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(Host::Domain(domain)) => domain.eq_ignore_ascii_case("localhost"),
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::Algorithm;

    use super::*;
    use crate::config::load::tests::{
        KEY, PROD, SECRET, dev_with, expect_issue, issues, prod, prod_with,
    };
    use crate::config::{ClientAuthMethod, TokenMode};

    #[test]
    fn minimal_prod_config_gets_every_default() {
        let c = prod();
        assert_eq!(c.server.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.public_origin(), "https://app.example.com");
        assert_eq!(c.server.profile, Profile::Prod);
        assert!(c.server.trusted_proxies.is_empty());
        assert_eq!(c.server.auth_prefix, "/auth");
        assert_eq!(c.redirect_uri(), "https://app.example.com/auth/callback");
        assert_eq!(
            c.admin.listen.map(|a| a.to_string()).as_deref(),
            Some("127.0.0.1:9090")
        );

        assert_eq!(c.oidc.issuer, "https://idp.example.com/realms/demo");
        assert_eq!(c.oidc.client_id, "portal");
        assert_eq!(c.oidc.client_secret.expose(), SECRET);
        assert_eq!(c.oidc.token_endpoint_auth_method, ClientAuthMethod::Basic);
        assert_eq!(
            c.oidc.scopes,
            ["openid", "profile", "email", "offline_access"]
        );
        assert_eq!(c.oidc.roles_claim, "roles");
        assert_eq!(c.oidc.post_logout_redirect, "/");
        assert_eq!(
            c.oidc.allowed_algs,
            [
                Algorithm::RS256,
                Algorithm::PS256,
                Algorithm::ES256,
                Algorithm::EdDSA
            ]
        );
        assert_eq!(c.oidc.http_timeout, Duration::from_secs(10));
        assert_eq!(c.oidc.clock_skew, Duration::from_secs(60));
        assert!(c.oidc.userinfo);

        assert_eq!(c.session.store, "sqlite://portcullis.db");
        assert_eq!(c.session.cookie_name, "__Host-portcullis");
        assert_eq!(c.session.idle_timeout, Duration::from_secs(1800));
        assert_eq!(c.session.absolute_timeout, Duration::from_secs(12 * 3600));
        assert_eq!(c.session.refresh_before, Duration::from_secs(60));
        assert_eq!(c.session.encryption_keys.len(), 1);
        assert_eq!(c.session.encryption_keys[0].expose(), KEY);

        assert_eq!(c.csrf.cookie, "XSRF-TOKEN");
        assert_eq!(c.csrf.header, "X-XSRF-TOKEN");
        assert!(c.cors.allowed_origins.is_empty());

        let route = &c.routes[0];
        assert_eq!(route.prefix, "/api/");
        assert_eq!(route.upstream.as_str(), "http://127.0.0.1:4111/");
        assert_eq!(route.token, TokenMode::User);
        assert!(route.require_roles.is_empty());
        assert!(!route.strip_prefix);
        assert_eq!(route.timeout, Duration::from_secs(30));
        assert!(c.static_files.is_none());
        assert!(c.secure_cookies());
    }

    #[test]
    fn minimal_dev_config_gets_dev_defaults() {
        let c = dev_with(&[]).unwrap();
        assert_eq!(c.server.profile, Profile::Dev);
        assert_eq!(c.public_origin(), "http://localhost:5173");
        assert_eq!(c.oidc.issuer, "http://127.0.0.1:9000");
        assert_eq!(c.session.cookie_name, "portcullis");
        assert!(c.routes.is_empty());
        assert!(!c.secure_cookies());
    }

    #[test]
    fn debug_output_hides_secrets() {
        let c = prod();
        let debug = format!("{c:?}");
        assert!(!debug.contains(SECRET), "{debug}");
        assert!(!debug.contains(KEY), "{debug}");
    }

    #[test]
    fn four_problems_are_all_reported() {
        let text = PROD
            .replace("https://app.example.com", "http://app.example.com")
            .replace("client_secret = \"s3cr3t-client-value\"\n", "")
            .replace(KEY, "c2hvcnQ=")
            + "[[routes]]\nprefix = \"/api/\"\nupstream = \"http://other\"\n";
        let err = Config::from_toml_str(&text, Vec::new()).unwrap_err();
        let keys: Vec<&str> = err.0.iter().map(|i| i.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "server.public_url",
                "oidc.client_secret",
                "session.encryption_keys[0]",
                "routes[1].prefix"
            ],
            "{err}"
        );
        assert_eq!(err.to_string().lines().count(), 4);
        assert!(
            err.to_string()
                .contains("routes[1].prefix: route prefix clash with routes[0]")
        );
    }

    #[test]
    fn wrong_types_are_reported_with_their_path() {
        let issues = issues(prod_with(&[
            ("server.listen", "8080"),
            ("oidc.scopes", "\"openid\""),
            ("oidc.userinfo", "\"yes\""),
            ("oidc.allowed_algs", "[\"RS256\", 5]"),
            ("routes.0.timeout", "30"),
        ]));
        let keys: Vec<&str> = issues.iter().map(|i| i.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "server.listen",
                "oidc.scopes",
                "oidc.allowed_algs[1]",
                "oidc.userinfo",
                "routes[0].timeout"
            ]
        );
        assert_eq!(issues[0].message, "expected a string, found integer");
    }

    #[test]
    fn a_wrongly_typed_secret_is_not_echoed() {
        let message = expect_issue(
            prod_with(&[("oidc.client_secret", "424242")]),
            "oidc.client_secret",
        );
        assert!(!message.contains("424242"), "{message}");
    }

    #[test]
    fn durations_parse_and_bad_ones_are_named() {
        let c = prod_with(&[
            ("oidc.http_timeout", "\"1m\""),
            ("oidc.clock_skew", "\"0s\""),
            ("session.idle_timeout", "\"1h30m\""),
        ])
        .unwrap();
        assert_eq!(c.oidc.http_timeout, Duration::from_secs(60));
        assert_eq!(c.oidc.clock_skew, Duration::ZERO);
        assert_eq!(c.session.idle_timeout, Duration::from_secs(5400));
        let message = expect_issue(
            prod_with(&[("session.idle_timeout", "\"30 minutes-ish\"")]),
            "session.idle_timeout",
        );
        assert!(
            message.starts_with("invalid duration \"30 minutes-ish\""),
            "{message}"
        );
        expect_issue(
            prod_with(&[("oidc.http_timeout", "\"0s\"")]),
            "oidc.http_timeout",
        );
        expect_issue(
            prod_with(&[("session.absolute_timeout", "\"0s\"")]),
            "session.absolute_timeout",
        );
    }
}
