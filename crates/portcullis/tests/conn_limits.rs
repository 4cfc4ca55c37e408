//! Connection limits on the real serving path ([`portcullis::serve`]):
//! slow and silent heads, idle keep-alive connections, the connection cap,
//! oversized heads, and the admin listener under the same rules. Short
//! limits come from `[server]`; every wait is a bounded read, never a
//! fixed sleep.

mod common;

use std::time::Duration;

use common::serving::{Served, one_request, read_response, read_until_closed};
use tokio::io::AsyncWriteExt;

/// Long enough for a loaded CI machine; a limit that works closes far sooner.
const BOUND: Duration = Duration::from_secs(10);

/// Send `head` one byte at a time (every 50 ms) until the gateway closes
/// the connection; true if it did within `BOUND`.
async fn trickle_until_closed(tcp: &mut tokio::net::TcpStream, head: &[u8]) -> bool {
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    let deadline = tokio::time::Instant::now() + BOUND;
    // Never completes the head: the last `\r\n` is never sent.
    for byte in head.iter().cycle() {
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tick.tick().await;
        if tcp.write_all(&[*byte]).await.is_err() {
            return true;
        }
        if read_until_closed(tcp, Duration::from_millis(1))
            .await
            .is_some()
        {
            return true;
        }
    }
    false
}

