//! Issue 16 item 3: each pending login lives in its own sealed, browser-bound
//! login cookie (`portcullis-login-<8 hex of SHA-256(state)>`), so anonymous
//! `/auth/login` requests leave no server state; a cookie cannot be forged,
//! replayed after its 10 minutes, moved to another name or carried over from
//! another deployment, even one with the same keys; logins started in
//! several tabs at once all complete.

use std::{collections::BTreeMap, sync::Arc};

use portcullis::{
    session::{MemoryStore, SessionStore, SqliteStore},
    time::{Clock, ManualClock, SystemClock},
};
use reqwest::{Client, StatusCode, header, redirect::Policy};

use super::{Harness, browser, location, session_cookie, set_cookies};
use crate::common::crafted_idp::{CraftedIdp, SUBJECT};

const LOGIN_PREFIX: &str = "portcullis-login-";

/// A client without a cookie store: every request carries only what the test adds.
fn bare_client() -> Client {
    Client::builder()
        .redirect(Policy::none())
        .build()
        .expect("reqwest client")
}

/// The login cookie a response sets: `(name, value, whole Set-Cookie line)`.
fn login_cookie(resp: &reqwest::Response) -> Option<(String, String, String)> {
    set_cookies(resp).into_iter().find_map(|c| {
        let (name, value) = c.split(';').next()?.split_once('=')?;
        (name.starts_with(LOGIN_PREFIX) && !value.is_empty())
            .then(|| (name.to_string(), value.to_string(), c.clone()))
    })
}

/// The host-only cookies a browser keeps, applied from `Set-Cookie` lines
/// in order (`Max-Age=0` removes). Enough for the gateway's own cookies.
#[derive(Default, Clone)]
struct Jar(BTreeMap<String, String>);

impl Jar {
    fn apply(&mut self, resp: &reqwest::Response) {
        for line in set_cookies(resp) {
            let lower = line.to_ascii_lowercase();
            if lower.contains("domain=") {
                continue;
            }
            let Some((name, value)) = line.split(';').next().and_then(|p| p.split_once('=')) else {
                continue;
            };
            if lower.contains("max-age=0") {
                self.0.remove(name);
            } else {
                self.0.insert(name.to_string(), value.to_string());
            }
        }
    }

