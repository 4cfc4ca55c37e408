//! A real OpenID Provider for integration tests: the `oidc-provider` npm
//! package (pinned in `tests/oidc-provider/package-lock.json`) run by
//! `tests/oidc-provider/server.mjs` in a child `node` process.
//!
//! Needs Node.js >= 20.19 and, once per checkout, `npm ci --prefix tests/oidc-provider`.
//!
//! ```ignore
//! let op = OidcProvider::start(OpOptions {
//!     redirect_uris: vec![format!("http://127.0.0.1:{gw_port}/auth/callback")],
//!     ..Default::default()
//! }).await;
//! // issuer: op.issuer ("http://127.0.0.1:<port>"), client "portal" / "portal-secret",
//! // scopes "openid profile email roles offline_access", users alice/bob/carol (password = name).
//! ```
//!
//! [`OidcProvider::login`] walks a [`Browser`] (`common::browser`) through
//! the OP's login form (the consent prompt is granted automatically by the OP).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use url::Url;

// The browser lived here first; its users import it from here too (not every
// test binary uses every item).
#[allow(unused_imports)]
pub use super::browser::{Browser, Landed, jwt_payload, pkce_pair, query_map};

/// Client id registered by default.
pub const CLIENT_ID: &str = "portal";
/// Client secret registered by default.
pub const CLIENT_SECRET: &str = "portal-secret";
/// Scopes the gateway should request: `roles` carries the `roles` claim (also
/// in the ID token), `offline_access` is optional for refresh tokens here.
pub const SCOPES: [&str; 5] = ["openid", "profile", "email", "roles", "offline_access"];
/// Default users as `(username, password, roles)`.
pub const USERS: [(&str, &str, &[&str]); 3] = [
    ("alice", "alice", &["admin", "hr"]),
    ("bob", "bob", &["hr"]),
    ("carol", "carol", &[]),
];

const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Settings for the OP and its single registered client (plus `extra_clients`).
#[derive(Debug, Clone)]
pub struct OpOptions {
    pub client_id: String,
    pub client_secret: String,
    /// Exact redirect URIs (http on 127.0.0.1 is fine). Empty: a placeholder.
    pub redirect_uris: Vec<String>,
    pub post_logout_redirect_uris: Vec<String>,
    /// `client_secret_basic` (default), `client_secret_post`, ...
    pub token_endpoint_auth_method: String,
    /// Seconds.
    pub access_token_ttl: u64,
    /// true: every refresh returns a new refresh token and the old one is
    /// consumed; reusing it revokes the whole grant.
    pub rotate_refresh_token: bool,
    /// Registered with `backchannel_logout_session_required: true`.
    pub backchannel_logout_uri: Option<String>,
    /// Seconds.
    pub id_token_ttl: u64,
    /// Seconds.
    pub refresh_token_ttl: u64,
    /// `RS256` (OP default) or `ES256`.
    pub id_token_signed_response_alg: Option<String>,
    /// Issuer host name; the OP always listens on 127.0.0.1.
    pub issuer_host: String,
    /// Replaces the default users: `[{"sub", "password", "claims": {...}}]`.
    pub users: Option<Value>,
    /// More clients, as raw oidc-provider client metadata.
    pub extra_clients: Vec<Value>,
}

impl Default for OpOptions {
    fn default() -> Self {
        OpOptions {
            client_id: CLIENT_ID.to_owned(),
            client_secret: CLIENT_SECRET.to_owned(),
            redirect_uris: Vec::new(),
            post_logout_redirect_uris: Vec::new(),
            token_endpoint_auth_method: "client_secret_basic".to_owned(),
            access_token_ttl: 300,
            rotate_refresh_token: true,
            backchannel_logout_uri: None,
            id_token_ttl: 300,
            refresh_token_ttl: 24 * 60 * 60,
            id_token_signed_response_alg: None,
            issuer_host: "127.0.0.1".to_owned(),
            users: None,
            extra_clients: Vec::new(),
        }
    }
}

