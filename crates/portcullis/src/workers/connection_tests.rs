//! One connection on the real serving code (hyper, parking, the watchdog)
//! over loopback, with a test service that counts its live clones: each
//! hyper connection owns one, so "one left" means no hyper connection (and
//! none of its buffers) exists. Time is tokio's paused clock.

use std::{
    convert::Infallible,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use http_body_util::Full;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::{Semaphore, watch},
    time::Instant,
};

use super::{Builders, park_after, spawn_connection};
use crate::{
    config::ConnectionLimits,
    workers::{Activity, Counted, OpenGuard, Slots, request_body::RequestBody},
};

/// Answers `GET /x` with body `x` (`/big`: [`BIG`] bytes, request body
/// unread); `Upgrade: echo` gets 101 and an echo tunnel, other upgrades
/// are refused (answered as plain requests).
struct Probe {
    live: Arc<AtomicUsize>,
    /// Clones made: one per HTTP/1 hyper connection.
    built: Arc<AtomicUsize>,
}

impl Probe {
    fn new(live: &Arc<AtomicUsize>, built: &Arc<AtomicUsize>) -> Self {
        live.fetch_add(1, Ordering::SeqCst);
        Self {
            live: live.clone(),
            built: built.clone(),
        }
    }
}

impl Clone for Probe {
    fn clone(&self) -> Self {
        self.built.fetch_add(1, Ordering::SeqCst);
        Self::new(&self.live, &self.built)
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.live.fetch_sub(1, Ordering::SeqCst);
    }
}

impl hyper::service::Service<http::Request<RequestBody>> for Probe {
    type Response = http::Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Self::Response, Infallible>>;

    fn call(&self, mut req: http::Request<RequestBody>) -> Self::Future {
        if req
            .headers()
            .get(http::header::UPGRADE)
            .is_some_and(|v| v == "echo")
        {
            let upgrade = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                let Ok(upgraded) = upgrade.await else { return };
                let mut io = hyper_util::rt::TokioIo::new(upgraded);
                let mut buf = [0u8; 64];
                while let Ok(n @ 1..) = io.read(&mut buf).await {
                    if io.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
            let response = http::Response::builder()
                .status(http::StatusCode::SWITCHING_PROTOCOLS)
                .header(http::header::CONNECTION, "upgrade")
                .header(http::header::UPGRADE, "echo")
                .body(Full::default())
                .expect("response");
            return std::future::ready(Ok(response));
        }
        if req.uri().path() == "/big" {
            let body = Bytes::from(vec![b'b'; BIG]);
            return std::future::ready(Ok(http::Response::new(Full::new(body))));
        }
        let body = Bytes::copy_from_slice(&req.uri().path().as_bytes()[1..]);
        std::future::ready(Ok(http::Response::new(Full::new(body))))
    }
}

/// A response larger than loopback's socket buffers: its writer blocks
/// until the client reads.
const BIG: usize = 32 << 20;

struct Conn {
    client: TcpStream,
    live: Arc<AtomicUsize>,
    built: Arc<AtomicUsize>,
    activity: Arc<Activity>,
    drain: watch::Sender<bool>,
    open: watch::Sender<()>,
}

fn limits(header_read_timeout: u64, idle_timeout: u64) -> ConnectionLimits {
    ConnectionLimits {
        header_read_timeout: Duration::from_secs(header_read_timeout),
        idle_timeout: Duration::from_secs(idle_timeout),
        ..ConnectionLimits::default()
    }
}

/// One connection served by [`spawn_connection`] with `limits`.
async fn connect(limits: &ConnectionLimits) -> Conn {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let client = TcpStream::connect(listener.local_addr().expect("addr"))
        .await
        .expect("connect");
    let (server, _) = listener.accept().await.expect("accept");
    let slots = Slots {
        _total: Arc::new(Semaphore::new(1))
            .try_acquire_owned()
            .expect("permit"),
        _client: None,
    };
    let open_guard = OpenGuard {
        load: None,
        _slots: slots,
    };
    let (io, _) = Counted::new(server, open_guard).expect("peer");
    let activity = io.activity.clone();
    let (live, built) = (Arc::default(), Arc::default());
    let (drain, drain_rx) = watch::channel(false);
    let (open, open_rx) = watch::channel(());
    let builders = Arc::new(Builders::new(limits));
    spawn_connection(
        "test",
        io,
        Probe::new(&live, &built),
        &builders,
        limits,
        &drain_rx,
        &open_rx,
    );
    Conn {
        client,
        live,
        built,
        activity,
        drain,
        open,
    }
}

impl Conn {
    /// hyper connections serving this connection now (the one clone left
    /// is the template the connection keeps).
    fn hyper_connections(&self) -> usize {
        self.live.load(Ordering::SeqCst) - 1
    }

