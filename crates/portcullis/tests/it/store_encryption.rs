//! Encryption at rest through the gateway: the SQLite file holds no token and
//! no email, a wrong key makes the session absent (401, never 500), key
//! rotation keeps old sessions readable and re-seals them on the next write,
//! and a dev gateway without keys generates one beside the database.

use std::path::Path;

use portcullis::{
    Gateway,
    config::Config,
    session::{SessionId, SessionRecord, TokenSet},
    time::{Clock, SystemClock},
};
use reqwest::{StatusCode, header};
use serde_json::json;
use tokio::net::TcpListener;

const K1: &str = "cG9ydGN1bGxpcy10ZXN0LWtleS0wMTIzNDU2Nzg5YWI=";
const K2: &str = "-vv8_f7_eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHg";

fn record(id: &SessionId, now: i64) -> SessionRecord {
    let claims = json!({"email": "alice@example.test", "name": "Alice"});
    SessionRecord {
        id: id.hash(),
        sub: "alice".into(),
        sid: Some("idp-sid".into()),
        claims: claims.as_object().cloned().unwrap_or_default().into(),
        roles: vec!["admin".into()],
        tokens: TokenSet {
            access_token: "ACCESS-TOKEN-TEXT".into(),
            refresh_token: Some("REFRESH-TOKEN-TEXT".into()),
            id_token: Some("ID-TOKEN-TEXT".into()),
            access_expires_at: Some(now + 3600),
        },
        csrf_token: "csrf".into(),
        user_agent: None,
        created_at: now,
        last_seen_at: now,
        expires_at: now + 3600,
        idle_expires_at: now + 1800,
        version: 1,
    }
}

/// A gateway on `db` with `keys` (TOML array body; empty: none), serving on port 0.
/// Several run on one file at once, as separate processes would: without the
/// local cache (a cached process claims the file for itself).
async fn gateway(db: &Path, keys: &str) -> (Gateway, String, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let keys = match keys {
        "" => String::new(),
        k => format!("encryption_keys = [{k}]\n"),
    };
    let toml = format!(
        r#"
[server]
public_url = "{base}"
profile = "dev"
[oidc]
issuer = "http://127.0.0.1:1"
client_id = "c"
client_secret = "s"
[session]
store = "sqlite://{db}"
cache = false
{keys}"#,
        db = db.display()
    );
    let config = Config::from_toml_str(&toml, Vec::new()).expect("config");
    let gateway = Gateway::builder(config).build().await.expect("gateway");
    // The production path: the serving workers, as `portcullis serve`.
    let served = gateway.clone();
    let task = tokio::spawn(async move {
        let _ = portcullis::serve_public(&served, listener, std::future::pending()).await;
    });
    (gateway, base, task)
}

async fn me(base: &str, id: &SessionId) -> StatusCode {
    reqwest::Client::new()
        .get(format!("{base}/auth/me"))
        .header(
            header::COOKIE,
            format!("portcullis={}", id.as_cookie_value()),
        )
        .send()
        .await
        .expect("request")
        .status()
}

#[tokio::test]
async fn sealed_at_rest_wrong_key_is_401_and_rotation_keeps_sessions() {
    let dir = tempfile::tempdir().expect("dir");
    let db = dir.path().join("sessions.db");
    let id = SessionId::generate();

    let (g1, base1, t1) = gateway(&db, &format!("\"{K1}\"")).await;
    g1.store()
        .save(&record(&id, SystemClock.now()))
        .await
        .expect("save");
    assert_eq!(me(&base1, &id).await, StatusCode::OK);

    // The raw database file (payload and every other column) has no secret.
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display()))
        .await
        .expect("raw open");
    let rows: Vec<(Vec<u8>, String)> =
        sqlx::query_as("SELECT payload, sub || coalesce(sid, '') FROM sessions")
            .fetch_all(&pool)
            .await
            .expect("raw rows");
    assert_eq!(rows.len(), 1);
    for secret in [
        "ACCESS-TOKEN-TEXT",
        "REFRESH-TOKEN-TEXT",
        "ID-TOKEN-TEXT",
        "alice@example.test",
    ] {
        let (payload, columns) = &rows[0];
        assert!(
            !payload
                .windows(secret.len())
                .any(|w| w == secret.as_bytes())
        );
        assert!(!columns.contains(secret));
    }
    pool.close().await;

    // Another key only: no session (401), not a server error.
    let (_g2, base2, t2) = gateway(&db, &format!("\"{K2}\"")).await;
    assert_eq!(me(&base2, &id).await, StatusCode::UNAUTHORIZED);

    // Rotation: new key first, old one kept; the old session still works,
    // and the next write seals it with the new key.
    let (g3, base3, t3) = gateway(&db, &format!("\"{K2}\", \"{K1}\"")).await;
    assert_eq!(me(&base3, &id).await, StatusCode::OK);
    let loaded = g3
        .store()
        .load(&id.hash())
        .await
        .expect("load")
        .expect("opens with the old key");
    g3.store().save(&loaded).await.expect("re-seal");
    assert_eq!(me(&base2, &id).await, StatusCode::OK, "re-sealed with K2");
    assert_eq!(
        me(&base1, &id).await,
        StatusCode::UNAUTHORIZED,
        "K1 alone no longer opens it"
    );

    for t in [t1, t2, t3] {
        t.abort();
    }
}

#[tokio::test]
async fn dev_without_keys_generates_one_beside_the_database() {
    let dir = tempfile::tempdir().expect("dir");
    let db = dir.path().join("sessions.db");
    let id = SessionId::generate();
    let key_file = dir.path().join("portcullis-session.key");
    let (g, base, t) = gateway(&db, "").await;
    assert!(key_file.exists(), "dev key generated");
    g.store()
        .save(&record(&id, SystemClock.now()))
        .await
        .expect("save");
    t.abort();
    // A restart reuses the generated key: the session survives.
    let (_g, base_again, t) = gateway(&db, "").await;
    assert_ne!(base, base_again);
    assert_eq!(me(&base_again, &id).await, StatusCode::OK);
    t.abort();
}