    fn header(&self) -> String {
        self.0
            .iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn login_names(&self) -> Vec<String> {
        self.0
            .keys()
            .filter(|n| n.starts_with(LOGIN_PREFIX))
            .cloned()
            .collect()
    }
}

/// `GET /auth/login?return_to=…` carrying `cookie` (a whole `Cookie` header).
async fn start(h: &Harness, client: &Client, cookie: &str, return_to: &str) -> reqwest::Response {
    let mut url = url::Url::parse(&h.url("/auth/login")).expect("login URL");
    url.query_pairs_mut().append_pair("return_to", return_to);
    let mut req = client.get(url);
    if !cookie.is_empty() {
        req = req.header(header::COOKIE, cookie);
    }
    req.send().await.expect("GET /auth/login")
}

/// The IdP's answer to the login's redirect: the callback URL.
async fn authorize(client: &Client, login: &reqwest::Response) -> String {
    let resp = client
        .get(location(login))
        .send()
        .await
        .expect("GET /authorize");
    location(&resp)
}

/// Start a login without a cookie jar: the login cookie's name and value it
/// set and the callback URL the IdP sends the browser to.
async fn begin_bare(h: &Harness, client: &Client, return_to: &str) -> (String, String, String) {
    let resp = start(h, client, "", return_to).await;
    let (name, value, _) = login_cookie(&resp).expect("login sets a login cookie");
    (name, value, authorize(client, &resp).await)
}

async fn callback_with(client: &Client, callback: &str, cookie: &str) -> reqwest::Response {
    client
        .get(callback)
        .header(header::COOKIE, cookie)
        .send()
        .await
        .expect("GET /auth/callback")
}

#[tokio::test]
async fn anonymous_login_flood_creates_no_server_state() {
    const LOGINS: usize = 2000;
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("sessions.db");
    let store: Arc<dyn SessionStore> = Arc::new(
        SqliteStore::connect(&format!("sqlite://{}", db.display()))
            .await
            .expect("sqlite store"),
    );
    let h = Harness::start_with(CraftedIdp::start().await, "", store.clone(), None).await;
    let files = || {
        ["", "-wal"].map(|suffix| {
            std::fs::metadata(format!("{}{suffix}", db.display()))
                .map(|m| m.len())
                .unwrap_or(0)
        })
    };
    let before = files();
    let client = bare_client();
    for _ in 0..LOGINS {
        let resp = h.start_login(&client, "/app").await;
        assert_eq!(resp.status(), StatusCode::FOUND);
        assert!(login_cookie(&resp).is_some());
    }
    assert_eq!(store.count().await.expect("count"), Some(0));
    assert_eq!(
        files(),
        before,
        "the SQLite store grew: it holds login state"
    );

    // The memory store too: nothing per login.
    let memory = Arc::new(MemoryStore::new());
    let m = Harness::start_with(CraftedIdp::start().await, "", memory.clone(), None).await;
    let empty = format!("{memory:?}");
    for _ in 0..LOGINS / 4 {
        m.start_login(&client, "/").await;
    }
    assert_eq!(format!("{memory:?}"), empty);

    // A real login right after the flood works.
    let b = browser();
    h.login(&b).await;
    assert_eq!(h.me(&b).await.0, StatusCode::OK);
    assert_eq!(store.count().await.expect("count"), Some(1));
}

#[tokio::test]
async fn tampered_login_cookie_is_refused() {
    let h = Harness::with_defaults().await;
    let client = bare_client();
    let (name, value, callback) = begin_bare(&h, &client, "/").await;
    let mut forged: Vec<String> = [0, value.len() / 2, value.len() - 2]
        .into_iter()
        .map(|i| {
            let mut bytes = value.clone().into_bytes();
            bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
            String::from_utf8(bytes).expect("ascii")
        })
        .collect();
    forged.extend([
        value[..value.len() - 4].to_string(),
        format!("{value}AAAA"),
        String::new(),
        "not-a-cookie".into(),
        "A".repeat(5000),
    ]);
    for cookie in &forged {
        let resp = callback_with(&client, &callback, &format!("{name}={cookie}")).await;
        assert!(session_cookie(&resp).is_none());
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{cookie:.40}");
    }
    assert!(
        h.idp.token_requests().is_empty(),
        "code must not be redeemed"
    );
    // The genuine cookie still works: tampering consumed nothing.
    let resp = callback_with(&client, &callback, &format!("{name}={value}")).await;
    assert_eq!(location(&resp), "/");
    assert_eq!(h.sessions_of(SUBJECT).await.len(), 1);
}

/// Each login cookie is sealed under its own name: the cookie of one login
/// renamed to another's does not open, so nothing but the state's own
/// cookie can finish it.
#[tokio::test]
async fn login_cookie_moved_to_another_name_is_refused() {
    let h = Harness::with_defaults().await;
    let client = bare_client();
    let (_, one, _) = begin_bare(&h, &client, "/one").await;
    let (two_name, _, two_callback) = begin_bare(&h, &client, "/two").await;
    let resp = callback_with(&client, &two_callback, &format!("{two_name}={one}")).await;
    assert!(session_cookie(&resp).is_none());
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert!(h.idp.token_requests().is_empty());
}

/// A sibling subdomain can put more values under the login cookie's name
/// (`Domain=` cookies are sent beside host-only ones): forged ones, or a
/// genuine cookie of another login. None opens, and none stops the real one.
#[tokio::test]
async fn planted_values_beside_the_login_cookie_do_not_block_the_callback() {
    let h = Harness::with_defaults().await;
    let client = bare_client();
    let (name, value, callback) = begin_bare(&h, &client, "/x").await;
    let (_, other, _) = begin_bare(&h, &client, "/y").await;
    let forged = "A".repeat(43);
    let resp = callback_with(
        &client,
        &callback,
        &format!("{name}={forged}; {name}={other}"),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let cookie = format!("{name}={forged}; {name}={other}; {name}={value}; {name}=x%");
    let resp = callback_with(&client, &callback, &cookie).await;
    assert_eq!(location(&resp), "/x");
}

#[tokio::test]
async fn expired_login_cookie_is_refused() {
    let clock = ManualClock::new(SystemClock.now());
    let h = Harness::start_with(
        CraftedIdp::start().await,
        "",
        Arc::new(MemoryStore::new()),
        Some(Arc::new(clock.clone())),
    )
    .await;
    let b = browser();
    let callback = h.begin_login(&b, "/").await;
    // The browser still sends the cookie (or an attacker kept a copy): its
    // sealed start time is what counts.
    clock.advance(601);
    let resp = b.get(&callback).send().await.expect("callback");
    h.assert_refused(&b, resp, StatusCode::BAD_REQUEST).await;
    assert!(h.idp.token_requests().is_empty());
}

#[tokio::test]
async fn login_cookie_from_another_deployment_key_is_refused() {
    // Two gateways with their own encryption keys, on one host: the browser
    // sends a cookie of the first to the second.
    let (a, b) = (
        Harness::with_defaults().await,
        Harness::with_defaults().await,
    );
    let client = bare_client();
    let (name, value, callback) = begin_bare(&a, &client, "/").await;
    let on_b = callback.replace(&a.base, &b.base);
    let resp = callback_with(&client, &on_b, &format!("{name}={value}")).await;
    assert!(session_cookie(&resp).is_none());
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert!(a.idp.token_requests().is_empty() && b.idp.token_requests().is_empty());
    // Nor is a login cookie of B's accepted under the name of A's login.
    let (_, b_value, _) = begin_bare(&b, &client, "/").await;
    let resp = callback_with(&client, &callback, &format!("{name}={b_value}")).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert!(a.idp.token_requests().is_empty());
}

/// Two deployments sharing `session.encryption_keys` (copied between
/// environments, say), the IdP and the client, on one host (cookies are not
/// kept per port): a login started on A must not finish on B, whose
/// `public_url` differs. The seal's associated data names the deployment.
#[tokio::test]
async fn login_cookie_from_another_deployment_with_the_same_keys_is_refused() {
    let a = Harness::with_defaults().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind deployment B");
    let b_base = format!("http://{}", listener.local_addr().expect("B address"));
    let a_addr = a.base.trim_start_matches("http://");
    let b_addr = b_base.trim_start_matches("http://");
    // The same config (keys, issuer, client) but B's own address and URL.
    let toml = a
        .toml
        .replacen(
            &format!("listen = \"{a_addr}\""),
            &format!("listen = \"{b_addr}\""),
            1,
        )
        .replacen(
            &format!("public_url = \"{}\"", a.base),
            &format!("public_url = \"{b_base}\""),
            1,
        );
    assert!(toml.contains(&format!("public_url = \"{b_base}\"")));
    let (_, server) = crate::common::gateway::serve(listener, &toml, a.store.clone()).await;
    let client = bare_client();
    let (name, value, callback) = begin_bare(&a, &client, "/").await;
    let on_b = callback.replace(&a.base, &b_base);
    let resp = callback_with(&client, &on_b, &format!("{name}={value}")).await;
    assert!(session_cookie(&resp).is_none());
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert!(
        a.idp.token_requests().is_empty(),
        "B redeemed A's code with A's PKCE verifier"
    );
    assert!(a.sessions_of(SUBJECT).await.is_empty());
    // On A the same cookie still completes.
    let resp = callback_with(&client, &callback, &format!("{name}={value}")).await;
    assert_eq!(location(&resp), "/");
    server.abort();
}

#[tokio::test]
async fn logins_in_several_tabs_all_complete() {
    let h = Harness::with_defaults().await;
    let b = browser();
    let mut callbacks = Vec::new();
    for tab in 0..6 {
        callbacks.push((tab, h.begin_login(&b, &format!("/tab{tab}")).await));
    }
    // Finished in another order than started; each removes only its own cookie.
    for i in [3, 0, 5, 1, 4, 2] {
        let (tab, callback) = &callbacks[i];
        let resp = b.get(callback).send().await.expect("callback");
        assert_eq!(location(&resp), format!("/tab{tab}"));
    }
    assert_eq!(h.idp.token_requests().len(), 6);
    assert_eq!(h.me(&b).await.0, StatusCode::OK);
    // Each login replaced the previous session: one is left.
    assert_eq!(h.sessions_of(SUBJECT).await.len(), 1);
}

/// Tabs that start a login at the same moment all send the same cookies.
/// With one cookie holding every pending login, each response set it to
/// "what the request showed + its own login", the last one won, and the
/// other tabs' callbacks failed. With one cookie per login each response
/// adds only its own.
#[tokio::test]
async fn logins_started_in_several_tabs_at_once_all_complete() {
    let h = Harness::with_defaults().await;
    let client = bare_client();
    let mut jar = Jar::default();
    // A login already pending in this browser: every tab's request carries it.
    let earlier = start(&h, &client, "", "/earlier").await;
    jar.apply(&earlier);
    let earlier = authorize(&client, &earlier).await;
    let cookie = jar.header();
    let tabs = ["/tab0", "/tab1", "/tab2"];
    let responses =
        futures_util::future::join_all(tabs.map(|tab| start(&h, &client, &cookie, tab))).await;
    let mut callbacks = Vec::new();
    for resp in &responses {
        jar.apply(resp);
        callbacks.push(authorize(&client, resp).await);
    }
    assert_eq!(jar.login_names().len(), 4, "{:?}", jar.login_names());
    for (callback, want) in callbacks.iter().zip(tabs).chain([(&earlier, "/earlier")]) {
        let resp = callback_with(&client, callback, &jar.header()).await;
        jar.apply(&resp);
        assert_eq!(location(&resp), want);
    }
    assert!(jar.login_names().is_empty(), "{:?}", jar.login_names());
    assert_eq!(h.idp.token_requests().len(), 4);
}

/// Many tabs or long `return_to`s must not grow the `Cookie` header without
/// bound (browsers drop a cookie over 4 KB; the gateway answers 431 above
/// `server.max_header_bytes`): at most six login cookies, a seventh login
/// expires the oldest, and six of the longest stay far below 16 KiB.
#[tokio::test]
async fn a_seventh_login_expires_the_oldest_and_six_long_cookies_stay_small() {
    // Logins a second apart: the sealed start time orders them.
    let clock = ManualClock::new(SystemClock.now() - 10);
    let h = Harness::start_with(
        CraftedIdp::start().await,
        "",
        Arc::new(MemoryStore::new()),
        Some(Arc::new(clock.clone())),
    )
    .await;
    let client = bare_client();
    let long = |tab: usize| format!("/tab{tab}/{}", "\"".repeat(512 - 6));
    let mut jar = Jar::default();
    let mut callbacks = Vec::new();
    for tab in 0..7 {
        let resp = start(&h, &client, &jar.header(), &long(tab)).await;
        let (name, value, line) = login_cookie(&resp).expect("login cookie");
        assert!(line.len() <= 4096, "Set-Cookie is {} bytes", line.len());
        assert!(name.len() + 1 + value.len() <= 1000, "{}", value.len());
        jar.apply(&resp);
        callbacks.push(authorize(&client, &resp).await);
        assert_eq!(jar.login_names().len(), (tab + 1).min(6));
        clock.advance(1);
    }
    let header = jar.header();
    assert!(
        header.len() <= 6 * 1024,
        "Cookie header {} bytes",
        header.len()
    );
    // The oldest gave way and must start again; the six newest complete.
    for (tab, callback) in callbacks.iter().enumerate() {
        let resp = callback_with(&client, callback, &jar.header()).await;
        if tab == 0 {
            assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "tab {tab}");
        } else {
            jar.apply(&resp);
            assert_eq!(location(&resp), long(tab));
        }
    }
    // Above the cap: refused before anything is sealed.
    let resp = h
        .start_login(&client, &format!("/{}", "x".repeat(512)))
        .await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert!(login_cookie(&resp).is_none());
}

#[tokio::test]
async fn replayed_callback_with_a_copied_login_cookie_is_refused() {
    let h = Harness::with_defaults().await;
    let client = bare_client();
    let (name, value, callback) = begin_bare(&h, &client, "/").await;
    let cookie = format!("{name}={value}");
    let first = callback_with(&client, &callback, &cookie).await;
    assert_eq!(location(&first), "/");
    assert!(session_cookie(&first).is_some());
    assert!(
        set_cookies(&first)
            .iter()
            .any(|c| c.starts_with(&format!("{name}=;")) && c.contains("Max-Age=0")),
        "the used login cookie is removed"
    );
    // The browser's cookie is gone, but an attacker kept a copy of it.
    let replay = callback_with(&client, &callback, &cookie).await;
    assert!(session_cookie(&replay).is_none());
    assert_eq!(replay.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        h.idp.token_requests().len(),
        1,
        "the replay never reached the IdP"
    );
    assert_eq!(h.sessions_of(SUBJECT).await.len(), 1);
}

#[tokio::test]
async fn replayed_callback_on_another_replica_is_refused_even_if_the_idp_accepts_the_code_twice() {
    // The crafted IdP redeems a code as often as asked. Replica B shares A's
    // store, keys and public URL, but not A's in-process record of used states.
    let a = Harness::with_defaults().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind replica");
    let b_addr = listener.local_addr().expect("replica address");
    let a_addr = a.base.trim_start_matches("http://").to_string();
    let toml = a.toml.replacen(
        &format!("listen = \"{a_addr}\""),
        &format!("listen = \"{b_addr}\""),
        1,
    );
    let (_, server) = crate::common::gateway::serve(listener, &toml, a.store.clone()).await;
    let client = bare_client();
    let (name, value, callback) = begin_bare(&a, &client, "/").await;
    let cookie = format!("{name}={value}");
    assert_eq!(
        location(&callback_with(&client, &callback, &cookie).await),
        "/"
    );
    let on_b = callback.replace(&a.base, &format!("http://{b_addr}"));
    let replay = callback_with(&client, &on_b, &cookie).await;
    assert!(session_cookie(&replay).is_none());
    assert_eq!(replay.status(), StatusCode::BAD_REQUEST);
    assert_eq!(a.sessions_of(SUBJECT).await.len(), 1);
    server.abort();
}
