//! The real serving path for a test: [`portcullis::serve`] (the serving
//! workers and the admin listener, not `axum::serve`) in front of a small
//! recording upstream, a crafted IdP and a static directory; plus raw-TCP
//! helpers to talk to it byte by byte.
//!
//! ```ignore
//! let g = Served::start("header_read_timeout = \"300ms\"").await;
//! let mut tcp = g.connect().await;
//! tcp.write_all(b"GET /api/x HTTP/1.1\r\nHost: a\r\n\r\n").await?;
//! ```
//!
//! Routes: `/api/` to the upstream without a token, `/user/` to the
//! upstream with the user's token (401 without a session), `/slow/` to the
//! upstream without a token, prefix stripped, with a 300 ms timeout, `/ws/` to a
//! WebSocket echo server without a token, `/auth/*` (the crafted IdP),
//! everything else from the static directory.

#![allow(dead_code)]

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use axum::{
    Router,
    body::Bytes,
    extract::{Request, State},
    response::{IntoResponse, Response},
};
use portcullis::{Gateway, config::Config};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::oneshot,
    task::JoinHandle,
};

use super::crafted_idp::CraftedIdp;

/// Marks every upstream answer, so a test can tell the gateway's own
/// answers (no such header) from the upstream's.
pub const UPSTREAM_MARK: &str = "x-upstream-path";

/// One request as the upstream saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub body: Vec<u8>,
}

