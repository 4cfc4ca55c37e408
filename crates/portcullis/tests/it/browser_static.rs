//! Serving the SPA from `[static] dir`: content types, validators (ETag,
//! Last-Modified, 304), precompressed variants, cache policy for hashed
//! assets and index.html, the SPA fallback's limits, and no path traversal.

use crate::browser_fixture as fixture;

use std::path::Path;

use fixture::{Gw, Opts, start};
use reqwest::{Method, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const INDEX: &str = "<!doctype html><title>spa</title><p>SPA INDEX</p>";
const SECRET: &str = "TOP SECRET OUTSIDE THE DIR";
const HASHED: &str = "/assets/app-3f9a1c2b.js";

struct Site {
    gw: Gw,
    _tmp: tempfile::TempDir,
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, bytes).expect("write");
}

async fn site(spa_fallback: bool) -> Site {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dist = tmp.path().join("dist");
    write(&dist.join("index.html"), INDEX.as_bytes());
    write(
        &dist.join("assets/app-3f9a1c2b.js"),
        b"console.log('plain');",
    );
    write(&dist.join("assets/app-3f9a1c2b.js.br"), b"BROTLI-BYTES");
    write(&dist.join("assets/app-3f9a1c2b.js.gz"), b"GZIP-BYTES");
    write(&dist.join("style.css"), b"body{}");
    write(
        &dist.join("logo.svg"),
        b"<svg xmlns='http://www.w3.org/2000/svg'/>",
    );
    write(&dist.join("data.json"), b"{}");
    write(&tmp.path().join("secret.txt"), SECRET.as_bytes());
    let extra = format!(
        "[static]\ndir = \"{}\"\nspa_fallback = {spa_fallback}\n",
        dist.display()
    );
    let gw = start(Opts {
        extra: &extra,
        ..Opts::default()
    })
    .await;
    Site { gw, _tmp: tmp }
}

async fn get(gw: &Gw, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut r = gw.req(Method::GET, path);
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    r.send().await.expect("send")
}

fn hv<'a>(resp: &'a reqwest::Response, name: &str) -> &'a str {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

#[tokio::test]
async fn files_have_content_types_cache_policy_and_security_headers() {
    let s = site(true).await;
    for (path, ctype, cache) in [
        ("/", "text/html", "no-cache"),
        ("/index.html", "text/html", "no-cache"),
        (HASHED, "javascript", "public, max-age=31536000, immutable"),
        ("/style.css", "text/css", "no-cache"),
        ("/logo.svg", "image/svg+xml", "no-cache"),
        ("/data.json", "application/json", "no-cache"),
    ] {
        let resp = get(&s.gw, path, &[]).await;
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        assert!(
            hv(&resp, "content-type").contains(ctype),
            "{path}: {resp:?}"
        );
        assert_eq!(hv(&resp, "cache-control"), cache, "{path}");
        assert_eq!(hv(&resp, "x-content-type-options"), "nosniff", "{path}");
        assert!(hv(&resp, "content-security-policy").contains("default-src 'self'"));
    }
}

