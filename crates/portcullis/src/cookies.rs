//! The cookies the gateway owns: session, login-in-flight and CSRF, with the
//! attributes of the active profile (`__Host-`, Secure, HttpOnly, SameSite),
//! and how they are read back.
//!
//! Reading is exact: an owned cookie's name matches byte for byte (after the
//! optional whitespace around a pair), never after percent-decoding or case
//! folding. A browser enforces the `__Host-` prefix on the literal name only,
//! so a sibling subdomain can plant `__Host%2Dportcullis`; a reader that
//! decoded names would take it for ours. [`is_lookalike`] is the opposite,
//! wide rule for what must never cross the gateway in either direction.

use std::borrow::Cow;

use axum_extra::extract::cookie::{Cookie, SameSite};
use http::{HeaderMap, header};

use crate::config::Config;

/// Two different values for one owned cookie in a request: refused, never
/// guessed (a sibling subdomain can toss a second cookie of the same name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the request carries two different {0} cookies")]
pub(crate) struct AmbiguousCookie(pub &'static str);

/// The value of the cookie named exactly `name` in the request's `Cookie`
/// headers; `what` names it in the error. The value is read as before
/// (trimmed, percent-decoded when it has an escape; a pair whose value does
/// not decode is ignored). Values `well_formed` refuses are ignored too: a
/// cookie tossed in from a sibling domain with a value the gateway never
/// issues is noise, not a rival. The same value twice is fine; two different
/// well-formed ones are an [`AmbiguousCookie`]. No allocation unless a
/// matching value has an escape.
pub(crate) fn find_exact<'h>(
    headers: &'h HeaderMap,
    name: &str,
    what: &'static str,
    well_formed: fn(&str) -> bool,
) -> Result<Option<Cow<'h, str>>, AmbiguousCookie> {
    let mut found: Option<Cow<'h, str>> = None;
    for value in exact_values(headers, name).filter(|v| well_formed(v)) {
        match &found {
            Some(prev) if *prev != value => return Err(AmbiguousCookie(what)),
            Some(_) => {}
            None => found = Some(value),
        }
    }
    Ok(found)
}

/// Every distinct well-formed value of the cookie named exactly `name` (see
/// [`find_exact`]), in request order. Allocates: for the rare requests that
/// must look at all of them (the login callback).
pub(crate) fn all_exact(
    headers: &HeaderMap,
    name: &str,
    well_formed: fn(&str) -> bool,
) -> Vec<String> {
    let mut all: Vec<String> = Vec::new();
    for value in exact_values(headers, name).filter(|v| well_formed(v)) {
        if !all.iter().any(|v| *v == value) {
            all.push(value.into_owned());
        }
    }
    all
}

/// The values of every pair named exactly `name`, read as [`find_exact`]
/// describes.
fn exact_values<'h>(headers: &'h HeaderMap, name: &str) -> impl Iterator<Item = Cow<'h, str>> {
    pairs(headers).filter_map(move |(n, v)| (n == name.as_bytes()).then_some(v))
}

/// Every distinct `(name, value)` pair whose name is `prefix` followed by a
/// suffix `suffix_ok` accepts (the login cookies: one per pending login), in
/// request order, values read and filtered as in [`find_exact`]. Allocates:
/// only the login endpoints look at these.
pub(crate) fn family(
    headers: &HeaderMap,
    prefix: &str,
    suffix_ok: fn(&[u8]) -> bool,
    well_formed: fn(&str) -> bool,
) -> Vec<(String, String)> {
    let mut all: Vec<(String, String)> = Vec::new();
    for (name, value) in pairs(headers) {
        let Some(suffix) = name.strip_prefix(prefix.as_bytes()) else {
            continue;
        };
        if !suffix_ok(suffix) || !well_formed(&value) {
            continue;
        }
        // The prefix is a `str` and the suffix was checked: UTF-8.
        let Ok(name) = std::str::from_utf8(name) else {
            continue;
        };
        if !all.iter().any(|(n, v)| n == name && *v == value) {
            all.push((name.to_string(), value.into_owned()));
        }
    }
    all
}

