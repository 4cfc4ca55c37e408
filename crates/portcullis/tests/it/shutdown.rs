//! Graceful shutdown through [`portcullis::serve`]: once the shutdown future
//! resolves, new connections are refused while an open SSE stream (HTTP/1
//! or HTTP/2) finishes its events; a stream that outlives `server.drain_timeout` is cut. With
//! several serving workers (`server.workers`) every connection is answered
//! (and its peer address forwarded) and shutdown stops them all.

use std::{convert::Infallible, net::SocketAddr, time::Duration};

use axum::{
    Router,
    response::sse::{Event, Sse},
    routing::get,
};
use futures_util::{Stream, StreamExt};
use portcullis::{Gateway, config::Config};
use tokio::{net::TcpListener, sync::oneshot};

/// `/sse/five`: five events 100 ms apart, then the end. `/sse/forever`: never
/// ends. `/peer`: the `X-Forwarded-For` it got. Any other path: `upstream <path>`.
async fn start_upstream() -> SocketAddr {
    fn ticks(n: Option<usize>) -> impl Stream<Item = Result<Event, Infallible>> {
        let stream = futures_util::stream::unfold(0usize, |i| async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            Some((Ok(Event::default().data(format!("tick {i}"))), i + 1))
        });
        stream.take(n.unwrap_or(usize::MAX))
    }
    let app = Router::new()
        .route("/sse/five", get(|| async { Sse::new(ticks(Some(5))) }))
        .route("/sse/forever", get(|| async { Sse::new(ticks(None)) }))
        .route(
            "/peer",
            get(|headers: axum::http::HeaderMap| async move {
                headers
                    .get("x-forwarded-for")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("none")
                    .to_string()
            }),
        )
        .fallback(
            |req: axum::extract::Request| async move { format!("upstream {}", req.uri().path()) },
        );
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

struct Running {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    served: tokio::task::JoinHandle<Result<(), portcullis::GatewayError>>,
}

/// A gateway proxying `/sse/` (or, with `catch_all`, every path) to the
/// upstream, with `workers` serving workers.
async fn start_gateway(drain_timeout: &str, workers: usize, catch_all: bool) -> Running {
    let prefix = if catch_all { "/" } else { "/sse/" };
    let upstream = start_upstream().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    // The IdP is not needed for a public route; nothing listens on port 9.
    let toml = format!(
        r#"
[server]
public_url = "http://{addr}"
profile = "dev"
drain_timeout = "{drain_timeout}"
workers = {workers}
[admin]
listen = ""
[oidc]
issuer = "http://127.0.0.1:9"
client_id = "portal"
client_secret = "secret"
http_timeout = "1s"
[session]
store = "memory"
[[routes]]
prefix = "{prefix}"
upstream = "http://{upstream}"
token = "none"
"#
    );
    let config = Config::from_toml_str(&toml, Vec::new()).expect("config");
    let gateway = Gateway::new(config).await.expect("gateway");
    let (stop, stopped) = oneshot::channel::<()>();
    let served = tokio::spawn(portcullis::serve(gateway, listener, None, async move {
        let _ = stopped.await;
    }));
    Running { addr, stop, served }
}

async fn refused(addr: SocketAddr) -> bool {
    tokio::net::TcpStream::connect(addr).await.is_err()
}

#[tokio::test]
async fn open_stream_finishes_during_drain_and_new_connections_are_refused() {
    open_stream_finishes_during_drain(reqwest::Client::new(), reqwest::Version::HTTP_11).await;
}

/// The same over HTTP/2 (cleartext, prior knowledge): the connection's
/// drain is hyper's graceful shutdown (GOAWAY), which must let the open
/// stream finish, and the upstream connection the stream's body drives.
#[tokio::test]
async fn open_http2_stream_finishes_during_drain_and_new_connections_are_refused() {
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .expect("client");
    open_stream_finishes_during_drain(client, reqwest::Version::HTTP_2).await;
}

async fn open_stream_finishes_during_drain(client: reqwest::Client, version: reqwest::Version) {
    let g = start_gateway("10s", 2, false).await;
    let resp = client
        .get(format!("http://{}/sse/five", g.addr))
        .send()
        .await
        .expect("stream opens");
    assert_eq!((resp.status().as_u16(), resp.version()), (200, version));
    let mut body = resp;
    let first = body.chunk().await.expect("bytes").expect("first event");
    assert!(String::from_utf8_lossy(&first).contains("tick 0"));

    g.stop.send(()).expect("serve is running");
    // The listener closes as soon as shutdown begins.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !refused(g.addr).await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "new connections still accepted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The open stream still delivers every remaining event and ends cleanly.
    let mut rest = String::from_utf8_lossy(&first).into_owned();
    while let Some(chunk) = body.chunk().await.expect("stream not cut") {
        rest.push_str(&String::from_utf8_lossy(&chunk));
    }
    for i in 0..5 {
        assert!(
            rest.contains(&format!("tick {i}")),
            "missing tick {i}: {rest}"
        );
    }
    let result = tokio::time::timeout(Duration::from_secs(5), g.served)
        .await
        .expect("serve returns after the drain");
    assert!(result.expect("task").is_ok());
}

#[tokio::test]
async fn drain_timeout_bounds_the_wait_for_endless_streams() {
    let g = start_gateway("300ms", 2, false).await;
    let resp = reqwest::Client::new()
        .get(format!("http://{}/sse/forever", g.addr))
        .send()
        .await
        .expect("stream opens");
    let mut body = resp;
    body.chunk().await.expect("bytes").expect("first event");
    let started = tokio::time::Instant::now();
    g.stop.send(()).expect("serve is running");
    let result = tokio::time::timeout(Duration::from_secs(5), g.served)
        .await
        .expect("serve returns once the drain timeout passes");
    assert!(result.expect("task").is_ok());
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_answer_every_connection_and_stop_on_shutdown() {
    let g = start_gateway("5s", 3, true).await;
    let addr = g.addr;
    // 30 clients, each on its own connection, several requests each.
    let tasks: Vec<_> = (0..30)
        .map(|i| {
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                for j in 0..5 {
                    let resp = client
                        .get(format!("http://{addr}/items/{i}/{j}"))
                        .send()
                        .await
                        .expect("answered");
                    assert_eq!(resp.status(), 200);
                    assert_eq!(
                        resp.text().await.unwrap(),
                        format!("upstream /items/{i}/{j}")
                    );
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("client task");
    }

    // The workers pass each connection's peer on to the proxy.
    let peer = reqwest::get(format!("http://{addr}/peer"))
        .await
        .expect("answered");
    assert_eq!(peer.text().await.expect("body"), "127.0.0.1");

    // `/` matches every path, but the auth endpoints stay the gateway's.
    let me = reqwest::get(format!("http://{addr}/auth/me"))
        .await
        .expect("answered");
    assert_eq!(me.status(), 401);
    let body: serde_json::Value = me.json().await.expect("json");
    assert_eq!(body, serde_json::json!({"authenticated": false}));

    g.stop.send(()).expect("serve is running");
    let result = tokio::time::timeout(Duration::from_secs(10), g.served)
        .await
        .expect("serve returns after the drain");
    assert!(result.expect("task").is_ok());
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no worker accepts after shutdown"
    );
}
