//! Upstream timeouts without a tokio timer per request. A tokio timeout
//! inserts every request's deadline into the time driver's wheel (under its
//! lock) and removes it again, and its sleep makes the request's future
//! larger (docs/performance.md: 0.6 % of a proxied request's instructions).
//! Here each serving worker keeps its in-flight deadlines in a thread-local
//! table, and ONE sleep per worker (the ticker) wakes at the earliest of
//! them, expires what is due and wakes those requests. A request costs a
//! slot, a link and a waker clone.
//!
//! Deadlines wait in one FIFO list per timeout length (the routes'
//! timeouts): a worker registers its requests in the order it read their
//! `started`, so each list is sorted as it is appended to and neither
//! registering, removing nor expiring searches (many requests held by an
//! upstream that never answers cost the ticker only those that expire). The
//! ticker is woken only by a deadline earlier than the one it waits for:
//! under steady load a new deadline is the latest, so about one wake-up per
//! timeout. Removal never wakes it; it then wakes for nothing once. An
//! upstream that never answers holds one entry per request in flight
//! (bounded by the connection limits); a request that ends, or is dropped
//! because its client went away, frees its entry at once.
//!
//! A serving worker is a current-thread runtime, so a request's future is
//! polled and dropped on the thread it registered on; it holds only its
//! slot's index and generation, and stays `Send`. On a thread without a table
//! (tests serving the router on their own runtime, the CLI) [`timeout`] is a
//! tokio sleep, as before. [`Instant`] is tokio's, so paused test time works.

use std::{
    cell::RefCell,
    pin::Pin,
    task::{Context, Poll, Waker},
    time::Duration,
};

use tokio::time::{Instant, Sleep};

/// The future did not finish by its deadline.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Elapsed;

/// `fut`, or [`Elapsed`] once `timeout` has passed since `started`: what
/// `tokio::time::timeout_at(started + timeout, fut)` does (`fut` is polled
/// first; a future ready at once registers nothing).
pub(crate) fn timeout<F: Future>(started: Instant, timeout: Duration, fut: F) -> Timeout<F> {
    Timeout {
        inner: fut,
        started,
        timeout,
        entry: Entry::Unregistered,
    }
}

pin_project_lite::pin_project! {
    /// A struct, not an `async fn`: that would hold `fut` twice (as its
    /// argument and pinned) and copy it on the first poll.
    pub(crate) struct Timeout<F> {
        #[pin]
        inner: F,
        started: Instant,
        timeout: Duration,
        entry: Entry,
    }
}

impl<F: Future> Future for Timeout<F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(out) = this.inner.poll(cx) {
            return Poll::Ready(Ok(out));
        }
        this.entry.poll(cx, *this.started, *this.timeout).map(Err)
    }
}

/// Give this thread a table. The returned ticker must be spawned on this
/// thread's current-thread runtime (`workers::run_worker` does).
pub(crate) fn install() -> impl Future<Output = ()> + Send + 'static {
    TABLE.with(|t| *t.borrow_mut() = Some(Table::default()));
    ticker()
}

thread_local! {
    static TABLE: RefCell<Option<Table>> = const { RefCell::new(None) };
}

/// `f` on this thread's table; `None` without one.
fn with_table<R>(f: impl FnOnce(&mut Table) -> R) -> Option<R> {
    TABLE
        .try_with(|t| t.borrow_mut().as_mut().map(f))
        .ok()
        .flatten()
}

/// A request's place in the table.
#[derive(Clone, Copy)]
struct Key {
    index: usize,
    generation: u64,
}

enum Entry {
    Unregistered,
    Registered(Key),
    /// No table on this thread.
    Fallback(Pin<Box<Sleep>>),
}

impl Entry {
    fn poll(&mut self, cx: &mut Context<'_>, started: Instant, timeout: Duration) -> Poll<Elapsed> {
        match self {
            Self::Unregistered => {
                let deadline = started + timeout;
                let Some((key, ticker)) = with_table(|t| t.insert(deadline, timeout, cx.waker()))
                else {
                    *self = Self::Fallback(Box::pin(tokio::time::sleep_until(deadline)));
                    return self.poll(cx, started, timeout);
                };
                *self = Self::Registered(key);
                if let Some(ticker) = ticker {
                    ticker.wake();
                }
                Poll::Pending
            }
            Self::Registered(key) => {
                let (poll, _old_waker) = with_table(|t| t.poll(*key, cx.waker()))
                    .unwrap_or((Poll::Ready(Elapsed), None));
                poll
            }
            Self::Fallback(sleep) => sleep.as_mut().poll(cx).map(|()| Elapsed),
        }
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        if let Self::Registered(key) = self {
            // The waker is dropped after the table is let go.
            let _waker = with_table(|t| t.remove(*key));
        }
    }
}

const NIL: usize = usize::MAX;

struct Slot {
    deadline: Instant,
    waker: Option<Waker>,
    generation: u64,
    occupied: bool,
    expired: bool,
    /// Its list while waiting; `NIL` once expired.
    list: usize,
    prev: usize,
    /// In its list, or in the free list when vacant.
    next: usize,
}

/// The waiting entries of one timeout length, earliest deadline first.
struct List {
    timeout: Duration,
    head: usize,
    tail: usize,
}

struct Table {
    slots: Vec<Slot>,
    free: usize,
    lists: Vec<List>,
    ticker: Option<Waker>,
    /// The deadline the ticker will wake for; `None` when it waits for a
    /// registration.
    armed: Option<Instant>,
    generation: u64,
}

impl Default for Table {
    fn default() -> Self {
        Self {
            slots: Vec::new(),
            free: NIL,
            lists: Vec::new(),
            ticker: None,
            armed: None,
            generation: 0,
        }
    }
}

