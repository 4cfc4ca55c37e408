//! Typed, validated gateway configuration (reference: docs/config.md).
//!
//! `load.rs` turns a TOML file plus `PORTCULLIS__SECTION__KEY` overrides into
//! a [`Config`], collecting every problem with its key path instead of
//! stopping at the first one.

mod load;
pub mod print;
#[cfg(test)]
mod proptests;
pub mod reference;
mod validate;

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use ipnet::IpNet;
use url::Url;

/// `server.csp` when the config does not set one.
pub const DEFAULT_CSP: &str =
    "default-src 'self'; frame-ancestors 'none'; object-src 'none'; base-uri 'self'";

pub use crate::secret::Secret;
pub(crate) use crate::secret::decode_key;
pub use load::{ConfigError, ConfigIssue, stray_env_vars};

/// The whole, validated configuration. Build it with [`Config::load`] or
/// [`Config::from_toml_str`]; every field has passed validation.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub admin: AdminConfig,
    pub oidc: OidcConfig,
    pub session: SessionConfig,
    pub csrf: CsrfConfig,
    pub cors: CorsConfig,
    pub routes: Vec<RouteConfig>,
    pub static_files: Option<StaticConfig>,
}

/// `prod` (default) demands https and `__Host-` cookies; `dev` relaxes that on loopback hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    Dev,
    Prod,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// `server.listen`, default `127.0.0.1:8080`.
    pub listen: SocketAddr,
    /// `server.public_url`: the origin the browser sees (no path, no trailing slash).
    pub public_url: Url,
    /// `server.profile`, default `prod`.
    pub profile: Profile,
    /// `server.trusted_proxies`: CIDRs whose `X-Forwarded-*` headers are believed. Default empty.
    pub trusted_proxies: Vec<IpNet>,
    /// `server.auth_prefix`, default `/auth`. Starts with `/`, no trailing `/`.
    pub auth_prefix: String,
    /// `server.csp`: the `Content-Security-Policy` of gateway-generated and static
    /// responses. Default `default-src 'self'; frame-ancestors 'none'; object-src 'none'; base-uri 'self'`.
    pub csp: String,
    /// `server.drain_timeout`, default `30s`: on shutdown, how long in-flight
    /// requests and open streams may run before they are cut.
    pub drain_timeout: Duration,
    /// `server.log_level`, default `info`: a `tracing` filter (`debug`,
    /// `info,portcullis=debug`); env `RUST_LOG` wins when set.
    pub log_level: String,
    /// `server.log_format`: `json` or `text`. Default `json` in prod, `text` in dev.
    pub log_format: LogFormat,
    /// `server.log_user`, default `false`: add the user's `sub` to the
    /// request span (and so to every log line of the request).
    pub log_user: bool,
    /// `server.workers`, default `"auto"` (one per CPU): how many threads
    /// serve the public listener, each with its own event loop and upstream
    /// connection pools.
    pub workers: usize,
    /// `server.websocket_idle_timeout`, default `10m`: a WebSocket tunnel
    /// with no bytes either way for this long is closed.
    pub websocket_idle_timeout: Duration,
    /// `server.websocket_session_check`, default `30s`: how often a
    /// WebSocket tunnel re-reads its session from the store (and closes when
    /// it is gone or expired, e.g. ended on another replica, or lost the
    /// route's role; a busy tunnel touches the session then).
    pub websocket_session_check: Duration,

    /// Connection limits of both listeners (public and admin), from
    /// `server.header_read_timeout`, `idle_timeout`, `body_read_timeout`,
    /// `max_connections`, `max_connections_per_ip`, `max_header_bytes` and
    /// `max_headers`.
    pub limits: ConnectionLimits,
}

