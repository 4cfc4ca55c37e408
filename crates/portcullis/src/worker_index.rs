//! Which serving worker runs on this thread. A leaf: the workers set it, and
//! per-worker state elsewhere (the upstream pool's slots, the upstream
//! clients) reads it without depending on the serving code.

use std::cell::Cell;

thread_local! {
    static WORKER: Cell<usize> = const { Cell::new(0) };
}

/// The index of the serving worker running on this thread; 0 on any other
/// thread (tests that serve the router on their own runtime use pool 0).
pub(crate) fn current() -> usize {
    WORKER.with(Cell::get)
}

/// Called once by each serving worker's thread.
pub(crate) fn set(index: usize) {
    WORKER.with(|w| w.set(index));
}
