//! The one table of every configuration key: its default, whether it is a
//! secret, and what it does. `docs/config.md` is generated from it
//! ([`markdown`]), `portcullis check --print` fills defaults and redacts
//! secrets with it (`print.rs`), and tests keep it in step with the raw
//! structs of `load.rs` and with the committed docs.

/// A key's default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyDefault {
    /// Must be set.
    Required,
    /// Optional; unset means "off" or "not used".
    Unset,
    /// A TOML literal, e.g. `"30s"`, `true`, `[]`.
    Value(&'static str),
    /// Differs by `server.profile`: TOML literals for prod and dev.
    ByProfile {
        prod: &'static str,
        dev: &'static str,
    },
}

/// One configuration key.
#[derive(Debug, Clone, Copy)]
pub struct Key {
    /// Section (`server`, …; `routes` for each `[[routes]]` entry).
    pub section: &'static str,
    /// Key name inside the section.
    pub name: &'static str,
    pub default: KeyDefault,
    /// Redacted by `check --print`.
    pub secret: bool,
    /// One line on what it does.
    pub doc: &'static str,
}

impl Key {
    /// Dotted path: `server.listen`, `routes[].prefix`.
    pub fn path(&self) -> String {
        if self.section == "routes" {
            format!("routes[].{}", self.name)
        } else {
            format!("{}.{}", self.section, self.name)
        }
    }

    /// The environment variable that overrides it (`PORTCULLIS__SERVER__LISTEN`;
    /// `PORTCULLIS__ROUTES__0__PREFIX` for the first route).
    pub fn env_var(&self) -> String {
        let section = self.section.to_ascii_uppercase();
        let name = self.name.to_ascii_uppercase();
        if self.section == "routes" {
            format!("PORTCULLIS__ROUTES__<N>__{name}")
        } else {
            format!("PORTCULLIS__{section}__{name}")
        }
    }
}

const fn key(
    section: &'static str,
    name: &'static str,
    default: KeyDefault,
    doc: &'static str,
) -> Key {
    Key {
        section,
        name,
        default,
        secret: false,
        doc,
    }
}

const fn secret(section: &'static str, name: &'static str, doc: &'static str) -> Key {
    Key {
        section,
        name,
        default: KeyDefault::Unset,
        secret: true,
        doc,
    }
}

use KeyDefault::{ByProfile, Required, Unset, Value};

