//! Raw HTTP at the real serving path ([`portcullis::serve`]): generated
//! malformed and adversarial requests over plain TCP, and the classic
//! request-smuggling shapes one by one. The gateway must never panic,
//! never answer a 5xx of its own (the upstream is healthy and marks its
//! answers), never let the upstream see a request hidden in a body, and
//! still serve a normal request afterwards.
//!
//! Reproduce a run with `FUZZ_SEED=<n>` (printed at the start); each case's
//! bytes depend only on the seed and its index. `FUZZ_CASES` changes the
//! count (default 3000; the run also stops after 20 s). A second share
//! sends generated cases on keep-alive connections that were parked
//! (`FUZZ_PARKED_CASES`, default 480; stops after 8 s).

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use crate::common::serving::{Served, UPSTREAM_MARK, find};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// xorshift64*: tiny, seeded, reproducible.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
}

const PATHS: &[&str] = &[
    "/api/x",
    "/api/a/b?c=d",
    "/api/%2e%2e/secret",
    "/api/..%2f..%2fetc",
    "/user/profile",
    "/",
    "/index.html",
    "/auth/login",
    "/auth/userinfo",
    "/auth/session",
    "/auth/logout",
    "/nope/../api/x",
    "//api//x",
    "/api/%00",
    "/api/x#frag",
];
const ODD_HEADERS: &[&str] = &[
    "No-Colon\r\n",
    ": empty-name\r\n",
    "Sp ace: v\r\n",
    "X-A : v\r\n",
    "Host: second\r\n",
    "Cookie: \r\n",
    "Content-Length: \r\n",
];
const METHODS: &[&str] = &[
    "GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "TRACE", "CONNECT", "get", "G ET",
    "BREW", "",
];
const TE_VALUES: &[&str] = &[
    "chunked",
    " chunked",
    "Chunked",
    "chunked, identity",
    "identity, chunked",
    "xchunked",
    "chunked\t",
    "gzip",
    "",
];
const CL_VALUES: &[&str] = &[
    "0",
    "5",
    "+5",
    "-1",
    "0x5",
    "5, 5",
    "5, 6",
    " 5",
    "99999999999999999999",
    "",
    "5 5",
];

