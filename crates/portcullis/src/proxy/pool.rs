//! A per-worker HTTP/1.1 connection pool for plain-http upstreams, built on
//! `hyper::client::conn::http1`.
//!
//! hyper-util's pooled client (still used for https, where ALPN may pick
//! HTTP/2) hashes a pool key several times per request and spawns a task to
//! return each connection. Here a worker keeps a stack of idle connections
//! per upstream: checkout pops the most recently used one, and the response
//! body puts it back when it ends. A connection the upstream has closed is
//! dropped at checkout; a request that hyper hands back unsent (the
//! connection turned out closed before it was written) is sent again on
//! another connection, as hyper-util's client does. Unlike hyper-util, an
//! idempotent request without a body that was written to a long-idle
//! connection which then closed without answering is sent again too.

use std::{
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use axum::body::Body;
use bytes::Bytes;
use hyper::{
    body::{Body as _, Frame, Incoming, SizeHint},
    client::conn::http1::{self, SendRequest},
};
use hyper_util::rt::TokioIo;

use super::RequestHead;

/// Idle connections older than this are closed rather than reused, like
/// hyper-util's default `pool_idle_timeout`.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Idle connections kept per worker and upstream; more are closed.
const MAX_IDLE: usize = 256;
/// A connection idle this long may be closed by the upstream just as a
/// request goes out (common keep-alive timeouts are seconds).
const RACY_IDLE: Duration = Duration::from_millis(500);

#[derive(Debug, thiserror::Error)]
pub(super) enum PoolError {
    #[error("connection failed")]
    Connect,
    #[error("request failed")]
    Request,
}

/// Where the upstream listens.
enum Target {
    Addr(SocketAddr),
    /// Resolved on each new connection (not on each request).
    Name(String, u16),
}

pub(super) struct Pool {
    target: Target,
    connect_timeout: Duration,
    /// Idle this long, a connection may race the upstream's close.
    racy_idle: Duration,
    /// One stack of idle connections per serving worker.
    slots: Vec<Arc<Slot>>,
}

#[derive(Default)]
struct Slot {
    idle: Mutex<Vec<Idle>>,
}

struct Idle {
    sender: SendRequest<Body>,
    since: Instant,
}

impl Pool {
    /// A pool for a plain-http upstream; `None` when the URL has no host.
    pub(super) fn new(
        upstream: &url::Url,
        connect_timeout: Duration,
        workers: usize,
    ) -> Option<Self> {
        let port = upstream.port_or_known_default()?;
        let target = match upstream.host()? {
            url::Host::Ipv4(ip) => Target::Addr(SocketAddr::new(ip.into(), port)),
            url::Host::Ipv6(ip) => Target::Addr(SocketAddr::new(ip.into(), port)),
            url::Host::Domain(name) => Target::Name(name.to_string(), port),
        };
        Some(Self {
            target,
            connect_timeout,
            racy_idle: RACY_IDLE,
            slots: (0..workers.max(1)).map(|_| Arc::default()).collect(),
        })
    }

    /// Send `req` (origin-form URI, `Host` set) on an idle or a new
    /// connection; the response body returns the connection when it ends.
    pub(super) async fn send(
        &self,
        mut req: http::Request<Body>,
    ) -> Result<http::Response<Body>, PoolError> {
        let slot = &self.slots[crate::worker_index::current() % self.slots.len()];
        loop {
            let (mut sender, idle_for) = match slot.checkout() {
                Some((sender, idle_for)) => (sender, Some(idle_for)),
                // Boxed: connecting is rare and its future large; unboxed it
                // would grow (and be copied with) every request's future.
                None => (Box::pin(self.connect()).await?, None),
            };
            // An upstream may close a connection that has been idle a while
            // just as the request goes out; then hyper has written it and
            // cannot hand it back. A request that is safe to repeat keeps a
            // copy for that case. Connections busy a moment ago (all of
            // them under load) are not at risk and pay nothing.
            let copy = idle_for
                .filter(|idle| *idle >= self.racy_idle)
                .and_then(|_| replayable(&req));
            match sender.try_send_request(req).await {
                Ok(resp) => {
                    if resp.status() == http::StatusCode::SWITCHING_PROTOCOLS {
                        // The connection now belongs to the upgraded stream.
                        return Ok(resp.map(Body::new));
                    }
                    let slot = Arc::clone(slot);
                    return Ok(resp.map(|inner| Body::new(PooledBody::new(inner, sender, slot))));
                }
                Err(mut e) => match (e.take_message(), copy) {
                    // Not sent: the idle connection was closed under us.
                    (Some(unsent), _) if idle_for.is_some() => req = unsent,
                    // Sent, but the connection closed before any answer.
                    (None, Some(copy)) if e.error().is_incomplete_message() => {
                        req = copy.with_body(Body::empty());
                    }
                    _ => {
                        tracing::debug!(error = %e.error(), "upstream request failed");
                        return Err(PoolError::Request);
                    }
                },
            }
        }
    }

    async fn connect(&self) -> Result<SendRequest<Body>, PoolError> {
        let connect = async {
            match &self.target {
                Target::Addr(addr) => tokio::net::TcpStream::connect(addr).await,
                Target::Name(host, port) => {
                    tokio::net::TcpStream::connect((host.as_str(), *port)).await
                }
            }
        };
        let stream = match tokio::time::timeout(self.connect_timeout, connect).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "upstream connect failed");
                return Err(PoolError::Connect);
            }
            Err(_) => return Err(PoolError::Connect),
        };
        // Small requests and answers must not wait for Nagle.
        let _ = stream.set_nodelay(true);
        let (sender, conn) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|_| PoolError::Connect)?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "upstream connection closed with an error");
            }
        });
        Ok(sender)
    }
}

