//! A future polled only when its own waker has fired.
//!
//! A connection's task waits on hyper's connection and on rare signals (the
//! drain, the watchdog, a body timeout's cut). `select!` polls every branch
//! each time the task wakes, several times per request (HTTP/2: per stream
//! event), and polling the rare ones cost about 800 instructions per
//! proxied HTTP/1 request (docs/performance.md). Behind one gate they are polled once to register
//! their wakers, then only after one of them woke.

use std::{
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll, Wake, Waker},
};

pin_project_lite::pin_project! {
    pub(super) struct Gated<F> {
        #[pin]
        inner: F,
        gate: Arc<Gate>,
        // The gate as a waker: what `inner` registers.
        waker: Waker,
    }
}

struct Gate {
    /// Set by the gate's waker; taken by the poll that then polls `inner`.
    woken: AtomicBool,
    /// The task polling the gate, woken in turn.
    task: Mutex<Option<Waker>>,
}

impl Wake for Gate {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        let task = self.task.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(task) = task {
            task.wake();
        }
    }
}

impl<F> Gated<F> {
    pub(super) fn new(inner: F) -> Self {
        let gate = Arc::new(Gate {
            // The first poll polls `inner`, so that it registers.
            woken: AtomicBool::new(true),
            task: Mutex::new(None),
        });
        let waker = Waker::from(Arc::clone(&gate));
        Self { inner, gate, waker }
    }
}

impl<F: Future> Future for Gated<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        // The task's waker is kept current before the flag is read: a wake
        // that lands after the read then reaches this task.
        {
            let mut task = this.gate.task.lock().unwrap_or_else(|e| e.into_inner());
            if !task.as_ref().is_some_and(|t| t.will_wake(cx.waker())) {
                *task = Some(cx.waker().clone());
            }
        }
        if !this.gate.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        this.inner.poll(&mut Context::from_waker(this.waker))
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::atomic::AtomicUsize,
        task::{Context, Poll},
    };

    use super::*;

    /// Counts its polls; ready once `ready` is set, and wakes whoever
    /// registered when it is set.
    struct Probe {
        polls: Arc<AtomicUsize>,
        ready: Arc<AtomicBool>,
        waker: Arc<Mutex<Option<Waker>>>,
    }

    impl Future for Probe {
        type Output = ();
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            self.polls.fetch_add(1, Ordering::SeqCst);
            if self.ready.load(Ordering::SeqCst) {
                return Poll::Ready(());
            }
            *self.waker.lock().unwrap() = Some(cx.waker().clone());
            Poll::Pending
        }
    }

    #[derive(Default)]
    struct CountWakes(AtomicUsize);
    impl Wake for CountWakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn inner_is_polled_once_then_only_after_its_own_wake() {
        let polls = Arc::new(AtomicUsize::new(0));
        let ready = Arc::new(AtomicBool::new(false));
        let registered = Arc::new(Mutex::new(None::<Waker>));
        let mut gated = Box::pin(Gated::new(Probe {
            polls: Arc::clone(&polls),
            ready: Arc::clone(&ready),
            waker: Arc::clone(&registered),
        }));
        let task = Arc::new(CountWakes::default());
        let task_waker = Waker::from(Arc::clone(&task));
        let mut cx = Context::from_waker(&task_waker);

        assert!(gated.as_mut().poll(&mut cx).is_pending());
        assert_eq!(polls.load(Ordering::SeqCst), 1, "the first poll registers");
        // The task wakes for other reasons (hyper's connection): the gate
        // does not poll its future.
        for _ in 0..5 {
            assert!(gated.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(polls.load(Ordering::SeqCst), 1);

        // The inner future's event: its waker wakes the task, and the next
        // poll reaches it.
        ready.store(true, Ordering::SeqCst);
        let inner_waker = registered.lock().unwrap().take().unwrap();
        inner_waker.wake();
        assert_eq!(task.0.load(Ordering::SeqCst), 1, "the task was woken");
        assert!(gated.as_mut().poll(&mut cx).is_ready());
        assert_eq!(polls.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_wake_reaches_the_latest_task_waker() {
        let ready = Arc::new(AtomicBool::new(false));
        let registered = Arc::new(Mutex::new(None::<Waker>));
        let mut gated = Box::pin(Gated::new(Probe {
            polls: Arc::default(),
            ready: Arc::clone(&ready),
            waker: Arc::clone(&registered),
        }));
        let (first, second) = (
            Arc::new(CountWakes::default()),
            Arc::new(CountWakes::default()),
        );
        let first_waker = Waker::from(Arc::clone(&first));
        let second_waker = Waker::from(Arc::clone(&second));
        assert!(
            gated
                .as_mut()
                .poll(&mut Context::from_waker(&first_waker))
                .is_pending()
        );
        // Polled from another task since: that one must be woken.
        assert!(
            gated
                .as_mut()
                .poll(&mut Context::from_waker(&second_waker))
                .is_pending()
        );
        registered.lock().unwrap().take().unwrap().wake();
        assert_eq!(first.0.load(Ordering::SeqCst), 0);
        assert_eq!(second.0.load(Ordering::SeqCst), 1);
    }
}
