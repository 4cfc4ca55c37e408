//! A minimal browser for the integration tests: per-host cookies, manual
//! redirects, form parsing, no JavaScript. Shared by the fixtures of the real
//! OpenID Providers (`oidc_provider`, `django_idp`) and the tests that drive them.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::header::{COOKIE, HeaderMap, HeaderValue, LOCATION, SET_COOKIE};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use url::Url;

#[derive(Debug, Clone)]
struct StoredCookie {
    host: String,
    name: String,
    value: String,
    path: String,
}

/// A response whose body has been read.
#[derive(Debug, Clone)]
pub struct Page {
    pub url: Url,
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Page {
    /// `action` of the first `<form>`, HTML entities `&amp;` decoded.
    pub fn form_action(&self) -> Option<String> {
        let form = self.body.find("<form")?;
        let rest = &self.body[form..];
        let start = rest.find("action=\"")? + "action=\"".len();
        let end = rest[start..].find('"')? + start;
        Some(rest[start..end].replace("&amp;", "&"))
    }

    /// `(name, value)` of every `<input>` with a name (HTML entities for
    /// `&`, `"`, `<`, `>` and `'` decoded).
    pub fn form_inputs(&self) -> Vec<(String, String)> {
        fn attr(tag: &str, name: &str) -> Option<String> {
            let key = format!(" {name}=\"");
            let start = tag.find(&key)? + key.len();
            let end = tag[start..].find('"')? + start;
            Some(
                tag[start..end]
                    .replace("&quot;", "\"")
                    .replace("&#39;", "'")
                    .replace("&lt;", "<")
                    .replace("&gt;", ">")
                    .replace("&amp;", "&"),
            )
        }
        self.body
            .split("<input")
            .skip(1)
            .filter_map(|rest| {
                let tag = &rest[..rest.find('>').unwrap_or(rest.len())];
                Some((attr(tag, "name")?, attr(tag, "value").unwrap_or_default()))
            })
            .collect()
    }

    /// Body parsed as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("{} is not JSON ({e}): {}", self.url, self.body))
    }
}

/// Where a navigation ended.
#[derive(Debug)]
pub enum Landed {
    /// A non-redirect response.
    Page(Page),
    /// A redirect to this URL, not followed because `stop` said so.
    Stopped(Url),
}

impl Landed {
    pub fn page(self) -> Page {
        match self {
            Landed::Page(p) => p,
            Landed::Stopped(u) => panic!("expected a page, stopped at redirect to {u}"),
        }
    }

    pub fn stopped(self) -> Url {
        match self {
            Landed::Stopped(u) => u,
            Landed::Page(p) => panic!(
                "expected a redirect, got {} {} at {}: {}",
                p.status.as_u16(),
                p.status.canonical_reason().unwrap_or(""),
                p.url,
                p.body
            ),
        }
    }
}

/// Minimal browser: per-host cookies, any port (name + path; Domain, Secure, SameSite
/// and expiry dates are ignored, `Max-Age=0` / empty value deletes), manual
/// redirects, no JavaScript.
pub struct Browser {
    pub client: reqwest::Client,
    cookies: Vec<StoredCookie>,
    /// Extra headers sent with every request (e.g. `Accept`).
    pub default_headers: HeaderMap,
}

impl Default for Browser {
    fn default() -> Self {
        Self::new()
    }
}

/// Cookies belong to a host, not an origin: like real browsers, cookies of
/// 127.0.0.1:A are also sent to 127.0.0.1:B (RFC 6265 ignores ports).
fn host_of(url: &Url) -> String {
    url.host_str().unwrap_or_default().to_ascii_lowercase()
}

fn path_matches(cookie_path: &str, request_path: &str) -> bool {
    request_path == cookie_path
        || (request_path.starts_with(cookie_path)
            && (cookie_path.ends_with('/') || request_path[cookie_path.len()..].starts_with('/')))
}