impl Slot {
    /// The most recently returned connection that is still usable, and how
    /// long it has been idle.
    fn checkout(&self) -> Option<(SendRequest<Body>, Duration)> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(conn) = idle.pop() {
            let idle_for = conn.since.elapsed();
            if conn.sender.is_ready() && idle_for < IDLE_TIMEOUT {
                return Some((conn.sender, idle_for));
            }
        }
        None
    }

    fn checkin(&self, sender: SendRequest<Body>) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        // Drop one stale connection from the bottom per return, so a stack
        // that stops being used down there does not keep them open forever.
        if idle
            .first()
            .is_some_and(|c| c.sender.is_closed() || c.since.elapsed() >= IDLE_TIMEOUT)
        {
            idle.remove(0);
        }
        if idle.len() < MAX_IDLE {
            idle.push(Idle {
                sender,
                since: Instant::now(),
            });
        }
    }
}

/// What is needed to send `req` again, if it may be sent twice: an
/// idempotent method (RFC 9110 9.2.2) and no body.
fn replayable(req: &http::Request<Body>) -> Option<RequestHead> {
    use http::Method;
    let idempotent = matches!(
        *req.method(),
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    );
    if !idempotent || hyper::body::Body::size_hint(req.body()).exact() != Some(0) {
        return None;
    }
    Some(RequestHead {
        method: req.method().clone(),
        uri: req.uri().clone(),
        headers: req.headers().clone(),
    })
}

/// Put a connection whose response has ended back into its slot: at once
/// when hyper is already waiting for the next request, else once it is.
fn give_back(mut sender: SendRequest<Body>, slot: Arc<Slot>) {
    if sender.is_ready() {
        slot.checkin(sender);
    } else if !sender.is_closed()
        && let Ok(rt) = tokio::runtime::Handle::try_current()
    {
        rt.spawn(async move {
            if sender.ready().await.is_ok() {
                slot.checkin(sender);
            }
        });
    }
}

/// An upstream response body that returns its connection to the pool once
/// it has been read to the end (dropped early, the connection closes).
struct PooledBody {
    inner: Incoming,
    conn: Option<(SendRequest<Body>, Arc<Slot>)>,
}

impl PooledBody {
    fn new(inner: Incoming, sender: SendRequest<Body>, slot: Arc<Slot>) -> Self {
        let mut body = Self {
            inner,
            conn: Some((sender, slot)),
        };
        // No body (HEAD, 204, 304, `Content-Length: 0`): nothing will poll it.
        body.release_if_ended();
        body
    }

    fn release_if_ended(&mut self) {
        if self.inner.is_end_stream() {
            self.release();
        }
    }

    fn release(&mut self) {
        if let Some((sender, slot)) = self.conn.take() {
            give_back(sender, slot);
        }
    }
}