/// A healthy upstream that records what it gets. `/api/stall?ms=N` waits N
/// ms before it answers (a long response with no bytes moving);
/// `/api/early` answers at once, without reading the request body, with a
/// body that never ends (not recorded).
pub struct Upstream {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Upstream {
    pub async fn start() -> Self {
        async fn record(State(seen): State<Arc<Mutex<Vec<Seen>>>>, req: Request) -> Response {
            if req.uri().path() == "/api/early" {
                return early_endless_answer();
            }
            let (parts, body) = req.into_parts();
            let body = axum::body::to_bytes(body, 1 << 20)
                .await
                .unwrap_or_else(|_| Bytes::from_static(b"<body error>"));
            let path = parts.uri.path().to_string();
            seen.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(Seen {
                    method: parts.method.to_string(),
                    path: path.clone(),
                    body: body.to_vec(),
                });
            if path == "/api/stall" {
                let ms = parts
                    .uri
                    .query()
                    .and_then(|q| q.strip_prefix("ms="))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            let mark = http::HeaderValue::from_str(&path)
                .unwrap_or_else(|_| http::HeaderValue::from_static("unprintable"));
            ([(UPSTREAM_MARK, mark)], format!("upstream {path}")).into_response()
        }
        let seen = Arc::new(Mutex::new(Vec::new()));
        let app = Router::new().fallback(record).with_state(seen.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, seen, task }
    }

    /// Every request seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// `/api/early`: answered before the request body is read, with a body
/// that sends `early` and then never ends (a response in flight for ever).
fn early_endless_answer() -> Response {
    use futures_util::StreamExt as _;
    let first = futures_util::stream::once(async { Ok::<_, std::io::Error>(Bytes::from("early")) });
    let body = axum::body::Body::from_stream(first.chain(futures_util::stream::pending()));
    Response::new(body)
}

/// A WebSocket echo server (text and binary messages come back).
async fn start_ws_echo() -> (SocketAddr, JoinHandle<()>) {
    use futures_util::{SinkExt as _, StreamExt as _};
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind ws");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, task)
}

/// A gateway on [`portcullis::serve`] with its admin listener.
pub struct Served {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub upstream: Upstream,
    pub idp: CraftedIdp,
    stop: Option<oneshot::Sender<()>>,
    pub task: JoinHandle<Result<(), portcullis::GatewayError>>,
    ws_echo: JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Drop for Served {
    fn drop(&mut self) {
        self.task.abort();
        self.ws_echo.abort();
    }
}

impl Served {
    /// Start with `server_keys` (TOML lines) added to `[server]`.
    pub async fn start(server_keys: &str) -> Self {
        let upstream = Upstream::start().await;
        let idp = CraftedIdp::start().await;
        let (ws, ws_echo) = start_ws_echo().await;
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("index.html"), "<!doctype html><p>spa</p>")
            .expect("index.html");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let admin = TcpListener::bind("127.0.0.1:0").await.expect("bind admin");
        let (addr, admin_addr) = (
            listener.local_addr().expect("addr"),
            admin.local_addr().expect("admin addr"),
        );
        let toml = format!(
            r#"
[server]
public_url = "http://{addr}"
profile = "dev"
{server_keys}
[admin]
listen = ""
[oidc]
issuer = "{issuer}"
client_id = "portal"
client_secret = "secret"
http_timeout = "2s"
[session]
store = "memory"
[[routes]]
prefix = "/api/"
upstream = "http://{up}"
token = "none"
timeout = "5s"
[[routes]]
prefix = "/ws/"
upstream = "http://{ws}"
token = "none"
[[routes]]
prefix = "/user/"
upstream = "http://{up}"
timeout = "5s"
[[routes]]
prefix = "/slow/"
upstream = "http://{up}"
token = "none"
strip_prefix = true
timeout = "300ms"
[static]
dir = "{dir}"
"#,
            issuer = idp.issuer,
            up = upstream.addr,
            dir = dir.path().display(),
        );
        let config = Config::from_toml_str(&toml, Vec::<(String, String)>::new())
            .unwrap_or_else(|e| panic!("test config invalid:\n{e}"));
        let gateway = Gateway::new(config).await.expect("gateway");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(portcullis::serve(
            gateway,
            listener,
            Some(admin),
            async move {
                let _ = stopped.await;
            },
        ));
        Self {
            addr,
            admin: admin_addr,
            upstream,
            idp,
            stop: Some(stop),
            task,
            ws_echo,
            _dir: dir,
        }
    }

    /// A raw connection to the public listener.
    pub async fn connect(&self) -> TcpStream {
        TcpStream::connect(self.addr).await.expect("connect")
    }

    /// The gateway still serves: a normal request through the proxy
    /// answers 200 from the upstream.
    pub async fn still_serves(&self) {
        let status = one_request(self.addr, "/api/health-check")
            .await
            .expect("a normal request is answered");
        assert!(
            status.starts_with("HTTP/1.1 200"),
            "normal request: {status}"
        );
    }

    /// Begin the graceful shutdown and wait (bounded) for `serve` to return.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let task = &mut self.task;
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("serve returns")
            .expect("serve task")
            .expect("serve ok");
    }
}

/// One `GET path` with `Connection: close` on a new connection; the whole
/// answer as text (lossy), or `None` if none came within 10 s.
pub async fn one_request(addr: SocketAddr, path: &str) -> Option<String> {
    let mut tcp = TcpStream::connect(addr).await.ok()?;
    let head = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    tcp.write_all(head.as_bytes()).await.ok()?;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut out))
        .await
        .ok()?
        .ok()?;
    Some(String::from_utf8_lossy(&out).into_owned())
}

/// Read until the peer closes (EOF or reset), for at most `bound`. Returns
/// what was read, or `None` if the connection was still open at `bound`.
pub async fn read_until_closed(tcp: &mut TcpStream, bound: Duration) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let read_all = async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(bound, read_all).await.ok()?;
    Some(out)
}

/// Read one HTTP/1.1 response with a `Content-Length` (the gateway's and
/// the upstream's answers have one) within `bound`; its head and body.
pub async fn read_response(tcp: &mut TcpStream, bound: Duration) -> Option<(String, Vec<u8>)> {
    let read = async {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            if let Some(end) = find(&out, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&out[..end]).into_owned();
                let length = head
                    .lines()
                    .find_map(|l| {
                        let (name, value) = l.split_once(':')?;
                        name.eq_ignore_ascii_case("content-length")
                            .then(|| value.trim().parse::<usize>().ok())?
                    })
                    .unwrap_or(0);
                if out.len() >= end + 4 + length {
                    return Some((head, out[end + 4..end + 4 + length].to_vec()));
                }
            }
            let n = tcp.read(&mut buf).await.ok()?;
            if n == 0 {
                return None;
            }
            out.extend_from_slice(&buf[..n]);
        }
    };
    tokio::time::timeout(bound, read).await.ok()?
}

pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
