//! `portcullis health`: ask the admin listener's `/healthz` (or `/readyz`)
//! and succeed only on a 200. Distroless images have no shell and no curl, so
//! the binary is its own container health check.
//!
//! The address comes from `--url`, else from `admin.listen` as the config
//! file and `PORTCULLIS__ADMIN__LISTEN` set it, else the default. The config
//! is read leniently (only that key, no validation, a missing file is fine):
//! a probe must not fail because a secret file is unreadable to it or another
//! key is wrong — `serve` reports those.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::{Path, PathBuf},
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// Most of a response kept for the message: enough for `/readyz`'s list of
/// failing checks.
const MAX_RESPONSE: usize = 8 * 1024;

#[derive(clap::Args)]
pub(crate) struct HealthArgs {
    /// URL to ask (plain http), e.g. `http://127.0.0.1:9090/healthz`. Default: the
    /// admin listener of the config (`admin.listen`, env `PORTCULLIS__ADMIN__LISTEN`).
    #[arg(long)]
    url: Option<String>,
    /// Config file whose `admin.listen` is asked (read leniently; may be missing).
    #[arg(
        long,
        short,
        env = "PORTCULLIS_CONFIG",
        default_value = "portcullis.toml"
    )]
    config: PathBuf,
    /// Ask `/readyz` (store and IdP) instead of `/healthz` (process up).
    #[arg(long, conflicts_with = "url")]
    ready: bool,
    /// Give up after this long (connect, request and response together).
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum HealthError {
    #[error("{path}: {message}")]
    Config { path: String, message: String },
    #[error("the admin listener is off (admin.listen = \"\"); pass --url")]
    AdminOff,
    #[error("invalid --url {url:?}: {message}")]
    Url { url: String, message: String },
    #[error("{url}: {source}")]
    Io {
        url: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{url}: no answer within {}", humantime::format_duration(*.timeout))]
    Timeout { url: String, timeout: Duration },
    #[error("{url}: not an HTTP response")]
    NotHttp { url: String },
    #[error("{url}: unhealthy: {status}{}", if .body.is_empty() { String::new() } else { format!(" {}", .body) })]
    Unhealthy {
        url: String,
        status: u16,
        body: String,
    },
}

/// Where to connect and what to ask.
#[derive(Debug, PartialEq, Eq)]
struct Target {
    /// `host:port` to connect to and send as `Host`.
    authority: String,
    /// Path and query.
    path: String,
}

impl Target {
    fn url(&self) -> String {
        format!("http://{}{}", self.authority, self.path)
    }
}

/// Runs the check; `Ok` carries the line to print on success.
pub(crate) async fn run(args: HealthArgs) -> Result<String, HealthError> {
    let target = match &args.url {
        Some(url) => from_url(url)?,
        None => {
            let path = if args.ready { "/readyz" } else { "/healthz" };
            let listen = admin_listen(&args.config, std::env::vars())?;
            from_listen(listen, path)?
        }
    };
    let url = target.url();
    let (status, body) = tokio::time::timeout(args.timeout, get(&target))
        .await
        .map_err(|_| HealthError::Timeout {
            url: url.clone(),
            timeout: args.timeout,
        })?
        .map_err(|e| match e {
            GetError::Io(source) => HealthError::Io {
                url: url.clone(),
                source,
            },
            GetError::NotHttp => HealthError::NotHttp { url: url.clone() },
        })?;
    if status == 200 {
        Ok(format!("{url}: healthy"))
    } else {
        Err(HealthError::Unhealthy { url, status, body })
    }
}

/// `admin.listen` from the environment override, else the file, else the
/// default; `None` when it is `""` (the admin listener is off).
fn admin_listen(
    config: &Path,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Option<SocketAddr>, HealthError> {
    let config_error = |message: String| HealthError::Config {
        path: config.display().to_string(),
        message,
    };
    let from_env = env
        .into_iter()
        .find_map(|(k, v)| (k == "PORTCULLIS__ADMIN__LISTEN").then_some(v));
    let value = match from_env {
        Some(v) => v,
        None => match std::fs::read_to_string(config) {
            Ok(text) => {
                let table: toml::Table = toml::from_str(&text)
                    .map_err(|e| config_error(format!("invalid TOML: {}", e.message())))?;
                match table.get("admin").and_then(|a| a.get("listen")) {
                    Some(toml::Value::String(s)) => s.clone(),
                    Some(_) => return Err(config_error("admin.listen must be a string".into())),
                    None => portcullis::config::DEFAULT_ADMIN_LISTEN.to_string(),
                }
            }
            // Configured through the environment alone.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                portcullis::config::DEFAULT_ADMIN_LISTEN.to_string()
            }
            Err(e) => return Err(config_error(format!("cannot read: {e}"))),
        },
    };
    if value.is_empty() {
        return Ok(None);
    }
    value
        .parse()
        .map(Some)
        .map_err(|_| config_error(format!("admin.listen {value:?} is not a socket address")))
}

fn from_listen(listen: Option<SocketAddr>, path: &str) -> Result<Target, HealthError> {
    let mut addr = listen.ok_or(HealthError::AdminOff)?;
    // A wildcard listener (0.0.0.0 in a container) is reached on loopback.
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        });
    }
    Ok(Target {
        authority: addr.to_string(),
        path: path.to_string(),
    })
}

