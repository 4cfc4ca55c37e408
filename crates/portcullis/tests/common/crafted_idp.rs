//! A tiny OpenID Provider whose every answer the test controls: discovery,
//! JWKS, the authorize redirect and the token response can each be bent to
//! prove the gateway refuses what it must. It runs on 127.0.0.1:0 as a tokio
//! task and stops when dropped.
//!
//! ```ignore
//! let idp = CraftedIdp::start().await;
//! idp.configure(|b| b.set_claim("aud", json!("someone-else")));
//! assert_eq!(idp.token_requests().len(), 0);
//! ```
//!
//! By default `/authorize` redirects straight back with a code (there is no
//! login form), and `/token` answers with an ES256 ID token for [`SUBJECT`]
//! whose `nonce` is the one the matching authorize request carried.

#![allow(dead_code)]

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use axum::{
    Form, Json, Router,
    extract::{Query, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ring::{
    rand::SystemRandom,
    signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair},
};
use serde_json::{Map, Value, json};

/// The client the gateway is configured with.
pub const CLIENT_ID: &str = "portal";
pub const CLIENT_SECRET: &str = "portal-secret";
/// The subject of every ID token unless the test changes `sub`.
pub const SUBJECT: &str = "user-1";

/// Unix seconds now (the gateway under test runs on the system clock too).
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A P-256 signing key generated with ring.
#[derive(Clone)]
pub struct EcKey {
    pub kid: String,
    pkcs8: Vec<u8>,
    /// Uncompressed public point: 0x04 || X || Y.
    public: Vec<u8>,
}

impl EcKey {
    pub fn generate(kid: &str) -> Self {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .expect("generate a P-256 key");
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .expect("read back the P-256 key");
        Self {
            kid: kid.to_string(),
            pkcs8: pkcs8.as_ref().to_vec(),
            public: pair.public_key().as_ref().to_vec(),
        }
    }

    /// The public key as the IdP publishes it.
    pub fn jwk(&self) -> Value {
        json!({
            "kty": "EC",
            "crv": "P-256",
            "x": b64(&self.public[1..33]),
            "y": b64(&self.public[33..65]),
            "kid": self.kid,
            "alg": "ES256",
            "use": "sig",
        })
    }

    /// The raw public point (what an attacker would try as an HMAC secret).
    pub fn public_point(&self) -> &[u8] {
        &self.public
    }

    /// A compact ES256 JWS over `claims`, with `kid` in the header when given.
    pub fn sign(&self, kid: Option<&str>, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = kid.map(str::to_string);
        self.sign_with_header(header, claims)
    }

    /// A compact ES256 JWS over `claims` with a header the test built
    /// (e.g. another `typ`); `alg` is forced to ES256.
    pub fn sign_with_header(&self, mut header: Header, claims: &Value) -> String {
        header.alg = Algorithm::ES256;
        jsonwebtoken::encode(&header, claims, &EncodingKey::from_ec_der(&self.pkcs8))
            .expect("ES256 signing")
    }
}

/// A JWT with `{"alg":"none"}` and an empty signature, built by hand.
pub fn unsigned_jwt(kid: &str, claims: &Value) -> String {
    let header = json!({"alg": "none", "typ": "JWT", "kid": kid});
    format!(
        "{}.{}.",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    )
}

/// A JWT signed with HS256 using `secret` (e.g. the IdP's public key bytes).
pub fn hmac_jwt(kid: &str, secret: &[u8], claims: &Value) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(kid.to_string());
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(secret)).expect("HS256")
}

/// The `iss` parameter of the authorization response (RFC 9207).
#[derive(Clone, Debug)]
pub enum IssParam {
    /// The IdP's own issuer (default).
    Issuer,
    Omitted,
    Value(String),
}

/// Which `kid` the ID token header names.
#[derive(Clone, Debug)]
pub enum KidHeader {
    /// The signer's own kid (default).
    OfSigner,
    Absent,
    Named(String),
}

/// What the token response carries as `id_token`.
#[derive(Clone)]
pub enum IdTokenForm {
    /// ES256, signed by [`Behaviour::signer`] (default).
    Signed,
    /// Whatever the test computes from the final claims (alg none, HMAC, ...).
    Custom(Arc<dyn Fn(&Value) -> String + Send + Sync>),
    /// No `id_token` member at all.
    Omitted,
}

/// A token-endpoint answer that replaces the normal one.
#[derive(Clone, Debug)]
pub struct RawReply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

