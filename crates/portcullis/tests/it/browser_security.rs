//! Browser security rules (docs/security.md sections 7 and 12), each with its
//! negative cases: CSRF on unsafe proxied requests and logout, CORS off by
//! default and exact when configured, security headers and CSP, prod profile
//! rules, and session timeouts as the browser sees them.

use crate::browser_fixture as fixture;

use fixture::{Opts, csrf_rejections, start};
use portcullis::config::Config;
use reqwest::{Method, StatusCode, header};
use serde_json::Value;

async fn json(resp: reqwest::Response) -> (StatusCode, Value) {
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

// ---------------------------------------------------------------- CSRF

#[tokio::test]
async fn unsafe_api_requests_need_the_session_csrf_token() {
    let gw = start(Opts::default()).await;
    let alice = gw.login().await;
    let bob = gw.login().await;
    let before = csrf_rejections();

    for method in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
        // Missing header.
        let resp = gw
            .req(method.clone(), "/api/items")
            .header(header::COOKIE, &alice.cookie)
            .send()
            .await
            .expect("send");
        let (status, body) = json(resp).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} without token");
        assert_eq!(body["error"], "csrf");
    }
    // Wrong token.
    let resp = gw
        .req(Method::POST, "/api/items")
        .header(header::COOKIE, &alice.cookie)
        .header("x-xsrf-token", "not-the-token")
        .send()
        .await
        .expect("send");
    assert_eq!(json(resp).await.1["error"], "csrf");
    // A valid token, but of another session.
    let resp = gw
        .req(Method::POST, "/api/items")
        .header(header::COOKIE, &alice.cookie)
        .header("x-xsrf-token", &bob.csrf)
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(gw.hits(), 0, "no refused request reached the upstream");
    assert!(
        csrf_rejections() >= before + 6.0,
        "every refusal is counted in portcullis_csrf_rejections_total"
    );

    // The right token from the gateway's own origin passes.
    let resp = gw
        .req(Method::POST, "/api/items")
        .header(header::COOKIE, &alice.cookie)
        .header("x-xsrf-token", &alice.csrf)
        .header(header::ORIGIN, &gw.origin)
        .header("sec-fetch-site", "same-origin")
        .send()
        .await
        .expect("send");
    let (status, body) = json(resp).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["method"], "POST");
    assert_eq!(body["authorization"], "Bearer at-alice");
    // Safe methods never need it.
    for method in [Method::GET, Method::HEAD] {
        let resp = gw
            .req(method.clone(), "/api/items")
            .header(header::COOKIE, &alice.cookie)
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), StatusCode::OK, "{method}");
    }
    // Multi-tab use: the token does not rotate per request.
    for _ in 0..3 {
        let resp = gw
            .req(Method::DELETE, "/api/items/1")
            .header(header::COOKIE, &alice.cookie)
            .header("x-xsrf-token", &alice.csrf)
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), StatusCode::OK);
        assert!(resp.headers().get(header::SET_COOKIE).is_none());
    }
}

