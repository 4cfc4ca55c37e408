//! The canonical path against the readings of upstream frameworks: named
//! cases per attack, and property tests that model each reading and demand
//! the gateway either refuses a path or routes it where every reading does.

use std::borrow::Cow;

use proptest::prelude::*;

use super::{canonical, fold_matches};
use crate::{
    config::{Config, RouteConfig, TokenMode},
    routes::RouteTable,
};

fn route(prefix: &str, case_insensitive: bool) -> RouteConfig {
    RouteConfig {
        prefix: prefix.into(),
        upstream: url::Url::parse("http://127.0.0.1:9").expect("url"),
        token: TokenMode::User,
        require_roles: Vec::new(),
        strip_prefix: false,
        timeout: std::time::Duration::from_secs(1),
        security_headers: false,
        case_insensitive,
        check_origin: true,
        tls: Default::default(),
    }
}

fn proxy(prefixes: &[(&str, bool)]) -> RouteTable {
    const MINIMAL: &str = r#"
[server]
public_url = "https://app.example.com"
[oidc]
issuer = "https://idp.example.com"
client_id = "portal"
client_secret = "secret"
[session]
encryption_keys = ["cG9ydGN1bGxpcy10ZXN0LWtleS0wMTIzNDU2Nzg5YWI="]
"#;
    let mut config = Config::from_toml_str(MINIMAL, Vec::new()).expect("config");
    config.routes = prefixes.iter().map(|(p, ci)| route(p, *ci)).collect();
    RouteTable::new(&config)
}

/// The gateway's reading: the matched prefix, `None` unrouted; `Err` refused.
fn gateway(proxy: &RouteTable, raw: &str) -> Result<Option<String>, ()> {
    let path = canonical(raw).map_err(|_| ())?;
    let route = proxy.route_for(&path).map_err(|_| ())?;
    Ok(route.map(|r| r.prefix.clone()))
}

#[test]
fn plain_paths_are_borrowed_unchanged() {
    for p in [
        "/",
        "/api/",
        "/api/x",
        "/api/a.b/c..d/...",
        "/api/x~y_z-1",
        "/a:b@c!$&'()*+,=",
        "/api/.well-known/x",
    ] {
        assert!(matches!(canonical(p), Ok(Cow::Borrowed(_))), "{p}");
    }
}

#[test]
fn unreserved_escapes_are_decoded_and_other_hex_upper_cased() {
    for (raw, want) in [
        ("/api/%61bc", "/api/abc"),
        ("/api/%7e%2D%5f%2e%41", "/api/~-_.A"),
        ("/api/a%20b%3f", "/api/a%20b%3F"),
        ("/api/caf%c3%a9", "/api/caf%C3%A9"),
        ("/api/100%25", "/api/100%25"),
        ("/api/%25zz", "/api/%25zz"),
    ] {
        assert_eq!(canonical(raw).as_deref(), Ok(want), "{raw}");
    }
}

/// Attack: `%25u0061` reaches the upstream as `%u0061`, which a second
/// decoder with `%uXXXX` escapes (.NET's `HttpUtility.UrlDecode`) reads as
/// `a`: `/api/%25u0061dmin/x` would be routed to `/api/` by the gateway and
/// to `/api/admin/x` by the upstream, without the admin route's roles.
#[test]
fn double_decoding_with_percent_u_escapes_is_refused() {
    let p = proxy(&[("/api/", false), ("/api/admin/", false)]);
    for bad in [
        "/api/%25u0061dmin/x",
        "/api/%25U0061dmin/x",
        "/api/%25%750061dmin/x",
        "/api/x/%25u002e%25u002e/admin/x",
        "/api%25u002fadmin/x",
    ] {
        assert_eq!(gateway(&p, bad), Err(()), "{bad}");
    }
}

