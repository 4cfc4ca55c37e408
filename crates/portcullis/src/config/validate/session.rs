//! `[session]`: the store, the session cookie, timeouts and encryption keys.

use std::time::Duration;

use toml::Value;
use url::Url;

use super::{Reported, Validator};
use crate::config::decode_key;
use crate::config::{Profile, Secret, SessionConfig, load::RawSession};

const KEY_SHAPE: &str = "key must be 32 bytes of base64";

impl Validator<'_> {
    pub(super) fn session(&mut self, raw: RawSession) -> Option<SessionConfig> {
        let store = self
            .string_or("session.store", raw.store, "sqlite://portcullis.db")
            .and_then(|s| self.store_password(s, raw.store_password_file))
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
        let refresh_on_401_interval = self.duration_or(
            "session.refresh_on_401_interval",
            raw.refresh_on_401_interval,
            Duration::from_secs(30),
            true,
        );
        if let (Some(idle), Some(absolute)) = (idle_timeout, absolute_timeout)
            && idle > absolute
        {
            self.issue(
                "session.idle_timeout",
                "must not be longer than session.absolute_timeout",
            );
        }
        let encryption_keys = self.encryption_keys(raw.encryption_keys, raw.encryption_keys_file);
        if let (Some(store), Some(keys), Some(Profile::Prod)) =
            (&store, &encryption_keys, self.profile)
            && keys.is_empty()
            && crate::store_url::is_persistent(store)
        {
            self.issue(
                "session.encryption_keys",
                "required with a persistent session store in the prod profile \
                     (records are encrypted at rest; generate a key with `portcullis keygen`; \
                     set encryption_keys or encryption_keys_file, or env \
                     PORTCULLIS__SESSION__ENCRYPTION_KEYS or PORTCULLIS__SESSION__ENCRYPTION_KEYS_FILE)",
            );
        }
        let key_prefix = self.string_or("session.key_prefix", raw.key_prefix, "portcullis:");
        let store_timeout = self.duration_or(
            "session.store_timeout",
            raw.store_timeout,
            Duration::from_secs(2),
            true,
        );
        let cache = self.bool_or("session.cache", raw.cache, true);
        let cache_ttl = self.duration_or(
            "session.cache_ttl",
            raw.cache_ttl,
            Duration::from_secs(2),
            true,
        );
        let cache_size = self.count_or("session.cache_size", raw.cache_size, 10_000);
        let migrate = self.bool_or("session.migrate", raw.migrate, true);
        let keep_id_token = self.bool_or("session.keep_id_token", raw.keep_id_token, true);
        Some(SessionConfig {
            store: store?,
            cookie_name: cookie_name?,
            idle_timeout: idle_timeout?,
            absolute_timeout: absolute_timeout?,
            refresh_before: refresh_before?,
            refresh_on_401_interval: refresh_on_401_interval?,
            keep_id_token: keep_id_token?,
            encryption_keys: encryption_keys?,
            key_prefix: key_prefix?,
            store_timeout: store_timeout?,
            cache: cache?,
            cache_ttl: cache_ttl?,
            cache_size: cache_size?,
            migrate: migrate?,
        })
    }

    /// `store` with the password from `session.store_password_file` put into
    /// its user-info, percent-encoded; `store` unchanged without the file.
    fn store_password(&mut self, store: String, file: Option<Value>) -> Option<String> {
        const FILE_KEY: &str = "session.store_password_file";
        let path = match self.string(FILE_KEY, file) {
            Ok(Some(path)) => path,
            Ok(None) => return Some(store),
            Err(Reported) => return None,
        };
        let text = self.read_file(FILE_KEY, &path)?;
        let password = text.trim();
        if password.is_empty() {
            return self.reject(FILE_KEY, format!("{path} is empty"));
        }
        match with_password(&store, password) {
            Ok(store) => Some(store),
            Err(message) => self.reject(FILE_KEY, message),
        }
    }

    /// A positive integer.
    fn count_or(&mut self, key: &str, value: Option<Value>, default: usize) -> Option<usize> {
        match value {
            None => Some(default),
            Some(Value::Integer(n)) if n > 0 => usize::try_from(n).ok(),
            Some(_) => self.reject(key, "expected a positive integer"),
        }
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
                format!(
                    "a {prefix} cookie needs an https server.public_url \
                     (on http use e.g. \"portcullis\")"
                ),
            ),
            _ => Some(name),
        }
    }

    fn encryption_keys(&mut self, list: Option<Value>, file: Option<Value>) -> Option<Vec<Secret>> {
        const KEY: &str = "session.encryption_keys";
        const FILE_KEY: &str = "session.encryption_keys_file";
        match (self.strings(KEY, list), self.string(FILE_KEY, file)) {
            (Err(Reported), _) | (_, Err(Reported)) => None,
            (Ok(Some(_)), Ok(Some(_))) => self.reject(
                KEY,
                "set only one of encryption_keys and encryption_keys_file",
            ),
            (Ok(Some(keys)), Ok(None)) if keys.is_empty() => {
                self.reject(KEY, "must contain at least one key")
            }
            (Ok(Some(keys)), Ok(None)) => self.each(KEY, keys, |v, key, k| match is_key(&k) {
                true => Some(Secret::new(k)),
                false => v.reject(key, KEY_SHAPE),
            }),
            (Ok(None), Ok(Some(path))) => self.keys_file(FILE_KEY, &path),
            // Optional until records are sealed at rest (the Redis/PostgreSQL work);
            // keys that are given are validated now so configs stay valid then.
            (Ok(None), Ok(None)) => Some(Vec::new()),
        }
    }

    /// One key per non-empty line; each bad line is reported by number.
    fn keys_file(&mut self, key: &str, path: &str) -> Option<Vec<Secret>> {
        let text = self.read_file(key, path)?;
        let mut keys = Vec::new();
        let mut ok = true;
        for (i, line) in text.lines().enumerate() {
            match line.trim() {
                "" => {}
                k if is_key(k) => keys.push(Secret::new(k)),
                _ => {
                    ok = false;
                    self.issue(key, format!("line {}: {KEY_SHAPE}", i + 1));
                }
            }
        }
        match (ok, keys.is_empty()) {
            (false, _) => None,
            (true, true) => self.reject(key, format!("{path} holds no key")),
            (true, false) => Some(keys),
        }
    }
}