#[tokio::test]
async fn cross_site_origins_are_refused_even_with_the_token() {
    let gw = start(Opts {
        extra: "[cors]\nallowed_origins = [\"http://localhost:5173\"]\n",
        ..Opts::default()
    })
    .await;
    let alice = gw.login().await;
    let post = |origin: Option<&str>, fetch_site: Option<&str>| {
        let mut r = gw
            .req(Method::POST, "/api/items")
            .header(header::COOKIE, &alice.cookie)
            .header("x-xsrf-token", &alice.csrf);
        if let Some(o) = origin {
            r = r.header(header::ORIGIN, o);
        }
        if let Some(s) = fetch_site {
            r = r.header("sec-fetch-site", s);
        }
        r.send()
    };
    for origin in [
        "https://evil.example",
        "null",
        // Another port of the same host is another origin.
        "http://127.0.0.1:1",
        // A prefix or suffix of the real origin is not the origin.
        &format!("{}.evil.example", gw.origin),
    ] {
        let (status, body) = json(post(Some(origin), None).await.expect("send")).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "Origin {origin}");
        assert_eq!(body["error"], "csrf");
    }
    for site in ["cross-site", "same-site"] {
        let resp = post(None, Some(site)).await.expect("send");
        assert_eq!(
            resp.status(),
            StatusCode::FORBIDDEN,
            "Sec-Fetch-Site {site}"
        );
    }
    assert_eq!(gw.hits(), 0);
    // The allow-listed dev-server origin may make the call (with the token).
    let resp = post(Some("http://localhost:5173"), Some("cross-site"))
        .await
        .expect("send");
    assert_eq!(resp.status(), StatusCode::OK);
    // Without Origin and Sec-Fetch-Site (a non-browser client) the token suffices.
    let resp = post(None, None).await.expect("send");
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn logout_is_csrf_checked_and_keeps_the_session_on_failure() {
    let gw = start(Opts::default()).await;
    let alice = gw.login().await;
    let me = || {
        gw.req(Method::GET, "/auth/me")
            .header(header::COOKIE, &alice.cookie)
            .send()
    };
    let resp = gw
        .req(Method::POST, "/auth/logout")
        .header(header::COOKIE, &alice.cookie)
        .header(header::ACCEPT, "application/json")
        .send()
        .await
        .expect("send");
    let (status, body) = json(resp).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::FORBIDDEN, Some("csrf"))
    );
    let resp = gw
        .req(Method::POST, "/auth/logout")
        .header(header::COOKIE, &alice.cookie)
        .header("x-xsrf-token", &alice.csrf)
        .header(header::ORIGIN, "https://evil.example")
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(me().await.expect("me").status(), StatusCode::OK);

    let resp = gw
        .req(Method::POST, "/auth/logout")
        .header(header::COOKIE, &alice.cookie)
        .header("x-xsrf-token", &alice.csrf)
        .header(header::ACCEPT, "application/json")
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), StatusCode::OK);
    let (status, body) = json(me().await.expect("me")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["authenticated"], false);
    // GET never logs out.
    let resp = gw
        .req(Method::GET, "/auth/logout")
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn csrf_header_name_is_configurable() {
    let gw = start(Opts {
        extra: "[csrf]\ncookie = \"csrf\"\nheader = \"X-CSRF-Token\"\n",
        ..Opts::default()
    })
    .await;
    let alice = gw.login().await;
    let send = |name: &'static str| {
        gw.req(Method::POST, "/api/x")
            .header(header::COOKIE, &alice.cookie)
            .header(name, &alice.csrf)
            .send()
    };
    assert_eq!(
        send("x-xsrf-token").await.expect("send").status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        send("x-csrf-token").await.expect("send").status(),
        StatusCode::OK
    );
}

// ---------------------------------------------------------------- CORS

fn has_cors_headers(h: &header::HeaderMap) -> bool {
    h.keys().any(|k| k.as_str().starts_with("access-control-"))
}

fn vary_has(h: &header::HeaderMap, name: &str) -> bool {
    h.get_all(header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|v| v.trim().eq_ignore_ascii_case(name))
}

#[tokio::test]
async fn cors_is_off_by_default() {
    let gw = start(Opts::default()).await;
    let alice = gw.login().await;
    let preflight = gw
        .req(Method::OPTIONS, "/api/items")
        .header(header::ORIGIN, "http://localhost:5173")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "x-xsrf-token")
        .send()
        .await
        .expect("send");
    assert!(!has_cors_headers(preflight.headers()), "{preflight:?}");
    for path in ["/auth/me", "/api/items", "/"] {
        let resp = gw
            .req(Method::GET, path)
            .header(header::COOKIE, &alice.cookie)
            .header(header::ORIGIN, "http://localhost:5173")
            .send()
            .await
            .expect("send");
        assert!(!has_cors_headers(resp.headers()), "{path}: {resp:?}");
    }
}

