//! Reading the configuration: TOML text plus `PORTCULLIS__SECTION__KEY`
//! environment overrides, into permissive raw structs whose unknown keys are
//! reported with their full path. `validate.rs` then turns the raw structs
//! into a typed [`Config`], field by field.
//!
//! Every leaf of the raw structs is a `toml::Value`, so a wrong type never
//! aborts deserialization: the validator reports it with its exact key path
//! and goes on, and `portcullis check` can print every problem at once.

use std::{collections::HashMap, fmt, path::Path};

use serde::{Deserialize, de::DeserializeOwned};
use toml::{Table, Value};

use super::{Config, validate};

/// Prefix of the environment variables that override config keys.
const ENV_PREFIX: &str = "PORTCULLIS__";

/// One configuration problem: the dotted key path (`routes[1].upstream`) and
/// what is wrong with it. Messages never contain secret values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    /// Dotted key path, e.g. `server.public_url` or `routes[1].prefix`;
    /// `config` for the file as a whole; the variable name for a bad
    /// environment override.
    pub key: String,
    /// Human-readable description of the problem.
    pub message: String,
}

impl ConfigIssue {
    /// An issue for `key`.
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Every problem found in a configuration, in the order found. Never empty
/// when returned by [`Config::load`] or [`Config::from_toml_str`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub Vec<ConfigIssue>);

impl ConfigError {
    /// The individual problems.
    pub fn issues(&self) -> &[ConfigIssue] {
        &self.0
    }
}

impl fmt::Display for ConfigError {
    /// One `key: message` line per issue.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, issue) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{issue}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Reads the TOML file at `path`, applies the `PORTCULLIS__…` overrides
    /// found in `env` (pass `std::env::vars()`), and validates the result.
    ///
    /// An unreadable file is a single issue with key `config`.
    pub fn load(
        path: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::from_toml_str(&text, env),
            Err(err) => Err(ConfigError(vec![ConfigIssue::new(
                "config",
                format!("cannot read {}: {err}", path.display()),
            )])),
        }
    }

    /// The configuration from the `PORTCULLIS__…` variables in `env` alone,
    /// without a file (12-factor style); the same rules as [`Config::load`].
    pub fn from_env(
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        Self::from_toml_str("", env)
    }

    /// Parses `toml`, applies the `PORTCULLIS__…` overrides found in `env`
    /// (they win over the file), and validates the result, collecting every
    /// problem.
    ///
    /// `PORTCULLIS__SERVER__PUBLIC_URL` overrides `server.public_url`: the
    /// name after the prefix is lowercased and split on `__`; a numeric part
    /// indexes an array (`PORTCULLIS__ROUTES__0__UPSTREAM`). A value that
    /// parses as a TOML array, boolean or integer is taken as such, anything
    /// else as a plain string. Other variables are ignored.
    pub fn from_toml_str(
        toml: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut table = parse_toml(toml).map_err(|issue| ConfigError(vec![issue]))?;
        let mut issues = Vec::new();
        let env_strings = apply_env(&mut table, env, &mut issues);
        let raw = RawConfig::read(table, &mut issues);
        let config = validate::validate(raw, &env_strings, &mut issues);
        match config {
            Some(config) if issues.is_empty() => Ok(config),
            _ => {
                if issues.is_empty() {
                    // Every `None` from the validator comes with an issue; keep
                    // the promise that an error is never empty all the same.
                    issues.push(ConfigIssue::new("config", "invalid configuration"));
                }
                Err(ConfigError(issues))
            }
        }
    }
}

/// Parses the file into a table. The message carries line and column but not
/// the offending source line, which could hold a secret.
pub(super) fn parse_toml(text: &str) -> Result<Table, ConfigIssue> {
    toml::from_str::<Table>(text).map_err(|err| {
        let position = err.span().map(|span| {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!(" at line {line}, column {column}")
        });
        ConfigIssue::new(
            "config",
            format!(
                "invalid TOML{}: {}",
                position.unwrap_or_default(),
                err.message().trim_end()
            ),
        )
    })
}

