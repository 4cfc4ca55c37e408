//! The development IdP of `portcullis demo` sends Back-Channel Logout tokens
//! the gateway accepts: logging out at the IdP's `end_session` ends that
//! user's gateway session and no one else's.

use portcullis::session::SessionRecords;
use std::{sync::Arc, time::Duration};

use portcullis::{Gateway, config::Config, session::MemoryStore};
use portcullis_demo::{DevIdp, DevIdpConfig};
use reqwest::{Client, StatusCode, header};
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

async fn setup() -> Setup {
    let gw_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", gw_listener.local_addr().expect("addr"));
    let idp_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let issuer = format!("http://{}", idp_listener.local_addr().expect("addr"));
    let mut cfg = DevIdpConfig::new(&issuer, CLIENT_ID, CLIENT_SECRET);
    cfg.redirect_uris = vec![format!("{base}/auth/callback")];
    cfg.post_logout_redirect_uris = vec![format!("{base}/")];
    cfg.backchannel_logout_uri = Some(format!("{base}/auth/backchannel-logout"));
    let idp = DevIdp::new(cfg).expect("dev IdP");
    let idp_task = tokio::spawn(async move {
        let _ = idp.serve(idp_listener).await;
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
[session]
store = "memory"
"#
    );
    let config = Config::from_toml_str(&toml, Vec::<(String, String)>::new()).expect("config");
    let store = Arc::new(MemoryStore::new());
    let gateway = Gateway::builder(config)
        .store(store.clone())
        .build()
        .await
        .expect("gateway");
    // The production path: the serving workers, as `portcullis serve`.
    let served = gateway.clone();
    let gw_task = tokio::spawn(async move {
        let _ = portcullis::serve_public(&served, gw_listener, std::future::pending()).await;
    });
    Setup {
        base,
        issuer,
        store,
        tasks: vec![idp_task, gw_task],
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

/// `(name, value)` of each hidden input of the IdP's login form.
fn hidden_inputs(html: &str) -> Vec<(String, String)> {
    let attr = |tag: &str, name: &str| {
        let start = tag.find(&format!("{name}=\""))? + name.len() + 2;
        let len = tag[start..].find('"')?;
        Some(
            tag[start..start + len]
                .replace("&quot;", "\"")
                .replace("&#39;", "'")
                .replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&amp;", "&"),
        )
    };
    html.split("<input")
        .skip(1)
        .filter_map(|rest| rest.split('>').next())
        .filter(|tag| tag.contains("type=\"hidden\""))
        .filter_map(|tag| Some((attr(tag, "name")?, attr(tag, "value")?)))
        .collect()
}

/// Log `user` in through the gateway and the dev IdP's form.
async fn login(s: &Setup, b: &Client, user: &str) {
    let resp = b
        .get(format!("{}/auth/login", s.base))
        .send()
        .await
        .expect("login");
    let authorize = location(&resp);
    let page = b.get(&authorize).send().await.expect("authorize");
    assert_eq!(page.status(), StatusCode::OK);
    let mut form = hidden_inputs(&page.text().await.expect("html"));
    form.push(("username".into(), user.into()));
    form.push(("password".into(), user.into()));
    let resp = b
        .post(format!("{}/authorize", s.issuer))
        .form(&form)
        .send()
        .await
        .expect("submit login");
    assert_eq!(resp.status(), StatusCode::FOUND, "login accepted");
    let callback = location(&resp);
    assert!(callback.starts_with(&s.base), "{callback}");
    let resp = b.get(&callback).send().await.expect("callback");
    assert_eq!(
        resp.status(),
        StatusCode::FOUND,
        "callback creates the session"
    );
}

async fn me(s: &Setup, b: &Client) -> StatusCode {
    b.get(format!("{}/auth/me", s.base))
        .send()
        .await
        .expect("me")
        .status()
}

#[tokio::test]
async fn logout_at_the_dev_idp_ends_the_gateway_session() {
    let s = setup().await;
    let (alice, bob) = (browser(), browser());
    login(&s, &alice, "alice").await;
    login(&s, &bob, "bob").await;
    assert_eq!(me(&s, &alice).await, StatusCode::OK);
    assert_eq!(me(&s, &bob).await, StatusCode::OK);

    // Alice signs out at the IdP (not through the gateway) with the ID token as hint.
    let record = s.store.list_by_sub("alice").await.expect("list")[0].clone();
    assert!(record.sid.is_some());
    let mut url = url::Url::parse(&format!("{}/end_session", s.issuer)).expect("url");
    url.query_pairs_mut().append_pair(
        "id_token_hint",
        record.tokens.id_token.as_deref().expect("id token"),
    );
    let resp = alice.get(url).send().await.expect("end_session");
    assert!(resp.status().is_success(), "{}", resp.status());

    // The IdP delivered the logout token before answering.
    assert_eq!(me(&s, &alice).await, StatusCode::UNAUTHORIZED);
    assert!(s.store.list_by_sub("alice").await.expect("list").is_empty());
    assert_eq!(me(&s, &bob).await, StatusCode::OK);
}
