//! Exact cookies and header hygiene (docs/security.md section 12), each test
//! named after the attack it stops, through the real gateway: a prod-profile
//! gateway (`__Host-` cookies) on port 0 with a memory store and an echo
//! upstream that shows what reached it and answers with hostile headers.
//! Sessions are put straight into the store, so no IdP is needed.

use portcullis::session::SessionRecords;
use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use axum::{
    Json, Router,
    http::HeaderMap,
    response::IntoResponse,
    routing::{any, get},
};
use portcullis::{
    Gateway,
    config::Config,
    session::{MemoryStore, SessionId, SessionRecord, TokenSet, random_token},
    time::{Clock, ManualClock},
};
use reqwest::{Method, StatusCode, header};
use serde_json::{Value, json};
use tokio::net::TcpListener;

const KEY: &str = "cG9ydGN1bGxpcy10ZXN0LWtleS0wMTIzNDU2Nzg5YWI=";
const ORIGIN: &str = "https://app.example.com";
const DEV_SERVER: &str = "http://localhost:5173";

struct Gw {
    base: String,
    store: Arc<MemoryStore>,
    clock: Arc<ManualClock>,
    hits: Arc<AtomicUsize>,
    http: reqwest::Client,
}

/// The upstream: `/api/echo` shows the request headers it got; the others
/// answer with headers an upstream must not get through to the browser.
async fn start_upstream(hits: Arc<AtomicUsize>) -> SocketAddr {
    let app = Router::new()
        .route(
            "/api/set-cookies",
            get(|| async {
                let mut h = HeaderMap::new();
                for v in [
                    "__host-portcullis=upstream; Path=/",
                    "__Host%2Dportcullis=upstream; Path=/",
                    " __Host-portcullis=upstream; Path=/",
                    "__Secure-portcullis=upstream; Path=/",
                    "PORTCULLIS=upstream; Path=/",
                    "portc%75llis=upstream; Path=/",
                    "xsrf-token=upstream; Path=/",
                    "__Host-portcullis-LOGIN=upstream; Path=/",
                    "app=1; Path=/",
                ] {
                    h.append(header::SET_COOKIE, v.parse().expect("value"));
                }
                (h, "cookies").into_response()
            }),
        )
        .route(
            "/api/set-login-cookies",
            get(|| async {
                let mut h = HeaderMap::new();
                for v in [
                    "__Host-portcullis-login-0123abcd=upstream; Path=/; Secure; HttpOnly",
                    "__Host-portcullis-login-anything=upstream; Path=/",
                    "portcullis-login-0123abcd=upstream; Path=/",
                    "__Secure-Portcullis-Login-0123abcd=upstream; Path=/",
                    "__Host-portcullis-login%2D0123abcd=upstream; Path=/",
                    "__Host-portcullis-login=upstream; Path=/",
                    "app=1; Path=/",
                ] {
                    h.append(header::SET_COOKIE, v.parse().expect("value"));
                }
                (h, "cookies").into_response()
            }),
        )
        .route(
            "/api/nameless-cookies",
            get(|| async {
                let mut h = HeaderMap::new();
                for v in [
                    "=upstream; Path=/",
                    "__Host-portcullis; Path=/",
                    " =x",
                    "app=1; Path=/",
                ] {
                    h.append(header::SET_COOKIE, v.parse().expect("value"));
                }
                (h, "cookies").into_response()
            }),
        )
        .route(
            "/api/cors",
            get(|| async {
                (
                    [
                        ("access-control-allow-origin", "*"),
                        ("access-control-allow-credentials", "true"),
                        ("access-control-expose-headers", "x-secret"),
                        ("access-control-allow-methods", "DELETE"),
                    ],
                    "open",
                )
                    .into_response()
            }),
        )
        .fallback(any(move |method: axum::http::Method, h: HeaderMap| {
            let hits = hits.clone();
            async move {
                hits.fetch_add(1, Ordering::SeqCst);
                let mut headers = serde_json::Map::new();
                for (k, v) in &h {
                    headers.insert(
                        k.as_str().to_string(),
                        json!(v.to_str().unwrap_or("<binary>")),
                    );
                }
                Json(json!({ "method": method.as_str(), "headers": headers }))
            }
        }));
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind upstream");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// A prod gateway (`__Host-` cookies) whose IdP is a closed port.
async fn start(extra: &str) -> Gw {
    start_with(None, extra).await
}

/// With `issuer`: a dev gateway (plain http, cookie `portcullis`) against it.
async fn start_with(issuer: Option<&str>, extra: &str) -> Gw {
    start_full(issuer, None, extra, "").await
}

/// [`start_with`], and with `public_url` a dev gateway on that URL (the
/// gateway does not check `Host`); `session` is TOML added to `[session]`.
async fn start_full(
    issuer: Option<&str>,
    public_url: Option<&str>,
    extra: &str,
    session: &str,
) -> Gw {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind gateway");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let hits = Arc::new(AtomicUsize::new(0));
    let upstream = start_upstream(hits.clone()).await;
    let (public_url, profile, issuer) = match issuer {
        Some(issuer) => (public_url.unwrap_or(base.as_str()), "dev", issuer),
        None => (ORIGIN, "prod", "https://127.0.0.1:1"),
    };
    let (client_id, client_secret) = (
        crate::common::crafted_idp::CLIENT_ID,
        crate::common::crafted_idp::CLIENT_SECRET,
    );
    // `extra` goes before the first table header when it holds server keys.
    let text = format!(
        r#"
[server]
public_url = "{public_url}"
profile = "{profile}"
{extra}
[oidc]
issuer = "{issuer}"
client_id = "{client_id}"
client_secret = "{client_secret}"
http_timeout = "2s"
[session]
store = "memory"
encryption_keys = ["{KEY}"]
{session}
[[routes]]
prefix = "/api/"
upstream = "http://{upstream}"
"#
    );
    let config = Config::from_toml_str(&text, Vec::new()).expect("config");
    let store = Arc::new(MemoryStore::new());
    let clock = Arc::new(ManualClock::new(1_800_000_000));
    let gateway = Gateway::builder(config)
        .store(store.clone())
        .clock(clock.clone())
        .build()
        .await
        .expect("gateway");
    // The production path: the serving workers, as `portcullis serve`.
    let served = gateway.clone();
    tokio::spawn(async move {
        let _ = portcullis::serve_public(&served, listener, std::future::pending()).await;
    });
    Gw {
        base,
        store,
        clock,
        hits,
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client"),
    }
}

impl Gw {
    /// A stored session for `name`; returns its cookie value.
    async fn session(&self, name: &str) -> String {
        let id = SessionId::generate();
        let now = self.clock.now();
        let mut claims = serde_json::Map::new();
        claims.insert("name".into(), json!(name));
        let record = SessionRecord {
            id: id.hash(),
            sub: name.to_ascii_lowercase(),
            sid: None,
            claims: claims.into(),
            roles: vec![],
            tokens: TokenSet {
                access_token: format!("at-{name}").into(),
                refresh_token: None,
                id_token: None,
                access_expires_at: Some(now + 24 * 3600),
            },
            csrf_token: random_token(32),
            user_agent: None,
            created_at: now,
            last_seen_at: now,
            expires_at: now + 12 * 3600,
            idle_expires_at: now + 30 * 60,
            version: 1,
        };
        self.store.save(&record).await.expect("save session");
        id.as_cookie_value().to_string()
    }

    fn req(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, format!("{}{path}", self.base))
    }

    async fn get_with_cookie(&self, path: &str, cookie: &str) -> (StatusCode, Value) {
        let resp = self
            .req(Method::GET, path)
            .header(header::COOKIE, cookie)
            .send()
            .await
            .expect("send");
        let status = resp.status();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

fn set_cookies(resp: &reqwest::Response) -> Vec<String> {
    resp.headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().expect("ascii").to_string())
        .collect()
}

fn cors_headers(h: &header::HeaderMap) -> Vec<String> {
    h.keys()
        .filter(|k| k.as_str().starts_with("access-control-"))
        .map(|k| k.to_string())
        .collect()
}

// ---------------------------------------------------------------- cookies

#[tokio::test]
async fn percent_encoded_cookie_name_cannot_plant_host_session() {
    let gw = start("").await;
    let alice = gw.session("Alice").await;
    // A sibling subdomain may set `__Host%2Dportcullis` (the browser checks
    // the prefix on the literal name): it carries the attacker's session.
    let mallory = gw.session("Mallory").await;
    let planted = format!("__Host%2Dportcullis={mallory}");

    let (status, body) = gw.get_with_cookie("/auth/me", &planted).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (status, _) = gw.get_with_cookie("/api/echo", &planted).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        gw.hits(),
        0,
        "the planted session never reached the upstream"
    );
    for spelling in [
        "__host-portcullis",
        "__Host-portc%75llis",
        "%5F%5FHost-portcullis",
    ] {
        let (status, _) = gw
            .get_with_cookie("/auth/me", &format!("{spelling}={mallory}"))
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{spelling}");
    }

    // Beside the real cookie, before or after it, the planted one changes nothing.
    for cookie in [
        format!("{planted}; __Host-portcullis={alice}"),
        format!("__Host-portcullis={alice}; {planted}"),
    ] {
        let (status, body) = gw.get_with_cookie("/auth/me", &cookie).await;
        assert_eq!(status, StatusCode::OK, "{cookie}: {body}");
        assert_eq!(body["user"]["name"], "Alice");
        let (status, body) = gw
            .get_with_cookie("/api/echo", &format!("{cookie}; theme=dark"))
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["headers"]["authorization"], "Bearer at-Alice");
        // Neither the session nor its look-alike reaches the upstream.
        assert_eq!(body["headers"]["cookie"], "theme=dark", "{body}");
    }
}