/// Applies the `PORTCULLIS__…` overrides to `table`. Returns the raw string of
/// every override by its dotted key, so that a string field set to e.g. a
/// numeric client id through the environment is still accepted.
pub(super) fn apply_env(
    table: &mut Table,
    env: impl IntoIterator<Item = (String, String)>,
    issues: &mut Vec<ConfigIssue>,
) -> HashMap<String, String> {
    let mut overrides: Vec<(String, String)> = env
        .into_iter()
        .filter(|(name, _)| name.starts_with(ENV_PREFIX))
        .collect();
    // Process env order is arbitrary; sorting makes conflicts deterministic.
    // Indices compare as numbers so that `ROUTES__2` comes before `ROUTES__10`
    // and env-defined array elements are appended in order; a whole value
    // (`PORTCULLIS__ROUTES`) sorts before the overrides inside it.
    overrides.sort_by_cached_key(|(name, _)| (override_order(name), name.clone()));
    let mut strings = HashMap::new();
    for (name, raw) in overrides {
        let segments: Vec<String> = name[ENV_PREFIX.len()..]
            .split("__")
            .map(str::to_ascii_lowercase)
            .collect();
        if segments.iter().any(String::is_empty) {
            issues.push(ConfigIssue::new(
                name,
                "invalid override name: empty key between `__` separators",
            ));
            continue;
        }
        match set_path(table, &segments, env_value(&raw)) {
            Ok(key) => {
                strings.insert(key, raw);
            }
            Err(message) => issues.push(ConfigIssue::new(name, message)),
        }
    }
    strings
}

/// `PORTCULLIS_…` variables the binary reads that are not config overrides:
/// the config file, and the tools of this repository (the test scripts' binary
/// path, the example SPAs' dev-server proxy target).
const OTHER_VARS: &[&str] = &["PORTCULLIS_CONFIG", "PORTCULLIS_BIN", "PORTCULLIS_URL"];

/// Variables that look meant for portcullis but configure nothing: a name
/// that starts with `PORTCULLIS_` in any case and is neither a
/// `PORTCULLIS__…` override nor one of [`OTHER_VARS`], such as the
/// single-underscore typo `PORTCULLIS_OIDC__ISSUER`. [`Config::load`]
/// ignores them, so a typo would otherwise silently leave a key unset; the
/// CLI reports them as warnings (`check`) and logs them at start (`serve`).
/// An override of an unknown key (`PORTCULLIS__SERVER__LISTN`) is not listed
/// here: the load reports it as an error, like an unknown key in the file.
pub fn stray_env_vars(env: impl IntoIterator<Item = (String, String)>) -> Vec<ConfigIssue> {
    let mut stray: Vec<ConfigIssue> = env
        .into_iter()
        .map(|(name, _)| name)
        .filter(|name| {
            name.get(..ENV_PREFIX.len() - 1)
                .is_some_and(|p| p.eq_ignore_ascii_case(&ENV_PREFIX[..ENV_PREFIX.len() - 1]))
                && !name.starts_with(ENV_PREFIX)
                && !OTHER_VARS.contains(&name.as_str())
        })
        .map(|name| {
            let hint = match suggest_override(&name) {
                Some(var) => format!("; did you mean {var}?"),
                None => String::new(),
            };
            let message = format!(
                "ignored: not a configuration variable (overrides are named \
                 PORTCULLIS__SECTION__KEY, with double underscores){hint}"
            );
            ConfigIssue::new(name, message)
        })
        .collect();
    stray.sort_by(|a, b| a.key.cmp(&b.key));
    stray
}

/// The override a stray variable most likely meant: its name compared with
/// every key's variable ignoring case and underscores (`PORTCULLIS_OIDC_ISSUER`
/// → `PORTCULLIS__OIDC__ISSUER`; a route index is kept).
fn suggest_override(name: &str) -> Option<String> {
    let squash = |s: &str| -> String {
        s.chars()
            .filter(|c| *c != '_')
            .map(|c| c.to_ascii_lowercase())
            .collect()
    };
    let rest = squash(&name["PORTCULLIS".len()..]);
    super::reference::KEYS.iter().find_map(|key| {
        let name = squash(key.name);
        if key.section == "routes" {
            let index = rest.strip_prefix("routes")?.strip_suffix(name.as_str())?;
            (!index.is_empty() && index.bytes().all(|b| b.is_ascii_digit())).then(|| {
                format!(
                    "PORTCULLIS__ROUTES__{index}__{}",
                    key.name.to_ascii_uppercase()
                )
            })
        } else {
            (rest == format!("{}{name}", key.section)).then(|| key.env_var())
        }
    })
}

/// Sort key of an override name: its `__` segments, numeric ones by value.
fn override_order(name: &str) -> Vec<(Option<u64>, String)> {
    name[ENV_PREFIX.len()..]
        .split("__")
        .map(|segment| (segment.parse().ok(), segment.to_owned()))
        .collect()
}

