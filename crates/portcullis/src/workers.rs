//! Serving workers: `server.workers` threads, each running its own
//! single-threaded tokio runtime that serves the connections handed to it
//! to their end (the nginx worker model). One acceptor on the caller's
//! runtime takes connections from the public listener and gives each to the
//! worker with the fewest open connections.
//!
//! A connection, its requests and the upstream connections they use stay on
//! one thread, so a proxied request never waits for a wake-up on another
//! thread; one multi-threaded runtime spent about a third more CPU per
//! request (see README, Performance). Each worker has its own upstream pools
//! ([`current`] picks them). Background tasks (GC, IdP refresh, the admin
//! listener, store drivers) stay on the caller's runtime.
//!
//! Both listeners (public, and admin via [`serve_admin`]) serve their
//! connections with the same code and the `[server]` connection limits
//! ([`ConnectionLimits`]): a slot under `max_connections` taken before
//! accepting (at the cap new connections wait in the backlog), hyper's head
//! size, header count and head timer, and a per-connection watchdog for the
//! first head and for idleness (no request in flight, no bytes moving).

use std::{
    cell::Cell,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use axum::serve::Listener;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch},
};

use crate::config::ConnectionLimits;

thread_local! {
    static WORKER: Cell<usize> = const { Cell::new(0) };
}

/// The index of the serving worker running on this thread; 0 on any other
/// thread (tests that serve the router on their own runtime use pool 0).
pub(crate) fn current() -> usize {
    WORKER.with(Cell::get)
}

pub(crate) type App = crate::http::PublicService;

/// Open connections per worker, to hand each new one to the least busy.
type Load = Arc<[AtomicUsize]>;

/// An accepted connection on its way to a worker, with its slot under
/// `server.max_connections`.
type Accepted = (std::net::TcpStream, OwnedSemaphorePermit);

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
    let slots = Arc::new(Semaphore::new(limits.max_connections));
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

/// Take a slot under `server.max_connections` (waiting while all are taken:
/// the listener is not polled, so new connections queue in the kernel
/// backlog and no open one is disturbed), then a connection. `None` once
/// `stop` resolves.
async fn next_connection(
    name: &'static str,
    listener: &mut TcpListener,
    slots: &Arc<Semaphore>,
    full: &mut bool,
    stop: impl Future<Output = ()>,
) -> Option<(TcpStream, OwnedSemaphorePermit)> {
    let mut stop = std::pin::pin!(stop);
    let permit = match slots.clone().try_acquire_owned() {
        Ok(p) => p,
        Err(_) => {
            if !*full {
                *full = true;
                tracing::warn!(
                    listener = name,
                    "connection limit reached (server.max_connections): new connections wait in the backlog"
                );
                metrics::counter!(crate::metrics::CONNECTION_LIMIT_REACHED_TOTAL, "listener" => name)
                    .increment(1);
            }
            tokio::select! {
                biased;
                () = &mut stop => return None,
                p = slots.clone().acquire_owned() => p.ok()?,
            }
        }
    };
    if *full && slots.available_permits() > 0 {
        *full = false;
        tracing::info!(listener = name, "connection limit: accepting again");
    }
    tokio::select! {
        biased;
        () = &mut stop => None,
        // Logs and backs off on errors such as EMFILE, as axum::serve does.
        (stream, _) = Listener::accept(listener) => Some((stream, permit)),
    }
}