    /// Wait (paused clock) until the connection holds no hyper connection.
    async fn until_parked(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.hyper_connections() > 0 {
            assert!(Instant::now() < deadline, "never parked");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Read one response with a Content-Length: its head and body.
    async fn response(&mut self) -> (String, Vec<u8>) {
        let mut out = Vec::new();
        let mut byte = [0u8; 1];
        while !out.ends_with(b"\r\n\r\n") {
            let n = self.client.read(&mut byte).await.expect("read");
            assert_eq!(n, 1, "closed mid-head: {:?}", String::from_utf8_lossy(&out));
            out.push(byte[0]);
        }
        let head = String::from_utf8(out).expect("utf-8").to_ascii_lowercase();
        let length = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .map_or(0, |v| v.trim().parse().expect("length"));
        let mut body = vec![0; length];
        self.client.read_exact(&mut body).await.expect("body");
        (head, body)
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.client.write_all(bytes).await.expect("write");
    }

    /// Reads until the server closes; true if it sent nothing more.
    async fn closed_quietly(&mut self) -> bool {
        let mut rest = Vec::new();
        let _ = self.client.read_to_end(&mut rest).await;
        rest.is_empty()
    }
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n")
}

fn assert_ok(response: &(String, Vec<u8>), body: &str) {
    let (head, got) = response;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(!head.contains("connection: close"), "{head}");
    assert_eq!(got, body.as_bytes());
}

#[tokio::test(start_paused = true)]
async fn idle_connections_hold_no_hyper_buffers() {
    let limits = limits(60, 600);
    let mut conns = Vec::new();
    for _ in 0..3 {
        let mut c = connect(&limits).await;
        // A silent new connection has no hyper connection yet.
        assert_eq!(c.hyper_connections(), 0);
        c.send(get("/a").as_bytes()).await;
        assert_ok(&c.response().await, "a");
        conns.push(c);
    }
    for c in &conns {
        c.until_parked().await;
        assert!(!c.activity.parking.load(Ordering::SeqCst));
    }
    // Parked, still open, and each serves again.
    for c in &mut conns {
        c.send(get("/b").as_bytes()).await;
        assert_ok(&c.response().await, "b");
    }
}

#[tokio::test(start_paused = true)]
async fn a_parked_connection_serves_its_next_requests_with_keep_alive() {
    let limits = limits(60, 600);
    let mut c = connect(&limits).await;
    for path in ["/one", "/two", "/three"] {
        c.send(get(path).as_bytes()).await;
        assert_ok(&c.response().await, &path[1..]);
        c.until_parked().await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_busy_connection_is_not_parked() {
    let limits = limits(60, 600);
    let mut c = connect(&limits).await;
    let step = park_after(&limits) / 2;
    for i in 0..10 {
        c.send(get(&format!("/r{i}")).as_bytes()).await;
        assert_ok(&c.response().await, &format!("r{i}"));
        assert_eq!(c.hyper_connections(), 1, "parked between close requests");
        tokio::time::sleep(step).await;
    }
}

#[tokio::test(start_paused = true)]
async fn pipelined_requests_after_a_park_are_answered_in_order() {
    let limits = limits(60, 600);
    let mut c = connect(&limits).await;
    c.send(get("/first").as_bytes()).await;
    assert_ok(&c.response().await, "first");
    c.until_parked().await;
    c.send(format!("{}{}{}", get("/a"), get("/b"), get("/c")).as_bytes())
        .await;
    for body in ["a", "b", "c"] {
        assert_ok(&c.response().await, body);
    }
}

#[tokio::test(start_paused = true)]
async fn a_partial_head_in_hyper_at_park_time_is_not_lost() {
    let limits = limits(60, 600);
    let mut c = connect(&limits).await;
    // The next head begins in the same write: hyper buffers it, and it is
    // still there when the connection goes quiet.
    c.send(format!("{}GET /sec", get("/first")).as_bytes())
        .await;
    assert_ok(&c.response().await, "first");
    tokio::time::sleep(park_after(&limits) * 4).await;
    c.send(format!("ond HTTP/1.1\r\nHost: t\r\n\r\n{}", get("/third")).as_bytes())
        .await;
    assert_ok(&c.response().await, "second");
    assert_ok(&c.response().await, "third");
    c.until_parked().await;
}

#[tokio::test(start_paused = true)]
async fn a_parked_connection_closes_at_the_keep_alive_limit() {
    // The head timer (from the end of the response) is the shorter limit.
    let limits = limits(10, 600);
    let mut c = connect(&limits).await;
    c.send(get("/a").as_bytes()).await;
    assert_ok(&c.response().await, "a");
    let answered = Instant::now();
    c.until_parked().await;
    assert!(c.closed_quietly().await);
    let lived = answered.elapsed();
    assert!(lived >= limits.header_read_timeout, "{lived:?}");
    assert!(
        lived < limits.header_read_timeout + park_after(&limits) * 2,
        "{lived:?}"
    );

    // The idle timeout is the shorter limit.
    let limits = limits_idle(60, 8);
    let mut c = connect(&limits).await;
    c.send(get("/a").as_bytes()).await;
    assert_ok(&c.response().await, "a");
    let answered = Instant::now();
    c.until_parked().await;
    assert!(c.closed_quietly().await);
    let lived = answered.elapsed();
    assert!(lived >= limits.idle_timeout, "{lived:?}");
    assert!(
        lived < limits.idle_timeout + park_after(&limits) * 2,
        "{lived:?}"
    );
}

fn limits_idle(header_read_timeout: u64, idle_timeout: u64) -> ConnectionLimits {
    limits(header_read_timeout, idle_timeout)
}

#[tokio::test(start_paused = true)]
async fn a_silent_connection_closes_at_the_head_timeout_without_hyper() {
    let limits = limits(10, 600);
    let mut c = connect(&limits).await;
    let start = Instant::now();
    assert!(c.closed_quietly().await);
    assert!(start.elapsed() >= limits.header_read_timeout);
    assert_eq!(
        c.built.load(Ordering::SeqCst),
        0,
        "a hyper connection was built"
    );
}

#[tokio::test(start_paused = true)]
async fn a_parked_connection_closes_when_the_drain_begins() {
    let limits = limits(60, 600);
    let mut c = connect(&limits).await;
    c.send(get("/a").as_bytes()).await;
    assert_ok(&c.response().await, "a");
    c.until_parked().await;
    c.drain.send(true).expect("drain");
    assert!(c.closed_quietly().await);
    // The connection's task has ended (the worker waits for exactly this).
    tokio::time::timeout(Duration::from_secs(1), c.open.closed())
        .await
        .expect("connection task ended");
}

#[tokio::test(start_paused = true)]
async fn an_upgrade_after_a_park_gets_its_tunnel() {
    let limits = limits(60, 600);
    let mut c = connect(&limits).await;
    c.send(get("/a").as_bytes()).await;
    assert_ok(&c.response().await, "a");
    c.until_parked().await;
    c.send(b"GET /ws HTTP/1.1\r\nHost: t\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\n")
        .await;
    let (head, _) = c.response().await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
    c.send(b"ping").await;
    let mut echo = [0u8; 4];
    c.client.read_exact(&mut echo).await.expect("echo");
    assert_eq!(&echo, b"ping");
    // The tunnel outlives any park delay: it left hyper for good.
    tokio::time::sleep(park_after(&limits) * 4).await;
    c.send(b"pong").await;
    c.client.read_exact(&mut echo).await.expect("echo");
    assert_eq!(&echo, b"pong");
}

// Real time: hyper's HTTP/2 client stalls on tokio's paused clock.
#[tokio::test]
async fn http2_prior_knowledge_is_served_and_never_parked() {
    let limits = limits(60, 600);
    let c = connect(&limits).await;
    let (live, built) = (c.live.clone(), c.built.clone());
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(c.client),
    )
    .await
    .expect("h2 handshake");
    tokio::spawn(conn);
    for path in ["/a", "/b"] {
        let req = http::Request::get(format!("http://t{path}"))
            .body(http_body_util::Empty::<Bytes>::new())
            .expect("request");
        let response = sender.send_request(req).await.expect("response");
        assert_eq!(response.status(), http::StatusCode::OK);
        let body = http_body_util::BodyExt::collect(response.into_body())
            .await
            .expect("body")
            .to_bytes();
        assert_eq!(body, &path.as_bytes()[1..]);
    }
    // One hyper connection (hyper-util's, owning the only service) serves
    // it; the HTTP/1 path, the only one that parks, never ran.
    assert_eq!(live.load(Ordering::SeqCst), 1);
    assert_eq!(built.load(Ordering::SeqCst), 0);
}

/// Trickle `head` one byte per `gap` until the server closes; how long the
/// connection lived from the first byte.
async fn trickle_until_closed(c: &mut Conn, head: &[u8], gap: Duration) -> Duration {
    let start = Instant::now();
    let mut buf = [0u8; 256];
    for byte in head.iter().cycle() {
        if c.client.write_all(&[*byte]).await.is_err() {
            break;
        }
        match tokio::time::timeout(gap, c.client.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => break,
            Ok(Ok(_)) => panic!("an answer to a head never completed"),
            Err(_) => {}
        }
    }
    start.elapsed()
}

#[tokio::test(start_paused = true)]
async fn a_head_trickled_across_parks_still_meets_the_head_timer() {
    let limits = limits(10, 600);
    let gap = park_after(&limits) * 3;
    let bound = limits.header_read_timeout + gap * 2;
    // Bytes of the next head after the response: no park at all.
    let mut c = connect(&limits).await;
    c.send(get("/a").as_bytes()).await;
    assert_ok(&c.response().await, "a");
    let lived = trickle_until_closed(&mut c, b"GET /b HTTP/1.1\r\nX: y\r\n", gap).await;
    assert!(lived <= bound, "{lived:?}");
    // The next head begun with the previous request: one park, then none
    // until a request begins, so the head limit runs out.
    let mut c = connect(&limits).await;
    c.send(format!("{}G", get("/a")).as_bytes()).await;
    assert_ok(&c.response().await, "a");
    let deadline = Instant::now() + Duration::from_secs(60);
    while c.built.load(Ordering::SeqCst) < 2 {
        assert!(
            Instant::now() < deadline,
            "the partial head was never parked"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let lived = trickle_until_closed(&mut c, b"ET /b HTTP/1.1\r\nX: y\r\n", gap).await;
    assert!(lived <= bound, "{lived:?}");
    assert_eq!(c.built.load(Ordering::SeqCst), 2, "parked more than once");
}

/// Send `request` to `/big` without reading, so hyper is still writing the
/// response when the connection goes quiet; then read that response and
/// send `next`. hyper closes after such a response (the request said
/// `Connection: close`, or its body was left unread): nothing may answer
/// `next`.
async fn closing_response_then(request: &[u8], next: &[u8]) -> Vec<u8> {
    let limits = limits(60, 600);
    let mut c = connect(&limits).await;
    c.send(request).await;
    // Paused clock: hyper waits on the socket, time runs to the watchdog's
    // ticks, well past the park delay.
    tokio::time::sleep(park_after(&limits) * 4).await;
    let (head, body) = c.response().await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert_eq!(body.len(), BIG);
    // The server may have closed already: a refused write is the point.
    let _ = c.client.write_all(next).await;
    let mut rest = Vec::new();
    let _ = c.client.read_to_end(&mut rest).await;
    rest
}

#[tokio::test(start_paused = true)]
async fn connection_close_with_a_slow_reader_is_not_parked_and_reused() {
    let rest = closing_response_then(
        b"GET /big HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        get("/after-close").as_bytes(),
    )
    .await;
    assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
}

#[tokio::test(start_paused = true)]
async fn unread_body_left_by_an_early_response_is_never_read_as_a_request() {
    let smuggled = get("/smuggled");
    let head = format!(
        "POST /big HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
        smuggled.len()
    );
    let rest = closing_response_then(head.as_bytes(), smuggled.as_bytes()).await;
    assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
}

#[tokio::test(start_paused = true)]
async fn a_slow_reader_of_a_keep_alive_response_is_parked_once_it_has_read() {
    let limits = limits(60, 600);
    let mut c = connect(&limits).await;
    c.send(get("/big").as_bytes()).await;
    tokio::time::sleep(park_after(&limits) * 4).await;
    assert_eq!(
        c.hyper_connections(),
        1,
        "parked with its response unwritten"
    );
    let (head, body) = c.response().await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert_eq!(body.len(), BIG);
    c.until_parked().await;
    c.send(get("/a").as_bytes()).await;
    assert_ok(&c.response().await, "a");
}

/// The connection's task has ended (the worker waits for exactly this).
async fn task_ended(open: &watch::Sender<()>) {
    tokio::time::timeout(Duration::from_secs(1), open.closed())
        .await
        .expect("connection task ended");
}

#[tokio::test(start_paused = true)]
async fn a_parked_connection_whose_client_half_closes_ends_its_task() {
    let limits = limits(60, 600);
    let mut c = connect(&limits).await;
    c.send(get("/a").as_bytes()).await;
    assert_ok(&c.response().await, "a");
    c.until_parked().await;
    c.client.shutdown().await.expect("half-close");
    assert!(c.closed_quietly().await);
    task_ended(&c.open).await;
    assert_eq!(
        c.live.load(Ordering::SeqCst),
        0,
        "a hyper connection left behind"
    );
}

#[tokio::test(start_paused = true)]
async fn a_parked_connection_reset_by_its_client_ends_its_task() {
    let limits = limits(60, 600);
    let mut c = connect(&limits).await;
    c.send(get("/a").as_bytes()).await;
    assert_ok(&c.response().await, "a");
    c.until_parked().await;
    let Conn {
        client, open, live, ..
    } = c;
    // SO_LINGER 0: close sends RST.
    client.set_zero_linger().expect("linger");
    drop(client);
    task_ended(&open).await;
    assert_eq!(
        live.load(Ordering::SeqCst),
        0,
        "a hyper connection left behind"
    );
}

#[tokio::test(start_paused = true)]
async fn an_empty_connection_closed_at_once_builds_no_hyper_connection() {
    let limits = limits(60, 600);
    let Conn {
        client,
        open,
        built,
        ..
    } = connect(&limits).await;
    drop(client);
    task_ended(&open).await;
    assert_eq!(built.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn an_http2_preface_sent_byte_by_byte_is_still_http2() {
    let limits = limits(60, 600);
    let mut c = connect(&limits).await;
    for byte in b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" {
        c.send(&[*byte]).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // An empty SETTINGS frame: the server answers with its own SETTINGS.
    c.send(b"\0\0\0\x04\0\0\0\0\0").await;
    let mut frame = [0u8; 9];
    c.client.read_exact(&mut frame).await.expect("a frame");
    assert_eq!(frame[3], 4, "not a SETTINGS frame: {frame:?}");
    assert_eq!(c.built.load(Ordering::SeqCst), 0, "the HTTP/1 path ran");
}

#[tokio::test(start_paused = true)]
async fn garbage_first_bytes_get_400_and_a_close() {
    let limits = limits(60, 600);
    let mut c = connect(&limits).await;
    c.send(b"\x16\x03\x01\x02\0\x01\0\x01\xfc\x03\x03garbage\r\n\r\n")
        .await;
    let mut rest = Vec::new();
    let _ = c.client.read_to_end(&mut rest).await;
    assert!(
        rest.starts_with(b"HTTP/1.1 400"),
        "{}",
        String::from_utf8_lossy(&rest)
    );
    task_ended(&c.open).await;
}

/// hyper keeps a refused upgrade pending until its connection ends, and
/// then hands the socket to it: parked, the connection was closed at the
/// park delay. It stays in hyper instead, to the keep-alive limit.
#[tokio::test(start_paused = true)]
async fn a_refused_upgrade_keeps_its_connection_alive_to_the_limit() {
    let limits = limits(10, 600);
    let mut c = connect(&limits).await;
    c.send(get("/a").as_bytes()).await;
    assert_ok(&c.response().await, "a");
    c.until_parked().await;
    let refused =
        "GET /refused HTTP/1.1\r\nHost: t\r\nConnection: upgrade\r\nUpgrade: other\r\n\r\n";
    c.send(format!("{refused}{}", get("/next")).as_bytes())
        .await;
    assert_ok(&c.response().await, "refused");
    assert_ok(&c.response().await, "next");
    let answered = Instant::now();
    tokio::time::sleep(park_after(&limits) * 4).await;
    assert_eq!(c.live.load(Ordering::SeqCst), 2, "closed or parked");
    c.send(get("/after").as_bytes()).await;
    assert_ok(&c.response().await, "after");
    // Then closed by the keep-alive limit, as before parking existed.
    assert!(c.closed_quietly().await);
    let lived = answered.elapsed();
    assert!(lived >= limits.header_read_timeout, "{lived:?}");
}

#[tokio::test(start_paused = true)]
async fn http10_is_parked_only_with_keep_alive() {
    let limits = limits(60, 600);
    let mut c = connect(&limits).await;
    c.send(b"GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        .await;
    let (head, body) = c.response().await;
    assert!(head.starts_with("http/1.0 200"), "{head}");
    assert!(head.contains("connection: keep-alive"), "{head}");
    assert_eq!(body, b"a");
    c.until_parked().await;
    // Without keep-alive: answered, then closed, never parked.
    c.send(b"GET /b HTTP/1.0\r\n\r\n").await;
    let mut rest = Vec::new();
    let _ = c.client.read_to_end(&mut rest).await;
    let text = String::from_utf8_lossy(&rest);
    assert!(
        text.starts_with("HTTP/1.0 200") && text.ends_with("\r\n\r\nb"),
        "{text}"
    );
    task_ended(&c.open).await;
}
