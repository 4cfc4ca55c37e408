//! Header hygiene for proxied requests and responses: hop-by-hop headers,
//! the gateway's own cookies and incoming credentials never pass;
//! forwarding headers are overwritten; the user's token is attached.

use std::net::SocketAddr;

use http::{HeaderMap, HeaderName, HeaderValue, header, request::Parts};

use crate::{config::Config, session::TokenSet};

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

// Named once: inserting under a `&str` name copies the name into a fresh
// allocation on every call, a constant `HeaderName` does not.
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const CLEAR_SITE_DATA: HeaderName = HeaderName::from_static("clear-site-data");

pub(super) struct Forwarding<'a> {
    pub config: &'a Config,
    pub owned_cookies: &'a [String],
    /// Prebuilt from `server.public_url` (see `Proxy`).
    pub forwarded_proto: Option<&'a HeaderValue>,
    pub forwarded_host: Option<&'a HeaderValue>,
    /// The connection's peer (`None` when the server did not say).
    pub peer: Option<SocketAddr>,
    /// The session's tokens, for `Authorization`.
    pub tokens: Option<&'a TokenSet>,
    pub request_id: &'a HeaderValue,
    /// The upstream's `Host` (authority), built once per plain-http
    /// upstream; the HTTP client would otherwise format it from the URI on
    /// every request. `None`: the incoming `Host` is removed and the client
    /// sets what the connection needs.
    pub upstream_host: Option<&'a HeaderValue>,
}

fn is_hop_by_hop(k: &HeaderName) -> bool {
    HOP_BY_HOP.contains(k) || k.as_str().starts_with("proxy-")
}

/// Request headers that tell an upstream who the client is, how it
/// connected or which URL it asked for. From a peer outside
/// `server.trusted_proxies` they are the client's own claims (a spoofed
/// client IP for rate limits and allow-lists, a rewritten URL that some
/// frameworks route on, a host or scheme for absolute links), so all of them
/// go and the gateway sets its own `X-Forwarded-For/Proto/Host`. The
/// `X-Forwarded-*` and `X-Original-*` families go whole (ingress-nginx alone
/// sets `X-Original-Forwarded-For`, `-Method`, `-URI`).
fn is_forwarding(k: &HeaderName) -> bool {
    let n = k.as_str();
    n.starts_with("x-forwarded-")
        || n.starts_with("x-original-")
        || matches!(
            n,
            "forwarded"
                | "x-real-ip"
                | "x-rewrite-url"
                | "x-host"
                | "x-client-ip"
                | "true-client-ip"
                | "x-cluster-client-ip"
                | "cf-connecting-ip"
                | "fastly-client-ip"
                | "client-ip"
                | "x-envoy-external-address"
                | "x-scheme"
                | "x-url-scheme"
                | "front-end-https"
                // TLS facts a terminating proxy states: the scheme (`X-SSL`,
                // IIS ARR's `X-ARR-SSL`) and the client certificate.
                | "x-ssl"
                | "x-arr-ssl"
                | "x-arr-clientcert"
        )
        || n.starts_with("x-ssl-")
        || n.starts_with("x-client-cert")
}

/// Cloudflare Access's headers, the one identity family not under `x-`
/// that [`scan`] checks on its own (beside `cookie`, which every request has).
const CF_ACCESS: &str = "cf-access-";

/// Headers in which an authenticating proxy tells its upstream who the user
/// is: oauth2-proxy (`X-Auth-Request-*`, `X-Forwarded-User`, …), Apache and
/// CGI (`Remote-User`), Grafana's auth proxy (`X-WEBAUTH-USER`), Kong
/// (`X-Consumer-*`, `X-Authenticated-Userid`), Azure App Service
/// (`X-MS-CLIENT-PRINCIPAL*`, `X-MS-TOKEN-*`), Google IAP, AWS ALB,
/// Cloudflare Access, Pomerium, Vouch. An upstream moved behind portcullis
/// from one of those may still trust them, so a client's would be a
/// spoofed user. Removed from every peer, trusted proxies too: here the
/// gateway is the one that authenticates, and its statement is the token.
fn is_identity(k: &HeaderName) -> bool {
    let n = k.as_str();
    match n.strip_prefix("x-") {
        Some(x) => is_x_identity(x),
        None => n == "remote-user" || n.starts_with(CF_ACCESS),
    }
}

