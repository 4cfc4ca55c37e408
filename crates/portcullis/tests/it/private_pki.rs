//! A private CA for the IdP and the upstreams, and client certificates for
//! upstream mTLS (docs/deploy.md, "Private CA and mTLS"; docs/security.md
//! section 18). Every certificate comes from a CA this test creates
//! (`common/pki.rs`); the IdP is the crafted test IdP served over TLS.

use std::{sync::Arc, time::Duration};

use axum::{Router, routing::get};
use portcullis::{config::Config, oidc::OidcClient, session::MemoryStore, time::SystemClock};
use reqwest::{Client, StatusCode, header, redirect::Policy};
use serde_json::Value;

use crate::common::{
    crafted_idp::{CLIENT_ID, CLIENT_SECRET, CraftedIdp, SUBJECT},
    pki::{Pki, TlsServer},
};

/// A gateway in the dev profile with `[oidc]` extras and routes.
struct Gw {
    base: String,
    toml: String,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Gw {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn gateway(issuer: &str, extra_oidc: &str, routes: &str) -> Gw {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the gateway");
    let addr = listener.local_addr().expect("address");
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

{routes}
"#
    );
    let (_, server) =
        crate::common::gateway::serve(listener, &toml, Arc::new(MemoryStore::new())).await;
    Gw { base, toml, server }
}

/// A browser that trusts the test CA (for its visit to the IdP's
/// `/authorize`), keeps cookies and follows no redirects.
fn browser(pki: &Pki) -> Client {
    let ca = std::fs::read(pki.path("ca.pem")).expect("read CA");
    Client::builder()
        .cookie_store(true)
        .redirect(Policy::none())
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).expect("CA"))
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

fn location(resp: &reqwest::Response) -> String {
    resp.headers()[header::LOCATION]
        .to_str()
        .expect("ascii")
        .to_string()
}

/// The discovery error of a fresh IdP client with `gw`'s config.
async fn discovery_error(gw: &Gw) -> String {
    let config = Config::from_toml_str(&gw.toml, Vec::<(String, String)>::new()).expect("config");
    let client = OidcClient::new(&config, Arc::new(SystemClock)).expect("client");
    client
        .metadata()
        .await
        .expect_err("discovery must fail")
        .to_string()
}

#[tokio::test]
async fn idp_with_private_ca_logs_in_with_oidc_ca_file() {
    let pki = Pki::create();
    let idp = CraftedIdp::start_tls(pki.server_config("server", None)).await;
    let extra = format!("ca_file = \"{}\"", pki.file("ca.pem"));
    let gw = gateway(&idp.issuer, &extra, "").await;
    let b = browser(&pki);

    let resp = b
        .get(format!("{}/auth/login?return_to=/", gw.base))
        .send()
        .await
        .expect("login");
    assert_eq!(resp.status(), StatusCode::FOUND);
    let authorize = location(&resp);
    assert!(authorize.starts_with("https://127.0.0.1:"), "{authorize}");
    let resp = b.get(&authorize).send().await.expect("authorize");
    let resp = b.get(location(&resp)).send().await.expect("callback");
    assert_eq!(resp.status(), StatusCode::FOUND, "callback refused");
    assert_eq!(location(&resp), "/");

    let me: Value = b
        .get(format!("{}/auth/me", gw.base))
        .send()
        .await
        .expect("me")
        .json()
        .await
        .expect("json");
    assert_eq!(me["authenticated"], true, "{me}");
    assert_eq!(me["user"]["sub"], SUBJECT);
    assert_eq!(idp.token_requests().len(), 1, "token call over TLS");
}

/// Without `oidc.ca_file` the bundled roots do not know the private CA:
/// login answers 503 and the error says why (not just "connection failed").
#[tokio::test]
async fn idp_with_private_ca_is_refused_without_ca_file() {
    let pki = Pki::create();
    let idp = CraftedIdp::start_tls(pki.server_config("server", None)).await;
    let gw = gateway(&idp.issuer, "", "").await;
    let resp = browser(&pki)
        .get(format!("{}/auth/login?return_to=/", gw.base))
        .send()
        .await
        .expect("login");
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["error"], "idp_unavailable");
    let error = discovery_error(&gw).await;
    assert!(
        error.contains("certificate") && error.contains("ca_file"),
        "{error}"
    );
}

