//! Opening the store a `session.store` URL names, with its encryption
//! keyring, timeouts and local cache.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::cache::{CacheOptions, CachedStore, InvalidationBus};
use super::postgres::{PostgresOptions, PostgresStore};
use super::redis::{RedisClusterStore, RedisOptions, RedisStore};
use super::seal::{Keyring, PayloadCodec};
use super::{MemoryStore, SessionStore, SqliteStore, StoreError, random_key_base64, redact_url};

/// File name of the key a dev gateway generates when none is configured.
pub const DEV_KEY_FILE: &str = "portcullis-session.key";

/// Everything besides the URL that opening a store needs.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Seals payloads at rest; `None` stores plain JSON (memory store, tests).
    pub keyring: Option<Arc<Keyring>>,
    /// Redis key prefix (default `portcullis:`).
    pub key_prefix: String,
    /// Upper bound for one store operation (default 2 s).
    pub timeout: Duration,
    /// Local cache of loaded sessions; `None` disables it.
    pub cache: Option<CacheOptions>,
    /// Serve sessions from a SQLite file: claim it, exclusively when cached
    /// (see `sqlite_claim.rs`). Off for the admin commands (`gc`, `migrate`).
    pub claim_sqlite_file: bool,
    /// Run SQL migrations on open (default true).
    pub migrate: bool,
    /// PostgreSQL schema to use instead of the URL's search_path.
    pub pg_schema: Option<String>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            keyring: None,
            key_prefix: "portcullis:".into(),
            timeout: Duration::from_secs(2),
            cache: Some(CacheOptions::default()),
            claim_sqlite_file: true,
            migrate: true,
            pg_schema: None,
        }
    }
}

impl StoreOptions {
    fn codec(&self) -> PayloadCodec {
        match &self.keyring {
            Some(ring) => PayloadCodec::sealed(ring.clone()),
            None => PayloadCodec::plain(),
        }
    }
}

/// Open the store `url` names: `memory`, `sqlite://PATH`, `redis://`,
/// `rediss://`, `redis+sentinel://`, `redis+cluster://`,
/// `rediss+cluster://`, `postgres://`. Remote stores get the
/// local cache (with cross-replica invalidation) unless `options.cache` is `None`.
pub async fn open_store_with(
    url: &str,
    options: &StoreOptions,
) -> Result<Arc<dyn SessionStore>, StoreError> {
    if url == "memory" {
        return Ok(Arc::new(MemoryStore::new()));
    }
    if url.starts_with("sqlite:") {
        let mut store = SqliteStore::connect(url).await?;
        if let Some(ring) = &options.keyring {
            store = store.with_keyring(ring.clone());
        }
        if options.claim_sqlite_file {
            store = store.claim_file(url, options.cache.is_some())?;
        }
        // Without a bus: this process is the only one writing the file
        // (the exclusive claim), so its own writes are every write.
        return Ok(match options.cache {
            Some(cache) => Arc::new(CachedStore::new(Arc::new(store), None, cache)),
            None => Arc::new(store),
        });
    }
    let redis_options = || RedisOptions {
        key_prefix: options.key_prefix.clone(),
        timeout: options.timeout,
    };
    let (store, bus): (Arc<dyn SessionStore>, Arc<dyn InvalidationBus>) =
        if url.starts_with("redis+cluster://") || url.starts_with("rediss+cluster://") {
            let store = RedisClusterStore::connect(url, redis_options(), options.codec()).await?;
            let bus = store.invalidation_bus();
            (Arc::new(store), bus)
        } else if url.starts_with("redis://")
            || url.starts_with("rediss://")
            || url.starts_with("redis+sentinel://")
        {
            let store = RedisStore::connect(url, redis_options(), options.codec()).await?;
            let bus = store.invalidation_bus();
            (Arc::new(store), bus)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let pg_options = PostgresOptions {
                timeout: options.timeout,
                schema: options.pg_schema.clone(),
                migrate: options.migrate,
                ..PostgresOptions::default()
            };
            let store = PostgresStore::connect(url, pg_options, options.codec()).await?;
            let bus = store.invalidation_bus();
            (Arc::new(store), bus)
        } else {
            return Err(StoreError::BadUrl(redact_url(url)));
        };
    Ok(match options.cache {
        Some(cache) => Arc::new(CachedStore::new(store, Some(bus), cache)),
        None => store,
    })
}

/// The dev profile's generated key: read from, or created in, the key file.
pub(crate) fn dev_keyring(store_url: &str) -> Result<Keyring, StoreError> {
    let path = dev_key_path(store_url);
    let fail = |what: &str, e: std::io::Error| {
        StoreError::Unavailable(format!("{what} {}: {e}", path.display()))
    };
    let key = match std::fs::read_to_string(&path) {
        Ok(text) => text.trim().to_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = random_key_base64();
            write_private(&path, &key).map_err(|e| fail("cannot write", e))?;
            tracing::warn!(
                path = %path.display(),
                "no session.encryption_keys configured: generated a development key; \
                 set encryption_keys (portcullis keygen) before going to production"
            );
            key
        }
        Err(e) => return Err(fail("cannot read", e)),
    };
    Keyring::from_base64([key.as_str()])
        .map_err(|e| StoreError::BadUrl(format!("{}: {e}", path.display())))
}

fn dev_key_path(store_url: &str) -> PathBuf {
    let dir = store_url
        .strip_prefix("sqlite://")
        .map(|p| p.split('?').next().unwrap_or(p))
        .and_then(|p| Path::new(p).parent())
        .filter(|p| !p.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    dir.join(DEV_KEY_FILE)
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(text.as_bytes())?;
    file.write_all(b"\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store_url::is_persistent;

    #[test]
    fn persistence_and_key_path() {
        assert!(!is_persistent("memory"));
        assert!(!is_persistent("sqlite::memory:"));
        assert!(is_persistent("sqlite://data/x.db"));
        assert!(is_persistent("redis://127.0.0.1"));
        assert_eq!(
            dev_key_path("sqlite:///var/lib/p/sessions.db"),
            PathBuf::from("/var/lib/p").join(DEV_KEY_FILE)
        );
        assert_eq!(
            dev_key_path("redis://h"),
            PathBuf::from(".").join(DEV_KEY_FILE)
        );
    }

    #[test]
    fn dev_key_is_generated_once_and_reused() {
        let dir = tempfile::tempdir().expect("dir");
        let url = format!("sqlite://{}", dir.path().join("s.db").display());
        let first = dev_keyring(&url).expect("generate");
        let second = dev_keyring(&url).expect("reuse");
        assert_eq!(first.sealing_key_id(), second.sealing_key_id());
    }
}