impl OpOptions {
    fn to_config(&self) -> Value {
        let redirect_uris = if self.redirect_uris.is_empty() {
            vec!["http://127.0.0.1/unused-callback".to_owned()]
        } else {
            self.redirect_uris.clone()
        };
        let mut client = json!({
            "client_id": self.client_id,
            "client_secret": self.client_secret,
            "redirect_uris": redirect_uris,
            "post_logout_redirect_uris": self.post_logout_redirect_uris,
            "token_endpoint_auth_method": self.token_endpoint_auth_method,
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
        });
        if let Some(uri) = &self.backchannel_logout_uri {
            client["backchannel_logout_uri"] = json!(uri);
            client["backchannel_logout_session_required"] = json!(true);
        }
        if let Some(alg) = &self.id_token_signed_response_alg {
            client["id_token_signed_response_alg"] = json!(alg);
        }
        let mut clients = vec![client];
        clients.extend(self.extra_clients.iter().cloned());
        let mut config = json!({
            "issuer_host": self.issuer_host,
            "clients": clients,
            "access_token_ttl": self.access_token_ttl,
            "id_token_ttl": self.id_token_ttl,
            "refresh_token_ttl": self.refresh_token_ttl,
            "rotate_refresh_token": self.rotate_refresh_token,
        });
        if let Some(users) = &self.users {
            config["users"] = users.clone();
        }
        config
    }
}

/// A running `oidc-provider`; killed on drop.
pub struct OidcProvider {
    /// `http://127.0.0.1:<port>` (no trailing slash).
    pub issuer: String,
    pub port: u16,
    pub options: OpOptions,
    child: Child,
    // Held open: the server exits when its stdin closes (test process gone).
    _stdin: Option<ChildStdin>,
    _stdout: BufReader<ChildStdout>,
    stderr: Arc<Mutex<String>>,
    _config: tempfile::TempPath,
    http: reqwest::Client,
}

/// Directory holding `server.mjs` and `package.json`.
pub fn provider_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/oidc-provider")
}

fn check_installed(dir: &Path) {
    if !dir
        .join("node_modules/oidc-provider/package.json")
        .is_file()
    {
        panic!(
            "oidc-provider is not installed: run `npm ci` in tests/oidc-provider \
             (e.g. `npm ci --prefix tests/oidc-provider` from the workspace root); looked in {}",
            dir.display()
        );
    }
}

impl OidcProvider {
    /// Starts a fresh OP (own port, own keys, empty state) and waits until it listens.
    pub async fn start(opts: OpOptions) -> OidcProvider {
        let dir = provider_dir();
        check_installed(&dir);

        let mut config = tempfile::Builder::new()
            .prefix("portcullis-op-")
            .suffix(".json")
            .tempfile()
            .expect("create OP config file");
        serde_json::to_writer_pretty(&mut config, &opts.to_config()).expect("write OP config");
        let config = config.into_temp_path();

        let mut child = Command::new("node")
            .arg("server.mjs")
            .arg(&*config)
            .current_dir(&dir)
            .env("OP_EXIT_ON_STDIN_EOF", "1")
            .env_remove("OP_CONFIG")
            .env_remove("OP_PORT")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run `node` (Node.js >= 20.19 needed): {e}"));

        let stderr = Arc::new(Mutex::new(String::new()));
        {
            let mut pipe = child.stderr.take().expect("stderr piped");
            let buf = stderr.clone();
            tokio::spawn(async move {
                let mut chunk = [0u8; 8192];
                loop {
                    match pipe.read(&mut chunk).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => buf
                            .lock()
                            .unwrap()
                            .push_str(&String::from_utf8_lossy(&chunk[..n])),
                    }
                }
            });
        }
        let stdin = child.stdin.take();
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout piped"));

        let waited = tokio::time::timeout(START_TIMEOUT, async {
            let mut line = String::new();
            loop {
                line.clear();
                match stdout.read_line(&mut line).await {
                    Ok(0) => return Err("stdout closed before LISTENING".to_owned()),
                    Err(e) => return Err(format!("reading stdout: {e}")),
                    Ok(_) => {
                        if let Some(port) = line.trim().strip_prefix("LISTENING ") {
                            return port
                                .parse::<u16>()
                                .map_err(|e| format!("bad LISTENING line {line:?}: {e}"));
                        }
                    }
                }
            }
        })
        .await;

        let port = match waited {
            Ok(Ok(port)) => port,
            failure => {
                let reason = match failure {
                    Err(_) => format!("no LISTENING line within {START_TIMEOUT:?}"),
                    Ok(Err(e)) => e,
                    Ok(Ok(_)) => unreachable!(),
                };
                let _ = child.start_kill();
                let status = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
                tokio::time::sleep(Duration::from_millis(100)).await;
                panic!(
                    "oidc-provider failed to start: {reason} (exit: {status:?})\n--- stderr ---\n{}",
                    stderr.lock().unwrap()
                );
            }
        };

        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .build()
            .expect("reqwest client");