/// An RFC 6265 cookie name: an RFC 9110 token.
pub(super) fn is_cookie_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// A `session.encryption_keys` entry as written, without surrounding space.
fn is_key(text: &str) -> bool {
    decode_key(text).is_some()
}

/// Accepts the store URL schemes the gateway knows. Messages never echo the
/// URL: it may carry a password.
fn store_syntax(store: &str) -> Result<(), String> {
    const HINT: &str = "expected \"memory\", \"sqlite://PATH\", \"sqlite::memory:\", \
        redis://, rediss://, redis+sentinel://, redis+cluster://, rediss+cluster://, \
        postgres:// or postgresql://";
    if store == "memory" {
        return Ok(());
    }
    // A CA on a plaintext Redis URL would look protected and not be.
    let tls = store.starts_with("rediss://") || store.starts_with("rediss+cluster://");
    if store.starts_with("redis") && !tls && has_query_key(store, "cacert") {
        return Err(
            "cacert needs a TLS store URL: use rediss:// or rediss+cluster:// \
             (redis+sentinel:// has no TLS form)"
                .to_owned(),
        );
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
    for scheme in ["redis+cluster://", "rediss+cluster://"] {
        if let Some(rest) = store.strip_prefix(scheme) {
            return match rest.split(['/', '?']).next().unwrap_or("") {
                "" => {
                    Err("redis+cluster store needs seed nodes HOST:PORT[,HOST:PORT...]".to_owned())
                }
                _ => Ok(()),
            };
        }
    }
    let scheme = store.split_once("://").map(|(scheme, _)| scheme);
    match scheme {
        Some("redis" | "rediss" | "postgres" | "postgresql") => match Url::parse(store) {
            Ok(url) if url.host_str().is_some_and(|h| !h.is_empty()) => {
                match crate::store_url::postgres_tls_problem(&url) {
                    Some(problem) if url.scheme().starts_with("postgres") => Err(problem),
                    _ => Ok(()),
                }
            }
            _ => Err(
                "invalid store URL (expected e.g. redis://HOST:PORT/DB or postgres://USER@HOST/DB)"
                    .to_owned(),
            ),
        },
        _ => Err(format!("unsupported store; {HINT}")),
    }
}

/// `store` with `password` in its user-info (`scheme://[user]:password@…`).
/// Works on the text, not a parsed URL, because the sentinel and cluster forms
/// list several hosts. Messages never echo the URL or the password.
fn with_password(store: &str, password: &str) -> Result<String, String> {
    const SCHEMES: &[&str] = &[
        "redis",
        "rediss",
        "redis+sentinel",
        "redis+cluster",
        "rediss+cluster",
        "postgres",
        "postgresql",
    ];
    let Some((scheme, rest)) = store.split_once("://").filter(|(s, _)| SCHEMES.contains(s)) else {
        return Err("needs a Redis or PostgreSQL session.store URL".to_owned());
    };
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let (user, hosts) = match authority.rfind('@') {
        Some(at) => (&authority[..at], &rest[at + 1..]),
        None => ("", rest),
    };
    if user.contains(':') {
        return Err(
            "session.store already has a password; set it in the URL or in the file, not both"
                .to_owned(),
        );
    }
    let encoded: String = password
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect();
    Ok(format!("{scheme}://{user}:{encoded}@{hosts}"))
}

/// Whether the query part of `store` (a URL `url` may not parse) has `key`.
fn has_query_key(store: &str, key: &str) -> bool {
    let query = store.split_once('?').map_or("", |(_, q)| q);
    let query = query.split('#').next().unwrap_or("");
    url::form_urlencoded::parse(query.as_bytes()).any(|(k, _)| k == key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::config::load::tests::{
        KEY, PROD, dev_with, expect_issue, lit, prod_with, temp_file,
    };

    /// A password with every kind of URL-special character.
    const STORE_PW: &str = "p@ss:w/rd?#%é x";

    fn with_store_password(
        store: &str,
        file: &tempfile::NamedTempFile,
    ) -> Result<Config, crate::config::ConfigError> {
        let path = file.path().to_str().unwrap();
        prod_with(&[
            ("session.store", &lit(store)),
            ("session.store_password_file", &lit(path)),
        ])
    }

    #[test]
    fn store_password_file_goes_into_the_url_percent_encoded() {
        let file = temp_file(&format!("{STORE_PW}\n"));
        for (store, expected) in [
            (
                "redis://cache:6379/0",
                "redis://:p%40ss%3Aw%2Frd%3F%23%25%C3%A9%20x@cache:6379/0",
            ),
            (
                "rediss://gw@cache:6380",
                "rediss://gw:p%40ss%3Aw%2Frd%3F%23%25%C3%A9%20x@cache:6380",
            ),
            (
                "redis+sentinel://s1:26379,s2:26379/mymaster",
                "redis+sentinel://:p%40ss%3Aw%2Frd%3F%23%25%C3%A9%20x@s1:26379,s2:26379/mymaster",
            ),
            (
                "postgres://gw@db/portcullis?sslmode=require",
                "postgres://gw:p%40ss%3Aw%2Frd%3F%23%25%C3%A9%20x@db/portcullis?sslmode=require",
            ),
        ] {
            let c = with_store_password(store, &file).unwrap();
            assert_eq!(c.session.store, expected);
        }
        // The Redis client reads back exactly the password in the file.
        let c = with_store_password("redis://gw@cache:6379/0", &file).unwrap();
        let info =
            redis::IntoConnectionInfo::into_connection_info(c.session.store.as_str()).unwrap();
        assert_eq!(info.redis.password.as_deref(), Some(STORE_PW));
        assert_eq!(info.redis.username.as_deref(), Some("gw"));
    }

    #[test]
    fn store_password_file_rules() {
        let file = temp_file(STORE_PW);
        let message = expect_issue(
            with_store_password("redis://:inline@cache:6379", &file),
            "session.store_password_file",
        );
        assert!(message.contains("not both"), "{message}");
        assert!(
            !message.contains("inline") && !message.contains(STORE_PW),
            "{message}"
        );
        expect_issue(
            with_store_password("sqlite://portcullis.db", &file),
            "session.store_password_file",
        );
        let empty = temp_file("  \n");
        expect_issue(
            with_store_password("redis://cache:6379", &empty),
            "session.store_password_file",
        );
        let missing = prod_with(&[
            ("session.store", "\"redis://cache:6379\""),
            (
                "session.store_password_file",
                "\"/nonexistent/portcullis-pw\"",
            ),
        ]);
        let message = expect_issue(missing, "session.store_password_file");
        assert!(message.contains("/nonexistent/portcullis-pw"), "{message}");
    }

    #[test]
    fn store_schemes() {
        for ok in [
            "memory",
            "sqlite://portcullis.db",
            "sqlite::memory:",
            "redis://127.0.0.1:6379/0",
            "rediss://:pw@cache.example.com:6380/1",
            "redis+sentinel://s1:26379,s2:26379/mymaster",
            "redis+cluster://n1:7000,n2:7001",
            "rediss+cluster://:pw@n1:7000/?protocol=resp3",
            "postgres://gw@db.example.com/portcullis",
            "postgresql://gw@db/portcullis",
            "postgres://gw@db/p?sslmode=verify-full&sslrootcert=/etc/ssl/db-ca.pem",
            "postgres://gw@db/p?sslmode=verify-ca&sslrootcert=/ca.pem",
            "postgres://gw@db/p?sslmode=require",
            "rediss://:pw@cache:6380/0?cacert=/etc/ssl/redis-ca.pem",
            "rediss+cluster://n1:7000,n2:7000/?cacert=/ca.pem",
        ] {
            let c = prod_with(&[("session.store", &lit(ok))]).unwrap();
            assert_eq!(c.session.store, ok);
        }
        for bad in [
            "mysql://db/x",
            "sqlite://",
            "redis://",
            "redis+cluster://",
            "memory://",
            "portcullis.db",
            "postgres://gw@db/p?sslmode=requir",
            // sqlx would accept any certificate: the CA would be ignored.
            "postgres://gw@db/p?sslmode=require&sslrootcert=/ca.pem",
            "postgres://gw@db/p?sslrootcert=/ca.pem",
            "redis://cache:6379/0?cacert=/ca.pem",
            "redis+cluster://n1:7000/?cacert=/ca.pem",
            "redis+sentinel://s1:26379/mymaster?cacert=/ca.pem",
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
        // No key: refused in prod for a persistent store, fine for memory and in dev.
        let text = PROD.replace(&format!("encryption_keys = [\"{KEY}\"]\n"), "");
        expect_issue(
            Config::from_toml_str(&text, Vec::new()),
            "session.encryption_keys",
        );
        let memory = text.replace("[session]\n", "[session]\nstore = \"memory\"\n");
        let c = Config::from_toml_str(&memory, Vec::new()).expect("memory needs no key");
        assert!(c.session.encryption_keys.is_empty());
        let dev = crate::config::load::tests::DEV
            .replace(&format!("encryption_keys = [\"{KEY}\"]\n"), "");
        let c = Config::from_toml_str(&dev, Vec::new()).expect("dev generates a key");
        assert!(c.session.encryption_keys.is_empty());
    }

    #[test]
    fn store_tuning_keys_have_defaults_and_are_checked() {
        let c = prod_with(&[]).unwrap();
        assert_eq!(c.session.key_prefix, "portcullis:");
        assert_eq!(c.session.store_timeout, Duration::from_secs(2));
        assert!(c.session.cache && c.session.migrate && c.session.keep_id_token);
        assert_eq!(c.session.cache_ttl, Duration::from_secs(2));
        assert_eq!(c.session.cache_size, 10_000);
        let c = prod_with(&[
            ("session.key_prefix", "\"app1:\""),
            ("session.store_timeout", "\"750ms\""),
            ("session.cache", "false"),
            ("session.cache_ttl", "\"5s\""),
            ("session.cache_size", "42"),
            ("session.migrate", "false"),
            ("session.keep_id_token", "false"),
        ])
        .unwrap();
        assert_eq!(c.session.key_prefix, "app1:");
        assert_eq!(c.session.store_timeout, Duration::from_millis(750));
        assert!(!c.session.cache && !c.session.migrate && !c.session.keep_id_token);
        assert_eq!(c.session.cache_ttl, Duration::from_secs(5));
        assert_eq!(c.session.cache_size, 42);
        expect_issue(
            prod_with(&[("session.cache_size", "0")]),
            "session.cache_size",
        );
        expect_issue(prod_with(&[("session.cache", "\"yes\"")]), "session.cache");
        expect_issue(
            prod_with(&[("session.store_timeout", "\"0s\"")]),
            "session.store_timeout",
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
}
