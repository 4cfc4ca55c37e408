//! `portcullis check` and `serve` refuse bad config: every problem printed
//! with its key path, exit code 1.

use std::process::Command;

use crate::portcullis;

const BAD: &str = r#"
[server]
public_url = "http://app.example.com"
listen = "127.0.0.1:0"
colour = "blue"

[oidc]
issuer = "https://idp.example.com"
client_id = "portal"

[session]
idle_timeout = "half an hour"
store = "memory"

[[routes]]
prefix = "/api/"
upstream = "not a url"
"#;

#[test]
fn check_prints_every_problem_with_its_key_and_exits_1() {
    let out = portcullis(&["check"], BAD);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for key in [
        "server.public_url",
        "server.colour",
        "oidc.client_secret",
        "session.idle_timeout",
        "routes[0].upstream",
    ] {
        assert!(stderr.contains(key), "{key} missing from:\n{stderr}");
    }
}

#[test]
fn serve_refuses_the_same_config() {
    let out = portcullis(&["serve"], BAD);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("server.public_url"));
}

#[test]
fn check_accepts_a_good_config() {
    let good = r#"
[server]
public_url = "https://app.example.com"

[oidc]
issuer = "https://idp.example.com"
client_id = "portal"
client_secret = "s3cret"

[session]
store = "memory"
"#;
    let out = portcullis(&["check"], good);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("s3cret"));
}

#[test]
fn keygen_prints_a_32_byte_base64_key() {
    let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .arg("keygen")
        .output()
        .expect("run keygen");
    assert!(out.status.success());
    let key = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(key.len(), 44, "{key}");
}
