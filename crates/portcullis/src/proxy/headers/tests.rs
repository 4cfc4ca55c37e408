//! Header hygiene: the predicates, the one-pass scan and the rewrites.

use super::*;

#[test]
fn the_bearer_sent_is_the_buffer_the_session_holds_its_token_in() {
    let tokens = TokenSet {
        access_token: "at-1".into(),
        refresh_token: None,
        id_token: None,
        access_expires_at: None,
    };
    let mut h = HeaderMap::new();
    h.insert(
        header::AUTHORIZATION,
        HeaderValue::from_static("Basic browser"),
    );
    set_bearer(&mut h, &tokens);
    let sent = &h[header::AUTHORIZATION];
    assert_eq!(sent, "Bearer at-1");
    assert!(sent.is_sensitive());
    // Not a copy: a session that served requests holds its token once.
    let token = tokens.access_token.as_str();
    assert_eq!(sent.as_bytes()["Bearer ".len()..].as_ptr(), token.as_ptr());
    // A token that cannot be a header value is not sent, nor is the browser's.
    let odd = TokenSet {
        access_token: "at\n2".into(),
        ..tokens.clone()
    };
    set_bearer(&mut h, &odd);
    assert!(h.get(header::AUTHORIZATION).is_none());
}

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
fn peer_addresses_format_as_display_does() {
    for ip in [
        "0.0.0.0",
        "127.0.0.1",
        "10.20.30.40",
        "192.168.100.9",
        "255.255.255.255",
        "1.2.3.4",
        "::1",
        "2001:db8::8a2e:370:7334",
    ] {
        let parsed: std::net::IpAddr = ip.parse().unwrap();
        assert_eq!(ip_value(parsed), parsed.to_string().as_str(), "{ip}");
    }
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

#[test]
fn lookalike_cookies_are_stripped_before_the_upstream() {
    let mut h = HeaderMap::new();
    h.insert(
        header::COOKIE,
        HeaderValue::from_static(
            "__Host%2Dportcullis=planted; __host-portcullis=p2; theme=dark; portcullis=p3",
        ),
    );
    h.append(
        header::COOKIE,
        HeaderValue::from_static("=nameless; __Host-portcullis=ours; app=1"),
    );
    strip_owned_cookies(&mut h, &["__Host-portcullis".into()]);
    assert_eq!(h.get(header::COOKIE).unwrap(), "theme=dark; app=1");
}

#[test]
fn upstream_set_cookie_lookalikes_and_nameless_are_dropped() {
    let mut h = HeaderMap::new();
    for v in [
        "__host-portcullis=x; Path=/",
        "__Host%2Dportcullis=x; Path=/",
        " portcullis=x",
        "=x; Path=/",
        "nameless; Path=/",
        "__Secure-XSRF-TOKEN=t",
        "app=1; Path=/",
    ] {
        h.append(header::SET_COOKIE, HeaderValue::from_static(v));
    }
    rewrite_response(&mut h, &["__Host-portcullis".into(), "XSRF-TOKEN".into()]);
    let all: Vec<_> = h.get_all(header::SET_COOKIE).iter().collect();
    assert_eq!(all, vec![HeaderValue::from_static("app=1; Path=/")]);
}

#[test]
fn upstream_access_control_headers_are_removed() {
    let mut h = HeaderMap::new();
    h.insert("access-control-allow-origin", HeaderValue::from_static("*"));
    h.insert(
        "access-control-allow-credentials",
        HeaderValue::from_static("true"),
    );
    h.insert("content-type", HeaderValue::from_static("text/plain"));
    rewrite_response(&mut h, &[]);
    assert_eq!(h.len(), 1, "{h:?}");
}

/// One name of every family [`is_identity`] names.
const IDENTITY_NAMES: [&str; 20] = [
    "x-auth-request-user",
    "x-auth-request-email",
    "x-forwarded-user",
    "x-forwarded-email",
    "x-forwarded-preferred-username",
    "x-forwarded-groups",
    "x-forwarded-access-token",
    "x-consumer-username",
    "x-ms-client-principal-name",
    "x-ms-token-aad-access-token",
    "x-goog-authenticated-user-email",
    "x-amzn-oidc-identity",
    "x-pomerium-jwt-assertion",
    "cf-access-authenticated-user-email",
    "x-vouch-user",
    "remote-user",
    "x-remote-user",
    "x-webauth-user",
    "x-authenticated-userid",
    "x-goog-iap-jwt-assertion",
];

#[test]
fn forwarding_header_names() {
    for n in [
        "forwarded",
        "x-real-ip",
        "x-forwarded-for",
        "x-forwarded-port",
        "x-forwarded-prefix",
        "x-original-url",
        "x-rewrite-url",
        "x-original-host",
        "x-host",
        "true-client-ip",
        "x-original-forwarded-for",
        "x-original-method",
        "x-scheme",
        "x-url-scheme",
        "front-end-https",
        "client-ip",
        "x-envoy-external-address",
        "x-ssl",
        "x-ssl-client-cert",
        "x-arr-ssl",
        "x-arr-clientcert",
        "x-client-cert",
        "x-forwarded-client-cert",
    ] {
        assert!(is_forwarding(&HeaderName::from_static(n)), "{n}");
    }
    for n in IDENTITY_NAMES {
        assert!(is_identity(&HeaderName::from_static(n)), "{n}");
    }
    for n in ["x-user-agent", "remote-addr", "x-request-id", "user-agent"] {
        assert!(!is_identity(&HeaderName::from_static(n)), "{n}");
    }
    for n in [
        "x-http-method-override",
        "x-http-method",
        "x-method-override",
    ] {
        assert!(is_method_override(&HeaderName::from_static(n)), "{n}");
    }
    for n in [
        "x-request-id",
        "host",
        "cookie",
        "x-forwarded",
        "traceparent",
    ] {
        assert!(!is_forwarding(&HeaderName::from_static(n)), "{n}");
    }
}

/// The first-letter shortcut of `scan` finds every name the predicates do.
#[test]
fn scan_agrees_with_the_predicates() {
    let hop = HOP_BY_HOP;
    let names = hop.iter().map(|n| n.as_str().to_string()).chain(
        [
            "proxy-foo",
            "forwarded",
            "x-real-ip",
            "x-forwarded-for",
            "x-forwarded-anything",
            "x-original-url",
            "x-original-uri",
            "x-rewrite-url",
            "x-original-host",
            "x-host",
            "x-client-ip",
            "true-client-ip",
            "x-cluster-client-ip",
            "cf-connecting-ip",
            "fastly-client-ip",
            "x-original-forwarded-for",
            "x-scheme",
            "x-url-scheme",
            "front-end-https",
            "client-ip",
            "x-envoy-external-address",
            "x-http-method-override",
            "x-http-method",
            "x-method-override",
            "x-ssl",
            "x-arr-clientcert",
            "access-control-allow-origin",
            "accept",
            "cookie",
            "host",
            "user-agent",
            "x-request-id",
        ]
        .map(String::from),
    );
    for name in names.chain(IDENTITY_NAMES.map(String::from)) {
        let k = HeaderName::try_from(name.as_str()).unwrap();
        let mut h = HeaderMap::new();
        h.insert(k.clone(), HeaderValue::from_static("1"));
        let found = scan(&h, true, true);
        assert_eq!(found.hop_by_hop, is_hop_by_hop(&k), "{name}");
        assert_eq!(found.forwarding, is_forwarding(&k), "{name}");
        assert!(!found.method_override, "responses: {name}");
        assert!(!found.identity, "responses: {name}");
        assert_eq!(
            found.access_control,
            name.starts_with("access-control-"),
            "{name}"
        );
        let found = scan(&h, false, false);
        assert!(!found.forwarding, "trusted peer: {name}");
        assert_eq!(found.method_override, is_method_override(&k), "{name}");
        assert_eq!(found.identity, is_identity(&k), "trusted peer: {name}");
    }
}

#[test]
fn upstream_clear_site_data_cannot_clear_gateway_cookies() {
    for (value, kept) in [
        ("\"cookies\"", false),
        ("\"cache\", \"COOKIES\"", false),
        ("\"*\"", false),
        ("\"cache\", \"storage\"", true),
    ] {
        let mut h = HeaderMap::new();
        h.insert("clear-site-data", HeaderValue::from_static(value));
        rewrite_response(&mut h, &[]);
        assert_eq!(h.contains_key("clear-site-data"), kept, "{value}");
    }
}

#[test]
fn trusted_chain_keeps_every_x_forwarded_for_line() {
    let config = Config::from_toml_str(
        r#"
[server]
public_url = "https://app.example.com"
trusted_proxies = ["10.0.0.0/8"]
[oidc]
issuer = "https://idp.example.com"
client_id = "c"
client_secret = "s"
[session]
store = "memory"
"#,
        Vec::new(),
    )
    .expect("config");
    let rewrite = |peer: &str| {
        let mut req = http::Request::new(());
        let h = req.headers_mut();
        h.append(&X_FORWARDED_FOR, HeaderValue::from_static("1.1.1.1"));
        h.append(&X_FORWARDED_FOR, HeaderValue::from_static("2.2.2.2"));
        h.insert("x-real-ip", HeaderValue::from_static("1.1.1.1"));
        let (mut parts, ()) = req.into_parts();
        let id = HeaderValue::from_static("id");
        rewrite_request(
            &mut parts,
            Forwarding {
                config: &config,
                owned_cookies: &[],
                forwarded_proto: None,
                forwarded_host: None,
                peer: Some(SocketAddr::new(peer.parse().unwrap(), 1)),
                tokens: None,
                request_id: &id,
                upstream_host: None,
            },
        );
        parts.headers
    };
    let trusted = rewrite("10.1.2.3");
    assert_eq!(trusted[&X_FORWARDED_FOR], "1.1.1.1, 2.2.2.2, 10.1.2.3");
    assert_eq!(trusted["x-real-ip"], "1.1.1.1");
    let untrusted = rewrite("192.0.2.1");
    assert_eq!(untrusted[&X_FORWARDED_FOR], "192.0.2.1");
    assert!(!untrusted.contains_key("x-real-ip"));
}
