//! A route's upstream timeout on the real serving path ([`portcullis::serve`]):
//! the serving workers time upstream requests with their own deadline table
//! (`deadlines.rs`), not a tokio timer per request. Every wait is a bounded
//! read, never a fixed sleep.

use std::time::Duration;

use crate::common::serving::{Served, read_response};
use tokio::io::AsyncWriteExt;

/// Long enough for a loaded CI machine; a timeout that works fires far sooner.
const BOUND: Duration = Duration::from_secs(10);

#[tokio::test]
async fn a_slow_upstream_is_answered_504_by_the_workers_at_the_routes_timeout() {
    let g = Served::start("workers = 1").await;
    // First a request due later (`/api/`: 5 s), so the worker's ticker waits
    // for that deadline when the 300 ms one comes: it must re-arm for it.
    let mut long = g.connect().await;
    long.write_all(b"GET /api/stall?ms=60000 HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .expect("write");
    // Registered before it was sent: wait until the upstream has it.
    let deadline = tokio::time::Instant::now() + BOUND;
    while !g.upstream.seen().iter().any(|s| s.path == "/api/stall") {
        assert!(tokio::time::Instant::now() < deadline, "never forwarded");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut slow = g.connect().await;
    let sent = tokio::time::Instant::now();
    slow.write_all(b"GET /slow/api/stall?ms=60000 HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .expect("write");
    let (head, body) = read_response(&mut slow, BOUND)
        .await
        .expect("the route's timeout answers");
    let took = sent.elapsed();
    assert!(head.starts_with("HTTP/1.1 504"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{head}"
    );
    let body: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(body["error"], "upstream_unavailable", "{body}");
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert!(
        read_response(&mut long, Duration::from_millis(1))
            .await
            .is_none(),
        "the 5 s request is still waiting when the 300 ms one timed out"
    );
    // The client of the long request goes away: its entry is freed and the
    // worker serves on.
    drop(long);
    g.still_serves().await;
}
