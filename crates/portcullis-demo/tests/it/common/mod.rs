//! Shared fixtures: a dev IdP and sample API on 127.0.0.1:0, a non-redirecting HTTP
//! client, and a scripted browser login.

use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use portcullis_demo::{DevIdp, DevIdpConfig, SampleApi};
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use tokio::net::TcpListener;
use url::Url;

pub const CLIENT_ID: &str = "portal";
pub const CLIENT_SECRET: &str = "s3cret+&=";
pub const REDIRECT_URI: &str = "http://127.0.0.1:1/auth/callback";
pub const POST_LOGOUT_URI: &str = "http://127.0.0.1:1/";

/// A running dev IdP.
pub struct TestIdp {
    pub idp: DevIdp,
    pub issuer: String,
}

impl TestIdp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.issuer)
    }
}

pub fn config(issuer: &str, key_file: Option<PathBuf>) -> DevIdpConfig {
    DevIdpConfig {
        issuer: issuer.to_owned(),
        client_id: CLIENT_ID.to_owned(),
        client_secret: CLIENT_SECRET.to_owned(),
        redirect_uris: vec![REDIRECT_URI.to_owned()],
        post_logout_redirect_uris: vec![POST_LOGOUT_URI.to_owned()],
        access_token_ttl: Duration::from_secs(300),
        refresh_token_ttl: Duration::from_secs(3600),
        key_file,
        backchannel_logout_uri: None,
    }
}

pub async fn start_idp() -> TestIdp {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let issuer = format!("http://{}", listener.local_addr().expect("addr"));
    let idp = DevIdp::new(config(&issuer, None)).expect("idp");
    tokio::spawn(idp.clone().serve(listener));
    TestIdp { idp, issuer }
}

/// A sample API trusting `idp`, and its base URL.
pub async fn start_api(idp: &TestIdp) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let api = SampleApi::new(idp.issuer.clone(), idp.url("/jwks"));
    tokio::spawn(api.serve(listener));
    base
}

/// An HTTP client that never follows redirects, like a careful RP.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

/// A PKCE verifier and its S256 challenge.
pub struct Pkce {
    pub verifier: String,
    pub challenge: String,
}

pub fn pkce(seed: &str) -> Pkce {
    let verifier = URL_SAFE_NO_PAD.encode(Sha256::digest(format!("verifier-{seed}")));
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    Pkce {
        verifier,
        challenge,
    }
}

/// The authorization URL a gateway would send the browser to.
pub fn authorize_url(idp: &TestIdp, pkce: &Pkce, redirect_uri: &str, state: &str) -> String {
    let mut url = Url::parse(&idp.url("/authorize")).expect("url");
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", CLIENT_ID)
        .append_pair("redirect_uri", redirect_uri)
        .append_pair("scope", "openid profile email offline_access")
        .append_pair("state", state)
        .append_pair("nonce", &format!("nonce-{state}"))
        .append_pair("code_challenge", &pkce.challenge)
        .append_pair("code_challenge_method", "S256");
    url.into()
}

