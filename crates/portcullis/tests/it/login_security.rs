//! The login refuses every bad callback and every bad ID token (docs/security.md
//! sections 1–4, 6 and 10). Each test runs the real gateway on a
//! loopback port against [`CraftedIdp`], a provider the test bends, and a
//! cookie-keeping client that does not follow redirects; a refused login must
//! answer 4xx/5xx *and* leave no session, neither for the browser (`/auth/me`
//! is 401) nor in the store.
//!
//! This file holds the harness and the code-flow tests (PKCE, state, `iss`,
//! discovery, `return_to`); `login_security/id_token.rs` the ID-token and
//! JWKS tests; `login_security/session_and_input.rs` the session id and
//! garbage-input tests.

#[path = "login_security/id_token.rs"]
mod id_token;
#[path = "login_security/login_cookie.rs"]
mod login_cookie;
#[path = "login_security/provider_params.rs"]
mod provider_params;
#[path = "login_security/session_and_input.rs"]
mod session_and_input;

use std::{future::Future, sync::Arc, time::Duration};

use base64::{Engine, engine::general_purpose::STANDARD};
use portcullis::session::{MemoryStore, SessionRecord, SessionStore, random_key_base64};
use reqwest::{Client, Response, StatusCode, header, redirect::Policy};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::common::crafted_idp::{CLIENT_ID, CLIENT_SECRET, CraftedIdp, IssParam, SUBJECT};

/// Session cookie name in the dev profile.
const SESSION_COOKIE: &str = "portcullis";

/// A gateway on 127.0.0.1:<port> in the dev profile, logging in against a crafted IdP.
struct Harness {
    idp: CraftedIdp,
    base: String,
    /// The gateway's config (for starting a replica of it).
    toml: String,
    store: Arc<dyn SessionStore>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Harness {
    /// Start the gateway. `extra_oidc` is TOML added to `[oidc]`. Discovery and
    /// JWKS are loaded now, so bend those on `idp` before calling this.
    async fn start(idp: CraftedIdp, extra_oidc: &str) -> Self {
        Self::start_with(idp, extra_oidc, Arc::new(MemoryStore::new()), None).await
    }

    /// [`start`](Self::start) with a given store and, optionally, a clock the test moves.
    async fn start_with(
        idp: CraftedIdp,
        extra_oidc: &str,
        store: Arc<dyn SessionStore>,
        clock: Option<Arc<dyn portcullis::time::Clock>>,
    ) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the gateway");
        let addr = listener.local_addr().expect("gateway address");
        let base = format!("http://{addr}");
        let toml = format!(
            r#"
[server]
listen = "{addr}"
public_url = "{base}"
profile = "dev"

[admin]
listen = ""

[oidc]
issuer = "{issuer}"
client_id = "{CLIENT_ID}"
client_secret = "{CLIENT_SECRET}"
{extra_oidc}

[session]
store = "memory"
encryption_keys = ["{key}"]
"#,
            issuer = idp.issuer,
            key = random_key_base64(),
        );
        let (_, server) =
            crate::common::gateway::serve_with_clock(listener, &toml, store.clone(), clock).await;
        Self {
            idp,
            base,
            toml,
            store,
            server,
        }
    }

    async fn with_defaults() -> Self {
        Self::start(CraftedIdp::start().await, "").await
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `GET /auth/login?return_to=...` (the value is form-encoded).
    async fn start_login(&self, browser: &Client, return_to: &str) -> Response {
        let mut url = url::Url::parse(&self.url("/auth/login")).expect("login URL");
        url.query_pairs_mut().append_pair("return_to", return_to);
        browser.get(url).send().await.expect("GET /auth/login")
    }

    /// Login → IdP `/authorize` → its redirect; returns the callback URL
    /// the IdP sent the browser to, without visiting it.
    async fn begin_login(&self, browser: &Client, return_to: &str) -> String {
        let resp = self.start_login(browser, return_to).await;
        let authorize = location(&resp);
        assert!(
            authorize.starts_with(&self.idp.url("/authorize?")),
            "login should redirect to the IdP, went to {authorize}"
        );
        let resp = browser
            .get(&authorize)
            .send()
            .await
            .expect("GET /authorize");
        assert_eq!(
            resp.status(),
            StatusCode::FOUND,
            "the crafted IdP redirects"
        );
        let callback = location(&resp);
        assert!(
            callback.starts_with(&self.url("/auth/callback?")),
            "IdP redirected to {callback}"
        );
        callback
    }

    /// The whole login up to and including `GET /auth/callback`.
    async fn login_until_callback(&self, browser: &Client) -> Response {
        let callback = self.begin_login(browser, "/").await;
        browser
            .get(callback)
            .send()
            .await
            .expect("GET /auth/callback")
    }

    /// A login that must succeed; returns the callback response.
    async fn login(&self, browser: &Client) -> Response {
        let resp = self.login_until_callback(browser).await;
        assert_eq!(location(&resp), "/", "login should end on return_to");
        resp
    }

    async fn me(&self, browser: &Client) -> (StatusCode, Value) {
        let resp = browser
            .get(self.url("/auth/me"))
            .send()
            .await
            .expect("GET /auth/me");
        let status = resp.status();
        (status, resp.json().await.expect("/auth/me answers JSON"))
    }

    async fn sessions_of(&self, sub: &str) -> Vec<SessionRecord> {
        self.store
            .list_by_sub(sub)
            .await
            .expect("store list_by_sub")
    }

    /// Neither the browser nor the store has a session for [`SUBJECT`].
    async fn assert_no_session(&self, browser: &Client) {
        let (status, body) = self.me(browser).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "/auth/me: {body}");
        assert_eq!(body["authenticated"], false);
        assert!(
            self.sessions_of(SUBJECT).await.is_empty(),
            "the store holds a session for {SUBJECT}"
        );
    }