#[tokio::test]
async fn cors_allow_list_is_exact_with_credentials() {
    let dev_server = "http://localhost:5173";
    let gw = start(Opts {
        extra: "[cors]\nallowed_origins = [\"http://localhost:5173\"]\n",
        ..Opts::default()
    })
    .await;
    let alice = gw.login().await;

    let preflight = |origin: &str| {
        gw.req(Method::OPTIONS, "/api/items")
            .header(header::ORIGIN, origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "content-type, x-xsrf-token",
            )
            .send()
    };
    let resp = preflight(dev_server).await.expect("send");
    assert!(resp.status().is_success(), "{resp:?}");
    let h = resp.headers();
    assert_eq!(h["access-control-allow-origin"], dev_server);
    assert_eq!(h["access-control-allow-credentials"], "true");
    let methods = h["access-control-allow-methods"].to_str().expect("methods");
    for m in ["GET", "POST", "PUT", "PATCH", "DELETE"] {
        assert!(methods.split(", ").any(|x| x == m), "{m} in {methods}");
    }
    let allowed = h["access-control-allow-headers"]
        .to_str()
        .expect("headers")
        .to_ascii_lowercase();
    assert!(allowed.contains("x-xsrf-token") && allowed.contains("content-type"));
    assert!(h.contains_key("access-control-max-age"));
    assert!(vary_has(h, "origin"));
    assert_eq!(gw.hits(), 0, "preflights are answered by the gateway");

    // Not on the list: no CORS headers, never a wildcard; near misses too.
    for origin in [
        "https://evil.example",
        "null",
        "http://localhost:5174",
        "https://localhost:5173",
        "http://localhost:5173.evil.example",
    ] {
        let resp = preflight(origin).await.expect("send");
        assert!(!resp.status().is_success(), "{origin}: {}", resp.status());
        assert!(
            resp.headers().get("access-control-allow-origin").is_none(),
            "{origin}"
        );
        assert!(vary_has(resp.headers(), "origin"));
    }

    // Actual requests: the allowed origin can read the answer (even an error), others cannot.
    let resp = gw
        .req(Method::GET, "/auth/me")
        .header(header::COOKIE, &alice.cookie)
        .header(header::ORIGIN, dev_server)
        .send()
        .await
        .expect("send");
    assert_eq!(resp.headers()["access-control-allow-origin"], dev_server);
    assert_eq!(resp.headers()["access-control-allow-credentials"], "true");
    assert!(vary_has(resp.headers(), "origin"));
    let resp = gw
        .req(Method::GET, "/api/items")
        .header(header::ORIGIN, "https://evil.example")
        .header(header::COOKIE, &alice.cookie)
        .send()
        .await
        .expect("send");
    assert!(resp.headers().get("access-control-allow-origin").is_none());
    assert!(vary_has(resp.headers(), "origin"));
    let resp = gw
        .req(Method::GET, "/api/items")
        .header(header::ORIGIN, dev_server)
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(resp.headers()["access-control-allow-origin"], dev_server);
}

#[tokio::test]
async fn cors_methods_and_headers_are_configurable() {
    let gw = start(Opts {
        extra: r#"[cors]
allowed_origins = ["http://localhost:5173"]
allowed_methods = ["GET", "post"]
allowed_headers = ["Content-Type", "X-Requested-With"]
max_age = "1m"
"#,
        ..Opts::default()
    })
    .await;
    let resp = gw
        .req(Method::OPTIONS, "/auth/logout")
        .header(header::ORIGIN, "http://localhost:5173")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .expect("send");
    let h = resp.headers();
    assert_eq!(h["access-control-allow-methods"], "GET, POST");
    assert_eq!(
        h["access-control-allow-headers"],
        "content-type, x-requested-with, x-xsrf-token"
    );
    assert_eq!(h["access-control-max-age"], "60");
}