/// [`is_identity`] after `x-`, by first letter: every request carries the
/// gateway's `x-request-id` through here, so that costs one comparison.
fn is_x_identity(n: &str) -> bool {
    match n.as_bytes().first() {
        Some(b'a') => {
            n.starts_with("auth-request-")
                || n == "authenticated-userid"
                || n.starts_with("amzn-oidc-")
        }
        Some(b'c') => n.starts_with("consumer-") || n == "credential-identifier",
        Some(b'f') => matches!(
            n,
            "forwarded-user"
                | "forwarded-email"
                | "forwarded-preferred-username"
                | "forwarded-groups"
                | "forwarded-access-token"
        ),
        Some(b'g') => n.starts_with("goog-authenticated-user-") || n == "goog-iap-jwt-assertion",
        Some(b'm') => n.starts_with("ms-client-principal") || n.starts_with("ms-token-"),
        Some(b'p') => n.starts_with("pomerium-"),
        Some(b'r') => n == "remote-user",
        Some(b'v') => n.starts_with("vouch-"),
        Some(b'w') => n == "webauth-user",
        _ => false,
    }
}

/// Headers that make an upstream framework (Express `method-override`,
/// Symfony, Rails/Rack, ASP.NET, Spring's `HiddenHttpMethodFilter` variants)
/// dispatch another method than the request line's: a `GET` read as
/// `TRACE` or `DELETE` would skip the gateway's method rules (TRACE refused,
/// CSRF on unsafe methods). Removed from every peer, trusted proxies too: a
/// proxy vouches for the client's address, not for its method, and the
/// usual ones pass these headers on untouched.
fn is_method_override(k: &HeaderName) -> bool {
    matches!(
        k.as_str(),
        "x-http-method-override" | "x-http-method" | "x-method-override"
    )
}

/// What [`scan`] found in one pass over the names.
#[derive(Default)]
struct Found {
    hop_by_hop: bool,
    forwarding: bool,
    method_override: bool,
    identity: bool,
    access_control: bool,
    clear_site_data: bool,
}

/// One pass over the header names: most messages carry none of the headers
/// to remove, and then nothing is hashed, allocated or removed.
fn scan(h: &HeaderMap, forwarding: bool, response: bool) -> Found {
    let mut found = Found::default();
    for k in h.keys() {
        // Sorted by first letter, so that common names (`accept`, `host`,
        // `sec-fetch-*`, …) cost one comparison.
        match k.as_str().as_bytes().first() {
            Some(b'c' | b'k' | b'p' | b't' | b'u') => {
                found.hop_by_hop |= is_hop_by_hop(k);
                found.forwarding |= forwarding && is_forwarding(k);
                // Of the identity names, only `cf-access-*` starts here, and
                // every request has a `cookie`: one comparison, not the list.
                found.identity |= !response && k.as_str().starts_with(CF_ACCESS);
                found.clear_site_data |= response && k == CLEAR_SITE_DATA;
            }
            Some(b'f') => found.forwarding |= forwarding && is_forwarding(k),
            Some(b'r') => found.identity |= !response && is_identity(k),
            Some(b'x') => {
                found.forwarding |= forwarding && is_forwarding(k);
                found.method_override |= !response && is_method_override(k);
                found.identity |= !response && is_identity(k);
            }
            Some(b'a') => {
                found.access_control |= response && k.as_str().starts_with("access-control-");
            }
            _ => {}
        }
    }
    found
}

/// Remove every header whose name satisfies `pred`.
fn remove_all(h: &mut HeaderMap, pred: fn(&HeaderName) -> bool) {
    let names: Vec<HeaderName> = h.keys().filter(|k| pred(k)).cloned().collect();
    for n in names {
        h.remove(n);
    }
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
    remove_all(h, |k| k.as_str().starts_with("proxy-"));
}