/// An override value: a TOML array, boolean or integer when it parses as
/// one, otherwise the plain string.
fn env_value(raw: &str) -> Value {
    // A newline would let the value smuggle in further keys.
    if !raw.contains(['\n', '\r'])
        && let Ok(mut parsed) = toml::from_str::<Table>(&format!("v = {raw}"))
        && let Some(value @ (Value::Array(_) | Value::Boolean(_) | Value::Integer(_))) =
            parsed.remove("v")
    {
        return value;
    }
    Value::String(raw.to_owned())
}

/// Sets `value` at `segments` (table keys, or indices into existing arrays),
/// creating missing tables. Returns the dotted key, e.g. `routes[0].prefix`.
pub(super) fn set_path(
    table: &mut Table,
    segments: &[String],
    value: Value,
) -> Result<String, String> {
    let mut root = Value::Table(std::mem::take(table));
    let mut key = String::new();
    let result = set_in(&mut root, segments, value, &mut key);
    if let Value::Table(root) = root {
        *table = root;
    }
    result.map(|()| key)
}

fn set_in(
    node: &mut Value,
    segments: &[String],
    value: Value,
    key: &mut String,
) -> Result<(), String> {
    let Some((first, rest)) = segments.split_first() else {
        *node = value;
        return Ok(());
    };
    let child = match node {
        Value::Table(table) => {
            if !key.is_empty() {
                key.push('.');
            }
            key.push_str(first);
            // A numeric next segment makes a missing key an array, so that
            // `PORTCULLIS__ROUTES__0__PREFIX` can define routes without a file.
            let next_is_index = rest
                .first()
                .is_some_and(|next| next.parse::<usize>().is_ok());
            table
                .entry(first.clone())
                .or_insert_with(|| match next_is_index {
                    true => Value::Array(Vec::new()),
                    false => Value::Table(Table::new()),
                })
        }
        Value::Array(items) => {
            let index: usize = first.parse().map_err(|_| {
                format!("{key} is an array: expected a numeric index, found `{first}`")
            })?;
            let len = items.len();
            key.push_str(&format!("[{index}]"));
            if index == len {
                // The next element: appended (overrides are applied in index order).
                items.push(Value::Table(Table::new()));
            }
            items.get_mut(index).ok_or_else(|| {
                format!(
                    "{key} does not exist (the array has {len} elements; \
                     number new elements from {len} without gaps)"
                )
            })?
        }
        other => return Err(format!("{key} is a {}, not a table", other.type_str())),
    };
    set_in(child, rest, value, key)
}

/// The top level: sections stay `Value`s so that each one is checked on its
/// own and a section of the wrong type does not hide the others.
#[derive(Deserialize, Default)]
struct RawRoot {
    server: Option<Value>,
    admin: Option<Value>,
    oidc: Option<Value>,
    session: Option<Value>,
    csrf: Option<Value>,
    cors: Option<Value>,
    routes: Option<Value>,
    #[serde(rename = "static")]
    static_files: Option<Value>,
}

/// Everything as written, before validation. Missing sections are empty.
#[derive(Default)]
pub(super) struct RawConfig {
    pub server: RawServer,
    pub admin: RawAdmin,
    pub oidc: RawOidc,
    pub session: RawSession,
    pub csrf: RawCsrf,
    pub cors: RawCors,
    /// Each route with its index in the file (routes that are not tables are
    /// reported and skipped, keeping the others' indices).
    pub routes: Vec<(usize, RawRoute)>,
    /// `None` when the file has no `[static]` section.
    pub static_files: Option<RawStatic>,
}

/// A raw leaf: absent, or a TOML value of any type.
type Raw = Option<Value>;

#[derive(Deserialize, Default)]
pub(super) struct RawServer {
    pub listen: Raw,
    pub public_url: Raw,
    pub profile: Raw,
    pub trusted_proxies: Raw,
    pub auth_prefix: Raw,
    pub csp: Raw,
    pub drain_timeout: Raw,
    pub log_level: Raw,
    pub log_format: Raw,
    pub log_user: Raw,
    pub workers: Raw,
    pub websocket_idle_timeout: Raw,
    pub websocket_session_check: Raw,

    pub header_read_timeout: Raw,
    pub idle_timeout: Raw,
    pub max_connections: Raw,
    pub max_header_bytes: Raw,
    pub max_headers: Raw,
    pub body_read_timeout: Raw,
    pub max_connections_per_ip: Raw,
}

#[derive(Deserialize, Default)]
pub(super) struct RawAdmin {
    pub listen: Raw,
    pub token: Raw,
    pub token_file: Raw,
}