/// Take connections from `listener` and hand each to the worker with the
/// fewest open ones, until the drain starts or the workers are cut; the
/// listener closes on return, so new connections are refused from then on.
async fn accept(
    mut listener: TcpListener,
    handoff: Vec<mpsc::UnboundedSender<Accepted>>,
    load: Load,
    slots: Arc<Semaphore>,
    drain: watch::Receiver<bool>,
    cut: watch::Receiver<bool>,
) {
    let mut full = false;
    loop {
        let (mut drain, mut cut) = (drain.clone(), cut.clone());
        let stop = async move {
            tokio::select! {
                _ = drain.wait_for(|v| *v) => {},
                _ = cut.wait_for(|v| *v) => {},
            }
        };
        let Some((stream, permit)) =
            next_connection("public", &mut listener, &slots, &mut full, stop).await
        else {
            return;
        };
        let index = least_loaded(&load);
        load[index].fetch_add(1, Ordering::Relaxed);
        let handed = stream
            .into_std()
            .map(|s| handoff[index].send((s, permit)).is_ok());
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
            let Some((stream, permit)) = self.rx.recv().await else {
                // The acceptor has stopped (shutdown): nothing more comes.
                return std::future::pending().await;
            };
            let open = OpenGuard {
                load: Some((self.load.clone(), self.index)),
                _slot: permit,
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

/// Holds a connection's slot under `server.max_connections` and counts it
/// as open on its worker, until dropped (also after a WebSocket upgrade:
/// the tunnel owns the socket then).
struct OpenGuard {
    load: Option<(Load, usize)>,
    _slot: OwnedSemaphorePermit,
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        if let Some((load, index)) = &self.load {
            load[*index].fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// What the idle and head watchdog of one connection looks at: requests
/// begun, requests in flight (until their response body is done) and a
/// count of reads and writes that made progress.
#[derive(Default)]
struct Activity {
    begun: AtomicUsize,
    in_flight: AtomicUsize,
    io: AtomicU64,
}

/// A served connection: the socket, its slot and its activity counters.
struct Counted {
    stream: TcpStream,
    activity: Arc<Activity>,
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
            _open: open,
        };
        Some((counted, peer))
    }

    fn moved<T>(&self, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if poll.is_ready() {
            self.activity.io.fetch_add(1, Ordering::Relaxed);
        }
        poll
    }
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.stream).poll_read(cx, buf);
        self.moved(poll)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.moved(poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.moved(poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
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
    WORKER.with(|w| w.set(index));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let anchor = anchor_period(&app.shared().config.routes);
    runtime.block_on(async move {
        tokio::spawn(keep_timer_armed(anchor));
        tokio::select! {
            () = serve_connections(listener, app, limits, drain) => Ok(()),
            _ = cut.wait_for(|v| *v) => Ok(()),
        }
    })
}

/// tokio's time driver wakes its own thread (an eventfd write, then one
/// more epoll event) whenever a timer is set that is due sooner than every
/// timer it knew of when it last went to sleep. With none pending, that is
/// every proxied request's upstream timeout, about one request in five under
/// load. A standing timer never due later than those deadlines (`period` at
/// most the shortest route timeout) keeps the driver's next wake-up early
/// enough; it costs one wake-up per `period` on an idle worker.
async fn keep_timer_armed(period: Duration) {
    loop {
        tokio::time::sleep(period).await;
    }
}

/// The shortest route timeout, kept between 1 s and 60 s: below that the
/// idle wake-ups would cost more than they save; a route with a shorter
/// timeout still works, its requests just wake the driver as before.
fn anchor_period(routes: &[crate::config::RouteConfig]) -> Duration {
    routes
        .iter()
        .map(|r| r.timeout)
        .min()
        .unwrap_or(Duration::from_secs(60))
        .clamp(Duration::from_secs(1), Duration::from_secs(60))
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
    let builder = Arc::new(builder(&limits));
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
        spawn_connection("public", io, service, &builder, &limits, &drain, &open_rx);
    }
    drop(open_rx);
    open_tx.closed().await;
}

/// hyper's connection settings from the limits: HTTP/1 head size, header
/// count and head timeout (hyper answers 431 to an oversized head).
fn builder(limits: &ConnectionLimits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_headers(limits.max_headers)
        // The read buffer's ceiling: a head that does not fit gets 431.
        .max_buf_size(limits.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
    builder
}

/// Serve one connection on the current runtime: hyper's connection (with
/// upgrades) raced against the drain and against [`watchdog`].
fn spawn_connection<S, B>(
    name: &'static str,
    io: Counted,
    service: S,
    builder: &Arc<auto::Builder<TokioExecutor>>,
    limits: &ConnectionLimits,
    drain: &watch::Receiver<bool>,
    open: &watch::Receiver<()>,
) where
    S: hyper::service::Service<
            http::Request<hyper::body::Incoming>,
            Response = http::Response<B>,
            Error = std::convert::Infallible,
        > + Send
        + 'static,
    S::Future: Unpin + Send + 'static,
    B: hyper::body::Body<Data = bytes::Bytes> + Unpin + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let activity = io.activity.clone();
    let service = Tracked {
        inner: service,
        activity: activity.clone(),
    };
    let (builder, limits, mut drain, open) =
        (builder.clone(), *limits, drain.clone(), open.clone());
    tokio::spawn(async move {
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
        let mut conn = std::pin::pin!(conn);
        tokio::select! {
            biased;
            result = conn.as_mut() => {
                if let Err(e) = result {
                    // hyper's own head timer (a later HTTP/1 head, or the
                    // gap after a response).
                    if e.downcast_ref::<hyper::Error>().is_some_and(hyper::Error::is_timeout) {
                        closed(name, "header_timeout");
                    }
                    tracing::trace!(error = %e, "connection ended with an error");
                }
            }
            () = async { drop(drain.wait_for(|v| *v).await) } => {
                conn.as_mut().graceful_shutdown();
                let _ = conn.await;
            }
            // Dropping the connection closes the socket.
            reason = watchdog(&activity, &limits) => closed(name, reason),
        }
        drop(open);
    });
}

fn closed(listener: &'static str, reason: &'static str) {
    tracing::debug!(listener, reason, "connection closed by a limit");
    metrics::counter!(
        crate::metrics::CONNECTIONS_CLOSED_TOTAL,
        "listener" => listener,
        "reason" => reason
    )
    .increment(1);
}

/// Resolves, with the reason, when the connection should be closed:
/// - no request begun within `header_read_timeout` of the connection's start
///   (a slow or silent first head, HTTP/1 or HTTP/2; hyper's own head timer
///   covers later HTTP/1 heads);
/// - no request in flight and no read or write for `idle_timeout` (checked
///   every `idle_timeout`, so an idle connection closes after one to two
///   periods). A streaming response is in flight until its body ends.
async fn watchdog(activity: &Activity, limits: &ConnectionLimits) -> &'static str {
    use tokio::time::{Instant, sleep_until};
    let head_deadline = Instant::now() + limits.header_read_timeout;
    let mut seen = activity.io.load(Ordering::Relaxed);
    loop {
        let mut next = Instant::now() + limits.idle_timeout;
        let first_head = activity.begun.load(Ordering::Relaxed) == 0;
        if first_head {
            next = next.min(head_deadline);
        }
        sleep_until(next).await;
        if activity.begun.load(Ordering::Relaxed) == 0 && Instant::now() >= head_deadline {
            return "header_timeout";
        }
        let now = activity.io.load(Ordering::Relaxed);
        if now == seen && activity.in_flight.load(Ordering::Relaxed) == 0 {
            return "idle";
        }
        seen = now;
    }
}

/// Counts the requests of a connection in [`Activity`]: begun when hyper
/// calls the service, in flight until the response body is dropped.
struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S, B> hyper::service::Service<http::Request<hyper::body::Incoming>> for Tracked<S>
where
    S: hyper::service::Service<http::Request<hyper::body::Incoming>, Response = http::Response<B>>,
    S::Future: Unpin,
{
    type Response = http::Response<TrackedBody<B>>;
    type Error = S::Error;
    type Future = TrackedFuture<S::Future>;

    fn call(&self, req: http::Request<hyper::body::Incoming>) -> Self::Future {
        self.activity.begun.fetch_add(1, Ordering::Relaxed);
        self.activity.in_flight.fetch_add(1, Ordering::Relaxed);
        TrackedFuture {
            inner: self.inner.call(req),
            guard: Some(InFlight(self.activity.clone())),
        }
    }
}

/// One request in flight on its connection until dropped.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

struct TrackedFuture<F> {
    inner: F,
    guard: Option<InFlight>,
}

impl<F, B, E> Future for TrackedFuture<F>
where
    F: Future<Output = Result<http::Response<B>, E>> + Unpin,
{
    type Output = Result<http::Response<TrackedBody<B>>, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let result = std::task::ready!(Pin::new(&mut self.inner).poll(cx));
        let guard = self.guard.take();
        Poll::Ready(result.map(|response| {
            response.map(|inner| TrackedBody {
                inner,
                _guard: guard,
            })
        }))
    }
}

/// A response body that keeps its request in flight until hyper drops it
/// (after the last byte, or when the client goes away).
pub(crate) struct TrackedBody<B> {
    inner: B,
    _guard: Option<InFlight>,
}

impl<B: hyper::body::Body + Unpin> hyper::body::Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
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
    let builder = Arc::new(builder(&limits));
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut full = false;
    loop {
        let mut stop = drain.clone();
        let stop = async move { drop(stop.wait_for(|v| *v).await) };
        let Some((stream, permit)) =
            next_connection("admin", &mut listener, &slots, &mut full, stop).await
        else {
            break;
        };
        let open = OpenGuard {
            load: None,
            _slot: permit,
        };
        let Some((io, _)) = Counted::new(stream, open) else {
            continue;
        };
        let service = Admin(router.clone());
        spawn_connection("admin", io, service, &builder, &limits, &drain, &open_rx);
    }
    drop(listener);
    drop(open_rx);
    open_tx.closed().await;
}

