//! `[server]`, `[admin]`, `[csrf]` and `[cors]`: listeners, the public origin
//! and the names and origins the browser deals with.

use std::net::IpAddr;

use ipnet::IpNet;
use url::Url;

use super::{Reported, Validator, session::is_cookie_name};
use crate::config::{
    AdminConfig, ConnectionLimits, CorsConfig, CsrfConfig, Profile, Secret, ServerConfig,
    load::{RawAdmin, RawCors, RawCsrf, RawServer},
};

impl Validator<'_> {
    pub(super) fn server(&mut self, mut raw: RawServer) -> Option<ServerConfig> {
        let limits = self.limits(&mut raw);
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
        let csp = self
            .string_or("server.csp", raw.csp, crate::config::DEFAULT_CSP)
            .and_then(|csp| {
                if csp.trim().is_empty() {
                    self.reject("server.csp", "must not be empty")
                } else if http::HeaderValue::from_str(&csp).is_err() {
                    self.reject("server.csp", "must be a valid header value (one line)")
                } else {
                    Some(csp)
                }
            });
        let drain_timeout = self.duration_or(
            "server.drain_timeout",
            raw.drain_timeout,
            std::time::Duration::from_secs(30),
            false,
        );
        let log_level = self
            .string_or("server.log_level", raw.log_level, "info")
            .and_then(|l| {
                if l.trim().is_empty() {
                    self.reject("server.log_level", "must not be empty (e.g. \"info\")")
                } else {
                    Some(l)
                }
            });
        let default_format = match profile {
            Some(Profile::Dev) => "text",
            _ => "json",
        };
        let log_format = self
            .string_or("server.log_format", raw.log_format, default_format)
            .and_then(|f| match f.as_str() {
                "json" => Some(crate::config::LogFormat::Json),
                "text" => Some(crate::config::LogFormat::Text),
                _ => self.reject(
                    "server.log_format",
                    format!("expected \"json\" or \"text\", found \"{f}\""),
                ),
            });
        let log_user = self.bool_or("server.log_user", raw.log_user, false);
        let workers = self.workers("server.workers", raw.workers);
        let websocket_idle_timeout = self.duration_or(
            "server.websocket_idle_timeout",
            raw.websocket_idle_timeout,
            std::time::Duration::from_secs(10 * 60),
            true,
        );
        let websocket_session_check = self.duration_or(
            "server.websocket_session_check",
            raw.websocket_session_check,
            std::time::Duration::from_secs(30),
            true,
        );
        Some(ServerConfig {
            websocket_idle_timeout: websocket_idle_timeout?,
            websocket_session_check: websocket_session_check?,
            workers: workers?,
            limits: limits?,
            log_user: log_user?,
            drain_timeout: drain_timeout?,
            log_level: log_level?,
            log_format: log_format?,
            listen: listen?,
            public_url: public_url?,
            profile: profile?,
            trusted_proxies: trusted_proxies?,
            auth_prefix: auth_prefix?,
            csp: csp?,
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

    pub(super) fn admin(&mut self, raw: RawAdmin) -> Option<AdminConfig> {
        let listen = self
            .string_or(
                "admin.listen",
                raw.listen,
                crate::config::DEFAULT_ADMIN_LISTEN,
            )
            .and_then(|s| match s.as_str() {
                "" => Some(None),
                _ => self.socket_addr("admin.listen", &s).map(Some),
            });
        let token = self.admin_token(raw.token, raw.token_file);
        Some(AdminConfig {
            listen: listen?,
            token: token?,
        })
    }

    /// `admin.token` / `admin.token_file`: optional, but when set long enough
    /// that guessing it is hopeless.
    fn admin_token(
        &mut self,
        inline: Option<toml::Value>,
        file: Option<toml::Value>,
    ) -> Option<Option<Secret>> {
        const KEY: &str = "admin.token";
        const FILE_KEY: &str = "admin.token_file";
        const MIN_LEN: usize = 16;
        let (key, token) = match (self.string(KEY, inline), self.string(FILE_KEY, file)) {
            (Err(Reported), _) | (_, Err(Reported)) => return None,
            (Ok(Some(_)), Ok(Some(_))) => {
                return self.reject(KEY, "set only one of token and token_file");
            }
            (Ok(None), Ok(None)) => return Some(None),
            (Ok(Some(token)), Ok(None)) => (KEY, token),
            (Ok(None), Ok(Some(path))) => (
                FILE_KEY,
                self.read_file(FILE_KEY, &path)?.trim().to_string(),
            ),
        };
        if token.chars().count() < MIN_LEN {
            return self.reject(
                key,
                format!("must be at least {MIN_LEN} characters (e.g. from `portcullis keygen`)"),
            );
        }
        if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return self.reject(key, "must not contain whitespace or control characters");
        }
        Some(Some(Secret::new(token)))
    }

    pub(super) fn csrf(
        &mut self,
        raw: RawCsrf,
        session_cookie: Option<&str>,
    ) -> Option<CsrfConfig> {
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
        let token_in_me = self.bool_or("csrf.token_in_me", raw.token_in_me, false);
        Some(CsrfConfig {
            token_in_me: token_in_me?,
            cookie: cookie?,
            header: header?,
        })
    }

    pub(super) fn cors(&mut self, raw: RawCors) -> Option<CorsConfig> {
        let allowed_origins = self
            .strings_or("cors.allowed_origins", raw.allowed_origins, &[])
            .and_then(|list| {
                self.each("cors.allowed_origins", list, |v, key, s| v.origin(key, &s))
            });
        let allowed_methods = self
            .strings_or(
                "cors.allowed_methods",
                raw.allowed_methods,
                &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"],
            )
            .and_then(|list| {
                self.each(
                    "cors.allowed_methods",
                    list,
                    |v, key, s| match http::Method::from_bytes(s.to_ascii_uppercase().as_bytes()) {
                        Ok(m) => Some(m),
                        Err(_) => v.reject(key, format!("\"{s}\" is not an HTTP method")),
                    },
                )
            });
        let allowed_headers = self
            .strings_or(
                "cors.allowed_headers",
                raw.allowed_headers,
                &["Content-Type"],
            )
            .and_then(|list| {
                self.each("cors.allowed_headers", list, |v, key, s| {
                    if s == "*" {
                        v.reject(
                            key,
                            "wildcards are not allowed with credentials: list the headers",
                        )
                    } else if http::HeaderName::from_bytes(s.as_bytes()).is_err() {
                        v.reject(key, format!("\"{s}\" is not a valid header name"))
                    } else {
                        Some(s)
                    }
                })
            });
        let max_age = self.duration_or(
            "cors.max_age",
            raw.max_age,
            std::time::Duration::from_secs(600),
            false,
        );
        Some(CorsConfig {
            allowed_origins: allowed_origins?,
            allowed_methods: allowed_methods?,
            allowed_headers: allowed_headers?,
            max_age: max_age?,
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
}

impl Validator<'_> {
    /// `"auto"` (one per CPU) or a positive integer up to 1024.
    fn limits(&mut self, raw: &mut RawServer) -> Option<ConnectionLimits> {
        let d = ConnectionLimits::default();
        let header_read_timeout = self.duration_or(
            "server.header_read_timeout",
            raw.header_read_timeout.take(),
            d.header_read_timeout,
            true,
        );
        let idle_timeout = self.duration_or(
            "server.idle_timeout",
            raw.idle_timeout.take(),
            d.idle_timeout,
            true,
        );
        let max_connections = self.count_in(
            "server.max_connections",
            raw.max_connections.take(),
            d.max_connections,
            1..=10_000_000,
        );
        // hyper refuses a read buffer below 8 KiB (its initial size).
        let max_header_bytes = self.count_in(
            "server.max_header_bytes",
            raw.max_header_bytes.take(),
            d.max_header_bytes,
            8192..=1024 * 1024,
        );
        let max_headers = self.count_in(
            "server.max_headers",
            raw.max_headers.take(),
            d.max_headers,
            1..=10_000,
        );
        let body_read_timeout = self.duration_or(
            "server.body_read_timeout",
            raw.body_read_timeout.take(),
            d.body_read_timeout,
            true,
        );
        // 0 turns it off (behind a load balancer every client shares its address).
        let max_connections_per_ip = self.count_in(
            "server.max_connections_per_ip",
            raw.max_connections_per_ip.take(),
            d.max_connections_per_ip,
            0..=10_000_000,
        );
        Some(ConnectionLimits {
            header_read_timeout: header_read_timeout?,
            body_read_timeout: body_read_timeout?,
            max_connections_per_ip: max_connections_per_ip?,
            idle_timeout: idle_timeout?,
            max_connections: max_connections?,
            max_header_bytes: max_header_bytes?,
            max_headers: max_headers?,
        })
    }

    /// An integer within `range`, or `default` when unset.
    pub(super) fn count_in(
        &mut self,
        key: &str,
        value: Option<toml::Value>,
        default: usize,
        range: std::ops::RangeInclusive<usize>,
    ) -> Option<usize> {
        match value {
            None => Some(default),
            Some(toml::Value::Integer(n)) => match usize::try_from(n) {
                Ok(n) if range.contains(&n) => Some(n),
                _ => self.reject(
                    key,
                    format!(
                        "expected an integer from {} to {}",
                        range.start(),
                        range.end()
                    ),
                ),
            },
            Some(other) => self.reject(
                key,
                format!("expected an integer, found {}", other.type_str()),
            ),
        }
    }

    fn workers(&mut self, key: &str, value: Option<toml::Value>) -> Option<usize> {
        match value {
            None => Some(auto_workers()),
            Some(toml::Value::String(s)) if s == "auto" => Some(auto_workers()),
            Some(toml::Value::Integer(n)) if (1..=1024).contains(&n) => usize::try_from(n).ok(),
            Some(_) => self.reject(key, "expected \"auto\" or an integer from 1 to 1024"),
        }
    }
}

/// One worker per CPU the process may use (cgroup quotas included).
fn auto_workers() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use crate::config::load::tests::{PROD, dev_with, expect_issue, prod_with};

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
    fn connection_limits_have_safe_defaults_and_bounds() {
        let limits = prod_with(&[]).unwrap().server.limits;
        assert_eq!(limits, crate::config::ConnectionLimits::default());
        let c = prod_with(&[
            ("server.header_read_timeout", "\"2s\""),
            ("server.idle_timeout", "\"5m\""),
            ("server.max_connections", "50"),
            ("server.max_header_bytes", "8192"),
            ("server.max_headers", "20"),
            ("server.body_read_timeout", "\"5s\""),
            ("server.max_connections_per_ip", "0"),
        ])
        .unwrap();
        assert_eq!(c.server.limits.header_read_timeout.as_secs(), 2);
        assert_eq!(c.server.limits.idle_timeout.as_secs(), 300);
        assert_eq!(c.server.limits.max_connections, 50);
        assert_eq!(c.server.limits.max_header_bytes, 8192);
        assert_eq!(c.server.limits.max_headers, 20);
        assert_eq!(c.server.limits.body_read_timeout.as_secs(), 5);
        assert_eq!(c.server.limits.max_connections_per_ip, 0, "0 turns it off");
        for (key, bad) in [
            ("server.header_read_timeout", "\"0s\""),
            ("server.idle_timeout", "\"0s\""),
            ("server.max_connections", "0"),
            ("server.max_header_bytes", "4096"),
            ("server.max_headers", "0"),
            ("server.max_headers", "\"many\""),
            ("server.body_read_timeout", "\"0s\""),
            ("server.max_connections_per_ip", "-1"),
        ] {
            expect_issue(prod_with(&[(key, bad)]), key);
        }
    }

    #[test]
    fn workers_are_auto_or_a_positive_count() {
        let auto = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(prod_with(&[]).unwrap().server.workers, auto);
        assert_eq!(
            prod_with(&[("server.workers", "\"auto\"")])
                .unwrap()
                .server
                .workers,
            auto
        );
        assert_eq!(
            prod_with(&[("server.workers", "3")])
                .unwrap()
                .server
                .workers,
            3
        );
        for bad in ["0", "-1", "2000", "\"two\"", "1.5"] {
            let message = expect_issue(prod_with(&[("server.workers", bad)]), "server.workers");
            assert!(
                message.contains("\"auto\" or an integer"),
                "{bad}: {message}"
            );
        }
    }

    #[test]
    fn public_url_is_required() {
        let text = PROD.replace("public_url = \"https://app.example.com\"\n", "");
        let message = expect_issue(
            Config::from_toml_str(&text, Vec::new()),
            "server.public_url",
        );
        assert_eq!(
            message,
            "missing required key (or env PORTCULLIS__SERVER__PUBLIC_URL)"
        );
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
}

#[cfg(test)]
mod admin_token_tests {
    use std::io::Write;

    use crate::config::load::tests::{expect_issue, prod, prod_with};

    #[test]
    fn admin_token_is_optional_and_read_inline_or_from_a_file() {
        assert!(prod().admin.token.is_none());
        let c = prod_with(&[("admin.token", "\"0123456789abcdef-admin\"")]).unwrap();
        assert_eq!(
            c.admin.token.as_ref().map(|t| t.expose()),
            Some("0123456789abcdef-admin")
        );
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(file, "  from-a-file-0123456789  ").unwrap();
        let path = format!("{:?}", file.path().display().to_string());
        let c = prod_with(&[("admin.token_file", &path)]).unwrap();
        assert_eq!(
            c.admin.token.as_ref().map(|t| t.expose()),
            Some("from-a-file-0123456789")
        );
        assert!(!format!("{:?}", c.admin).contains("from-a-file"));
    }

    #[test]
    fn admin_token_must_be_long_and_single() {
        let message = expect_issue(prod_with(&[("admin.token", "\"short\"")]), "admin.token");
        assert!(message.contains("at least 16"), "{message}");
        expect_issue(
            prod_with(&[("admin.token", "\"has a space in it 0123\"")]),
            "admin.token",
        );
        expect_issue(
            prod_with(&[
                ("admin.token", "\"0123456789abcdef-admin\""),
                ("admin.token_file", "\"/etc/portcullis/admin-token\""),
            ]),
            "admin.token",
        );
        expect_issue(
            prod_with(&[("admin.token_file", "\"/nonexistent/admin-token\"")]),
            "admin.token_file",
        );
    }

    #[test]
    fn backchannel_all_sessions_defaults_to_false() {
        assert!(!prod().oidc.backchannel_all_sessions);
        let c = prod_with(&[("oidc.backchannel_all_sessions", "true")]).unwrap();
        assert!(c.oidc.backchannel_all_sessions);
        expect_issue(
            prod_with(&[("oidc.backchannel_all_sessions", "\"yes\"")]),
            "oidc.backchannel_all_sessions",
        );
    }
}