#[derive(Deserialize, Default)]
pub(super) struct RawOidc {
    pub issuer: Raw,
    pub client_id: Raw,
    pub client_secret: Raw,
    pub client_secret_file: Raw,
    pub token_endpoint_auth_method: Raw,
    pub scopes: Raw,
    pub roles_claim: Raw,
    pub post_logout_redirect: Raw,
    pub allowed_algs: Raw,
    pub http_timeout: Raw,
    pub clock_skew: Raw,
    pub userinfo: Raw,
    pub backchannel_all_sessions: Raw,
    pub frontchannel_logout: Raw,
    pub breaker_failures: Raw,
    pub breaker_backoff: Raw,
    pub breaker_max_backoff: Raw,
    pub extra_auth_params: Raw,
    pub extra_token_params: Raw,
    pub ca_file: Raw,
    pub tls_roots: Raw,
}

#[derive(Deserialize, Default)]
pub(super) struct RawSession {
    pub store: Raw,
    pub store_password_file: Raw,
    pub cookie_name: Raw,
    pub idle_timeout: Raw,
    pub absolute_timeout: Raw,
    pub refresh_before: Raw,
    pub refresh_on_401_interval: Raw,
    pub keep_id_token: Raw,
    pub encryption_keys: Raw,
    pub encryption_keys_file: Raw,
    pub key_prefix: Raw,
    pub store_timeout: Raw,
    pub cache: Raw,
    pub cache_ttl: Raw,
    pub cache_size: Raw,
    pub migrate: Raw,
}

#[derive(Deserialize, Default)]
pub(super) struct RawCsrf {
    pub cookie: Raw,
    pub header: Raw,
    pub token_in_me: Raw,
}

#[derive(Deserialize, Default)]
pub(super) struct RawCors {
    pub allowed_origins: Raw,
    pub allowed_methods: Raw,
    pub allowed_headers: Raw,
    pub max_age: Raw,
}

#[derive(Deserialize, Default)]
pub(super) struct RawRoute {
    pub prefix: Raw,
    pub upstream: Raw,
    pub token: Raw,
    pub require_roles: Raw,
    pub strip_prefix: Raw,
    pub timeout: Raw,
    pub security_headers: Raw,
    pub case_insensitive: Raw,
    pub check_origin: Raw,
    pub ca_file: Raw,
    pub tls_roots: Raw,
    pub client_cert_file: Raw,
    pub client_key_file: Raw,
}

#[derive(Deserialize, Default)]
pub(super) struct RawStatic {
    pub dir: Raw,
    pub spa_fallback: Raw,
}

impl RawConfig {
    /// Splits the merged table into raw sections, reporting unknown keys and
    /// sections of the wrong type.
    fn read(table: Table, issues: &mut Vec<ConfigIssue>) -> RawConfig {
        let root: RawRoot = section("", Value::Table(table), issues).unwrap_or_default();
        let mut routes = Vec::new();
        match root.routes {
            None => {}
            Some(Value::Array(items)) => {
                for (index, item) in items.into_iter().enumerate() {
                    if let Some(route) = section(&format!("routes[{index}]"), item, issues) {
                        routes.push((index, route));
                    }
                }
            }
            Some(other) => issues.push(ConfigIssue::new(
                "routes",
                format!(
                    "expected an array of tables ([[routes]]), found {}",
                    other.type_str()
                ),
            )),
        }
        RawConfig {
            server: optional_section("server", root.server, issues),
            admin: optional_section("admin", root.admin, issues),
            oidc: optional_section("oidc", root.oidc, issues),
            session: optional_section("session", root.session, issues),
            csrf: optional_section("csrf", root.csrf, issues),
            cors: optional_section("cors", root.cors, issues),
            routes,
            static_files: root
                .static_files
                .and_then(|value| section("static", value, issues)),
        }
    }
}

/// A section that may be left out: empty when absent or of the wrong type.
fn optional_section<T: DeserializeOwned + Default>(
    key: &str,
    value: Option<Value>,
    issues: &mut Vec<ConfigIssue>,
) -> T {
    value
        .and_then(|value| section(key, value, issues))
        .unwrap_or_default()
}

/// Deserializes one table (`key` is its path, `""` for the root), reporting
/// each unknown key below it as `key.unknown`.
fn section<T: DeserializeOwned>(
    key: &str,
    value: Value,
    issues: &mut Vec<ConfigIssue>,
) -> Option<T> {
    if !value.is_table() {
        issues.push(ConfigIssue::new(
            key,
            format!("expected a table, found {}", value.type_str()),
        ));
        return None;
    }
    let mut unknown = Vec::new();
    let result = serde_ignored::deserialize(value, |path| unknown.push(join_path(key, &path)));
    issues.extend(
        unknown
            .into_iter()
            .map(|key| ConfigIssue::new(key, "unknown key")),
    );
    match result {
        Ok(raw) => Some(raw),
        Err(err) => {
            let key = if key.is_empty() { "config" } else { key };
            issues.push(ConfigIssue::new(key, err.message().trim_end()));
            None
        }
    }
}

