//! Serving workers: `server.workers` threads, each running its own
//! single-threaded tokio runtime that serves the connections handed to it
//! to their end (the nginx worker model). One acceptor on the caller's
//! runtime takes connections from the public listener and gives each to the
//! worker with the fewest open connections.
//!
//! A connection, its requests and the upstream connections they use stay on
//! one thread, so a proxied request never waits for a wake-up on another
//! thread; one multi-threaded runtime spent about a third more CPU per
//! request (see docs/performance.md). Each worker has its own upstream pools
//! ([`current`] picks them). Background tasks (GC, IdP refresh, the admin
//! listener, store drivers) stay on the caller's runtime.
//!
//! Both listeners (public, and admin via [`serve_admin`]) serve their
//! connections with the same code and the `[server]` connection limits
//! ([`ConnectionLimits`]): a slot under `max_connections` taken before
//! accepting (at the cap new connections wait in the backlog), at most
//! `max_connections_per_ip` per client ([`per_ip`]; more are closed at
//! once), hyper's head size, header count and head timer, HTTP/2 stream
//! caps, a timer on request bodies ([`request_body`]), and a per-connection
//! watchdog for the first head and for idleness (no request begun or in
//! flight: HTTP/2 PINGs and window updates do not count). Idle HTTP/1
//! connections wait outside hyper, without its buffers ([`connection`]).

mod connection;
mod gate;
mod per_ip;
mod request_body;

use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use axum::serve::Listener;
use bytes::Bytes;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc, watch},
};

use self::{
    connection::{Builders, spawn_connection},
    per_ip::{IpSlot, PerIp},
    request_body::{BodyState, RequestBody},
};
use crate::config::ConnectionLimits;

pub(crate) type App = crate::http::PublicService;

/// Open connections per worker, to hand each new one to the least busy.
type Load = Arc<[AtomicUsize]>;

/// An accepted connection on its way to a worker, with its slots under
/// `server.max_connections` and `server.max_connections_per_ip`.
type Accepted = (std::net::TcpStream, Slots);

/// A connection's slots under the listener's limits, held until it closes.
struct Slots {
    _total: OwnedSemaphorePermit,
    _client: Option<IpSlot>,
}

/// Serve `app` on `listener` with `workers` threads until `drain` turns true:
/// then the listener closes, in-flight requests may finish for up to
/// `drain_timeout`, and the rest is cut. Returns the first error a worker
/// met starting up.
pub(crate) async fn serve(
    app: App,
    listener: TcpListener,
    workers: usize,
    limits: ConnectionLimits,
    drain: watch::Receiver<bool>,
    drain_timeout: Duration,
) -> io::Result<()> {
    let count = workers.max(1);
    let load: Load = (0..count).map(|_| AtomicUsize::new(0)).collect();
    let (cut_tx, cut_rx) = watch::channel(false);
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let mut handoff = Vec::with_capacity(count);
    for index in 0..count {
        let (tx, rx) = mpsc::unbounded_channel();
        handoff.push(tx);
        let worker_listener = Handed {
            rx,
            load: load.clone(),
            index,
        };
        let (app, drain, cut, done) = (app.clone(), drain.clone(), cut_rx.clone(), done_tx.clone());
        std::thread::Builder::new()
            .name(format!("portcullis-worker-{index}"))
            .spawn(move || {
                let result = run_worker(index, worker_listener, app, limits, drain, cut);
                // Sent after the runtime is gone: its connections are closed.
                let _ = done.send(result);
            })?;
    }
    drop(done_tx);

    let mut first_error = None;
    let slots = Limiter::new(&limits);
    let mut accepting = std::pin::pin!(accept(
        listener,
        handoff,
        load,
        slots,
        drain.clone(),
        cut_tx.subscribe()
    ));
    let mut accepted_all = false;
    let mut drain_started = drain.clone();
    let mut deadline = std::pin::pin!(async move {
        let _ = drain_started.wait_for(|v| *v).await;
        tokio::time::sleep(drain_timeout).await;
    });
    loop {
        tokio::select! {
            result = done_rx.recv() => {
                let Some(result) = result else { break };
                if let Err(e) = result {
                    tracing::error!(error = %e, "serving worker failed");
                    first_error.get_or_insert(e);
                }
                // A worker with nothing to drain can finish before the drain
                // is seen here; that is no failure. Otherwise one worker is
                // down: stop the others rather than limp on.
                if first_error.is_some() || !*drain.borrow() {
                    let _ = cut_tx.send(true);
                }
            }
            () = &mut accepting, if !accepted_all => accepted_all = true,
            () = &mut deadline, if !*cut_tx.borrow() => {
                tracing::warn!("shutdown: drain timeout reached, closing remaining connections");
                let _ = cut_tx.send(true);
            }
        }
    }
    tracing::debug!("serving workers stopped");
    first_error.map_or(Ok(()), Err)
}