/// Everything the test can bend. Change it with [`CraftedIdp::configure`].
pub struct Behaviour {
    /// Issuer in the discovery document; `None`: the IdP's real issuer.
    pub discovery_issuer: Option<String>,
    /// `authorization_response_iss_parameter_supported` in discovery (default true).
    pub iss_parameter_supported: bool,
    pub iss_param: IssParam,
    /// `/authorize` redirects back with `error=<this>` instead of a code.
    pub authorize_error: Option<String>,
    /// Keys in the JWKS (default: the initial signer).
    pub published: Vec<EcKey>,
    /// Replaces the whole JWKS document.
    pub jwks_body: Option<Value>,
    /// `/jwks` answers this status with no keys (an IdP failing mid-rotation).
    pub jwks_status: Option<u16>,
    /// Signs the ID token.
    pub signer: EcKey,
    pub kid_header: KidHeader,
    pub id_token: IdTokenForm,
    /// Laid over the default claims; `null` removes a claim.
    pub claims: Map<String, Value>,
    pub token_reply: Option<RawReply>,
    /// How long `/token` waits before answering (simulates a slow IdP).
    pub token_delay: Option<Duration>,
    /// Replaces the userinfo document (default `{"sub": <ID token sub>}`).
    pub userinfo: Option<Value>,
}

impl Behaviour {
    pub fn set_claim(&mut self, name: &str, value: Value) {
        self.claims.insert(name.to_string(), value);
    }
    pub fn remove_claim(&mut self, name: &str) {
        self.claims.insert(name.to_string(), Value::Null);
    }
}

/// One request to `/token`, as the IdP saw it.
#[derive(Clone, Debug)]
pub struct TokenRequest {
    pub authorization: Option<String>,
    pub form: HashMap<String, String>,
}

#[derive(Default)]
struct Log {
    authorize: Vec<HashMap<String, String>>,
    /// code -> nonce of the authorize request that produced it.
    codes: HashMap<String, Option<String>>,
    token: Vec<TokenRequest>,
    jwks_fetches: usize,
    /// Every access, refresh and ID token handed out.
    issued: Vec<String>,
}

struct Inner {
    issuer: String,
    behaviour: Mutex<Behaviour>,
    log: Mutex<Log>,
}

/// The running provider; dropped, it stops serving.
pub struct CraftedIdp {
    pub issuer: String,
    inner: Arc<Inner>,
    task: Serving,
}

/// How the provider is served: plain http in a task, or over TLS.
enum Serving {
    Plain(tokio::task::JoinHandle<()>),
    Tls(super::pki::TlsServer),
}

impl Drop for CraftedIdp {
    fn drop(&mut self) {
        if let Serving::Plain(task) = &self.task {
            task.abort();
        }
    }
}

impl CraftedIdp {
    pub async fn start() -> Self {
        Self::start_on(None).await
    }

    /// The provider over https (issuer `https://127.0.0.1:<port>`),
    /// presenting the certificate of `tls`.
    pub async fn start_tls(tls: std::sync::Arc<tokio_rustls::rustls::ServerConfig>) -> Self {
        Self::start_on(Some(tls)).await
    }

    async fn start_on(tls: Option<std::sync::Arc<tokio_rustls::rustls::ServerConfig>>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the crafted IdP");
        let scheme = if tls.is_some() { "https" } else { "http" };
        let issuer = format!("{scheme}://{}", listener.local_addr().expect("local addr"));
        let key = EcKey::generate("k1");
        let inner = Arc::new(Inner {
            issuer: issuer.clone(),
            behaviour: Mutex::new(Behaviour {
                discovery_issuer: None,
                iss_parameter_supported: true,
                iss_param: IssParam::Issuer,
                authorize_error: None,
                published: vec![key.clone()],
                jwks_body: None,
                jwks_status: None,
                signer: key,
                kid_header: KidHeader::OfSigner,
                id_token: IdTokenForm::Signed,
                claims: Map::new(),
                token_reply: None,
                token_delay: None,
                userinfo: None,
            }),
            log: Mutex::default(),
        });
        let router = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(jwks))
            .route("/authorize", get(authorize))
            .route("/token", post(token))
            .route("/userinfo", get(userinfo))
            .with_state(inner.clone());
        let task = match tls {
            Some(tls) => Serving::Tls(super::pki::TlsServer::serve(listener, router, tls)),
            None => Serving::Plain(tokio::spawn(async move {
                let _ = axum::serve(listener, router).await;
            })),
        };
        Self {
            issuer,
            inner,
            task,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.issuer)
    }

    /// Change what the IdP answers from now on.
    pub fn configure(&self, change: impl FnOnce(&mut Behaviour)) {
        change(&mut lock(&self.inner.behaviour));
    }

    /// Query parameters of every `/authorize` request, oldest first.
    pub fn authorize_requests(&self) -> Vec<HashMap<String, String>> {
        lock(&self.inner.log).authorize.clone()
    }

    pub fn token_requests(&self) -> Vec<TokenRequest> {
        lock(&self.inner.log).token.clone()
    }

    /// The key that signs ID tokens now.
    pub fn signer(&self) -> EcKey {
        lock(&self.inner.behaviour).signer.clone()
    }

    pub fn jwks_fetches(&self) -> usize {
        lock(&self.inner.log).jwks_fetches
    }

    /// Every access, refresh and ID token the IdP has handed out.
    pub fn issued_tokens(&self) -> Vec<String> {
        lock(&self.inner.log).issued.clone()
    }
}

