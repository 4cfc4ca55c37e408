//! Configuration without a file (12-factor): `serve` and `check` run from
//! `PORTCULLIS__…` variables alone, routes included; a named config file that
//! is missing is still an error; stray `PORTCULLIS_…` variables are warned
//! about; logs carry no ANSI colour codes unless written to a terminal.

use std::{
    io::{Read as _, Write as _},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

const SECRET: &str = "very-secret-client-value";
const KEY: &str = "cG9ydGN1bGxpcy10ZXN0LWtleS0wMTIzNDU2Nzg5YWI=";

/// A complete dev config as environment variables, one route included.
fn env_config(listen: &str) -> Vec<(String, String)> {
    [
        ("PORTCULLIS__SERVER__LISTEN", listen),
        ("PORTCULLIS__SERVER__PUBLIC_URL", "http://127.0.0.1:8080"),
        ("PORTCULLIS__SERVER__PROFILE", "dev"),
        ("PORTCULLIS__SERVER__DRAIN_TIMEOUT", "5s"),
        ("PORTCULLIS__ADMIN__LISTEN", ""),
        ("PORTCULLIS__OIDC__ISSUER", "http://127.0.0.1:9"),
        ("PORTCULLIS__OIDC__CLIENT_ID", "portal"),
        ("PORTCULLIS__OIDC__CLIENT_SECRET", SECRET),
        ("PORTCULLIS__OIDC__HTTP_TIMEOUT", "1s"),
        ("PORTCULLIS__SESSION__STORE", "memory"),
        (
            "PORTCULLIS__SESSION__ENCRYPTION_KEYS",
            &format!("[\"{KEY}\"]"),
        ),
        ("PORTCULLIS__ROUTES__0__PREFIX", "/api/"),
        ("PORTCULLIS__ROUTES__0__UPSTREAM", "http://127.0.0.1:4111"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// `portcullis ARGS` in the empty directory `cwd` with exactly `env` (and
/// PATH): nothing from the test runner's environment leaks in.
fn command(cwd: &std::path::Path, args: &[&str], env: &[(String, String)]) -> Command {
    command_of(env!("CARGO_BIN_EXE_portcullis"), cwd, args, env)
}

/// [`command`] for another program.
fn command_of(
    program: &str,
    cwd: &std::path::Path,
    args: &[&str],
    env: &[(String, String)],
) -> Command {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .current_dir(cwd)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(env.iter().map(|(k, v)| (k, v)));
    cmd
}

fn run(cwd: &std::path::Path, args: &[&str], env: &[(String, String)]) -> Output {
    command(cwd, args, env).output().expect("run portcullis")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn check_accepts_a_config_from_the_environment_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = run(dir.path(), &["check"], &env_config("127.0.0.1:8080"));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("environment (no portcullis.toml): configuration OK"),
        "{}",
        text(&out.stdout)
    );

    // --print shows the env-defined route, secrets redacted.
    let out = run(
        dir.path(),
        &["check", "--print"],
        &env_config("127.0.0.1:8080"),
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        stdout.contains("[[routes]]") && stdout.contains("prefix = \"/api/\""),
        "{stdout}"
    );
    assert!(
        !stdout.contains(SECRET) && !stdout.contains(KEY),
        "{stdout}"
    );
}

#[test]
fn without_a_file_missing_keys_are_named_with_their_variable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = run(dir.path(), &["check"], &[]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("environment (no portcullis.toml): invalid configuration"),
        "{stderr}"
    );
    for expected in [
        "server.public_url: missing required key (or env PORTCULLIS__SERVER__PUBLIC_URL)",
        "oidc.issuer: missing required key (or env PORTCULLIS__OIDC__ISSUER)",
        "PORTCULLIS__OIDC__CLIENT_SECRET",
    ] {
        assert!(
            stderr.contains(expected),
            "{expected} missing from:\n{stderr}"
        );
    }
}

#[test]
fn portcullis_toml_in_the_working_directory_is_still_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("portcullis.toml"), "[server]\ncolour = 1\n").expect("write");
    let out = run(dir.path(), &["check"], &env_config("127.0.0.1:8080"));
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("portcullis.toml: invalid configuration")
            && stderr.contains("server.colour"),
        "{stderr}"
    );
}

#[test]
fn a_named_config_file_that_does_not_exist_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("nope.toml");
    let missing = missing.to_str().expect("utf-8 path");
    let by_flag = run(
        dir.path(),
        &["serve", "--config", missing],
        &env_config("127.0.0.1:0"),
    );
    let mut env = env_config("127.0.0.1:0");
    env.push(("PORTCULLIS_CONFIG".into(), missing.into()));
    let by_env = run(dir.path(), &["check"], &env);
    for out in [by_flag, by_env] {
        assert_eq!(out.status.code(), Some(1));
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains("cannot read") && stderr.contains("nope.toml"),
            "{stderr}"
        );
    }
}

