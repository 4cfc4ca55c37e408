//! The deadline table on a current-thread runtime with paused time: the
//! clock jumps to the next timer when every task waits, so each deadline
//! is checked to the instant, without real sleeps.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::time::Instant;

use super::*;

/// Entries in this thread's table (registered, not yet dropped).
fn entries() -> usize {
    with_table(|t| t.slots.iter().filter(|s| s.occupied).count()).unwrap_or(0)
}

/// Registrations so far on this thread's table.
fn registrations() -> u64 {
    with_table(|t| t.generation).unwrap_or(0)
}

fn start_table() {
    tokio::spawn(install());
}

/// Wait for `timeout` after `started` on a future that never finishes;
/// when it expired.
async fn expiry(started: Instant, timeout: Duration) -> Instant {
    let result = super::timeout(started, timeout, std::future::pending::<()>()).await;
    assert_eq!(result, Err(Elapsed));
    Instant::now()
}

#[tokio::test(start_paused = true)]
async fn fires_at_its_deadline_and_not_before() {
    start_table();
    let started = Instant::now();
    // A future that finishes a millisecond before its deadline is not cut.
    let just_in_time = super::timeout(
        started,
        Duration::from_secs(5),
        tokio::time::sleep(Duration::from_millis(4_999)),
    );
    assert_eq!(just_in_time.await, Ok(()));
    assert_eq!(entries(), 0);
    let fired = expiry(started, Duration::from_secs(10)).await;
    assert_eq!(fired - started, Duration::from_secs(10));
    assert_eq!(entries(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_later_registration_with_an_earlier_deadline_fires_on_time() {
    start_table();
    let started = Instant::now();
    let long = tokio::spawn(expiry(started, Duration::from_secs(30)));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(entries(), 1, "the long one waits");
    // The ticker waits for 30 s; this one is due at 3 s.
    let short = expiry(Instant::now(), Duration::from_secs(2)).await;
    assert_eq!(short - started, Duration::from_secs(3));
    let long = long.await.expect("long");
    assert_eq!(long - started, Duration::from_secs(30));
    assert_eq!(entries(), 0);
}

#[tokio::test(start_paused = true)]
async fn dropped_futures_free_their_entries() {
    start_table();
    let started = Instant::now();
    let waiting: Vec<_> = (0..100)
        .map(|_| {
            tokio::spawn(super::timeout(
                started,
                Duration::from_secs(60),
                std::future::pending::<()>(),
            ))
        })
        .collect();
    // Paused time: every task runs before the clock moves.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(entries(), 100);
    for task in &waiting {
        task.abort();
    }
    for task in waiting {
        assert!(task.await.unwrap_err().is_cancelled());
    }
    assert_eq!(entries(), 0);
    // Slots are reused, and the ticker still fires for new entries.
    let fired = expiry(Instant::now(), Duration::from_secs(1)).await;
    assert_eq!(fired - started, Duration::from_secs(2));
    assert_eq!(with_table(|t| t.slots.len()), Some(100));
}

#[tokio::test(start_paused = true)]
async fn many_entries_fire_in_deadline_order() {
    start_table();
    let started = Instant::now();
    let fired = Arc::new(Mutex::new(Vec::new()));
    // Two timeout lengths, registered out of deadline order.
    let timeouts = [7u64, 3, 9, 1, 5, 2, 8, 4, 6, 10];
    let tasks: Vec<_> = timeouts
        .iter()
        .enumerate()
        .map(|(i, &secs)| {
            let fired = fired.clone();
            let timeout = Duration::from_secs(if i % 2 == 0 { 20 } else { 10 });
            let begun = started + Duration::from_secs(20 + secs) - timeout;
            tokio::spawn(async move {
                let at = expiry(begun, timeout).await;
                fired.lock().unwrap().push((secs, at - started));
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task");
    }
    let fired = fired.lock().unwrap().clone();
    let expected: Vec<_> = (1..=10).map(|s| (s, Duration::from_secs(s + 20))).collect();
    assert_eq!(fired, expected);
    assert_eq!(entries(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_future_ready_at_once_registers_nothing() {
    start_table();
    tokio::task::yield_now().await;
    let before = registrations();
    let out = super::timeout(Instant::now(), Duration::from_secs(1), async { 7 }).await;
    assert_eq!(out, Ok(7));
    assert_eq!(registrations(), before);
    // Pending once: registered, then freed when it finishes.
    let out = super::timeout(Instant::now(), Duration::from_secs(1), async {
        tokio::task::yield_now().await;
        8
    })
    .await;
    assert_eq!(out, Ok(8));
    assert_eq!(registrations(), before + 1);
    assert_eq!(entries(), 0);
}

#[tokio::test(start_paused = true)]
async fn without_a_table_a_tokio_sleep_times_out() {
    TABLE.with(|t| t.borrow_mut().take());
    let started = Instant::now();
    let fired = expiry(started, Duration::from_secs(4)).await;
    assert_eq!(fired - started, Duration::from_secs(4));
    let out = super::timeout(started, Duration::from_secs(1), async { 1 }).await;
    assert_eq!(out, Ok(1));
    assert_eq!(registrations(), 0, "no table");
}

#[test]
fn the_timeout_future_is_send() {
    fn send<T: Send>(_: T) {}
    send(super::timeout(
        Instant::now(),
        Duration::ZERO,
        std::future::pending::<()>(),
    ));
    send(ticker());
}