    /// `resp` is a refusal with `status`, sets no session cookie, and no session exists.
    async fn assert_refused(&self, browser: &Client, resp: Response, status: StatusCode) -> Value {
        assert!(
            session_cookie(&resp).is_none(),
            "a refused login set a session cookie"
        );
        assert!(resp.headers().get(header::LOCATION).is_none());
        let got = resp.status();
        let body = resp.text().await.unwrap_or_default();
        assert_eq!(got, status, "body: {body}");
        self.assert_no_session(browser).await;
        serde_json::from_str(&body).unwrap_or(Value::Null)
    }
}

/// A browser: keeps cookies, follows no redirects.
fn browser() -> Client {
    Client::builder()
        .cookie_store(true)
        .redirect(Policy::none())
        .build()
        .expect("reqwest client")
}

/// The target of a 302 (the status the contract names for login redirects).
fn location(resp: &Response) -> String {
    assert_eq!(resp.status(), StatusCode::FOUND, "expected a 302 redirect");
    resp.headers()
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .expect("Location header")
        .to_string()
}

/// Every raw `Set-Cookie` of a response.
fn set_cookies(resp: &Response) -> Vec<String> {
    resp.headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_string))
        .collect()
}

/// The session cookie a response sets (non-empty value), if any.
fn session_cookie(resp: &Response) -> Option<String> {
    set_cookies(resp).into_iter().find_map(|c| {
        let value = c
            .split(';')
            .next()?
            .strip_prefix(&format!("{SESSION_COOKIE}="))?;
        (!value.is_empty()).then(|| value.to_string())
    })
}

