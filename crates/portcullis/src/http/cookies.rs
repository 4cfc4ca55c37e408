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
    c.set_max_age(max_age(crate::http::auth::LOGIN_TTL));
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