/// `ca_file` adds one CA; it is no "trust anything" switch: an IdP whose
/// certificate another CA signed is still refused.
#[tokio::test]
async fn idp_with_a_cert_from_another_ca_is_refused_even_with_ca_file() {
    let pki = Pki::create();
    let idp = CraftedIdp::start_tls(pki.server_config("rogue-server", None)).await;
    let extra = format!("ca_file = \"{}\"", pki.file("ca.pem"));
    let gw = gateway(&idp.issuer, &extra, "").await;
    let error = discovery_error(&gw).await;
    assert!(error.contains("certificate"), "{error}");
    assert!(idp.token_requests().is_empty());
}

fn hello() -> Router {
    Router::new().route("/hello", get(|| async { "hello over TLS" }))
}

fn route(prefix: &str, addr: std::net::SocketAddr, tls: &str) -> String {
    format!(
        "[[routes]]\nprefix = \"{prefix}\"\nupstream = \"https://localhost:{port}\"\n\
         token = \"none\"\nstrip_prefix = true\n{tls}\n",
        port = addr.port()
    )
}

/// GET `path` on the gateway: status and body.
async fn fetch(gw: &Gw, path: &str) -> (StatusCode, String) {
    let resp = Client::new()
        .get(format!("{}{path}", gw.base))
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .expect("send");
    (resp.status(), resp.text().await.expect("body"))
}

fn assert_bad_gateway((status, body): (StatusCode, String), what: &str) {
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{what}: {body}");
    let body: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(body["error"], "upstream_unavailable", "{what}");
}

#[tokio::test]
async fn upstream_with_private_ca_needs_the_routes_ca_file() {
    let pki = Pki::create();
    let up = TlsServer::start(hello(), pki.server_config("server", None)).await;
    let rogue = TlsServer::start(hello(), pki.server_config("rogue-server", None)).await;
    let ca = format!("ca_file = \"{}\"", pki.file("ca.pem"));
    let both = format!("{ca}\ntls_roots = \"webpki\"");
    let routes = [
        route("/with-ca/", up.addr, &ca),
        route("/with-ca-and-bundled/", up.addr, &both),
        route("/without-ca/", up.addr, ""),
        route("/rogue/", rogue.addr, &ca),
    ]
    .concat();
    let idp = CraftedIdp::start().await;
    let gw = gateway(&idp.issuer, "", &routes).await;

    for path in ["/with-ca/hello", "/with-ca-and-bundled/hello"] {
        assert_eq!(
            fetch(&gw, path).await,
            (StatusCode::OK, "hello over TLS".into()),
            "{path}"
        );
    }
    // Refused at the handshake, answered at once (not a hang or a timeout).
    assert_bad_gateway(fetch(&gw, "/without-ca/hello").await, "without ca_file");
    assert_bad_gateway(fetch(&gw, "/rogue/hello").await, "another CA's cert");
    assert!(rogue.failed_handshakes() >= 1);
}

#[tokio::test]
async fn mtls_upstream_gets_the_routes_client_certificate() {
    let pki = Pki::create();
    let up = TlsServer::start(hello(), pki.server_config("server", Some("ca.pem"))).await;
    let ca = format!("ca_file = \"{}\"", pki.file("ca.pem"));
    let identity = |name: &str| {
        format!(
            "{ca}\nclient_cert_file = \"{}\"\nclient_key_file = \"{}\"",
            pki.file(&format!("{name}.pem")),
            pki.file(&format!("{name}.key"))
        )
    };
    let routes = [
        route("/mtls/", up.addr, &identity("client")),
        route("/no-cert/", up.addr, &ca),
        route("/rogue-cert/", up.addr, &identity("rogue-client")),
    ]
    .concat();
    let idp = CraftedIdp::start().await;
    let gw = gateway(&idp.issuer, "", &routes).await;

    assert_eq!(
        fetch(&gw, "/mtls/hello").await,
        (StatusCode::OK, "hello over TLS".into())
    );
    assert_bad_gateway(fetch(&gw, "/no-cert/hello").await, "no client certificate");
    assert_bad_gateway(
        fetch(&gw, "/rogue-cert/hello").await,
        "a client certificate from another CA",
    );
}

