//! Field-by-field validation of the raw configuration into a typed
//! [`Config`], pushing one [`ConfigIssue`] per problem and going on.
//!
//! Every helper that returns `None` has recorded an issue first, so a `None`
//! anywhere means the whole load fails with a non-empty error.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    time::Duration,
};

use base64::{
    Engine as _, alphabet,
    engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig},
};
use ipnet::IpNet;
use jsonwebtoken::Algorithm;
use toml::Value;
use url::{Host, Url};

use super::{
    AdminConfig, ClientAuthMethod, Config, ConfigIssue, CorsConfig, CsrfConfig, OidcConfig,
    Profile, RouteConfig, Secret, ServerConfig, SessionConfig, StaticConfig, TokenMode,
    load::{
        RawAdmin, RawConfig, RawCors, RawCsrf, RawOidc, RawRoute, RawServer, RawSession, RawStatic,
    },
};

const DEFAULT_SCOPES: &[&str] = &["openid", "profile", "email", "offline_access"];
const DEFAULT_ALGS: &[&str] = &["RS256", "PS256", "ES256", "EdDSA"];
const ALLOWED_ALGS: &str = "RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA";

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
            Ok(None) => self.reject(key, "missing required key"),
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
        match (url.scheme(), self.profile) {
            ("https", _) | ("http", None) => Some(()),
            ("http", Some(Profile::Prod)) => self.reject(key, "must use https in the prod profile"),
            ("http", Some(Profile::Dev)) if is_loopback(url) => Some(()),
            ("http", Some(Profile::Dev)) => self.reject(
                key,
                "http is allowed only on loopback hosts (localhost, 127.0.0.1, [::1]) in the dev profile; use https",
            ),
            (scheme, _) => self.reject(key, format!("must be an https URL, found scheme \"{scheme}\"")),
        }
    }

    // ---- sections ----

    fn server(&mut self, raw: RawServer) -> Option<ServerConfig> {
        let profile = self
            .string_or("server.profile", raw.profile, "prod")
            .and_then(|p| match p.as_str() {
                "dev" => Some(Profile::Dev),
                "prod" => Some(Profile::Prod),
                _ => self.reject(
                    "server.profile",
                    format!("expected \"dev\" or \"prod\", found \"{p}\""),
                ),
            });
        self.profile = profile;
        let listen = self
            .string_or("server.listen", raw.listen, "127.0.0.1:8080")
            .and_then(|s| self.socket_addr("server.listen", &s));
        let public_url = self
            .required_string("server.public_url", raw.public_url)
            .and_then(|s| self.public_url("server.public_url", &s));
        self.public_url = public_url.clone();
        let trusted_proxies = self
            .strings_or("server.trusted_proxies", raw.trusted_proxies, &[])
            .and_then(|list| {
                self.each("server.trusted_proxies", list, |v, key, s| {
                    s.parse::<IpNet>()
                        .ok()
                        .or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
                        .or_else(|| {
                            v.reject(
                                key,
                                format!("invalid CIDR \"{s}\" (e.g. 10.0.0.0/8 or 192.0.2.1)"),
                            )
                        })
                })
            });
        let auth_prefix = self
            .string_or("server.auth_prefix", raw.auth_prefix, "/auth")
            .and_then(|p| self.auth_prefix("server.auth_prefix", p));
        self.auth_prefix = auth_prefix.clone();
        Some(ServerConfig {
            listen: listen?,
            public_url: public_url?,
            profile: profile?,
            trusted_proxies: trusted_proxies?,
            auth_prefix: auth_prefix?,
        })
    }

    fn public_url(&mut self, key: &str, text: &str) -> Option<Url> {
        let url = self.url(key, text)?;
        self.browser_scheme(key, &url)?;
        if !url.username().is_empty() || url.password().is_some() {
            return self.reject(key, "must not contain credentials");
        }
        if !matches!(url.path(), "" | "/") || url.query().is_some() || url.fragment().is_some() {
            return self.reject(
                key,
                "must be an origin only (scheme, host, port): no path, query or fragment",
            );
        }
        Some(url)
    }

    fn auth_prefix(&mut self, key: &str, prefix: String) -> Option<String> {
        if !prefix.starts_with('/') {
            self.reject(key, "must start with /")
        } else if prefix.len() == 1 || prefix.ends_with('/') {
            self.reject(key, "must not end with / (e.g. \"/auth\")")
        } else if prefix.contains("//") {
            self.reject(key, "must not contain //")
        } else if !prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '_' | '-'))
        {
            self.reject(key, "may contain only letters, digits, /, _ and -")
        } else {
            Some(prefix)
        }
    }

    fn admin(&mut self, raw: RawAdmin) -> Option<AdminConfig> {
        let listen = self
            .string_or("admin.listen", raw.listen, "127.0.0.1:9090")
            .and_then(|s| match s.as_str() {
                "" => Some(None),
                _ => self.socket_addr("admin.listen", &s).map(Some),
            });
        Some(AdminConfig { listen: listen? })
    }

    fn oidc(&mut self, raw: RawOidc) -> Option<OidcConfig> {
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
        Some(OidcConfig {
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
                "missing client secret (set client_secret or client_secret_file)",
            ),
        }
    }

    fn read_file(&mut self, key: &str, path: &str) -> Option<String> {
        match std::fs::read_to_string(path) {
            Ok(text) => Some(text),
            Err(err) => self.reject(key, format!("cannot read {path}: {err}")),
        }
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

    fn session(&mut self, raw: RawSession) -> Option<SessionConfig> {
        let store = self
            .string_or("session.store", raw.store, "sqlite://portcullis.db")
            .and_then(|s| match store_syntax(&s) {
                Ok(()) => Some(s),
                Err(message) => self.reject("session.store", message),
            });
        let default_cookie = match self.profile {
            Some(Profile::Dev) => "portcullis",
            _ => "__Host-portcullis",
        };
        let cookie_name = self
            .string_or("session.cookie_name", raw.cookie_name, default_cookie)
            .and_then(|name| self.session_cookie_name("session.cookie_name", name));
        let idle_timeout = self.duration_or(
            "session.idle_timeout",
            raw.idle_timeout,
            Duration::from_secs(30 * 60),
            true,
        );
        let absolute_timeout = self.duration_or(
            "session.absolute_timeout",
            raw.absolute_timeout,
            Duration::from_secs(12 * 3600),
            true,
        );
        let refresh_before = self.duration_or(
            "session.refresh_before",
            raw.refresh_before,
            Duration::from_secs(60),
            false,
        );
        if let (Some(idle), Some(absolute)) = (idle_timeout, absolute_timeout) {
            if idle > absolute {
                self.issue(
                    "session.idle_timeout",
                    "must not be longer than session.absolute_timeout",
                );
            }
        }
        let encryption_keys = self.encryption_keys(raw.encryption_keys, raw.encryption_keys_file);
        Some(SessionConfig {
            store: store?,
            cookie_name: cookie_name?,
            idle_timeout: idle_timeout?,
            absolute_timeout: absolute_timeout?,
            refresh_before: refresh_before?,
            encryption_keys: encryption_keys?,
        })
    }

    fn session_cookie_name(&mut self, key: &str, name: String) -> Option<String> {
        if !is_cookie_name(&name) {
            return self.reject(key, format!("\"{name}\" is not a valid cookie name"));
        }
        let needs_https = ["__Host-", "__Secure-"]
            .into_iter()
            .find(|prefix| name.starts_with(prefix));
        let is_https = self.public_url.as_ref().map(|url| url.scheme() == "https");
        match (needs_https, is_https) {
            (Some(prefix), Some(false)) => self.reject(
                key,
                format!("a {prefix} cookie needs an https server.public_url (on http use e.g. \"portcullis\")"),
            ),
            _ => Some(name),
        }
    }

    fn encryption_keys(&mut self, list: Option<Value>, file: Option<Value>) -> Option<Vec<Secret>> {
        const KEY: &str = "session.encryption_keys";
        const FILE_KEY: &str = "session.encryption_keys_file";
        match (self.strings(KEY, list), self.string(FILE_KEY, file)) {
            (Err(Reported), _) | (_, Err(Reported)) => None,
            (Ok(Some(_)), Ok(Some(_))) => {
                self.reject(KEY, "set only one of encryption_keys and encryption_keys_file")
            }
            (Ok(Some(keys)), Ok(None)) if keys.is_empty() => self.reject(KEY, "must contain at least one key"),
            (Ok(Some(keys)), Ok(None)) => self.each(KEY, keys, |v, key, k| match is_key(&k) {
                true => Some(Secret::new(k)),
                false => v.reject(key, "key must be 32 bytes of base64"),
            }),
            (Ok(None), Ok(Some(path))) => {
                let text = self.read_file(FILE_KEY, &path)?;
                let mut keys = Vec::new();
                let mut ok = true;
                for (i, line) in text.lines().enumerate() {
                    match line.trim() {
                        "" => {}
                        k if is_key(k) => keys.push(Secret::new(k)),
                        _ => {
                            ok = false;
                            self.issue(FILE_KEY, format!("line {}: key must be 32 bytes of base64", i + 1));
                        }
                    }
                }
                match (ok, keys.is_empty()) {
                    (false, _) => None,
                    (true, true) => self.reject(FILE_KEY, format!("{path} holds no key")),
                    (true, false) => Some(keys),
                }
            }
            (Ok(None), Ok(None)) => self.reject(
                KEY,
                "missing session encryption key (set encryption_keys or encryption_keys_file; `portcullis keygen` prints one)",
            ),
        }
    }

    fn csrf(&mut self, raw: RawCsrf, session_cookie: Option<&str>) -> Option<CsrfConfig> {
        let cookie = self
            .string_or("csrf.cookie", raw.cookie, "XSRF-TOKEN")
            .and_then(|name| {
                if !is_cookie_name(&name) {
                    self.reject(
                        "csrf.cookie",
                        format!("\"{name}\" is not a valid cookie name"),
                    )
                } else if session_cookie == Some(name.as_str()) {
                    self.reject("csrf.cookie", "must differ from session.cookie_name")
                } else {
                    Some(name)
                }
            });
        let header = self
            .string_or("csrf.header", raw.header, "X-XSRF-TOKEN")
            .and_then(|name| match http::HeaderName::from_bytes(name.as_bytes()) {
                Ok(_) => Some(name),
                Err(_) => self.reject(
                    "csrf.header",
                    format!("\"{name}\" is not a valid header name"),
                ),
            });
        Some(CsrfConfig {
            cookie: cookie?,
            header: header?,
        })
    }

    fn cors(&mut self, raw: RawCors) -> Option<CorsConfig> {
        let allowed_origins = self
            .strings_or("cors.allowed_origins", raw.allowed_origins, &[])
            .and_then(|list| {
                self.each("cors.allowed_origins", list, |v, key, s| v.origin(key, &s))
            });
        Some(CorsConfig {
            allowed_origins: allowed_origins?,
        })
    }

    /// An exact origin, returned in its serialized form (`http://localhost:5173`),
    /// which is what browsers send in `Origin`.
    fn origin(&mut self, key: &str, text: &str) -> Option<String> {
        if text.contains('*') {
            return self.reject(key, "wildcards are not allowed: list exact origins");
        }
        let url = self.url(key, text)?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return self.reject(
                key,
                "must be an http or https origin like \"https://app.example.com\"",
            );
        }
        if !url.username().is_empty()
            || url.password().is_some()
            || !matches!(url.path(), "" | "/")
            || url.query().is_some()
            || url.fragment().is_some()
        {
            return self.reject(
                key,
                "must be an origin only (scheme, host, port): no path, query or fragment",
            );
        }
        Some(url.origin().ascii_serialization())
    }

    fn routes(&mut self, raw: Vec<(usize, RawRoute)>) -> Option<Vec<RouteConfig>> {
        let mut routes = Vec::with_capacity(raw.len());
        let mut ok = true;
        let mut seen: Vec<(String, usize)> = Vec::new();
        for (index, mut raw) in raw {
            let prefix = self.route_prefix(index, raw.prefix.take(), &seen);
            if let Some(prefix) = &prefix {
                seen.push((prefix.clone(), index));
            }
            let route = self.route(index, prefix, raw);
            ok &= route.is_some();
            routes.extend(route);
        }
        ok.then_some(routes)
    }

    fn route_prefix(
        &mut self,
        index: usize,
        value: Option<Value>,
        seen: &[(String, usize)],
    ) -> Option<String> {
        let key = format!("routes[{index}].prefix");
        let prefix = self.required_string(&key, value)?;
        if !prefix.starts_with('/') {
            return self.reject(&key, "must start with /");
        }
        if prefix.contains(|c: char| {
            c.is_whitespace() || c.is_control() || matches!(c, '?' | '#' | '\\')
        }) || prefix
            .split('/')
            .any(|segment| segment == "." || segment == "..")
        {
            return self.reject(
                &key,
                "must be a plain path (no whitespace, ?, #, \\, . or .. segments)",
            );
        }
        if let Some((_, other)) = seen.iter().find(|(p, _)| *p == prefix) {
            return self.reject(&key, format!("route prefix clash with routes[{other}]"));
        }
        if let Some(auth) = &self.auth_prefix {
            if prefix.trim_end_matches('/') == auth || prefix.starts_with(&format!("{auth}/")) {
                let message = format!("route prefix clash with server.auth_prefix (\"{auth}\")");
                return self.reject(&key, message);
            }
        }
        Some(prefix)
    }

    fn route(
        &mut self,
        index: usize,
        prefix: Option<String>,
        raw: RawRoute,
    ) -> Option<RouteConfig> {
        let key = |field: &str| format!("routes[{index}].{field}");
        let upstream = self
            .required_string(&key("upstream"), raw.upstream)
            .and_then(|s| self.upstream(&key("upstream"), &s));
        let token = self
            .string_or(&key("token"), raw.token, "user")
            .and_then(|t| match t.as_str() {
                "user" => Some(TokenMode::User),
                "none" => Some(TokenMode::None),
                _ => self.reject(
                    &key("token"),
                    format!("expected \"user\" or \"none\", found \"{t}\""),
                ),
            });
        let require_roles = self
            .strings_or(&key("require_roles"), raw.require_roles, &[])
            .and_then(|roles| match roles.iter().position(String::is_empty) {
                Some(i) => self.reject(
                    &format!("{}[{i}]", key("require_roles")),
                    "must not be empty",
                ),
                None => Some(roles),
            });
        let require_roles = match (token, require_roles) {
            (Some(TokenMode::None), Some(roles)) if !roles.is_empty() => self.reject(
                &key("require_roles"),
                "needs token = \"user\": a route with token = \"none\" has no session to check roles against",
            ),
            (_, roles) => roles,
        };
        let strip_prefix = self.bool_or(&key("strip_prefix"), raw.strip_prefix, false);
        let timeout = self.duration_or(&key("timeout"), raw.timeout, Duration::from_secs(30), true);
        Some(RouteConfig {
            prefix: prefix?,
            upstream: upstream?,
            token: token?,
            require_roles: require_roles?,
            strip_prefix: strip_prefix?,
            timeout: timeout?,
        })
    }

    fn upstream(&mut self, key: &str, text: &str) -> Option<Url> {
        let url = self.url(key, text)?;
        if !matches!(url.scheme(), "http" | "https") {
            return self.reject(key, "must be an http or https URL");
        }
        if url.query().is_some() || url.fragment().is_some() {
            return self.reject(key, "must not have a query or fragment");
        }
        Some(url)
    }

    fn static_files(&mut self, raw: Option<RawStatic>) -> Option<Option<StaticConfig>> {
        let Some(raw) = raw else { return Some(None) };
        let dir =
            self.required_string("static.dir", raw.dir)
                .and_then(|dir| match dir.is_empty() {
                    true => self.reject("static.dir", "must not be empty"),
                    false => Some(PathBuf::from(dir)),
                });
        let spa_fallback = self.bool_or("static.spa_fallback", raw.spa_fallback, true);
        Some(Some(StaticConfig {
            dir: dir?,
            spa_fallback: spa_fallback?,
        }))
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

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(Host::Domain(domain)) => domain.eq_ignore_ascii_case("localhost"),
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// A path on our own origin: one leading `/`, not `//` or `/\` (which
/// browsers read as another host), no control characters.
fn is_same_origin_path(path: &str) -> bool {
    path.starts_with('/')
        && !path.starts_with("//")
        && !path.starts_with("/\\")
        && !path.contains(|c: char| c.is_control())
}

/// An RFC 6265 cookie name: an RFC 9110 token.
fn is_cookie_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Base64 (standard or url-safe, padding optional) of exactly 32 bytes.
fn is_key(text: &str) -> bool {
    const CONFIG: GeneralPurposeConfig =
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    const STANDARD: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, CONFIG);
    const URL_SAFE: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, CONFIG);
    [STANDARD, URL_SAFE]
        .iter()
        .any(|engine| engine.decode(text).is_ok_and(|bytes| bytes.len() == 32))
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
                "{name} is refused: HMAC ID tokens are signed with the client secret, which the gateway must not accept as proof"
            ));
        }
        _ => {
            return Err(format!(
                "unknown algorithm \"{name}\" (allowed: {ALLOWED_ALGS})"
            ));
        }
    })
}