#[tokio::test]
async fn two_session_cookies_are_refused() {
    let gw = start("").await;
    let alice = gw.session("Alice").await;
    let mallory = gw.session("Mallory").await;
    let both = [
        format!("__Host-portcullis={alice}; __Host-portcullis={mallory}"),
        format!("__Host-portcullis={mallory}; theme=x; __Host-portcullis={alice}"),
    ];
    for cookie in &both {
        for path in ["/auth/me", "/api/echo"] {
            let (status, body) = gw.get_with_cookie(path, cookie).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{path} {cookie}");
            assert_eq!(body["error"], "bad_request", "{body}");
        }
    }
    assert_eq!(gw.hits(), 0);
    // Two `Cookie` headers (as HTTP/2 sends them) count the same.
    let resp = gw
        .req(Method::GET, "/auth/me")
        .header(header::COOKIE, format!("__Host-portcullis={alice}"))
        .header(header::COOKIE, format!("__Host-portcullis={mallory}"))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    // An empty or foreign-shaped second value is no rival (see
    // `planted_domain_session_cookie_cannot_lock_the_user_out`).
    let (status, _) = gw
        .get_with_cookie(
            "/auth/me",
            &format!("__Host-portcullis={alice}; __Host-portcullis="),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    // The same value twice is one cookie.
    let (status, body) = gw
        .get_with_cookie(
            "/auth/me",
            &format!("__Host-portcullis={alice}; __Host-portcullis={alice}"),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["user"]["name"], "Alice");
}

#[tokio::test]
async fn upstream_cannot_set_owned_cookie_by_case_or_encoding() {
    let gw = start("").await;
    let alice = gw.session("Alice").await;
    let resp = gw
        .req(Method::GET, "/api/set-cookies")
        .header(header::COOKIE, format!("__Host-portcullis={alice}"))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(set_cookies(&resp), ["app=1; Path=/"]);
}

/// Every `<session cookie>-login-…` name is the gateway's (one per pending
/// login): an upstream that could set one would plant a login binding (login
/// CSRF) or push the browser's login cookies out; one that received them
/// would see sealed login state.
#[tokio::test]
async fn upstream_cannot_set_a_login_cookie() {
    let gw = start("").await;
    let alice = gw.session("Alice").await;
    let resp = gw
        .req(Method::GET, "/api/set-login-cookies")
        .header(header::COOKIE, format!("__Host-portcullis={alice}"))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(set_cookies(&resp), ["app=1; Path=/"]);
    // Nor does the upstream receive them.
    let (status, body) = gw
        .get_with_cookie(
            "/api/echo",
            &format!(
                "__Host-portcullis={alice}; __Host-portcullis-login-0123abcd=sealed; \
                 __Host-portcullis-login-x=y; theme=dark"
            ),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["headers"]["cookie"], "theme=dark");
}

#[tokio::test]
async fn upstream_set_cookie_with_empty_name_is_dropped() {
    let gw = start("").await;
    let alice = gw.session("Alice").await;
    let resp = gw
        .req(Method::GET, "/api/nameless-cookies")
        .header(header::COOKIE, format!("__Host-portcullis={alice}"))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(set_cookies(&resp), ["app=1; Path=/"]);
}

#[tokio::test]
async fn percent_encoded_login_cookie_name_is_not_reused() {
    let idp = crate::common::crafted_idp::CraftedIdp::start().await;
    let gw = start_with(Some(&idp.url("")), "").await;
    let login = |cookie: String| {
        gw.req(Method::GET, "/auth/login?return_to=/")
            .header(header::COOKIE, cookie)
            .send()
    };
    let is_login = |c: &String| c.starts_with("portcullis-login-") && !c.contains("=;");
    // A look-alike login cookie would bind the login to a value the
    // attacker knows (login CSRF into the attacker's account).
    let planted = "A".repeat(43);
    for cookie in [
        format!("portcullis%2Dlogin={planted}"),
        format!("portcullis%2Dlogin-0123abcd={planted}"),
        format!("portcullis-login={planted}"),
    ] {
        let resp = login(cookie).await.expect("send");
        assert_eq!(resp.status(), StatusCode::FOUND);
        let cookies = set_cookies(&resp);
        assert!(
            cookies.iter().filter(|c| is_login(c)).count() == 1
                && !cookies.iter().any(|c| c.contains(&planted)),
            "{cookies:?}"
        );
    }
    // Two different values under one login cookie name (one planted):
    // neither is reused nor counted, a new login starts rather than locking
    // the user out.
    let resp = login(format!(
        "portcullis-login-0123abcd={planted}; portcullis-login-0123abcd={}",
        "B".repeat(43)
    ))
    .await
    .expect("send");
    assert_eq!(resp.status(), StatusCode::FOUND);
    let cookies = set_cookies(&resp);
    assert_eq!(cookies.iter().filter(|c| is_login(c)).count(), 1);
    assert!(!cookies.iter().any(|c| c.contains(&planted)), "{cookies:?}");
}

/// Without a `__Host-` name, a sibling subdomain can set
/// `PORTAL_SESSION=…; Domain=.example.com`, which the browser sends beside
/// the user's own cookie on every request. A value of another shape than
/// ours is ignored; a well-formed one answers 400 ("log in again"), but
/// login and callback still work, and the callback deletes both sessions and
/// removes the planted copy (before setting the new cookie).
#[tokio::test]
async fn planted_domain_session_cookie_cannot_lock_the_user_out() {
    use crate::common::crafted_idp::{CraftedIdp, now};
    let idp = CraftedIdp::start().await;
    let gw = start_full(
        Some(&idp.url("")),
        Some(ORIGIN),
        "",
        "cookie_name = \"PORTAL_SESSION\"",
    )
    .await;
    // The ID token is stamped with the system clock.
    gw.clock.set(now());
    let alice = gw.session("Alice").await;
    let own = format!("PORTAL_SESSION={alice}");

    // (a) A planted value the gateway never issues is noise, before or after.
    for planted in ["x", "deleted", "", "%41"] {
        for cookie in [
            format!("PORTAL_SESSION={planted}; {own}"),
            format!("{own}; PORTAL_SESSION={planted}"),
        ] {
            let (status, body) = gw.get_with_cookie("/auth/me", &cookie).await;
            assert_eq!(status, StatusCode::OK, "{cookie}: {body}");
            assert_eq!(body["user"]["name"], "Alice");
            let (status, _) = gw.get_with_cookie("/api/echo", &cookie).await;
            assert_eq!(status, StatusCode::OK, "{cookie}");
        }
    }

    // (b) A well-formed planted value: refused, with the way out.
    // (The attacker's own session, say: it is deleted too.)
    let planted = gw.session("Mallory").await;
    let both = format!("{own}; PORTAL_SESSION={planted}");
    for path in ["/auth/me", "/api/echo"] {
        let (status, body) = gw.get_with_cookie(path, &both).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}");
        let message = body["message"].as_str().unwrap_or_default();
        assert!(message.contains("log in again"), "{path}: {body}");
    }

    // Logging in again works with both cookies present.
    let resp = gw
        .req(Method::GET, "/auth/login?return_to=/")
        .header(header::COOKIE, &both)
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), StatusCode::FOUND, "login refused");
    let binding = set_cookies(&resp)
        .iter()
        .find(|c| c.starts_with("PORTAL_SESSION-login-"))
        .and_then(|c| c.split(';').next())
        .map(str::to_string)
        .expect("login cookie");
    let authorize = resp.headers()[header::LOCATION].to_str().expect("ascii");
    let resp = gw.http.get(authorize).send().await.expect("authorize");
    let callback = resp.headers()[header::LOCATION].to_str().expect("ascii");
    let callback = callback.replacen(ORIGIN, &gw.base, 1);
    let resp = gw
        .http
        .get(&callback)
        .header(header::COOKIE, format!("{both}; {binding}"))
        .send()
        .await
        .expect("callback");
    assert_eq!(resp.status(), StatusCode::FOUND, "callback refused");
    assert_eq!(resp.headers()[header::LOCATION], "/");
    let cookies = set_cookies(&resp);
    let at = |want: &str| {
        cookies
            .iter()
            .position(|c| c.starts_with("PORTAL_SESSION=") && c.contains(want))
    };
    let new_session = cookies
        .iter()
        .position(|c| c.starts_with("PORTAL_SESSION=") && !c.contains("Domain="))
        .expect("new session cookie");
    for domain in ["Domain=app.example.com", "Domain=example.com"] {
        let removal = at(&format!("{domain};"))
            .unwrap_or_else(|| panic!("no removal for {domain}: {cookies:?}"));
        assert!(cookies[removal].contains("Max-Age=0"), "{cookies:?}");
        assert!(
            removal < new_session,
            "removal after the new cookie: {cookies:?}"
        );
    }
    assert!(
        !cookies.iter().any(|c| c.contains("Domain=com")),
        "{cookies:?}"
    );
    // The old session is gone, as after any login; the new one works.
    for old in [&alice, &planted] {
        let old = portcullis::session::SessionId::hash_of(old).expect("well-formed");
        assert!(gw.store.load(&old).await.expect("load").is_none());
    }
    let new = cookies[new_session]
        .split(';')
        .next()
        .expect("pair")
        .to_string();
    let (status, body) = gw.get_with_cookie("/auth/me", &new).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["authenticated"], true);
    let (status, _) = gw
        .get_with_cookie("/auth/me", &format!("{new}; PORTAL_SESSION=x"))
        .await;
    assert_eq!(status, StatusCode::OK);
}

