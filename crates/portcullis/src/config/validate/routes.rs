//! `[[routes]]` and `[static]`: what is proxied where, and the SPA files.

use std::{path::PathBuf, time::Duration};

use toml::Value;
use url::Url;

use super::{Validator, tls::RawTls};
use crate::config::{
    RouteConfig, StaticConfig, TokenMode,
    load::{RawRoute, RawStatic},
};

impl Validator<'_> {
    pub(super) fn routes(&mut self, raw: Vec<(usize, RawRoute)>) -> Option<Vec<RouteConfig>> {
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
        // Request paths are matched in canonical form (path.rs):
        // only unreserved characters are decoded there, and `//`, `.` and
        // `..` segments are refused, so a prefix with anything else could
        // never match, or match what an upstream reads differently.
        if !prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/'))
            || prefix[1..]
                .split('/')
                .any(|segment| segment == "." || segment == "..")
            || prefix.contains("//")
        {
            return self.reject(
                &key,
                "must be a plain path (only A-Z a-z 0-9 - . _ ~ and /; no //, . or .. segments)",
            );
        }
        if let Some((_, other)) = seen.iter().find(|(p, _)| *p == prefix) {
            return self.reject(&key, format!("route prefix clash with routes[{other}]"));
        }
        if let Some(auth) = &self.auth_prefix
            && (prefix.trim_end_matches('/') == auth || prefix.starts_with(&format!("{auth}/")))
        {
            let message = format!("route prefix clash with server.auth_prefix (\"{auth}\")");
            return self.reject(&key, message);
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
                "needs token = \"user\": a route with token = \"none\" \
                 has no session to check roles against",
            ),
            (_, roles) => roles,
        };
        let strip_prefix = self.bool_or(&key("strip_prefix"), raw.strip_prefix, false);
        let timeout = self.duration_or(&key("timeout"), raw.timeout, Duration::from_secs(30), true);
        let security_headers = self.bool_or(&key("security_headers"), raw.security_headers, false);
        let case_insensitive = self.bool_or(&key("case_insensitive"), raw.case_insensitive, false);
        let check_origin = self.bool_or(&key("check_origin"), raw.check_origin, true);
        let tls = self.tls(
            RawTls {
                prefix: &format!("routes[{index}]"),
                ca_file: raw.ca_file,
                tls_roots: raw.tls_roots,
                client_cert_file: raw.client_cert_file,
                client_key_file: raw.client_key_file,
            },
            upstream.as_ref().map(|u| u.scheme() == "https"),
        );
        Some(RouteConfig {
            prefix: prefix?,
            upstream: upstream?,
            token: token?,
            require_roles: require_roles?,
            strip_prefix: strip_prefix?,
            timeout: timeout?,
            security_headers: security_headers?,
            case_insensitive: case_insensitive?,
            check_origin: check_origin?,
            tls: tls?,
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

    pub(super) fn static_files(&mut self, raw: Option<RawStatic>) -> Option<Option<StaticConfig>> {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::config::load::tests::{PROD, expect_issue, load_edited, prod_with};

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
        // Only what a canonical path can spell: no escapes, `;`, `//`, case tricks.
        for bad in [
            "\"/api;x/\"",
            "\"/api//x/\"",
            "\"/api/%61/\"",
            "\"/api/./\"",
            "\"/a b\"",
        ] {
            expect_issue(prod_with(&[("routes.0.prefix", bad)]), "routes[0].prefix");
        }
        prod_with(&[("routes.0.prefix", "\"/v1.2/a-b_c~/\"")]).unwrap();
        let text = PROD.replace("prefix = \"/api/\"\n", "");
        expect_issue(Config::from_toml_str(&text, Vec::new()), "routes[0].prefix");
    }

    #[test]
    fn route_prefixes_must_not_clash() {
        let more = r#"
[[routes]]
prefix = "/b/"
upstream = "http://b"

[[routes]]
prefix = "/api/"
upstream = "http://c"
"#;
        let text = format!("{PROD}{more}");
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
        assert!(!route.case_insensitive && route.check_origin);
        let c = prod_with(&[
            ("routes.0.case_insensitive", "true"),
            ("routes.0.check_origin", "false"),
        ])
        .unwrap();
        assert!(c.routes[0].case_insensitive && !c.routes[0].check_origin);
        expect_issue(
            prod_with(&[("routes.0.check_origin", "\"no\"")]),
            "routes[0].check_origin",
        );
        let c = prod_with(&[("routes.0.require_roles", r#"["admin", "ops"]"#)]).unwrap();
        assert_eq!(c.routes[0].require_roles, ["admin", "ops"]);
        expect_issue(
            prod_with(&[("routes.0.timeout", "\"soon\"")]),
            "routes[0].timeout",
        );
    }

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
        assert_eq!(
            message,
            "missing required key (or env PORTCULLIS__STATIC__DIR)"
        );
    }
}