/// A listener's connection limits: the slots under `server.max_connections`
/// and the connections of each client.
struct Limiter {
    slots: Arc<Semaphore>,
    per_ip: Option<Arc<PerIp>>,
    /// At the cap, so "accepting again" is logged once it frees.
    full: bool,
}

impl Limiter {
    fn new(limits: &ConnectionLimits) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(limits.max_connections)),
            per_ip: PerIp::new(limits.max_connections_per_ip),
            full: false,
        }
    }
}

/// Take a slot under `server.max_connections` (waiting while all are taken:
/// the listener is not polled, so new connections queue in the kernel
/// backlog and no open one is disturbed), then a connection; one from a
/// client already at `server.max_connections_per_ip` is closed at once and
/// the next taken. `None` once `stop` resolves.
async fn next_connection(
    name: &'static str,
    listener: &mut TcpListener,
    limiter: &mut Limiter,
    stop: impl Future<Output = ()>,
) -> Option<(TcpStream, Slots)> {
    let mut stop = std::pin::pin!(stop);
    let slots = &limiter.slots;
    let permit = match slots.clone().try_acquire_owned() {
        Ok(p) => p,
        Err(_) => {
            if !limiter.full {
                limiter.full = true;
                tracing::warn!(
                    listener = name,
                    "connection limit reached (server.max_connections): new connections wait in the backlog"
                );
                reached(name, "max_connections");
            }
            tokio::select! {
                biased;
                () = &mut stop => return None,
                p = slots.clone().acquire_owned() => p.ok()?,
            }
        }
    };
    if limiter.full && slots.available_permits() > 0 {
        limiter.full = false;
        tracing::info!(listener = name, "connection limit: accepting again");
    }
    loop {
        let (stream, peer) = tokio::select! {
            biased;
            () = &mut stop => return None,
            // Logs and backs off on errors such as EMFILE, as axum::serve does.
            accepted = Listener::accept(listener) => accepted,
        };
        let client = match &limiter.per_ip {
            None => None,
            Some(per_ip) => match per_ip.take(peer.ip()) {
                Some(slot) => Some(slot),
                None => {
                    // Dropped: closed before a byte is read. Counted, not
                    // logged: a flood would flood the log too.
                    reached(name, "per_ip");
                    continue;
                }
            },
        };
        let slots = Slots {
            _total: permit,
            _client: client,
        };
        return Some((stream, slots));
    }
}

fn reached(listener: &'static str, limit: &'static str) {
    metrics::counter!(
        crate::metrics::CONNECTION_LIMIT_REACHED_TOTAL,
        "listener" => listener,
        "limit" => limit
    )
    .increment(1);
}

