//! A gateway on the real serving path ([`portcullis::serve`], public and
//! admin listeners) with the pieces a test wants in its hands: the crafted
//! IdP, a recording upstream, a [`FlakyStore`] and a [`ManualClock`], so
//! expiry is a clock move and a store outage is a switch.
//!
//! Routes: `/api/` to the upstream with the user's token; `/open/` without.

#![allow(dead_code)]

use portcullis::session::SessionRecords;
use std::{net::SocketAddr, sync::Arc};

use portcullis::{
    Gateway,
    config::Config,
    session::{SessionId, SessionRecord, SessionStore, TokenSet, random_token},
    time::{Clock, ManualClock},
};
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};

use super::{
    crafted_idp::{CLIENT_ID, CLIENT_SECRET, CraftedIdp, SUBJECT, now},
    flaky_store::FlakyStore,
    serving::Upstream,
};

pub const ADMIN_TOKEN: &str = "admin-token-0123456789";

pub struct Harness {
    pub idp: CraftedIdp,
    pub upstream: Upstream,
    pub base: String,
    pub admin: String,
    pub store: Arc<FlakyStore>,
    pub clock: ManualClock,
    pub http: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), portcullis::GatewayError>>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.abort();
    }
}

impl Harness {
    /// `oidc` and `session` are TOML lines added to those sections.
    pub async fn start(oidc: &str, session: &str) -> Self {
        let idp = CraftedIdp::start().await;
        let upstream = Upstream::start().await;
        let store = Arc::new(FlakyStore::new());
        let clock = ManualClock::new(now());
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let admin = TcpListener::bind("127.0.0.1:0").await.expect("bind admin");
        let addr: SocketAddr = listener.local_addr().expect("addr");
        let admin_addr = admin.local_addr().expect("admin addr");
        let toml = format!(
            r#"
[server]
public_url = "http://{addr}"
profile = "dev"
[admin]
listen = ""
token = "{ADMIN_TOKEN}"
[oidc]
issuer = "{issuer}"
client_id = "{CLIENT_ID}"
client_secret = "{CLIENT_SECRET}"
http_timeout = "2s"
{oidc}
[session]
store = "memory"
{session}
[[routes]]
prefix = "/api/"
upstream = "http://{up}"
[[routes]]
prefix = "/open/"
upstream = "http://{up}"
token = "none"
"#,
            issuer = idp.issuer,
            up = upstream.addr,
        );
        let config = Config::from_toml_str(&toml, Vec::<(String, String)>::new())
            .unwrap_or_else(|e| panic!("test config invalid:\n{e}"));
        let gateway = Gateway::builder(config)
            .store(store.clone() as Arc<dyn SessionStore>)
            .clock(Arc::new(clock.clone()))
            .build()
            .await
            .expect("gateway");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(portcullis::serve(
            gateway,
            listener,
            Some(admin),
            async move {
                let _ = stopped.await;
            },
        ));
        Self {
            idp,
            upstream,
            base: format!("http://{addr}"),
            admin: format!("http://{admin_addr}"),
            store,
            clock,
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client"),
            stop: Some(stop),
            task,
        }
    }

    /// Stop serving as `SIGTERM` does and wait until the gateway is done
    /// (drained, and what it saves at shutdown saved).
    pub async fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task)
            .await
            .expect("serve task")
            .expect("serve ended cleanly");
    }

    /// Store a live session of [`SUBJECT`] whose access token expires in
    /// `expires_in` seconds, with a refresh token, created at the clock's now.
    pub async fn session(
        &self,
        sid: &str,
        roles: &[&str],
        expires_in: i64,
    ) -> (SessionId, SessionRecord) {
        let id = SessionId::generate();
        let now = self.clock.now();
        let record = SessionRecord {
            id: id.hash(),
            sub: SUBJECT.into(),
            sid: Some(sid.into()),
            claims: Default::default(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            tokens: TokenSet {
                access_token: format!("at-{}", random_token(8)).into(),
                refresh_token: Some(format!("rt-{}", random_token(8)).into()),
                id_token: None,
                access_expires_at: Some(now + expires_in),
            },
            csrf_token: random_token(32),
            user_agent: Some("test".into()),
            created_at: now,
            last_seen_at: now,
            expires_at: now + 3600,
            idle_expires_at: now + 1800,
            version: 1,
        };
        self.store.save(&record).await.expect("save session");
        (id, record)
    }

    pub fn cookie(id: &SessionId) -> String {
        format!("portcullis={}", id.as_cookie_value())
    }

    /// `GET path` with the session's cookie.
    pub async fn get(&self, path: &str, id: &SessionId) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.base))
            .header(reqwest::header::COOKIE, Self::cookie(id))
            .send()
            .await
            .expect("GET")
    }

    pub async fn record(&self, id: &SessionId) -> Option<SessionRecord> {
        self.store.load(&id.hash()).await.expect("load")
    }

    /// The refresh tokens the gateway sent to the IdP, oldest first.
    pub fn refresh_tokens_sent(&self) -> Vec<String> {
        self.idp
            .token_requests()
            .iter()
            .filter(|r| r.form.get("grant_type").map(String::as_str) == Some("refresh_token"))
            .filter_map(|r| r.form.get("refresh_token").cloned())
            .collect()
    }

    /// The admin listener's `GET path` (bearer [`ADMIN_TOKEN`]): status and body.
    pub async fn admin_get(&self, path: &str) -> (reqwest::StatusCode, String) {
        let resp = self
            .http
            .get(format!("{}{path}", self.admin))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("admin GET");
        let status = resp.status();
        (status, resp.text().await.expect("body"))
    }
}