/// Every `name=value` pair of the request's `Cookie` headers: the name as
/// sent (whitespace around it trimmed), the value trimmed and
/// percent-decoded when it has an escape (a pair whose value does not decode
/// is skipped).
fn pairs<'h>(headers: &'h HeaderMap) -> impl Iterator<Item = (&'h [u8], Cow<'h, str>)> {
    headers
        .get_all(header::COOKIE)
        .into_iter()
        .flat_map(|value| value.as_bytes().split(|&b| b == b';'))
        .filter_map(|pair| {
            let eq = pair.iter().position(|&b| b == b'=')?;
            let name = trim_ows(&pair[..eq]);
            let raw = std::str::from_utf8(trim_ows(&pair[eq + 1..])).ok()?;
            let value = if raw.contains('%') {
                Cow::Owned(String::from_utf8(percent_decode(raw.as_bytes())).ok()?)
            } else {
                Cow::Borrowed(raw)
            };
            Some((name, value))
        })
}

/// Optional whitespace around a name or value (RFC 6265 `OWS`).
fn trim_ows(b: &[u8]) -> &[u8] {
    let start = b.iter().position(|&c| c != b' ' && c != b'\t');
    let Some(start) = start else {
        return &[];
    };
    let end = b
        .iter()
        .rposition(|&c| c != b' ' && c != b'\t')
        .unwrap_or(start);
    &b[start..=end]
}

/// Whether a cookie name (as sent or as an upstream sets it) is, or could be
/// read as, one of `owned` (an entry ending in [`FAMILY`] stands for its stem
/// and every `<stem>-…` name): equal after trimming, percent-decoding (repeated,
/// so double encoding does not hide it), ASCII case folding and dropping a
/// `__Host-`/`__Secure-` prefix on either side. An empty name counts too: a
/// nameless cookie is sent as a bare value, which some readers take for a
/// name. Allocates only for a name with an escape.
pub(crate) fn is_lookalike(name: &[u8], owned: &[String]) -> bool {
    let name = trim_ows(name);
    if name.is_empty() {
        return true;
    }
    if matches_family(name, owned) {
        return true;
    }
    if !name.contains(&b'%') {
        return false;
    }
    let mut decoded: Vec<u8> = name.to_vec();
    // Bounded: each round that changes anything shortens the name.
    for _ in 0..4 {
        let next: Vec<u8> = percent_decode(&decoded);
        if next == decoded {
            break;
        }
        decoded = next;
        let trimmed = trim_ows(&decoded);
        if trimmed.is_empty() || matches_family(trimmed, owned) {
            return true;
        }
    }
    false
}

fn matches_family(name: &[u8], owned: &[String]) -> bool {
    let name = strip_prefix(name);
    owned.iter().any(|o| {
        if let Some(stem) = o.strip_suffix(FAMILY) {
            // A family: the stem itself or the stem, `-` and anything.
            let stem = strip_prefix(stem.as_bytes());
            return name.len() >= stem.len()
                && name[..stem.len()].eq_ignore_ascii_case(stem)
                && (name.len() == stem.len() || name[stem.len()] == b'-');
        }
        let o = o.as_bytes();
        // The length first: an owned name is `name` plus no prefix, `__Host-`
        // or `__Secure-`; most cookies fail here without a byte compared.
        [0, 7, 9].iter().any(|p| o.len() == name.len() + p)
            && strip_prefix(o).eq_ignore_ascii_case(name)
    })
}

/// `name` without a leading `__Host-` or `__Secure-` (any case).
fn strip_prefix(name: &[u8]) -> &[u8] {
    // Most names start otherwise: one comparison for them.
    if !name.starts_with(b"__") {
        return name;
    }
    for p in [b"__host-".as_slice(), b"__secure-".as_slice()] {
        if name.len() >= p.len() && name[..p.len()].eq_ignore_ascii_case(p) {
            return &name[p.len()..];
        }
    }
    name
}