#[tokio::test]
async fn slowloris_head_is_closed_after_header_read_timeout() {
    let g = Served::start("header_read_timeout = \"400ms\"\nidle_timeout = \"60s\"").await;

    // A first head trickled byte by byte.
    let mut tcp = g.connect().await;
    tcp.write_all(b"GET /api/slow HTTP/1.1\r\nHost: a\r\n")
        .await
        .expect("write");
    assert!(
        trickle_until_closed(&mut tcp, b"X-Slow: aaaa\r\n").await,
        "a trickled first head keeps its connection"
    );

    // A silent connection (nothing sent: HTTP/1 or HTTP/2 not even chosen).
    let mut tcp = g.connect().await;
    assert!(
        read_until_closed(&mut tcp, BOUND).await.is_some(),
        "a silent connection stays open"
    );

    // HTTP/2 prior knowledge, the preface and then nothing.
    let mut tcp = g.connect().await;
    tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .expect("write");
    assert!(
        read_until_closed(&mut tcp, BOUND).await.is_some(),
        "an HTTP/2 connection without a request stays open"
    );

    // The second head on a keep-alive connection, trickled.
    let mut tcp = g.connect().await;
    tcp.write_all(b"GET /api/first HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .expect("write");
    let (head, _) = read_response(&mut tcp, BOUND).await.expect("first answer");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    tcp.write_all(b"GET /api/second HTTP/1.1\r\nHost: a\r\n")
        .await
        .expect("write");
    assert!(
        trickle_until_closed(&mut tcp, b"X-Slow: aaaa\r\n").await,
        "a trickled second head keeps its connection"
    );
    g.still_serves().await;
}

#[tokio::test]
async fn idle_keepalive_connection_is_closed_after_idle_timeout() {
    // The head timeout is long, so only the idle rule can close it.
    let g = Served::start("header_read_timeout = \"60s\"\nidle_timeout = \"300ms\"").await;
    let mut tcp = g.connect().await;
    tcp.write_all(b"GET /api/once HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .expect("write");
    let (head, _) = read_response(&mut tcp, BOUND).await.expect("answer");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        read_until_closed(&mut tcp, BOUND).await.is_some(),
        "an idle keep-alive connection stays open"
    );

    // A response in flight is not idle, even with no byte moving for
    // several idle periods (a long poll, an SSE stream between events).
    let mut tcp = g.connect().await;
    tcp.write_all(b"GET /api/stall?ms=1500 HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .expect("write");
    let (head, body) = read_response(&mut tcp, BOUND)
        .await
        .expect("the long response arrives");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, b"upstream /api/stall");
}

#[tokio::test]
async fn connections_beyond_cap_wait_and_never_crash() {
    let g = Served::start("max_connections = 3\nworkers = 2").await;
    // Fill the cap with keep-alive connections that each made a request.
    let mut held = Vec::new();
    for i in 0..3 {
        let mut tcp = g.connect().await;
        let head = format!("GET /api/held{i} HTTP/1.1\r\nHost: a\r\n\r\n");
        tcp.write_all(head.as_bytes()).await.expect("write");
        let (head, _) = read_response(&mut tcp, BOUND).await.expect("answer");
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        held.push(tcp);
    }
    // One more: the kernel takes it into the backlog, the gateway does not
    // serve it while the cap is full.
    let mut waiting = g.connect().await;
    waiting
        .write_all(b"GET /api/waiting HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .expect("write");
    assert!(
        read_response(&mut waiting, Duration::from_millis(300))
            .await
            .is_none(),
        "served beyond the cap"
    );
    // A burst of many more never crashes anything.
    let mut burst = Vec::new();
    for _ in 0..100 {
        if let Ok(tcp) = tokio::net::TcpStream::connect(g.addr).await {
            burst.push(tcp);
        }
    }
    drop(burst);
    // A slot frees: the waiting connection is served.
    drop(held.pop());
    let (head, _) = read_response(&mut waiting, BOUND)
        .await
        .expect("the waiting connection is served once a slot frees");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    drop(waiting);
    drop(held);
    g.still_serves().await;
    g.stop().await;
}

fn big_head(path: &str, header_bytes: usize, headers: usize) -> Vec<u8> {
    let mut head = format!("GET {path} HTTP/1.1\r\nHost: a\r\n");
    for i in 0..headers {
        head.push_str(&format!("X-Filler-{i}: {}\r\n", "v".repeat(header_bytes)));
    }
    head.push_str("\r\n");
    head.into_bytes()
}

async fn status_of(addr: std::net::SocketAddr, request: &[u8]) -> String {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    // The gateway may close while the rest is still being written.
    let _ = tcp.write_all(request).await;
    let (head, _) = read_response(&mut tcp, BOUND).await.expect("an answer");
    head.lines().next().unwrap_or_default().to_string()
}

#[tokio::test]
async fn oversized_head_gets_431() {
    let g = Served::start("max_header_bytes = 8192").await;
    let status = status_of(g.addr, &big_head("/api/big", 10_000, 1)).await;
    assert_eq!(status, "HTTP/1.1 431 Request Header Fields Too Large");
    // Just under the limit is served.
    let status = status_of(g.addr, &big_head("/api/fits", 7_000, 1)).await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(g.upstream.seen().iter().all(|s| s.path != "/api/big"));
}

#[tokio::test]
async fn too_many_headers_gets_431() {
    let g = Served::start("max_headers = 20").await;
    let status = status_of(g.addr, &big_head("/api/many", 4, 30)).await;
    assert_eq!(status, "HTTP/1.1 431 Request Header Fields Too Large");
    let status = status_of(g.addr, &big_head("/api/few", 4, 10)).await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(g.upstream.seen().iter().all(|s| s.path != "/api/many"));
}

#[tokio::test]
async fn slow_clients_do_not_delay_others() {
    // One worker: the trickling clients and the normal one share a thread.
    let g = Served::start("workers = 1\nheader_read_timeout = \"60s\"").await;
    let mut slow = Vec::new();
    for _ in 0..200 {
        let mut tcp = g.connect().await;
        tcp.write_all(b"GET /api/slow HTTP/1.1\r\nHost: a\r\nX-")
            .await
            .expect("write");
        slow.push(tcp);
    }
    // Keep them trickling while the normal requests run.
    let trickle = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        loop {
            tick.tick().await;
            for tcp in &mut slow {
                let _ = tcp.write_all(b"a").await;
            }
        }
    });
    for i in 0..5 {
        let answer = one_request(g.addr, &format!("/api/normal{i}"))
            .await
            .expect("a normal request completes while 200 clients trickle");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
    trickle.abort();
}

#[tokio::test]
async fn admin_listener_has_the_same_limits() {
    let g = Served::start(
        "header_read_timeout = \"400ms\"\nidle_timeout = \"300ms\"\nmax_header_bytes = 8192\nmax_headers = 20",
    )
    .await;
    // Served at all (through the same connection code).
    let answer = one_request(g.admin, "/healthz").await.expect("healthz");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // Slow head.
    let mut tcp = tokio::net::TcpStream::connect(g.admin)
        .await
        .expect("connect");
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: a\r\n")
        .await
        .expect("write");
    assert!(
        trickle_until_closed(&mut tcp, b"X-Slow: aaaa\r\n").await,
        "admin: trickled head kept open"
    );
    // Idle keep-alive.
    let mut tcp = tokio::net::TcpStream::connect(g.admin)
        .await
        .expect("connect");
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .expect("write");
    read_response(&mut tcp, BOUND).await.expect("answer");
    assert!(
        read_until_closed(&mut tcp, BOUND).await.is_some(),
        "admin: idle connection kept open"
    );
    // What an operator sees: the closes are counted per listener and reason.
    let metrics = one_request(g.admin, "/metrics").await.expect("metrics");
    assert!(
        metrics.contains("portcullis_connections_closed_total{listener=\"admin\",reason=\"idle\"}"),
        "{metrics}"
    );
    // Oversized heads.
    let status = status_of(g.admin, &big_head("/healthz", 10_000, 1)).await;
    assert_eq!(status, "HTTP/1.1 431 Request Header Fields Too Large");
    let status = status_of(g.admin, &big_head("/healthz", 4, 30)).await;
    assert_eq!(status, "HTTP/1.1 431 Request Header Fields Too Large");
}

#[tokio::test]
async fn request_target_without_a_path_gets_400_not_500() {
    let g = Served::start("").await;
    for target in ["gw:443", "evil.example:80", "aaaa"] {
        let request = format!("GET {target} HTTP/1.1\r\nHost: gw\r\n\r\n");
        let status = status_of(g.addr, request.as_bytes()).await;
        assert_eq!(status, "HTTP/1.1 400 Bad Request", "{target}");
    }
    // Absolute-form keeps its path and is routed as usual.
    let status = status_of(
        g.addr,
        b"GET http://gw/api/abs HTTP/1.1\r\nHost: gw\r\n\r\n",
    )
    .await;
    assert_eq!(status, "HTTP/1.1 200 OK");
}

/// hyper 1.x starts its head timer when the previous response has been
/// sent, so an idle HTTP/1 keep-alive connection closes after
/// `header_read_timeout` even with a long `idle_timeout` (documented in
/// operations.md; this test notices if hyper changes that).
#[tokio::test]
async fn idle_http1_keepalive_closes_at_header_read_timeout() {
    let g = Served::start("header_read_timeout = \"300ms\"\nidle_timeout = \"60s\"").await;
    let mut tcp = g.connect().await;
    tcp.write_all(b"GET /api/once HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .expect("write");
    let (head, _) = read_response(&mut tcp, BOUND).await.expect("answer");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        read_until_closed(&mut tcp, BOUND).await.is_some(),
        "hyper no longer times the gap between keep-alive requests"
    );
}

/// An upgraded WebSocket tunnel has left hyper and the idle watchdog: a
/// quiet tunnel outlives `idle_timeout` and `header_read_timeout`.
#[tokio::test]
async fn quiet_websocket_tunnel_outlives_the_idle_timeout() {
    use futures_util::{SinkExt as _, StreamExt as _};
    use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest as _};
    let g = Served::start("header_read_timeout = \"200ms\"\nidle_timeout = \"200ms\"").await;
    let mut req = format!("ws://{}/ws/echo", g.addr)
        .into_client_request()
        .expect("request");
    let origin = format!("http://{}", g.addr);
    req.headers_mut()
        .insert("origin", origin.parse().expect("origin"));
    let (mut ws, resp) = tokio_tungstenite::connect_async(req)
        .await
        .expect("websocket through the gateway");
    assert_eq!(resp.status(), 101);
    // Several idle periods with nothing on the wire: no close arrives.
    let quiet = tokio::time::timeout(Duration::from_millis(1200), ws.next()).await;
    assert!(quiet.is_err(), "the quiet tunnel was closed: {quiet:?}");
    ws.send(Message::text("still here")).await.expect("send");
    let echoed = tokio::time::timeout(BOUND, ws.next())
        .await
        .expect("echo in time")
        .expect("message")
        .expect("ok");
    assert_eq!(echoed.to_text().expect("text"), "still here");
}