/// `(name, value)` of each hidden input of an HTML page, unescaped.
pub fn hidden_inputs(html: &str) -> Vec<(String, String)> {
    let attr = |tag: &str, name: &str| {
        let start = tag.find(&format!("{name}=\""))? + name.len() + 2;
        let len = tag[start..].find('"')?;
        Some(unescape(&tag[start..start + len]))
    };
    html.split("<input")
        .skip(1)
        .filter_map(|rest| rest.split('>').next())
        .filter(|tag| tag.contains("type=\"hidden\""))
        .filter_map(|tag| Some((attr(tag, "name")?, attr(tag, "value")?)))
        .collect()
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

/// Opens the login page and submits it as a browser would; returns the POST's response.
pub async fn submit_login(
    http: &reqwest::Client,
    idp: &TestIdp,
    authorize_url: &str,
    username: &str,
    password: &str,
) -> reqwest::Response {
    let page = http.get(authorize_url).send().await.expect("authorize");
    assert_eq!(page.status(), 200, "login page");
    let html = page.text().await.expect("html");
    assert!(
        html.contains("action=\"authorize\""),
        "form posts to /authorize"
    );
    let mut form = hidden_inputs(&html);
    form.push(("username".into(), username.into()));
    form.push(("password".into(), password.into()));
    http.post(idp.url("/authorize"))
        .form(&form)
        .send()
        .await
        .expect("login post")
}

/// The query parameters of a redirect's `Location`.
pub fn location_params(response: &reqwest::Response) -> (String, Vec<(String, String)>) {
    let location = response
        .headers()
        .get("location")
        .expect("location")
        .to_str()
        .expect("ascii");
    let url = Url::parse(location).expect("absolute location");
    let pairs = url.query_pairs().into_owned().collect();
    let mut base = url.clone();
    base.set_query(None);
    (base.into(), pairs)
}

pub fn param<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// Logs `username` in and returns the authorization code.
pub async fn login_code(
    http: &reqwest::Client,
    idp: &TestIdp,
    username: &str,
    pkce: &Pkce,
) -> String {
    let url = authorize_url(idp, pkce, REDIRECT_URI, "st");
    let response = submit_login(http, idp, &url, username, username).await;
    assert_eq!(response.status(), 302, "login redirects back");
    let (_, pairs) = location_params(&response);
    param(&pairs, "code").expect("code").to_owned()
}

/// Exchanges a code with `client_secret_basic`.
pub async fn exchange(
    http: &reqwest::Client,
    idp: &TestIdp,
    code: &str,
    verifier: &str,
) -> reqwest::Response {
    http.post(idp.url("/token"))
        .basic_auth(urlencode(CLIENT_ID), Some(urlencode(CLIENT_SECRET)))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", REDIRECT_URI),
            ("code_verifier", verifier),
        ])
        .send()
        .await
        .expect("token")
}

pub async fn refresh(
    http: &reqwest::Client,
    idp: &TestIdp,
    refresh_token: &str,
) -> reqwest::Response {
    http.post(idp.url("/token"))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
            ("client_id", CLIENT_ID),
            ("client_secret", CLIENT_SECRET),
        ])
        .send()
        .await
        .expect("refresh")
}

/// The whole code flow for `username`: the token response.
pub async fn tokens_for(idp: &TestIdp, username: &str) -> Value {
    let http = http();
    let pkce = pkce(username);
    let code = login_code(&http, idp, username, &pkce).await;
    let response = exchange(&http, idp, &code, &pkce.verifier).await;
    assert_eq!(response.status(), 200);
    response.json().await.expect("token json")
}

/// RFC 6749 2.3.1: Basic credentials are form-urlencoded first.
pub fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Verifies a JWT against the IdP's published JWKS.
pub async fn verify(idp: &TestIdp, token: &str, audience: &str) -> Value {
    let jwks: JwkSet = http()
        .get(idp.url("/jwks"))
        .send()
        .await
        .expect("jwks")
        .json()
        .await
        .expect("jwks json");
    let header = jsonwebtoken::decode_header(token).expect("header");
    assert_eq!(header.alg, Algorithm::ES256);
    let jwk = jwks
        .find(header.kid.as_deref().expect("kid"))
        .expect("kid in JWKS");
    let mut validation = Validation::new(Algorithm::ES256);
    validation.set_issuer(&[&idp.issuer]);
    validation.set_audience(&[audience]);
    jsonwebtoken::decode::<Value>(
        token,
        &DecodingKey::from_jwk(jwk).expect("key"),
        &validation,
    )
    .expect("valid token")
    .claims
}

pub fn str_field<'a>(value: &'a Value, name: &str) -> &'a str {
    value[name]
        .as_str()
        .unwrap_or_else(|| panic!("{name} missing in {value}"))
}
