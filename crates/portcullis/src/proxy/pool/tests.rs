//! The pool against raw upstreams: reuse, closed and racy connections, replays, bodies.

use std::sync::atomic::{AtomicUsize, Ordering};

use http_body_util::BodyExt as _;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpListener,
    sync::mpsc,
};

use super::*;

/// A raw HTTP/1.1 upstream answering every request with `status`
/// (and `body` unless HEAD or 204); counts connections, and with
/// `close` shuts each one after its first answer and reports it.
struct Upstream {
    url: url::Url,
    connections: Arc<AtomicUsize>,
    closed: mpsc::UnboundedReceiver<()>,
}

async fn upstream(status: u16, body: &'static str, close: bool) -> Upstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = url::Url::parse(&format!("http://{}", listener.local_addr().unwrap())).unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let (tx, closed) = mpsc::unbounded_channel();
    let count = connections.clone();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        match conn.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        continue;
                    };
                    let head = buf.starts_with(b"HEAD ");
                    buf.drain(..end + 4);
                    let answer = if status == 204 {
                        "HTTP/1.1 204 No Content\r\n\r\n".to_string()
                    } else {
                        format!(
                            "HTTP/1.1 {status} X\r\ncontent-length: {}\r\n\r\n{}",
                            body.len(),
                            if head { "" } else { body }
                        )
                    };
                    if conn.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                    if close {
                        let _ = conn.shutdown().await;
                        drop(conn);
                        let _ = tx.send(());
                        return;
                    }
                }
            });
        }
    });
    Upstream {
        url,
        connections,
        closed,
    }
}

fn request(url: &url::Url, method: http::Method) -> http::Request<Body> {
    http::Request::builder()
        .method(method)
        .uri("/x")
        .header(http::header::HOST, url.authority())
        .body(Body::empty())
        .unwrap()
}

async fn send(pool: &Pool, req: http::Request<Body>) -> (http::StatusCode, Bytes) {
    let resp = pool.send(req).await.unwrap();
    let status = resp.status();
    (status, resp.into_body().collect().await.unwrap().to_bytes())
}

fn pool(up: &Upstream) -> Pool {
    Pool::new(&up.url, Duration::from_secs(5), 1).unwrap()
}

#[tokio::test]
async fn sequential_requests_share_one_connection() {
    let up = upstream(200, "hello", false).await;
    let pool = pool(&up);
    for _ in 0..5 {
        let (status, body) = send(&pool, request(&up.url, http::Method::GET)).await;
        assert_eq!((status.as_u16(), &body[..]), (200, &b"hello"[..]));
    }
    assert_eq!(up.connections.load(Ordering::SeqCst), 1);
}

/// Bodies nobody polls (HEAD, 204) still give the connection back.
#[tokio::test]
async fn answers_without_a_body_return_the_connection() {
    for (status, method) in [(200, http::Method::HEAD), (204, http::Method::GET)] {
        let up = upstream(status, "hello", false).await;
        let pool = pool(&up);
        for _ in 0..3 {
            let resp = pool.send(request(&up.url, method.clone())).await.unwrap();
            assert_eq!(resp.status().as_u16(), status);
            drop(resp);
        }
        assert_eq!(
            up.connections.load(Ordering::SeqCst),
            1,
            "{method} {status}"
        );
    }
}

/// A connection the upstream closed while idle is not used again; the
/// request goes out on a new one.
#[tokio::test]
async fn connection_closed_by_the_upstream_is_replaced() {
    let mut up = upstream(200, "hello", true).await;
    let pool = pool(&up);
    for i in 1..=4 {
        let (status, body) = send(&pool, request(&up.url, http::Method::GET)).await;
        assert_eq!((status.as_u16(), &body[..]), (200, &b"hello"[..]));
        up.closed.recv().await.unwrap();
        assert_eq!(up.connections.load(Ordering::SeqCst), i);
    }
}