/// Retry `attempt` every half second until it yields a value, or panic after `within`.
async fn eventually<T, F, Fut>(within: Duration, mut attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(value) = attempt().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn is_base64url(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

// ---- item 1: code flow, confidential client, exact redirect_uri, PKCE, fresh state and nonce

#[tokio::test]
async fn happy_path_logs_in_with_a_pkce_code_flow() {
    let h = Harness::with_defaults().await;
    let b = browser();
    let resp = h.login(&b).await;
    assert!(session_cookie(&resp).is_some());

    let (status, me) = h.me(&b).await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me["authenticated"], true);
    assert_eq!(me["user"]["sub"], SUBJECT);
    assert_eq!(me["user"]["name"], "User One");
    assert_eq!(h.sessions_of(SUBJECT).await.len(), 1);

    let authorize = h.idp.authorize_requests();
    assert_eq!(authorize.len(), 1);
    let a = &authorize[0];
    assert_eq!(a["response_type"], "code");
    assert_eq!(a["client_id"], CLIENT_ID);
    assert_eq!(a["redirect_uri"], h.url("/auth/callback"));
    assert!(a["scope"].split(' ').any(|s| s == "openid"), "{a:?}");
    assert_eq!(a["code_challenge_method"], "S256");
    assert_eq!(a["code_challenge"].len(), 43);
    assert!(is_base64url(&a["code_challenge"]));
    // At least 128 bits each, base64url.
    for name in ["state", "nonce"] {
        assert!(
            a[name].len() >= 22 && is_base64url(&a[name]),
            "{name}: {a:?}"
        );
    }
    assert!(!a.contains_key("client_secret"));

    let tokens = h.idp.token_requests();
    assert_eq!(tokens.len(), 1);
    let t = &tokens[0];
    assert_eq!(t.form["grant_type"], "authorization_code");
    assert!(t.form["code"].starts_with("code-"));
    assert_eq!(t.form["redirect_uri"], h.url("/auth/callback"));
    let verifier = &t.form["code_verifier"];
    assert!((43..=128).contains(&verifier.len()), "RFC 7636 length");
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(Sha256::digest(verifier.as_bytes()));
    assert_eq!(challenge, a["code_challenge"], "S256(code_verifier)");
    // client_secret_basic by default: the secret is in the header, not the form.
    let basic = format!(
        "Basic {}",
        STANDARD.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"))
    );
    assert_eq!(t.authorization.as_deref(), Some(basic.as_str()));
    assert!(!t.form.contains_key("client_secret"));
}

#[tokio::test]
async fn every_login_gets_fresh_state_nonce_and_pkce() {
    let h = Harness::with_defaults().await;
    let (one, two) = (browser(), browser());
    h.login(&one).await;
    h.login(&one).await;
    h.login(&two).await;
    let a = h.idp.authorize_requests();
    let t = h.idp.token_requests();
    assert_eq!((a.len(), t.len()), (3, 3));
    for (i, j) in [(0, 1), (0, 2), (1, 2)] {
        for name in ["state", "nonce", "code_challenge"] {
            assert_ne!(
                a[i][name], a[j][name],
                "{name} reused by logins {i} and {j}"
            );
        }
        assert_ne!(t[i].form["code_verifier"], t[j].form["code_verifier"]);
    }
}

#[tokio::test]
async fn client_secret_post_sends_the_credentials_in_the_form() {
    let idp = CraftedIdp::start().await;
    let h = Harness::start(idp, r#"token_endpoint_auth_method = "client_secret_post""#).await;
    let b = browser();
    h.login(&b).await;
    let t = &h.idp.token_requests()[0];
    assert_eq!(t.form["client_id"], CLIENT_ID);
    assert_eq!(t.form["client_secret"], CLIENT_SECRET);
    assert_eq!(t.authorization, None);
    assert_eq!(h.me(&b).await.0, StatusCode::OK);
}

// ---- item 3: state single use and bound to the browser; RFC 9207 iss; discovery issuer

#[tokio::test]
async fn replayed_callback_is_refused() {
    let h = Harness::with_defaults().await;
    let b = browser();
    let callback = h.begin_login(&b, "/").await;
    let first = b.get(&callback).send().await.expect("first callback");
    assert_eq!(location(&first), "/");
    let second = b.get(&callback).send().await.expect("replayed callback");
    assert!(session_cookie(&second).is_none());
    assert_eq!(second.status(), StatusCode::BAD_REQUEST);
    // The replay never reached the IdP, and the first session is untouched.
    assert_eq!(h.idp.token_requests().len(), 1);
    assert_eq!(h.sessions_of(SUBJECT).await.len(), 1);
    assert_eq!(h.me(&b).await.0, StatusCode::OK);
}

#[tokio::test]
async fn racing_callbacks_with_one_state_yield_one_session() {
    let h = Harness::with_defaults().await;
    let b = browser();
    let callback = h.begin_login(&b, "/").await;
    let (one, two) = tokio::join!(b.get(&callback).send(), b.get(&callback).send());
    let mut statuses = [
        one.expect("callback").status(),
        two.expect("callback").status(),
    ];
    statuses.sort();
    assert_eq!(statuses, [StatusCode::FOUND, StatusCode::BAD_REQUEST]);
    assert_eq!(h.idp.token_requests().len(), 1, "the code is redeemed once");
    assert_eq!(h.sessions_of(SUBJECT).await.len(), 1);
}

#[tokio::test]
async fn callback_without_the_login_cookie_is_refused() {
    let h = Harness::with_defaults().await;
    let callback = h.begin_login(&browser(), "/").await;
    let fresh = browser();
    let resp = fresh.get(&callback).send().await.expect("callback");
    h.assert_refused(&fresh, resp, StatusCode::BAD_REQUEST)
        .await;
    assert!(
        h.idp.token_requests().is_empty(),
        "code must not be redeemed"
    );
}

#[tokio::test]
async fn state_from_another_browser_is_refused() {
    let h = Harness::with_defaults().await;
    let (victim, attacker) = (browser(), browser());
    let victims_callback = h.begin_login(&victim, "/").await;
    // The attacker holds a login cookie of its own, just not the one this state is bound to.
    let _ = h.begin_login(&attacker, "/").await;
    let resp = attacker
        .get(&victims_callback)
        .send()
        .await
        .expect("callback");
    h.assert_refused(&attacker, resp, StatusCode::BAD_REQUEST)
        .await;
    assert!(
        h.idp.token_requests().is_empty(),
        "code must not be redeemed"
    );
}

#[tokio::test]
async fn wrong_iss_parameter_is_refused() {
    let h = Harness::with_defaults().await;
    h.idp
        .configure(|b| b.iss_param = IssParam::Value("https://evil.example".into()));
    let b = browser();
    let resp = h.login_until_callback(&b).await;
    h.assert_refused(&b, resp, StatusCode::BAD_REQUEST).await;
    assert!(h.idp.token_requests().is_empty());
}

#[tokio::test]
async fn missing_iss_parameter_is_refused_when_discovery_promises_it() {
    let h = Harness::with_defaults().await;
    h.idp.configure(|b| b.iss_param = IssParam::Omitted);
    let b = browser();
    let resp = h.login_until_callback(&b).await;
    h.assert_refused(&b, resp, StatusCode::BAD_REQUEST).await;
    assert!(h.idp.token_requests().is_empty());
}

#[tokio::test]
async fn missing_iss_parameter_is_accepted_when_not_promised() {
    let idp = CraftedIdp::start().await;
    idp.configure(|b| {
        b.iss_parameter_supported = false;
        b.iss_param = IssParam::Omitted;
    });
    let h = Harness::start(idp, "").await;
    let b = browser();
    h.login(&b).await;
    assert_eq!(h.me(&b).await.0, StatusCode::OK);
}

#[tokio::test]
async fn idp_error_response_creates_no_session() {
    let h = Harness::with_defaults().await;
    h.idp
        .configure(|b| b.authorize_error = Some("access_denied".into()));
    let b = browser();
    let resp = h.login_until_callback(&b).await;
    h.assert_refused(&b, resp, StatusCode::BAD_REQUEST).await;
    assert!(h.idp.token_requests().is_empty());
}

#[tokio::test]
async fn discovery_issuer_mismatch_makes_login_unavailable() {
    let idp = CraftedIdp::start().await;
    idp.configure(|b| b.discovery_issuer = Some("https://impostor.example".into()));
    let h = Harness::start(idp, "").await;
    let b = browser();
    let resp = h.start_login(&b, "/").await;
    let body = h
        .assert_refused(&b, resp, StatusCode::SERVICE_UNAVAILABLE)
        .await;
    assert_eq!(body["error"], "idp_unavailable");
    assert!(h.idp.authorize_requests().is_empty());
}

// ---- item 2: no open redirect through return_to

#[tokio::test]
async fn return_to_outside_the_origin_is_refused() {
    let h = Harness::with_defaults().await;
    let b = browser();
    // Raw query strings: what the query parser decodes is what must be refused.
    for query in [
        "return_to=//evil.example",
        "return_to=%2F%2Fevil.example",
        "return_to=/%5Cevil.example",
        "return_to=%2F%5Cevil.example",
        "return_to=https://evil.example",
        "return_to=https%3A%2F%2Fevil.example%2F",
        "return_to=javascript:alert(1)",
        "return_to=javascript%3Aalert%281%29",
        "return_to=%252F%252Fevil.example",
        "return_to=/%09/evil.example",
        "return_to=/%0D%0ASet-Cookie:%20x=1",
    ] {
        let resp = b
            .get(h.url(&format!("/auth/login?{query}")))
            .send()
            .await
            .expect("GET /auth/login");
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{query}");
        assert!(resp.headers().get(header::LOCATION).is_none(), "{query}");
    }
    assert!(h.idp.authorize_requests().is_empty());
}

#[tokio::test]
async fn return_to_path_with_query_survives_the_login_exactly() {
    let h = Harness::with_defaults().await;
    let b = browser();
    let callback = h.begin_login(&b, "/app?x=1").await;
    let resp = b.get(callback).send().await.expect("callback");
    assert_eq!(location(&resp), "/app?x=1");
    assert_eq!(h.me(&b).await.0, StatusCode::OK);
    // The IdP never sees return_to: it lives in the sealed login cookie.
    let a = &h.idp.authorize_requests()[0];
    assert!(a.values().all(|v| !v.contains("/app")), "{a:?}");
    assert_eq!(json!(a["redirect_uri"]), json!(h.url("/auth/callback")));
}