// ---------------------------------------------------------------- forwarding headers

const CLIENT_CLAIMS: [(&str, &str); 21] = [
    ("forwarded", "for=1.2.3.4;proto=http;host=evil.example"),
    ("x-real-ip", "1.2.3.4"),
    ("x-forwarded-for", "1.2.3.4"),
    ("x-forwarded-proto", "http"),
    ("x-forwarded-host", "evil.example"),
    ("x-forwarded-port", "8443"),
    ("x-forwarded-prefix", "/admin"),
    ("x-forwarded-server", "evil"),
    ("x-original-url", "/api/admin/users"),
    ("x-rewrite-url", "/api/admin/users"),
    ("x-original-host", "evil.example"),
    ("x-host", "evil.example"),
    ("true-client-ip", "1.2.3.4"),
    ("x-client-ip", "1.2.3.4"),
    ("x-original-forwarded-for", "1.2.3.4"),
    ("x-scheme", "http"),
    ("x-url-scheme", "http"),
    ("front-end-https", "off"),
    ("client-ip", "1.2.3.4"),
    ("x-envoy-external-address", "1.2.3.4"),
    ("x-original-method", "DELETE"),
];

/// Headers that make upstream frameworks dispatch another method.
const METHOD_OVERRIDES: [&str; 3] = [
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

async fn echo_with_claims(gw: &Gw) -> Value {
    let alice = gw.session("Alice").await;
    let mut req = gw
        .req(Method::GET, "/api/echo")
        .header(header::COOKIE, format!("__Host-portcullis={alice}"));
    for (k, v) in CLIENT_CLAIMS {
        req = req.header(k, v);
    }
    let resp = req.send().await.expect("send");
    assert_eq!(resp.status(), StatusCode::OK);
    resp.json().await.expect("json")
}

#[tokio::test]
async fn client_forwarded_headers_are_stripped_from_untrusted_peer() {
    let gw = start("").await;
    let seen = echo_with_claims(&gw).await;
    let h = &seen["headers"];
    // Only the gateway's own: the peer it saw, its public scheme and host.
    assert_eq!(h["x-forwarded-for"], "127.0.0.1", "{h}");
    assert_eq!(h["x-forwarded-proto"], "https");
    assert_eq!(h["x-forwarded-host"], "app.example.com");
    for (name, _) in CLIENT_CLAIMS {
        if !matches!(
            name,
            "x-forwarded-for" | "x-forwarded-proto" | "x-forwarded-host"
        ) {
            assert!(h.get(name).is_none(), "{name} reached the upstream: {h}");
        }
    }
}

/// A `GET` (no CSRF check) that an upstream's method-override middleware
/// would run as `DELETE`, or as `TRACE` (which the gateway refuses: it would
/// echo the bearer token): the override never reaches the upstream, from an
/// untrusted peer nor through a trusted proxy.
#[tokio::test]
async fn method_override_headers_are_stripped_from_untrusted_peer() {
    for extra in ["", "trusted_proxies = [\"127.0.0.1/32\"]"] {
        let gw = start(extra).await;
        let alice = gw.session("Alice").await;
        for method in ["TRACE", "DELETE"] {
            let mut req = gw
                .req(Method::GET, "/api/echo")
                .header(header::COOKIE, format!("__Host-portcullis={alice}"));
            for name in METHOD_OVERRIDES {
                req = req.header(name, method);
            }
            let resp = req.send().await.expect("send");
            assert_eq!(resp.status(), StatusCode::OK);
            let seen: Value = resp.json().await.expect("json");
            let h = &seen["headers"];
            assert_eq!(seen["method"], "GET");
            for name in METHOD_OVERRIDES {
                assert!(
                    h.get(name).is_none(),
                    "{extra:?}: {name} reached the upstream: {h}"
                );
            }
        }
    }
}

/// What authenticating proxies tell their upstream about the user (see
/// `proxy::headers::is_identity`), as a client would forge them.
const FORGED_IDENTITY: [(&str, &str); 8] = [
    ("x-auth-request-user", "admin"),
    ("x-forwarded-user", "admin"),
    ("remote-user", "admin"),
    ("x-webauth-user", "admin"),
    ("x-consumer-username", "admin"),
    ("x-ms-client-principal-name", "admin@example.com"),
    (
        "x-goog-authenticated-user-email",
        "accounts.google.com:admin@example.com",
    ),
    ("cf-access-authenticated-user-email", "admin@example.com"),
];

/// Attack: an upstream moved behind portcullis from oauth2-proxy, Grafana's
/// auth proxy, Azure App Service, IAP, … still trusts its old identity
/// header; a client sends one naming another user. It never reaches the
/// upstream, from an untrusted peer nor through a trusted proxy. A client
/// certificate header (a TLS fact only a terminating proxy can state) is
/// dropped from an untrusted peer.
#[tokio::test]
async fn forged_identity_headers_never_reach_the_upstream() {
    for extra in ["", "trusted_proxies = [\"127.0.0.1/32\"]"] {
        let gw = start(extra).await;
        let alice = gw.session("Alice").await;
        let mut req = gw
            .req(Method::GET, "/api/echo")
            .header(header::COOKIE, format!("__Host-portcullis={alice}"))
            .header("x-ssl-client-cert", "-----BEGIN CERTIFICATE-----")
            .header("x-arr-clientcert", "MIIB");
        for (k, v) in FORGED_IDENTITY {
            req = req.header(k, v);
        }
        let resp = req.send().await.expect("send");
        assert_eq!(resp.status(), StatusCode::OK);
        let seen: Value = resp.json().await.expect("json");
        let h = &seen["headers"];
        for (name, _) in FORGED_IDENTITY {
            assert!(
                h.get(name).is_none(),
                "{extra:?}: {name} reached the upstream: {h}"
            );
        }
        let trusted = !extra.is_empty();
        for name in ["x-ssl-client-cert", "x-arr-clientcert"] {
            assert_eq!(h.get(name).is_some(), trusted, "{extra:?}: {name}: {h}");
        }
    }
}

#[tokio::test]
async fn trusted_proxy_forwarding_headers_are_kept() {
    let gw = start("trusted_proxies = [\"127.0.0.1/32\"]").await;
    let seen = echo_with_claims(&gw).await;
    let h = &seen["headers"];
    // A trusted proxy's chain is appended to, its other headers kept as sent.
    assert_eq!(h["x-forwarded-for"], "1.2.3.4, 127.0.0.1", "{h}");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "evil.example");
    assert_eq!(h["x-real-ip"], "1.2.3.4");
    assert_eq!(h["forwarded"], "for=1.2.3.4;proto=http;host=evil.example");
    assert_eq!(h["x-envoy-external-address"], "1.2.3.4");
    assert_eq!(h["x-original-forwarded-for"], "1.2.3.4");
}

