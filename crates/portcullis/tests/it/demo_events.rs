//! `portcullis demo`'s event stream (`/demo/events`) and session panel
//! (`/demo/session`): each step of a login, an API call, a refresh and a
//! back-channel logout is reported to that session's stream only, without
//! any token text; a gateway built without the demo sink has neither path.

use std::{sync::Arc, time::Duration};

use portcullis::{
    Gateway, config::Config, demo_events::DemoEvents, session::MemoryStore, session::SessionRecords,
};
use portcullis_demo::{DevIdp, DevIdpConfig, SampleApi};
use reqwest::{Client, StatusCode, header};
use serde_json::Value;
use tokio::net::TcpListener;

const CLIENT_ID: &str = "portal";
const CLIENT_SECRET: &str = "demo-secret-0123456789";

struct Setup {
    base: String,
    issuer: String,
    store: Arc<MemoryStore>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Setup {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// The demo's three parts and a gateway, with the demo sink when `demo`.
/// `refresh_before` beyond the token lifetime: every API call refreshes.
async fn setup(demo: bool) -> Setup {
    let gw_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", gw_listener.local_addr().expect("addr"));
    let idp_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let issuer = format!("http://{}", idp_listener.local_addr().expect("addr"));
    let api_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let api = api_listener.local_addr().expect("addr");
    let mut cfg = DevIdpConfig::new(&issuer, CLIENT_ID, CLIENT_SECRET);
    cfg.redirect_uris = vec![format!("{base}/auth/callback")];
    cfg.post_logout_redirect_uris = vec![format!("{base}/")];
    cfg.backchannel_logout_uri = Some(format!("{base}/auth/backchannel-logout"));
    let idp = DevIdp::new(cfg).expect("dev IdP");
    let idp_task = tokio::spawn(async move {
        let _ = idp.serve(idp_listener).await;
    });
    let sample = SampleApi::new(issuer.clone(), format!("{issuer}/jwks"));
    let api_task = tokio::spawn(async move {
        let _ = sample.serve(api_listener).await;
    });
    let toml = format!(
        r#"
[server]
public_url = "{base}"
profile = "dev"
[admin]
listen = ""
[oidc]
issuer = "{issuer}"
client_id = "{CLIENT_ID}"
client_secret = "{CLIENT_SECRET}"
scopes = ["openid", "profile", "offline_access"]
[session]
store = "memory"
refresh_before = "1h"
[[routes]]
prefix = "/api/"
upstream = "http://{api}"
"#
    );
    let config = Config::from_toml_str(&toml, Vec::<(String, String)>::new()).expect("config");
    let store = Arc::new(MemoryStore::new());
    let mut builder = Gateway::builder(config).store(store.clone());
    if demo {
        let events = DemoEvents::new(Some(format!("{issuer}/logout")));
        builder = builder.demo_events(Arc::new(events));
    }
    let gateway = builder.build().await.expect("gateway");
    let served = gateway.clone();
    let gw_task = tokio::spawn(async move {
        let _ = portcullis::serve_public(&served, gw_listener, std::future::pending()).await;
    });
    Setup {
        base,
        issuer,
        store,
        tasks: vec![idp_task, api_task, gw_task],
    }
}

fn browser() -> Client {
    Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

fn location(resp: &reqwest::Response) -> String {
    resp.headers()
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("no Location ({})", resp.status()))
        .to_string()
}

fn hidden_inputs(html: &str) -> Vec<(String, String)> {
    let attr = |tag: &str, name: &str| {
        let start = tag.find(&format!("{name}=\""))? + name.len() + 2;
        let len = tag[start..].find('"')?;
        Some(tag[start..start + len].replace("&amp;", "&"))
    };
    html.split("<input")
        .skip(1)
        .filter_map(|rest| rest.split('>').next())
        .filter(|tag| tag.contains("type=\"hidden\""))
        .filter_map(|tag| Some((attr(tag, "name")?, attr(tag, "value")?)))
        .collect()
}

async fn login(s: &Setup, b: &Client, user: &str) {
    let resp = b
        .get(format!("{}/auth/login", s.base))
        .send()
        .await
        .expect("login");
    let page = b.get(location(&resp)).send().await.expect("authorize");
    let mut form = hidden_inputs(&page.text().await.expect("html"));
    form.push(("username".into(), user.into()));
    form.push(("password".into(), user.into()));
    let resp = b
        .post(format!("{}/authorize", s.issuer))
        .form(&form)
        .send()
        .await
        .expect("submit login");
    let resp = b.get(location(&resp)).send().await.expect("callback");
    assert_eq!(resp.status(), StatusCode::FOUND, "session created");
}

/// The events of `b`'s stream until one of kind `until` (or 10 s pass).
async fn events_until(s: &Setup, b: &Client, until: &str) -> (Vec<Value>, String) {
    let mut resp = b
        .get(format!("{}/demo/events", s.base))
        .send()
        .await
        .expect("events");
    assert_eq!(resp.status(), StatusCode::OK);
    let mut raw = String::new();
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while let Ok(Ok(Some(chunk))) = tokio::time::timeout_at(deadline, resp.chunk()).await {
        raw.push_str(&String::from_utf8_lossy(&chunk));
        events = raw
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .filter_map(|d| serde_json::from_str::<Value>(d).ok())
            .collect();
        if events.iter().any(|e| e["kind"] == until) {
            break;
        }
    }
    (events, raw)
}

fn kinds(events: &[Value]) -> Vec<&str> {
    events.iter().filter_map(|e| e["kind"].as_str()).collect()
}

/// Every token the store has held for `sub` so far, added to `seen`.
async fn collect_tokens(s: &Setup, sub: &str, seen: &mut Vec<String>) {
    for r in s.store.list_by_sub(sub).await.expect("list") {
        seen.push(r.tokens.access_token.as_str().to_owned());
        seen.extend(r.tokens.refresh_token.as_deref().map(str::to_owned));
        seen.extend(r.tokens.id_token.as_deref().map(str::to_owned));
        seen.push(r.csrf_token.clone());
    }
}

#[tokio::test]
async fn demo_stream_shows_each_step_and_never_token_text() {
    let s = setup(true).await;
    let alice = browser();
    login(&s, &alice, "alice").await;
    let mut tokens = Vec::new();
    collect_tokens(&s, "alice", &mut tokens).await;

    // An API call: refreshed first (refresh_before > lifetime), then attached.
    let resp = alice
        .get(format!("{}/api/whoami", s.base))
        .send()
        .await
        .expect("whoami");
    assert_eq!(resp.status(), StatusCode::OK);
    collect_tokens(&s, "alice", &mut tokens).await;

    let panel: Value = alice
        .get(format!("{}/demo/session", s.base))
        .send()
        .await
        .expect("session")
        .json()
        .await
        .expect("json");
    assert_eq!(panel["refresh_count"], 1, "{panel}");
    assert_eq!(panel["roles"], serde_json::json!(["admin", "hr"]));
    assert_eq!(panel["refresh_token_held"], true);
    let logout_url = panel["idp_logout_url"].as_str().expect("IdP logout URL");

    // Sign-out at the IdP: its form, then the back-channel logout.
    let page = alice.get(logout_url).send().await.expect("IdP page");
    let form = hidden_inputs(&page.text().await.expect("html"));
    let resp = alice
        .post(format!("{}/logout", s.issuer))
        .form(&form)
        .send()
        .await
        .expect("IdP sign-out");
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(s.store.list_by_sub("alice").await.expect("list").is_empty());

    let (events, raw) = events_until(&s, &alice, "session_ended").await;
    let kinds = kinds(&events);
    for kind in [
        "login_redirect",
        "code_exchanged",
        "session_created",
        "refreshed",
        "token_attached",
        "session_ended",
    ] {
        assert!(kinds.contains(&kind), "no {kind} in {kinds:?}");
    }
    let ended = events.last().expect("events");
    assert_eq!(ended["reason"], "backchannel_logout");
    let refreshed = events
        .iter()
        .find(|e| e["kind"] == "refreshed")
        .expect("refresh");
    assert_eq!(refreshed["reason"], "proactive");
    assert_eq!(refreshed["refresh_token_rotated"], true);

    // No token, refresh token, ID token or CSRF token text, in stream or panel.
    assert!(tokens.len() >= 6, "{}", tokens.len());
    for t in &tokens {
        assert!(!raw.contains(t.as_str()), "token text in the stream");
        assert!(
            !panel.to_string().contains(t.as_str()),
            "token text in the panel"
        );
    }
}

#[tokio::test]
async fn demo_stream_of_one_session_never_shows_another() {
    let s = setup(true).await;
    let (alice, bob) = (browser(), browser());
    login(&s, &alice, "alice").await;
    login(&s, &bob, "bob").await;
    let resp = alice
        .get(format!("{}/api/whoami", s.base))
        .send()
        .await
        .expect("whoami");
    assert_eq!(resp.status(), StatusCode::OK);
    // Bob's stream holds his login only; the next event would be his own.
    let (events, raw) = events_until(&s, &bob, "session_created").await;
    assert_eq!(
        kinds(&events),
        ["login_redirect", "code_exchanged", "session_created"]
    );
    assert!(
        raw.contains("\"sub\":\"bob\"") && !raw.contains("alice"),
        "{raw}"
    );
    // No session cookie, no stream: 204 (EventSource does not reconnect).
    let anonymous = browser()
        .get(format!("{}/demo/events", s.base))
        .send()
        .await
        .expect("events");
    assert_eq!(anonymous.status(), StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn serve_has_no_demo_stream() {
    let s = setup(false).await;
    let alice = browser();
    login(&s, &alice, "alice").await;
    for path in ["/demo/events", "/demo/session"] {
        let resp = alice
            .get(format!("{}{path}", s.base))
            .send()
            .await
            .expect("get");
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{path}");
    }
}