#[test]
fn every_ambiguous_spelling_is_refused() {
    for bad in [
        // Dot segments, raw, encoded, double-encoded, mixed.
        "/api/../admin",
        "/api/%2e%2e/admin",
        "/api/%2E./admin",
        "/api/.%2e",
        "/api/%252e%252e/admin",
        "/api/%25%32%65",
        "/api/./x",
        "/api/.",
        "/..",
        "/.",
        // Encoded separators.
        "/api%2fadmin/x",
        "/api%2Fadmin/x",
        "/api%5cadmin/x",
        "/api/x%3b/admin",
        // Raw separators frameworks read differently.
        "/api\\admin/x",
        "/api/admin;x=y/x",
        "/api/x/..;/admin/x",
        "/api/;/admin",
        // Empty segments.
        "/api//admin/x",
        "//api/admin",
        "/api/x//",
        // Malformed, non-UTF-8, control characters, raw non-ASCII.
        "/api/%zz",
        "/api/%2",
        "/api/%",
        "/api/%c3",
        "/api/%ff",
        "/api/%c3%28",
        "/api/x%00",
        "/api/x%0a",
        "/api/x%7F",
        "/api/x\0",
        "/api/caf\u{e9}",
        // Not a path.
        "",
        "*",
        "api/x",
    ] {
        assert!(canonical(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn fold_matches_ignores_ascii_case_and_treats_non_ascii_as_any_letter() {
    assert!(fold_matches("/api/admin/", "/api/ADMIN/x"));
    assert!(fold_matches("/api/admin/", "/Api/Admin"));
    assert!(fold_matches("/api/admin/", "/api/adm%C4%B1n/x"));
    assert!(fold_matches("/k/", "/%E2%84%AA/x"));
    assert!(!fold_matches("/api/admin/", "/api/adminx"));
    assert!(!fold_matches("/api/admin/", "/api/adm%C4%B1/x"));
    assert!(!fold_matches("/api/admin", "/api/adminx"));
    assert!(fold_matches("/api/admin", "/API/ADMIN"));
    assert!(!fold_matches("/a-b/", "/a%C3%A9b/"));
}

#[test]
fn uppercase_admin_prefix_is_refused_unless_route_is_case_insensitive() {
    let p = proxy(&[("/api/", false), ("/api/admin/", false), ("/", false)]);
    assert_eq!(gateway(&p, "/api/ADMIN/x"), Err(()));
    assert_eq!(gateway(&p, "/API/admin/x"), Err(()));
    assert_eq!(gateway(&p, "/API/other"), Err(()));
    assert_eq!(gateway(&p, "/api/adm%C4%B1n/x"), Err(()));
    assert_eq!(gateway(&p, "/api/Other"), Ok(Some("/api/".into())));
    assert_eq!(gateway(&p, "/api/admin/x"), Ok(Some("/api/admin/".into())));
    assert_eq!(
        gateway(&p, "/api/%61dmin/x"),
        Ok(Some("/api/admin/".into()))
    );
    assert_eq!(gateway(&p, "/Static/x"), Ok(Some("/".into())));
    // Older Spring MVC reads `/api/admin.json` as `/api/admin`.
    assert_eq!(gateway(&p, "/api/admin.json"), Err(()));
    assert_eq!(gateway(&p, "/api/ADMIN.json"), Err(()));
    assert_eq!(gateway(&p, "/api/admin.json/x"), Ok(Some("/api/".into())));
    assert_eq!(gateway(&p, "/api/administrators"), Ok(Some("/api/".into())));

    let p = proxy(&[("/api/", false), ("/api/admin/", true)]);
    assert_eq!(gateway(&p, "/api/ADMIN/x"), Ok(Some("/api/admin/".into())));
    assert_eq!(gateway(&p, "/api/Admin"), Ok(Some("/api/admin/".into())));
    assert_eq!(gateway(&p, "/api/x"), Ok(Some("/api/".into())));
    // Unrouted paths must not fold onto a case-sensitive route either.
    let p = proxy(&[("/api/", false)]);
    assert_eq!(gateway(&p, "/API/x"), Err(()));
    assert_eq!(gateway(&p, "/app/x"), Ok(None));
}

// --- Models of upstream readings, each a plain function of the forwarded path.

fn percent_decode(s: &str) -> Option<String> {
    decode(s, false)
}

/// `%XX` escapes, and with `u_escapes` also `%uXXXX` (a UTF-16 unit, as
/// .NET's `HttpUtility.UrlDecode` reads them). `None` when one is malformed.
fn decode(s: &str, u_escapes: bool) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && u_escapes && matches!(b.get(i + 1), Some(b'u' | b'U')) {
            let hex = std::str::from_utf8(b.get(i + 2..i + 6)?).ok()?;
            let c = char::from_u32(u32::from_str_radix(hex, 16).ok()?)?;
            out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
            i += 6;
        } else if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// .NET's `HttpUtility.UrlDecode`: `%XX` and also `%uXXXX`.
fn percent_u_decode(s: &str) -> Option<String> {
    decode(s, true)
}

/// Tomcat / Spring: `;params` dropped from every segment.
fn strip_params(s: &str) -> String {
    s.split('/')
        .map(|seg| seg.split(';').next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("/")
}

/// nginx, Werkzeug (`merge_slashes`), Go's `path.Clean`.
fn collapse_slashes(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if !(c == '/' && out.ends_with('/')) {
            out.push(c);
        }
    }
    out
}

/// RFC 3986 section 5.2.4, as nginx, Go and browsers do.
fn resolve_dots(s: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let segs: Vec<&str> = s.split('/').skip(1).collect();
    for (i, seg) in segs.iter().enumerate() {
        let last = i + 1 == segs.len();
        match *seg {
            "." => {
                if last {
                    out.push("");
                }
            }
            ".." => {
                out.pop();
                if last {
                    out.push("");
                }
            }
            seg => out.push(seg),
        }
    }
    format!("/{}", out.join("/"))
}

/// IIS and some Windows-hosted stacks read `\` as `/`.
fn backslash_as_slash(s: &str) -> String {
    s.replace('\\', "/")
}

/// Spring MVC before 5.3: `/x.json` matches the handler of `/x`.
fn strip_suffix_pattern(s: &str) -> String {
    let (dir, last) = s.rsplit_once('/').unwrap_or(("", s));
    match last.split_once('.') {
        Some((stem, _)) if !stem.is_empty() => format!("{dir}/{stem}"),
        _ => s.to_string(),
    }
}

/// .NET `OrdinalIgnoreCase`: simple upper-case mapping per character.
fn dotnet_upper(s: &str) -> String {
    s.chars()
        .map(|c| {
            let mut up = c.to_uppercase();
            match (up.next(), up.next()) {
                (Some(u), None) => u,
                _ => c,
            }
        })
        .collect()
}

/// Every reading of `path` (the forwarded, canonical one): its effective
/// path and whether its router ignores case. `None` readings reject the
/// path outright (e.g. malformed after a second decoding).
fn readings(path: &str) -> Vec<(&'static str, Option<String>, bool)> {
    let decoded = percent_decode(path);
    let full = decoded
        .as_deref()
        .map(|d| resolve_dots(&collapse_slashes(&strip_params(&backslash_as_slash(d)))));
    vec![
        (
            "raw (Express path-to-regexp)",
            Some(path.to_string()),
            false,
        ),
        (
            "raw, case-insensitive (Express)",
            Some(path.to_string()),
            true,
        ),
        ("decoded (Django, Go, FastAPI)", decoded.clone(), false),
        (
            "params stripped, then decoded (Tomcat)",
            percent_decode(&strip_params(path)),
            false,
        ),
        (
            "decoded, then params stripped (Spring)",
            decoded.as_deref().map(strip_params),
            false,
        ),
        (
            "decoded, suffix pattern (Spring MVC < 5.3)",
            decoded.as_deref().map(strip_suffix_pattern),
            false,
        ),
        (
            "decoded, slashes merged (Werkzeug)",
            decoded.as_deref().map(collapse_slashes),
            false,
        ),
        (
            "decoded, dots resolved (nginx)",
            decoded.as_deref().map(resolve_dots),
            false,
        ),
        ("everything (nginx + IIS + Tomcat)", full, false),
        (
            "decoded, upper-cased (ASP.NET)",
            decoded.as_deref().map(dotnet_upper),
            true,
        ),
        (
            "decoded, lower-cased (Python lower())",
            decoded.as_deref().map(str::to_lowercase),
            true,
        ),
        (
            "decoded twice",
            decoded.as_deref().and_then(percent_decode),
            false,
        ),
        (
            "decoded, then again with %u escapes (.NET HttpUtility.UrlDecode)",
            decoded.as_deref().and_then(percent_u_decode),
            false,
        ),
    ]
}

/// A plain router: longest prefix on segment boundaries.
fn model_route(prefixes: &[&str], path: &str, ignore_case: bool) -> Option<String> {
    let fold = |s: &str| {
        if ignore_case {
            dotnet_upper(s).to_lowercase()
        } else {
            s.to_string()
        }
    };
    let path = fold(path);
    let mut sorted: Vec<&str> = prefixes.to_vec();
    sorted.sort_by_key(|p| std::cmp::Reverse(p.len()));
    sorted
        .into_iter()
        .find(|p| {
            let p = fold(p);
            if p.ends_with('/') {
                path.starts_with(&p) || path == p.trim_end_matches('/')
            } else {
                path == p || path.strip_prefix(&p).is_some_and(|r| r.starts_with('/'))
            }
        })
        .map(str::to_string)
}

const TABLES: &[&[&str]] = &[
    &["/api/", "/api/admin/", "/"],
    &["/api/", "/api/admin/"],
    &["/api", "/api/admin", "/static/"],
    &["/api/", "/api/ad/", "/api/admin/x/"],
    &["/", "/s/", "/api/s/", "/k/"],
];

const TOKENS: &[&str] = &[
    "/",
    "/",
    "/",
    ".",
    "..",
    ";",
    "%",
    "2",
    "5",
    "e",
    "E",
    "f",
    "F",
    "c",
    "C",
    "a",
    "A",
    "d",
    "D",
    "m",
    "M",
    "i",
    "I",
    "n",
    "N",
    "s",
    "k",
    "x",
    "\\",
    "api",
    "API",
    "admin",
    "ADMIN",
    "%2e",
    "%2E",
    "%2f",
    "%2F",
    "%25",
    "%5c",
    "%5C",
    "%3b",
    "%61",
    "%41",
    "%64",
    "%C4%B1",
    "%C4%B0",
    "%C5%BF",
    "%E2%84%AA",
    "%00",
    "//",
    "u",
    "%25u",
    "%25u0061",
    "%25u002e",
    "%25u002f",
    "0061",
];

fn path_strategy() -> impl Strategy<Value = String> {
    (
        prop::sample::select(vec!["/", "/api/", "/api/admin/", "/API/", "", "/api"]),
        prop::collection::vec(prop::sample::select(TOKENS.to_vec()), 0..10),
    )
        .prop_map(|(start, tokens)| format!("{start}{}", tokens.concat()))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    /// Accepted paths are routed where every upstream reading of the
    /// forwarded path routes them.
    #[test]
    fn accepted_paths_route_as_every_upstream_reads_them(
        table in prop::sample::select(TABLES.to_vec()),
        raw in path_strategy(),
    ) {
        let prefixes: Vec<(&str, bool)> = table.iter().map(|p| (*p, false)).collect();
        let p = proxy(&prefixes);
        let Ok(path) = canonical(&raw) else { return Ok(()) };
        let Ok(picked) = p.route_for(&path) else { return Ok(()) };
        let picked = picked.map(|r| r.prefix.clone());
        // The canonical form is stable and valid in a URI.
        let again = canonical(&path);
        prop_assert_eq!(again.as_deref(), Ok(&*path));
        prop_assert!(http::uri::PathAndQuery::try_from(&*path).is_ok(), "{}", path);
        for (name, reading, ignore_case) in readings(&path) {
            let Some(reading) = reading else { continue };
            let theirs = model_route(table, &reading, ignore_case);
            prop_assert_eq!(
                &theirs, &picked,
                "{} read {:?} (raw {:?}) as {:?}", name, path, raw, reading
            );
        }
    }

    /// A second pass changes nothing, and nothing panics on arbitrary input.
    #[test]
    fn canonical_never_panics_and_is_idempotent(raw in any::<String>()) {
        if let Ok(path) = canonical(&raw) {
            let again = canonical(&path);
        prop_assert_eq!(again.as_deref(), Ok(&*path));
        }
        let _ = fold_matches("/api/admin/", &raw);
    }

    #[test]
    fn canonical_never_panics_on_path_like_bytes(
        raw in "[/.;%25eEfFcCaAdDmMiInN\\\\x\u{e9}\0]{0,24}",
    ) {
        if let Ok(path) = canonical(&raw) {
            let again = canonical(&path);
        prop_assert_eq!(again.as_deref(), Ok(&*path));
        }
    }
}