#[test]
fn cors_config_refuses_wildcards() {
    let text = |extra: &str| {
        fixture::config_text(
            &Opts {
                extra,
                ..Opts::default()
            },
            "http://127.0.0.1:8080",
            "127.0.0.1:1".parse().expect("addr"),
        )
    };
    for (extra, key) in [
        (
            "[cors]\nallowed_origins = [\"*\"]\n",
            "cors.allowed_origins[0]",
        ),
        (
            "[cors]\nallowed_origins = [\"https://*.example.com\"]\n",
            "cors.allowed_origins[0]",
        ),
        (
            "[cors]\nallowed_headers = [\"*\"]\n",
            "cors.allowed_headers[0]",
        ),
        (
            "[cors]\nallowed_methods = [\"GE T\"]\n",
            "cors.allowed_methods[0]",
        ),
        ("[cors]\nmax_age = \"soon\"\n", "cors.max_age"),
    ] {
        let err = Config::from_toml_str(&text(extra), Vec::new()).expect_err(extra);
        assert!(err.to_string().contains(key), "{extra}: {err}");
    }
}

// ---------------------------------------------------------------- headers and profiles

#[tokio::test]
async fn security_headers_on_gateway_answers_but_not_on_proxied_ones() {
    let gw = start(Opts::default()).await;
    let alice = gw.login().await;
    for path in ["/auth/me", "/auth/nope", "/auth/login?return_to=//evil"] {
        let resp = gw.req(Method::GET, path).send().await.expect("send");
        let h = resp.headers();
        assert_eq!(h["cache-control"], "no-store", "{path}");
        assert_eq!(
            h["content-security-policy"],
            "default-src 'self'; frame-ancestors 'none'; object-src 'none'; base-uri 'self'"
        );
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["referrer-policy"], "no-referrer");
        assert!(
            h.get("strict-transport-security").is_none(),
            "no HSTS in dev"
        );
    }
    // The demo-less gateway without [static] answers 404 itself, with headers.
    let resp = gw.req(Method::GET, "/page").send().await.expect("send");
    assert_eq!(resp.headers()["x-content-type-options"], "nosniff");

    // Proxied API answers keep the upstream's own headers.
    let resp = gw
        .req(Method::GET, "/api/own-headers")
        .header(header::COOKIE, &alice.cookie)
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-security-policy"], "sandbox");
    assert_eq!(resp.headers()["cache-control"], "max-age=60");
    assert!(resp.headers().get("x-content-type-options").is_none());
}

#[tokio::test]
async fn routes_can_opt_in_to_security_headers_on_proxied_answers() {
    // `extra` lands inside the fixture's `[[routes]]` table.
    let gw = start(Opts {
        extra: "security_headers = true",
        ..Opts::default()
    })
    .await;
    let alice = gw.login().await;
    let resp = gw
        .req(Method::GET, "/api/plain")
        .header(header::COOKIE, &alice.cookie)
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), StatusCode::OK);
    let h = resp.headers();
    assert_eq!(
        h["content-security-policy"],
        "default-src 'self'; frame-ancestors 'none'; object-src 'none'; base-uri 'self'"
    );
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["referrer-policy"], "no-referrer");
    // An upstream's own CSP still wins.
    let resp = gw
        .req(Method::GET, "/api/own-headers")
        .header(header::COOKIE, &alice.cookie)
        .send()
        .await
        .expect("send");
    assert_eq!(resp.headers()["content-security-policy"], "sandbox");
    assert_eq!(resp.headers()["x-content-type-options"], "nosniff");
}

#[tokio::test]
async fn csp_is_configurable() {
    let csp =
        "default-src 'self'; connect-src 'self' https://api.example.com; frame-ancestors 'none'";
    let gw = start(Opts {
        server: &format!("csp = \"{csp}\""),
        ..Opts::default()
    })
    .await;
    let resp = gw.req(Method::GET, "/auth/me").send().await.expect("send");
    assert_eq!(resp.headers()["content-security-policy"], csp);
    let resp = gw
        .req(Method::GET, "/index.html")
        .send()
        .await
        .expect("send");
    assert_eq!(resp.headers()["content-security-policy"], csp);
    for bad in ["csp = \"\"", "csp = \"a\\nb\""] {
        let text = fixture::config_text(
            &Opts {
                server: bad,
                ..Opts::default()
            },
            "http://127.0.0.1:8080",
            "127.0.0.1:1".parse().expect("addr"),
        );
        let err = Config::from_toml_str(&text, Vec::new()).expect_err(bad);
        assert!(err.to_string().contains("server.csp"), "{err}");
    }
}

