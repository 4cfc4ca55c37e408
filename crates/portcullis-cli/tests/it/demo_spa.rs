//! `portcullis demo --spa DIR`: the demo serves a built SPA from DIR (through the
//! gateway's `[static]` config, with SPA fallback) instead of its plain page; and
//! `--public-url`, for a Vite dev server in front of the demo.

use std::{collections::HashMap, process::Stdio, time::Duration};

use reqwest::{StatusCode, header};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

const INDEX: &str = "<!doctype html><title>my spa</title><div id=app></div>";

fn demo_command(data: &std::path::Path, spa: Option<&std::path::Path>) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_portcullis"));
    cmd.args([
        "demo",
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--store",
        "memory",
    ])
    .arg("--data-dir")
    .arg(data)
    .env("RUST_LOG", "warn")
    .kill_on_drop(true);
    if let Some(spa) = spa {
        cmd.arg("--spa").arg(spa);
    }
    cmd
}

/// Reads the banner up to its `IdP` line: label (`open`, `gateway`, `SPA`, …) → value.
async fn banner(child: &mut Child) -> HashMap<String, String> {
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut found = HashMap::new();
    tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.expect("read stdout") {
            if let Some((label, value)) = line.trim().split_once(char::is_whitespace) {
                let value = value.split_whitespace().next().unwrap_or_default();
                found.insert(label.to_string(), value.to_string());
                if label == "IdP" {
                    return;
                }
            }
        }
        panic!("demo exited before its banner was complete");
    })
    .await
    .expect("demo did not start within 60 s");
    // Keep draining stdout so the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    found
}

/// Starts the demo with `--spa` and returns its base URL.
async fn start(data: &std::path::Path, spa: &std::path::Path) -> (String, Child) {
    let mut child = demo_command(data, Some(spa))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn portcullis demo");
    let found = banner(&mut child).await;
    let expected = std::fs::canonicalize(spa).expect("canonical spa dir");
    assert_eq!(found["SPA"], expected.display().to_string());
    (found["open"].trim_end_matches('/').to_string(), child)
}

#[tokio::test]
async fn demo_serves_the_spa_dir_with_fallback() {
    let data = tempfile::tempdir().expect("tempdir");
    let spa = tempfile::tempdir().expect("tempdir");
    std::fs::write(spa.path().join("index.html"), INDEX).expect("index");
    std::fs::create_dir(spa.path().join("assets")).expect("assets dir");
    std::fs::write(
        spa.path().join("assets/index-B2x9fQ1a.js"),
        "console.log('spa')",
    )
    .expect("asset");
    let (base, _child) = start(data.path(), spa.path()).await;
    let http = reqwest::Client::new();

    let resp = http.get(format!("{base}/")).send().await.expect("get /");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.text().await.expect("body"), INDEX);

    // A client-side route (deep link) gets index.html.
    let resp = http
        .get(format!("{base}/admin"))
        .header(header::ACCEPT, "text/html")
        .send()
        .await
        .expect("get /admin");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.text().await.expect("body"), INDEX);

    let resp = http
        .get(format!("{base}/assets/index-B2x9fQ1a.js"))
        .send()
        .await
        .expect("get asset");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.text().await.expect("body"), "console.log('spa')");

    // The plain demo page is not served any more.
    let resp = http
        .get(format!("{base}/app.js"))
        .send()
        .await
        .expect("get /app.js");
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);

    // Auth and API still work beside the SPA.
    let resp = http
        .get(format!("{base}/auth/me"))
        .send()
        .await
        .expect("me");
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn demo_refuses_a_spa_dir_without_index_html() {
    let data = tempfile::tempdir().expect("tempdir");
    let spa = tempfile::tempdir().expect("tempdir");
    let out = demo_command(data.path(), Some(spa.path()))
        .output()
        .await
        .expect("run demo");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no index.html"), "stderr: {stderr}");

    let missing = spa.path().join("nope");
    let out = demo_command(data.path(), Some(&missing))
        .output()
        .await
        .expect("run demo");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no such directory"), "stderr: {stderr}");
}

/// Behind a dev server: the browser's origin (`--public-url`) builds the
/// redirect URI, and the banner names the gateway's own address for the proxy.
#[tokio::test]
async fn demo_public_url_for_a_dev_server_in_front() {
    let data = tempfile::tempdir().expect("tempdir");
    let mut child = demo_command(data.path(), None)
        .args(["--public-url", "http://localhost:5173/"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn portcullis demo");
    let found = banner(&mut child).await;
    assert_eq!(found["open"], "http://localhost:5173/");
    let gateway = &found["gateway"];
    assert!(gateway.starts_with("http://127.0.0.1:"), "{found:?}");

    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let resp = http
        .get(format!("{gateway}/auth/login?return_to=/"))
        .send()
        .await
        .expect("login");
    assert_eq!(resp.status(), StatusCode::FOUND);
    let location = resp.headers()[header::LOCATION].to_str().expect("location");
    assert!(
        location.contains("redirect_uri=http%3A%2F%2Flocalhost%3A5173%2Fauth%2Fcallback"),
        "{location}"
    );
}

#[tokio::test]
async fn demo_refuses_a_public_url_that_is_not_http() {
    let data = tempfile::tempdir().expect("tempdir");
    let out = demo_command(data.path(), None)
        .args(["--public-url", "localhost:5173"])
        .output()
        .await
        .expect("run demo");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--public-url"), "stderr: {stderr}");
}