/// What one client connection may hold (applied to the public and the admin
/// listener alike, each counting its own connections).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// `server.header_read_timeout`, default `10s`: a request head must be
    /// complete within it, counted from the connection's start and (HTTP/1)
    /// from the end of the previous response; else the connection is closed.
    pub header_read_timeout: Duration,
    /// `server.idle_timeout`, default `60s`: a connection with no request in
    /// flight and no bytes moving for this long is closed.
    pub idle_timeout: Duration,
    /// `server.max_connections`, default `10000`: open connections per
    /// listener; beyond it new ones wait in the kernel backlog.
    pub max_connections: usize,
    /// `server.max_header_bytes`, default `16384` (at least 8192): the largest
    /// HTTP/1 request head (request line and headers); beyond it: 431.
    pub max_header_bytes: usize,
    /// `server.max_headers`, default `100`: header fields per request; beyond it: 431.
    pub max_headers: usize,
    /// `server.body_read_timeout`, default `30s`: a request body that sends
    /// no byte for this long fails (408, or the connection closes when the
    /// response has started).
    pub body_read_timeout: Duration,
    /// `server.max_connections_per_ip`, default `256` (`0`: off): open
    /// connections per client address (IPv6 grouped by /64) per listener;
    /// beyond it new ones are closed at once.
    pub max_connections_per_ip: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 10_000,
            max_header_bytes: 16 * 1024,
            max_headers: 100,
            body_read_timeout: Duration::from_secs(30),
            max_connections_per_ip: 256,
        }
    }
}

/// How `portcullis serve` writes its logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line (for log shippers).
    Json,
    /// Human-readable lines.
    Text,
}

/// Default of `admin.listen`; `portcullis health` asks it when the config
/// does not say otherwise.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9090";

#[derive(Debug, Clone)]
pub struct AdminConfig {
    /// `admin.listen`, default `127.0.0.1:9090`; `None` when set to `""` (admin listener off).
    pub listen: Option<SocketAddr>,
    /// `admin.token` or the contents of `admin.token_file` (trimmed): the
    /// bearer token of the session admin API (`/admin/sessions`). Default
    /// none: those endpoints are 404 while health and metrics stay.
    pub token: Option<Secret>,
}

/// How the client authenticates at the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuthMethod {
    /// `client_secret_basic` (default): HTTP Basic with the url-encoded id and secret.
    Basic,
    /// `client_secret_post`: id and secret in the form body.
    Post,
}

#[derive(Debug, Clone)]
pub struct OidcConfig {
    /// `oidc.issuer`, exactly as the IdP spells it (compared byte for byte with discovery).
    pub issuer: String,
    /// `oidc.client_id`.
    pub client_id: String,
    /// `oidc.client_secret` or the contents of `oidc.client_secret_file` (trimmed).
    pub client_secret: Secret,
    /// `oidc.token_endpoint_auth_method`: `client_secret_basic` (default) or `client_secret_post`.
    pub token_endpoint_auth_method: ClientAuthMethod,
    /// `oidc.scopes`, default `["openid", "profile", "email", "offline_access"]`; always contains `openid`.
    pub scopes: Vec<String>,
    /// `oidc.roles_claim`, default `roles`: dotted path into ID-token/userinfo claims.
    pub roles_claim: String,
    /// `oidc.post_logout_redirect`, default `/`: a same-origin path.
    pub post_logout_redirect: String,
    /// `oidc.allowed_algs`, default `["RS256", "PS256", "ES256", "EdDSA"]`. HMAC and `none` are refused.
    pub allowed_algs: Vec<jsonwebtoken::Algorithm>,
    /// `oidc.http_timeout`, default `10s`: every call to the IdP.
    pub http_timeout: Duration,
    /// `oidc.clock_skew`, default `60s`: leeway for `exp`/`iat`/`nbf`.
    pub clock_skew: Duration,
    /// `oidc.userinfo`, default `true`: fetch userinfo at login (when the IdP has the endpoint).
    pub userinfo: bool,
    /// `oidc.backchannel_all_sessions`, default `false`: a back-channel logout
    /// token ends every session of its `sub`, not only those of its `sid`.
    pub backchannel_all_sessions: bool,
    /// `oidc.frontchannel_logout`, default `false`: serve
    /// `GET /auth/frontchannel-logout` (404 when off). When on, it ends only
    /// the caller's own session, and only if `iss` and `sid` match it.
    pub frontchannel_logout: bool,
    /// `oidc.breaker_failures`, default `5`: consecutive transient failures
    /// of the token endpoint that open the circuit breaker.
    pub breaker_failures: usize,
    /// `oidc.breaker_backoff`, default `1s`: the first open period; doubles
    /// with each failed probe.
    pub breaker_backoff: Duration,
    /// `oidc.breaker_max_backoff`, default `60s`: the longest open period.
    pub breaker_max_backoff: Duration,
    /// `oidc.extra_auth_params`, default none: extra parameters of the
    /// authorization request (Auth0 `audience`, Google `access_type`, RFC 8707
    /// `resource`). The protocol's own parameters cannot be set here.
    pub extra_auth_params: Vec<(String, String)>,
    /// `oidc.extra_token_params`, default none: extra parameters of every
    /// token request (code exchange and refresh).
    pub extra_token_params: Vec<(String, String)>,
    /// `oidc.ca_file` and `oidc.tls_roots`: whom the IdP client trusts.
    /// Default: the bundled Mozilla roots; a `ca_file` alone: only that file.
    pub tls: crate::tls::TrustConfig,
}