impl Table {
    /// Add a waiting entry; also the ticker's waker when the ticker must
    /// re-arm for it (to be woken once the table is let go).
    fn insert(
        &mut self,
        deadline: Instant,
        timeout: Duration,
        waker: &Waker,
    ) -> (Key, Option<Waker>) {
        self.generation += 1;
        let list = match self.lists.iter().position(|l| l.timeout == timeout) {
            Some(list) => list,
            None => {
                self.lists.push(List {
                    timeout,
                    head: NIL,
                    tail: NIL,
                });
                self.lists.len() - 1
            }
        };
        let slot = Slot {
            deadline,
            waker: Some(waker.clone()),
            generation: self.generation,
            occupied: true,
            expired: false,
            list,
            prev: NIL,
            next: NIL,
        };
        let index = if self.free == NIL {
            self.slots.push(slot);
            self.slots.len() - 1
        } else {
            let index = self.free;
            self.free = self.slots[index].next;
            self.slots[index] = slot;
            index
        };
        self.link(index);
        let key = Key {
            index,
            generation: self.generation,
        };
        if self.armed.is_some_and(|armed| armed <= deadline) {
            return (key, None);
        }
        self.armed = Some(deadline);
        (key, self.ticker.clone())
    }

    /// Append to its list; an entry out of order (not seen from the proxy)
    /// walks back to its place.
    fn link(&mut self, index: usize) {
        let (list, deadline) = (self.slots[index].list, self.slots[index].deadline);
        let mut after = self.lists[list].tail;
        while after != NIL && self.slots[after].deadline > deadline {
            after = self.slots[after].prev;
        }
        let before = if after == NIL {
            std::mem::replace(&mut self.lists[list].head, index)
        } else {
            std::mem::replace(&mut self.slots[after].next, index)
        };
        if before == NIL {
            self.lists[list].tail = index;
        } else {
            self.slots[before].prev = index;
        }
        self.slots[index].prev = after;
        self.slots[index].next = before;
    }

    fn unlink(&mut self, index: usize) {
        let Slot {
            list, prev, next, ..
        } = self.slots[index];
        match prev {
            NIL => self.lists[list].head = next,
            prev => self.slots[prev].next = next,
        }
        match next {
            NIL => self.lists[list].tail = prev,
            next => self.slots[next].prev = prev,
        }
        self.slots[index].list = NIL;
    }

    fn slot(&mut self, key: Key) -> Option<&mut Slot> {
        self.slots
            .get_mut(key.index)
            .filter(|s| s.occupied && s.generation == key.generation)
    }

    /// Ready once expired; otherwise keeps `waker` (the replaced one is
    /// returned, to be dropped once the table is let go).
    fn poll(&mut self, key: Key, waker: &Waker) -> (Poll<Elapsed>, Option<Waker>) {
        let Some(slot) = self.slot(key) else {
            return (Poll::Ready(Elapsed), None);
        };
        if slot.expired {
            return (Poll::Ready(Elapsed), None);
        }
        if slot.waker.as_ref().is_some_and(|w| w.will_wake(waker)) {
            return (Poll::Pending, None);
        }
        (Poll::Pending, slot.waker.replace(waker.clone()))
    }

    fn remove(&mut self, key: Key) -> Option<Waker> {
        let slot = self.slot(key)?;
        let waker = slot.waker.take();
        slot.occupied = false;
        if slot.list != NIL {
            self.unlink(key.index);
        }
        self.slots[key.index].next = std::mem::replace(&mut self.free, key.index);
        waker
    }

    /// The ticker's work: expire every entry due by `cutoff` (their wakers
    /// go to `due`), keep `ticker`, and return the earliest deadline left.
    fn expire(&mut self, cutoff: Instant, ticker: &Waker, due: &mut Vec<Waker>) -> Option<Instant> {
        if !self.ticker.as_ref().is_some_and(|w| w.will_wake(ticker)) {
            self.ticker = Some(ticker.clone());
        }
        let mut earliest: Option<Instant> = None;
        for list in 0..self.lists.len() {
            loop {
                let head = self.lists[list].head;
                if head == NIL {
                    break;
                }
                let deadline = self.slots[head].deadline;
                if deadline > cutoff {
                    earliest = Some(earliest.map_or(deadline, |e| e.min(deadline)));
                    break;
                }
                self.unlink(head);
                let slot = &mut self.slots[head];
                slot.expired = true;
                due.extend(slot.waker.take());
            }
        }
        self.armed = earliest;
        earliest
    }
}

/// The one sleep of a worker: wakes at the earliest deadline, expires what
/// is due, sleeps again; with nothing registered, waits to be woken.
async fn ticker() {
    // Set before it is first polled.
    let mut sleep = std::pin::pin!(tokio::time::sleep(Duration::ZERO));
    let mut due = Vec::new();
    std::future::poll_fn(|cx| tick(cx, sleep.as_mut(), &mut due)).await
}

fn tick(cx: &mut Context<'_>, mut sleep: Pin<&mut Sleep>, due: &mut Vec<Waker>) -> Poll<()> {
    let mut cutoff = Instant::now();
    loop {
        let Some(earliest) = with_table(|t| t.expire(cutoff, cx.waker(), due)) else {
            return Poll::Pending;
        };
        for waker in due.drain(..) {
            waker.wake();
        }
        let Some(next) = earliest else {
            return Poll::Pending;
        };
        if sleep.deadline() != next {
            sleep.as_mut().reset(next);
        }
        if sleep.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        // The timer fired for `next`: it has passed, whatever the clock
        // read above said.
        cutoff = cutoff.max(next);
    }
}

#[cfg(test)]
#[path = "deadlines_tests.rs"]
mod tests;