        OidcProvider {
            issuer: format!("http://{}:{port}", opts.issuer_host),
            port,
            options: opts,
            child,
            _stdin: stdin,
            _stdout: stdout,
            stderr,
            _config: config,
            http,
        }
    }

    /// `issuer` + `path` (path starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.issuer)
    }

    /// Everything the OP wrote to stderr so far.
    pub fn stderr_log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    async fn get_json(&self, path: &str) -> Value {
        let resp = self
            .http
            .get(self.url(path))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        assert!(resp.status().is_success(), "GET {path}: {}", resp.status());
        resp.json()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// `/.well-known/openid-configuration`.
    pub async fn discovery(&self) -> Value {
        self.get_json("/.well-known/openid-configuration").await
    }

    /// Revocation endpoint calls seen, oldest first: `[{seq, at, status,
    /// client_id, token_type_hint, token, found, kind ("RefreshToken" |
    /// "AccessToken"), grant_id, sub}]`. `found` is false for unknown or
    /// already-dead tokens (the endpoint still answers 200).
    pub async fn revocations(&self) -> Value {
        self.get_json("/__test/revocations").await
    }

    /// Provider events, oldest first: `[{seq, at, type, ...}]`. Types include
    /// `login.success`, `login.failed`, `authorization.success` (client_id, sub,
    /// sid), `authorization.error`, `grant.success` / `grant.error` (token
    /// endpoint; grant_type, error, error_detail), `refresh_token.saved` /
    /// `.consumed` / `.destroyed` (jti = token value, grant_id, rotations),
    /// `access_token.*`, `authorization_code.*`, `grant.revoked` (grant_id,
    /// route), `end_session.success`, `backchannel.success` / `.error`,
    /// `userinfo.error`, `revocation.error`, `server_error`.
    pub async fn events(&self) -> Value {
        self.get_json("/__test/events").await
    }

    /// Events of one type.
    pub async fn events_of(&self, kind: &str) -> Vec<Value> {
        match self.events().await {
            Value::Array(all) => all.into_iter().filter(|e| e["type"] == kind).collect(),
            _ => Vec::new(),
        }
    }

    /// True when a consumed (rotated) refresh token was presented again; the
    /// OP then revoked the whole grant.
    pub async fn refresh_token_reuse_detected(&self) -> bool {
        self.events_of("grant.error").await.iter().any(|e| {
            e["error_detail"]
                .as_str()
                .is_some_and(|d| d.contains("already used"))
        })
    }

    /// Number of successful refresh_token grants.
    pub async fn refresh_count(&self) -> usize {
        self.events_of("grant.success")
            .await
            .iter()
            .filter(|e| e["grant_type"] == "refresh_token")
            .count()
    }

    /// Logins seen: `[{client_id, sub, sid}]` (sid as put in the ID token).
    pub async fn sessions(&self) -> Value {
        self.get_json("/__test/sessions").await
    }

    /// Clears recorded events and revocations, and injected faults.
    pub async fn reset_records(&self) {
        let resp = self
            .http
            .post(self.url("/__test/reset"))
            .send()
            .await
            .expect("reset");
        assert!(resp.status().is_success());
    }

    async fn post_json(&self, path: &str, body: Value) -> Value {
        let resp = self
            .http
            .post(self.url(path))
            .json(&body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"));
        assert!(resp.status().is_success(), "POST {path}: {}", resp.status());
        resp.json()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"))
    }

    /// Kills the grants of `sub` (all users when None) at the OP, with their
    /// access and refresh tokens, as an admin revoking the user's sessions
    /// would: the next refresh answers `invalid_grant`, userinfo 401.
    /// Returns the revoked grant ids.
    pub async fn revoke_grants(&self, sub: Option<&str>) -> Vec<String> {
        let body = match sub {
            Some(sub) => json!({ "sub": sub }),
            None => json!({}),
        };
        let answer = self.post_json("/__test/revoke-grants", body).await;
        answer["revoked"]
            .as_array()
            .map(|ids| {
                ids.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Fault injection: requests to `path` (e.g. "/token", "/me", "/jwks",
    /// "/.well-known/openid-configuration") get `status` and `body` (JSON
    /// content type) instead of the OP's answer, `times` times (None: until
    /// cleared).
    pub async fn fail_path(&self, path: &str, status: u16, body: &str, times: Option<u32>) {
        let mut fault = json!({ "path": path, "status": status, "body": body });
        if let Some(times) = times {
            fault["times"] = json!(times);
        }
        self.post_json("/__test/fault", fault).await;
    }

    /// Fault injection: requests to `path` wait `delay` before being handled normally.
    pub async fn delay_path(&self, path: &str, delay: Duration) {
        self.post_json(
            "/__test/fault",
            json!({ "path": path, "delay_ms": delay.as_millis() as u64 }),
        )
        .await;
    }

    /// Raw fault: `{path, status?, delay_ms?, body?, content_type?, times?}`.
    pub async fn set_fault(&self, fault: Value) {
        self.post_json("/__test/fault", fault).await;
    }

    /// Removes all injected faults.
    pub async fn clear_faults(&self) {
        self.post_json("/__test/fault", json!({ "clear": true }))
            .await;
    }

    /// Makes the OP send a back-channel logout token for `sub` (with the sid
    /// of the latest login of `sub`, or `sid` when given) to every client with
    /// a `backchannel_logout_uri`. Returns `[{client_id, sub, sid, ok, error?}]`;
    /// `ok` means the client answered 200/204.
    pub async fn backchannel_logout(&self, sub: &str, sid: Option<&str>) -> Value {
        let mut body = json!({ "sub": sub });
        if let Some(sid) = sid {
            body["sid"] = json!(sid);
        }
        let resp = self
            .http
            .post(self.url("/__test/backchannel-logout"))
            .json(&body)
            .send()
            .await
            .expect("backchannel logout trigger");
        assert!(
            resp.status().is_success(),
            "backchannel logout: {}",
            resp.status()
        );
        resp.json().await.expect("backchannel logout answer")
    }

    /// Follows `start_url` in `browser` (e.g. the gateway's `/auth/login` or an
    /// authorize URL), fills the OP login form with `username`/`password` and
    /// follows the redirects after it (the OP grants consent by itself).
    /// Redirects to a URL for which `stop` returns true are not followed.
    /// With wrong credentials the result is the login page again (200, with an
    /// element `id="error"`).
    pub async fn login(
        &self,
        browser: &mut Browser,
        start_url: &str,
        username: &str,
        password: &str,
        stop: impl Fn(&Url) -> bool,
    ) -> Landed {
        let landed = browser.navigate_until(start_url, &stop).await;
        let page = match landed {
            Landed::Page(page) => page,
            stopped @ Landed::Stopped(_) => return stopped,
        };
        let url = page.url.clone();
        if !(url.as_str().starts_with(&self.issuer) && url.path().starts_with("/interaction/")) {
            // Already logged in at the OP, or an error page.
            return Landed::Page(page);
        }
        let action = page
            .form_action()
            .unwrap_or_else(|| panic!("no form on OP page {url}: {}", page.body));
        let action = url.join(&action).expect("form action URL");
        let resp = browser
            .request(
                Method::POST,
                action.as_str(),
                Some(&[("username", username), ("password", password)]),
            )
            .await;
        browser.follow_until(resp, action, &stop).await
    }

    /// RP-initiated logout in `browser`: follows `logout_url` (the OP's
    /// end_session URL with id_token_hint, post_logout_redirect_uri, state)
    /// and confirms the OP's "sign out?" form with `logout=yes` (this ends the
    /// OP session, revokes the grant and sends back-channel logout tokens).
    /// Redirects to a URL for which `stop` returns true (e.g. the
    /// post_logout_redirect_uri) are not followed.
    pub async fn rp_logout(
        &self,
        browser: &mut Browser,
        logout_url: &str,
        stop: impl Fn(&Url) -> bool,
    ) -> Landed {
        let page = match browser.navigate_until(logout_url, &stop).await {
            Landed::Page(page) => page,
            stopped @ Landed::Stopped(_) => return stopped,
        };
        let Some(action) = page.form_action() else {
            return Landed::Page(page);
        };
        let action = page.url.join(&action).expect("logout form action");
        let mut fields = page.form_inputs();
        if !fields.iter().any(|(k, _)| k == "logout") {
            fields.push(("logout".to_owned(), "yes".to_owned()));
        }
        let fields: Vec<(&str, &str)> = fields
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let resp = browser
            .request(Method::POST, action.as_str(), Some(&fields))
            .await;
        browser.follow_until(resp, action, &stop).await
    }

    /// A PKCE S256 authorize URL for the default client (state/nonce given).
    pub fn authorize_url(
        &self,
        redirect_uri: &str,
        state: &str,
        nonce: &str,
        challenge: &str,
    ) -> String {
        let mut url = Url::parse(&self.url("/auth")).unwrap();
        url.query_pairs_mut()
            .append_pair("client_id", &self.options.client_id)
            .append_pair("response_type", "code")
            .append_pair("scope", &SCOPES.join(" "))
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("state", state)
            .append_pair("nonce", nonce)
            .append_pair("code_challenge", challenge)
            .append_pair("code_challenge_method", "S256");
        url.into()
    }
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- oidc-provider {} stderr ---\n{}",
                self.issuer,
                self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
            );
        }
        let _ = self.child.start_kill();
    }
}