/// Whether `peer` is one of `server.trusted_proxies`.
fn is_trusted(config: &Config, peer: Option<std::net::IpAddr>) -> bool {
    peer.is_some_and(|ip| {
        config
            .server
            .trusted_proxies
            .iter()
            .any(|net| net.contains(&ip))
    })
}

pub(super) fn rewrite_request(parts: &mut Parts, fwd: Forwarding<'_>) {
    let peer = fwd.peer.map(|p| p.ip());
    let trusted = is_trusted(fwd.config, peer);
    let h = &mut parts.headers;
    let found = scan(h, !trusted, false);
    if found.hop_by_hop {
        strip_hop_by_hop(h);
    }
    if found.forwarding {
        remove_all(h, is_forwarding);
    }
    if found.method_override {
        remove_all(h, is_method_override);
    }
    if found.identity {
        remove_all(h, is_identity);
    }
    match fwd.upstream_host {
        Some(host) => {
            h.insert(header::HOST, host.clone());
        }
        None => {
            h.remove(header::HOST);
        }
    }
    strip_owned_cookies(h, fwd.owned_cookies);
    // The browser's credentials never pass; the session's token replaces them.
    match fwd.tokens {
        Some(tokens) => set_bearer(h, tokens),
        None => {
            h.remove(header::AUTHORIZATION);
        }
    }

    // X-Forwarded-For: appended to only when the peer is a trusted proxy
    // (from anyone else it was removed above). A trusted proxy's
    // X-Forwarded-Proto/Host and other forwarding headers are kept as sent.
    let prior = if trusted {
        // Every line of the chain, not only the first.
        let lines: Vec<&str> = h
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        (!lines.is_empty()).then(|| lines.join(", "))
    } else {
        None
    };
    let xff = match (prior, peer) {
        (Some(p), Some(ip)) => HeaderValue::from_str(&format!("{p}, {ip}")).ok(),
        (None, Some(ip)) => Some(ip_value(ip)),
        (Some(p), None) => HeaderValue::from_str(&p).ok(),
        (None, None) => None,
    };
    match xff {
        Some(v) => {
            h.insert(X_FORWARDED_FOR, v);
        }
        None => {
            h.remove(&X_FORWARDED_FOR);
        }
    }
    if (!trusted || !h.contains_key(&X_FORWARDED_PROTO))
        && let Some(v) = fwd.forwarded_proto
    {
        h.insert(X_FORWARDED_PROTO, v.clone());
    }
    if (!trusted || !h.contains_key(&X_FORWARDED_HOST))
        && let Some(v) = fwd.forwarded_host
    {
        h.insert(X_FORWARDED_HOST, v.clone());
    }
    h.insert(crate::metrics::X_REQUEST_ID, fwd.request_id.clone());
}

/// The peer address as a header value. IPv4 (the common case) is written
/// digit by digit: `Display` through `fmt` cost more than the rest of the
/// header rewrite.
fn ip_value(ip: std::net::IpAddr) -> HeaderValue {
    let std::net::IpAddr::V4(v4) = ip else {
        return HeaderValue::from_str(&ip.to_string()).unwrap_or(HeaderValue::from_static(""));
    };
    let mut out = bytes::BytesMut::with_capacity(15);
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(b".");
        }
        if octet >= 100 {
            out.extend_from_slice(&[b'0' + octet / 100]);
        }
        if octet >= 10 {
            out.extend_from_slice(&[b'0' + octet / 10 % 10]);
        }
        out.extend_from_slice(&[b'0' + octet % 10]);
    }
    HeaderValue::from_maybe_shared(out.freeze()).unwrap_or(HeaderValue::from_static(""))
}

/// Set `Authorization: Bearer <access token>`, marked sensitive (never
/// logged by hyper): a clone of the value the token is held as.
pub(super) fn set_bearer(h: &mut HeaderMap, tokens: &TokenSet) {
    match tokens.access_token.authorization() {
        Some(v) => {
            h.insert(header::AUTHORIZATION, v.clone());
        }
        // A token that is no header value cannot be sent; the upstream will 401.
        None => {
            h.remove(header::AUTHORIZATION);
        }
    }
}

