//! Tests of the single-node Redis store (a Redis at `REDIS_URL`).

use super::record::EXPIRY_GRACE_SECS;
use super::*;
use crate::session::SessionStore;
use crate::session::contract::sample_record;
use crate::session::random_token;
use crate::session::seal::Keyring;

pub(crate) fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// Deletes every key under the test's prefix when dropped.
pub(crate) struct PrefixGuard(pub String);

impl Drop for PrefixGuard {
    fn drop(&mut self) {
        let Ok(client) = Client::open(redis_url()) else {
            return;
        };
        let Ok(mut conn) = client.get_connection() else {
            return;
        };
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}*", self.0))
            .query(&mut conn)
            .unwrap_or_default();
        if !keys.is_empty() {
            let _: redis::RedisResult<i64> = redis::cmd("DEL").arg(keys).query(&mut conn);
        }
    }
}

pub(crate) async fn store_with(codec: PayloadCodec) -> (RedisStore, PrefixGuard) {
    let prefix = format!("pctest:{}:", random_token(9));
    let options = RedisOptions {
        key_prefix: prefix.clone(),
        ..RedisOptions::default()
    };
    let store = RedisStore::connect(&redis_url(), options, codec)
        .await
        .expect("redis at REDIS_URL");
    (store, PrefixGuard(prefix))
}

fn ring(byte: u8) -> Arc<Keyring> {
    Arc::new(Keyring::from_bytes(&[[byte; 32]]).expect("ring"))
}

mod contract {
    use super::*;

    crate::session_store_contract_tests!(async {
        let (store, guard) = store_with(PayloadCodec::sealed(ring(7))).await;
        (Arc::new(store) as Arc<dyn SessionStore>, guard)
    });
}

mod cached_contract {
    use super::*;
    use crate::session::cache::{CacheOptions, CachedStore};

    crate::session_store_contract_tests!(async {
        let (store, guard) = store_with(PayloadCodec::sealed(ring(7))).await;
        let bus = store.invalidation_bus();
        let cached = CachedStore::new(Arc::new(store), Some(bus), CacheOptions::default());
        (Arc::new(cached) as Arc<dyn SessionStore>, guard)
    });
}

#[tokio::test]
async fn raw_value_holds_no_token_or_email_and_wrong_key_is_no_session() {
    let (store, _guard) = store_with(PayloadCodec::sealed(ring(1))).await;
    let now = crate::time::Clock::now(&crate::time::SystemClock);
    let (_, record) = sample_record("alice", Some("sid-1"), now);
    store.save(&record).await.expect("save");
    let mut conn = store.connection();
    let raw: Vec<(Vec<u8>, Vec<u8>)> = conn
        .hgetall(format!("{}s:{}", store.prefix(), record.id.as_str()))
        .await
        .expect("raw");
    let all: Vec<u8> = raw.into_iter().flat_map(|(k, v)| [k, v].concat()).collect();
    for secret in [
        record.tokens.access_token.as_str(),
        record.tokens.refresh_token.as_deref().unwrap_or("x"),
        record.tokens.id_token.as_deref().unwrap_or("x"),
        "alice@example.test",
        record.csrf_token.as_str(),
    ] {
        assert!(
            !all.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "raw Redis value contains {secret}"
        );
    }

    // Same data, other key: no session, not an error.
    let other = RedisStore {
        codec: PayloadCodec::sealed(ring(2)),
        ..store.clone()
    };
    assert_eq!(other.load(&record.id).await.expect("load"), None);
    // Rotation: new key first, old one still opens; the next write re-seals.
    let rotated = RedisStore {
        codec: PayloadCodec::sealed(Arc::new(
            Keyring::from_bytes(&[[2; 32], [1; 32]]).expect("ring"),
        )),
        ..store.clone()
    };
    let loaded = rotated
        .load(&record.id)
        .await
        .expect("load")
        .expect("opens");
    rotated.save(&loaded).await.expect("re-seal");
    assert_eq!(other.load(&record.id).await.expect("load"), Some(loaded));
    assert_eq!(store.load(&record.id).await.expect("old key only"), None);
}

#[tokio::test]
async fn records_carry_a_ttl() {
    let (store, _guard) = store_with(PayloadCodec::plain()).await;
    let now = crate::time::Clock::now(&crate::time::SystemClock);
    let (_, record) = sample_record("alice", None, now);
    store.save(&record).await.expect("save");
    let mut conn = store.connection();
    let ttl: i64 = conn
        .ttl(format!("{}s:{}", store.prefix(), record.id.as_str()))
        .await
        .expect("ttl");
    // Idle expiry is 30 min out, plus the grace period.
    assert!((1700..=1800 + EXPIRY_GRACE_SECS).contains(&ttl), "{ttl}");
}

#[tokio::test]
async fn unreachable_server_fails_within_the_timeout() {
    let started = std::time::Instant::now();
    let options = RedisOptions {
        timeout: Duration::from_millis(300),
        ..RedisOptions::default()
    };
    // Port 1 on loopback: nothing listens.
    let result = RedisStore::connect("redis://127.0.0.1:1", options, PayloadCodec::plain()).await;
    assert!(matches!(result, Err(StoreError::Unavailable(_))));
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[test]
fn sentinel_url_is_parsed_and_redacted() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let result = rt.block_on(client_for("redis+sentinel://u:pw@127.0.0.1:1/"));
    match result {
        Err(StoreError::BadUrl(msg)) => assert!(!msg.contains("pw"), "{msg}"),
        other => panic!("expected BadUrl, got {:?}", other.map(|_| ())),
    }
}
