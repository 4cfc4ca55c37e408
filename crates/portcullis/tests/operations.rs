//! Operating the gateway against a real OpenID Provider (npm `oidc-provider`):
//! Prometheus series move for a login, a proxied call, a CSRF rejection and a
//! refresh; readiness reports an IdP that is down at start and recovers.
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
    assert!(after.contains("portcullis_build_info{version="), "{after}");
    // Bounded labels: no raw path, no user.
    assert!(
        !after.contains("/api/token") && !after.contains("alice") && !after.contains("nothing"),
        "{after}"
    );
    assert!(s.op.refresh_count().await >= 1);
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
