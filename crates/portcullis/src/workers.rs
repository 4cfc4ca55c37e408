//! Serving workers: `server.workers` threads, each running its own
//! single-threaded tokio runtime that accepts from the shared public
//! listener and runs its connections to the end (the nginx worker model).
//!
//! A connection, its requests and the upstream connections they use stay on
//! one thread, so a proxied request never waits for a wake-up on another
//! thread; one multi-threaded runtime spent about a third more CPU per
//! request (see README, Performance). Each worker has its own upstream pools
//! ([`current`] picks them). Background tasks (GC, IdP refresh, the admin
//! listener, store drivers) stay on the caller's runtime.

use std::{cell::Cell, net::SocketAddr, time::Duration};

use axum::{extract::connect_info::IntoMakeServiceWithConnectInfo, serve::ListenerExt as _};
use tokio::{net::TcpListener, sync::watch};

thread_local! {
    static WORKER: Cell<usize> = const { Cell::new(0) };
}

/// The index of the serving worker running on this thread; 0 on any other
/// thread (tests that serve the router on their own runtime use pool 0).
pub(crate) fn current() -> usize {
    WORKER.with(Cell::get)
}

pub(crate) type App = IntoMakeServiceWithConnectInfo<crate::http::PublicService, SocketAddr>;

/// Serve `app` on `listener` with `workers` threads until `drain` turns true,
/// then let in-flight requests finish for up to `drain_timeout` and cut the
/// rest. Returns the first error a worker met starting up.
pub(crate) async fn serve(
    app: App,
    listener: TcpListener,
    workers: usize,
    drain: watch::Receiver<bool>,
    drain_timeout: Duration,
) -> std::io::Result<()> {
    let listener = listener.into_std()?;
    let (cut_tx, cut_rx) = watch::channel(false);
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
    for index in 0..workers.max(1) {
        let listener = listener.try_clone()?;
        let (app, drain, cut, done) = (app.clone(), drain.clone(), cut_rx.clone(), done_tx.clone());
        std::thread::Builder::new()
            .name(format!("portcullis-worker-{index}"))
            .spawn(move || {
                let result = run_worker(index, listener, app, drain, cut);
                // Sent after the runtime is gone: its connections are closed.
                let _ = done.send(result);
            })?;
    }
    drop(done_tx);
    drop(listener);

    let mut first_error = None;
    let mut finished = 0;
    let mut drain_started = drain.clone();
    let mut deadline = std::pin::pin!(async move {
        let _ = drain_started.wait_for(|v| *v).await;
        tokio::time::sleep(drain_timeout).await;
    });
    loop {
        tokio::select! {
            result = done_rx.recv() => match result {
                Some(result) => {
                    finished += 1;
                    if let Err(e) = result {
                        tracing::error!(error = %e, "serving worker failed");
                        first_error.get_or_insert(e);
                        // One worker down: stop the others rather than limp on.
                        let _ = cut_tx.send(true);
                    }
                }
                None => break,
            },
            () = &mut deadline, if !*cut_tx.borrow() => {
                tracing::warn!("shutdown: drain timeout reached, closing remaining connections");
                let _ = cut_tx.send(true);
            }
        }
    }
    tracing::debug!(finished, "serving workers stopped");
    first_error.map_or(Ok(()), Err)
}

/// One worker thread: a current-thread runtime serving `listener` until
/// `drain` (graceful) or `cut` (immediate); dropping the runtime closes
/// whatever is still open.
fn run_worker(
    index: usize,
    listener: std::net::TcpListener,
    app: App,
    mut drain: watch::Receiver<bool>,
    mut cut: watch::Receiver<bool>,
) -> std::io::Result<()> {
    WORKER.with(|w| w.set(index));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = TcpListener::from_std(listener)?.tap_io(|tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "cannot set TCP_NODELAY");
            }
        });
        let server = axum::serve(listener, app).with_graceful_shutdown(async move {
            let _ = drain.wait_for(|v| *v).await;
        });
        tokio::select! {
            result = server => result,
            _ = cut.wait_for(|v| *v) => Ok(()),
        }
    })
}