// ---------------------------------------------------------------- CORS

#[tokio::test]
async fn upstream_cors_headers_never_reach_browser_when_cors_is_off() {
    let gw = start("").await;
    let alice = gw.session("Alice").await;
    let resp = gw
        .req(Method::GET, "/api/cors")
        .header(header::COOKIE, format!("__Host-portcullis={alice}"))
        .header(header::ORIGIN, "https://evil.example")
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(cors_headers(resp.headers()), Vec::<String>::new());
}

#[tokio::test]
async fn upstream_cors_headers_are_replaced_by_the_gateways_policy() {
    let gw = start(&format!("[cors]\nallowed_origins = [\"{DEV_SERVER}\"]\n")).await;
    let alice = gw.session("Alice").await;
    for (origin, want) in [
        (DEV_SERVER, vec![DEV_SERVER]),
        ("https://evil.example", vec![]),
    ] {
        let resp = gw
            .req(Method::GET, "/api/cors")
            .header(header::COOKIE, format!("__Host-portcullis={alice}"))
            .header(header::ORIGIN, origin)
            .send()
            .await
            .expect("send");
        let h = resp.headers();
        let acao: Vec<_> = h
            .get_all("access-control-allow-origin")
            .iter()
            .map(|v| v.to_str().expect("ascii"))
            .collect();
        assert_eq!(acao, want, "{origin}");
        assert!(h.get("access-control-expose-headers").is_none(), "{origin}");
        assert!(h.get("access-control-allow-methods").is_none(), "{origin}");
    }
}

