//! The binary as an operator runs it: `check --print` shows the effective
//! config with secrets redacted; `serve` drains and exits 0 on SIGTERM.

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

const SECRET: &str = "very-secret-client-value";
const KEY: &str = "cG9ydGN1bGxpcy10ZXN0LWtleS0wMTIzNDU2Nzg5YWI=";

fn config(listen: &str) -> String {
    format!(
        r#"
[server]
listen = "{listen}"
public_url = "http://127.0.0.1:8080"
profile = "dev"
drain_timeout = "5s"
[admin]
listen = ""
[oidc]
issuer = "http://127.0.0.1:9"
client_id = "portal"
client_secret = "{SECRET}"
http_timeout = "1s"
[session]
store = "memory"
encryption_keys = ["{KEY}"]
[[routes]]
prefix = "/api/"
upstream = "http://127.0.0.1:4111"
"#
    )
}

#[test]
fn check_print_shows_the_effective_config_with_secrets_redacted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("portcullis.toml");
    std::fs::write(&path, config("127.0.0.1:8080")).expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["check", "--print", "--config"])
        .arg(&path)
        .env_remove("PORTCULLIS_CONFIG")
        .env("PORTCULLIS__OIDC__CLIENT_ID", "from-env")
        .output()
        .expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !stdout.contains(SECRET) && !stdout.contains(KEY),
        "{stdout}"
    );
    assert!(stdout.contains("client_secret = \"***\""), "{stdout}");
    assert!(stdout.contains("client_id = \"from-env\""), "{stdout}");
    // Defaults appear even though the file does not set them.
    assert!(stdout.contains("idle_timeout = \"30m\""), "{stdout}");
    assert!(stdout.contains("cookie_name = \"portcullis\""), "{stdout}");
}

/// Start `portcullis serve` on a free port with extra `env` and wait until it
/// listens. Returns the child, its address and the directory holding its
/// config (removed when dropped).
#[cfg(unix)]
fn spawn_serve(env: &[(&str, &str)]) -> (std::process::Child, String, tempfile::TempDir) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let addr = format!("127.0.0.1:{port}");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("portcullis.toml");
    std::fs::write(&path, config(&addr)).expect("write");
    let mut child = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["serve", "--config"])
        .arg(&path)
        .env_remove("PORTCULLIS_CONFIG")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(&addr).is_err() {
        assert!(Instant::now() < deadline, "serve did not start listening");
        assert!(
            child.try_wait().expect("wait").is_none(),
            "serve exited early"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (child, addr, dir)
}

#[cfg(unix)]
#[test]
fn serve_exits_0_after_sigterm() {
    let (mut child, _addr, _dir) = spawn_serve(&[]);
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("serve did not exit after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0));
}

/// With `--features otel` and `OTEL_EXPORTER_OTLP_ENDPOINT`, `serve` exports
/// its request spans over OTLP/HTTP (flushed at shutdown at the latest).
/// Run with `cargo test -p portcullis-cli --features otel --test operations`.
#[cfg(all(unix, feature = "otel"))]
#[test]
fn serve_exports_spans_over_otlp() {
    use std::io::{Read, Write};

    // A minimal OTLP/HTTP collector: records each request line, answers 200.
    let collector = std::net::TcpListener::bind("127.0.0.1:0").expect("bind collector");
    let collector_addr = collector.local_addr().expect("addr");
    let (seen_tx, seen_rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for stream in collector.incoming() {
            let Ok(mut stream) = stream else { break };
            let mut buf = Vec::new();
            let mut chunk = [0u8; 8192];
            // Read the head, then Content-Length bytes of body.
            let head_end = loop {
                let Ok(n) = stream.read(&mut chunk) else {
                    break None;
                };
                if n == 0 {
                    break None;
                }
                buf.extend_from_slice(&chunk[..n]);
                if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break Some(i + 4);
                }
            };
            let Some(head_end) = head_end else { continue };
            let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
            let length = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            while buf.len() < head_end + length {
                match stream.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
            let _ = seen_tx.send(head.lines().next().unwrap_or("").to_string());
        }
    });

    let endpoint = format!("http://{collector_addr}");
    let (mut child, addr, _dir) = spawn_serve(&[("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)]);
    let mut conn = std::net::TcpStream::connect(&addr).expect("connect");
    conn.write_all(b"GET /auth/me HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .expect("request");
    let mut answer = String::new();
    let _ = conn.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(0));
    let line = seen_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("no OTLP export arrived");
    assert!(line.starts_with("POST /v1/traces"), "{line}");
}
