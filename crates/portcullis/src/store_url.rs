//! What a `session.store` URL says, read without opening the store: whether
//! its records outlive the process, whether its PostgreSQL TLS options hang
//! together, and the URL with its password masked. A leaf, so that config
//! validation and the stores read one rule without `config` and `session`
//! importing each other.

/// Whether `url` names a store whose records outlive the process.
pub fn is_persistent(url: &str) -> bool {
    url != "memory" && !url.contains(":memory:") && !url.contains("mode=memory")
}

/// Drop credentials from a store URL before it is shown anywhere.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        Ok(_) => url.to_string(),
        // The sentinel and cluster forms list several hosts, which `url`
        // refuses: mask the user-info's password in the text instead.
        Err(_) => redact_userinfo(url),
    }
}

/// `scheme://user:***@hosts…` for a URL `url` cannot parse.
fn redact_userinfo(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    match authority
        .rfind('@')
        .map(|at| (&authority[..at], &rest[at..]))
    {
        Some((userinfo, hosts)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{scheme}://{user}:***{hosts}"),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

/// URL keys sqlx reads for the TLS mode and the CA file (with its aliases).
const SSLMODE: [&str; 2] = ["sslmode", "ssl-mode"];
pub(crate) const SSLROOTCERT: [&str; 3] = ["sslrootcert", "ssl-root-cert", "ssl-ca"];
const SSL_MODES: [&str; 6] = [
    "disable",
    "allow",
    "prefer",
    "require",
    "verify-ca",
    "verify-full",
];

pub(crate) fn query_value<const N: usize>(url: &url::Url, keys: [&str; N]) -> Option<String> {
    url.query_pairs()
        .filter(|(k, _)| keys.contains(&k.as_ref()))
        .map(|(_, v)| v.into_owned())
        .last()
}

/// What is wrong with the TLS options of a `postgres://` URL, if anything.
/// `sslmode` is libpq's (default `prefer`); `sslrootcert=PATH` names the CA
/// the server certificate must chain to. Unlike libpq, sqlx checks that CA
/// only with `verify-ca` or `verify-full` (`require` accepts any
/// certificate), so a CA with a weaker mode is refused rather than silently
/// ignored. The message never echoes the URL (it may carry a password).
pub(crate) fn postgres_tls_problem(url: &url::Url) -> Option<String> {
    let mode = query_value(url, SSLMODE);
    if let Some(mode) = &mode
        && !SSL_MODES.contains(&mode.as_str())
    {
        return Some(format!(
            "sslmode={mode} is unknown (expected one of {})",
            SSL_MODES.join(", ")
        ));
    }
    let verifies = matches!(mode.as_deref(), Some("verify-ca" | "verify-full"));
    match query_value(url, SSLROOTCERT) {
        Some(path) if path.is_empty() => Some("sslrootcert needs a file path".into()),
        Some(_) if !verifies => Some(
            "sslrootcert is only checked with sslmode=verify-full or verify-ca; \
             add sslmode=verify-full"
                .into(),
        ),
        _ => None,
    }
}

#[cfg(test)]
mod redact_tests {
    use super::redact_url;

    /// A store URL with several hosts is not a URL the `url` crate parses;
    /// its password must be masked all the same (errors, `check --print`).
    #[test]
    fn multi_host_store_url_password_is_not_leaked() {
        for (url, expected) in [
            (
                "redis+sentinel://u:hunter2@s1:26379,s2:26379/mymaster",
                "redis+sentinel://u:***@s1:26379,s2:26379/mymaster",
            ),
            (
                "rediss+cluster://:p%40ss@n1:7000,n2:7001/?protocol=resp3",
                "rediss+cluster://:***@n1:7000,n2:7001/?protocol=resp3",
            ),
            ("redis://:hunter2@cache:6379/0", "redis://:***@cache:6379/0"),
            (
                "redis+cluster://n1:7000,n2:7001",
                "redis+cluster://n1:7000,n2:7001",
            ),
            (
                "redis+sentinel://u@s1:1,s2:2/m",
                "redis+sentinel://u@s1:1,s2:2/m",
            ),
        ] {
            assert_eq!(redact_url(url), expected);
        }
    }
}