#[test]
fn check_warns_about_stray_portcullis_variables() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut env = env_config("127.0.0.1:8080");
    env.push(("PORTCULLIS_OIDC__CLIENT_ID".into(), "typo".into()));
    let out = run(dir.path(), &["check"], &env);
    // A warning: the config itself is complete, so check passes.
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("warning: PORTCULLIS_OIDC__CLIENT_ID: ignored")
            && stderr.contains("did you mean PORTCULLIS__OIDC__CLIENT_ID?"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("typo"),
        "the value is not echoed: {stderr}"
    );

    // An override of a key that does not exist is an error, like in the file.
    env.push(("PORTCULLIS__OIDC__CLIENT_IDD".into(), "x".into()));
    let out = run(dir.path(), &["check"], &env);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("oidc.client_idd: unknown key"));
}

/// A free local port, as `IP:PORT`.
fn free_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").to_string()
}

/// The status line of `GET path` on `addr`.
fn get_status(addr: &str, path: &str) -> String {
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.lines().next().unwrap_or_default().to_owned()
}

/// Stops `child` with SIGTERM and returns its output.
#[cfg(unix)]
fn stop(child: std::process::Child) -> Output {
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    child.wait_with_output().expect("wait")
}

#[cfg(unix)]
#[test]
fn serve_runs_from_the_environment_alone_with_plain_logs_on_a_pipe() {
    let dir = tempfile::tempdir().expect("tempdir");
    let addr = free_addr();
    let mut env = env_config(&addr);
    env.push(("PORTCULLIS_OIDC__ISSUER".into(), "https://typo".into()));
    let mut child = command(dir.path(), &["serve"], &env)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(&addr).is_err() {
        if Instant::now() > deadline || child.try_wait().expect("wait").is_some() {
            let out = stop(child);
            panic!(
                "serve did not start:\n{}{}",
                text(&out.stdout),
                text(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // The route defined by PORTCULLIS__ROUTES__0__… exists: no session, 401
    // (an unknown path would be 404).
    let api = get_status(&addr, "/api/orders");
    let other = get_status(&addr, "/nothing-here");
    let out = stop(child);
    let logs = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(api.contains(" 401 "), "{api}\n{logs}");
    assert!(other.contains(" 404 "), "{other}\n{logs}");
    assert_eq!(out.status.code(), Some(0), "{logs}");
    // The stray variable is warned about at start, its value not logged.
    assert!(
        logs.contains("PORTCULLIS_OIDC__ISSUER")
            && logs.contains("did you mean PORTCULLIS__OIDC__ISSUER?"),
        "{logs}"
    );
    assert!(!logs.contains("https://typo"), "{logs}");
    assert!(logs.contains("portcullis is serving"), "{logs}");
    // Text logs (dev profile) on a pipe: no ANSI escape sequences.
    assert!(
        !out.stdout.contains(&0x1b) && !out.stderr.contains(&0x1b),
        "ANSI codes in piped logs:\n{logs:?}"
    );
}

/// On a terminal (a pseudo-terminal from util-linux `script`) text logs are
/// coloured unless `NO_COLOR` is set. Skipped where `script` is missing.
#[cfg(unix)]
#[test]
fn logs_are_coloured_only_on_a_terminal_and_never_with_no_color() {
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("skipped: no `script` command to provide a terminal");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    // A listen address this host does not have: serve logs its first line
    // (the dev-profile warning), then fails to bind and exits.
    let on_terminal = |no_color: Option<&str>| -> Vec<u8> {
        let mut env = env_config("192.0.2.1:1");
        if let Some(value) = no_color {
            env.push(("NO_COLOR".into(), value.into()));
        }
        let line = format!("{} serve", shell_quote(env!("CARGO_BIN_EXE_portcullis")));
        let out = command_of("script", dir.path(), &["-qec", &line, "/dev/null"], &env)
            .env("TERM", "xterm")
            .stdin(Stdio::null())
            .output()
            .expect("run script");
        let mut all = out.stdout;
        all.extend_from_slice(&out.stderr);
        assert!(
            text(&all).contains("dev profile"),
            "no log line on the terminal:\n{}",
            text(&all)
        );
        all
    };
    assert!(on_terminal(None).contains(&0x1b), "no colour on a terminal");
    assert!(
        !on_terminal(Some("1")).contains(&0x1b),
        "colour despite NO_COLOR"
    );
}

#[cfg(unix)]
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}
