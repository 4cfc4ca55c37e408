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

use std::{
    cell::Cell,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use axum::serve::{Listener, ListenerExt as _};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{mpsc, watch},
};

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

/// Serve `app` on `listener` with `workers` threads until `drain` turns true:
/// then the listener closes, in-flight requests may finish for up to
/// `drain_timeout`, and the rest is cut. Returns the first error a worker
/// met starting up.
pub(crate) async fn serve(
    app: App,
    listener: TcpListener,
    workers: usize,
    drain: watch::Receiver<bool>,
    drain_timeout: Duration,
) -> io::Result<()> {
    let local_addr = listener.local_addr()?;
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
            local_addr,
            load: load.clone(),
            index,
        };
        let (app, drain, cut, done) = (app.clone(), drain.clone(), cut_rx.clone(), done_tx.clone());
        std::thread::Builder::new()
            .name(format!("portcullis-worker-{index}"))
            .spawn(move || {
                let result = run_worker(index, worker_listener, app, drain, cut);
                // Sent after the runtime is gone: its connections are closed.
                let _ = done.send(result);
            })?;
    }
    drop(done_tx);

    let mut first_error = None;
    let mut accepting = std::pin::pin!(accept(
        listener,
        handoff,
        load,
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

/// Take connections from `listener` and hand each to the worker with the
/// fewest open ones, until the drain starts or the workers are cut; the
/// listener closes on return, so new connections are refused from then on.
async fn accept(
    mut listener: TcpListener,
    handoff: Vec<mpsc::UnboundedSender<std::net::TcpStream>>,
    load: Load,
    mut drain: watch::Receiver<bool>,
    mut cut: watch::Receiver<bool>,
) {
    loop {
        let stream = tokio::select! {
            biased;
            _ = drain.wait_for(|v| *v) => return,
            _ = cut.wait_for(|v| *v) => return,
            // Logs and backs off on errors such as EMFILE, as axum::serve does.
            (stream, _) = Listener::accept(&mut listener) => stream,
        };
        let index = least_loaded(&load);
        load[index].fetch_add(1, Ordering::Relaxed);
        let handed = stream.into_std().map(|s| handoff[index].send(s).is_ok());
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
    rx: mpsc::UnboundedReceiver<std::net::TcpStream>,
    local_addr: SocketAddr,
    load: Load,
    index: usize,
}

impl Listener for Handed {
    type Io = Counted;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Counted, SocketAddr) {
        loop {
            let Some(stream) = self.rx.recv().await else {
                // The acceptor has stopped (shutdown): nothing more comes.
                return std::future::pending().await;
            };
            let counted = Counted {
                _open: OpenGuard {
                    load: self.load.clone(),
                    index: self.index,
                },
                // Registers the socket with this worker's runtime.
                stream: match TcpStream::from_std(stream) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::debug!(error = %e, "cannot adopt an accepted connection");
                        continue;
                    }
                },
            };
            match counted.stream.peer_addr() {
                Ok(peer) => return (counted, peer),
                // Already closed by the peer.
                Err(_) => continue,
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local_addr)
    }
}

/// Counts a connection as open on its worker until dropped.
struct OpenGuard {
    load: Load,
    index: usize,
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.load[self.index].fetch_sub(1, Ordering::Relaxed);
    }
}

/// A connection served by a worker, counted in its load while open.
struct Counted {
    stream: TcpStream,
    _open: OpenGuard,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
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
        let listener = listener.tap_io(|io| {
            if let Err(e) = io.stream.set_nodelay(true) {
                tracing::debug!(error = %e, "cannot set TCP_NODELAY");
            }
        });
        tokio::select! {
            () = serve_connections(listener, app, drain) => Ok(()),
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
    mut listener: impl Listener<Io = Counted, Addr = SocketAddr>,
    app: App,
    drain: watch::Receiver<bool>,
) {
    // Held by every connection task; `closed()` resolves when all are done.
    let (open_tx, open_rx) = watch::channel(());
    // One per worker, so cloning it per request touches no cache line the
    // other workers write.
    let app = Arc::new(app);
    let mut stop = drain.clone();
    loop {
        let (io, peer) = tokio::select! {
            biased;
            _ = stop.wait_for(|v| *v) => break,
            accepted = listener.accept() => accepted,
        };
        let service = Connection {
            app: app.clone(),
            peer,
        };
        let mut drain = drain.clone();
        let open = open_rx.clone();
        tokio::spawn(async move {
            let builder = auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                biased;
                result = conn.as_mut() => {
                    if let Err(e) = result {
                        tracing::trace!(error = %e, "connection ended with an error");
                    }
                }
                () = async { drop(drain.wait_for(|v| *v).await) } => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
            drop(open);
        });
    }
    drop(open_rx);
    open_tx.closed().await;
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