async fn discovery(State(idp): State<Arc<Inner>>) -> Json<Value> {
    let b = lock(&idp.behaviour);
    let base = &idp.issuer;
    Json(json!({
        "issuer": b.discovery_issuer.clone().unwrap_or_else(|| base.clone()),
        "authorization_endpoint": format!("{base}/authorize"),
        "token_endpoint": format!("{base}/token"),
        "jwks_uri": format!("{base}/jwks"),
        "userinfo_endpoint": format!("{base}/userinfo"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256"],
        "code_challenge_methods_supported": ["S256"],
        "authorization_response_iss_parameter_supported": b.iss_parameter_supported,
    }))
}

async fn jwks(State(idp): State<Arc<Inner>>) -> Response {
    lock(&idp.log).jwks_fetches += 1;
    let b = lock(&idp.behaviour);
    if let Some(status) = b.jwks_status {
        return StatusCode::from_u16(status)
            .unwrap_or(StatusCode::SERVICE_UNAVAILABLE)
            .into_response();
    }
    let keys: Vec<Value> = b.published.iter().map(EcKey::jwk).collect();
    Json(b.jwks_body.clone().unwrap_or(json!({ "keys": keys }))).into_response()
}

/// Records the request and sends the browser straight back, as if the user had logged in.
async fn authorize(
    State(idp): State<Arc<Inner>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let code = format!("code-{}", portcullis::session::random_token(12));
    {
        let mut log = lock(&idp.log);
        log.authorize.push(query.clone());
        log.codes.insert(code.clone(), query.get("nonce").cloned());
    }
    let Some(mut target) = query
        .get("redirect_uri")
        .and_then(|u| url::Url::parse(u).ok())
    else {
        return (StatusCode::BAD_REQUEST, "redirect_uri missing").into_response();
    };
    let b = lock(&idp.behaviour);
    {
        let mut q = target.query_pairs_mut();
        match &b.authorize_error {
            Some(error) => q.append_pair("error", error),
            None => q.append_pair("code", &code),
        };
        if let Some(state) = query.get("state") {
            q.append_pair("state", state);
        }
        let iss = match &b.iss_param {
            IssParam::Issuer => Some(idp.issuer.as_str()),
            IssParam::Value(v) => Some(v.as_str()),
            IssParam::Omitted => None,
        };
        if let Some(iss) = iss {
            q.append_pair("iss", iss);
        }
    }
    (StatusCode::FOUND, [(header::LOCATION, target.to_string())]).into_response()
}

async fn token(
    State(idp): State<Arc<Inner>>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let nonce = {
        let mut log = lock(&idp.log);
        log.token.push(TokenRequest {
            authorization,
            form: form.clone(),
        });
        form.get("code")
            .and_then(|c| log.codes.get(c).cloned())
            .flatten()
    };
    let delay = lock(&idp.behaviour).token_delay;
    if let Some(delay) = delay {
        // The one deliberate sleep: a slow peer.
        tokio::time::sleep(delay).await;
    }

    let b = lock(&idp.behaviour);
    if let Some(raw) = &b.token_reply {
        let status = StatusCode::from_u16(raw.status).unwrap_or(StatusCode::OK);
        return (
            status,
            [(header::CONTENT_TYPE, raw.content_type)],
            raw.body.clone(),
        )
            .into_response();
    }
    let claims = id_token_claims(&idp.issuer, &b, nonce);
    let id_token = match &b.id_token {
        IdTokenForm::Signed => {
            let kid = match &b.kid_header {
                KidHeader::OfSigner => Some(b.signer.kid.as_str()),
                KidHeader::Absent => None,
                KidHeader::Named(k) => Some(k.as_str()),
            };
            Some(b.signer.sign(kid, &claims))
        }
        IdTokenForm::Custom(make) => Some(make(&claims)),
        IdTokenForm::Omitted => None,
    };
    let access = format!("at-{}", portcullis::session::random_token(24));
    let refresh = format!("rt-{}", portcullis::session::random_token(24));
    let mut body = json!({
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": 300,
        "refresh_token": refresh,
    });
    let mut log = lock(&idp.log);
    log.issued.extend([access, refresh]);
    if let Some(t) = id_token {
        log.issued.push(t.clone());
        body["id_token"] = Value::String(t);
    }
    Json(body).into_response()
}

/// The default claims with the test's changes laid over them.
fn id_token_claims(issuer: &str, b: &Behaviour, nonce: Option<String>) -> Value {
    let now = now();
    let mut claims = json!({
        "iss": issuer,
        "sub": SUBJECT,
        "aud": CLIENT_ID,
        "exp": now + 300,
        "iat": now,
        "name": "User One",
        "email": "user-1@example.test",
    });
    if let Some(n) = nonce {
        claims["nonce"] = Value::String(n);
    }
    let map = claims.as_object_mut().expect("claims object");
    for (name, value) in &b.claims {
        match value {
            Value::Null => map.remove(name),
            v => map.insert(name.clone(), v.clone()),
        };
    }
    claims
}

async fn userinfo(State(idp): State<Arc<Inner>>) -> Json<Value> {
    let b = lock(&idp.behaviour);
    let sub = b.claims.get("sub").cloned().unwrap_or(json!(SUBJECT));
    Json(b.userinfo.clone().unwrap_or(json!({ "sub": sub })))
}
