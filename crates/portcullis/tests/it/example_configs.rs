//! The sample configs in `examples/*.toml` are valid: each goes through
//! `Config::from_toml_str` with its secrets supplied the documented way
//! (`PORTCULLIS__…` environment variables).

use std::path::PathBuf;

use portcullis::config::{Config, Profile};

fn examples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

/// The secrets each example expects from the environment.
fn secret_env() -> Vec<(String, String)> {
    vec![
        (
            "PORTCULLIS__OIDC__CLIENT_SECRET".into(),
            "placeholder-client-secret".into(),
        ),
        (
            "PORTCULLIS__SESSION__ENCRYPTION_KEYS".into(),
            format!("[\"{}\"]", portcullis::session::random_key_base64()),
        ),
    ]
}

fn load(name: &str) -> Config {
    let path = examples_dir().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
    Config::from_toml_str(&text, secret_env()).unwrap_or_else(|e| panic!("{name}:\n{e}"))
}

#[test]
fn every_example_config_is_valid() {
    let mut names: Vec<String> = std::fs::read_dir(examples_dir())
        .expect("examples/")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".toml"))
        .collect();
    names.sort();
    // Every sample config in examples/ must load, these at least: one per
    // provider guide in docs/providers/, and the local oidc-provider.
    for expected in [
        "auth0.toml",
        "authentik.toml",
        "cognito.toml",
        "dex.toml",
        "django-oauth-toolkit.toml",
        "entra-id.toml",
        "gitlab.toml",
        "google.toml",
        "keycloak.toml",
        "oidc-provider.toml",
        "okta.toml",
        "zitadel.toml",
    ] {
        assert!(names.iter().any(|n| n == expected), "{expected} missing");
    }
    for name in &names {
        let config = load(name);
        assert_eq!(
            config.oidc.client_secret.expose(),
            "placeholder-client-secret"
        );
    }
}

#[test]
fn examples_say_what_their_idp_needs() {
    let keycloak = load("keycloak.toml");
    assert_eq!(keycloak.oidc.roles_claim, "realm_access.roles");
    assert_eq!(keycloak.server.profile, Profile::Prod);
    let entra = load("entra-id.toml");
    assert!(entra.oidc.issuer.ends_with("/v2.0"));
    assert!(!entra.oidc.userinfo);
    let auth0 = load("auth0.toml");
    assert!(auth0.oidc.issuer.ends_with('/'));
    // Without an audience Auth0's access token is not a JWT for the API.
    assert!(param(&auth0.oidc.extra_auth_params, "audience").is_some());
    let google = load("google.toml");
    // Google's refresh token comes from access_type=offline (it refuses the
    // offline_access scope), and on every login only with prompt=consent.
    assert_eq!(
        param(&google.oidc.extra_auth_params, "access_type"),
        Some("offline")
    );
    assert_eq!(
        param(&google.oidc.extra_auth_params, "prompt"),
        Some("consent")
    );
    // Providers that refuse a scope they do not know.
    for name in [
        "google.toml",
        "cognito.toml",
        "gitlab.toml",
        "django-oauth-toolkit.toml",
    ] {
        let config = load(name);
        assert!(
            !config.oidc.scopes.iter().any(|s| s == "offline_access"),
            "{name} must not ask for offline_access"
        );
    }
    assert_eq!(load("cognito.toml").oidc.roles_claim, "cognito:groups");
    assert!(load("authentik.toml").oidc.issuer.ends_with('/'));
    let dex = load("dex.toml");
    assert!(dex.oidc.scopes.iter().any(|s| s == "groups"));
    let local = load("oidc-provider.toml");
    assert_eq!(local.server.profile, Profile::Dev);
    assert_eq!(local.session.cookie_name, "portcullis");
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}