/// Accepts the store URL schemes the gateway knows. Messages never echo the
/// URL: it may carry a password.
fn store_syntax(store: &str) -> Result<(), String> {
    const HINT: &str = "expected \"memory\", \"sqlite://PATH\", \"sqlite::memory:\", redis://, rediss://, redis+sentinel://, postgres:// or postgresql://";
    if store == "memory" {
        return Ok(());
    }
    if let Some(rest) = store.strip_prefix("sqlite:") {
        return match rest.trim_start_matches("//") {
            "" => Err(format!("sqlite store needs a path; {HINT}")),
            _ => Ok(()),
        };
    }
    if let Some(rest) = store.strip_prefix("redis+sentinel://") {
        // Several comma-separated hosts: not a URL `url` can parse.
        return match rest {
            "" => Err("redis+sentinel store needs hosts and a master name".to_owned()),
            _ => Ok(()),
        };
    }
    let scheme = store.split_once("://").map(|(scheme, _)| scheme);
    match scheme {
        Some("redis" | "rediss" | "postgres" | "postgresql") => match Url::parse(store) {
            Ok(url) if url.host_str().is_some_and(|h| !h.is_empty()) => Ok(()),
            _ => Err(
                "invalid store URL (expected e.g. redis://HOST:PORT/DB or postgres://USER@HOST/DB)"
                    .to_owned(),
            ),
        },
        _ => Err(format!("unsupported store; {HINT}")),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::super::load::tests::{
        DEV, KEY, PROD, SECRET, expect_issue, issues, load_edited, prod_with,
    };
    use super::*;

    fn prod() -> Config {
        prod_with(&[]).unwrap()
    }

    fn dev_with(edits: &[(&str, &str)]) -> Result<Config, ConfigError> {
        load_edited(DEV, edits)
    }

    /// A TOML string literal for `text` (paths in temp dirs).
    fn lit(text: &str) -> String {
        Value::String(text.to_owned()).to_string()
    }

    fn temp_file(contents: &str) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(contents.as_bytes()).unwrap();
        file
    }

    use super::super::ConfigError;

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
        assert_eq!(c.oidc.scopes, DEFAULT_SCOPES);
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

    // ---- server ----

    #[test]
    fn server_listen_must_be_a_socket_address() {
        expect_issue(
            prod_with(&[("server.listen", "\"localhost:8080\"")]),
            "server.listen",
        );
        let c = prod_with(&[("server.listen", "\"[::]:80\"")]).unwrap();
        assert_eq!(c.server.listen.port(), 80);
    }

    #[test]
    fn public_url_is_required() {
        let text = PROD.replace("public_url = \"https://app.example.com\"\n", "");
        let message = expect_issue(
            Config::from_toml_str(&text, Vec::new()),
            "server.public_url",
        );
        assert_eq!(message, "missing required key");
    }

    #[test]
    fn public_url_must_be_an_absolute_origin() {
        for bad in [
            "\"app.example.com\"",
            "\"https://app.example.com/app\"",
            "\"https://app.example.com/?x=1\"",
            "\"https://app.example.com/#top\"",
            "\"https://user:pw@app.example.com\"",
            "\"ftp://app.example.com\"",
        ] {
            expect_issue(
                prod_with(&[("server.public_url", bad)]),
                "server.public_url",
            );
        }
        let c = prod_with(&[("server.public_url", "\"https://app.example.com:8443/\"")]).unwrap();
        assert_eq!(c.public_origin(), "https://app.example.com:8443");
    }

    #[test]
    fn prod_public_url_must_be_https() {
        let message = expect_issue(
            prod_with(&[("server.public_url", "\"http://localhost:8080\"")]),
            "server.public_url",
        );
        assert!(message.contains("https"), "{message}");
    }

    #[test]
    fn dev_allows_http_only_on_loopback() {
        for ok in [
            "\"http://127.0.0.1:8080\"",
            "\"http://[::1]:8080\"",
            "\"https://dev.example.com\"",
        ] {
            dev_with(&[("server.public_url", ok)]).unwrap();
        }
        expect_issue(
            dev_with(&[("server.public_url", "\"http://dev.example.com\"")]),
            "server.public_url",
        );
    }

    #[test]
    fn profile_must_be_dev_or_prod() {
        let message = expect_issue(
            prod_with(&[("server.profile", "\"staging\"")]),
            "server.profile",
        );
        assert!(message.contains("staging"));
    }

    #[test]
    fn trusted_proxies_take_cidrs_and_bare_ips() {
        let c = prod_with(&[(
            "server.trusted_proxies",
            r#"["10.0.0.0/8", "192.0.2.1", "::1"]"#,
        )])
        .unwrap();
        let nets: Vec<String> = c
            .server
            .trusted_proxies
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(nets, ["10.0.0.0/8", "192.0.2.1/32", "::1/128"]);
        expect_issue(
            prod_with(&[("server.trusted_proxies", r#"["10.0.0.0/8", "proxy.local"]"#)]),
            "server.trusted_proxies[1]",
        );
    }

    #[test]
    fn auth_prefix_shape_is_checked() {
        for bad in [
            "\"auth\"",
            "\"/auth/\"",
            "\"/\"",
            "\"/a b\"",
            "\"/a//b\"",
            "\"/a.b\"",
        ] {
            expect_issue(
                prod_with(&[("server.auth_prefix", bad)]),
                "server.auth_prefix",
            );
        }
        let c = prod_with(&[("server.auth_prefix", "\"/bff/auth-1_x\"")]).unwrap();
        assert_eq!(
            c.redirect_uri(),
            "https://app.example.com/bff/auth-1_x/callback"
        );
    }

    #[test]
    fn admin_listen_empty_disables_and_bad_is_reported() {
        let c = prod_with(&[("admin.listen", "\"\"")]).unwrap();
        assert!(c.admin.listen.is_none());
        expect_issue(prod_with(&[("admin.listen", "\"nope\"")]), "admin.listen");
    }

    // ---- oidc ----

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

    // ---- session ----

    #[test]
    fn store_schemes() {
        for ok in [
            "memory",
            "sqlite://portcullis.db",
            "sqlite::memory:",
            "redis://127.0.0.1:6379/0",
            "rediss://:pw@cache.example.com:6380/1",
            "redis+sentinel://s1:26379,s2:26379/mymaster",
            "postgres://gw@db.example.com/portcullis",
            "postgresql://gw@db/portcullis",
        ] {
            let c = prod_with(&[("session.store", &lit(ok))]).unwrap();
            assert_eq!(c.session.store, ok);
        }
        for bad in [
            "mysql://db/x",
            "sqlite://",
            "redis://",
            "memory://",
            "portcullis.db",
        ] {
            expect_issue(prod_with(&[("session.store", &lit(bad))]), "session.store");
        }
        let message = expect_issue(
            prod_with(&[("session.store", "\"mysql://u:hunter2@db/x\"")]),
            "session.store",
        );
        assert!(!message.contains("hunter2"), "{message}");
    }

    #[test]
    fn cookie_name_must_be_a_token_and_host_prefix_needs_https() {
        expect_issue(
            prod_with(&[("session.cookie_name", "\"my cookie\"")]),
            "session.cookie_name",
        );
        expect_issue(
            prod_with(&[("session.cookie_name", "\"a;b\"")]),
            "session.cookie_name",
        );
        let message = expect_issue(
            dev_with(&[("session.cookie_name", "\"__Host-s\"")]),
            "session.cookie_name",
        );
        assert!(message.contains("__Host-"), "{message}");
        let c = prod_with(&[("session.cookie_name", "\"PORTAL_SESSION\"")]).unwrap();
        assert_eq!(c.session.cookie_name, "PORTAL_SESSION");
        let c = dev_with(&[
            ("server.public_url", "\"https://dev.example.com\""),
            ("session.cookie_name", "\"__Host-s\""),
        ]);
        assert_eq!(c.unwrap().session.cookie_name, "__Host-s");
    }

    #[test]
    fn idle_timeout_must_not_exceed_absolute_timeout() {
        let edits = [("session.idle_timeout", "\"13h\"")];
        expect_issue(prod_with(&edits), "session.idle_timeout");
    }

    #[test]
    fn encryption_keys_must_be_32_bytes_of_base64() {
        let message = expect_issue(
            prod_with(&[("session.encryption_keys", r#"["c2hvcnQ="]"#)]),
            "session.encryption_keys[0]",
        );
        assert_eq!(message, "key must be 32 bytes of base64");
        expect_issue(
            prod_with(&[(
                "session.encryption_keys",
                &format!("[{}, \"not base64!\"]", lit(KEY)),
            )]),
            "session.encryption_keys[1]",
        );
        expect_issue(
            prod_with(&[("session.encryption_keys", "[]")]),
            "session.encryption_keys",
        );
        let url_safe = "-vv8_f7_eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHg";
        let c = prod_with(&[(
            "session.encryption_keys",
            &format!("[{}, {}]", lit(url_safe), lit(KEY)),
        )])
        .unwrap();
        assert_eq!(c.session.encryption_keys[0].expose(), url_safe);
        assert_eq!(c.session.encryption_keys.len(), 2);
        let text = PROD.replace(&format!("encryption_keys = [\"{KEY}\"]\n"), "");
        expect_issue(
            Config::from_toml_str(&text, Vec::new()),
            "session.encryption_keys",
        );
    }

    #[test]
    fn encryption_keys_file_has_one_key_per_line() {
        let url_safe = "-vv8_f7_eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHg";
        let file = temp_file(&format!("{KEY}\n\n  {url_safe}  \n"));
        let with_file = |path: &str| {
            PROD.replace(
                &format!("encryption_keys = [\"{KEY}\"]"),
                &format!("encryption_keys_file = {}", lit(path)),
            )
        };
        let c = Config::from_toml_str(&with_file(&file.path().display().to_string()), Vec::new())
            .unwrap();
        let keys: Vec<&str> = c
            .session
            .encryption_keys
            .iter()
            .map(Secret::expose)
            .collect();
        assert_eq!(keys, [KEY, url_safe]);

        let bad = temp_file(&format!("{KEY}\nc2hvcnQ=\n"));
        let message = expect_issue(
            Config::from_toml_str(&with_file(&bad.path().display().to_string()), Vec::new()),
            "session.encryption_keys_file",
        );
        assert_eq!(message, "line 2: key must be 32 bytes of base64");

        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("keys").display().to_string();
        expect_issue(
            Config::from_toml_str(&with_file(&missing), Vec::new()),
            "session.encryption_keys_file",
        );

        let both = prod_with(&[("session.encryption_keys_file", &lit(&missing))]);
        expect_issue(both, "session.encryption_keys");
    }

    // ---- csrf, cors ----

    #[test]
    fn csrf_names_are_checked() {
        expect_issue(
            prod_with(&[("csrf.cookie", "\"XSRF TOKEN\"")]),
            "csrf.cookie",
        );
        expect_issue(prod_with(&[("csrf.header", "\"X XSRF\"")]), "csrf.header");
        expect_issue(
            prod_with(&[("csrf.cookie", "\"__Host-portcullis\"")]),
            "csrf.cookie",
        );
        let c = prod_with(&[
            ("csrf.cookie", "\"csrf\""),
            ("csrf.header", "\"X-CSRF-Token\""),
        ])
        .unwrap();
        assert_eq!(
            (c.csrf.cookie.as_str(), c.csrf.header.as_str()),
            ("csrf", "X-CSRF-Token")
        );
    }

    #[test]
    fn cors_origins_are_exact_origins() {
        let c = prod_with(&[(
            "cors.allowed_origins",
            r#"["http://localhost:5173", "https://Admin.Example.com:443/"]"#,
        )])
        .unwrap();
        assert_eq!(
            c.cors.allowed_origins,
            ["http://localhost:5173", "https://admin.example.com"]
        );
        for bad in [
            "\"*\"",
            "\"https://*.example.com\"",
            "\"https://a.example.com/app\"",
            "\"localhost:5173\"",
            "\"file:///x\"",
        ] {
            expect_issue(
                prod_with(&[("cors.allowed_origins", &format!("[{bad}]"))]),
                "cors.allowed_origins[0]",
            );
        }
    }

    // ---- routes ----

    #[test]
    fn route_prefix_is_required_and_starts_with_a_slash() {
        expect_issue(
            prod_with(&[("routes.0.prefix", "\"api/\"")]),
            "routes[0].prefix",
        );
        expect_issue(
            prod_with(&[("routes.0.prefix", "\"/api/../x\"")]),
            "routes[0].prefix",
        );
        let text = PROD.replace("prefix = \"/api/\"\n", "");
        expect_issue(Config::from_toml_str(&text, Vec::new()), "routes[0].prefix");
    }

    #[test]
    fn route_prefixes_must_not_clash() {
        let text = format!(
            "{PROD}[[routes]]\nprefix = \"/b/\"\nupstream = \"http://b\"\n[[routes]]\nprefix = \"/api/\"\nupstream = \"http://c\"\n"
        );
        let message = expect_issue(Config::from_toml_str(&text, Vec::new()), "routes[2].prefix");
        assert_eq!(message, "route prefix clash with routes[0]");
        for under_auth in ["\"/auth/x\"", "\"/auth\"", "\"/auth/\""] {
            expect_issue(
                prod_with(&[("routes.0.prefix", under_auth)]),
                "routes[0].prefix",
            );
        }
        prod_with(&[("routes.0.prefix", "\"/authors/\"")]).unwrap();
        prod_with(&[
            ("routes.0.prefix", "\"/auth/x\""),
            ("server.auth_prefix", "\"/bff/auth\""),
        ])
        .unwrap();
    }

    #[test]
    fn route_upstream_is_a_required_http_url() {
        expect_issue(
            prod_with(&[("routes.0.upstream", "\"ftp://files\"")]),
            "routes[0].upstream",
        );
        expect_issue(
            prod_with(&[("routes.0.upstream", "\"not a url\"")]),
            "routes[0].upstream",
        );
        let text = PROD.replace("upstream = \"http://127.0.0.1:4111\"\n", "");
        expect_issue(
            Config::from_toml_str(&text, Vec::new()),
            "routes[0].upstream",
        );
    }

    #[test]
    fn route_token_and_roles() {
        let c = prod_with(&[
            ("routes.0.token", "\"none\""),
            ("routes.0.strip_prefix", "true"),
            ("routes.0.timeout", "\"5s\""),
        ])
        .unwrap();
        let route = &c.routes[0];
        assert_eq!(
            (route.token, route.strip_prefix, route.timeout),
            (TokenMode::None, true, Duration::from_secs(5))
        );
        expect_issue(
            prod_with(&[("routes.0.token", "\"client\"")]),
            "routes[0].token",
        );
        expect_issue(
            prod_with(&[
                ("routes.0.token", "\"none\""),
                ("routes.0.require_roles", r#"["admin"]"#),
            ]),
            "routes[0].require_roles",
        );
        let c = prod_with(&[("routes.0.require_roles", r#"["admin", "ops"]"#)]).unwrap();
        assert_eq!(c.routes[0].require_roles, ["admin", "ops"]);
        expect_issue(
            prod_with(&[("routes.0.timeout", "\"soon\"")]),
            "routes[0].timeout",
        );
    }

    // ---- static ----

    #[test]
    fn static_section_needs_a_dir() {
        let c = load_edited(&format!("{PROD}[static]\ndir = \"./dist\"\n"), &[]).unwrap();
        let files = c.static_files.unwrap();
        assert_eq!(files.dir, PathBuf::from("./dist"));
        assert!(files.spa_fallback);
        let message = expect_issue(
            Config::from_toml_str(
                &format!("{PROD}[static]\nspa_fallback = false\n"),
                Vec::new(),
            ),
            "static.dir",
        );
        assert_eq!(message, "missing required key");
    }
}
