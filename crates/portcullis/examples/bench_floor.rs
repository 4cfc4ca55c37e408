//! Not a gateway: the floor of the "HTTP/1 heads forwarded in place" design,
//! measured with the same harness as `bench_gateway` (docs/performance.md,
//! "What the in-place design would save"). Only what the benchmark's
//! request needs, none of the checks a gateway owes its users.
//!
//! Per request it does the proxy's essential work: parse the browser's head
//! once with httparse, match the route, find the session cookie and look the
//! session up by its hash (as the memory store does), write the upstream
//! head from the original bytes with `Cookie`, `Host` and hop-by-hop headers
//! left out and `Authorization`, `X-Forwarded-*` and a request id spliced in,
//! then parse the upstream's answer head the same way and write it back with
//! its body. One upstream connection per client connection (no pool), one
//! current-thread runtime, the same allocator as `bench_gateway`.
//!
//! `cargo run --release -p portcullis --example bench_floor -- LISTEN UPSTREAM`
//! prints `COOKIE=<name>=<value>` like `bench_gateway` (a third argument,
//! the store, is accepted and ignored: the session lives in a map).

use std::{
    collections::HashMap,
    rc::Rc,
    sync::atomic::{AtomicU64, Ordering},
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use portcullis::session::{SessionId, random_token};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const COOKIE_NAME: &str = "__Host-portcullis";
const MAX_HEAD: usize = 16 * 1024;

struct Session {
    bearer: Vec<u8>,
    expires_at: u64,
}

struct Floor {
    sessions: HashMap<String, Rc<Session>>,
    upstream: String,
    upstream_host: String,
    /// Requests and total microseconds, standing in for the metrics.
    requests: AtomicU64,
    micros: AtomicU64,
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let listen = args.next().unwrap_or_else(|| "127.0.0.1:8080".into());
    let upstream = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:4111".into());
    let upstream = upstream.trim_start_matches("http://").to_owned();
    let id = SessionId::generate();
    let mut sessions = HashMap::new();
    let bearer = format!("Bearer {}", random_token(600)).into_bytes();
    let expires_at = unix_now() + 86_400;
    sessions.insert(
        id.hash().as_str().to_owned(),
        Rc::new(Session { bearer, expires_at }),
    );
    let floor = Rc::new(Floor {
        sessions,
        upstream_host: upstream.clone(),
        upstream,
        requests: AtomicU64::new(0),
        micros: AtomicU64::new(0),
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let listener = TcpListener::bind(&listen).await?;
        println!("COOKIE={COOKIE_NAME}={}", id.as_cookie_value());
        loop {
            let (conn, _) = listener.accept().await?;
            conn.set_nodelay(true)?;
            let floor = floor.clone();
            tokio::task::spawn_local(async move {
                let _ = serve(&floor, conn).await;
            });
        }
    })
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

async fn serve(floor: &Floor, mut client: TcpStream) -> Result<()> {
    let mut upstream = TcpStream::connect(&floor.upstream).await?;
    upstream.set_nodelay(true)?;
    let mut inbuf = Vec::with_capacity(MAX_HEAD);
    let mut upbuf = Vec::with_capacity(MAX_HEAD);
    let mut out = Vec::with_capacity(MAX_HEAD);
    let mut request_id = 0u64;
    loop {
        // The browser's head, read until complete.
        let (head_len, forwarded) = loop {
            if let Some(done) = forward_head(floor, &inbuf, &mut out, &mut request_id)? {
                break done;
            }
            if inbuf.len() >= MAX_HEAD || client.read_buf(&mut inbuf).await? == 0 {
                return Ok(());
            }
        };
        let start = Instant::now();
        inbuf.drain(..head_len);
        if !forwarded {
            client
                .write_all(b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\n\r\n")
                .await?;
            continue;
        }
        upstream.write_all(&out).await?;
        // The upstream's head, then its body by Content-Length.
        let (head_len, body_len) = loop {
            if let Some(done) = answer_head(&upbuf, &mut out)? {
                break done;
            }
            if upbuf.len() >= MAX_HEAD || upstream.read_buf(&mut upbuf).await? == 0 {
                return Err("upstream closed".into());
            }
        };
        while upbuf.len() < head_len + body_len {
            if upstream.read_buf(&mut upbuf).await? == 0 {
                return Err("upstream closed".into());
            }
        }
        out.extend_from_slice(&upbuf[head_len..head_len + body_len]);
        upbuf.drain(..head_len + body_len);
        client.write_all(&out).await?;
        floor.requests.fetch_add(1, Ordering::Relaxed);
        floor
            .micros
            .fetch_add(start.elapsed().as_micros() as u64, Ordering::Relaxed);
    }
}

fn is_hop_by_hop(name: &str) -> bool {
    [
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ]
    .iter()
    .any(|h| name.eq_ignore_ascii_case(h))
        || name.len() > 6 && name[..6].eq_ignore_ascii_case("proxy-")
}

/// Parses the browser's head in `buf` and writes the upstream's into `out`.
/// `None`: incomplete; `Some((head length, forwarded))`.
fn forward_head(
    floor: &Floor,
    buf: &[u8],
    out: &mut Vec<u8>,
    request_id: &mut u64,
) -> Result<Option<(usize, bool)>> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    let httparse::Status::Complete(len) = req.parse(buf)? else {
        return Ok(None);
    };
    let (Some(method), Some(path)) = (req.method, req.path) else {
        return Err("no request line".into());
    };
    if !path.starts_with("/api/") || method != "GET" {
        return Ok(Some((len, false)));
    }
    let mut session = None;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("cookie") {
            for pair in h.value.split(|&b| b == b';') {
                let pair = pair.trim_ascii();
                if let Some(value) = pair
                    .strip_prefix(COOKIE_NAME.as_bytes())
                    .and_then(|rest| rest.strip_prefix(b"="))
                    && let Ok(value) = std::str::from_utf8(value)
                    && let Some(hash) = SessionId::hash_of(value)
                {
                    session = floor.sessions.get(hash.as_str());
                }
            }
        }
    }
    let Some(session) = session.filter(|s| s.expires_at > unix_now()) else {
        return Ok(Some((len, false)));
    };
    out.clear();
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    out.extend_from_slice(floor.upstream_host.as_bytes());
    out.extend_from_slice(b"\r\n");
    for h in req.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("cookie")
            || name.eq_ignore_ascii_case("host")
            || name.eq_ignore_ascii_case("authorization")
            || name.len() > 12 && name[..12].eq_ignore_ascii_case("x-forwarded-")
            || is_hop_by_hop(name)
        {
            continue;
        }
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"authorization: ");
    out.extend_from_slice(&session.bearer);
    out.extend_from_slice(b"\r\nx-forwarded-for: 127.0.0.1\r\nx-forwarded-proto: http\r\n");
    *request_id += 1;
    out.extend_from_slice(format!("x-request-id: {request_id:016x}\r\n\r\n").as_bytes());
    Ok(Some((len, true)))
}

/// Parses the upstream's head in `buf` and writes the browser's into `out`.
/// `None`: incomplete; `Some((head length, body length))`.
fn answer_head(buf: &[u8], out: &mut Vec<u8>) -> Result<Option<(usize, usize)>> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut res = httparse::Response::new(&mut headers);
    let httparse::Status::Complete(len) = res.parse(buf)? else {
        return Ok(None);
    };
    let code = res.code.ok_or("no status")?;
    out.clear();
    out.extend_from_slice(format!("HTTP/1.1 {code} ").as_bytes());
    out.extend_from_slice(res.reason.unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    let mut body_len = None;
    for h in res.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            body_len = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.parse().ok());
        } else if is_hop_by_hop(h.name) {
            continue;
        }
        out.extend_from_slice(h.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Ok(Some((len, body_len.ok_or("no content-length")?)))
}
