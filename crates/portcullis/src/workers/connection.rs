//! Serving one accepted connection to its end, and parking idle HTTP/1
//! keep-alive connections outside hyper.
//!
//! hyper keeps an HTTP/1 connection's read and write buffers (8 KiB each)
//! for the connection's whole life, so an idle keep-alive connection cost
//! about 30 KB (docs/performance.md). Here hyper's state exists only while
//! the client is talking: a new connection waits for its first byte with
//! none, and an HTTP/1 connection that went quiet (no request in flight, no
//! byte read since its last response and that response wholly written, for
//! [`park_after`]) is handed back
//! by hyper without closing the socket ("parked") and waits for its next
//! byte holding only the socket; then a fresh hyper connection serves it.
//! HTTP/2 (prior knowledge) stays in one hyper connection, as before.

use std::{
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use hyper::server::conn::http1;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
};
use tokio::{
    sync::watch,
    time::{Instant, sleep_until},
};

use super::{Activity, Counted, Tracked, gate::Gated, request_body::RequestBody};
use crate::config::ConnectionLimits;

/// Concurrent requests (streams) one HTTP/2 connection may have open; more
/// are refused by the peer's own stack (hyper's default is 200).
const MAX_CONCURRENT_STREAMS: u32 = 100;

/// What an HTTP/2 client with prior knowledge sends first.
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// hyper's connection settings from the limits, for HTTP/1 (the parking
/// path) and for hyper-util's auto-detecting builder (HTTP/2 prior
/// knowledge, or a first read too short to tell).
pub(super) struct Builders {
    http1: http1::Builder,
    auto: auto::Builder<TokioExecutor>,
}

impl Builders {
    /// HTTP/1 head size, header count and head timeout (hyper answers 431
    /// to an oversized head); HTTP/2 header list size and stream caps.
    pub(super) fn new(limits: &ConnectionLimits) -> Self {
        let mut http1 = http1::Builder::new();
        set_http1(&mut http1, limits);
        let mut auto = auto::Builder::new(TokioExecutor::new());
        {
            let mut h1 = auto.http1();
            h1.timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout)
                .max_headers(limits.max_headers)
                .max_buf_size(limits.max_header_bytes.max(8192));
        }
        auto.http2()
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
            .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
            // Rapid reset (CVE-2023-44487): streams the client opens and resets
            // before they are served still cost work; past 20 pending, GOAWAY.
            // That is hyper's (h2's) default already, set here so that no
            // upgrade can loosen it unnoticed.
            .max_pending_accept_reset_streams(20)
            // The reverse (RUSTSEC-2024-0003): streams this side must reset
            // because the client misbehaves; hyper's default, set for the same reason.
            .max_local_error_reset_streams(1024);
        Self { http1, auto }
    }
}

fn set_http1(builder: &mut http1::Builder, limits: &ConnectionLimits) {
    builder
        // No timer: hyper's head timer (a boxed tokio sleep set and cleared
        // in the timer wheel for every request) is replaced by
        // [`watchdog`]'s quiet rule, which this connection runs anyway.
        .header_read_timeout(None)
        .max_headers(limits.max_headers)
        // The read buffer's ceiling: a head that does not fit gets 431.
        .max_buf_size(limits.max_header_bytes.max(8192));
}

/// How long an HTTP/1 connection must be quiet before it is parked: a
/// quarter of the keep-alive limit ([`quiet_limit`]), at most a second. A
/// busy connection pays one timer wake-up per period, never one per request.
pub(super) fn park_after(limits: &ConnectionLimits) -> Duration {
    (quiet_limit(limits).0 / 4).min(Duration::from_secs(1))
}

/// How long a connection may wait for its next request head, and the
/// reason counted when it closes for that: the head limit runs from the
/// end of the previous response (`header_timeout`), the idle rule from the
/// last request (`idle`); the shorter wins.
fn quiet_limit(limits: &ConnectionLimits) -> (Duration, &'static str) {
    if limits.header_read_timeout <= limits.idle_timeout {
        (limits.header_read_timeout, "header_timeout")
    } else {
        (limits.idle_timeout, "idle")
    }
}

/// A hyper service for one connection: cloned for each hyper connection the
/// connection goes through (once per wake-up from parked).
pub(super) trait ConnService<B>:
    hyper::service::Service<
        http::Request<RequestBody>,
        Response = http::Response<B>,
        Error = std::convert::Infallible,
        Future: Unpin + Send + 'static,
    > + Clone
    + Send
    + 'static
{
}