/// `prefix` + a serde_ignored path in config notation: `routes[1].bogus`.
fn join_path(prefix: &str, path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => prefix.to_owned(),
        Path::Seq { parent, index } => format!("{}[{index}]", join_path(prefix, parent)),
        Path::Map { parent, key } => {
            let parent = join_path(prefix, parent);
            if parent.is_empty() {
                key.clone()
            } else {
                format!("{parent}.{key}")
            }
        }
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => join_path(prefix, parent),
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::io::Write as _;

    use super::*;

    /// Client secret of [`PROD`]: must never show up in messages or Debug.
    pub(crate) const SECRET: &str = "s3cr3t-client-value";
    /// Base64 of 32 bytes.
    pub(crate) const KEY: &str = "cG9ydGN1bGxpcy10ZXN0LWtleS0wMTIzNDU2Nzg5YWI=";

    /// A minimal valid prod config with one route.
    pub(crate) const PROD: &str = r#"
[server]
public_url = "https://app.example.com"

[oidc]
issuer = "https://idp.example.com/realms/demo"
client_id = "portal"
client_secret = "s3cr3t-client-value"

[session]
encryption_keys = ["cG9ydGN1bGxpcy10ZXN0LWtleS0wMTIzNDU2Nzg5YWI="]

[[routes]]
prefix = "/api/"
upstream = "http://127.0.0.1:4111"
"#;

    /// A minimal valid dev config on loopback http.
    pub(crate) const DEV: &str = r#"
[server]
profile = "dev"
public_url = "http://localhost:5173"

[oidc]
issuer = "http://127.0.0.1:9000"
client_id = "portal"
client_secret = "s3cr3t-client-value"

[session]
encryption_keys = ["cG9ydGN1bGxpcy10ZXN0LWtleS0wMTIzNDU2Nzg5YWI="]
"#;

    fn no_env() -> Vec<(String, String)> {
        Vec::new()
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// `base` with each `(dotted.path, toml literal)` set; a numeric part
    /// indexes an array (`routes.0.prefix`).
    pub(crate) fn load_edited(base: &str, edits: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let mut table: Table = toml::from_str(base).expect("base config parses");
        for (path, literal) in edits {
            let segments: Vec<String> = path.split('.').map(str::to_owned).collect();
            let mut parsed: Table =
                toml::from_str(&format!("v = {literal}")).expect("edit is a TOML literal");
            let value = parsed.remove("v").expect("edit has a value");
            set_path(&mut table, &segments, value).expect("edit path fits the base");
        }
        let text = toml::to_string(&table).expect("edited config serializes");
        Config::from_toml_str(&text, Vec::new())
    }

    /// [`PROD`] with edits.
    pub(crate) fn prod_with(edits: &[(&str, &str)]) -> Result<Config, ConfigError> {
        load_edited(PROD, edits)
    }

    /// [`DEV`] with edits.
    pub(crate) fn dev_with(edits: &[(&str, &str)]) -> Result<Config, ConfigError> {
        load_edited(DEV, edits)
    }

    /// [`PROD`] itself.
    pub(crate) fn prod() -> Config {
        prod_with(&[]).expect("PROD is valid")
    }

    /// A TOML string literal for `text` (e.g. a temp-file path).
    pub(crate) fn lit(text: &str) -> String {
        Value::String(text.to_owned()).to_string()
    }

    /// A temporary file holding `contents`.
    pub(crate) fn temp_file(contents: &str) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().expect("temp file");
        file.write_all(contents.as_bytes())
            .expect("temp file written");
        file
    }

    /// The issues of a config that must fail.
    pub(crate) fn issues(result: Result<Config, ConfigError>) -> Vec<ConfigIssue> {
        match result {
            Ok(config) => panic!("expected a config error, got {config:?}"),
            Err(err) => err.0,
        }
    }

    /// Asserts that loading failed with an issue on exactly `key`, and that
    /// no message leaks the client secret. Returns that issue's message.
    #[track_caller]
    pub(crate) fn expect_issue(result: Result<Config, ConfigError>, key: &str) -> String {
        let issues = issues(result);
        for issue in &issues {
            assert!(!issue.message.contains(SECRET), "secret leaked: {issue}");
        }
        match issues.iter().find(|issue| issue.key == key) {
            Some(issue) => issue.message.clone(),
            None => panic!("no issue on {key}; got {issues:#?}"),
        }
    }

    #[test]
    fn load_reads_the_file() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(PROD.as_bytes()).unwrap();
        let config = Config::load(file.path(), no_env()).unwrap();
        assert_eq!(config.oidc.client_id, "portal");
    }

    #[test]
    fn load_reports_a_missing_file_on_config() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nope.toml");
        let err = Config::load(&path, no_env()).unwrap_err();
        assert_eq!(err.0.len(), 1);
        assert_eq!(err.0[0].key, "config");
        assert!(
            err.0[0].message.contains("nope.toml"),
            "{}",
            err.0[0].message
        );
    }

    #[test]
    fn invalid_toml_names_the_line_but_not_the_text() {
        let text = "[oidc]\nclient_id = \"portal\"\nclient_secret = s3cr3t-client-value\n";
        let err = Config::from_toml_str(text, no_env()).unwrap_err();
        assert_eq!(err.0.len(), 1);
        assert_eq!(err.0[0].key, "config");
        assert!(err.0[0].message.contains("line 3"), "{}", err.0[0].message);
        assert!(!err.to_string().contains(SECRET));
    }

    #[test]
    fn env_overrides_a_nested_key_and_wins_over_the_file() {
        let vars = env(&[(
            "PORTCULLIS__SERVER__PUBLIC_URL",
            "https://other.example.com",
        )]);
        let config = Config::from_toml_str(PROD, vars).unwrap();
        assert_eq!(config.public_origin(), "https://other.example.com");
    }

    #[test]
    fn env_overrides_an_array_a_bool_and_an_array_element() {
        let vars = env(&[
            ("PORTCULLIS__OIDC__SCOPES", r#"["openid","groups"]"#),
            ("PORTCULLIS__OIDC__USERINFO", "false"),
            ("PORTCULLIS__ROUTES__0__UPSTREAM", "http://10.0.0.7:8000"),
            ("PORTCULLIS__ROUTES__0__REQUIRE_ROLES", r#"["admin"]"#),
        ]);
        let config = Config::from_toml_str(PROD, vars).unwrap();
        assert_eq!(config.oidc.scopes, ["openid", "groups"]);
        assert!(!config.oidc.userinfo);
        assert_eq!(config.routes[0].upstream.as_str(), "http://10.0.0.7:8000/");
        assert_eq!(config.routes[0].require_roles, ["admin"]);
    }

    #[test]
    fn env_can_supply_a_whole_missing_key() {
        let text = PROD.replace("client_secret = \"s3cr3t-client-value\"\n", "");
        let vars = env(&[("PORTCULLIS__OIDC__CLIENT_SECRET", "from-env")]);
        let config = Config::from_toml_str(&text, vars).unwrap();
        assert_eq!(config.oidc.client_secret.expose(), "from-env");
    }

    #[test]
    fn env_string_fields_keep_numeric_looking_values() {
        let vars = env(&[
            ("PORTCULLIS__OIDC__CLIENT_ID", "12345"),
            ("PORTCULLIS__OIDC__CLIENT_SECRET", "true"),
        ]);
        let config = Config::from_toml_str(PROD, vars).unwrap();
        assert_eq!(config.oidc.client_id, "12345");
        assert_eq!(config.oidc.client_secret.expose(), "true");
    }

    #[test]
    fn only_double_underscore_prefixed_variables_count() {
        let vars = env(&[
            ("PORTCULLIS_CONFIG", "/etc/portcullis.toml"),
            ("PORTCULLIS_SERVER__LISTEN", "not an address"),
            ("portcullis__server__listen", "not an address"),
            ("HOME", "/root"),
        ]);
        let config = Config::from_toml_str(PROD, vars).unwrap();
        assert_eq!(config.server.listen.to_string(), "127.0.0.1:8080");
    }

    #[test]
    fn env_override_problems_are_reported_under_the_variable_name() {
        let vars = env(&[
            ("PORTCULLIS__SERVER____LISTEN", "x"),
            ("PORTCULLIS__OIDC__ISSUER__X", "y"),
            ("PORTCULLIS__ROUTES__5__PREFIX", "/z/"),
        ]);
        let issues = issues(Config::from_toml_str(PROD, vars));
        let keys: Vec<&str> = issues.iter().map(|i| i.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "PORTCULLIS__OIDC__ISSUER__X",
                "PORTCULLIS__ROUTES__5__PREFIX",
                "PORTCULLIS__SERVER____LISTEN",
            ]
        );
    }

    #[test]
    fn env_unknown_key_is_reported_like_a_file_key() {
        let vars = env(&[("PORTCULLIS__SERVER__LISTN", "127.0.0.1:1")]);
        let message = expect_issue(Config::from_toml_str(PROD, vars), "server.listn");
        assert_eq!(message, "unknown key");
    }

    /// [`PROD`] as environment variables: a complete config without a file.
    fn prod_env() -> Vec<(String, String)> {
        env(&[
            ("PORTCULLIS__SERVER__PUBLIC_URL", "https://app.example.com"),
            (
                "PORTCULLIS__OIDC__ISSUER",
                "https://idp.example.com/realms/demo",
            ),
            ("PORTCULLIS__OIDC__CLIENT_ID", "portal"),
            ("PORTCULLIS__OIDC__CLIENT_SECRET", SECRET),
            (
                "PORTCULLIS__SESSION__ENCRYPTION_KEYS",
                &format!("[\"{KEY}\"]"),
            ),
        ])
    }

    #[test]
    fn env_alone_is_a_complete_config_with_routes() {
        let mut vars = prod_env();
        // Eleven routes: `ROUTES__10` must come after `ROUTES__9`, not after `ROUTES__1`.
        for i in 0..=10 {
            vars.push((
                format!("PORTCULLIS__ROUTES__{i}__PREFIX"),
                format!("/r{i}/"),
            ));
            vars.push((
                format!("PORTCULLIS__ROUTES__{i}__UPSTREAM"),
                format!("http://10.0.0.{i}:8000"),
            ));
        }
        vars.push((
            "PORTCULLIS__ROUTES__3__REQUIRE_ROLES".into(),
            r#"["admin"]"#.into(),
        ));
        vars.reverse();
        let config = Config::from_env(vars).unwrap();
        assert_eq!(config.oidc.client_secret.expose(), SECRET);
        assert_eq!(config.routes.len(), 11);
        for (i, route) in config.routes.iter().enumerate() {
            assert_eq!(route.prefix, format!("/r{i}/"));
            assert_eq!(route.upstream.as_str(), format!("http://10.0.0.{i}:8000/"));
        }
        assert_eq!(config.routes[3].require_roles, ["admin"]);
    }

    #[test]
    fn env_without_the_required_keys_names_each_of_them() {
        let keys: Vec<String> = issues(Config::from_env(no_env()))
            .into_iter()
            .map(|i| i.key)
            .collect();
        for key in [
            "server.public_url",
            "oidc.issuer",
            "oidc.client_id",
            "oidc.client_secret",
        ] {
            assert!(keys.iter().any(|k| k == key), "{key} not in {keys:?}");
        }
    }

    #[test]
    fn env_routes_as_one_toml_array_of_inline_tables() {
        let mut vars = prod_env();
        vars.push((
            "PORTCULLIS__ROUTES".into(),
            r#"[{ prefix = "/api/", upstream = "http://api:8080" }, { prefix = "/pub/", upstream = "http://pub:8080", token = "none" }]"#.into(),
        ));
        // An element override applies on top of the whole array.
        vars.push(("PORTCULLIS__ROUTES__1__STRIP_PREFIX".into(), "true".into()));
        let config = Config::from_env(vars).unwrap();
        assert_eq!(config.routes.len(), 2);
        assert_eq!(config.routes[0].upstream.as_str(), "http://api:8080/");
        assert!(config.routes[1].strip_prefix);
    }

    #[test]
    fn env_appends_routes_after_the_file_ones() {
        let vars = env(&[
            ("PORTCULLIS__ROUTES__1__PREFIX", "/more/"),
            ("PORTCULLIS__ROUTES__1__UPSTREAM", "http://10.0.0.9:8000"),
        ]);
        let config = Config::from_toml_str(PROD, vars).unwrap();
        assert_eq!(config.routes.len(), 2);
        assert_eq!(config.routes[0].prefix, "/api/");
        assert_eq!(config.routes[1].prefix, "/more/");
    }

    #[test]
    fn env_route_indices_with_a_gap_are_reported() {
        let mut vars = prod_env();
        vars.push(("PORTCULLIS__ROUTES__0__PREFIX".into(), "/a/".into()));
        vars.push(("PORTCULLIS__ROUTES__0__UPSTREAM".into(), "http://a".into()));
        vars.push(("PORTCULLIS__ROUTES__2__PREFIX".into(), "/c/".into()));
        let message = expect_issue(Config::from_env(vars), "PORTCULLIS__ROUTES__2__PREFIX");
        assert!(message.contains("without gaps"), "{message}");
    }

    #[test]
    fn stray_portcullis_variables_are_listed_with_a_suggestion() {
        let stray = stray_env_vars(env(&[
            ("PORTCULLIS_OIDC__ISSUER", "https://idp"),
            ("PORTCULLIS_SESSION_STORE_PASSWORD_FILE", "/run/x"),
            ("portcullis__server__listen", "0.0.0.0:8080"),
            ("PORTCULLIS_ROUTES_0_PREFIX", "/api/"),
            ("PORTCULLIS_COLOUR", "blue"),
            // Not stray: overrides (an unknown key is a load error instead),
            // the binary's own and the repository tools' variables, others.
            ("PORTCULLIS__SERVER__LISTN", "x"),
            ("PORTCULLIS__OIDC__CLIENT_SECRET", SECRET),
            ("PORTCULLIS_CONFIG", "/etc/portcullis.toml"),
            ("PORTCULLIS_BIN", "target/debug/portcullis"),
            ("PORTCULLISH", "x"),
            ("HOME", "/root"),
        ]));
        let found: Vec<(&str, &str)> = stray
            .iter()
            .map(|i| {
                let hint = i.message.split("did you mean ").nth(1).unwrap_or("");
                (i.key.as_str(), hint.trim_end_matches('?'))
            })
            .collect();
        assert_eq!(
            found,
            [
                ("PORTCULLIS_COLOUR", ""),
                ("PORTCULLIS_OIDC__ISSUER", "PORTCULLIS__OIDC__ISSUER"),
                (
                    "PORTCULLIS_ROUTES_0_PREFIX",
                    "PORTCULLIS__ROUTES__0__PREFIX"
                ),
                (
                    "PORTCULLIS_SESSION_STORE_PASSWORD_FILE",
                    "PORTCULLIS__SESSION__STORE_PASSWORD_FILE"
                ),
                ("portcullis__server__listen", "PORTCULLIS__SERVER__LISTEN"),
            ]
        );
        assert!(stray.iter().all(|i| !i.message.contains(SECRET)));
    }

    /// The `[[routes]]` entry of [`PROD`].
    const PROD_ROUTE: &str =
        "[[routes]]\nprefix = \"/api/\"\nupstream = \"http://127.0.0.1:4111\"\n";

    #[test]
    fn unknown_keys_are_reported_with_their_full_path() {
        let more = r#"
[[routes]]
prefix = "/b/"
upstream = "http://b"
bogus = true

[static]
dir = "dist"
spa = true
"#;
        let text =
            format!("color = 1\n{PROD}{more}").replace("[server]\n", "[server]\nlistn = \"x\"\n");
        let issues = issues(Config::from_toml_str(&text, no_env()));
        let mut keys: Vec<&str> = issues.iter().map(|i| i.key.as_str()).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            ["color", "routes[1].bogus", "server.listn", "static.spa"]
        );
        assert!(issues.iter().all(|i| i.message == "unknown key"));
    }

    #[test]
    fn a_nested_unknown_table_is_one_unknown_key() {
        let text = PROD.replace("[oidc]", "[oidc.extra]\na = 1\n[oidc]");
        let message = expect_issue(Config::from_toml_str(&text, no_env()), "oidc.extra");
        assert_eq!(message, "unknown key");
    }

    #[test]
    fn sections_of_the_wrong_type_are_reported() {
        let text = format!("csrf = 5\n{PROD}");
        let message = expect_issue(Config::from_toml_str(&text, no_env()), "csrf");
        assert_eq!(message, "expected a table, found integer");

        let without_routes = PROD.replace(PROD_ROUTE, "");
        let text = format!("routes = \"api\"\n{without_routes}");
        expect_issue(Config::from_toml_str(&text, no_env()), "routes");
        let text = format!("routes = [1]\n{without_routes}");
        expect_issue(Config::from_toml_str(&text, no_env()), "routes[0]");
    }

    #[test]
    fn display_lists_one_issue_per_line() {
        let err = ConfigError(vec![
            ConfigIssue::new("server.public_url", "missing required key"),
            ConfigIssue::new("routes[1].upstream", "must be an http or https URL"),
        ]);
        assert_eq!(
            err.to_string(),
            "server.public_url: missing required key\n\
             routes[1].upstream: must be an http or https URL"
        );
        assert_eq!(
            err.0[0].to_string(),
            "server.public_url: missing required key"
        );
    }
}
