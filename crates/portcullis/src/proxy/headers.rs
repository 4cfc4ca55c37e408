//! Header hygiene for proxied requests and responses: hop-by-hop headers,
//! the gateway's own cookies and incoming credentials never pass;
//! forwarding headers are overwritten; the user's token is attached.

use std::net::SocketAddr;

use axum::extract::ConnectInfo;
use http::{HeaderMap, HeaderName, HeaderValue, header, request::Parts};

use crate::config::Config;

const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

pub(super) struct Forwarding<'a> {
    pub config: &'a Config,
    pub owned_cookies: &'a [String],
    pub access_token: Option<&'a str>,
    pub request_id: &'a HeaderValue,
}

fn strip_hop_by_hop(h: &mut HeaderMap) {
    // Headers named in Connection are hop-by-hop too (RFC 9110 7.6.1).
    let named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::try_from(n.trim()).ok())
        .collect();
    for n in named.iter().chain(HOP_BY_HOP.iter()) {
        h.remove(n);
    }
    let proxy_headers: Vec<HeaderName> = h
        .keys()
        .filter(|k| k.as_str().starts_with("proxy-"))
        .cloned()
        .collect();
    for n in proxy_headers {
        h.remove(n);
    }
}

pub(super) fn rewrite_request(parts: &mut Parts, fwd: Forwarding<'_>) {
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let h = &mut parts.headers;
    strip_hop_by_hop(h);
    h.remove(header::HOST);
    h.remove(header::AUTHORIZATION);
    strip_owned_cookies(h, fwd.owned_cookies);
    if let Some(token) = fwd.access_token {
        set_bearer(h, token);
    }

    // X-Forwarded-For: appended to only when the peer is a trusted proxy.
    let trusted = peer.is_some_and(|ip| {
        fwd.config
            .server
            .trusted_proxies
            .iter()
            .any(|net| net.contains(&ip))
    });
    let prior = if trusted {
        h.get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    } else {
        None
    };
    let xff = match (prior, peer) {
        (Some(p), Some(ip)) => Some(format!("{p}, {ip}")),
        (None, Some(ip)) => Some(ip.to_string()),
        (p, None) => p,
    };
    h.remove("x-forwarded-for");
    if let Some(v) = xff.and_then(|x| HeaderValue::from_str(&x).ok()) {
        h.insert("x-forwarded-for", v);
    }
    let public = &fwd.config.server.public_url;
    if !trusted || !h.contains_key("x-forwarded-proto") {
        if let Ok(v) = HeaderValue::from_str(public.scheme()) {
            h.insert("x-forwarded-proto", v);
        }
    }
    if !trusted || !h.contains_key("x-forwarded-host") {
        let host = match (public.host_str(), public.port()) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            (Some(host), None) => host.to_string(),
            _ => String::new(),
        };
        if let Ok(v) = HeaderValue::from_str(&host) {
            h.insert("x-forwarded-host", v);
        }
    }
    h.insert("x-request-id", fwd.request_id.clone());
}

/// Set `Authorization: Bearer <token>`, marked sensitive (never logged by hyper).
pub(super) fn set_bearer(h: &mut HeaderMap, token: &str) {
    let mut value = String::with_capacity(7 + token.len());
    value.push_str("Bearer ");
    value.push_str(token);
    match HeaderValue::try_from(value) {
        Ok(mut v) => {
            v.set_sensitive(true);
            h.insert(header::AUTHORIZATION, v);
        }
        // A token that is no header value cannot be sent; the upstream will 401.
        Err(_) => {
            h.remove(header::AUTHORIZATION);
        }
    }
}

/// Drop cookies the gateway owns from `Cookie`; other cookies pass.
fn strip_owned_cookies(h: &mut HeaderMap, owned: &[String]) {
    let kept: Vec<String> = h
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|pair| {
            let name = pair.split('=').next().unwrap_or("").trim();
            !pair.is_empty() && !owned.iter().any(|o| o == name)
        })
        .map(str::to_string)
        .collect();
    h.remove(header::COOKIE);
    if !kept.is_empty()
        && let Ok(v) = HeaderValue::from_str(&kept.join("; "))
    {
        h.insert(header::COOKIE, v);
    }
}

pub(super) fn rewrite_response(h: &mut HeaderMap, owned: &[String]) {
    strip_hop_by_hop(h);
    // An upstream must not be able to set or clear the gateway's cookies.
    let kept: Vec<HeaderValue> = h
        .get_all(header::SET_COOKIE)
        .iter()
        .filter(|v| {
            let name = v
                .to_str()
                .ok()
                .and_then(|s| s.split('=').next())
                .unwrap_or("")
                .trim();
            !owned.iter().any(|o| o.eq_ignore_ascii_case(name))
        })
        .cloned()
        .collect();
    h.remove(header::SET_COOKIE);
    for v in kept {
        h.append(header::SET_COOKIE, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owned_cookies_are_stripped_others_pass() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("portcullis=secret; theme=dark; XSRF-TOKEN=t"),
        );
        strip_owned_cookies(&mut h, &["portcullis".into(), "XSRF-TOKEN".into()]);
        assert_eq!(h.get(header::COOKIE).unwrap(), "theme=dark");
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_go() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("proxy-foo", HeaderValue::from_static("1"));
        h.insert("x-keep", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-keep"));
    }

    #[test]
    fn upstream_cannot_set_gateway_cookies() {
        let mut h = HeaderMap::new();
        h.append(
            header::SET_COOKIE,
            HeaderValue::from_static("portcullis=x; Path=/"),
        );
        h.append(
            header::SET_COOKIE,
            HeaderValue::from_static("app=1; Path=/"),
        );
        rewrite_response(&mut h, &["portcullis".into()]);
        let all: Vec<_> = h.get_all(header::SET_COOKIE).iter().collect();
        assert_eq!(all, vec![HeaderValue::from_static("app=1; Path=/")]);
    }
}
