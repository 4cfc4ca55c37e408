//! Issue 16 item 3: the pending login lives in a sealed, browser-bound login
//! cookie, so anonymous `/auth/login` requests leave no server state; the
//! cookie cannot be forged, replayed after its 10 minutes, or carried over
//! from another deployment; several tabs can log in at once.

use std::sync::Arc;

use portcullis::{
    session::{MemoryStore, SessionStore, SqliteStore},
    time::{Clock, ManualClock, SystemClock},
};
use reqwest::{Client, StatusCode, header, redirect::Policy};

use super::{Harness, SESSION_COOKIE, browser, location, session_cookie, set_cookies};
use crate::common::crafted_idp::{CraftedIdp, SUBJECT};

const LOGIN_COOKIE: &str = "portcullis-login";

/// A client without a cookie store: every request carries only what the test adds.
fn bare_client() -> Client {
    Client::builder()
        .redirect(Policy::none())
        .build()
        .expect("reqwest client")
}

/// The login cookie a response sets: `(value, whole Set-Cookie line)`.
fn login_cookie(resp: &reqwest::Response) -> Option<(String, String)> {
    set_cookies(resp).into_iter().find_map(|c| {
        let value = c
            .split(';')
            .next()?
            .strip_prefix(&format!("{LOGIN_COOKIE}="))?
            .to_string();
        Some((value, c))
    })
}

/// Start a login without a cookie jar: the login cookie value it set and the
/// callback URL the IdP sends the browser to.
async fn begin_bare(
    h: &Harness,
    client: &Client,
    cookie: Option<&str>,
    return_to: &str,
) -> (String, String) {
    let mut url = url::Url::parse(&h.url("/auth/login")).expect("login URL");
    url.query_pairs_mut().append_pair("return_to", return_to);
    let mut req = client.get(url);
    if let Some(c) = cookie {
        req = req.header(header::COOKIE, format!("{LOGIN_COOKIE}={c}"));
    }
    let resp = req.send().await.expect("GET /auth/login");
    let (value, _) = login_cookie(&resp).expect("login sets the login cookie");
    let authorize = location(&resp);
    let resp = client.get(authorize).send().await.expect("GET /authorize");
    (value, location(&resp))
}

async fn callback_with(client: &Client, callback: &str, cookie: &str) -> reqwest::Response {
    client
        .get(callback)
        .header(header::COOKIE, format!("{LOGIN_COOKIE}={cookie}"))
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
    let (value, callback) = begin_bare(&h, &client, None, "/").await;
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
        let resp = callback_with(&client, &callback, cookie).await;
        assert!(session_cookie(&resp).is_none());
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{cookie:.40}");
    }
    assert!(
        h.idp.token_requests().is_empty(),
        "code must not be redeemed"
    );
    // The genuine cookie still works: tampering consumed nothing.
    let resp = callback_with(&client, &callback, &value).await;
    assert_eq!(location(&resp), "/");
    assert_eq!(h.sessions_of(SUBJECT).await.len(), 1);
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
    let (value, callback) = begin_bare(&a, &client, None, "/").await;
    let on_b = callback.replace(&a.base, &b.base);
    let resp = callback_with(&client, &on_b, &value).await;
    assert!(session_cookie(&resp).is_none());
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert!(a.idp.token_requests().is_empty() && b.idp.token_requests().is_empty());
    // Nor is a login cookie of B's accepted with A's pending state mixed in.
    let (_, b_value) = {
        let (v, _) = begin_bare(&b, &client, None, "/").await;
        (v.clone(), v)
    };
    let resp = callback_with(&client, &callback, &b_value).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert!(a.idp.token_requests().is_empty());
}

#[tokio::test]
async fn logins_in_several_tabs_all_complete() {
    let h = Harness::with_defaults().await;
    let b = browser();
    let mut callbacks = Vec::new();
    for tab in 0..6 {
        callbacks.push((tab, h.begin_login(&b, &format!("/tab{tab}")).await));
    }
    // Finished in another order than started; each removes only its own entry.
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

#[tokio::test]
async fn longest_login_cookie_stays_under_4kb_and_keeps_the_newest_logins() {
    let h = Harness::with_defaults().await;
    let client = bare_client();
    let long = |tab: usize| format!("/tab{tab}/{}", "x".repeat(512 - 6));
    let mut cookie: Option<String> = None;
    let mut callbacks = Vec::new();
    for tab in 0..7 {
        let mut url = url::Url::parse(&h.url("/auth/login")).expect("login URL");
        url.query_pairs_mut().append_pair("return_to", &long(tab));
        let mut req = client.get(url);
        if let Some(c) = &cookie {
            req = req.header(header::COOKIE, format!("{LOGIN_COOKIE}={c}"));
        }
        let resp = req.send().await.expect("login");
        let (value, line) = login_cookie(&resp).expect("login cookie");
        assert!(line.len() <= 4096, "Set-Cookie is {} bytes", line.len());
        assert!(LOGIN_COOKIE.len() + 1 + value.len() <= 4096);
        let authorize = location(&resp);
        let resp = client.get(authorize).send().await.expect("authorize");
        callbacks.push(location(&resp));
        cookie = Some(value);
    }
    let cookie = cookie.expect("cookie");
    // The four newest fit; older tabs gave way and must start again.
    for (tab, callback) in callbacks.iter().enumerate() {
        let resp = callback_with(&client, callback, &cookie).await;
        if tab >= 3 {
            assert_eq!(location(&resp), long(tab));
        } else {
            assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "tab {tab}");
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
    let (value, callback) = begin_bare(&h, &client, None, "/").await;
    let first = callback_with(&client, &callback, &value).await;
    assert_eq!(location(&first), "/");
    assert!(session_cookie(&first).is_some());
    // The browser's entry is gone, but an attacker kept a copy of the cookie.
    let replay = callback_with(&client, &callback, &value).await;
    assert!(session_cookie(&replay).is_none());
    assert_eq!(replay.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        h.idp.token_requests().len(),
        1,
        "the replay never reached the IdP"
    );
    assert_eq!(h.sessions_of(SUBJECT).await.len(), 1);
    let _ = SESSION_COOKIE;
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
    let (value, callback) = begin_bare(&a, &client, None, "/").await;
    assert_eq!(
        location(&callback_with(&client, &callback, &value).await),
        "/"
    );
    let on_b = callback.replace(&a.base, &format!("http://{b_addr}"));
    let replay = callback_with(&client, &on_b, &value).await;
    assert!(session_cookie(&replay).is_none());
    assert_eq!(replay.status(), StatusCode::BAD_REQUEST);
    assert_eq!(a.sessions_of(SUBJECT).await.len(), 1);
    server.abort();
}
