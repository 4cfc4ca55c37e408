//! A second real OpenID Provider for integration tests: django-oauth-toolkit
//! (PyPI, pinned in `tests/django-idp/requirements.txt`) with OIDC on, run by
//! `tests/django-idp/serve.py` in a child Python process from the project's
//! virtualenv `tests/django-idp/.venv` (`./test.sh` installs it, through
//! `tests/django-idp/install.sh`).
//!
//! ```ignore
//! let idp = DjangoIdp::start(DotOptions {
//!     redirect_uris: vec![format!("{gateway}/auth/callback")],
//!     ..Default::default()
//! }).await;
//! // issuer: idp.issuer ("http://127.0.0.1:<port>/o"), client "portal" / "portal-secret",
//! // scopes "openid profile email roles", users alice/bob/carol (password = name),
//! // `sub` = the user's primary key: idp.sub("alice").
//! ```
//!
//! Each start is fresh: own port (the server binds port 0 and reports it),
//! own sqlite database in a temporary directory, own RSA signing key. The
//! process is killed and the directory removed on drop.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use url::Url;

use super::browser::{Browser, Landed};

/// Client id registered by default.
pub const CLIENT_ID: &str = "portal";
/// Client secret registered by default (DOT stores it hashed).
pub const CLIENT_SECRET: &str = "portal-secret";
/// The scopes DOT knows here. It refuses unknown scopes, so no
/// `offline_access`: it issues refresh tokens without it.
pub const SCOPES: [&str; 4] = ["openid", "profile", "email", "roles"];
/// Users as `(username, password, roles)`; roles are Django groups, sent as
/// the `roles` claim when the `roles` scope is granted.
pub const USERS: [(&str, &str, &[&str]); 3] = [
    ("alice", "alice", &["admin", "hr"]),
    ("bob", "bob", &["hr"]),
    ("carol", "carol", &[]),
];

/// Migrations, seeding and an RSA key take a few seconds; more on a loaded CI machine.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Settings for the IdP and its one confidential client.
#[derive(Debug, Clone)]
pub struct DotOptions {
    pub client_id: String,
    pub client_secret: String,
    /// Exact redirect URIs. Empty: a placeholder.
    pub redirect_uris: Vec<String>,
    pub post_logout_redirect_uris: Vec<String>,
    /// DOT's `ACCESS_TOKEN_EXPIRE_SECONDS`.
    pub access_token_seconds: u64,
}

impl Default for DotOptions {
    fn default() -> Self {
        DotOptions {
            client_id: CLIENT_ID.to_owned(),
            client_secret: CLIENT_SECRET.to_owned(),
            redirect_uris: Vec::new(),
            post_logout_redirect_uris: Vec::new(),
            access_token_seconds: 300,
        }
    }
}

/// A running django-oauth-toolkit; killed on drop.
pub struct DjangoIdp {
    /// `http://127.0.0.1:<port>/o` (DOT's issuer is its URL prefix).
    pub issuer: String,
    pub port: u16,
    pub options: DotOptions,
    /// Username -> `sub` (DOT's `sub` is the user's primary key).
    subs: BTreeMap<String, String>,
    child: Child,
    // Held open: serve.py exits when its stdin closes (test process gone).
    _stdin: Option<ChildStdin>,
    _stdout: BufReader<ChildStdout>,
    stderr: Arc<Mutex<String>>,
    _data: tempfile::TempDir,
    http: reqwest::Client,
}

/// `tests/django-idp`: `serve.py`, `requirements.txt`, `.venv`.
pub fn idp_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/django-idp")
}

fn venv_python(dir: &Path) -> PathBuf {
    let python = dir.join(".venv/bin/python");
    let installed = dir.join(".venv/installed-requirements.txt");
    if !python.is_file() || !installed.is_file() {
        panic!(
            "django-oauth-toolkit is not installed: run `tests/django-idp/install.sh` \
             (./test.sh runs it) to create the virtualenv {}",
            dir.join(".venv").display()
        );
    }
    python
}

