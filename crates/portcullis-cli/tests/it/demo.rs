//! `portcullis demo` end to end: the real binary, its development IdP's login
//! form, the session cookie, the proxied sample API, CSRF and logout; its
//! admin `/metrics` with exact values, checked by `promtool check metrics`.

use std::{process::Stdio, sync::Arc, time::Duration};

use reqwest::{StatusCode, cookie::CookieStore, header};
use serde_json::Value;
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

struct Demo {
    base: String,
    /// `http://ADDR` of the admin listener.
    admin: String,
    _child: Child,
    _data: tempfile::TempDir,
}

/// Start `portcullis demo` on free ports and wait for its banner.
async fn start_demo(extra: &[&str]) -> Demo {
    let data = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args([
            "demo",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(data.path())
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn portcullis demo");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    // The banner: `open <url>` first, `admin http://ADDR/healthz …` later,
    // `store …` last.
    let (base, admin) = tokio::time::timeout(Duration::from_secs(60), async {
        let (mut base, mut admin) = (None, None);
        while let Some(line) = lines.next_line().await.expect("read stdout") {
            let line = line.trim();
            if let Some(url) = line.strip_prefix("open") {
                base = Some(url.trim().trim_end_matches('/').to_string());
            } else if let Some(urls) = line.strip_prefix("admin") {
                let healthz = urls.split_whitespace().next().expect("admin URL");
                admin = healthz.strip_suffix("/healthz").map(str::to_string);
            } else if line.starts_with("store") {
                break;
            }
        }
        (
            base.expect("demo exited before printing its URL"),
            admin.expect("demo printed no admin listener"),
        )
    })
    .await
    .expect("demo did not start within 60 s");
    // Keep draining stdout so the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Demo {
        base,
        admin,
        _child: child,
        _data: data,
    }
}

struct Browser {
    http: reqwest::Client,
    jar: Arc<reqwest::cookie::Jar>,
}

impl Browser {
    fn new() -> Self {
        let jar = Arc::new(reqwest::cookie::Jar::default());
        let http = reqwest::Client::builder()
            .cookie_provider(jar.clone())
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client");
        Self { http, jar }
    }

    fn cookie(&self, url: &str, name: &str) -> Option<String> {
        let url = url.parse().expect("url");
        let header = self.jar.cookies(&url)?;
        header
            .to_str()
            .ok()?
            .split("; ")
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")).map(str::to_string))
    }

    /// The whole login: gateway → IdP form → form post → callback → app.
    async fn login(&self, base: &str, user: &str) {
        let resp = self
            .http
            .get(format!("{base}/auth/login?return_to=/"))
            .send()
            .await
            .expect("login");
        assert_eq!(resp.status(), StatusCode::FOUND);
        let authorize = location(&resp);
        let form = self.http.get(&authorize).send().await.expect("authorize");
        assert_eq!(form.status(), StatusCode::OK);
        let html = form.text().await.expect("form html");
        let mut fields = hidden_inputs(&html);
        fields.push(("username".into(), user.into()));
        fields.push(("password".into(), user.into()));
        let action = authorize
            .split('?')
            .next()
            .expect("authorize url")
            .to_string();
        let resp = self
            .http
            .post(&action)
            .form(&fields)
            .send()
            .await
            .expect("form post");
        assert_eq!(
            resp.status(),
            StatusCode::FOUND,
            "IdP accepted the password"
        );
        let callback = location(&resp);
        assert!(callback.starts_with(&format!("{base}/auth/callback?")));
        let resp = self.http.get(&callback).send().await.expect("callback");
        assert_eq!(resp.status(), StatusCode::FOUND, "callback succeeded");
        assert_eq!(location(&resp), "/");
    }

    async fn get_json(&self, url: String) -> (StatusCode, Value) {
        let resp = self.http.get(url).send().await.expect("GET");
        let status = resp.status();
        (status, resp.json().await.unwrap_or(Value::Null))
    }
}

fn location(resp: &reqwest::Response) -> String {
    resp.headers()
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .expect("Location header")
        .to_string()
}

/// `name`/`value` of every `<input type="hidden">` in the page.
fn hidden_inputs(html: &str) -> Vec<(String, String)> {
    html.split("<input")
        .skip(1)
        .filter(|tag| tag.contains("type=\"hidden\""))
        .filter_map(|tag| Some((attr(tag, "name")?, attr(tag, "value")?)))
        .collect()
}

fn attr(tag: &str, name: &str) -> Option<String> {
    let start = tag.find(&format!("{name}=\""))? + name.len() + 2;
    let end = start + tag[start..].find('"')?;
    Some(
        tag[start..end]
            .replace("&quot;", "\"")
            .replace("&#39;", "'")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&"),
    )
}

#[tokio::test]
async fn demo_login_whoami_api_and_logout() {
    let demo = start_demo(&[]).await;
    let base = demo.base.as_str();
    let alice = Browser::new();

    let (status, body) = alice.get_json(format!("{base}/auth/me")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["authenticated"], false);

    // The sample SPA is served by the gateway.
    let page = alice
        .http
        .get(format!("{base}/"))
        .send()
        .await
        .expect("spa");
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.text().await.expect("html").contains("portcullis demo"));

    alice.login(base, "alice").await;

    let (status, me) = alice.get_json(format!("{base}/auth/me")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["authenticated"], true);
    assert_eq!(me["user"]["preferred_username"], "alice");
    assert_eq!(me["roles"], serde_json::json!(["admin", "hr"]));
    assert!(me["session"]["expires_at"].is_string());

    let (status, who) = alice.get_json(format!("{base}/api/whoami")).await;
    assert_eq!(status, StatusCode::OK, "{who}");
    assert_eq!(who["sub"], "alice");
    assert!(who["token_expires_at"].as_i64().is_some());
    let (status, _) = alice.get_json(format!("{base}/api/admin/ping")).await;
    assert_eq!(status, StatusCode::OK);

    // Unsafe calls need the CSRF header; with it the body reaches the API.
    let xsrf = alice.cookie(base, "XSRF-TOKEN").expect("XSRF-TOKEN cookie");
    let refused = alice
        .http
        .post(format!("{base}/api/echo"))
        .json(&serde_json::json!({"hello": "world"}))
        .send()
        .await
        .expect("echo");
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let echoed = alice
        .http
        .post(format!("{base}/api/echo"))
        .header("X-XSRF-TOKEN", &xsrf)
        .header(header::ORIGIN, base)
        .json(&serde_json::json!({"hello": "world"}))
        .send()
        .await
        .expect("echo");
    assert_eq!(echoed.status(), StatusCode::OK);
    let body: Value = echoed.json().await.expect("json");
    assert_eq!(body["echo"]["hello"], "world");

    let get_logout = alice
        .http
        .get(format!("{base}/auth/logout"))
        .send()
        .await
        .expect("GET logout");
    assert_eq!(get_logout.status(), StatusCode::METHOD_NOT_ALLOWED);

    let logout = alice
        .http
        .post(format!("{base}/auth/logout"))
        .header("X-XSRF-TOKEN", &xsrf)
        .header(header::ORIGIN, base)
        .header(header::ACCEPT, "application/json")
        .send()
        .await
        .expect("logout");
    assert_eq!(logout.status(), StatusCode::OK);
    let body: Value = logout.json().await.expect("logout json");
    let url = body["logout_url"].as_str().expect("logout_url");
    assert!(url.contains("/end_session?"), "{url}");
    assert!(url.contains("id_token_hint="));

    let (status, _) = alice.get_json(format!("{base}/auth/me")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = alice.get_json(format!("{base}/api/whoami")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"], "unauthorized");
}

#[tokio::test]
async fn demo_role_rules_and_memory_store() {
    let demo = start_demo(&["--store", "memory"]).await;
    let base = demo.base.as_str();
    let carol = Browser::new();
    carol.login(base, "carol").await;
    let (status, body) = carol.get_json(format!("{base}/api/admin/ping")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["error"], "forbidden");
    let (status, _) = carol.get_json(format!("{base}/api/hr/ping")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = carol.get_json(format!("{base}/api/whoami")).await;
    assert_eq!(status, StatusCode::OK);

    let bob = Browser::new();
    bob.login(base, "bob").await;
    let (status, _) = bob.get_json(format!("{base}/api/hr/ping")).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = bob.get_json(format!("{base}/api/admin/ping")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // Server-sent events pass through the gateway.
    let stream = bob
        .http
        .get(format!("{base}/api/stream"))
        .send()
        .await
        .expect("stream");
    assert_eq!(stream.status(), StatusCode::OK);
    assert!(
        stream.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap_or("")
            .starts_with("text/event-stream")
    );
    let body = stream.text().await.expect("events");
    assert_eq!(body.matches("data:").count(), 10, "{body}");
}

/// The sum of the samples of `name` whose labels include all of `labels`.
fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// `promtool`: `$PROMTOOL`, else on `PATH`. Required under CI (`.ci/run`
/// installs it); elsewhere a missing one skips only that check.
fn promtool() -> Option<std::path::PathBuf> {
    if let Some(p) = std::env::var_os("PROMTOOL") {
        return Some(p.into());
    }
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("promtool"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "promtool is required under CI (Debian package `prometheus`)"
        );
        eprintln!("promtool not found: skipping `promtool check metrics`");
    }
    found
}

/// The live `/metrics` of a gateway that served a login, a proxied call and
/// a CSRF refusal: exact values (the demo is its own process, so nothing
/// else moves them), and a text `promtool check metrics` accepts (every
/// series has HELP, names follow the conventions).
#[tokio::test]
async fn demo_metrics_are_exact_and_pass_promtool() {
    let demo = start_demo(&["--store", "memory"]).await;
    let base = demo.base.as_str();
    let alice = Browser::new();
    alice.login(base, "alice").await;
    let (status, _) = alice.get_json(format!("{base}/api/whoami")).await;
    assert_eq!(status, StatusCode::OK);
    let refused = alice
        .http
        .post(format!("{base}/api/echo"))
        .json(&serde_json::json!({}))
        .send()
        .await
        .expect("echo");
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);

    let resp = reqwest::get(format!("{}/metrics", demo.admin))
        .await
        .expect("scrape");
    assert_eq!(resp.status(), StatusCode::OK);
    let text = resp.text().await.expect("metrics text");

    let exact = |name: &str, labels: &[(&str, &str)], want: f64| {
        assert_eq!(
            metric(&text, name, labels),
            want,
            "{name} {labels:?}:\n{text}"
        );
    };
    exact("portcullis_logins_total", &[("result", "success")], 1.0);
    exact(
        "portcullis_idp_requests_total",
        &[("endpoint", "token"), ("outcome", "ok")],
        1.0,
    );
    exact(
        "portcullis_idp_requests_total",
        &[("endpoint", "token"), ("outcome", "unavailable")],
        0.0,
    );
    exact(
        "portcullis_requests_total",
        &[("route", "/api/"), ("status", "200")],
        1.0,
    );
    exact(
        "portcullis_requests_total",
        &[("route", "/api/"), ("status", "403")],
        1.0,
    );
    exact("portcullis_csrf_rejections_total", &[], 1.0);
    exact("portcullis_requests_in_flight", &[], 0.0);
    exact("portcullis_build_info", &[], 1.0);
    assert!(
        metric(
            &text,
            "portcullis_idp_requests_total",
            &[("endpoint", "discovery"), ("outcome", "ok")]
        ) >= 1.0,
        "{text}"
    );
    if cfg!(target_os = "linux") {
        // CPU time may still be under one 10 ms tick: present is enough.
        assert!(text.contains("\nprocess_cpu_seconds_total "), "{text}");
        for name in [
            "process_resident_memory_bytes",
            "process_open_fds",
            "process_max_fds",
            "process_start_time_seconds",
            "process_threads",
        ] {
            assert!(metric(&text, name, &[]) > 0.0, "{name}:\n{text}");
        }
    }

    let Some(promtool) = promtool() else {
        return;
    };
    let mut child = std::process::Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    {
        use std::io::Write as _;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(text.as_bytes()).expect("write to promtool");
    }
    let out = child.wait_with_output().expect("promtool output");
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