/// `%XX` escapes decoded; a `%` not followed by two hex digits stays.
fn percent_decode(b: &[u8]) -> Vec<u8> {
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let (Some(hi), Some(lo)) = (
                b.get(i + 1).copied().and_then(hex),
                b.get(i + 2).copied().and_then(hex),
            )
        {
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

/// Marks an entry of [`owned_names`] as a family of names (see [`is_lookalike`]).
const FAMILY: &str = "-*";

/// Start of the names of the short-lived cookies that bind logins to this
/// browser, one per pending login: `<session cookie>-login-`.
pub(crate) fn login_cookie_prefix(config: &Config) -> String {
    format!("{}-login-", config.session.cookie_name)
}

/// Name of the login cookie for `state`: the prefix and 8 hex digits of SHA-256(state).
pub(crate) fn login_cookie_name(config: &Config, state: &str) -> String {
    format!(
        "{}{}",
        login_cookie_prefix(config),
        crate::login_cookie::name_suffix(state)
    )
}

/// Every cookie name the gateway owns (stripped before proxying, never set
/// by an upstream): the session and CSRF cookies and the whole login family
/// (`<session cookie>-login` of older versions and every `-login-…`).
pub(crate) fn owned_names(config: &Config) -> [String; 3] {
    [
        config.session.cookie_name.clone(),
        format!("{}-login{FAMILY}", config.session.cookie_name),
        config.csrf.cookie.clone(),
    ]
}

fn base(config: &Config, name: String, value: String, http_only: bool) -> Cookie<'static> {
    let mut c = Cookie::new(name, value);
    c.set_path("/");
    c.set_http_only(http_only);
    c.set_secure(config.secure_cookies());
    c.set_same_site(SameSite::Lax);
    c
}

pub(crate) fn session(config: &Config, value: &str) -> Cookie<'static> {
    let mut c = base(
        config,
        config.session.cookie_name.clone(),
        value.to_string(),
        true,
    );
    c.set_max_age(max_age(config.session.absolute_timeout.as_secs() as i64));
    c
}

/// The login cookie `name` (see [`login_cookie_name`]).
pub(crate) fn login(config: &Config, name: String, value: &str) -> Cookie<'static> {
    let mut c = base(config, name, value.to_string(), true);
    c.set_max_age(max_age(crate::login_cookie::LOGIN_TTL));
    c
}

/// The CSRF cookie is readable by JavaScript on purpose: the SPA echoes it in a header.
pub(crate) fn csrf(config: &Config, value: &str) -> Cookie<'static> {
    let mut c = base(config, config.csrf.cookie.clone(), value.to_string(), false);
    c.set_max_age(max_age(config.session.absolute_timeout.as_secs() as i64));
    c
}

/// A cookie that deletes `name` (same attributes, empty, Max-Age=0).
pub(crate) fn removal(config: &Config, name: String, http_only: bool) -> Cookie<'static> {
    let mut c = base(config, name, String::new(), http_only);
    c.set_max_age(max_age(0));
    c
}

/// Removals of copies of the gateway's cookies that a sibling or child
/// host could have scoped to a domain (`Domain=example.com` is sent to
/// `app.example.com` too): one per owned name without the `__Host-` prefix
/// (a browser never stores such a name with `Domain`) and per domain in
/// [`parent_domains`] of `server.public_url`. Only `Path=/` copies can be
/// reached this way. Send them *before* the new host-only cookies: some
/// browsers key a host-only cookie and a `Domain=<host>` one alike. Login
/// cookies are not among them: a planted one is never read in place of ours
/// (the callback tries every value of its name).
pub(crate) fn planted_copy_removals(config: &Config) -> Vec<Cookie<'static>> {
    let Some(url::Host::Domain(host)) = config.server.public_url.host() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (name, http_only) in [
        (config.session.cookie_name.clone(), true),
        (config.csrf.cookie.clone(), false),
    ] {
        if name.starts_with("__Host-") {
            continue;
        }
        for domain in parent_domains(host) {
            let mut c = removal(config, name.clone(), http_only);
            c.set_domain(domain.to_string());
            out.push(c);
        }
    }
    out
}

/// `host` and each parent domain of it that still has two labels
/// (`app.example.com`, `example.com`; not `com`, not a single-label host).
/// A public suffix of two labels (`co.uk`) is listed too; browsers ignore a
/// `Domain` attribute naming one.
pub(crate) fn parent_domains(host: &str) -> impl Iterator<Item = &str> {
    let host = host.trim_end_matches('.');
    std::iter::successors(Some(host), |d| d.split_once('.').map(|(_, rest)| rest))
        .filter(|d| d.contains('.') && !d.starts_with('.') && !d.ends_with('.'))
}