impl DjangoIdp {
    /// Starts a fresh IdP and waits until its discovery document answers.
    pub async fn start(opts: DotOptions) -> DjangoIdp {
        let dir = idp_dir();
        let python = venv_python(&dir);
        let data = tempfile::Builder::new()
            .prefix("portcullis-dot-")
            .tempdir()
            .expect("create IdP data dir");

        let mut cmd = Command::new(python);
        cmd.arg("serve.py")
            .args(["--port", "0", "--data-dir"])
            .arg(data.path())
            .args(["--client-id", &opts.client_id])
            .args(["--client-secret", &opts.client_secret])
            .args([
                "--access-token-seconds",
                &opts.access_token_seconds.to_string(),
            ]);
        let redirect_uris = if opts.redirect_uris.is_empty() {
            vec!["http://127.0.0.1/unused-callback".to_owned()]
        } else {
            opts.redirect_uris.clone()
        };
        for uri in &redirect_uris {
            cmd.args(["--redirect-uri", uri]);
        }
        for uri in &opts.post_logout_redirect_uris {
            cmd.args(["--post-logout-redirect-uri", uri]);
        }
        let mut child = cmd
            .current_dir(&dir)
            .env_remove("DJANGO_SETTINGS_MODULE")
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run the django-idp virtualenv's python: {e}"));

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

        // serve.py prints `USERS {json}` after seeding, then `LISTENING <port>`.
        let waited = tokio::time::timeout(START_TIMEOUT, async {
            let mut subs = BTreeMap::new();
            let mut line = String::new();
            loop {
                line.clear();
                match stdout.read_line(&mut line).await {
                    Ok(0) => return Err("stdout closed before LISTENING".to_owned()),
                    Err(e) => return Err(format!("reading stdout: {e}")),
                    Ok(_) => {}
                }
                let line = line.trim();
                if let Some(users) = line.strip_prefix("USERS ") {
                    subs = serde_json::from_str(users)
                        .map_err(|e| format!("bad USERS line {line:?}: {e}"))?;
                } else if let Some(port) = line.strip_prefix("LISTENING ") {
                    let port = port
                        .parse::<u16>()
                        .map_err(|e| format!("bad LISTENING line {line:?}: {e}"))?;
                    return Ok((port, subs));
                }
            }
        })
        .await;
        let (port, subs) = match waited {
            Ok(Ok(started)) => started,
            failure => {
                let reason = match failure {
                    Err(_) => format!("no LISTENING line within {START_TIMEOUT:?}"),
                    Ok(Err(e)) => e,
                    Ok(Ok(_)) => unreachable!(),
                };
                let _ = child.start_kill();
                let status = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
                panic!(
                    "django-idp failed to start: {reason} (exit: {status:?})\n--- stderr ---\n{}",
                    stderr.lock().unwrap()
                );
            }
        };

        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .build()
            .expect("reqwest client");
        let idp = DjangoIdp {
            issuer: format!("http://127.0.0.1:{port}/o"),
            port,
            options: opts,
            subs,
            child,
            _stdin: stdin,
            _stdout: stdout,
            stderr,
            _data: data,
            http,
        };
        idp.wait_for_discovery().await;
        idp
    }

    async fn wait_for_discovery(&self) {
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        loop {
            let answer = self.http.get(self.discovery_url()).send().await;
            match answer {
                Ok(resp) if resp.status().is_success() => return,
                other => assert!(
                    tokio::time::Instant::now() < deadline,
                    "django-idp discovery not answering: {other:?}\n--- stderr ---\n{}",
                    self.stderr_log()
                ),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn discovery_url(&self) -> String {
        format!("{}/.well-known/openid-configuration", self.issuer)
    }

    /// `http://127.0.0.1:<port>` + `path` (path starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The `sub` DOT gives `username`.
    pub fn sub(&self, username: &str) -> &str {
        self.subs
            .get(username)
            .unwrap_or_else(|| panic!("no user {username} at the django-idp"))
    }

    /// Everything the IdP wrote to stderr so far (request log, errors).
    pub fn stderr_log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// The discovery document.
    pub async fn discovery(&self) -> Value {
        let resp = self
            .http
            .get(self.discovery_url())
            .send()
            .await
            .expect("GET discovery");
        assert!(resp.status().is_success(), "discovery: {}", resp.status());
        resp.json().await.expect("discovery JSON")
    }

    /// A token-endpoint call as the registered client (`client_secret_basic`),
    /// as an attacker holding the client secret and a stolen token would make it.
    pub async fn token_request(&self, form: &[(&str, &str)]) -> (StatusCode, Value) {
        let resp = self
            .http
            .post(format!("{}/token/", self.issuer))
            .basic_auth(&self.options.client_id, Some(&self.options.client_secret))
            .form(form)
            .send()
            .await
            .expect("POST token");
        let status = resp.status();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// The userinfo endpoint with `access_token`: 200 and the claims while
    /// the token lives at DOT, 401 once it is revoked or replaced.
    pub async fn userinfo(&self, access_token: &str) -> (StatusCode, Value) {
        let resp = self
            .http
            .get(format!("{}/userinfo/", self.issuer))
            .bearer_auth(access_token)
            .send()
            .await
            .expect("GET userinfo");
        let status = resp.status();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// Follows `start_url` in `browser` (e.g. the gateway's `/auth/login`),
    /// fills Django's login form (its CSRF token and `next` come from the
    /// form) and follows the redirects after it: back to the authorize
    /// endpoint, which skips consent for this client, then to the gateway.
    /// Redirects to a URL for which `stop` returns true are not followed.
    /// With wrong credentials the result is the login form again (200, with
    /// an element `id="error"`).
    pub async fn login(
        &self,
        browser: &mut Browser,
        start_url: &str,
        username: &str,
        password: &str,
        stop: impl Fn(&Url) -> bool,
    ) -> Landed {
        let page = match browser.navigate_until(start_url, &stop).await {
            Landed::Page(page) => page,
            stopped @ Landed::Stopped(_) => return stopped,
        };
        if !(page.url.as_str().starts_with(&self.url("/accounts/login/"))) {
            // Already logged in at the IdP, or an error page.
            return Landed::Page(page);
        }
        let action = page
            .form_action()
            .unwrap_or_else(|| panic!("no form on the login page {}: {}", page.url, page.body));
        let action = page.url.join(&action).expect("form action URL");
        let mut fields = page.form_inputs();
        for (name, value) in [("username", username), ("password", password)] {
            fields.retain(|(k, _)| k != name);
            fields.push((name.to_owned(), value.to_owned()));
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
}

impl Drop for DjangoIdp {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- django-idp {} stderr ---\n{}",
                self.issuer,
                self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
            );
        }
        // Killed before the data directory goes (fields drop after this).
        let _ = self.child.start_kill();
    }
}