/// The keep-alive race: the upstream closes an idle connection that the
/// pool still takes for ready, after hyper has written the request to
/// it. The upstream runs on its own thread and closes only once the
/// client has gone idle; the test waits for the close without yielding,
/// so the client cannot have seen it before the second request. Returns
/// the second request's outcome.
async fn second_request_after_idle_close(
    method: http::Method,
) -> Result<http::StatusCode, PoolError> {
    use std::io::{Read as _, Write as _};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = url::Url::parse(&format!("http://{}", listener.local_addr().unwrap())).unwrap();
    let (close_tx, close_rx) = std::sync::mpsc::channel::<()>();
    let (closed_tx, closed_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for close in [true, false] {
            let Ok((mut conn, _)) = listener.accept() else {
                return;
            };
            let mut buf = Vec::new();
            let mut chunk = [0u8; 1024];
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                match conn.read(&mut chunk) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let _ = conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
            if close {
                let _ = close_rx.recv();
                let _ = conn.shutdown(std::net::Shutdown::Both);
                drop(conn);
                let _ = closed_tx.send(());
            }
        }
    });
    let mut pool = Pool::new(&url, Duration::from_secs(5), 1).unwrap();
    // Any idle time counts as long enough here.
    pool.racy_idle = Duration::ZERO;
    let (status, body) = send(&pool, request(&url, http::Method::GET)).await;
    assert_eq!((status.as_u16(), &body[..]), (200, &b"ok"[..]));
    // Blocking on purpose: the runtime must not see the close first.
    close_tx.send(()).unwrap();
    closed_rx.recv().unwrap();
    pool.send(request(&url, method)).await.map(|r| r.status())
}

#[tokio::test]
async fn idempotent_request_lost_to_an_idle_close_is_sent_again() {
    for method in [http::Method::GET, http::Method::DELETE] {
        let status = second_request_after_idle_close(method.clone()).await;
        assert_eq!(status.unwrap().as_u16(), 200, "{method}");
    }
}

/// A POST may have had its effect: it is never sent twice.
#[tokio::test]
async fn post_lost_to_an_idle_close_is_not_sent_again() {
    let result = second_request_after_idle_close(http::Method::POST).await;
    assert!(matches!(result, Err(PoolError::Request)));
}

/// Attack ("query of death"): a GET that makes the upstream drop its
/// connection without answering, with many idle connections in the pool.
/// It is sent again once, not once per idle connection (up to 257 sends of
/// one client request before).
#[tokio::test]
async fn a_get_whose_connection_closes_unanswered_is_sent_twice_at_most() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = url::Url::parse(&format!("http://{}", listener.local_addr().unwrap())).unwrap();
    let received = Arc::new(AtomicUsize::new(0));
    let seen = received.clone();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                if !read_head(&mut conn).await {
                    return;
                }
                // Every request kills its connection, unanswered.
                seen.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    let mut pool = Pool::new(&url, Duration::from_secs(5), 1).unwrap();
    // Any idle time counts as long enough here.
    pool.racy_idle = Duration::ZERO;
    for _ in 0..20 {
        let conn = pool.connect().await.unwrap();
        pool.slots[0].checkin(conn);
    }
    let result = pool.send(request(&url, http::Method::GET)).await;
    assert!(matches!(result, Err(PoolError::Request)));
    assert_eq!(
        received.load(Ordering::SeqCst),
        2,
        "sent once, replayed once"
    );
}

/// Reads until the end of a request head; false when the peer closed first.
async fn read_head(conn: &mut tokio::net::TcpStream) -> bool {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match conn.read(&mut chunk).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    true
}

/// Connections from this process to `port` on 127.0.0.1 that are still
/// established (`/proc/net/tcp`: remote address, state 01).
fn established_to(port: u16) -> usize {
    let remote = format!("0100007F:{port:04X}");
    std::fs::read_to_string("/proc/net/tcp")
        .unwrap()
        .lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f[2] == remote && f[3] == "01"
        })
        .count()
}

