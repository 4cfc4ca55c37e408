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
//! connection which then closed without answering is sent again too, once.

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
/// How long a connection whose answer has ended may take to be ready for
/// the next request (the rest of the request body still going out). An
/// upstream that answered early and stopped reading would otherwise hold
/// the connection, its task and its buffers with no timer at all.
const GIVE_BACK_WAIT: Duration = Duration::from_secs(1);

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
    conn: Conn,
    since: Instant,
}

/// A connection: hyper's handle to send on, and its task, to abort when the
/// connection is given up (closing the socket at once, whatever hyper was
/// waiting for).
struct Conn {
    sender: SendRequest<Body>,
    task: tokio::task::AbortHandle,
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
        // A request the upstream received and then dropped its connection
        // on is sent again once at most: a request that crashes the upstream
        // ("query of death") must not go out once per idle connection.
        let mut replayed = false;
        loop {
            let (mut conn, idle_for) = match slot.checkout() {
                Some((conn, idle_for)) => (conn, Some(idle_for)),
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
                .filter(|idle| !replayed && *idle >= self.racy_idle)
                .and_then(|_| replayable(&req));
            match conn.sender.try_send_request(req).await {
                Ok(resp) => {
                    if resp.status() == http::StatusCode::SWITCHING_PROTOCOLS {
                        // The connection now belongs to the upgraded stream.
                        return Ok(resp.map(Body::new));
                    }
                    let slot = Arc::clone(slot);
                    return Ok(resp.map(|inner| Body::new(PooledBody::new(inner, conn, slot))));
                }
                Err(mut e) => match (e.take_message(), copy) {
                    // Not sent: the idle connection was closed under us.
                    (Some(unsent), _) if idle_for.is_some() => req = unsent,
                    // Sent, but the connection closed before any answer.
                    (None, Some(copy)) if e.error().is_incomplete_message() => {
                        req = copy.with_body(Body::empty());
                        replayed = true;
                    }
                    _ => {
                        tracing::debug!(error = %e.error(), "upstream request failed");
                        return Err(PoolError::Request);
                    }
                },
            }
        }
    }

    async fn connect(&self) -> Result<Conn, PoolError> {
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
        let task = tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "upstream connection closed with an error");
            }
        })
        .abort_handle();
        Ok(Conn { sender, task })
    }
}

impl Slot {
    /// The most recently returned connection that is still usable, and how
    /// long it has been idle.
    fn checkout(&self) -> Option<(Conn, Duration)> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(Idle { conn, since }) = idle.pop() {
            let idle_for = since.elapsed();
            if conn.sender.is_ready() && idle_for < IDLE_TIMEOUT {
                return Some((conn, idle_for));
            }
        }
        None
    }

    fn checkin(&self, conn: Conn) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        // Drop one stale connection from the bottom per return, so a stack
        // that stops being used down there does not keep them open forever.
        if idle
            .first()
            .is_some_and(|c| c.conn.sender.is_closed() || c.since.elapsed() >= IDLE_TIMEOUT)
        {
            idle.remove(0);
        }
        if idle.len() < MAX_IDLE {
            idle.push(Idle {
                conn,
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
fn give_back(mut conn: Conn, slot: Arc<Slot>) {
    if conn.sender.is_ready() {
        slot.checkin(conn);
    } else if !conn.sender.is_closed()
        && let Ok(rt) = tokio::runtime::Handle::try_current()
    {
        rt.spawn(async move {
            match tokio::time::timeout(GIVE_BACK_WAIT, conn.sender.ready()).await {
                Ok(Ok(())) => slot.checkin(conn),
                _ => conn.task.abort(),
            }
        });
    } else {
        conn.task.abort();
    }
}

/// An upstream response body that returns its connection to the pool once
/// it has been read to the end (dropped early, the connection closes).
struct PooledBody {
    inner: Incoming,
    conn: Option<(Conn, Arc<Slot>)>,
}

impl PooledBody {
    fn new(inner: Incoming, conn: Conn, slot: Arc<Slot>) -> Self {
        let mut body = Self {
            inner,
            conn: Some((conn, slot)),
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
        if let Some((conn, slot)) = self.conn.take() {
            give_back(conn, slot);
        }
    }

    /// The answer broke or was not read to its end: the connection is
    /// unusable, closed now rather than when hyper next looks at it.
    fn discard(&mut self) {
        if let Some((conn, _)) = self.conn.take() {
            conn.task.abort();
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
            Poll::Ready(Some(Err(_))) => this.discard(),
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
        self.discard();
    }
}

#[cfg(test)]
mod tests;