impl hyper::body::Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let frame = Pin::new(&mut this.inner).poll_frame(cx);
        match &frame {
            Poll::Ready(None) => this.release(),
            Poll::Ready(Some(Ok(_))) => this.release_if_ended(),
            // A broken body leaves the connection unusable.
            Poll::Ready(Some(Err(_))) => this.conn = None,
            Poll::Pending => {}
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        // Servers stop polling once `is_end_stream` says the last frame came.
        self.release_if_ended();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http_body_util::BodyExt as _;
    use tokio::{
        io::{AsyncReadExt as _, AsyncWriteExt as _},
        net::TcpListener,
        sync::mpsc,
    };

    use super::*;

    /// A raw HTTP/1.1 upstream answering every request with `status`
    /// (and `body` unless HEAD or 204); counts connections, and with
    /// `close` shuts each one after its first answer and reports it.
    struct Upstream {
        url: url::Url,
        connections: Arc<AtomicUsize>,
        closed: mpsc::UnboundedReceiver<()>,
    }

    async fn upstream(status: u16, body: &'static str, close: bool) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = url::Url::parse(&format!("http://{}", listener.local_addr().unwrap())).unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let (tx, closed) = mpsc::unbounded_channel();
        let count = connections.clone();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let tx = tx.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                            match conn.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                            continue;
                        };
                        let head = buf.starts_with(b"HEAD ");
                        buf.drain(..end + 4);
                        let answer = if status == 204 {
                            "HTTP/1.1 204 No Content\r\n\r\n".to_string()
                        } else {
                            format!(
                                "HTTP/1.1 {status} X\r\ncontent-length: {}\r\n\r\n{}",
                                body.len(),
                                if head { "" } else { body }
                            )
                        };
                        if conn.write_all(answer.as_bytes()).await.is_err() {
                            return;
                        }
                        if close {
                            let _ = conn.shutdown().await;
                            drop(conn);
                            let _ = tx.send(());
                            return;
                        }
                    }
                });
            }
        });
        Upstream {
            url,
            connections,
            closed,
        }
    }

    fn request(url: &url::Url, method: http::Method) -> http::Request<Body> {
        http::Request::builder()
            .method(method)
            .uri("/x")
            .header(http::header::HOST, url.authority())
            .body(Body::empty())
            .unwrap()
    }

    async fn send(pool: &Pool, req: http::Request<Body>) -> (http::StatusCode, Bytes) {
        let resp = pool.send(req).await.unwrap();
        let status = resp.status();
        (status, resp.into_body().collect().await.unwrap().to_bytes())
    }

    fn pool(up: &Upstream) -> Pool {
        Pool::new(&up.url, Duration::from_secs(5), 1).unwrap()
    }

    #[tokio::test]
    async fn sequential_requests_share_one_connection() {
        let up = upstream(200, "hello", false).await;
        let pool = pool(&up);
        for _ in 0..5 {
            let (status, body) = send(&pool, request(&up.url, http::Method::GET)).await;
            assert_eq!((status.as_u16(), &body[..]), (200, &b"hello"[..]));
        }
        assert_eq!(up.connections.load(Ordering::SeqCst), 1);
    }

    /// Bodies nobody polls (HEAD, 204) still give the connection back.
    #[tokio::test]
    async fn answers_without_a_body_return_the_connection() {
        for (status, method) in [(200, http::Method::HEAD), (204, http::Method::GET)] {
            let up = upstream(status, "hello", false).await;
            let pool = pool(&up);
            for _ in 0..3 {
                let resp = pool.send(request(&up.url, method.clone())).await.unwrap();
                assert_eq!(resp.status().as_u16(), status);
                drop(resp);
            }
            assert_eq!(
                up.connections.load(Ordering::SeqCst),
                1,
                "{method} {status}"
            );
        }
    }

    /// A connection the upstream closed while idle is not used again; the
    /// request goes out on a new one.
    #[tokio::test]
    async fn connection_closed_by_the_upstream_is_replaced() {
        let mut up = upstream(200, "hello", true).await;
        let pool = pool(&up);
        for i in 1..=4 {
            let (status, body) = send(&pool, request(&up.url, http::Method::GET)).await;
            assert_eq!((status.as_u16(), &body[..]), (200, &b"hello"[..]));
            up.closed.recv().await.unwrap();
            assert_eq!(up.connections.load(Ordering::SeqCst), i);
        }
    }

    /// The keep-alive race: the upstream closes an idle connection that the
    /// pool still takes for ready, after hyper has written the request to
    /// it. The upstream runs on its own thread and closes only once the
    /// client has gone idle; the test waits for the close without yielding,
    /// so the client cannot have seen it before the second request. Returns
    /// the second request's outcome.
    async fn second_request_after_idle_close(
        method: http::Method,
    ) -> Result<http::StatusCode, PoolError> {
        use std::io::{Read as _, Write as _};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = url::Url::parse(&format!("http://{}", listener.local_addr().unwrap())).unwrap();
        let (close_tx, close_rx) = std::sync::mpsc::channel::<()>();
        let (closed_tx, closed_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for close in [true, false] {
                let Ok((mut conn, _)) = listener.accept() else {
                    return;
                };
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut chunk) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let _ = conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
                if close {
                    let _ = close_rx.recv();
                    let _ = conn.shutdown(std::net::Shutdown::Both);
                    drop(conn);
                    let _ = closed_tx.send(());
                }
            }
        });
        let mut pool = Pool::new(&url, Duration::from_secs(5), 1).unwrap();
        // Any idle time counts as long enough here.
        pool.racy_idle = Duration::ZERO;
        let (status, body) = send(&pool, request(&url, http::Method::GET)).await;
        assert_eq!((status.as_u16(), &body[..]), (200, &b"ok"[..]));
        // Blocking on purpose: the runtime must not see the close first.
        close_tx.send(()).unwrap();
        closed_rx.recv().unwrap();
        pool.send(request(&url, method)).await.map(|r| r.status())
    }

    #[tokio::test]
    async fn idempotent_request_lost_to_an_idle_close_is_sent_again() {
        for method in [http::Method::GET, http::Method::DELETE] {
            let status = second_request_after_idle_close(method.clone()).await;
            assert_eq!(status.unwrap().as_u16(), 200, "{method}");
        }
    }

    /// A POST may have had its effect: it is never sent twice.
    #[tokio::test]
    async fn post_lost_to_an_idle_close_is_not_sent_again() {
        let result = second_request_after_idle_close(http::Method::POST).await;
        assert!(matches!(result, Err(PoolError::Request)));
    }

    /// A body dropped before its end leaves the connection unusable: it is
    /// not pooled, and the next request gets a fresh one.
    #[tokio::test]
    async fn body_dropped_early_is_not_pooled() {
        let up = upstream(200, "hello", false).await;
        let pool = pool(&up);
        let resp = pool
            .send(request(&up.url, http::Method::GET))
            .await
            .unwrap();
        drop(resp);
        let (status, body) = send(&pool, request(&up.url, http::Method::GET)).await;
        assert_eq!((status.as_u16(), &body[..]), (200, &b"hello"[..]));
        assert_eq!(up.connections.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn nothing_listening_is_a_connect_error() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = url::Url::parse(&format!("http://{}", listener.local_addr().unwrap())).unwrap();
        drop(listener);
        let pool = Pool::new(&url, Duration::from_secs(5), 1).unwrap();
        let req = request(&url, http::Method::GET);
        assert!(matches!(pool.send(req).await, Err(PoolError::Connect)));
    }

    /// A body far larger than one read comes through whole, and read to
    /// the end, its connection is reused.
    #[tokio::test]
    async fn a_long_body_is_read_through_its_connection_and_reused() {
        let big: &'static str = Box::leak("x".repeat(4 << 20).into_boxed_str());
        let up = upstream(200, big, false).await;
        let pool = pool(&up);
        for _ in 0..2 {
            let (status, body) = send(&pool, request(&up.url, http::Method::GET)).await;
            assert_eq!((status.as_u16(), body.len()), (200, big.len()));
        }
        assert_eq!(up.connections.load(Ordering::SeqCst), 1);
    }

    /// A request body far larger than the socket buffers is written while
    /// the request waits for the head, and the answer comes back.
    #[tokio::test]
    async fn a_long_request_body_is_written_while_waiting_for_the_answer() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = url::Url::parse(&format!("http://{}", listener.local_addr().unwrap())).unwrap();
        let len = 4usize << 20;
        tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut buf = Vec::new();
            let mut chunk = vec![0u8; 64 << 10];
            let body_start = loop {
                let n = conn.read(&mut chunk).await.unwrap();
                assert!(n > 0, "closed before the head");
                buf.extend_from_slice(&chunk[..n]);
                if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break end + 4;
                }
            };
            let mut got = buf.len() - body_start;
            while got < len {
                let n = conn.read(&mut chunk).await.unwrap();
                assert!(n > 0, "closed before the body's end");
                got += n;
            }
            let answer = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{got}",
                got.to_string().len()
            );
            conn.write_all(answer.as_bytes()).await.unwrap();
        });
        let pool = Pool::new(&url, Duration::from_secs(5), 1).unwrap();
        let req = http::Request::builder()
            .method(http::Method::POST)
            .uri("/x")
            .header(http::header::HOST, url.authority())
            .header(http::header::CONTENT_LENGTH, len)
            .body(Body::from(vec![b'y'; len]))
            .unwrap();
        let (status, body) = send(&pool, req).await;
        assert_eq!(
            (status.as_u16(), &body[..]),
            (200, len.to_string().as_bytes())
        );
    }
}