fn valid(rng: &mut Rng) -> Vec<u8> {
    let path = rng.pick(PATHS);
    if rng.chance(50) {
        format!("GET {path} HTTP/1.1\r\nHost: gw\r\n\r\n").into_bytes()
    } else {
        let body = "x".repeat(rng.below(64));
        format!(
            "POST {path} HTTP/1.1\r\nHost: gw\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }
}

/// One generated case: its kind (for the report) and bytes.
fn generate(rng: &mut Rng) -> (&'static str, Vec<u8>) {
    let path = *rng.pick(PATHS);
    match rng.below(16) {
        0 => ("valid", valid(rng)),
        1 => {
            let (te, cl) = (rng.pick(TE_VALUES), rng.pick(CL_VALUES));
            let (first, second) = if rng.chance(50) {
                (
                    format!("Transfer-Encoding: {te}"),
                    format!("Content-Length: {cl}"),
                )
            } else {
                (
                    format!("Content-Length: {cl}"),
                    format!("Transfer-Encoding: {te}"),
                )
            };
            let req = format!(
                "POST {path} HTTP/1.1\r\nHost: gw\r\n{first}\r\n{second}\r\n\r\n0\r\n\r\nGET /api/SMUGGLED HTTP/1.1\r\nHost: gw\r\n\r\n"
            );
            ("cl+te", req.into_bytes())
        }
        2 => {
            let (a, b) = (rng.pick(CL_VALUES), rng.pick(CL_VALUES));
            let req = format!(
                "POST {path} HTTP/1.1\r\nHost: gw\r\nContent-Length: {a}\r\nContent-Length: {b}\r\n\r\nhelloGET /api/SMUGGLED HTTP/1.1\r\nHost: gw\r\n\r\n"
            );
            ("duplicate-cl", req.into_bytes())
        }
        3 => {
            let size = rng.pick(&[
                "zz",
                "ffffffffffffffffffff",
                "-1",
                "5;ext=1",
                "5 ",
                "0x5",
                "",
                "5\n",
            ]);
            let req = format!(
                "POST {path} HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n{size}\r\nhello\r\n0\r\n\r\n"
            );
            ("bad-chunk", req.into_bytes())
        }
        4 => {
            let fold = rng.pick(&[" ", "\t", "  \t "]);
            let header = rng.pick(&[
                "X-A: b",
                "Transfer-Encoding:",
                "Content-Length:",
                "Host: gw",
            ]);
            let req = format!(
                "POST {path} HTTP/1.1\r\nHost: gw\r\n{header}\r\n{fold}chunked\r\nContent-Length: 3\r\n\r\nabc"
            );
            ("obs-fold", req.into_bytes())
        }
        5 => {
            let eol = rng.pick(&["\n", "\r", "\r\r\n", "\n\r"]);
            let req = format!("GET {path} HTTP/1.1{eol}Host: gw{eol}X-A: b{eol}{eol}");
            ("bare-lf-cr", req.into_bytes())
        }
        6 => {
            let mut req = format!("GET {path} HTTP/1.1\r\nHost: gw\r\n");
            match rng.below(4) {
                0 => req.push_str(&format!("X-Big: {}\r\n", "a".repeat(rng.below(40_000)))),
                1 => {
                    for i in 0..rng.below(300) {
                        req.push_str(&format!("X-{i}: v\r\n"));
                    }
                }
                2 => {
                    let line: &&str = rng.pick(ODD_HEADERS);
                    req.push_str(line);
                }
                _ => req.push_str(&format!(
                    "X-Cookie-Like: {}\r\n",
                    ";".repeat(rng.below(9000))
                )),
            }
            req.push_str("\r\n");
            ("odd-headers", req.into_bytes())
        }
        7 => {
            let mut req =
                format!("GET {path} HTTP/1.1\r\nHost: gw\r\nX-A: value\r\n\r\n").into_bytes();
            for _ in 0..1 + rng.below(3) {
                let at = rng.below(req.len());
                req[at] = *rng.pick(&[0u8, 0x80, 0xff, 0x7f, 0xc3, b'\t']);
            }
            ("nul-high", req)
        }
        8 => {
            let target = rng.pick(&[
                "http://evil.example/api/x",
                "http://gw/api/x",
                "https://gw:443/api/x",
                "*",
                "gw:443",
                "evil.example:80",
                "api/x",
                "?x=1",
            ]);
            let method = rng.pick(&["GET", "OPTIONS", "CONNECT"]);
            let req = format!("{method} {target} HTTP/1.1\r\nHost: gw\r\n\r\n");
            ("target-forms", req.into_bytes())
        }
        9 => {
            let req = rng.pick(&[
                "GET /\r\n",
                "GET /api/x\r\n\r\n",
                "GET /api/x HTTP/1.0\r\n\r\n",
                "GET /api/x HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                "GET /api/x HTTP/2.0\r\nHost: gw\r\n\r\n",
                "GET /api/x HTTP/3.0\r\nHost: gw\r\n\r\n",
                "GET /api/x HTTP/1.1 extra\r\nHost: gw\r\n\r\n",
                "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
                "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\x12\x04\0\0\0\0\0garbage-garbage-garbage",
                "PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n",
                "TLS",
            ]);
            if *req == "TLS" {
                // A TLS ClientHello's first bytes on the plain-text port.
                return (
                    "versions",
                    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03".to_vec(),
                );
            }
            ("versions", req.as_bytes().to_vec())
        }
        10 => {
            let mut req = Vec::new();
            for _ in 0..2 + rng.below(3) {
                if rng.chance(20) {
                    req.extend_from_slice(b"GARBAGE\r\n\r\n");
                } else {
                    req.extend_from_slice(&valid(rng));
                }
            }
            ("pipelined", req)
        }
        11 => {
            let mut req = valid(rng);
            let cut = rng.below(req.len());
            req.truncate(cut);
            ("truncated", req)
        }
        12 => {
            let mut req = vec![0u8; rng.below(2048)];
            for b in &mut req {
                *b = rng.next() as u8;
            }
            ("random", req)
        }
        13 => {
            let mut req = valid(rng);
            for _ in 0..1 + rng.below(8) {
                let at = rng.below(req.len());
                match rng.below(3) {
                    0 => req[at] = rng.next() as u8,
                    1 => {
                        req.remove(at);
                    }
                    _ => req.insert(at, *rng.pick(b"\r\n :\0/%")),
                }
                if req.is_empty() {
                    break;
                }
            }
            ("mutated", req)
        }
        14 => {
            let req = format!(
                "GET {path} HTTP/1.1\r\nHost: gw\r\nConnection: {}\r\nUpgrade: {}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {}\r\n\r\n",
                rng.pick(&["Upgrade", "upgrade, keep-alive", "close", ""]),
                rng.pick(&["websocket", "h2c", "WebSocket", ""]),
                rng.pick(&["dGhlIHNhbXBsZSBub25jZQ==", "short", ""]),
            );
            ("upgrade", req.into_bytes())
        }
        _ => {
            let method = rng.pick(METHODS);
            let long = "a".repeat(rng.below(70_000));
            let targets = [
                path,
                "/api/%zz",
                "/api/\u{00e9}",
                "/api/%00%ff",
                long.as_str(),
            ];
            let target = *rng.pick(&targets);
            let req = format!("{method} {target} HTTP/1.1\r\nHost: gw\r\n\r\n");
            ("methods-targets", req.into_bytes())
        }
    }
}

/// A response as read off the wire.
#[derive(Debug)]
struct Answer {
    status: u16,
    from_upstream: Option<String>,
}

/// Parse the HTTP/1.1 responses in `bytes` (Content-Length or chunked
/// bodies); stops at the first thing that does not parse.
fn responses(mut bytes: &[u8]) -> Vec<Answer> {
    let mut out = Vec::new();
    while let Some(end) = find(bytes, b"\r\n\r\n") {
        let head = String::from_utf8_lossy(&bytes[..end]).into_owned();
        let mut lines = head.split("\r\n");
        let Some(status) = lines
            .next()
            .and_then(|l| {
                l.strip_prefix("HTTP/1.1 ")
                    .or_else(|| l.strip_prefix("HTTP/1.0 "))
            })
            .and_then(|l| l.get(..3))
            .and_then(|s| s.parse().ok())
        else {
            break;
        };
        let (mut length, mut chunked, mut from_upstream) = (0usize, false, None);
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = value.parse().unwrap_or(0);
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value.eq_ignore_ascii_case("chunked");
            } else if name.eq_ignore_ascii_case(UPSTREAM_MARK) {
                from_upstream = Some(value.to_string());
            }
        }
        out.push(Answer {
            status,
            from_upstream,
        });
        bytes = &bytes[end + 4..];
        if chunked {
            loop {
                let Some(line_end) = find(bytes, b"\r\n") else {
                    return out;
                };
                let size = String::from_utf8_lossy(&bytes[..line_end]);
                let Ok(size) =
                    usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
                else {
                    return out;
                };
                let skip = line_end + 2 + size + 2;
                if bytes.len() < skip {
                    return out;
                }
                bytes = &bytes[skip..];
                if size == 0 {
                    break;
                }
            }
        } else if status != 101 && status != 304 && status >= 200 {
            bytes = bytes.get(length..).unwrap_or_default();
        }
        if status == 101 {
            break;
        }
    }
    out
}

