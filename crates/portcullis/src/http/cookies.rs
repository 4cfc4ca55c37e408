//! The cookies the gateway owns: session, login-in-flight and CSRF, with the
//! attributes of the active profile (`__Host-`, Secure, HttpOnly, SameSite).

use axum_extra::extract::cookie::{Cookie, SameSite};

use crate::config::Config;

/// Name of the short-lived cookie that binds a login to this browser.
pub(crate) fn login_cookie_name(config: &Config) -> String {
    format!("{}-login", config.session.cookie_name)
}

/// Every cookie name the gateway owns (stripped before proxying).
pub(crate) fn owned_names(config: &Config) -> [String; 3] {
    [
        config.session.cookie_name.clone(),
        login_cookie_name(config),
        config.csrf.cookie.clone(),
    ]
}

fn base(config: &Config, name: String, value: String, http_only: bool) -> Cookie<'static> {
    let mut c = Cookie::new(name, value);
    c.set_path("/");
    c.set_http_only(http_only);
    c.set_secure(config.secure_cookies());
    c.set_same_site(SameSite::Lax);
    c
}

pub(crate) fn session(config: &Config, value: &str) -> Cookie<'static> {
    let mut c = base(
        config,
        config.session.cookie_name.clone(),
        value.to_string(),
        true,
    );
    c.set_max_age(max_age(config.session.absolute_timeout.as_secs() as i64));
    c
}

pub(crate) fn login(config: &Config, value: &str) -> Cookie<'static> {
    let mut c = base(config, login_cookie_name(config), value.to_string(), true);
    c.set_max_age(max_age(crate::http::login_cookie::LOGIN_TTL));
    c
}

/// The CSRF cookie is readable by JavaScript on purpose: the SPA echoes it in a header.
pub(crate) fn csrf(config: &Config, value: &str) -> Cookie<'static> {
    let mut c = base(config, config.csrf.cookie.clone(), value.to_string(), false);
    c.set_max_age(max_age(config.session.absolute_timeout.as_secs() as i64));
    c
}

/// A cookie that deletes `name` (same attributes, empty, Max-Age=0).
pub(crate) fn removal(config: &Config, name: String, http_only: bool) -> Cookie<'static> {
    let mut c = base(config, name, String::new(), http_only);
    c.set_max_age(max_age(0));
    c
}

fn max_age(secs: i64) -> cookie::time::Duration {
    cookie::time::Duration::seconds(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(profile: &str, public_url: &str) -> Config {
        let toml = format!(
            r#"
[server]
public_url = "{public_url}"
profile = "{profile}"
[oidc]
issuer = "https://idp.example.com"
client_id = "c"
client_secret = "s"
[session]
store = "memory"
"#
        );
        Config::from_toml_str(&toml, Vec::new()).expect("valid config")
    }

    #[test]
    fn prod_session_cookie_is_host_prefixed_secure_httponly_lax() {
        let c = session(&config("prod", "https://app.example.com"), "v").to_string();
        assert!(c.starts_with("__Host-portcullis=v"), "{c}");
        for attr in ["HttpOnly", "Secure", "SameSite=Lax", "Path=/"] {
            assert!(c.contains(attr), "{attr} missing: {c}");
        }
        assert!(
            !c.contains("Domain"),
            "__Host- cookies must not carry Domain: {c}"
        );
    }

    #[test]
    fn dev_session_cookie_on_http_loopback_is_not_secure() {
        let c = session(&config("dev", "http://127.0.0.1:8080"), "v").to_string();
        assert!(c.starts_with("portcullis=v"), "{c}");
        assert!(c.contains("HttpOnly") && !c.contains("Secure"), "{c}");
    }

    #[test]
    fn csrf_cookie_is_readable_by_scripts() {
        let cfg = config("prod", "https://app.example.com");
        let c = csrf(&cfg, "t").to_string();
        assert!(c.starts_with("XSRF-TOKEN=t") && c.contains("Secure"), "{c}");
        assert!(!c.contains("HttpOnly"), "{c}");
        let login = login(&cfg, "b").to_string();
        assert!(login.starts_with("__Host-portcullis-login=b") && login.contains("Max-Age=600"));
    }
}