/// Drop the gateway's cookies from `Cookie`, and every pair whose name
/// could be read as one of them (decoded, case-folded, prefix changed: see
/// `http::is_owned_cookie_lookalike`), so an upstream never receives a
/// planted look-alike and takes it for ours. Other cookies pass, joined
/// into one header.
fn strip_owned_cookies(h: &mut HeaderMap, owned: &[String]) {
    if !h.contains_key(header::COOKIE) {
        return;
    }
    // The kept pairs joined with "; ", built in one buffer.
    let mut kept = bytes::BytesMut::new();
    for value in h.get_all(header::COOKIE) {
        for pair in value.as_bytes().split(|&b| b == b';') {
            let pair = pair.trim_ascii();
            if pair.is_empty() {
                continue;
            }
            // A pair without `=` is a nameless cookie's value; some readers
            // take it for a name, so it is checked as one.
            let name = pair.split(|&b| b == b'=').next().unwrap_or(pair);
            if crate::cookies::is_lookalike(name, owned) {
                continue;
            }
            if !kept.is_empty() {
                kept.extend_from_slice(b"; ");
            }
            kept.extend_from_slice(pair);
        }
    }
    h.remove(header::COOKIE);
    if !kept.is_empty()
        && let Ok(v) = HeaderValue::from_maybe_shared(kept.freeze())
    {
        h.insert(header::COOKIE, v);
    }
}

/// Response hygiene: hop-by-hop headers go; `Access-Control-*` go (the
/// gateway's CORS layer, when configured, is the only one that answers
/// them: an upstream must not open the browser's same-origin policy); and a
/// `Set-Cookie` or `Clear-Site-Data` that could set or clear one of the
/// gateway's cookies goes.
pub(super) fn rewrite_response(h: &mut HeaderMap, owned: &[String]) {
    let found = scan(h, false, true);
    if found.hop_by_hop {
        strip_hop_by_hop(h);
    }
    if found.access_control {
        remove_all(h, |k| k.as_str().starts_with("access-control-"));
    }
    if found.clear_site_data {
        drop_clear_cookies(h);
    }
    if !h.contains_key(header::SET_COOKIE) {
        return;
    }
    let mut dropped = false;
    let kept: Vec<HeaderValue> = h
        .get_all(header::SET_COOKIE)
        .iter()
        .filter(|v| {
            let name = set_cookie_name(v);
            let ours = crate::cookies::is_lookalike(name, owned);
            if ours {
                // The name only (cut short): the value may be a credential.
                tracing::warn!(
                    name = %String::from_utf8_lossy(&name[..name.len().min(64)]),
                    "upstream Set-Cookie dropped: empty name or one of the gateway's cookie names"
                );
            }
            dropped |= ours;
            !ours
        })
        .cloned()
        .collect();
    if !dropped {
        return;
    }
    h.remove(header::SET_COOKIE);
    for v in kept {
        h.append(header::SET_COOKIE, v);
    }
}

/// `Clear-Site-Data` naming `"cookies"` (or `"*"`) would clear the gateway's
/// cookies too (a forced logout by the upstream); such a header goes, other
/// directives (`"cache"`, `"storage"`) pass.
fn drop_clear_cookies(h: &mut HeaderMap) {
    let clears_cookies = h.get_all(&CLEAR_SITE_DATA).iter().any(|v| {
        let v = v.as_bytes().to_ascii_lowercase();
        v.windows(9).any(|w| w == b"\"cookies\"") || v.windows(3).any(|w| w == b"\"*\"")
    });
    if clears_cookies {
        tracing::warn!("upstream Clear-Site-Data dropped: it would clear the gateway's cookies");
        h.remove(&CLEAR_SITE_DATA);
    }
}

/// The cookie name a browser takes from a `Set-Cookie` value: what precedes
/// `=` in the part before the first `;`; without `=` the name is empty (RFC
/// 6265bis 5.6: the whole pair is then the value of a nameless cookie).
fn set_cookie_name(v: &HeaderValue) -> &[u8] {
    let pair = v.as_bytes().split(|&b| b == b';').next().unwrap_or(&[]);
    match pair.iter().position(|&b| b == b'=') {
        Some(eq) => &pair[..eq],
        None => &[],
    }
}

#[cfg(test)]
mod tests;
