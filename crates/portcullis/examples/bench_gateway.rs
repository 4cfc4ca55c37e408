//! Benchmark gateway: portcullis in front of one upstream, with one
//! authenticated session inserted straight into the store (no IdP needed:
//! the access token is valid for a day, so no refresh happens).
//!
//! `cargo run --release -p portcullis --example bench_gateway -- LISTEN UPSTREAM STORE`
//! with STORE `memory`, `sqlite://PATH`, `redis://…` or `postgres://…`.
//! Persistent stores seal records with a random key (as in production);
//! `BENCH_CACHE=0` turns the local cache of Redis/PostgreSQL off.
//! Prints `COOKIE=<name>=<value>`. Served by `portcullis::serve` with the
//! binary's allocator, so it measures what `portcullis serve` runs;
//! `BENCH_WORKERS=N` sets `server.workers` (default: one per CPU);
//! `BENCH_SERVER` adds lines to `[server]`.

use portcullis::{
    Gateway,
    config::Config,
    session::{
        SessionId, SessionRecord, StoreOptions, TokenSet, open_store_with, random_key_base64,
        random_token, seal::Keyring,
    },
    time::{Clock, SystemClock},
};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let listen = args.next().unwrap_or_else(|| "127.0.0.1:8080".into());
    let upstream = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:4111".into());
    let store_url = args.next().unwrap_or_else(|| "memory".into());
    let workers = std::env::var("BENCH_WORKERS").unwrap_or_else(|_| "\"auto\"".into());
    // More `[server]` lines, e.g. `idle_timeout = "10m"` to hold idle
    // connections open while measuring their memory (and
    // `max_connections_per_ip = 0` for more than 256 from one load generator).
    let server_extra = std::env::var("BENCH_SERVER").unwrap_or_default();
    let toml = format!(
        r#"
[server]
public_url = "http://{listen}"
profile = "dev"
workers = {workers}
{server_extra}
[oidc]
issuer = "http://127.0.0.1:9"
client_id = "bench"
client_secret = "bench-secret"
[session]
store = "memory"
[[routes]]
prefix = "/api/"
upstream = "{upstream}"
"#
    );
    let config = Config::from_toml_str(&toml, Vec::new())?;
    let cookie_name = config.session.cookie_name.clone();
    let key = random_key_base64();
    let options = StoreOptions {
        keyring: Some(std::sync::Arc::new(Keyring::from_base64([key.as_str()])?)),
        key_prefix: format!("pcbench:{}:", random_token(6)),
        cache: match std::env::var("BENCH_CACHE").as_deref() {
            Ok("0") => None,
            _ => StoreOptions::default().cache,
        },
        ..StoreOptions::default()
    };
    let store = open_store_with(&store_url, &options).await?;
    let now = SystemClock.now();
    let id = SessionId::generate();
    let record = SessionRecord {
        id: id.hash(),
        sub: "bench-user".into(),
        sid: None,
        claims: serde_json::Map::new(),
        roles: vec!["user".into()],
        tokens: TokenSet {
            access_token: random_token(600),
            // As a real session has: so the proxy keeps what a retry after
            // an upstream 401 needs, as in production.
            refresh_token: Some(random_token(40)),
            id_token: None,
            access_expires_at: Some(now + 86_400),
            bearer: Default::default(),
        },
        csrf_token: random_token(32),
        user_agent: None,
        created_at: now,
        last_seen_at: now,
        expires_at: now + 86_400,
        idle_expires_at: now + 86_400,
        version: 1,
    };
    store.save(&record).await?;
    let gateway = Gateway::builder(config).store(store).build().await?;
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!("COOKIE={cookie_name}={}", id.as_cookie_value());
    portcullis::serve(gateway, listener, None, std::future::pending()).await?;
    Ok(())
}