#[tokio::test]
async fn etag_and_last_modified_give_304() {
    let s = site(true).await;
    let resp = get(&s.gw, "/style.css", &[]).await;
    let etag = hv(&resp, "etag").to_string();
    let modified = hv(&resp, "last-modified").to_string();
    assert!(etag.starts_with("W/\""), "{resp:?}");
    assert!(!modified.is_empty());
    let resp = get(&s.gw, "/style.css", &[("if-none-match", &etag)]).await;
    assert_eq!(resp.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(hv(&resp, "etag"), etag);
    assert!(resp.bytes().await.expect("body").is_empty());
    let resp = get(&s.gw, "/style.css", &[("if-modified-since", &modified)]).await;
    assert_eq!(resp.status(), StatusCode::NOT_MODIFIED);
    let resp = get(&s.gw, "/style.css", &[("if-none-match", "W/\"other\"")]).await;
    assert_eq!(resp.status(), StatusCode::OK);
    // index.html revalidates too.
    let resp = get(&s.gw, "/", &[]).await;
    let etag = hv(&resp, "etag").to_string();
    let resp = get(&s.gw, "/", &[("if-none-match", &etag)]).await;
    assert_eq!(resp.status(), StatusCode::NOT_MODIFIED);
}

#[tokio::test]
async fn precompressed_variants_are_served_when_accepted() {
    let s = site(true).await;
    let br = get(&s.gw, HASHED, &[("accept-encoding", "br, gzip")]).await;
    assert_eq!(hv(&br, "content-encoding"), "br");
    assert!(hv(&br, "content-type").contains("javascript"));
    assert!(
        hv(&br, "vary")
            .to_ascii_lowercase()
            .contains("accept-encoding")
    );
    let br_etag = hv(&br, "etag").to_string();
    assert_eq!(br.bytes().await.expect("body").as_ref(), b"BROTLI-BYTES");
    let gz = get(&s.gw, HASHED, &[("accept-encoding", "gzip")]).await;
    assert_eq!(hv(&gz, "content-encoding"), "gzip");
    assert_ne!(hv(&gz, "etag"), br_etag, "each encoding has its own ETag");
    assert_eq!(gz.bytes().await.expect("body").as_ref(), b"GZIP-BYTES");
    let plain = get(&s.gw, HASHED, &[("accept-encoding", "identity")]).await;
    assert_eq!(hv(&plain, "content-encoding"), "");
    assert_eq!(
        plain.bytes().await.expect("body").as_ref(),
        b"console.log('plain');"
    );
}

#[tokio::test]
async fn spa_fallback_only_for_html_gets_outside_api_and_auth() {
    let s = site(true).await;
    let html = [("accept", "text/html,application/xhtml+xml,*/*;q=0.8")];
    let resp = get(&s.gw, "/dashboard/users/7", &html).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(hv(&resp, "cache-control"), "no-cache");
    assert_eq!(resp.text().await.expect("body"), INDEX);

    // Not asking for HTML (a missing asset, a fetch): a real 404.
    for accept in ["application/json", "*/*", "text/css"] {
        let resp = get(&s.gw, "/assets/missing-0badc0de.js", &[("accept", accept)]).await;
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{accept}");
    }
    let resp = get(&s.gw, "/dashboard", &[]).await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    // Not a GET.
    let resp =
        s.gw.req(Method::POST, "/dashboard")
            .header("accept", "text/html")
            .send()
            .await
            .expect("send");
    assert_ne!(resp.status(), StatusCode::OK);
    // API prefixes are proxied (here: 401 without a session), never the SPA.
    for path in ["/api/unknown", "/api", "/api/"] {
        let resp = get(&s.gw, path, &html).await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{path}");
        assert!(!resp.text().await.expect("body").contains("SPA INDEX"));
    }
    // Auth paths are the gateway's, never the SPA.
    for path in ["/auth/unknown", "/auth/", "/auth/me/x"] {
        let resp = get(&s.gw, path, &html).await;
        assert_ne!(resp.status(), StatusCode::OK, "{path}");
        assert!(!resp.text().await.expect("body").contains("SPA INDEX"));
    }
}

#[tokio::test]
async fn spa_fallback_can_be_turned_off() {
    let s = site(false).await;
    let resp = get(&s.gw, "/dashboard", &[("accept", "text/html")]).await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        get(&s.gw, "/", &[]).await.text().await.expect("body"),
        INDEX
    );
}

/// Sends `path` byte for byte (clients would normalise `..` away).
async fn raw_get(gw: &Gw, path: &str) -> String {
    let addr = gw.base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/html\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(req.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    stream.read_to_end(&mut out).await.expect("read");
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn no_path_traversal_out_of_the_static_dir() {
    let s = site(true).await;
    // Sanity: the raw client reaches real files.
    assert!(raw_get(&s.gw, "/style.css").await.contains("body{}"));
    for path in [
        "/../secret.txt",
        "/assets/../../secret.txt",
        "/%2e%2e/secret.txt",
        "/%2E%2E/secret.txt",
        "/..%2fsecret.txt",
        "/assets/..%2f..%2fsecret.txt",
        "/%2e%2e%2fsecret.txt",
        "/..%5csecret.txt",
        "/..\\secret.txt",
        "/.%2e/secret.txt",
        "//secret.txt",
        "/%00/../secret.txt",
    ] {
        let answer = raw_get(&s.gw, path).await;
        assert!(!answer.contains(SECRET), "{path} leaked: {answer}");
        let status = answer.split(' ').nth(1).unwrap_or("");
        assert!(
            status == "200" && answer.contains("SPA INDEX") || status.starts_with('4'),
            "{path}: {answer}"
        );
    }
}
