//! Connection limits on the real serving path ([`portcullis::serve`]):
//! slow and silent heads, idle keep-alive connections, the connection cap,
//! oversized heads, and the admin listener under the same rules. Short
//! limits come from `[server]`; every wait is a bounded read, never a
//! fixed sleep.

use std::time::Duration;

use crate::common::serving::{Served, one_request, read_response, read_until_closed};
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

/// A request body that stops coming is given up after
/// `server.body_read_timeout`: 408, the connection closes and its slot
/// (the only one here) serves the next client. Without the timer the request
/// stays in flight, so neither the idle rule nor the head timer ends it.
#[tokio::test]
async fn stalled_request_body_does_not_hold_a_connection_forever() {
    let g = Served::start(
        "body_read_timeout = \"300ms\"\nheader_read_timeout = \"60s\"\nidle_timeout = \"60s\"\nmax_connections = 1\nworkers = 1",
    )
    .await;
    // Through the proxy, with a small and a large announced length, and
    // read by an auth endpoint.
    for (path, length) in [
        ("/api/upload", 100),
        ("/api/big-upload", 2_000_000),
        ("/auth/backchannel-logout", 100),
    ] {
        let mut tcp = g.connect().await;
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: a\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {length}\r\n\r\n0123456789"
        );
        tcp.write_all(head.as_bytes()).await.expect("write");
        let (head, _) = read_response(&mut tcp, BOUND)
            .await
            .unwrap_or_else(|| panic!("{path}: a stalled body holds its connection"));
        assert!(head.starts_with("HTTP/1.1 408"), "{path}: {head}");
        assert!(
            read_until_closed(&mut tcp, BOUND).await.is_some(),
            "{path}: connection kept open after the 408"
        );
        // The one slot is free again.
        g.still_serves().await;
    }
    // Streamed to the upstream (a `token = "none"` route), whose request is
    // cut, never completed.
    for seen in g.upstream.seen() {
        if seen.path.ends_with("upload") {
            assert_eq!(seen.body, b"<body error>", "the upstream got a whole body");
        }
    }
    let metrics = one_request(g.admin, "/metrics").await.expect("metrics");
    assert!(metrics.contains("reason=\"body_timeout\""), "{metrics}");
}