impl Browser {
    pub fn new() -> Self {
        Browser {
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(30))
                .build()
                .expect("reqwest client"),
            cookies: Vec::new(),
            default_headers: HeaderMap::new(),
        }
    }

    /// Value of cookie `name` stored for `url`'s host (any path).
    pub fn cookie(&self, url: &str, name: &str) -> Option<String> {
        let host = host_of(&Url::parse(url).expect("cookie url"));
        self.cookies
            .iter()
            .find(|c| c.host == host && c.name == name)
            .map(|c| c.value.clone())
    }

    /// Sets (or replaces) a cookie for `url`'s host with path `/`.
    pub fn set_cookie(&mut self, url: &str, name: &str, value: &str) {
        let host = host_of(&Url::parse(url).expect("cookie url"));
        self.cookies
            .retain(|c| !(c.host == host && c.name == name && c.path == "/"));
        self.cookies.push(StoredCookie {
            host,
            name: name.to_owned(),
            value: value.to_owned(),
            path: "/".to_owned(),
        });
    }

    /// Forgets all cookies.
    pub fn clear_cookies(&mut self) {
        self.cookies.clear();
    }

    /// The `Cookie` header this browser would send to `url`.
    pub fn cookie_header(&self, url: &Url) -> Option<String> {
        let host = host_of(url);
        let mut matching: Vec<&StoredCookie> = self
            .cookies
            .iter()
            .filter(|c| c.host == host && path_matches(&c.path, url.path()))
            .collect();
        // Longer paths first, as browsers do.
        matching.sort_by_key(|c| std::cmp::Reverse(c.path.len()));
        if matching.is_empty() {
            return None;
        }
        Some(
            matching
                .iter()
                .map(|c| format!("{}={}", c.name, c.value))
                .collect::<Vec<_>>()
                .join("; "),
        )
    }

    fn store_cookies(&mut self, url: &Url, headers: &HeaderMap) {
        let host = host_of(url);
        for raw in headers.get_all(SET_COOKIE) {
            let Ok(raw) = raw.to_str() else { continue };
            let mut parts = raw.split(';');
            let Some((name, value)) = parts.next().and_then(|nv| nv.split_once('=')) else {
                continue;
            };
            let (name, value) = (name.trim().to_owned(), value.trim().to_owned());
            // Default path: the request path up to its last '/'.
            let mut path = match url.path().rfind('/') {
                Some(0) | None => "/".to_owned(),
                Some(i) => url.path()[..i].to_owned(),
            };
            let mut delete = value.is_empty();
            for attr in parts {
                let (k, v) = attr.split_once('=').unwrap_or((attr, ""));
                match k.trim().to_ascii_lowercase().as_str() {
                    "path" if v.trim().starts_with('/') => path = v.trim().to_owned(),
                    "max-age" if v.trim().parse::<i64>().is_ok_and(|n| n <= 0) => delete = true,
                    "expires" if v.contains("1970") => delete = true,
                    _ => {}
                }
            }
            self.cookies
                .retain(|c| !(c.host == host && c.name == name && c.path == path));
            if !delete {
                self.cookies.push(StoredCookie {
                    host: host.clone(),
                    name,
                    value,
                    path,
                });
            }
        }
    }

    /// One request, no redirect following; cookies sent and stored.
    /// `form`: urlencoded body.
    pub async fn request(
        &mut self,
        method: Method,
        url: &str,
        form: Option<&[(&str, &str)]>,
    ) -> reqwest::Response {
        self.request_with(
            method,
            url,
            HeaderMap::new(),
            form.map(|f| {
                url::form_urlencoded::Serializer::new(String::new())
                    .extend_pairs(f.iter())
                    .finish()
            }),
        )
        .await
    }

    /// One request with extra headers and an optional urlencoded body string.
    pub async fn request_with(
        &mut self,
        method: Method,
        url: &str,
        headers: HeaderMap,
        form_body: Option<String>,
    ) -> reqwest::Response {
        let parsed = Url::parse(url).unwrap_or_else(|e| panic!("bad URL {url}: {e}"));
        let mut req = self
            .client
            .request(method.clone(), parsed.clone())
            .headers(self.default_headers.clone())
            .headers(headers);
        if let Some(cookie) = self.cookie_header(&parsed) {
            req = req.header(
                COOKIE,
                HeaderValue::from_str(&cookie).expect("cookie header"),
            );
        }
        if let Some(body) = form_body {
            req = req
                .header(
                    reqwest::header::CONTENT_TYPE,
                    "application/x-www-form-urlencoded",
                )
                .body(body);
        }
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        self.store_cookies(&parsed, resp.headers());
        resp
    }

    /// `POST {base}/auth/logout` asking for JSON, with the CSRF header from
    /// the `XSRF-TOKEN` cookie: the answer's status, headers and JSON body.
    pub async fn logout_json(&mut self, base: &str) -> (StatusCode, HeaderMap, Value) {
        let xsrf = self.cookie(base, "XSRF-TOKEN").expect("XSRF-TOKEN");
        let mut headers = HeaderMap::new();
        headers.insert("accept", HeaderValue::from_static("application/json"));
        headers.insert("x-xsrf-token", xsrf.parse().expect("hv"));
        let resp = self
            .request_with(Method::POST, &format!("{base}/auth/logout"), headers, None)
            .await;
        let status = resp.status();
        let headers = resp.headers().clone();
        (status, headers, resp.json().await.unwrap_or(Value::Null))
    }

    /// GET `url` and follow all redirects.
    pub async fn navigate(&mut self, url: &str) -> Page {
        self.navigate_until(url, &|_| false).await.page()
    }

    /// GET `url` and follow redirects, except to URLs for which `stop` is true.
    pub async fn navigate_until(&mut self, url: &str, stop: &dyn Fn(&Url) -> bool) -> Landed {
        let parsed = Url::parse(url).unwrap_or_else(|e| panic!("bad URL {url}: {e}"));
        let resp = self.request(Method::GET, url, None).await;
        self.follow_until(resp, parsed, stop).await
    }

    /// Follows the redirects of `resp` (the answer to a request to `url`).
    pub async fn follow_until(
        &mut self,
        mut resp: reqwest::Response,
        mut url: Url,
        stop: &dyn Fn(&Url) -> bool,
    ) -> Landed {
        for _ in 0..20 {
            if !resp.status().is_redirection() {
                let status = resp.status();
                let headers = resp.headers().clone();
                let body = resp.text().await.unwrap_or_default();
                return Landed::Page(Page {
                    url,
                    status,
                    headers,
                    body,
                });
            }
            let location = resp
                .headers()
                .get(LOCATION)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_else(|| panic!("redirect without Location from {url}"))
                .to_owned();
            let next = url
                .join(&location)
                .unwrap_or_else(|e| panic!("bad Location {location:?} from {url}: {e}"));
            if stop(&next) {
                return Landed::Stopped(next);
            }
            resp = self.request(Method::GET, next.as_str(), None).await;
            url = next;
        }
        panic!("more than 20 redirects, last at {url}");
    }
}

/// `(code_verifier, code_challenge)` for PKCE S256.
pub fn pkce_pair() -> (String, String) {
    use base64::Engine as _;
    use sha2::Digest as _;
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("random");
    let verifier = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(sha2::Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

/// Decodes (without verifying) the payload of a compact JWT.
pub fn jwt_payload(jwt: &str) -> Value {
    use base64::Engine as _;
    let payload = jwt.split('.').nth(1).expect("JWT has a payload");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("JWT payload base64url");
    serde_json::from_slice(&bytes).expect("JWT payload JSON")
}

/// Shortcut for the `BTreeMap` of a URL's query.
pub fn query_map(url: &Url) -> BTreeMap<String, String> {
    url.query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}
