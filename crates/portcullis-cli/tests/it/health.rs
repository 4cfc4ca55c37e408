//! `portcullis health`, the container health check: exit 0 when the admin
//! listener's `/healthz` answers 200, 1 otherwise (unreachable, non-200, no
//! answer within `--timeout`).

use std::{
    io::{Read, Write},
    net::TcpListener,
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

const KEY: &str = "cG9ydGN1bGxpcy10ZXN0LWtleS0wMTIzNDU2Nzg5YWI=";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

fn health(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .arg("health")
        .args(args)
        .env_remove("PORTCULLIS_CONFIG")
        .env_remove("PORTCULLIS__ADMIN__LISTEN")
        .envs(env.iter().copied())
        .output()
        .expect("run health")
}

fn describe(out: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A running `serve` whose admin listener is on `admin`; killed when dropped.
struct Serve {
    child: std::process::Child,
    config: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_serve(admin: &str) -> Serve {
    let listen = format!("127.0.0.1:{}", free_port());
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("portcullis.toml");
    // The IdP is unreachable: live, but not ready.
    std::fs::write(
        &config,
        format!(
            r#"
[server]
listen = "{listen}"
public_url = "http://127.0.0.1:8080"
profile = "dev"
[admin]
listen = "{admin}"
[oidc]
issuer = "http://127.0.0.1:9"
client_id = "portal"
client_secret = "secret"
http_timeout = "1s"
[session]
store = "memory"
encryption_keys = ["{KEY}"]
"#
        ),
    )
    .expect("write");
    let mut child = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["serve", "--config"])
        .arg(&config)
        .env_remove("PORTCULLIS_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(admin).is_err() {
        if Instant::now() > deadline || child.try_wait().expect("wait").is_some() {
            let _ = child.kill();
            panic!("serve did not start its admin listener");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Serve {
        child,
        config,
        _dir: dir,
    }
}

#[cfg(unix)]
#[test]
fn health_of_a_running_gateway_from_its_config_and_from_env() {
    let port = free_port();
    let admin = format!("127.0.0.1:{port}");
    let serve = spawn_serve(&admin);
    let config = serve.config.to_str().expect("utf-8 path");

    // admin.listen from the config file.
    let out = health(&["--config", config], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("http://{admin}/healthz")),
        "{}",
        describe(&out)
    );

    // As in the container image: no file, a wildcard address from the
    // environment, asked on loopback.
    let wildcard = format!("0.0.0.0:{port}");
    let out = health(
        &["--config", "/nonexistent/portcullis.toml"],
        &[("PORTCULLIS__ADMIN__LISTEN", &wildcard)],
    );
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));

    // Live but not ready (the IdP is unreachable): /readyz is 503 → exit 1,
    // and the message carries the failing check.
    let out = health(&["--config", config, "--ready", "--timeout", "10s"], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("503") && stderr.contains("idp"),
        "{}",
        describe(&out)
    );
}

#[test]
fn health_fails_when_nothing_listens() {
    let url = format!("http://127.0.0.1:{}/healthz", free_port());
    let out = health(&["--url", &url], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
}

#[test]
fn health_fails_when_the_admin_listener_is_off() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("portcullis.toml");
    std::fs::write(&path, "[admin]\nlisten = \"\"\n").expect("write");
    let out = health(&["--config", path.to_str().expect("utf-8")], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("admin listener is off"),
        "{}",
        describe(&out)
    );
}

/// A listener that accepts (the kernel backlog does) but never answers: the
/// probe gives up after `--timeout` instead of hanging the health check.
#[test]
fn health_times_out_on_a_listener_that_never_answers() {
    let silent = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/healthz", silent.local_addr().expect("addr"));
    let started = Instant::now();
    let out = health(&["--url", &url, "--timeout", "300ms"], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no answer within"),
        "{}",
        describe(&out)
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// A tiny HTTP server answering every request with `status`, for one request.
fn answer_once(status: &str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let response = format!("HTTP/1.1 {status}\r\ncontent-length: 2\r\n\r\nno");
    std::thread::spawn(move || {
        if let Ok((mut stream, _)) = listener.accept() {
            let mut buf = [0u8; 1024];
            let _ = stream.read(&mut buf);
            let _ = stream.write_all(response.as_bytes());
            // Keep the connection open until the probe closes it: it must
            // not wait for EOF.
            while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
        }
    });
    format!("http://{addr}/healthz")
}

#[test]
fn health_fails_on_a_non_200_and_passes_on_200_without_waiting_for_close() {
    let out = health(&["--url", &answer_once("500 Internal Server Error")], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unhealthy: 500"),
        "{}",
        describe(&out)
    );
    let started = Instant::now();
    let out = health(&["--url", &answer_once("200 OK"), "--timeout", "4s"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(started.elapsed() < Duration::from_secs(4));
}