#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// `session.store`, default `sqlite://portcullis.db`: `memory` or `sqlite://PATH`.
    pub store: String,
    /// `session.cookie_name`: default `__Host-portcullis` (prod) or `portcullis` (dev).
    pub cookie_name: String,
    /// `session.idle_timeout`, default `30m`.
    pub idle_timeout: Duration,
    /// `session.absolute_timeout`, default `12h`.
    pub absolute_timeout: Duration,
    /// `session.refresh_before`, default `60s`.
    pub refresh_before: Duration,
    /// `session.refresh_on_401_interval`, default `30s`: at most one token
    /// refresh per session in this interval is triggered by an upstream 401
    /// (per replica); later 401s go back to the client as they are.
    pub refresh_on_401_interval: Duration,
    /// `session.keep_id_token`, default true: keep the IdP's ID token in the
    /// session, only to send it as `id_token_hint` at logout. `false` keeps
    /// about 1 KB less per session and no copy of the user's identity token;
    /// logout then names the client (`client_id`) alone.
    pub keep_id_token: bool,
    /// `session.encryption_keys` (or `encryption_keys_file`, one per line): base64 of 32 bytes each.
    pub encryption_keys: Vec<Secret>,
    /// `session.key_prefix`, default `portcullis:`: prefix of every Redis key.
    pub key_prefix: String,
    /// `session.store_timeout`, default `2s`: longest wait for one store operation
    /// (connection included) before the request gets 503 `store_unavailable`.
    pub store_timeout: Duration,
    /// `session.cache`, default true: local cache in front of Redis/PostgreSQL.
    pub cache: bool,
    /// `session.cache_ttl`, default `2s`: how long a cached session is served.
    pub cache_ttl: Duration,
    /// `session.cache_size`, default 10000: most sessions cached per replica.
    pub cache_size: usize,
    /// `session.migrate`, default true: apply SQL schema migrations on start.
    pub migrate: bool,
}

#[derive(Debug, Clone)]
pub struct CsrfConfig {
    /// `csrf.cookie`, default `XSRF-TOKEN`.
    pub cookie: String,
    /// `csrf.header`, default `X-XSRF-TOKEN`.
    pub header: String,
    /// `csrf.token_in_me`, default `false`: `/auth/me` also returns the token
    /// (`csrf_token`), for an SPA on another host name of the same site, which
    /// cannot read the gateway's cookie. Only origins CORS allows can read it.
    pub token_in_me: bool,
}

#[derive(Debug, Clone, Default)]
pub struct CorsConfig {
    /// `cors.allowed_origins`, default empty (same-origin only). Exact origins, no wildcard.
    pub allowed_origins: Vec<String>,
    /// `cors.allowed_methods`, default `["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]`:
    /// what a preflight allows.
    pub allowed_methods: Vec<http::Method>,
    /// `cors.allowed_headers`, default `["Content-Type"]`; the CSRF header
    /// (`csrf.header`) is always added.
    pub allowed_headers: Vec<String>,
    /// `cors.max_age`, default `10m`: how long a browser may cache a preflight answer.
    pub max_age: Duration,
}

/// Whether a route forwards the user's access token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenMode {
    /// `user` (default): needs a session; `Authorization: Bearer <access token>` is attached.
    User,
    /// `none`: public route, no session needed, no token attached.
    None,
}