/// Every key, in the order of the docs.
pub const KEYS: &[Key] = &[
    key(
        "server",
        "listen",
        Value("\"127.0.0.1:8080\""),
        "Public listener address.",
    ),
    key(
        "server",
        "public_url",
        Required,
        "Origin the browser sees (`https://app.example.com`); builds the redirect_uri. https in prod.",
    ),
    key(
        "server",
        "profile",
        Value("\"prod\""),
        "`prod` or `dev` (http on loopback, relaxed cookie names; never in production).",
    ),
    key(
        "server",
        "trusted_proxies",
        Value("[]"),
        "CIDRs whose forwarding headers (`X-Forwarded-*`, `Forwarded`, `X-Real-IP`, …) are believed; from other peers they are removed.",
    ),
    key(
        "server",
        "auth_prefix",
        Value("\"/auth\""),
        "Where the auth endpoints live, e.g. `/bff/auth`.",
    ),
    key(
        "server",
        "csp",
        Value("\"default-src 'self'; frame-ancestors 'none'; object-src 'none'; base-uri 'self'\""),
        "Content-Security-Policy of gateway-generated and static responses.",
    ),
    key(
        "server",
        "drain_timeout",
        Value("\"30s\""),
        "On SIGTERM/SIGINT: how long in-flight requests and open streams may finish.",
    ),
    key(
        "server",
        "log_level",
        Value("\"info\""),
        "`tracing` filter, e.g. `info,portcullis=debug`; env `RUST_LOG` wins.",
    ),
    key(
        "server",
        "log_format",
        ByProfile {
            prod: "\"json\"",
            dev: "\"text\"",
        },
        "`json` (one object per line) or `text`.",
    ),
    key(
        "server",
        "log_user",
        Value("false"),
        "Add the user's `sub` to every log line of a request (personal data: off by default).",
    ),
    key(
        "server",
        "workers",
        Value("\"auto\""),
        "Threads serving the public listener, each with its own event loop and upstream pools; `\"auto\"` is one per CPU.",
    ),
    key(
        "server",
        "websocket_idle_timeout",
        Value("\"10m\""),
        "A WebSocket tunnel with no bytes either way for this long is closed.",
    ),
    key(
        "server",
        "websocket_session_check",
        Value("\"30s\""),
        "How often an open WebSocket tunnel re-reads its session in the store; it closes once the session is gone or expired (logout on any replica) or lost the role the route's `require_roles` asks for, and a tunnel that moved bytes since the last check touches its session (traffic is activity). Keep it well below `session.idle_timeout`.",
    ),
    key(
        "server",
        "header_read_timeout",
        Value("\"10s\""),
        "A request head must be complete within it (from the connection's start and, HTTP/1, from the previous response), else the connection closes. Both listeners.",
    ),
    key(
        "server",
        "idle_timeout",
        Value("\"60s\""),
        "A connection with no request in flight and no bytes moving is closed after it. Both listeners.",
    ),
    key(
        "server",
        "max_connections",
        Value("10000"),
        "Open connections per listener; beyond it new ones wait in the kernel backlog. Keep below the fd limit (each proxied request may hold an upstream socket too).",
    ),
    key(
        "server",
        "max_header_bytes",
        Value("16384"),
        "Largest HTTP/1 request head (request line + headers), at least 8192; beyond it: 431.",
    ),
    key(
        "server",
        "max_headers",
        Value("100"),
        "Header fields per request; beyond it: 431.",
    ),
    key(
        "server",
        "body_read_timeout",
        Value("\"30s\""),
        "A request body that sends no byte for this long fails: 408 if no response has started, else the connection closes; either way its connection slot is freed. Both listeners.",
    ),
    key(
        "server",
        "max_connections_per_ip",
        Value("256"),
        "Open connections per client address (IPv6 grouped by /64), per listener; beyond it new ones are closed at once. `0` turns it off. Behind a load balancer or reverse proxy every client shares its address: raise it or set `0` there.",
    ),
    key(
        "admin",
        "listen",
        Value("\"127.0.0.1:9090\""),
        "Admin listener (`/healthz`, `/readyz`, `/metrics`); `\"\"` turns it off. Never expose publicly.",
    ),
    secret(
        "admin",
        "token",
        "Bearer token of the session admin API (`/admin/sessions`), at least 16 characters, no whitespace; unset: those endpoints are 404.",
    ),
    key(
        "admin",
        "token_file",
        Unset,
        "File holding `admin.token` (trimmed); set only one of the two.",
    ),
    key(
        "oidc",
        "issuer",
        Required,
        "Issuer URL exactly as the IdP spells it; discovery at `<issuer>/.well-known/openid-configuration`.",
    ),
    key(
        "oidc",
        "client_id",
        Required,
        "Client id registered at the IdP.",
    ),
    secret(
        "oidc",
        "client_secret",
        "Client secret (or `client_secret_file`); one of the two is required.",
    ),
    key(
        "oidc",
        "client_secret_file",
        Unset,
        "File holding the client secret (trimmed).",
    ),
    key(
        "oidc",
        "token_endpoint_auth_method",
        Value("\"client_secret_basic\""),
        "`client_secret_basic` or `client_secret_post`.",
    ),
    key(
        "oidc",
        "scopes",
        Value("[\"openid\", \"profile\", \"email\", \"offline_access\"]"),
        "Requested scopes; `openid` is always included.",
    ),
    key(
        "oidc",
        "extra_auth_params",
        Value("{}"),
        "Extra authorization-request parameters, e.g. `{ audience = \"https://api\" }` (Auth0), `{ access_type = \"offline\" }` (Google), `resource` (RFC 8707). The gateway's own parameters cannot be set.",
    ),
    key(
        "oidc",
        "extra_token_params",
        Value("{}"),
        "Extra parameters of every token request (code exchange and refresh), e.g. `resource`.",
    ),
    key(
        "oidc",
        "ca_file",
        Unset,
        "PEM bundle of CA certificates the IdP client trusts (a private CA). Set alone, it is the only trust: the bundled roots are off unless `tls_roots` is set too (see docs/deploy.md, \"Private CA and mTLS\").",
    ),
    key(
        "oidc",
        "tls_roots",
        Unset,
        "Public roots the IdP client trusts: `webpki` (the Mozilla roots bundled into the binary), `system` (the operating system's store, read at startup) or `both`; `ca_file` is added to them. Unset: `webpki`, or none when `ca_file` is set.",
    ),
    key(
        "oidc",
        "roles_claim",
        Value("\"roles\""),
        "Dotted path to the roles in ID-token/userinfo claims (`realm_access.roles`).",
    ),
    key(
        "oidc",
        "post_logout_redirect",
        Value("\"/\""),
        "Same-origin path the IdP returns to after logout.",
    ),
    key(
        "oidc",
        "allowed_algs",
        Value("[\"RS256\", \"PS256\", \"ES256\", \"EdDSA\"]"),
        "ID-token signature algorithms accepted; HMAC and `none` are refused.",
    ),
    key(
        "oidc",
        "http_timeout",
        Value("\"10s\""),
        "Timeout of every call to the IdP.",
    ),
    key(
        "oidc",
        "clock_skew",
        Value("\"60s\""),
        "Leeway for `exp`/`iat`/`nbf`.",
    ),
    key(
        "oidc",
        "userinfo",
        Value("true"),
        "Fetch userinfo at login when the IdP has the endpoint.",
    ),
    key(
        "oidc",
        "backchannel_all_sessions",
        Value("false"),
        "`true`: a back-channel logout token ends every session of its `sub`, even when it names a `sid`. A token with only `sub` always does.",
    ),
    key(
        "oidc",
        "frontchannel_logout",
        Value("false"),
        "Serve `GET /auth/frontchannel-logout` (404 when off). It ends only the caller's own session (cookie) whose `iss` and `sid` match; prefer back-channel logout.",
    ),
    key(
        "oidc",
        "breaker_failures",
        Value("5"),
        "Consecutive transient failures of the token endpoint (connect, timeout, 5xx, 429, garbled reply) that open the IdP circuit breaker. While open, no token request is sent: a still-valid access token is used as is, an expired one gets 503 at once.",
    ),
    key(
        "oidc",
        "breaker_backoff",
        Value("\"1s\""),
        "First open period of the IdP circuit breaker; doubles after each failed probe, with jitter (50-100 %). Then one request at a time probes the IdP; a success closes the circuit.",
    ),
    key(
        "oidc",
        "breaker_max_backoff",
        Value("\"60s\""),
        "Longest open period of the IdP circuit breaker.",
    ),
    key(
        "session",
        "store",
        Value("\"sqlite://portcullis.db\""),
        "`memory`, `sqlite://PATH`, `redis://…`, `rediss://…`, `redis+sentinel://…`, `redis+cluster://SEED[,SEED…]`, `rediss+cluster://…`, `postgres://…` (password redacted in output). TLS: `rediss://…?cacert=/path/ca.pem` (and `rediss+cluster://`) trusts only that CA; `postgres://…?sslmode=verify-full&sslrootcert=/path/ca.pem` verifies the server against it (`sslmode` as libpq: `disable`, `allow`, `prefer` (default), `require`, `verify-ca`, `verify-full`; `sslrootcert` only with `verify-ca`/`verify-full`).",
    ),
    key(
        "session",
        "store_password_file",
        Unset,
        "File holding the Redis or PostgreSQL password (trimmed), put into the `store` URL, which must then carry no password itself; keeps the secret out of the URL and the environment.",
    ),
    key(
        "session",
        "cookie_name",
        ByProfile {
            prod: "\"__Host-portcullis\"",
            dev: "\"portcullis\"",
        },
        "Name of the session cookie.",
    ),
    key(
        "session",
        "idle_timeout",
        Value("\"30m\""),
        "Session ends after this long without a request.",
    ),
    key(
        "session",
        "absolute_timeout",
        Value("\"12h\""),
        "Session ends this long after login, whatever happens.",
    ),
    key(
        "session",
        "refresh_before",
        Value("\"60s\""),
        "Refresh the access token this long before it expires.",
    ),
    key(
        "session",
        "refresh_on_401_interval",
        Value("\"30s\""),
        "At most one token refresh per session per interval (per replica) is triggered by an upstream 401; later 401s reach the client unchanged.",
    ),
    key(
        "session",
        "keep_id_token",
        Value("true"),
        "Keep the IdP's ID token in the session, only to send it as `id_token_hint` at logout. `false`: about 1 KB less per session and no copy of that token; logout names the client (`client_id`) alone, and some IdPs then ask the user to confirm.",
    ),
    secret(
        "session",
        "encryption_keys",
        "Base64 32-byte keys; the first encrypts, all decrypt (rotation). Or `encryption_keys_file`.",
    ),
    key(
        "session",
        "encryption_keys_file",
        Unset,
        "File with one base64 key per line.",
    ),
    key(
        "session",
        "key_prefix",
        Value("\"portcullis:\""),
        "Prefix of every Redis key.",
    ),
    key(
        "session",
        "store_timeout",
        Value("\"2s\""),
        "Longest wait for one store operation.",
    ),
    key(
        "session",
        "cache",
        Value("true"),
        "Local cache of loaded sessions (Redis, PostgreSQL, SQLite). A cached SQLite process claims its file: processes sharing one file need `false`.",
    ),
    key(
        "session",
        "cache_ttl",
        Value("\"2s\""),
        "How long a cached session is served.",
    ),
    key(
        "session",
        "cache_size",
        Value("10000"),
        "Most sessions cached per replica.",
    ),
    key(
        "session",
        "migrate",
        Value("true"),
        "Apply SQL schema migrations on start.",
    ),
    key(
        "csrf",
        "cookie",
        Value("\"XSRF-TOKEN\""),
        "JS-readable cookie with the CSRF token.",
    ),
    key(
        "csrf",
        "header",
        Value("\"X-XSRF-TOKEN\""),
        "Header unsafe requests must echo the token in.",
    ),
    key(
        "csrf",
        "token_in_me",
        Value("false"),
        "`/auth/me` also returns `csrf_token`, for an SPA on another host of the same site (see front-end docs).",
    ),
    key(
        "cors",
        "allowed_origins",
        Value("[]"),
        "Exact origins allowed cross-origin with credentials; empty: same-origin only.",
    ),
    key(
        "cors",
        "allowed_methods",
        Value("[\"GET\", \"HEAD\", \"POST\", \"PUT\", \"PATCH\", \"DELETE\"]"),
        "Methods a preflight may allow.",
    ),
    key(
        "cors",
        "allowed_headers",
        Value("[\"Content-Type\"]"),
        "Request headers a preflight may allow; the CSRF header is always added.",
    ),
    key(
        "cors",
        "max_age",
        Value("\"10m\""),
        "How long a browser may cache a preflight answer.",
    ),
    key(
        "routes",
        "prefix",
        Required,
        "Path prefix, e.g. `/api/`; longest match wins. Only `A-Z a-z 0-9 - . _ ~ /`; no `//`, `.` or `..` segments (paths are matched in canonical form, see docs/security.md section 11).",
    ),
    key(
        "routes",
        "upstream",
        Required,
        "`http://` or `https://` base URL of the upstream.",
    ),
    key(
        "routes",
        "token",
        Value("\"user\""),
        "`user` (session required, access token attached) or `none` (public).",
    ),
    key(
        "routes",
        "require_roles",
        Value("[]"),
        "Any-of role list; empty: any signed-in user.",
    ),
    key(
        "routes",
        "strip_prefix",
        Value("false"),
        "Remove the prefix before forwarding.",
    ),
    key(
        "routes",
        "timeout",
        Value("\"30s\""),
        "Upstream response timeout.",
    ),
    key(
        "routes",
        "security_headers",
        Value("false"),
        "Add the gateway's security headers (CSP, nosniff, Referrer-Policy, HSTS in prod) to proxied responses that lack them.",
    ),
    key(
        "routes",
        "case_insensitive",
        Value("false"),
        "Match the prefix with ASCII case ignored (for upstreams that route case-insensitively, e.g. ASP.NET, Express). Off: a path that differs from a more specific prefix only by case is refused (400).",
    ),
    key(
        "routes",
        "check_origin",
        Value("true"),
        "On a `token = \"none\"` route, refuse unsafe methods (POST, PUT, PATCH, DELETE, …) whose `Origin` / `Sec-Fetch-Site` is cross-site (403 `csrf`).",
    ),
    key(
        "routes",
        "ca_file",
        Unset,
        "PEM bundle of CA certificates trusted for this https upstream (a private CA). Set alone, it is the only trust; `tls_roots` adds public roots back.",
    ),
    key(
        "routes",
        "tls_roots",
        Unset,
        "Public roots trusted for this https upstream: `webpki` (bundled Mozilla roots), `system` or `both`; `ca_file` is added to them. Unset: `webpki`, or none when `ca_file` is set.",
    ),
    key(
        "routes",
        "client_cert_file",
        Unset,
        "PEM client certificate (chain, leaf first) presented to an upstream that asks for one (mTLS); needs `client_key_file`.",
    ),
    key(
        "routes",
        "client_key_file",
        Unset,
        "PEM private key (PKCS#8, PKCS#1 or SEC1, unencrypted) of `client_cert_file`; must match it. Its contents never appear in logs or errors.",
    ),
    key(
        "static",
        "dir",
        Required,
        "Directory of the built SPA (only when `[static]` is present).",
    ),
    key(
        "static",
        "spa_fallback",
        Value("true"),
        "Unknown non-API GETs get `index.html`.",
    ),
];