/// Take connections from `listener` and hand each to the worker with the
/// fewest open ones, until the drain starts or the workers are cut; the
/// listener closes on return, so new connections are refused from then on.
async fn accept(
    mut listener: TcpListener,
    handoff: Vec<mpsc::UnboundedSender<Accepted>>,
    load: Load,
    mut limiter: Limiter,
    drain: watch::Receiver<bool>,
    cut: watch::Receiver<bool>,
) {
    loop {
        let (mut drain, mut cut) = (drain.clone(), cut.clone());
        let stop = async move {
            tokio::select! {
                _ = drain.wait_for(|v| *v) => {},
                _ = cut.wait_for(|v| *v) => {},
            }
        };
        let Some((stream, slots)) =
            next_connection("public", &mut listener, &mut limiter, stop).await
        else {
            return;
        };
        let index = least_loaded(&load);
        load[index].fetch_add(1, Ordering::Relaxed);
        let handed = stream
            .into_std()
            .map(|s| handoff[index].send((s, slots)).is_ok());
        if !matches!(handed, Ok(true)) {
            load[index].fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// The worker with the fewest open connections (the first on a tie).
fn least_loaded(load: &[AtomicUsize]) -> usize {
    load.iter()
        .enumerate()
        .min_by_key(|(_, open)| open.load(Ordering::Relaxed))
        .map_or(0, |(i, _)| i)
}

/// A worker's side of the hand-off: the connections the acceptor gives it.
struct Handed {
    rx: mpsc::UnboundedReceiver<Accepted>,
    load: Load,
    index: usize,
}

impl Handed {
    async fn next(&mut self) -> (Counted, SocketAddr) {
        loop {
            let Some((stream, slots)) = self.rx.recv().await else {
                // The acceptor has stopped (shutdown): nothing more comes.
                return std::future::pending().await;
            };
            let open = OpenGuard {
                load: Some((self.load.clone(), self.index)),
                _slots: slots,
            };
            // Registers the socket with this worker's runtime.
            let stream = match TcpStream::from_std(stream) {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(error = %e, "cannot adopt an accepted connection");
                    continue;
                }
            };
            match Counted::new(stream, open) {
                Some(accepted) => return accepted,
                None => continue,
            }
        }
    }
}

/// Holds a connection's slots under the listener's limits and counts it
/// as open on its worker, until dropped (also after a WebSocket upgrade:
/// the tunnel owns the socket then).
struct OpenGuard {
    load: Option<(Load, usize)>,
    _slots: Slots,
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        if let Some((load, index)) = &self.load {
            load[*index].fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// What the idle and head watchdog of one connection looks at: requests
/// begun and requests in flight (until their response body is done). Bytes
/// on the wire do not count: HTTP/2 PINGs, SETTINGS or WINDOW_UPDATEs
/// without a request must not keep a connection open (a slow head is
/// the watchdog's head limit's: no request begins). `cut` closes the connection at once (a request
/// body that timed out after its response began).
///
/// For parking ([`connection`]): `reads` counts reads that returned bytes,
/// `idle_reads` is its value when the last response ended, `write_blocked`
/// says hyper still holds bytes the client has not taken (its last write
/// was refused), `upgrade_asked` that a request asked for an upgrade (hyper
/// then keeps it pending until its connection ends, and gives the socket
/// to it: such a connection is never parked), and `parking` tells the
/// socket to skip the shutdown hyper sends when it lets go.
#[derive(Default)]
struct Activity {
    begun: AtomicUsize,
    in_flight: AtomicUsize,
    cut: Notify,
    reads: AtomicUsize,
    idle_reads: AtomicUsize,
    write_blocked: AtomicBool,
    upgrade_asked: AtomicBool,
    parking: AtomicBool,
}

impl Activity {
    /// No byte read since the last response ended (or since the start):
    /// hyper's read buffer holds no part of a next request.
    fn nothing_read_since_response(&self) -> bool {
        self.reads.load(Ordering::Relaxed) == self.idle_reads.load(Ordering::Relaxed)
    }

    /// hyper is idle: no request in flight, nothing read since the last
    /// response, and that response wholly written. Until it is written
    /// hyper may still be about to close (`Connection: close`, HTTP/1.0, a
    /// request body left unread): parking then would keep serving a
    /// connection hyper ended, and read what is left of an unread body as
    /// a request.
    fn idle_in_hyper(&self) -> bool {
        self.in_flight.load(Ordering::Relaxed) == 0
            && self.nothing_read_since_response()
            && !self.write_blocked.load(Ordering::Relaxed)
            && !self.upgrade_asked.load(Ordering::Relaxed)
    }

    /// Notes whether a write went through; touches the flag only when it
    /// changes.
    fn wrote<T>(&self, poll: Poll<T>) -> Poll<T> {
        let blocked = poll.is_pending();
        if self.write_blocked.load(Ordering::Relaxed) != blocked {
            self.write_blocked.store(blocked, Ordering::Relaxed);
        }
        poll
    }
}

/// A served connection: the socket, its slots and its activity counters.
struct Counted {
    stream: TcpStream,
    activity: Arc<Activity>,
    /// Bytes read from the socket by an earlier hyper connection but not
    /// used by it (a head begun before parking), read first.
    unread: Bytes,
    _open: OpenGuard,
}

impl Counted {
    /// `None` when the peer has already gone.
    fn new(stream: TcpStream, open: OpenGuard) -> Option<(Self, SocketAddr)> {
        let peer = stream.peer_addr().ok()?;
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        let counted = Self {
            stream,
            activity: Arc::default(),
            unread: Bytes::new(),
            _open: open,
        };
        Some((counted, peer))
    }
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.unread.is_empty() {
            let n = self.unread.len().min(buf.remaining());
            buf.put_slice(&self.unread.split_to(n));
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let result = std::task::ready!(Pin::new(&mut self.stream).poll_read(cx, buf));
        if buf.filled().len() > before {
            self.activity.reads.fetch_add(1, Ordering::Relaxed);
        }
        Poll::Ready(result)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.activity.wrote(poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.activity.wrote(poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // hyper's last act on a connection it lets go; a parked one stays open.
        if self.activity.parking.load(Ordering::Relaxed) {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// One worker thread: a current-thread runtime serving the connections it
/// is handed until `drain` (graceful) or `cut` (immediate); dropping the
/// runtime closes whatever is still open.
fn run_worker(
    index: usize,
    listener: Handed,
    app: App,
    limits: ConnectionLimits,
    drain: watch::Receiver<bool>,
    mut cut: watch::Receiver<bool>,
) -> io::Result<()> {
    crate::worker_index::set(index);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // The upstream timeouts of this worker's requests (`deadlines.rs`).
    let ticker = crate::deadlines::install();
    runtime.block_on(async move {
        tokio::spawn(ticker);
        tokio::select! {
            () = serve_connections(listener, app, limits, drain) => Ok(()),
            _ = cut.wait_for(|v| *v) => Ok(()),
        }
    })
}

/// Accept and serve connections until `drain` turns true, then let the open
/// ones finish their requests (each is told to close once idle) and return
/// when the last has closed.
///
/// hyper's connection builder (HTTP/1.1, and HTTP/2 with prior knowledge, as
/// `axum::serve` offers) is driven here directly: axum's wrapper adds a tower
/// adapter, a request-body mapping, a `ConnectInfo` extension and a clone of
/// the service on every request.
async fn serve_connections(
    mut listener: Handed,
    app: App,
    limits: ConnectionLimits,
    drain: watch::Receiver<bool>,
) {
    // Held by every connection task; `closed()` resolves when all are done.
    let (open_tx, open_rx) = watch::channel(());
    // One per worker, so cloning it per request touches no cache line the
    // other workers write.
    let app = Arc::new(app);
    let builders = Arc::new(Builders::new(&limits));
    let mut stop = drain.clone();
    loop {
        let (io, peer) = tokio::select! {
            biased;
            _ = stop.wait_for(|v| *v) => break,
            accepted = listener.next() => accepted,
        };
        let service = Connection {
            app: app.clone(),
            peer,
        };
        spawn_connection("public", io, service, &builders, &limits, &drain, &open_rx);
    }
    drop(open_rx);
    open_tx.closed().await;
}

/// Counts the requests of a connection in [`Activity`]: begun when hyper
/// calls the service, in flight until the response body is dropped. Puts
/// `server.body_read_timeout` on the request body ([`RequestBody`]).
struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
    body_read_timeout: Duration,
    listener: &'static str,
}

impl<S> Tracked<S> {
    fn new(
        inner: S,
        activity: &Arc<Activity>,
        limits: &ConnectionLimits,
        listener: &'static str,
    ) -> Self {
        Self {
            inner,
            activity: activity.clone(),
            body_read_timeout: limits.body_read_timeout,
            listener,
        }
    }
}

impl<S, B> hyper::service::Service<http::Request<hyper::body::Incoming>> for Tracked<S>
where
    S: hyper::service::Service<http::Request<RequestBody>, Response = http::Response<B>>,
    S::Future: Unpin,
{
    type Response = http::Response<TrackedBody<B>>;
    type Error = S::Error;
    type Future = TrackedFuture<S::Future>;

    fn call(&self, req: http::Request<hyper::body::Incoming>) -> Self::Future {
        self.activity.begun.fetch_add(1, Ordering::Relaxed);
        self.activity.in_flight.fetch_add(1, Ordering::Relaxed);
        // hyper's mark of an upgrade request (`Upgrade` on HTTP/1.1, CONNECT);
        // a plain request has no extensions, so this is one null check.
        if req
            .extensions()
            .get::<hyper::upgrade::OnUpgrade>()
            .is_some()
        {
            self.activity.upgrade_asked.store(true, Ordering::Relaxed);
        }
        let (parts, body) = req.into_parts();
        let (body, body_state) =
            RequestBody::new(body, self.body_read_timeout, &self.activity, self.listener);
        TrackedFuture {
            inner: self.inner.call(http::Request::from_parts(parts, body)),
            guard: Some(InFlight(self.activity.clone())),
            body_state,
        }
    }
}

/// One request in flight on its connection until dropped.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let activity = &self.0;
        // Bytes read after this belong to a next request (see `Activity`).
        let reads = activity.reads.load(Ordering::Relaxed);
        activity.idle_reads.store(reads, Ordering::Relaxed);
        activity.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

struct TrackedFuture<F> {
    inner: F,
    guard: Option<InFlight>,
    /// `Some` for a request with a body.
    body_state: Option<Arc<BodyState>>,
}

impl<F, B, E> Future for TrackedFuture<F>
where
    F: Future<Output = Result<http::Response<B>, E>> + Unpin,
{
    type Output = Result<http::Response<TrackedBody<B>>, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let result = std::task::ready!(Pin::new(&mut self.inner).poll(cx));
        let guard = self.guard.take();
        let timed_out = self.body_state.as_ref().is_some_and(|s| s.respond());
        Poll::Ready(result.map(|response| {
            if timed_out {
                // Whatever the handler made of the failed body (a 400, a
                // 502), the cause is the client's silence.
                return body_timeout_response(guard);
            }
            response.map(|inner| TrackedBody {
                inner: Some(inner),
                _guard: guard,
            })
        }))
    }
}

/// 408 for a request whose body stopped coming; the connection closes
/// after it (the rest of that body will not come either).
fn body_timeout_response<B>(guard: Option<InFlight>) -> http::Response<TrackedBody<B>> {
    let mut response = http::Response::new(TrackedBody {
        inner: None,
        _guard: guard,
    });
    *response.status_mut() = http::StatusCode::REQUEST_TIMEOUT;
    response.headers_mut().insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("close"),
    );
    response
}

/// A response body that keeps its request in flight until hyper drops it
/// (after the last byte, or when the client goes away); `inner` is `None`
/// for the gateway's empty 408.
pub(crate) struct TrackedBody<B> {
    inner: Option<B>,
    _guard: Option<InFlight>,
}

impl<B: hyper::body::Body + Unpin> hyper::body::Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        match &mut self.inner {
            Some(inner) => Pin::new(inner).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(B::is_end_stream)
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| hyper::body::SizeHint::with_exact(0), B::size_hint)
    }
}

/// Serve the admin router on `listener` (on the caller's runtime) with the
/// same connection limits as the public listener, until `drain` turns true;
/// then open connections finish their requests.
pub(crate) async fn serve_admin(
    router: axum::Router,
    mut listener: TcpListener,
    limits: ConnectionLimits,
    drain: watch::Receiver<bool>,
) {
    let (open_tx, open_rx) = watch::channel(());
    let builders = Arc::new(Builders::new(&limits));
    let mut limiter = Limiter::new(&limits);
    loop {
        let mut stop = drain.clone();
        let stop = async move { drop(stop.wait_for(|v| *v).await) };
        let Some((stream, slots)) =
            next_connection("admin", &mut listener, &mut limiter, stop).await
        else {
            break;
        };
        let open = OpenGuard {
            load: None,
            _slots: slots,
        };
        let Some((io, _)) = Counted::new(stream, open) else {
            continue;
        };
        let service = Admin(router.clone());
        spawn_connection("admin", io, service, &builders, &limits, &drain, &open_rx);
    }
    drop(listener);
    drop(open_rx);
    open_tx.closed().await;
}

/// The admin router as a hyper service (not on the hot path: one boxed
/// future per request).
#[derive(Clone)]
struct Admin(axum::Router);

impl hyper::service::Service<http::Request<RequestBody>> for Admin {
    type Response = axum::response::Response;
    type Error = std::convert::Infallible;
    type Future = Pin<
        Box<dyn Future<Output = Result<axum::response::Response, std::convert::Infallible>> + Send>,
    >;

    fn call(&self, req: http::Request<RequestBody>) -> Self::Future {
        use tower::ServiceExt as _;
        Box::pin(self.0.clone().oneshot(req.map(axum::body::Body::new)))
    }
}

/// The service of one accepted connection: the public service with the
/// peer's address (for `X-Forwarded-For`).
#[derive(Clone)]
struct Connection {
    app: Arc<App>,
    peer: SocketAddr,
}

impl hyper::service::Service<http::Request<RequestBody>> for Connection {
    type Response = axum::response::Response;
    type Error = std::convert::Infallible;
    type Future = crate::http::PublicFuture;

    fn call(&self, req: http::Request<RequestBody>) -> Self::Future {
        // Origin-form (`/path`) and absolute-form (hyper keeps the path) reach
        // the app; authority-form or a bare word (`GET host:443`, `GET aaa`)
        // has no path to route on: 400 here rather than a confused answer
        // further in (it was a 500). `OPTIONS *` passes, and so does CONNECT
        // (authority-form by definition): the pipeline's screen answers it
        // 405 with `Allow`, as for TRACE.
        let path = req.uri().path();
        if !path.starts_with('/') && path != "*" && req.method() != http::Method::CONNECT {
            tracing::debug!("request target without a path: 400");
            return Box::pin(std::future::ready(Ok(
                axum::response::IntoResponse::into_response(http::StatusCode::BAD_REQUEST),
            )));
        }
        crate::http::PublicService::serve(
            &self.app,
            req.map(axum::body::Body::new),
            Some(self.peer),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_connections_go_to_the_least_busy_worker() {
        let load: Vec<AtomicUsize> = [3, 1, 2].into_iter().map(AtomicUsize::new).collect();
        assert_eq!(least_loaded(&load), 1);
        load[1].store(5, Ordering::Relaxed);
        assert_eq!(least_loaded(&load), 2);
        load[2].store(3, Ordering::Relaxed);
        assert_eq!(least_loaded(&load), 0, "first of a tie");
    }
}
