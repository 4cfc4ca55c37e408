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
//! `BENCH_SERVER` adds lines to `[server]`; `BENCH_SESSIONS=N` stores N − 1
//! more sessions, shaped like a real login's (ID token, claims, user agent),
//! before it listens, and prints `SESSIONS=N` (bench/scale.sh: their memory);
//! `BENCH_COOKIES=FILE` writes every session's cookie to FILE, one a line
//! (bench/scale.sh: one proxied request per session, then their memory);
//! `BENCH_KEY_PREFIX` sets the Redis key prefix (default `pcbench:<random>:`).
//! `BENCH_SHAPE=opaque` gives the sessions the token sizes of the tests'
//! `oidc-provider` (43-character access and refresh tokens, an 808-character
//! ID token) instead of JWT-sized ones (800, 54, 934); `BENCH_ID_TOKEN=0`
//! gives them no ID token, as `session.keep_id_token = false` does.

use std::io::Write;

use portcullis::{
    Gateway,
    config::Config,
    session::{
        SessionHash, SessionId, SessionRecord, StoreOptions, TokenSet, open_store_with,
        random_key_base64, random_token, seal::Keyring,
    },
    time::{Clock, SystemClock, UnixTime},
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
        key_prefix: std::env::var("BENCH_KEY_PREFIX")
            .unwrap_or_else(|_| format!("pcbench:{}:", random_token(6))),
        cache: match std::env::var("BENCH_CACHE").as_deref() {
            Ok("0") => None,
            _ => StoreOptions::default().cache,
        },
        ..StoreOptions::default()
    };
    let store = open_store_with(&store_url, &options).await?;
    let now = SystemClock.now();
    let id = SessionId::generate();
    let shape = Shape::from_env();
    let record = bench_session(id.hash(), now, "bench-user".into(), false, shape);
    store.save(&record).await?;
    let sessions: usize = std::env::var("BENCH_SESSIONS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1);
    let mut cookies = std::env::var_os("BENCH_COOKIES")
        .map(|path| std::fs::File::create(path).map(std::io::BufWriter::new))
        .transpose()?;
    if let Some(out) = &mut cookies {
        writeln!(out, "{cookie_name}={}", id.as_cookie_value())?;
    }
    for n in 1..sessions {
        let extra_id = SessionId::generate();
        let extra = bench_session(extra_id.hash(), now, format!("user-{n}"), true, shape);
        store.save(&extra).await?;
        if let Some(out) = &mut cookies {
            writeln!(out, "{cookie_name}={}", extra_id.as_cookie_value())?;
        }
    }
    if let Some(mut out) = cookies {
        out.flush()?;
    }
    if sessions > 1 {
        println!("SESSIONS={sessions}");
    }
    let gateway = Gateway::builder(config).store(store).build().await?;
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!("COOKIE={cookie_name}={}", id.as_cookie_value());
    portcullis::serve(gateway, listener, None, std::future::pending()).await?;
    Ok(())
}

/// Random bytes per token (base64url makes 4 characters of 3 bytes).
#[derive(Clone, Copy)]
struct Shape {
    access: usize,
    refresh: usize,
    id: Option<usize>,
}

impl Shape {
    fn from_env() -> Self {
        let opaque = std::env::var("BENCH_SHAPE").as_deref() == Ok("opaque");
        let (access, refresh, id) = if opaque {
            (32, 32, 606)
        } else {
            (600, 40, 700)
        };
        let id = (std::env::var("BENCH_ID_TOKEN").as_deref() != Ok("0")).then_some(id);
        Self {
            access,
            refresh,
            id,
        }
    }
}

/// A session as the store holds it. The one that `bench/run.sh` requests with
/// has an access and a refresh token, as a real one does, so the proxy keeps
/// what a retry after an upstream 401 needs. `like_login` adds what a login
/// through an IdP also leaves (ID token, sid, claims, user agent), sized like
/// the development IdP's.
fn bench_session(
    id: SessionHash,
    now: UnixTime,
    sub: String,
    like_login: bool,
    shape: Shape,
) -> SessionRecord {
    let mut claims = serde_json::Map::new();
    if like_login {
        for (claim, value) in [
            ("name", "Bench User"),
            ("email", "bench.user@example.com"),
            ("preferred_username", "bench-user"),
        ] {
            claims.insert(claim.into(), value.into());
        }
    }
    SessionRecord {
        id,
        sub,
        sid: like_login.then(|| random_token(22)),
        claims: claims.into(),
        roles: vec!["user".into()],
        tokens: TokenSet {
            access_token: random_token(shape.access).into(),
            refresh_token: Some(random_token(shape.refresh).into()),
            id_token: shape
                .id
                .filter(|_| like_login)
                .map(|n| random_token(n).into()),
            access_expires_at: Some(now + 86_400),
        },
        csrf_token: random_token(32),
        user_agent: like_login.then(|| {
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) \
             Chrome/130.0 Safari/537.36"
                .into()
        }),
        created_at: now,
        last_seen_at: now,
        expires_at: now + 86_400,
        idle_expires_at: now + 86_400,
        version: 1,
    }
}