/// Sections in doc order, with a line on each.
const SECTIONS: &[(&str, &str)] = &[
    (
        "server",
        "The public listener and the origin the browser sees.",
    ),
    ("admin", "The admin listener: health, readiness, metrics."),
    (
        "oidc",
        "The identity provider and this client's registration.",
    ),
    ("session", "Session store, cookie and lifetimes."),
    ("csrf", "Double-submit CSRF protection of unsafe requests."),
    (
        "cors",
        "Cross-origin access (off unless origins are listed).",
    ),
    ("routes", "`[[routes]]`: one entry per proxied API prefix."),
    ("static", "`[static]`: optional; serves the SPA."),
];

/// `docs/config.md`: every key with its default and environment variable.
pub fn markdown() -> String {
    let mut out = String::from(
        "# Configuration reference\n\n\
         <!-- Generated from crates/portcullis/src/config/reference.rs by\n     \
         `UPDATE_DOCS=1 cargo test -p portcullis --lib config::reference`. Do not edit by hand. -->\n\n\
         portcullis reads a TOML file (`portcullis serve --config FILE`, default `portcullis.toml`,\n\
         or env `PORTCULLIS_CONFIG`). Every key can be overridden by an environment variable\n\
         `PORTCULLIS__<SECTION>__<KEY>`; array elements by index (`PORTCULLIS__ROUTES__0__UPSTREAM`),\n\
         and the next free index adds a route. Without a file (and no `--config`), the environment\n\
         alone is the configuration ([Configuration](configuration.md#configuration-from-the-environment-alone)).\n\
         A value that parses as a TOML array, boolean or integer is taken as such.\n\
         Durations are strings like `\"30s\"`, `\"15m\"`, `\"1h30m\"`.\n\n\
         `portcullis check --config FILE` validates; `portcullis check --print` prints the\n\
         effective configuration (defaults filled in, secrets shown as `\"***\"`).\n",
    );
    for (section, about) in SECTIONS {
        out.push_str(&format!("\n## `{section}`\n\n{about}\n\n"));
        out.push_str("| key | default | env | meaning |\n|---|---|---|---|\n");
        for k in KEYS.iter().filter(|k| k.section == *section) {
            let default = match k.default {
                Required => "required".to_string(),
                Unset if k.secret => "unset (secret)".to_string(),
                Unset => "unset".to_string(),
                Value(v) => format!("`{}`", v.replace('|', "\\|")),
                ByProfile { prod, dev } => format!("`{prod}` (prod), `{dev}` (dev)"),
            };
            out.push_str(&format!(
                "| `{}` | {} | `{}` | {} |\n",
                k.name,
                default,
                k.env_var(),
                k.doc.replace('|', "\\|")
            ));
        }
    }
    out
}