/// The admin router as a hyper service (not on the hot path: one boxed
/// future per request).
struct Admin(axum::Router);

impl hyper::service::Service<http::Request<hyper::body::Incoming>> for Admin {
    type Response = axum::response::Response;
    type Error = std::convert::Infallible;
    type Future = Pin<
        Box<dyn Future<Output = Result<axum::response::Response, std::convert::Infallible>> + Send>,
    >;

    fn call(&self, req: http::Request<hyper::body::Incoming>) -> Self::Future {
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

impl hyper::service::Service<http::Request<hyper::body::Incoming>> for Connection {
    type Response = axum::response::Response;
    type Error = std::convert::Infallible;
    type Future = crate::http::PublicFuture;

    fn call(&self, req: http::Request<hyper::body::Incoming>) -> Self::Future {
        // Origin-form (`/path`) and absolute-form (hyper keeps the path) reach
        // the app; authority-form or a bare word (`GET host:443`, `GET aaa`)
        // has no path to route on: 400 here rather than a confused answer
        // further in (it was a 500). `OPTIONS *` passes.
        let path = req.uri().path();
        if !path.starts_with('/') && path != "*" {
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
    fn the_standing_timer_is_due_no_later_than_any_route_deadline() {
        let route = |secs: f64| crate::config::RouteConfig {
            prefix: "/api/".into(),
            upstream: url::Url::parse("http://127.0.0.1:9").unwrap(),
            token: crate::config::TokenMode::User,
            require_roles: Vec::new(),
            strip_prefix: false,
            timeout: Duration::from_secs_f64(secs),
            security_headers: false,
            case_insensitive: false,
            check_origin: true,
        };
        assert_eq!(
            anchor_period(&[route(30.0), route(5.0)]),
            Duration::from_secs(5)
        );
        // Bounded: no wake-up storm for tiny timeouts, none rarer than a minute.
        assert_eq!(anchor_period(&[route(0.2)]), Duration::from_secs(1));
        assert_eq!(anchor_period(&[route(600.0)]), Duration::from_secs(60));
        assert_eq!(anchor_period(&[]), Duration::from_secs(60));
    }

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
