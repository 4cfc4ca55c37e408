//! Canonical paths and method rules through the real gateway: spellings of a
//! role-protected prefix that upstream frameworks resolve to it (encoded
//! letters, `//`, `;params`, `..;/`, case, encoded `/`) are routed to it or
//! refused; TRACE never reaches an upstream; public routes check the origin
//! of unsafe methods; HTTP/1.1 without `Host` is refused. Requests are
//! written on raw TCP so no client library normalises the path first.

use std::sync::{Arc, Mutex};

use crate::common::crafted_idp::{CLIENT_ID, CLIENT_SECRET, CraftedIdp, now};
use axum::{Router, extract::Request};
use portcullis::session::{
    MemoryStore, SessionId, SessionRecord, SessionStore, TokenSet, random_token,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

/// Every request the upstream saw: method and URI as received.
type Seen = Arc<Mutex<Vec<String>>>;

struct Harness {
    _idp: CraftedIdp,
    addr: String,
    seen: Seen,
    /// Cookie header of a signed-in user without the `admin` role.
    user: String,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn start_upstream(seen: Seen) -> (String, tokio::task::JoinHandle<()>) {
    let app = Router::new().fallback(move |req: Request| {
        let seen = seen.clone();
        async move {
            let line = format!("{} {}", req.method(), req.uri());
            seen.lock().expect("seen").push(line.clone());
            line
        }
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, task)
}

impl Harness {
    async fn start() -> Self {
        let idp = CraftedIdp::start().await;
        let seen = Seen::default();
        let (up, up_task) = start_upstream(seen.clone()).await;
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let toml = format!(
            r#"
[server]
public_url = "http://{addr}"
profile = "dev"
[oidc]
issuer = "{issuer}"
client_id = "{CLIENT_ID}"
client_secret = "{CLIENT_SECRET}"
[session]
store = "memory"
[[routes]]
prefix = "/api/"
upstream = "http://{up}"
[[routes]]
prefix = "/api/admin/"
upstream = "http://{up}"
require_roles = ["admin"]
[[routes]]
prefix = "/api/reports/"
upstream = "http://{up}"
require_roles = ["admin"]
case_insensitive = true
[[routes]]
prefix = "/public/"
upstream = "http://{up}"
token = "none"
[[routes]]
prefix = "/public/open/"
upstream = "http://{up}"
token = "none"
check_origin = false
"#,
            issuer = idp.issuer,
        );
        let store = Arc::new(MemoryStore::new());
        let (_gateway, gw_task) =
            crate::common::gateway::serve(listener, &toml, store.clone()).await;
        let user = session(&*store, &[]).await;
        Self {
            _idp: idp,
            addr,
            seen,
            user,
            tasks: vec![up_task, gw_task],
        }
    }

    /// Send `head` (request line and headers, without the final blank line)
    /// on a fresh connection; the status code and the whole answer.
    async fn raw(&self, head: &str) -> (u16, String) {
        let mut stream = tokio::net::TcpStream::connect(&self.addr)
            .await
            .expect("connect");
        let req = format!("{head}\r\nConnection: close\r\n\r\n");
        stream.write_all(req.as_bytes()).await.expect("write");
        let mut buf = Vec::new();
        stream.read_to_end(&mut buf).await.expect("read");
        let text = String::from_utf8_lossy(&buf).into_owned();
        let status = text
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("no status line: {text:?}"));
        (status, text)
    }

    /// `method target` as the signed-in user without the `admin` role.
    async fn as_user(&self, method: &str, target: &str) -> (u16, String) {
        let head = format!(
            "{method} {target} HTTP/1.1\r\nHost: {}\r\nCookie: {}",
            self.addr, self.user
        );
        self.raw(&head).await
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().expect("seen").clone()
    }

    /// `target`, as the user, never reaches the admin route: refused with
    /// 400 `bad_request` (or 403 by the role rule) and the upstream never
    /// sees it.
    async fn assert_never_reaches_admin(&self, target: &str) {
        let before = self.seen().len();
        let (status, text) = self.as_user("GET", target).await;
        assert!(status == 400 || status == 403, "{target}: {status} {text}");
        if status == 400 {
            assert!(
                text.contains(r#""error":"bad_request""#),
                "{target}: {text}"
            );
        }
        assert_eq!(self.seen().len(), before, "{target} reached the upstream");
    }
}

/// A session in `store` with `roles`; its `Cookie` header.
async fn session(store: &dyn SessionStore, roles: &[&str]) -> String {
    let id = SessionId::generate();
    let now = now();
    let record = SessionRecord {
        id: id.hash(),
        sub: "user-1".into(),
        sid: None,
        claims: Default::default(),
        roles: roles.iter().map(|r| r.to_string()).collect(),
        tokens: TokenSet {
            access_token: format!("access-{}", random_token(8)).into(),
            refresh_token: None,
            id_token: None,
            access_expires_at: Some(now + 3600),
        },
        csrf_token: random_token(16),
        user_agent: None,
        created_at: now,
        last_seen_at: now,
        expires_at: now + 3600,
        idle_expires_at: now + 1800,
        version: 1,
    };
    store.save(&record).await.expect("save");
    format!("portcullis={}", id.as_cookie_value())
}

#[tokio::test]
async fn the_admin_prefix_is_guarded_and_other_api_paths_pass() {
    let h = Harness::start().await;
    let (status, _) = h.as_user("GET", "/api/admin/x").await;
    assert_eq!(status, 403);
    let (status, text) = h.as_user("GET", "/api/x").await;
    assert_eq!(status, 200, "{text}");
}

#[tokio::test]
async fn encoded_letter_cannot_reach_admin_prefix() {
    let h = Harness::start().await;
    for target in ["/api/%61dmin/x", "/api/%61%64%6D%69%6E/x", "/%61pi/admin/x"] {
        let (status, text) = h.as_user("GET", target).await;
        assert_eq!(status, 403, "{target}: {text}");
        assert!(text.contains(r#""error":"forbidden""#), "{text}");
    }
    assert!(h.seen().is_empty(), "{:?}", h.seen());
}

#[tokio::test]
async fn upstream_sees_the_canonical_path_and_the_query_as_sent() {
    let h = Harness::start().await;
    let (status, text) = h.as_user("GET", "/api/%61bc%7e%3f?q=%61&r=a%2Fb").await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(h.seen(), ["GET /api/abc~%3F?q=%61&r=a%2Fb"]);
}

#[tokio::test]
async fn double_slash_cannot_reach_admin_prefix() {
    let h = Harness::start().await;
    for target in ["/api//admin/x", "//api/admin/x", "/api/admin//x"] {
        h.assert_never_reaches_admin(target).await;
    }
}

#[tokio::test]
async fn semicolon_path_parameter_cannot_reach_admin_prefix() {
    let h = Harness::start().await;
    for target in [
        "/api/admin;x=y/x",
        "/api;/admin/x",
        "/api/x;jsessionid=1",
        "/api/x%3B/admin",
    ] {
        h.assert_never_reaches_admin(target).await;
    }
}

#[tokio::test]
async fn dot_semicolon_traversal_is_refused() {
    let h = Harness::start().await;
    for target in [
        "/api/x/..;/admin/x",
        "/api/x/../admin/x",
        "/api/x/%2e%2e/admin/x",
        "/api/x/%2e%2E;/admin/x",
        "/api/x/%252e%252e/admin/x",
        "/api/./admin/x",
    ] {
        h.assert_never_reaches_admin(target).await;
    }
}

#[tokio::test]
async fn encoded_slash_is_refused() {
    let h = Harness::start().await;
    for target in [
        "/api%2fadmin/x",
        "/api%2Fadmin/x",
        "/api%5cadmin/x",
        "/api\\admin/x",
        "/api%252fadmin/x",
    ] {
        h.assert_never_reaches_admin(target).await;
    }
}

#[tokio::test]
async fn uppercase_admin_prefix_is_refused_unless_route_is_case_insensitive() {
    let h = Harness::start().await;
    for target in [
        "/api/ADMIN/x",
        "/api/Admin",
        "/API/admin/x",
        "/api/adm%C4%B1n/x",
    ] {
        h.assert_never_reaches_admin(target).await;
        let (status, _) = h.as_user("GET", target).await;
        assert_eq!(status, 400, "{target}");
    }
    // `/api/reports/` is declared case-insensitive: any case is that route,
    // so its role rule applies.
    for target in ["/api/reports/x", "/api/REPORTS/x", "/api/Reports"] {
        let (status, text) = h.as_user("GET", target).await;
        assert_eq!(status, 403, "{target}: {text}");
    }
    assert!(h.seen().is_empty(), "{:?}", h.seen());
}

#[tokio::test]
async fn suffix_extension_cannot_reach_admin_prefix() {
    let h = Harness::start().await;
    for target in ["/api/admin.json", "/api/Admin.html", "/api/admin.x.y"] {
        h.assert_never_reaches_admin(target).await;
    }
    // Other dotted names under the open prefix are not the admin route.
    let (status, text) = h.as_user("GET", "/api/administrators.json").await;
    assert_eq!(status, 200, "{text}");
}

#[tokio::test]
async fn trace_is_never_forwarded() {
    let h = Harness::start().await;
    for method in ["TRACE", "TRACK"] {
        for target in ["/api/x", "/public/x", "/", "/auth/me"] {
            let (status, text) = h.as_user(method, target).await;
            assert_eq!(status, 405, "{method} {target}: {text}");
            assert!(text.contains(r#""error":"method_not_allowed""#), "{text}");
        }
    }
    let head = format!("CONNECT {} HTTP/1.1\r\nHost: {}", h.addr, h.addr);
    let (status, text) = h.raw(&head).await;
    assert_eq!(status, 405, "{text}");
    assert!(h.seen().is_empty(), "{:?}", h.seen());
}

/// The `Allow` header of the answer in `text` (a raw HTTP response).
fn allow_header(text: &str) -> Option<&str> {
    let head = text.split("\r\n\r\n").next()?;
    head.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case("allow").then(|| value.trim())
    })
}

/// RFC 9110 15.5.6: a 405 names the methods the target supports. A TRACE
/// on a proxied route must not be told `Allow: POST` (a client or scanner
/// retrying with it would be misled); there it is what the proxy forwards.
#[tokio::test]
async fn method_not_allowed_names_the_allowed_methods() {
    let h = Harness::start().await;
    const PROXIED: &str = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS";
    for (method, target, allow) in [
        ("TRACE", "/api/x", PROXIED),
        ("TRACK", "/public/x", PROXIED),
        ("trace", "/api/admin/x", PROXIED),
        ("TRACE", "/", "GET, HEAD"),
        ("TRACE", "/index.html", "GET, HEAD"),
        ("TRACE", "/auth/me", "GET, HEAD"),
        ("TRACE", "/auth/logout", "POST"),
        ("GET", "/auth/logout", "POST"),
        ("GET", "/auth/backchannel-logout", "POST"),
    ] {
        let (status, text) = h.as_user(method, target).await;
        assert_eq!(status, 405, "{method} {target}: {text}");
        assert_eq!(
            allow_header(&text),
            Some(allow),
            "{method} {target}: {text}"
        );
    }
    let head = format!("CONNECT {} HTTP/1.1\r\nHost: {}", h.addr, h.addr);
    let (status, text) = h.raw(&head).await;
    assert_eq!(status, 405, "{text}");
    assert!(allow_header(&text).is_some(), "{text}");
    assert!(h.seen().is_empty(), "{:?}", h.seen());
}

#[tokio::test]
async fn token_none_route_checks_origin_on_post() {
    let h = Harness::start().await;
    let post = |target: &str, extra: &str| {
        format!(
            "POST {target} HTTP/1.1\r\nHost: {}\r\nContent-Length: 0{extra}",
            h.addr
        )
    };
    for extra in [
        "\r\nOrigin: https://evil.example",
        "\r\nOrigin: null",
        "\r\nSec-Fetch-Site: cross-site",
    ] {
        let (status, text) = h.raw(&post("/public/x", extra)).await;
        assert_eq!(status, 403, "{extra}: {text}");
        assert!(text.contains(r#""error":"csrf""#), "{text}");
    }
    assert!(h.seen().is_empty(), "{:?}", h.seen());
    let ours = format!("\r\nOrigin: http://{}", h.addr);
    for extra in [ours.as_str(), "", "\r\nSec-Fetch-Site: same-origin"] {
        let (status, text) = h.raw(&post("/public/x", extra)).await;
        assert_eq!(status, 200, "{extra}: {text}");
    }
    // Safe methods pass from anywhere; `check_origin = false` opts out.
    let get = format!(
        "GET /public/x HTTP/1.1\r\nHost: {}\r\nOrigin: https://evil.example",
        h.addr
    );
    assert_eq!(h.raw(&get).await.0, 200);
    let (status, text) = h
        .raw(&post("/public/open/x", "\r\nOrigin: https://evil.example"))
        .await;
    assert_eq!(status, 200, "{text}");
}

#[tokio::test]
async fn http11_request_without_host_is_refused() {
    let h = Harness::start().await;
    let (status, text) = h.raw("GET /public/x HTTP/1.1").await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains(r#""error":"bad_request""#), "{text}");
    assert!(h.seen().is_empty(), "{:?}", h.seen());
    let two = format!(
        "GET /public/x HTTP/1.1\r\nHost: {}\r\nHost: evil.example",
        h.addr
    );
    let (status, text) = h.raw(&two).await;
    assert_eq!(status, 400, "{text}");
    assert!(h.seen().is_empty(), "{:?}", h.seen());
    // HTTP/1.0 has no Host requirement; with Host, 1.1 passes.
    let (status, text) = h.raw("GET /public/x HTTP/1.0").await;
    assert_eq!(status, 200, "{text}");
    let (status, text) = h
        .raw(&format!("GET /public/x HTTP/1.1\r\nHost: {}", h.addr))
        .await;
    assert_eq!(status, 200, "{text}");
}