fn from_url(raw: &str) -> Result<Target, HealthError> {
    let error = |message: &str| HealthError::Url {
        url: raw.to_string(),
        message: message.to_string(),
    };
    let url = url::Url::parse(raw).map_err(|e| error(&e.to_string()))?;
    // The admin listener speaks plain HTTP only.
    if url.scheme() != "http" {
        return Err(error("only http:// is supported"));
    }
    let host = match url.host() {
        Some(url::Host::Ipv6(ip)) => format!("[{ip}]"),
        Some(host) => host.to_string(),
        None => return Err(error("no host")),
    };
    let port = url.port_or_known_default().unwrap_or(80);
    let path = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_string(),
    };
    Ok(Target {
        authority: format!("{host}:{port}"),
        path,
    })
}

enum GetError {
    Io(std::io::Error),
    NotHttp,
}

impl From<std::io::Error> for GetError {
    fn from(e: std::io::Error) -> Self {
        Self::Io(e)
    }
}

/// One HTTP/1.1 GET with `Connection: close`; the status and the start of the
/// body. Hand-written: a probe needs no client library.
async fn get(target: &Target) -> Result<(u16, String), GetError> {
    let mut stream = TcpStream::connect(&target.authority).await?;
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: portcullis-health\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        target.path, target.authority
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    let mut chunk = [0u8; 2048];
    loop {
        let n = stream.read(&mut chunk).await?;
        response.extend_from_slice(&chunk[..n]);
        if n == 0 || response.len() >= MAX_RESPONSE || body_complete(&response) {
            break;
        }
    }
    parse_response(&response).ok_or(GetError::NotHttp)
}

/// True once the head and `Content-Length` bytes of body have arrived, so a
/// server that keeps the connection open does not make the probe wait.
fn body_complete(response: &[u8]) -> bool {
    let Some(head_end) = response.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&response[..head_end]);
    let length = head.lines().skip(1).find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse::<usize>().ok())?
    });
    length.is_some_and(|length| response.len() >= head_end + 4 + length)
}

fn parse_response(response: &[u8]) -> Option<(u16, String)> {
    let text = String::from_utf8_lossy(response);
    let status_line = text.lines().next()?;
    let mut parts = status_line.split_whitespace();
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let status = parts.next()?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.trim().to_string())
        .unwrap_or_default();
    Some((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn with_config(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("portcullis.toml");
        std::fs::write(&path, text).expect("write");
        (dir, path)
    }

    #[test]
    fn wildcard_listen_is_asked_on_loopback() {
        let v4 = from_listen(Some("0.0.0.0:9090".parse().unwrap()), "/healthz").unwrap();
        assert_eq!(v4.url(), "http://127.0.0.1:9090/healthz");
        let v6 = from_listen(Some("[::]:9091".parse().unwrap()), "/readyz").unwrap();
        assert_eq!(v6.url(), "http://[::1]:9091/readyz");
        let fixed = from_listen(Some("10.1.2.3:9090".parse().unwrap()), "/healthz").unwrap();
        assert_eq!(fixed.authority, "10.1.2.3:9090");
        assert!(matches!(
            from_listen(None, "/healthz"),
            Err(HealthError::AdminOff)
        ));
    }

    #[test]
    fn admin_listen_env_wins_over_file_and_missing_file_means_default() {
        let (_dir, path) = with_config("[admin]\nlisten = \"127.0.0.1:7000\"\n");
        assert_eq!(
            admin_listen(&path, env(&[])).unwrap(),
            Some("127.0.0.1:7000".parse().unwrap())
        );
        assert_eq!(
            admin_listen(&path, env(&[("PORTCULLIS__ADMIN__LISTEN", "0.0.0.0:9999")])).unwrap(),
            Some("0.0.0.0:9999".parse().unwrap())
        );
        let missing = Path::new("/nonexistent/portcullis.toml");
        assert_eq!(
            admin_listen(missing, env(&[])).unwrap(),
            Some(portcullis::config::DEFAULT_ADMIN_LISTEN.parse().unwrap())
        );
        let (_dir, off) = with_config("[admin]\nlisten = \"\"\n");
        assert_eq!(admin_listen(&off, env(&[])).unwrap(), None);
    }

    #[test]
    fn other_config_problems_do_not_matter_but_a_bad_listen_does() {
        // Required keys missing, an unknown section: not the probe's business.
        let (_dir, path) = with_config("[nonsense]\nx = 1\n[admin]\nlisten = \"127.0.0.1:1\"\n");
        assert!(admin_listen(&path, env(&[])).is_ok());
        let (_dir, bad) = with_config("[admin]\nlisten = \"localhost\"\n");
        assert!(matches!(
            admin_listen(&bad, env(&[])),
            Err(HealthError::Config { .. })
        ));
    }

    #[test]
    fn url_must_be_plain_http() {
        let t = from_url("http://127.0.0.1:9090/readyz?verbose=1").unwrap();
        assert_eq!(t.authority, "127.0.0.1:9090");
        assert_eq!(t.path, "/readyz?verbose=1");
        assert_eq!(
            from_url("http://[::1]/healthz").unwrap().authority,
            "[::1]:80"
        );
        assert!(from_url("https://127.0.0.1:9090/healthz").is_err());
        assert!(from_url("127.0.0.1:9090").is_err());
    }

    #[test]
    fn response_parsing() {
        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 15\r\n\r\n{\"status\":\"ok\"}";
        assert!(body_complete(ok));
        assert_eq!(
            parse_response(ok),
            Some((200, "{\"status\":\"ok\"}".to_string()))
        );
        assert!(!body_complete(
            b"HTTP/1.1 200 OK\r\ncontent-length: 15\r\n\r\n{"
        ));
        assert_eq!(parse_response(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(parse_response(b""), None);
    }
}