#[tokio::test]
async fn prod_profile_sends_hsts_and_host_prefixed_cookies() {
    let gw = start(Opts {
        profile: "prod",
        ..Opts::default()
    })
    .await;
    assert_eq!(gw.cookie_name, "__Host-portcullis");
    let resp = gw.req(Method::GET, "/auth/me").send().await.expect("send");
    assert_eq!(
        resp.headers()["strict-transport-security"],
        "max-age=31536000; includeSubDomains"
    );

    // The login-in-flight cookie and the cookie removals at logout show the prod attributes.
    let resp = gw
        .req(Method::GET, "/auth/login")
        .send()
        .await
        .expect("send");
    let set: Vec<_> = resp
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::to_owned)
        .collect();
    // The IdP is unreachable here, so login may fail with 503 before setting
    // a cookie; logout always clears the cookies.
    let alice = gw.login().await;
    let resp = gw
        .req(Method::POST, "/auth/logout")
        .header(header::COOKIE, &alice.cookie)
        .header("x-xsrf-token", &alice.csrf)
        .header(header::ORIGIN, fixture::PROD_ORIGIN)
        .header(header::ACCEPT, "application/json")
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), StatusCode::OK);
    let cleared: Vec<String> = resp
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::to_owned)
        .chain(set)
        .collect();
    let session = cleared
        .iter()
        .find(|c| c.starts_with("__Host-portcullis="))
        .expect("session cookie cleared");
    for attr in ["Secure", "HttpOnly", "Path=/"] {
        assert!(session.contains(attr), "{attr} in {session}");
    }
    assert!(
        !session.contains("Domain="),
        "__Host- cookies have no Domain"
    );
    let xsrf = cleared
        .iter()
        .find(|c| c.starts_with("XSRF-TOKEN="))
        .expect("csrf cookie cleared");
    assert!(
        xsrf.contains("Secure") && !xsrf.contains("HttpOnly"),
        "{xsrf}"
    );
    assert_eq!(resp.headers()["clear-site-data"], "\"cookies\"");
}

#[test]
fn prod_refuses_plain_http_public_url_and_dev_allows_only_loopback() {
    let text = |profile: &str, url: &str| {
        format!(
            "[server]\nprofile = \"{profile}\"\npublic_url = \"{url}\"\n[oidc]\nissuer = \"https://idp.example.com\"\n\
             client_id = \"c\"\nclient_secret = \"s3cr3t-client-value\"\n[session]\nencryption_keys = [\"{}\"]\n",
            fixture::KEY
        )
    };
    let err = Config::from_toml_str(&text("prod", "http://app.example.com"), Vec::new())
        .expect_err("prod http");
    assert!(err.to_string().contains("server.public_url"), "{err}");
    let err = Config::from_toml_str(&text("prod", "http://127.0.0.1:8080"), Vec::new())
        .expect_err("prod http on loopback");
    assert!(err.to_string().contains("server.public_url"), "{err}");
    let err = Config::from_toml_str(&text("dev", "http://app.example.com"), Vec::new())
        .expect_err("dev http off loopback");
    assert!(err.to_string().contains("server.public_url"), "{err}");
    let dev = Config::from_toml_str(&text("dev", "http://localhost:5173"), Vec::new())
        .expect("dev on localhost");
    assert_eq!(dev.session.cookie_name, "portcullis");
    assert!(!dev.secure_cookies());
}

// ---------------------------------------------------------------- timeouts