fn max_age(secs: i64) -> cookie::time::Duration {
    cookie::time::Duration::seconds(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(profile: &str, public_url: &str) -> Config {
        let toml = format!(
            r#"
[server]
public_url = "{public_url}"
profile = "{profile}"
[oidc]
issuer = "https://idp.example.com"
client_id = "c"
client_secret = "s"
[session]
store = "memory"
"#
        );
        Config::from_toml_str(&toml, Vec::new()).expect("valid config")
    }

    #[test]
    fn prod_session_cookie_is_host_prefixed_secure_httponly_lax() {
        let c = session(&config("prod", "https://app.example.com"), "v").to_string();
        assert!(c.starts_with("__Host-portcullis=v"), "{c}");
        for attr in ["HttpOnly", "Secure", "SameSite=Lax", "Path=/"] {
            assert!(c.contains(attr), "{attr} missing: {c}");
        }
        assert!(
            !c.contains("Domain"),
            "__Host- cookies must not carry Domain: {c}"
        );
    }

    #[test]
    fn dev_session_cookie_on_http_loopback_is_not_secure() {
        let c = session(&config("dev", "http://127.0.0.1:8080"), "v").to_string();
        assert!(c.starts_with("portcullis=v"), "{c}");
        assert!(c.contains("HttpOnly") && !c.contains("Secure"), "{c}");
    }

    #[test]
    fn csrf_cookie_is_readable_by_scripts() {
        let cfg = config("prod", "https://app.example.com");
        let c = csrf(&cfg, "t").to_string();
        assert!(c.starts_with("XSRF-TOKEN=t") && c.contains("Secure"), "{c}");
        assert!(!c.contains("HttpOnly"), "{c}");
        let name = login_cookie_name(&cfg, "state");
        assert_eq!(
            name,
            format!(
                "__Host-portcullis-login-{}",
                crate::login_cookie::name_suffix("state")
            )
        );
        let login = login(&cfg, name.clone(), "b").to_string();
        assert!(login.starts_with(&format!("{name}=b")), "{login}");
        for attr in [
            "HttpOnly",
            "Secure",
            "SameSite=Lax",
            "Path=/",
            "Max-Age=600",
        ] {
            assert!(login.contains(attr), "{attr} missing: {login}");
        }
    }

    /// Every value counts (the well-formedness filter is tested apart).
    fn every_value(_: &str) -> bool {
        true
    }

    /// The cookie a sibling subdomain tosses in (`Domain=.example.com`)
    /// must not make the request ambiguous unless its value could be ours.
    #[test]
    fn values_that_are_not_well_formed_never_conflict() {
        let ours = "a".repeat(43);
        let well = |v: &str| v.len() == 43;
        for planted in ["x", "", "%zz", "b"] {
            let h = cookie_headers(&[&format!("n={planted}; n={ours}"), &format!("n={planted}")]);
            assert_eq!(
                find_exact(&h, "n", "session", well),
                Ok(Some(Cow::Borrowed(ours.as_str()))),
                "{planted:?}"
            );
            assert_eq!(all_exact(&h, "n", well), std::slice::from_ref(&ours));
        }
        let other = "b".repeat(43);
        let h = cookie_headers(&[&format!("n={ours}; n=x; n={other}; n={ours}")]);
        assert_eq!(
            find_exact(&h, "n", "session", well),
            Err(AmbiguousCookie("session"))
        );
        assert_eq!(all_exact(&h, "n", well), [ours.clone(), other]);
    }

    #[test]
    fn planted_copies_are_removed_for_each_parent_domain() {
        fn domains(h: &str) -> Vec<&str> {
            parent_domains(h).collect()
        }
        assert_eq!(
            domains("app.example.com"),
            ["app.example.com", "example.com"]
        );
        assert_eq!(
            domains("app.example.com."),
            ["app.example.com", "example.com"]
        );
        assert_eq!(domains("a.b.example.co.uk").len(), 4);
        assert!(domains("localhost").is_empty());
        assert!(domains("com").is_empty());

        let dev = |url: &str, name: &str| {
            let toml = format!(
                "[server]\npublic_url = \"{url}\"\nprofile = \"dev\"\n[oidc]\nissuer = \"https://idp.example.com\"\n\
                 client_id = \"c\"\nclient_secret = \"s\"\n[session]\nstore = \"memory\"\ncookie_name = \"{name}\"\n"
            );
            Config::from_toml_str(&toml, Vec::new()).expect("valid config")
        };
        let got: Vec<String> =
            planted_copy_removals(&dev("https://app.example.com", "PORTAL_SESSION"))
                .iter()
                .map(ToString::to_string)
                .collect();
        for want in [
            "PORTAL_SESSION=; HttpOnly; SameSite=Lax; Secure; Path=/; Domain=app.example.com; Max-Age=0",
            "PORTAL_SESSION=; HttpOnly; SameSite=Lax; Secure; Path=/; Domain=example.com; Max-Age=0",
            "XSRF-TOKEN=; SameSite=Lax; Secure; Path=/; Domain=example.com; Max-Age=0",
        ] {
            assert!(got.iter().any(|c| c == want), "{want} not in {got:?}");
        }
        assert_eq!(got.len(), 4, "{got:?}");
        // IP literals and single labels have no parent domain; `__Host-`
        // names cannot be stored with one.
        assert!(planted_copy_removals(&dev("http://127.0.0.1:8080", "p")).is_empty());
        assert!(planted_copy_removals(&dev("http://[::1]:8080", "p")).is_empty());
        assert!(planted_copy_removals(&dev("http://localhost:8080", "p")).is_empty());
        let prod = config("prod", "https://app.example.com");
        let got = planted_copy_removals(&prod);
        assert!(got.iter().all(|c| c.name() == "XSRF-TOKEN"), "{got:?}");
    }

    fn cookie_headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(header::COOKIE, v.parse().expect("header value"));
        }
        h
    }

    #[test]
    fn owned_names_match_byte_for_byte_only() {
        let h = cookie_headers(&["__Host%2Dportcullis=planted; __host-portcullis=x2"]);
        assert_eq!(
            find_exact(&h, "__Host-portcullis", "session", every_value),
            Ok(None)
        );
        let h = cookie_headers(&["__Host%2Dportcullis=planted; __Host-portcullis=ours"]);
        assert_eq!(
            find_exact(&h, "__Host-portcullis", "session", every_value),
            Ok(Some(Cow::Borrowed("ours")))
        );
        let h = cookie_headers(&["a=1; __Host-portcullis=ours", "__Host-portcullis=other"]);
        assert_eq!(
            find_exact(&h, "__Host-portcullis", "session", every_value),
            Err(AmbiguousCookie("session"))
        );
    }

    #[test]
    fn lookalikes_cover_case_encoding_prefix_and_empty_names() {
        let owned = ["__Host-portcullis".to_string(), "XSRF-TOKEN".to_string()];
        for name in [
            "__Host-portcullis",
            "__host-portcullis",
            "__Host%2Dportcullis",
            "__Host%252Dportcullis",
            "%5F%5FHost-portcullis",
            " portcullis",
            "portcullis",
            "PORTCULLIS",
            "__Secure-portcullis",
            "__secure-Portc%75llis",
            "xsrf-token",
            "__Host-XSRF-TOKEN",
            "",
            " \t",
            "%20",
        ] {
            assert!(is_lookalike(name.as_bytes(), &owned), "{name:?}");
        }
        for name in ["portcullis2", "theme", "__Host-app", "%", "%zz", "xsrf"] {
            assert!(!is_lookalike(name.as_bytes(), &owned), "{name:?}");
        }
    }

    #[test]
    fn the_whole_login_family_is_owned() {
        let cfg = config("prod", "https://app.example.com");
        let owned = owned_names(&cfg);
        for name in [
            "__Host-portcullis-login",
            "__Host-portcullis-login-0123abcd",
            "__Host-portcullis-login-anything",
            "portcullis-login-0123abcd",
            "__Secure-PORTCULLIS-LOGIN-x",
            "__Host-portcullis-login%2D0123abcd",
            "__Host%2Dportcullis%2Dlogin-1",
            "__Host-portcullis",
            "XSRF-TOKEN",
        ] {
            assert!(is_lookalike(name.as_bytes(), &owned), "{name:?}");
        }
        for name in [
            "__Host-portcullis-loginx",
            "__Host-portcullis-logi",
            "__Host-portcullis-other",
            "portcullis-login2",
            "theme",
        ] {
            assert!(!is_lookalike(name.as_bytes(), &owned), "{name:?}");
        }
    }

    #[test]
    fn the_login_family_is_read_by_exact_prefix_and_suffix() {
        let ok = crate::login_cookie::is_name_suffix;
        let h = cookie_headers(&[
            "p-login-0123abcd=v1; p-login-0123ABCD=v2; p%2Dlogin-0123abcd=v3; p-login=v4",
            "p-login-0123abcd=v1; p-login-0123abcd=v5; p-login-0123abc=v6; x=y; p-login-00000000=%41",
        ]);
        let got = family(&h, "p-login-", ok, every_value);
        let want = [
            ("p-login-0123abcd", "v1"),
            ("p-login-0123abcd", "v5"),
            ("p-login-00000000", "A"),
        ];
        assert_eq!(
            got,
            want.map(|(n, v)| (n.to_string(), v.to_string())).to_vec()
        );
        assert_eq!(family(&h, "p-login-", ok, |v| v == "v5").len(), 1);
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        const OWNED: &str = "__Host-portcullis";

        /// A spelling of [`OWNED`] that some reader could take for it: each
        /// character kept, case-flipped or percent-encoded (either hex case),
        /// the prefix possibly swapped, whitespace around.
        fn variant() -> impl Strategy<Value = String> {
            let chars: Vec<BoxedStrategy<String>> = OWNED
                .chars()
                .map(|c| {
                    prop_oneof![
                        Just(c.to_string()),
                        Just(c.to_ascii_uppercase().to_string()),
                        Just(c.to_ascii_lowercase().to_string()),
                        Just(format!("%{:02X}", c as u32)),
                        Just(format!("%{:02x}", c as u32)),
                    ]
                    .boxed()
                })
                .collect();
            (chars, 0..3usize, "[ \t]{0,2}", "[ \t]{0,2}").prop_map(|(cs, prefix, l, r)| {
                let name: String = cs.concat();
                let name = match prefix {
                    0 => name,
                    1 => name.replacen("__Host-", "__Secure-", 1),
                    _ => name.replacen("__Host-", "", 1),
                };
                format!("{l}{name}{r}")
            })
        }

        fn value() -> impl Strategy<Value = String> {
            "[A-Za-z0-9_-]{0,12}"
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

            /// Any bytes a header value may hold: no panic.
            #[test]
            fn parsing_never_panics(raw in proptest::collection::vec(any::<u8>(), 0..200)) {
                if let Ok(v) = http::HeaderValue::from_bytes(&raw) {
                    let mut h = HeaderMap::new();
                    h.insert(header::COOKIE, v);
                    let _ = find_exact(&h, OWNED, "session", every_value);
                    let _ = is_lookalike(&raw, &[OWNED.to_string()]);
                }
            }

            /// A variant is never read as ours, always stripped as a
            /// look-alike; only the exact name counts.
            #[test]
            fn only_the_exact_name_is_ours(
                pairs in proptest::collection::vec((variant(), value()), 0..5),
                exact in proptest::option::of(value()),
                at in 0..6usize,
            ) {
                let mut parts: Vec<String> = pairs
                    .iter()
                    .filter(|(n, _)| n.trim_matches([' ', '\t']) != OWNED)
                    .map(|(n, v)| format!("{n}={v}"))
                    .collect();
                for (n, _) in &pairs {
                    prop_assert!(is_lookalike(n.as_bytes(), &[OWNED.to_string()]), "{n:?}");
                }
                if let Some(v) = &exact {
                    parts.insert(at.min(parts.len()), format!("{OWNED}={v}"));
                }
                let h = cookie_headers(&[parts.join("; ").as_str()]);
                let found = find_exact(&h, OWNED, "session", every_value);
                prop_assert_eq!(found, Ok(exact.as_deref().map(Cow::Borrowed)));
            }
        }
    }
}