impl<S, B> ConnService<B> for S where
    S: hyper::service::Service<
            http::Request<RequestBody>,
            Response = http::Response<B>,
            Error = std::convert::Infallible,
            Future: Unpin + Send + 'static,
        > + Clone
        + Send
        + 'static
{
}

/// Serve one connection on the current runtime until it closes, raced
/// against the drain and against [`watchdog`]; `open` is held until then.
pub(super) fn spawn_connection<S, B>(
    name: &'static str,
    io: Counted,
    service: S,
    builders: &Arc<Builders>,
    limits: &ConnectionLimits,
    drain: &watch::Receiver<bool>,
    open: &watch::Receiver<()>,
) where
    S: ConnService<B>,
    B: hyper::body::Body<Data = bytes::Bytes> + Unpin + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (builders, limits, drain, open) = (builders.clone(), *limits, drain.clone(), open.clone());
    tokio::spawn(async move {
        serve(name, io, service, &builders, &limits, drain).await;
        drop(open);
    });
}

/// The life of one connection: wait for its first byte, then HTTP/2 in one
/// hyper connection, or HTTP/1 in as many as it has busy spells, parked in
/// between. Whatever is kept while parked lives in this future, so the
/// hyper connections (and their timers) are boxed: the task itself stays
/// small.
async fn serve<S, B>(
    name: &'static str,
    mut io: Counted,
    service: S,
    builders: &Builders,
    limits: &ConnectionLimits,
    mut drain: watch::Receiver<bool>,
) where
    S: ConnService<B>,
    B: hyper::body::Body<Data = bytes::Bytes> + Unpin + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let started = Instant::now();
    let head_deadline = started + limits.header_read_timeout;
    let (quiet, quiet_reason) = quiet_limit(limits);
    // A silent connection never gets hyper state (the first-head rule of
    // [`watchdog`], applied here).
    let mut first = [0u8; H2_PREFACE.len()];
    let peeked = tokio::select! {
        biased;
        peeked = io.stream.peek(&mut first) => peeked,
        () = drain_begun(&mut drain) => return,
        () = sleep_until(started + quiet) => return closed(name, quiet_reason),
    };
    let n = match peeked {
        Ok(0) | Err(_) => return,
        Ok(n) => n,
    };
    if H2_PREFACE.starts_with(&first[..n]) {
        // HTTP/2, or too few bytes to tell: hyper-util's builder reads on
        // until it knows. Such a connection is never parked.
        let conn = serve_auto(name, io, service, builders, limits, drain, head_deadline);
        return Box::pin(conn).await;
    }
    let park_after = park_after(limits);
    let mut park = Park {
        after: park_after,
        blocked_at: None,
    };
    loop {
        let conn = serve_http1(
            name,
            io,
            service.clone(),
            &builders.http1,
            limits,
            &mut drain,
            head_deadline,
            park,
        );
        let Some(parked) = Box::pin(conn).await else {
            return;
        };
        io = parked;
        if !io.unread.is_empty() {
            // A partial head was in hyper's buffer (sent with the previous
            // request): serve it at once, and park no more until it is a
            // request, so a head trickled across parks still meets a head
            // timer.
            park.blocked_at = Some(io.activity.begun.load(Ordering::Relaxed));
            continue;
        }
        park.blocked_at = None;
        // Quiet for at least `park_after` already; the limit runs from then.
        let deadline = Instant::now()
            .checked_sub(park_after)
            .unwrap_or_else(Instant::now)
            + quiet;
        let _parked = Parked::count(name);
        tokio::select! {
            biased;
            ready = io.stream.readable() => if ready.is_err() { return },
            () = drain_begun(&mut drain) => return,
            () = sleep_until(deadline) => return closed(name, quiet_reason),
        }
    }
}