/// Send `request` on a new connection and read until the gateway closes it
/// (its head timeout closes every connection soon after the last answer).
/// A client holding a half-sent body is then cut by closing our side.
async fn exchange(addr: std::net::SocketAddr, request: &[u8], close_after: bool) -> Vec<u8> {
    let Ok(mut tcp) = TcpStream::connect(addr).await else {
        return Vec::new();
    };
    let _ = tcp.write_all(request).await;
    if close_after {
        let _ = tcp.shutdown().await;
    }
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(8);
    loop {
        match tokio::time::timeout_at(deadline, tcp.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => out.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    out
}

fn printable(bytes: &[u8]) -> String {
    let text: String = bytes
        .iter()
        .take(300)
        .flat_map(|b| std::ascii::escape_default(*b))
        .map(char::from)
        .collect();
    if bytes.len() > 300 {
        format!("{text}... ({} bytes)", bytes.len())
    } else {
        text
    }
}

const CONFIG: &str = "header_read_timeout = \"300ms\"\nidle_timeout = \"300ms\"\nworkers = 2";

/// The two fuzz shares run one after the other: the parked share waits for
/// `portcullis_connections_parked`, which the other share's connections
/// would move too (the metrics are the process's).
static FUZZ_SHARE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_malformed_requests_never_break_the_gateway() {
    let _share = FUZZ_SHARE.lock().await;
    let seed: u64 = std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_2026);
    let cases: usize = std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3000);
    println!("raw HTTP fuzz: FUZZ_SEED={seed}, up to {cases} cases or 20 s");
    let g = Served::start(CONFIG).await;
    let next = Arc::new(AtomicUsize::new(0));
    let findings = Arc::new(Mutex::new(Vec::<String>::new()));
    let statuses = Arc::new(Mutex::new(BTreeMap::<(&'static str, u16), usize>::new()));
    let answered_by_upstream = Arc::new(AtomicUsize::new(0));
    // Answers to `/api/SMUGGLED` the client got as a request of its own
    // (valid pipelining, e.g. after two equal Content-Lengths).
    let pipelined_answers = Arc::new(AtomicUsize::new(0));
    let stop_at = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut tasks = Vec::new();
    for _ in 0..48 {
        let (next, findings, statuses, answered, pipelined) = (
            next.clone(),
            findings.clone(),
            statuses.clone(),
            answered_by_upstream.clone(),
            pipelined_answers.clone(),
        );
        let addr = g.addr;
        tasks.push(tokio::spawn(async move {
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= cases || tokio::time::Instant::now() > stop_at {
                    return;
                }
                let mut rng = Rng::new(seed ^ (index as u64).wrapping_mul(0x1000_0000_01b3));
                let (kind, request) = generate(&mut rng);
                let close_after = kind == "truncated";
                let reply = exchange(addr, &request, close_after).await;
                for answer in responses(&reply) {
                    *statuses
                        .lock()
                        .unwrap()
                        .entry((kind, answer.status))
                        .or_default() += 1;
                    if let Some(path) = &answer.from_upstream {
                        answered.fetch_add(1, Ordering::Relaxed);
                        if path.contains("SMUGGLED") {
                            pipelined.fetch_add(1, Ordering::Relaxed);
                        }
                    } else if answer.status >= 500 {
                        findings.lock().unwrap().push(format!(
                            "case {index} ({kind}): own {} for {}",
                            answer.status,
                            printable(&request)
                        ));
                    }
                }
            }
        }));
    }
    for task in tasks {
        task.await.expect("a fuzz task panicked");
    }
    let done = next.load(Ordering::Relaxed).min(cases);
    println!("raw HTTP fuzz: {done} cases sent");
    for ((kind, status), count) in statuses.lock().unwrap().iter() {
        println!("  {kind:>16} -> {status}: {count}");
    }
    let seen = g.upstream.seen();
    let smuggled = seen.iter().filter(|s| s.path.contains("SMUGGLED")).count();
    let pipelined = pipelined_answers.load(Ordering::Relaxed);
    println!(
        "raw HTTP fuzz: upstream saw {} requests ({smuggled} to /api/SMUGGLED, {pipelined} of them answered to the client as its own request); clients got {} upstream answers",
        seen.len(),
        answered_by_upstream.load(Ordering::Relaxed)
    );
    let findings = findings.lock().unwrap().clone();
    for f in &findings {
        println!("FINDING: {f}");
    }
    assert!(!g.task.is_finished(), "serve stopped during the fuzz run");
    g.still_serves().await;
    assert!(done >= 500, "only {done} cases ran in 20 s");
    assert_eq!(
        smuggled, pipelined,
        "the upstream saw /api/SMUGGLED requests the client never sent as requests of their own"
    );
    assert!(findings.is_empty(), "{} own 5xx answers", findings.len());
}

/// Parked after 100 ms of quiet (a quarter of the keep-alive limit), closed
/// at 400 ms.
const PARK_CONFIG: &str = "header_read_timeout = \"400ms\"\nidle_timeout = \"400ms\"\nworkers = 2";
/// Connections prepared, parked and fuzzed together.
const PARK_BATCH: usize = 48;

/// `portcullis_connections_parked` of the public listener, from `/metrics`.
async fn parked_connections(g: &Served) -> usize {
    let text = crate::common::serving::one_request(g.admin, "/metrics")
        .await
        .unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with(r#"portcullis_connections_parked{listener="public"}"#))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as usize)
        .sum()
}

/// The generated cases again, each on a keep-alive connection that has
/// served one request and been parked (no hyper state), sometimes split
/// over two writes: the fresh hyper connection must answer exactly as a
/// first one would, with the same rules (no own 5xx, nothing hidden
/// reaching the upstream), and close every connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_requests_on_parked_connections_never_break_the_gateway() {
    let _share = FUZZ_SHARE.lock().await;
    let seed: u64 = std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_2026)
        ^ 0xa5a5;
    let cases: usize = std::env::var("FUZZ_PARKED_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(480);
    println!("raw HTTP fuzz, parked: FUZZ_SEED^0xa5a5={seed}, up to {cases} cases or 8 s");
    let g = Served::start(PARK_CONFIG).await;
    let started = tokio::time::Instant::now();
    let stop_at = started + Duration::from_secs(8);
    let (mut done, mut parked_batches, mut batches) = (0, 0, 0);
    let findings = Arc::new(Mutex::new(Vec::<String>::new()));
    let pipelined = Arc::new(AtomicUsize::new(0));
    let statuses = Arc::new(Mutex::new(BTreeMap::<(&'static str, u16), usize>::new()));
    while done < cases && tokio::time::Instant::now() < stop_at {
        let batch = done..(done + PARK_BATCH).min(cases);
        done = batch.end;
        batches += 1;
        // One answered keep-alive request each, then quiet.
        let mut conns = Vec::new();
        for index in batch {
            let mut tcp = g.connect().await;
            tcp.write_all(b"GET /api/before-park HTTP/1.1\r\nHost: gw\r\n\r\n")
                .await
                .expect("write");
            let (head, _) = crate::common::serving::read_response(&mut tcp, Duration::from_secs(5))
                .await
                .expect("the first request is answered");
            assert!(head.starts_with("HTTP/1.1 200"), "{head}");
            conns.push((index, tcp));
        }
        // Every one of them parked (bounded: they close at the limit). The
        // gauge is the process's: another test's parked connection may end
        // the wait early, never make it fail.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while tokio::time::Instant::now() < deadline {
            if parked_connections(&g).await >= conns.len() {
                parked_batches += 1;
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let mut tasks = Vec::new();
        for (index, mut tcp) in conns {
            let (findings, pipelined, statuses) =
                (findings.clone(), pipelined.clone(), statuses.clone());
            tasks.push(tokio::spawn(async move {
                let mut rng = Rng::new(seed ^ (index as u64).wrapping_mul(0x1000_0000_01b3));
                let (kind, request) = generate(&mut rng);
                let split = if rng.chance(50) {
                    rng.below(request.len())
                } else {
                    0
                };
                let _ = tcp.write_all(&request[..split]).await;
                let _ = tcp.write_all(&request[split..]).await;
                if kind == "truncated" {
                    let _ = tcp.shutdown().await;
                }
                let reply =
                    crate::common::serving::read_until_closed(&mut tcp, Duration::from_secs(8))
                        .await
                        .unwrap_or_else(|| panic!("case {index} ({kind}): never closed"));
                for answer in responses(&reply) {
                    *statuses
                        .lock()
                        .unwrap()
                        .entry((kind, answer.status))
                        .or_default() += 1;
                    match &answer.from_upstream {
                        Some(path) if path.contains("SMUGGLED") => {
                            pipelined.fetch_add(1, Ordering::Relaxed);
                        }
                        Some(_) => {}
                        None if answer.status >= 500 => findings.lock().unwrap().push(format!(
                            "case {index} ({kind}): own {} for {}",
                            answer.status,
                            printable(&request)
                        )),
                        None => {}
                    }
                }
            }));
        }
        for task in tasks {
            task.await.expect("a fuzz task panicked");
        }
    }
    println!(
        "raw HTTP fuzz, parked: {done} cases in {batches} batches ({parked_batches} seen all parked) in {:?}",
        started.elapsed()
    );
    for ((kind, status), count) in statuses.lock().unwrap().iter() {
        println!("  {kind:>16} -> {status}: {count}");
    }
    let findings = findings.lock().unwrap().clone();
    for f in &findings {
        println!("FINDING: {f}");
    }
    let smuggled = g
        .upstream
        .seen()
        .iter()
        .filter(|s| s.path.contains("SMUGGLED"))
        .count();
    assert!(!g.task.is_finished(), "serve stopped during the fuzz run");
    g.still_serves().await;
    assert!(done >= 96, "only {done} cases ran in 8 s");
    assert_eq!(
        parked_batches, batches,
        "a batch's connections were never all parked"
    );
    assert_eq!(
        smuggled,
        pipelined.load(Ordering::Relaxed),
        "the upstream saw /api/SMUGGLED requests the client never sent as requests of their own"
    );
    assert!(findings.is_empty(), "{} own 5xx answers", findings.len());
}

/// Every classic smuggling shape on its own connection: the upstream must
/// never see the request hidden after or inside the body.
#[tokio::test]
async fn request_smuggling_never_reaches_the_upstream() {
    let g = Served::start(CONFIG).await;
    let hidden = "GET /api/SMUGGLED HTTP/1.1\r\nHost: gw\r\n\r\n";
    let cases = [
        // CL.TE and TE.CL: the gateway must not use the length while the
        // upstream uses chunks, or the reverse.
        format!(
            "POST /api/a HTTP/1.1\r\nHost: gw\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{hidden}"
        ),
        format!(
            "POST /api/a HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\nContent-Length: 60\r\n\r\n0\r\n\r\n{hidden}"
        ),
        format!(
            "POST /api/a HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n{:x}\r\n{hidden}\r\n0\r\n\r\n",
            hidden.len()
        ),
        // Two lengths.
        format!(
            "POST /api/a HTTP/1.1\r\nHost: gw\r\nContent-Length: 0\r\nContent-Length: {}\r\n\r\n{hidden}",
            hidden.len()
        ),
        format!(
            "POST /api/a HTTP/1.1\r\nHost: gw\r\nContent-Length: 0, {}\r\n\r\n{hidden}",
            hidden.len()
        ),
        // Disguised Transfer-Encoding.
        format!(
            "POST /api/a HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: xchunked\r\nContent-Length: {}\r\n\r\n{hidden}",
            hidden.len()
        ),
        format!(
            "POST /api/a HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding : chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n{hidden}"
        ),
        format!(
            "POST /api/a HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding:\r\n chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n{hidden}"
        ),
        format!(
            "POST /api/a HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n{hidden}"
        ),
        format!(
            "POST /api/a HTTP/1.1\r\nHost: gw\r\nX-A: b\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n{hidden}"
        ),
        // HTTP/1.0 with chunks; bad chunk sizes; a chunk extension.
        format!(
            "POST /api/a HTTP/1.0\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{hidden}"
        ),
        format!(
            "POST /api/a HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n-0\r\n\r\n{hidden}"
        ),
        format!(
            "POST /api/a HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n1ffffffffffffffff\r\n{hidden}\r\n0\r\n\r\n"
        ),
        format!(
            "POST /api/a HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n0;x=\"\r\n\"\r\n\r\n{hidden}"
        ),
        format!(
            "POST /api/a HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n0\n\n{hidden}"
        ),
        // A body that merely contains a request: forwarded as bytes, never parsed.
        format!(
            "POST /api/a HTTP/1.1\r\nHost: gw\r\nContent-Length: {}\r\n\r\n{hidden}",
            hidden.len()
        ),
    ];
    for (i, case) in cases.iter().enumerate() {
        let reply = exchange(g.addr, case.as_bytes(), false).await;
        let answers = responses(&reply);
        let seen = g.upstream.seen();
        let smuggled: Vec<_> = seen
            .iter()
            .filter(|s| s.path.contains("SMUGGLED"))
            .collect();
        assert!(
            smuggled.is_empty(),
            "case {i}: the upstream saw a hidden request: {}\nanswers: {answers:?}",
            printable(case.as_bytes())
        );
        // Cases 11 to 14 carry a broken chunked body: the client's error
        // (400), never a 5xx of the gateway's.
        for answer in &answers {
            assert!(
                answer.from_upstream.is_some() || answer.status < 500,
                "case {i}: own {} for {}",
                answer.status,
                printable(case.as_bytes())
            );
        }
        println!(
            "smuggling case {i}: {:?}",
            answers.iter().map(|a| a.status).collect::<Vec<_>>()
        );
    }
    let posts = g
        .upstream
        .seen()
        .iter()
        .filter(|s| s.method == "POST")
        .count();
    println!("smuggling: {posts} POSTs forwarded, none hidden");
    g.still_serves().await;
}

/// `portcullis_upstream_errors_total` of the `/api/` route (all kinds), from
/// the admin listener's `/metrics`.
async fn api_upstream_errors(g: &Served) -> u64 {
    let text = crate::common::serving::one_request(g.admin, "/metrics")
        .await
        .expect("metrics answered");
    text.lines()
        .filter(|l| {
            l.starts_with("portcullis_upstream_errors_total") && l.contains(r#"route="/api/""#)
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// A POST whose body framing is broken (bad chunk size, shorter than its
/// `Content-Length` as the client hangs up its sending side) fails the
/// upstream send, but the fault is the client's: 400 `bad_request`, never
/// the gateway's 502, and no upstream error counted (a client must not be
/// able to page the upstream's on-call with it).
#[tokio::test]
async fn broken_request_body_framing_is_a_client_error_not_502() {
    let g = Served::start(CONFIG).await;
    let errors_before = api_upstream_errors(&g).await;
    let cases: [(&str, &[u8], bool); 4] = [
        (
            "bad chunk size",
            b"POST /api/a HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
            false,
        ),
        (
            "chunk size beyond 64 bits",
            b"POST /api/a HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nffffffffffffffffffff\r\nx\r\n0\r\n\r\n",
            false,
        ),
        (
            "body shorter than Content-Length",
            b"POST /api/a HTTP/1.1\r\nHost: gw\r\nContent-Length: 100\r\n\r\nshort",
            true,
        ),
        (
            "chunked body cut short",
            b"POST /api/a HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
            true,
        ),
    ];
    for (what, request, close_after) in cases {
        let reply = exchange(g.addr, request, close_after).await;
        let answers = responses(&reply);
        assert_eq!(answers.len(), 1, "{what}: {}", printable(&reply));
        assert_eq!(answers[0].status, 400, "{what}: {}", printable(&reply));
        assert!(
            find(&reply, br#""error":"bad_request""#).is_some(),
            "{what}: {}",
            printable(&reply)
        );
    }
    g.still_serves().await;
    assert_eq!(
        api_upstream_errors(&g).await,
        errors_before,
        "a client's broken body was counted as an upstream error"
    );
}
