//! Logs of a full flow (login, proxied call with refresh, CSRF rejection,
//! logout) captured at `trace` level hold no token, authorization code,
//! cookie value or client secret, but do hold request ids, session-hash
//! prefixes and access lines. Alone in its binary because it installs the
//! process-global subscriber (a thread-local one misses callsites whose
//! interest other tests cached).

mod common;
mod ops_support;

use portcullis::session::SessionRecords;
use std::{
    io::Write,
    sync::{Arc, Mutex},
};

use common::oidc_provider::CLIENT_SECRET;
use ops_support::{Browser, login, setup};
use reqwest::{Method, StatusCode, header, header::HeaderMap};
use url::Url;

/// A `MakeWriter` into a shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[tokio::test]
async fn logs_of_a_full_flow_hold_no_token_code_or_cookie() {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_current_span(true)
        .with_span_list(true)
        .with_env_filter("trace")
        .with_writer(captured.clone())
        .finish();
    tracing::subscriber::set_global_default(subscriber).expect("only subscriber in this binary");

    let s = setup("10m", false).await;
    let mut browser = Browser::new();
    let seen = Arc::new(Mutex::new(Vec::new()));
    login(&s, &mut browser, "alice", seen.clone()).await;
    let first = s.store.list_by_sub("alice").await.expect("list")[0].clone();
    // A caller's W3C trace context reaches the upstream unchanged and tags the logs.
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let mut traced = HeaderMap::new();
    traced.insert(
        "traceparent",
        format!("00-{trace}-00f067aa0ba902b7-01")
            .parse()
            .expect("hv"),
    );
    let resp = browser
        .request_with(Method::GET, &format!("{}/api/token", s.base), traced, None)
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let request_id = resp.headers()["x-request-id"]
        .to_str()
        .expect("id")
        .to_owned();
    let echoed: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(
        echoed["traceparent"],
        format!("00-{trace}-00f067aa0ba902b7-01")
    );
    assert_eq!(echoed["x-request-id"], request_id.as_str());
    let refused = browser
        .request(Method::POST, &format!("{}/api/token", s.base), None)
        .await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let refreshed = s.store.list_by_sub("alice").await.expect("list")[0].clone();
    assert_ne!(refreshed.tokens.access_token, first.tokens.access_token);

    let cookie = browser
        .cookie(&s.base, "portcullis")
        .expect("session cookie");
    let xsrf = browser.cookie(&s.base, "XSRF-TOKEN").expect("xsrf cookie");
    let mut headers = HeaderMap::new();
    headers.insert(header::ACCEPT, "application/json".parse().expect("hv"));
    headers.insert("x-xsrf-token", xsrf.parse().expect("hv"));
    let out = browser
        .request_with(
            Method::POST,
            &format!("{}/auth/logout", s.base),
            headers,
            None,
        )
        .await;
    assert_eq!(out.status(), StatusCode::OK);

    let codes: Vec<String> = seen
        .lock()
        .expect("lock")
        .iter()
        .filter_map(|u| Url::parse(u).ok())
        .flat_map(|u| u.query_pairs().into_owned().collect::<Vec<_>>())
        .filter(|(k, _)| k == "code")
        .map(|(_, v)| v)
        .collect();
    assert!(!codes.is_empty(), "saw no authorization code");

    let logs = String::from_utf8(captured.0.lock().expect("lock").clone()).expect("utf8");
    let mut secrets: Vec<(&str, String)> = vec![
        ("session cookie", cookie),
        ("csrf token", xsrf),
        ("client secret", CLIENT_SECRET.to_string()),
    ];
    for record in [&first, &refreshed] {
        secrets.push((
            "access token",
            record.tokens.access_token.as_str().to_owned(),
        ));
        if let Some(t) = &record.tokens.refresh_token {
            secrets.push(("refresh token", t.to_string()));
        }
        if let Some(t) = &record.tokens.id_token {
            secrets.push(("id token", t.to_string()));
        }
    }
    for code in codes {
        secrets.push(("authorization code", code));
    }
    for (what, value) in &secrets {
        assert!(value.len() >= 8, "{what} too short to search for");
        assert!(!logs.contains(value.as_str()), "{what} appears in the logs");
    }
    // The logs are there, with request ids, session-hash prefixes and access lines.
    assert!(logs.contains("\"request_id\""), "{logs}");
    assert!(
        logs.contains(first.id.short()),
        "no session-hash prefix in the logs"
    );
    assert!(logs.contains("portcullis::access"), "no access log lines");
    assert!(
        logs.contains(&format!("\"trace_id\":\"{trace}\"")),
        "no trace id"
    );
    assert!(
        logs.contains(&request_id),
        "request id of the proxied call not logged"
    );
    assert!(
        logs.contains("\"route\":\"/api/\""),
        "no route in the access log"
    );
    assert!(
        logs.contains("\"upstream_ms\":"),
        "no upstream duration in the access log of the proxied call"
    );

    // `server.log_user` is off by default; on, the request span names the user.
    assert!(
        !logs.contains("\"user\":"),
        "user logged although log_user is off"
    );
    let s2 = ops_support::setup_with("60s", false, "log_user = true").await;
    let mut browser = Browser::new();
    login(&s2, &mut browser, "bob", Arc::default()).await;
    let me = browser
        .request(Method::GET, &format!("{}/auth/me", s2.base), None)
        .await;
    assert_eq!(me.status(), StatusCode::OK);
    let logs = String::from_utf8(captured.0.lock().expect("lock").clone()).expect("utf8");
    assert!(
        logs.contains("\"user\":\"bob\""),
        "log_user did not log the sub"
    );
}
