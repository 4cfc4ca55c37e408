//! The browser's request body on its way upstream, watched for its own
//! failure: a bad chunk size, a body shorter than its `Content-Length` or a
//! client that hangs up mid-body makes the upstream send fail too, and that
//! failure is the client's (400), not the upstream's (502, counted in
//! `portcullis_upstream_errors_total`).

use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
};

use axum::body::{Body, HttpBody};
use bytes::Bytes;
use hyper::body::{Frame, SizeHint};

/// Whether the watched body failed while it was read.
#[derive(Clone, Default)]
pub(super) struct BodyFailed(Arc<AtomicBool>);

impl BodyFailed {
    pub(super) fn get(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// `body`, watched; a body known to be empty is passed on as it is (no
/// allocation for a GET) with no watch.
pub(super) fn watch(body: Body) -> (Body, Option<BodyFailed>) {
    if body.is_end_stream() {
        return (body, None);
    }
    let failed = BodyFailed::default();
    let watched = Watched {
        inner: body,
        failed: failed.clone(),
    };
    (Body::new(watched), Some(failed))
}

struct Watched {
    inner: Body,
    failed: BodyFailed,
}

impl HttpBody for Watched {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Err(_))) = &polled {
            self.failed.0.store(true, Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt as _;

    #[tokio::test]
    async fn a_read_error_is_noted_and_an_empty_body_is_not_watched() {
        let (body, failed) = watch(Body::empty());
        assert!(failed.is_none());
        assert!(body.is_end_stream());

        let (body, failed) = watch(Body::from("abc"));
        let failed = failed.expect("watched");
        assert_eq!(body.collect().await.expect("read").to_bytes(), "abc");
        assert!(!failed.get());

        let broken = futures_util::stream::iter([
            Ok(Bytes::from_static(b"a")),
            Err(std::io::Error::other("cut short")),
        ]);
        let (body, failed) = watch(Body::from_stream(broken));
        let failed = failed.expect("watched");
        assert!(body.collect().await.is_err());
        assert!(failed.get());
    }
}