#[tokio::test]
async fn preflight_is_answered_at_gateway() {
    let preflight = |gw: &Gw, origin: Option<&str>| {
        let mut req = gw
            .req(Method::OPTIONS, "/api/echo")
            .header("access-control-request-method", "DELETE");
        if let Some(origin) = origin {
            req = req.header(header::ORIGIN, origin.to_string());
        }
        req.send()
    };

    // CORS off: no origin is allowed; refused here, without CORS headers.
    let gw = start("").await;
    for origin in [Some("https://evil.example"), Some(ORIGIN), None] {
        let resp = preflight(&gw, origin).await.expect("send");
        assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{origin:?}");
        assert_eq!(cors_headers(resp.headers()), Vec::<String>::new());
    }
    assert_eq!(gw.hits(), 0, "no preflight reached the upstream");
    // A plain OPTIONS (no Access-Control-Request-Method) is the upstream's.
    let resp = gw
        .req(Method::OPTIONS, "/api/echo")
        .send()
        .await
        .expect("send");
    assert_ne!(resp.status(), StatusCode::FORBIDDEN);

    // CORS on: the allowed origin gets the gateway's answer, others 403.
    let gw = start(&format!("[cors]\nallowed_origins = [\"{DEV_SERVER}\"]\n")).await;
    let resp = preflight(&gw, Some(DEV_SERVER)).await.expect("send");
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_eq!(resp.headers()["access-control-allow-origin"], DEV_SERVER);
    for origin in [Some("https://evil.example"), None] {
        let resp = preflight(&gw, origin).await.expect("send");
        assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{origin:?}");
        assert!(resp.headers().get("access-control-allow-origin").is_none());
    }
    assert_eq!(gw.hits(), 0, "no preflight reached the upstream");
}