#[derive(Debug, Clone)]
pub struct RouteConfig {
    /// `routes[].prefix`, e.g. `/api/`. Starts with `/`.
    pub prefix: String,
    /// `routes[].upstream`: `http://` or `https://` base URL.
    pub upstream: Url,
    /// `routes[].token`, default `user`.
    pub token: TokenMode,
    /// `routes[].require_roles`, default empty: any-of.
    pub require_roles: Vec<String>,
    /// `routes[].strip_prefix`, default `false`.
    pub strip_prefix: bool,
    /// `routes[].timeout`, default `30s`.
    pub timeout: Duration,
    /// `routes[].security_headers`, default `false`: add the gateway's security
    /// headers (CSP, nosniff, Referrer-Policy, HSTS in prod) to proxied responses
    /// that do not set their own. Off: API responses keep exactly their headers.
    pub security_headers: bool,
    /// `routes[].case_insensitive`, default `false`: match the prefix with
    /// ASCII case ignored (for upstreams that route that way, e.g. ASP.NET).
    pub case_insensitive: bool,
    /// `routes[].check_origin`, default `true`: on a `token = "none"` route,
    /// refuse unsafe methods whose `Origin` / `Sec-Fetch-Site` is cross-site.
    pub check_origin: bool,
    /// `routes[].ca_file`, `tls_roots`, `client_cert_file` and
    /// `client_key_file` (https upstreams only). Default: the bundled
    /// Mozilla roots, no client certificate.
    pub tls: crate::tls::TlsSettings,
}

#[derive(Debug, Clone)]
pub struct StaticConfig {
    /// `static.dir`: directory of the built SPA.
    pub dir: PathBuf,
    /// `static.spa_fallback`, default `true`.
    pub spa_fallback: bool,
}

/// A path on our own origin: one leading `/`, not `//` or `/\` (which
/// browsers read as another host), no control characters. The one rule for
/// every redirect target on our origin: `oidc.post_logout_redirect` as is,
/// and a login's `return_to`, which adds limits of its own (`http/auth.rs`).
pub(crate) fn is_same_origin_path(path: &str) -> bool {
    path.starts_with('/')
        && !path.starts_with("//")
        && !path.starts_with("/\\")
        && !path.contains(|c: char| c.is_control())
}

impl Config {
    /// The exact `redirect_uri` registered at the IdP: `public_url` + auth prefix + `/callback`.
    pub fn redirect_uri(&self) -> String {
        format!(
            "{}{}/callback",
            self.public_origin(),
            self.server.auth_prefix
        )
    }

    /// `public_url` as an origin string without trailing slash, e.g. `https://app.example.com`.
    pub fn public_origin(&self) -> String {
        self.server.public_url.origin().ascii_serialization()
    }

    /// Whether cookies get the `Secure` attribute: always, except dev on plain http.
    pub fn secure_cookies(&self) -> bool {
        self.server.public_url.scheme() == "https"
    }

    /// How this configuration is weaker than the prod profile, one line per
    /// difference, for the startup warning of the dev profile. Empty in prod.
    pub fn dev_profile_differences(&self) -> Vec<String> {
        if self.server.profile != Profile::Dev {
            return Vec::new();
        }
        let mut out = Vec::new();
        if self.server.public_url.scheme() == "http" {
            out.push(format!(
                "public_url {} is plain http (prod requires https)",
                self.public_origin()
            ));
        }
        if !self.session.cookie_name.starts_with("__Host-") {
            out.push(format!(
                "session cookie \"{}\" has no __Host- prefix",
                self.session.cookie_name
            ));
        }
        if !self.secure_cookies() {
            out.push("cookies are sent without the Secure attribute".into());
        }
        out.push("no Strict-Transport-Security (HSTS) header".into());
        if self
            .oidc
            .issuer
            .get(..7)
            .is_some_and(|s| s.eq_ignore_ascii_case("http://"))
        {
            out.push(format!("issuer {} is plain http", self.oidc.issuer));
        }
        if !self.cors.allowed_origins.is_empty() {
            out.push(format!(
                "CORS allows {} with credentials",
                self.cors.allowed_origins.join(", ")
            ));
        }
        if self.server.log_format != LogFormat::Json {
            out.push("logs are human-readable text, not JSON".into());
        }
        out
    }
}