/// One connection in `portcullis_connections_parked` while held (dropped
/// on every way out of the wait, the worker's runtime going away included).
struct Parked(&'static str);

impl Parked {
    fn count(listener: &'static str) -> Self {
        metrics::gauge!(crate::metrics::CONNECTIONS_PARKED, "listener" => listener).increment(1.0);
        Self(listener)
    }
}

impl Drop for Parked {
    fn drop(&mut self) {
        metrics::gauge!(crate::metrics::CONNECTIONS_PARKED, "listener" => self.0).decrement(1.0);
    }
}

/// When an HTTP/1 connection may be parked.
#[derive(Clone, Copy)]
struct Park {
    /// Quiet for this long.
    after: Duration,
    /// Not while `begun` is still this: a partial head went through a park.
    blocked_at: Option<usize>,
}

/// What ended a connection's wait besides hyper's connection itself.
enum Rare {
    Drain,
    Quiet(Quiet),
    /// A body timeout cut the connection, or (HTTP/1) hyper did not end
    /// after a park.
    Cut,
}

/// One hyper HTTP/1 connection (with upgrades) on `io`, until it closes
/// (`None`) or is parked: then the socket comes back, open, with the bytes
/// hyper had read but not used in [`Counted::unread`].
#[allow(clippy::too_many_arguments)]
async fn serve_http1<S, B>(
    name: &'static str,
    io: Counted,
    service: S,
    builder: &http1::Builder,
    limits: &ConnectionLimits,
    drain: &mut watch::Receiver<bool>,
    head_deadline: Instant,
    park: Park,
) -> Option<Counted>
where
    S: ConnService<B>,
    B: hyper::body::Body<Data = bytes::Bytes> + Unpin + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let activity = io.activity.clone();
    let service = Tracked::new(service, &activity, limits, name);
    let mut conn = builder
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    let watch = watchdog(&activity, limits, head_deadline, Some(park));
    let mut watch = std::pin::pin!(watch);
    let mut draining = false;
    // When the park began: hyper is finishing (flushing) until then.
    let mut parking: Option<Instant> = None;
    let result = loop {
        let flush_deadline = parking.map_or_else(Instant::now, |at| at + limits.idle_timeout);
        let (drained, parked) = (draining, parking.is_some());
        // The rare signals behind one gate: polled when one of them woke,
        // not on each of the task's wakes for hyper (several per request).
        let rare = Gated::new(async {
            tokio::select! {
                biased;
                () = drain_begun(drain), if !drained => Rare::Drain,
                quiet = &mut watch, if !parked && !drained => Rare::Quiet(quiet),
                () = activity.cut.notified() => Rare::Cut,
                // hyper should end at once (it was idle); a safety net.
                () = sleep_until(flush_deadline), if parked => Rare::Cut,
            }
        });
        let mut rare = std::pin::pin!(rare);
        let rare = tokio::select! {
            biased;
            result = &mut conn => break result,
            rare = &mut rare => rare,
        };
        match rare {
            Rare::Drain => {
                draining = true;
                // The socket is to close for real now.
                activity.parking.store(false, Ordering::Relaxed);
                std::pin::Pin::new(&mut conn).graceful_shutdown();
            }
            Rare::Quiet(Quiet::Park) => {
                // hyper is idle (no request in flight, no byte read since
                // the last response, nothing left to write): graceful_shutdown
                // ends it without touching any response, and its final
                // shutdown of the socket is skipped ([`Counted`]).
                parking = Some(Instant::now());
                activity.parking.store(true, Ordering::Relaxed);
                std::pin::Pin::new(&mut conn).graceful_shutdown();
            }
            Rare::Quiet(Quiet::Close(reason)) => {
                closed(name, reason);
                return None;
            }
            Rare::Cut => return None,
        }
    };
    if let Err(e) = result {
        tracing::trace!(error = %e, "connection ended with an error");
        return None;
    }
    if parking.is_none() || draining {
        return None;
    }
    // `None` after an upgrade: the tunnel owns the socket.
    let parts = conn.into_parts()?;
    let mut io = parts.io.into_inner();
    activity.parking.store(false, Ordering::Relaxed);
    if !parts.read_buf.is_empty() {
        // hyper read what was left to read first, so its bytes come first.
        io.unread = if io.unread.is_empty() {
            parts.read_buf
        } else {
            [parts.read_buf, std::mem::take(&mut io.unread)]
                .concat()
                .into()
        };
    }
    Some(io)
}

