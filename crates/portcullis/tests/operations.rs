//! Operating the gateway against a real OpenID Provider (npm `oidc-provider`):
//! Prometheus series move for a login, a proxied call, a CSRF rejection and a
//! refresh, each IdP call counted once by endpoint, every series with HELP; readiness reports an IdP that is down at start and recovers.
//! (The log-capture test is alone in `log_capture.rs`: it installs a global
//! subscriber.)

mod common;
mod ops_support;

use std::sync::Arc;

use ops_support::{Browser, admin_get, eventually, login, metric, scrape, setup};
use reqwest::{Method, StatusCode};
use serde_json::Value;

#[tokio::test]
async fn login_proxy_csrf_and_refresh_move_their_series() {
    let s = setup("10m", false).await;
    let mut browser = Browser::new();
    let before = scrape(&s.gateway).await;

    login(&s, &mut browser, "alice", Arc::default()).await;
    // Access tokens live 5 minutes and are refreshed 10 minutes early: this call refreshes.
    let resp = browser
        .request(Method::GET, &format!("{}/api/token", s.base), None)
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let refused = browser
        .request(Method::POST, &format!("{}/api/token", s.base), None)
        .await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let unknown = browser
        .request(Method::GET, &format!("{}/auth/nothing", s.base), None)
        .await;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);

    let after = scrape(&s.gateway).await;
    let delta = |name: &str, labels: &[(&str, &str)]| {
        metric(&after, name, labels) - metric(&before, name, labels)
    };
    // Exact: this binary's other test moves none of these series (one
    // process, one recorder), so a double count shows.
    assert_eq!(
        delta("portcullis_logins_total", &[("result", "success")]),
        1.0,
        "{after}"
    );
    assert_eq!(
        delta(
            "portcullis_requests_total",
            &[("route", "/api/"), ("status", "200")]
        ),
        1.0,
        "{after}"
    );
    assert_eq!(
        delta(
            "portcullis_requests_total",
            &[("route", "/auth/callback"), ("status", "302")]
        ),
        1.0,
        "{after}"
    );
    assert_eq!(
        delta("portcullis_csrf_rejections_total", &[]),
        1.0,
        "{after}"
    );
    assert_eq!(
        delta("portcullis_refresh_total", &[("result", "success")]),
        1.0,
        "{after}"
    );
    assert_eq!(
        delta(
            "portcullis_request_duration_seconds_count",
            &[("route", "/api/")]
        ),
        2.0,
        "{after}"
    );
    assert_eq!(
        delta(
            "portcullis_upstream_duration_seconds_count",
            &[("route", "/api/")]
        ),
        1.0,
        "{after}"
    );
    // Other paths under the auth prefix share one label.
    assert_eq!(
        delta(
            "portcullis_requests_total",
            &[("route", "auth"), ("status", "404")]
        ),
        1.0,
        "{after}"
    );
    // IdP calls by endpoint: the login's code exchange, then the refresh
    // grant, each once (the other test never reaches the token endpoint).
    assert_eq!(
        delta(
            "portcullis_idp_requests_total",
            &[("endpoint", "token"), ("outcome", "ok")]
        ),
        1.0,
        "{after}"
    );
    assert_eq!(
        delta(
            "portcullis_idp_requests_total",
            &[("endpoint", "refresh"), ("outcome", "ok")]
        ),
        1.0,
        "{after}"
    );
    assert_eq!(
        delta(
            "portcullis_idp_request_duration_seconds_count",
            &[("endpoint", "refresh")]
        ),
        1.0,
        "{after}"
    );
    for outcome in ["refused", "unavailable", "circuit_open"] {
        for endpoint in ["token", "refresh"] {
            assert_eq!(
                delta(
                    "portcullis_idp_requests_total",
                    &[("endpoint", endpoint), ("outcome", outcome)]
                ),
                0.0,
                "{endpoint} {outcome}: {after}"
            );
        }
    }
    // Nothing public is in flight while the admin listener answers (its own
    // requests are not counted), and every request that started has ended.
    assert_eq!(
        metric(&after, "portcullis_requests_in_flight", &[]),
        0.0,
        "{after}"
    );
    assert!(
        after.contains("\n# TYPE portcullis_requests_in_flight gauge\n"),
        "{after}"
    );
    assert!(after.contains("portcullis_build_info{version="), "{after}");
    assert_every_family_has_help(&after);
    // The process series, from /proc on Linux.
    if cfg!(target_os = "linux") {
        assert!(
            metric(&after, "process_resident_memory_bytes", &[]) > 0.0,
            "{after}"
        );
        assert!(metric(&after, "process_open_fds", &[]) > 0.0, "{after}");
        assert!(
            after.contains("\n# TYPE process_cpu_seconds_total counter\n"),
            "{after}"
        );
    }
    // Bounded labels: no raw path, no user.
    assert!(
        !after.contains("/api/token") && !after.contains("alice") && !after.contains("nothing"),
        "{after}"
    );
    assert!(s.op.refresh_count().await >= 1);
}

/// Every `# TYPE` line of the scrape comes right after its family's
/// non-empty `# HELP` line.
fn assert_every_family_has_help(text: &str) {
    let mut help: Option<&str> = None;
    let mut families = 0;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, doc) = rest.split_once(' ').unwrap_or((rest, ""));
            assert!(!doc.trim().is_empty(), "empty HELP for {name}");
            help = Some(name);
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let name = rest.split(' ').next().unwrap_or_default();
            assert_eq!(help, Some(name), "no HELP before TYPE of {name}:\n{text}");
            families += 1;
        } else if !line.starts_with('#') && !line.is_empty() {
            let name = line.split(['{', ' ']).next().unwrap_or_default();
            assert!(
                help.is_some_and(|h| name.starts_with(h)),
                "{name} has no HELP:\n{text}"
            );
        }
    }
    assert!(families > 10, "{text}");
}

#[tokio::test]
async fn readiness_names_a_down_idp_and_recovers_when_it_returns() {
    let s = setup("60s", true).await;
    let (status, body) = admin_get(&s.gateway, "/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let json: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(json["status"], "not_ready");
    assert_eq!(json["failing"][0]["check"], "idp", "{json}");
    assert!(
        json["failing"][0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("discovery")),
        "{json}"
    );
    let (status, _) = admin_get(&s.gateway, "/healthz").await;
    assert_eq!(status, StatusCode::OK);

    // The background refresh picks the IdP up once it answers again.
    let refresher = s.gateway.spawn_idp_refresh();
    s.op.clear_faults().await;
    eventually("readiness recovers", || async {
        admin_get(&s.gateway, "/readyz").await.0 == StatusCode::OK
    })
    .await;
    let (_, body) = admin_get(&s.gateway, "/readyz").await;
    assert_eq!(
        serde_json::from_str::<Value>(&body).expect("json")["status"],
        "ready"
    );
    refresher.abort();
}
