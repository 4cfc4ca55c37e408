//! `portcullis migrate` and `portcullis gc` against PostgreSQL (`DATABASE_URL`,
//! default `postgres://postgres@127.0.0.1:5432/test`), in a schema of the
//! test's own; and `check` refusing a prod persistent store without keys.

use std::process::Command;

use crate::portcullis;

fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

fn psql(sql: &str) -> String {
    let out = Command::new("psql")
        .arg(database_url())
        .args(["-tAc", sql])
        .output()
        .expect("psql on PATH");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn config(store: &str, keys: bool) -> String {
    let keys = if keys {
        "encryption_keys = [\"cG9ydGN1bGxpcy10ZXN0LWtleS0wMTIzNDU2Nzg5YWI=\"]\n"
    } else {
        ""
    };
    format!(
        r#"
[server]
public_url = "https://app.example.com"
[oidc]
issuer = "https://idp.example.com"
client_id = "portal"
client_secret = "s"
[session]
store = "{store}"
migrate = false
{keys}"#
    )
}

#[test]
fn migrate_creates_the_schema_and_gc_deletes_expired_rows() {
    let schema = format!("pctest_cli_{}", std::process::id());
    psql(&format!(
        "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"
    ));
    let store = format!("{}?options[search_path]={schema}", database_url());
    let cfg = config(&store, true);

    let out = portcullis(&["migrate"], &cfg);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tables = psql(&format!(
        "SELECT string_agg(table_name, ',' ORDER BY table_name) FROM information_schema.tables \
         WHERE table_schema = '{schema}'"
    ));
    for table in [
        "_sqlx_migrations",
        "login_states",
        "logout_jtis",
        "refresh_leases",
        "sessions",
    ] {
        assert!(
            tables.split(',').any(|t| t == table),
            "{table} missing: {tables}"
        );
    }
    // Idempotent.
    assert!(portcullis(&["migrate"], &cfg).status.success());

    psql(&format!(
        "INSERT INTO {schema}.sessions (id, sub, payload, expires_at, idle_expires_at, last_seen_at, version, created_at) \
         VALUES ('dead', 'a', '\\x00', 1, 1, 0, 1, 0), ('live', 'b', '\\x00', 9999999999, 9999999999, 0, 1, 0)"
    ));
    let out = portcullis(&["gc"], &cfg);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("deleted 1 expired sessions"));
    assert_eq!(
        psql(&format!(
            "SELECT string_agg(id, ',') FROM {schema}.sessions"
        )),
        "live"
    );
    psql(&format!("DROP SCHEMA {schema} CASCADE"));
}

#[test]
fn prod_refuses_a_persistent_store_without_keys() {
    let out = portcullis(&["check"], &config("redis://127.0.0.1:6379", false));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("session.encryption_keys"));
    let out = portcullis(&["check"], &config("memory", false));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