/// HTTP/2 with prior knowledge (or a first read too short to tell) in one
/// hyper connection, as before parking existed.
async fn serve_auto<S, B>(
    name: &'static str,
    io: Counted,
    service: S,
    builders: &Builders,
    limits: &ConnectionLimits,
    mut drain: watch::Receiver<bool>,
    head_deadline: Instant,
) where
    S: ConnService<B>,
    B: hyper::body::Body<Data = bytes::Bytes> + Unpin + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let activity = io.activity.clone();
    let service = Tracked::new(service, &activity, limits, name);
    let conn = builders
        .auto
        .serve_connection_with_upgrades(TokioIo::new(io), service);
    let mut conn = std::pin::pin!(conn);
    // Behind a gate, as in `serve_http1`: every stream's wake would poll them.
    let rare = Gated::new(async {
        tokio::select! {
            biased;
            () = drain_begun(&mut drain) => Rare::Drain,
            quiet = watchdog(&activity, limits, head_deadline, None) => Rare::Quiet(quiet),
            () = activity.cut.notified() => Rare::Cut,
        }
    });
    let rare = tokio::select! {
        biased;
        result = conn.as_mut() => {
            if let Err(e) = result {
                if e.downcast_ref::<hyper::Error>().is_some_and(hyper::Error::is_timeout) {
                    closed(name, "header_timeout");
                }
                tracing::trace!(error = %e, "connection ended with an error");
            }
            return;
        }
        rare = rare => rare,
    };
    match rare {
        Rare::Drain => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
        // Dropping the connection closes the socket.
        Rare::Quiet(Quiet::Close(reason)) => closed(name, reason),
        // Without `park` the watchdog never parks. A cut is counted where
        // the body timed out.
        Rare::Quiet(Quiet::Park) | Rare::Cut => {}
    }
}

/// Resolves once the drain has begun.
async fn drain_begun(drain: &mut watch::Receiver<bool>) {
    // An error: the sender is gone, which only happens at shutdown.
    let _ = drain.wait_for(|v| *v).await;
}

pub(super) fn closed(listener: &'static str, reason: &'static str) {
    tracing::debug!(listener, reason, "connection closed by a limit");
    metrics::counter!(
        crate::metrics::CONNECTIONS_CLOSED_TOTAL,
        "listener" => listener,
        "reason" => reason
    )
    .increment(1);
}

/// What [`watchdog`] decided.
#[derive(Debug, PartialEq, Eq)]
enum Quiet {
    /// Hand the HTTP/1 connection back from hyper, to wait with no buffers.
    Park,
    /// Close the connection, for this reason.
    Close(&'static str),
}

/// Resolves when the connection should be parked or closed:
/// - closed when no request has begun by `head_deadline` (a slow or silent
///   first head, HTTP/1 or HTTP/2);
/// - closed when no request has begun and none was in flight for
///   `idle_timeout` (checked every `idle_timeout`, so an idle HTTP/2
///   connection closes after one to two periods) or, HTTP/1 (with `park`),
///   for the keep-alive limit of [`quiet_limit`], checked every `park.after`:
///   that is also the head timer of every later HTTP/1 head (a head
///   trickled after a response never makes a request begin), in place of
///   hyper's, which would cost a timer per request. A streaming response is
///   in flight until its body ends. Frames that are no request (HTTP/2
///   PING, WINDOW_UPDATE) do not count;
/// - parked (HTTP/1 with `park`) when, over one `park.after`, no request
///   began, none was in flight, no byte was read since the last response
///   ended and that response was wholly written: hyper is idle then, with
///   nothing in its buffers, and has not chosen to close.
async fn watchdog(
    activity: &Activity,
    limits: &ConnectionLimits,
    head_deadline: Instant,
    park: Option<Park>,
) -> Quiet {
    let mut seen = activity.begun.load(Ordering::Relaxed);
    let mut last = Instant::now();
    let mut quiet_since: Option<Instant> = None;
    let (limit, reason) = match park {
        Some(_) => quiet_limit(limits),
        None => (limits.idle_timeout, "idle"),
    };
    loop {
        let mut next = last + park.map_or(limits.idle_timeout, |p| p.after);
        let first_head = seen == 0;
        if first_head {
            next = next.min(head_deadline);
        }
        sleep_until(next).await;
        let now = Instant::now();
        let begun = activity.begun.load(Ordering::Relaxed);
        if begun == 0 && now >= head_deadline {
            return Quiet::Close("header_timeout");
        }
        if begun == seen && activity.in_flight.load(Ordering::Relaxed) == 0 {
            let since = *quiet_since.get_or_insert(last);
            let may_park = park.is_some_and(|p| p.blocked_at != Some(begun));
            if may_park && activity.idle_in_hyper() {
                return Quiet::Park;
            }
            if now.duration_since(since) >= limit {
                return Quiet::Close(reason);
            }
        } else {
            quiet_since = None;
        }
        seen = begun;
        last = now;
    }
}

#[cfg(test)]
#[path = "connection_tests.rs"]
mod tests;