#[tokio::test]
async fn expired_sessions_answer_session_expired_and_me_says_unauthenticated() {
    let gw = start(Opts::default()).await;
    let alice = gw.login().await;
    let (status, me) = json(
        gw.req(Method::GET, "/auth/me")
            .header(header::COOKIE, &alice.cookie)
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(me["session"]["expires_at"].is_string(), "{me}");
    assert!(me["session"]["idle_expires_at"].is_string(), "{me}");

    // Idle timeout (30m) passes.
    gw.clock.advance(31 * 60);
    let (status, body) = json(
        gw.req(Method::GET, "/api/items")
            .header(header::COOKIE, &alice.cookie)
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"], "session_expired");
    let (status, body) = json(
        gw.req(Method::GET, "/auth/me")
            .header(header::COOKIE, &alice.cookie)
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["authenticated"], false);

    // Absolute timeout (12h) even for a session in constant use.
    let bob = gw.login().await;
    for _ in 0..25 {
        gw.clock.advance(29 * 60);
        let resp = gw
            .req(Method::GET, "/api/items")
            .header(header::COOKIE, &bob.cookie)
            .send()
            .await
            .expect("send");
        if resp.status() != StatusCode::OK {
            let (status, body) = json(resp).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED);
            assert_eq!(body["error"], "session_expired");
            return;
        }
    }
    panic!("the absolute timeout never ended the session");
}

#[test]
fn dev_profile_lists_its_differences_from_prod() {
    let text = |profile: &str, url: &str, extra: &str| {
        format!(
            "[server]\nprofile = \"{profile}\"\npublic_url = \"{url}\"\n[oidc]\nissuer = \"http://127.0.0.1:9000\"\n\
             client_id = \"c\"\nclient_secret = \"s3cr3t-client-value\"\n[session]\nencryption_keys = [\"{}\"]\n{extra}",
            fixture::KEY
        )
    };
    let dev = Config::from_toml_str(
        &text(
            "dev",
            "http://localhost:5173",
            "[cors]\nallowed_origins = [\"http://localhost:3000\"]\n",
        ),
        Vec::new(),
    )
    .expect("dev");
    let diffs = dev.dev_profile_differences().join("\n");
    for expected in [
        "plain http",
        "__Host-",
        "Secure",
        "HSTS",
        "issuer http://127.0.0.1:9000",
        "CORS allows http://localhost:3000",
        "human-readable",
    ] {
        assert!(diffs.contains(expected), "{expected} in:\n{diffs}");
    }
    let prod = Config::from_toml_str(
        &text("prod", "https://app.example.com", "")
            .replace("http://127.0.0.1:9000", "https://idp.example.com"),
        Vec::new(),
    )
    .expect("prod");
    assert!(prod.dev_profile_differences().is_empty());
}

// ---------------------------------------------------------------- WebSocket

/// A WebSocket handshake to `/api/ws`, byte for byte; returns the status line
/// and the body that follows a refusal.
async fn ws_handshake(gw: &fixture::Gw, cookie: &str, origin: Option<&str>) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = gw.base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let origin = origin
        .map(|o| format!("Origin: {o}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "GET /api/ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Cookie: {cookie}\r\n{origin}\r\n"
    );
    stream.write_all(req.as_bytes()).await.expect("write");
    let mut buf = vec![0u8; 4096];
    let n = stream.read(&mut buf).await.expect("read");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test]
async fn websocket_upgrades_must_pass_the_origin_check() {
    let gw = start(Opts::default()).await;
    let alice = gw.login().await;
    let before = csrf_rejections();
    for origin in ["https://evil.example", "null", "http://127.0.0.1:1"] {
        let answer = ws_handshake(&gw, &alice.cookie, Some(origin)).await;
        assert!(answer.starts_with("HTTP/1.1 403"), "{origin}: {answer}");
        assert!(answer.contains("\"csrf\""), "{origin}: {answer}");
    }
    assert!(csrf_rejections() >= before + 3.0);
    assert_eq!(gw.hits(), 0, "no cross-site handshake reached the upstream");
    // From the gateway's own origin the handshake goes on to the upstream
    // (which here is no WebSocket server, so it does not complete).
    let answer = ws_handshake(&gw, &alice.cookie, Some(&gw.origin)).await;
    assert!(!answer.contains("\"csrf\""), "{answer}");
    assert_eq!(gw.hits(), 1, "{answer}");
}
