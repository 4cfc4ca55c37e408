//! Property tests for config loading: whatever the file or the environment
//! holds, `Config::from_toml_str` answers `Ok` or a list of issues, never a
//! panic (an operator's typo must not crash the binary with a backtrace).

use proptest::prelude::*;

use super::{Config, reference::KEYS};

/// A valid file to start from; the properties change one value in it.
const BASE: &str = r#"
[server]
public_url = "https://app.example.com"
profile = "prod"
[oidc]
issuer = "https://idp.example.com"
client_id = "c"
client_secret = "s"
[session]
store = "memory"
[[routes]]
prefix = "/api/"
upstream = "http://127.0.0.1:9000"
"#;

/// TOML values of every type, including the edges of each.
fn toml_value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|f| format!("{f:?}")),
        Just("inf".to_string()),
        Just("nan".to_string()),
        Just("18446744073709551616".to_string()),
        any::<bool>().prop_map(|b| b.to_string()),
        "[a-z0-9 ./:%*@\\[\\]-]{0,24}".prop_map(|s| format!("{s:?}")),
        "\\PC{0,16}".prop_map(|s| format!("{s:?}")),
        Just("\"\"".to_string()),
        Just("\"0s\"".to_string()),
        Just("\"99999999999999h\"".to_string()),
        Just("1979-05-27T07:32:00Z".to_string()),
        Just("[]".to_string()),
        Just("[1, \"a\", true]".to_string()),
        Just("{}".to_string()),
        Just("{ a = 1 }".to_string()),
        Just("[[]]".to_string()),
    ]
}

fn key_path() -> impl Strategy<Value = (&'static str, &'static str)> {
    proptest::sample::select(KEYS.iter().map(|k| (k.section, k.name)).collect::<Vec<_>>())
}

/// `BASE` with `section.name = value` set (in its own table, or in the route).
fn with_key(section: &str, name: &str, value: &str) -> String {
    if section == "routes" {
        format!("{BASE}{name} = {value}\n")
    } else {
        format!("{BASE}[{section}]\n{name} = {value}\n")
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,256}") {
        let _ = Config::from_toml_str(&text, Vec::new());
    }

    #[test]
    fn toml_ish_text_never_panics(text in "[\\[\\]a-z_.=\"' 0-9\\n#{},:/-]{0,256}") {
        let _ = Config::from_toml_str(&text, Vec::new());
    }

    #[test]
    fn any_value_for_any_key_never_panics((section, name) in key_path(), value in toml_value()) {
        let _ = Config::from_toml_str(&with_key(section, name, &value), Vec::new());
    }

    #[test]
    fn any_environment_value_never_panics(
        (section, name) in key_path(),
        value in "\\PC{0,32}",
        index in 0..3usize,
    ) {
        let var = if section == "routes" {
            format!("PORTCULLIS__ROUTES__{index}__{}", name.to_ascii_uppercase())
        } else {
            format!("PORTCULLIS__{}__{}", section.to_ascii_uppercase(), name.to_ascii_uppercase())
        };
        let _ = Config::from_toml_str(BASE, vec![(var, value)]);
    }
}