/// The key `path` (`server.listen`, `routes[].prefix`), if it exists.
pub fn find(section: &str, name: &str) -> Option<&'static Key> {
    KEYS.iter().find(|k| k.section == section && k.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `struct RawX { pub a: Raw, ... }` field names of `load.rs`, by struct.
    fn raw_fields() -> Vec<(String, String)> {
        let source = include_str!("load.rs");
        let sections = [
            ("RawServer", "server"),
            ("RawAdmin", "admin"),
            ("RawOidc", "oidc"),
            ("RawSession", "session"),
            ("RawCsrf", "csrf"),
            ("RawCors", "cors"),
            ("RawRoute", "routes"),
            ("RawStatic", "static"),
        ];
        let mut fields = Vec::new();
        for (strukt, section) in sections {
            let start = source
                .find(&format!("struct {strukt} {{"))
                .unwrap_or_else(|| panic!("{strukt} not in load.rs"));
            let body = &source[start..];
            let body = &body[..body.find('}').expect("struct end")];
            for line in body.lines().skip(1) {
                let line = line.trim();
                if let Some(rest) = line.strip_prefix("pub ")
                    && let Some((name, _)) = rest.split_once(':')
                {
                    fields.push((section.to_string(), name.trim().to_string()));
                }
            }
        }
        fields
    }

    #[test]
    fn every_raw_key_is_in_the_reference_and_back() {
        let fields = raw_fields();
        for (section, name) in &fields {
            assert!(
                find(section, name).is_some(),
                "{section}.{name} is read by load.rs but missing from config/reference.rs KEYS"
            );
        }
        for k in KEYS {
            assert!(
                fields.iter().any(|(s, n)| s == k.section && n == k.name),
                "{} is in the reference but load.rs does not read it",
                k.path()
            );
        }
    }

    #[test]
    fn defaults_are_toml_literals() {
        for k in KEYS {
            let literals = match k.default {
                Value(v) => vec![v],
                ByProfile { prod, dev } => vec![prod, dev],
                _ => vec![],
            };
            for v in literals {
                toml::from_str::<toml::Table>(&format!("v = {v}"))
                    .unwrap_or_else(|e| panic!("{}: default {v} is not TOML: {e}", k.path()));
            }
        }
    }

    /// Fails when `docs/config.md` is out of date; `UPDATE_DOCS=1` rewrites it.
    #[test]
    fn docs_config_md_is_up_to_date() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/config.md");
        let expected = markdown();
        if std::env::var_os("UPDATE_DOCS").is_some() {
            std::fs::write(path, &expected).expect("write docs/config.md");
        }
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == expected,
            "docs/config.md is out of date: run `UPDATE_DOCS=1 cargo test -p portcullis --lib config::reference`"
        );
    }
}