/// The same silence after the response has begun (the upstream answered
/// before reading the body, and its answer is still streaming, so the
/// connection is never idle): too late for a 408, the connection is closed.
#[tokio::test]
async fn stalled_request_body_after_the_response_began_closes_the_connection() {
    let g = Served::start(
        "body_read_timeout = \"300ms\"\nheader_read_timeout = \"60s\"\nidle_timeout = \"60s\"",
    )
    .await;
    let mut tcp = g.connect().await;
    tcp.write_all(b"POST /api/early HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n0123456789")
        .await
        .expect("write");
    let mut seen = Vec::new();
    let began = tokio::time::timeout(BOUND, async {
        let mut buf = [0u8; 1024];
        while crate::common::serving::find(&seen, b"early").is_none() {
            match tokio::io::AsyncReadExt::read(&mut tcp, &mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
        true
    })
    .await;
    assert_eq!(began, Ok(true), "{}", String::from_utf8_lossy(&seen));
    assert!(seen.starts_with(b"HTTP/1.1 200"));
    assert!(
        read_until_closed(&mut tcp, BOUND).await.is_some(),
        "a stalled body kept its connection open beside a streaming response"
    );
}

/// A client that opens connection after connection from one address gets
/// at most `server.max_connections_per_ip`; the rest are closed at once, so
/// the slots under `server.max_connections` stay free for other clients.
#[tokio::test]
async fn one_client_cannot_take_every_connection_slot() {
    let g = Served::start(
        "max_connections = 6\nmax_connections_per_ip = 3\nheader_read_timeout = \"60s\"\nworkers = 2",
    )
    .await;
    let mut held = Vec::new();
    for i in 0..3 {
        let mut tcp = g.connect().await;
        let head = format!("GET /api/held{i} HTTP/1.1\r\nHost: a\r\n\r\n");
        tcp.write_all(head.as_bytes()).await.expect("write");
        let (head, _) = read_response(&mut tcp, BOUND).await.expect("answer");
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        held.push(tcp);
    }
    // More from the same address: closed without an answer, long before
    // the head timer, every time.
    for _ in 0..4 {
        let mut tcp = g.connect().await;
        let closed = read_until_closed(&mut tcp, BOUND)
            .await
            .expect("a fourth connection from one address stays open");
        assert!(closed.is_empty(), "{}", String::from_utf8_lossy(&closed));
        held.push(tcp);
    }
    // Another address (127.0.0.2 is loopback too) is served.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind("127.0.0.2:0".parse().expect("addr"))
        .expect("bind 127.0.0.2");
    let mut other = socket.connect(g.addr).await.expect("connect");
    other
        .write_all(b"GET /api/other HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .expect("write");
    let (head, _) = read_response(&mut other, BOUND)
        .await
        .expect("another client is served");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    // A closed connection gives its client's slot back (once the gateway
    // has seen the close: polled).
    held.truncate(2);
    let deadline = tokio::time::Instant::now() + BOUND;
    loop {
        let mut tcp = g.connect().await;
        let _ = tcp
            .write_all(b"GET /api/again HTTP/1.1\r\nHost: a\r\n\r\n")
            .await;
        if let Some((head, _)) = read_response(&mut tcp, BOUND).await {
            assert!(head.starts_with("HTTP/1.1 200"), "{head}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not served again after a connection of that client closed"
        );
    }
    let metrics = one_request(g.admin, "/metrics").await.expect("metrics");
    assert!(metrics.contains("limit=\"per_ip\""), "{metrics}");
}

/// An HTTP/2 connection (prior knowledge) made by the `h2` crate, with its
/// connection task and a handle for PINGs.
async fn h2_client(
    addr: std::net::SocketAddr,
) -> (
    h2::client::SendRequest<bytes::Bytes>,
    h2::PingPong,
    tokio::task::JoinHandle<Result<(), h2::Error>>,
) {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (send, mut connection) = h2::client::handshake(tcp).await.expect("h2 handshake");
    let ping = connection.ping_pong().expect("ping_pong");
    (send, ping, tokio::spawn(connection))
}

/// One GET over `send`, its status, the whole body read.
async fn h2_get(send: &mut h2::client::SendRequest<bytes::Bytes>, uri: String) -> u16 {
    let ready = send.clone().ready().await.expect("ready");
    *send = ready;
    let request = http::Request::get(uri).body(()).expect("request");
    let (response, _) = send.send_request(request, true).expect("send");
    let response = tokio::time::timeout(BOUND, response)
        .await
        .expect("answer in time")
        .expect("response");
    let status = response.status().as_u16();
    let mut body = response.into_body();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.expect("body");
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    status
}

/// Idleness is counted in requests, not frames: after its one request an
/// HTTP/2 connection that only sends PINGs is closed after `idle_timeout`
/// (the head timer, long here, no longer applies once a request came).
#[tokio::test]
async fn http2_pings_do_not_keep_an_idle_connection_open() {
    let g = Served::start("header_read_timeout = \"60s\"\nidle_timeout = \"300ms\"").await;
    let (mut send, mut ping, connection) = h2_client(g.addr).await;
    assert_eq!(
        h2_get(&mut send, format!("http://{}/api/h2", g.addr)).await,
        200
    );
    let deadline = tokio::time::Instant::now() + BOUND;
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    let closed = loop {
        if tokio::time::Instant::now() > deadline {
            break false;
        }
        tick.tick().await;
        match tokio::time::timeout(BOUND, ping.ping(h2::Ping::opaque())).await {
            Ok(Ok(_pong)) => {}
            Ok(Err(_)) | Err(_) => break true,
        }
    };
    assert!(closed, "PINGs alone kept an idle HTTP/2 connection open");
    let ended = tokio::time::timeout(BOUND, connection).await;
    assert!(ended.is_ok(), "the client's connection task did not end");
}

/// One HTTP/2 connection may have at most 100 requests open at once
/// (hyper's default is 200): the gateway's SETTINGS say so.
#[tokio::test]
async fn http2_stream_flood_is_capped() {
    let g = Served::start("").await;
    let (mut send, _ping, _connection) = h2_client(g.addr).await;
    // After one exchange the server's SETTINGS have been applied.
    assert_eq!(
        h2_get(&mut send, format!("http://{}/api/h2", g.addr)).await,
        200
    );
    assert_eq!(send.current_max_send_streams(), 100);
}

/// The auth endpoints take at most 64 KiB of body: 413 by `Content-Length`
/// before the body is read (also on an endpoint that reads none), and for a
/// chunked body once it passes the limit. A small body is still read.
#[tokio::test]
async fn oversized_auth_body_is_refused() {
    let g = Served::start("").await;
    for path in ["/auth/backchannel-logout", "/auth/logout"] {
        let mut tcp = g.connect().await;
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: a\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 70000\r\n\r\n"
        );
        tcp.write_all(head.as_bytes()).await.expect("write");
        let (head, _) = read_response(&mut tcp, BOUND)
            .await
            .unwrap_or_else(|| panic!("{path}: no answer to an oversized body"));
        assert!(head.starts_with("HTTP/1.1 413"), "{path}: {head}");
    }
    let mut chunked = format!(
        "POST /auth/backchannel-logout HTTP/1.1\r\nHost: a\r\nContent-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\nlogout_token=",
        70_013
    )
    .into_bytes();
    chunked.extend(std::iter::repeat_n(b'a', 70_000));
    chunked.extend_from_slice(b"\r\n0\r\n\r\n");
    let status = status_of(g.addr, &chunked).await;
    assert_eq!(status, "HTTP/1.1 413 Payload Too Large");
    // Within the limit the endpoint reads it (and refuses the token).
    let small = b"POST /auth/backchannel-logout HTTP/1.1\r\nHost: a\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 17\r\n\r\nlogout_token=abcd";
    let status = status_of(g.addr, small).await;
    assert!(!status.contains("413"), "{status}");
}

/// A keep-alive connection quiet for longer than the park delay (a quarter
/// of `header_read_timeout` here: 500 ms) leaves hyper and comes back on its
/// next byte: the proxied requests after it, pipelined, are all answered in
/// order and keep the connection alive, and a WebSocket upgrade on the same
/// connection after another quiet spell gets its tunnel.
#[tokio::test]
async fn a_quiet_keepalive_connection_serves_pipelined_requests_and_upgrades() {
    use futures_util::{SinkExt as _, StreamExt as _};
    use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest as _};
    let g = Served::start("header_read_timeout = \"2s\"\nidle_timeout = \"60s\"").await;
    let mut tcp = g.connect().await;
    tcp.write_all(b"GET /api/first HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .expect("write");
    let (head, _) = read_response(&mut tcp, BOUND).await.expect("first answer");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    // Two park delays and more with nothing on the wire: still open.
    let quiet = read_until_closed(&mut tcp, Duration::from_millis(1200)).await;
    assert!(quiet.is_none(), "closed while quiet: {quiet:?}");
    tcp.write_all(
        b"GET /api/a HTTP/1.1\r\nHost: a\r\n\r\nGET /api/b HTTP/1.1\r\nHost: a\r\n\r\nGET /api/c HTTP/1.1\r\nHost: a\r\n\r\n",
    )
    .await
    .expect("write");
    for path in ["a", "b", "c"] {
        let (head, body) = read_response(&mut tcp, BOUND).await.expect("answer");
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(
            !head.to_ascii_lowercase().contains("connection: close"),
            "{head}"
        );
        assert_eq!(body, format!("upstream /api/{path}").as_bytes());
    }
    let quiet = read_until_closed(&mut tcp, Duration::from_millis(1200)).await;
    assert!(quiet.is_none(), "closed while quiet: {quiet:?}");
    let mut req = format!("ws://{}/ws/echo", g.addr)
        .into_client_request()
        .expect("request");
    let origin = format!("http://{}", g.addr);
    req.headers_mut()
        .insert("origin", origin.parse().expect("origin"));
    let (mut ws, resp) = tokio_tungstenite::client_async(req, tcp)
        .await
        .expect("websocket on the same connection");
    assert_eq!(resp.status(), 101);
    ws.send(Message::text("after a park")).await.expect("send");
    let echoed = tokio::time::timeout(BOUND, ws.next())
        .await
        .expect("echo in time")
        .expect("message")
        .expect("ok");
    assert_eq!(echoed.to_text().expect("text"), "after a park");
}