/// Attack: the upstream answers a streaming POST before reading its body,
/// then neither reads nor closes. No route timer runs after the answer, so
/// the connection, its task and its buffers were held until the upstream
/// chose to let go; repeated, that uses up the gateway's sockets. Now the
/// connection gets `GIVE_BACK_WAIT` to become reusable, then is closed.
#[tokio::test]
async fn an_upstream_that_answers_early_and_stops_reading_does_not_hold_its_connection() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let url = url::Url::parse(&format!("http://127.0.0.1:{port}")).unwrap();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                if !read_head(&mut conn).await {
                    return;
                }
                let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                let _ = conn.write_all(answer).await;
                // Holds the socket open and reads nothing more.
                std::future::pending::<()>().await;
            });
        }
    });
    let pool = Pool::new(&url, Duration::from_secs(5), 1).unwrap();
    // A browser that keeps sending until the gateway stops taking its body.
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(1);
    tokio::spawn(
        async move { while tx.send(Ok(Bytes::from(vec![b'y'; 64 << 10]))).await.is_ok() {} },
    );
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let req = http::Request::builder()
        .method(http::Method::POST)
        .uri("/upload")
        .header(http::header::HOST, url.authority())
        .body(Body::from_stream(stream))
        .unwrap();
    let (status, body) = send(&pool, req).await;
    assert_eq!((status.as_u16(), &body[..]), (200, &b"ok"[..]));
    assert_eq!(
        established_to(port),
        1,
        "the connection, still writing the body"
    );
    // Closed after GIVE_BACK_WAIT; before the fix, never.
    let deadline = Instant::now() + GIVE_BACK_WAIT + Duration::from_secs(10);
    while established_to(port) > 0 {
        assert!(
            Instant::now() < deadline,
            "the upstream connection is still held"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(pool.slots[0].idle.lock().unwrap().is_empty());
}

/// A body dropped before its end leaves the connection unusable: it is
/// not pooled, and the next request gets a fresh one.
#[tokio::test]
async fn body_dropped_early_is_not_pooled() {
    let up = upstream(200, "hello", false).await;
    let pool = pool(&up);
    let resp = pool
        .send(request(&up.url, http::Method::GET))
        .await
        .unwrap();
    drop(resp);
    let (status, body) = send(&pool, request(&up.url, http::Method::GET)).await;
    assert_eq!((status.as_u16(), &body[..]), (200, &b"hello"[..]));
    assert_eq!(up.connections.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn nothing_listening_is_a_connect_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = url::Url::parse(&format!("http://{}", listener.local_addr().unwrap())).unwrap();
    drop(listener);
    let pool = Pool::new(&url, Duration::from_secs(5), 1).unwrap();
    let req = request(&url, http::Method::GET);
    assert!(matches!(pool.send(req).await, Err(PoolError::Connect)));
}

/// A body far larger than one read comes through whole, and read to
/// the end, its connection is reused.
#[tokio::test]
async fn a_long_body_is_read_through_its_connection_and_reused() {
    let big: &'static str = Box::leak("x".repeat(4 << 20).into_boxed_str());
    let up = upstream(200, big, false).await;
    let pool = pool(&up);
    for _ in 0..2 {
        let (status, body) = send(&pool, request(&up.url, http::Method::GET)).await;
        assert_eq!((status.as_u16(), body.len()), (200, big.len()));
    }
    assert_eq!(up.connections.load(Ordering::SeqCst), 1);
}

/// A request body far larger than the socket buffers is written while
/// the request waits for the head, and the answer comes back.
#[tokio::test]
async fn a_long_request_body_is_written_while_waiting_for_the_answer() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = url::Url::parse(&format!("http://{}", listener.local_addr().unwrap())).unwrap();
    let len = 4usize << 20;
    tokio::spawn(async move {
        let (mut conn, _) = listener.accept().await.unwrap();
        let mut buf = Vec::new();
        let mut chunk = vec![0u8; 64 << 10];
        let body_start = loop {
            let n = conn.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed before the head");
            buf.extend_from_slice(&chunk[..n]);
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
        };
        let mut got = buf.len() - body_start;
        while got < len {
            let n = conn.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed before the body's end");
            got += n;
        }
        let answer = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{got}",
            got.to_string().len()
        );
        conn.write_all(answer.as_bytes()).await.unwrap();
    });
    let pool = Pool::new(&url, Duration::from_secs(5), 1).unwrap();
    let req = http::Request::builder()
        .method(http::Method::POST)
        .uri("/x")
        .header(http::header::HOST, url.authority())
        .header(http::header::CONTENT_LENGTH, len)
        .body(Body::from(vec![b'y'; len]))
        .unwrap();
    let (status, body) = send(&pool, req).await;
    assert_eq!(
        (status.as_u16(), &body[..]),
        (200, len.to_string().as_bytes())
    );
}
