//! `server.body_read_timeout`: the timer on an incoming request body, so a
//! client that stops sending its body mid-way cannot hold a request in
//! flight (and with it its connection and slot) for ever. The timer sits on
//! the body itself, where every handler reads it: the proxy streams large
//! bodies to the upstream, so a timer around the handler could not tell a
//! stalled client from a slow upstream.

use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::time::{Instant, Sleep};

use super::Activity;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What the body of one request and its response share: whether the body
/// timed out, and whether the response had started by then.
#[derive(Default)]
pub(super) struct BodyState {
    timed_out: AtomicBool,
    responded: AtomicBool,
}

impl BodyState {
    /// Called when the handler's response is ready; true if the body had
    /// already timed out (the response becomes a 408).
    pub(super) fn respond(&self) -> bool {
        self.responded.store(true, Ordering::SeqCst);
        self.timed_out.load(Ordering::SeqCst)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("request body: no data for server.body_read_timeout")]
pub(crate) struct BodyTimeout;

/// A request body with `server.body_read_timeout` on every wait for its
/// next frame. The timer runs only while a reader waits for data, so a
/// reader that is slow to ask (a slow upstream) is never blamed.
pub(crate) struct RequestBody {
    inner: Incoming,
    /// `None` for a request without a body (most of them): no timer, no
    /// allocation.
    timer: Option<Box<Timer>>,
}

struct Timer {
    timeout: Duration,
    sleep: Pin<Box<Sleep>>,
    armed: bool,
    expired: bool,
    state: Arc<BodyState>,
    activity: Arc<Activity>,
    listener: &'static str,
}

impl RequestBody {
    /// Wrap `inner`; with a body to come, also the state its response reads.
    pub(super) fn new(
        inner: Incoming,
        timeout: Duration,
        activity: &Arc<Activity>,
        listener: &'static str,
    ) -> (Self, Option<Arc<BodyState>>) {
        if inner.is_end_stream() {
            return (Self { inner, timer: None }, None);
        }
        let state = Arc::new(BodyState::default());
        let timer = Timer {
            timeout,
            sleep: Box::pin(tokio::time::sleep(timeout)),
            armed: false,
            expired: false,
            state: state.clone(),
            activity: activity.clone(),
            listener,
        };
        let body = Self {
            inner,
            timer: Some(Box::new(timer)),
        };
        (body, Some(state))
    }
}

impl Body for RequestBody {
    type Data = bytes::Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        if this.timer.as_ref().is_some_and(|t| t.expired) {
            return Poll::Ready(Some(Err(BodyTimeout.into())));
        }
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            if let Some(timer) = &mut this.timer {
                timer.armed = false;
            }
            return Poll::Ready(frame.map(|r| r.map_err(Into::into)));
        }
        let Some(timer) = &mut this.timer else {
            return Poll::Pending;
        };
        if !timer.armed {
            // Counted from when the reader starts waiting for this frame.
            timer.sleep.as_mut().reset(Instant::now() + timer.timeout);
            timer.armed = true;
        }
        std::task::ready!(timer.sleep.as_mut().poll(cx));
        timer.expired = true;
        timer.state.timed_out.store(true, Ordering::SeqCst);
        super::connection::closed(timer.listener, "body_timeout");
        // Too late for a 408: the response has begun, so only closing the
        // connection ends it (the client sees a cut response). Through the
        // proxy the failed upstream request usually ends the response
        // anyway; this holds for any handler.
        if timer.state.responded.load(Ordering::SeqCst) {
            timer.activity.cut.notify_one();
        }
        Poll::Ready(Some(Err(BodyTimeout.into())))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        // Kept: the proxy buffers a body whose length it knows to be small.
        self.inner.size_hint()
    }
}