/// `check` refuses TLS settings that cannot work, naming key and file.
#[test]
fn tls_config_errors_name_the_key_and_the_file() {
    let pki = Pki::create();
    let config = |route_tls: &str| {
        format!(
            "[server]\npublic_url = \"http://localhost:8080\"\nprofile = \"dev\"\n\
             [oidc]\nissuer = \"http://127.0.0.1:1\"\nclient_id = \"c\"\nclient_secret = \"s\"\n\
             [session]\nstore = \"memory\"\n\
             [[routes]]\nprefix = \"/api/\"\nupstream = \"https://api.internal\"\n{route_tls}\n"
        )
    };
    let error = |route_tls: &str| {
        Config::from_toml_str(&config(route_tls), Vec::<(String, String)>::new())
            .expect_err(route_tls)
            .to_string()
    };
    let missing = pki.file("missing.pem");
    for (tls, key, file) in [
        (
            format!("ca_file = \"{missing}\""),
            "routes[0].ca_file",
            "missing.pem",
        ),
        (
            format!("ca_file = \"{}\"", pki.file("client.key")),
            "routes[0].ca_file",
            "client.key",
        ),
        (
            format!(
                "client_cert_file = \"{}\"\nclient_key_file = \"{}\"",
                pki.file("client.pem"),
                pki.file("server.key")
            ),
            "routes[0].client_key_file",
            "server.key",
        ),
        (
            format!("client_cert_file = \"{}\"", pki.file("client.pem")),
            "routes[0].client_key_file",
            "",
        ),
        (
            format!("client_key_file = \"{}\"", pki.file("client.key")),
            "routes[0].client_cert_file",
            "",
        ),
        ("tls_roots = \"any\"".into(), "routes[0].tls_roots", ""),
    ] {
        let e = error(&tls);
        assert!(e.contains(key) && e.contains(file), "{tls}: {e}");
    }
    // The IdP's key too.
    let e = Config::from_toml_str(
        &config("").replace(
            "client_secret = \"s\"",
            &format!("client_secret = \"s\"\nca_file = \"{missing}\""),
        ),
        Vec::<(String, String)>::new(),
    )
    .expect_err("missing oidc.ca_file")
    .to_string();
    assert!(
        e.contains("oidc.ca_file") && e.contains("missing.pem"),
        "{e}"
    );
    // TLS settings on a plain-http upstream would silently do nothing.
    let e = Config::from_toml_str(
        &config(&format!("ca_file = \"{}\"", pki.file("ca.pem")))
            .replace("https://api.internal", "http://api.internal"),
        Vec::<(String, String)>::new(),
    )
    .expect_err("ca_file on http")
    .to_string();
    assert!(
        e.contains("routes[0].ca_file") && e.contains("https"),
        "{e}"
    );
}

/// The client key's contents never reach an error (which `check` prints
/// and `serve` logs), not even when the file is broken.
#[test]
fn client_key_contents_never_appear_in_config_errors() {
    let pki = Pki::create();
    let key = std::fs::read_to_string(pki.path("client.key")).expect("key");
    let body = key.lines().nth(1).expect("a base64 line").to_string();
    let broken = pki.path("broken.key");
    std::fs::write(&broken, key.replace(&body, &format!("{body}!"))).expect("write");
    for key_file in [broken.display().to_string(), pki.file("server.key")] {
        let text = format!(
            "[server]\npublic_url = \"http://localhost:8080\"\nprofile = \"dev\"\n\
             [oidc]\nissuer = \"http://127.0.0.1:1\"\nclient_id = \"c\"\nclient_secret = \"s\"\n\
             [session]\nstore = \"memory\"\n\
             [[routes]]\nprefix = \"/api/\"\nupstream = \"https://api.internal\"\n\
             client_cert_file = \"{}\"\nclient_key_file = \"{key_file}\"\n",
            pki.file("client.pem")
        );
        let e = Config::from_toml_str(&text, Vec::<(String, String)>::new()).expect_err("bad key");
        let shown = format!("{e} {e:?}");
        assert!(shown.contains("routes[0].client_key_file"), "{shown}");
        assert!(!shown.contains(&body[..20]), "key material in: {shown}");
    }
}
