//! Who may write a SQLite session file. The local cache is only correct when
//! every write passes through it, so a cached store claims the file
//! exclusively; an uncached one claims it shared (several uncached processes
//! on one file are fine: they all read the file on every request). Either
//! claim refuses the other, so a cached process never serves a session that
//! another process has already revoked.
//!
//! The claim is an advisory lock (`flock`) on `<database>.claim` beside the
//! file. The kernel drops it when the process exits, even on SIGKILL, so a
//! crash never leaves a stale claim behind.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

use super::StoreError;

/// A held claim; released on drop.
#[derive(Debug)]
pub struct FileClaim {
    _file: File,
}

impl FileClaim {
    pub fn take(database: &Path, exclusive: bool) -> Result<Self, StoreError> {
        let path = claim_path(database);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| StoreError::Unavailable(format!("cannot open {}: {e}", path.display())))?;
        let locked = if exclusive {
            file.try_lock()
        } else {
            file.try_lock_shared()
        };
        match locked {
            Ok(()) => Ok(Self { _file: file }),
            Err(TryLockError::WouldBlock) => Err(StoreError::Unavailable(format!(
                "{} is in use by another portcullis process{}; processes that share one \
                 SQLite file must all set session.cache = false",
                database.display(),
                if exclusive {
                    ""
                } else {
                    " with its session cache on"
                },
            ))),
            Err(TryLockError::Error(e)) => Err(StoreError::Unavailable(format!(
                "cannot lock {}: {e}",
                path.display()
            ))),
        }
    }
}

fn claim_path(database: &Path) -> PathBuf {
    let mut name = database.as_os_str().to_owned();
    name.push(".claim");
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cached_process_and_any_other_process_cannot_share_a_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("sessions.db");

        // Uncached processes share the file.
        let a = FileClaim::take(&db, false).expect("shared");
        let b = FileClaim::take(&db, false).expect("shared twice");
        // A cached one is refused while they run...
        let refused = FileClaim::take(&db, true).expect_err("exclusive beside shared");
        assert!(
            refused.to_string().contains("session.cache = false"),
            "{refused}"
        );
        drop((a, b));

        // ...and refuses them while it runs; its end frees the file.
        let cached = FileClaim::take(&db, true).expect("exclusive");
        let refused = FileClaim::take(&db, false).expect_err("shared beside exclusive");
        assert!(
            refused.to_string().contains("with its session cache on"),
            "{refused}"
        );
        FileClaim::take(&db, true).expect_err("a second cached process");
        drop(cached);
        FileClaim::take(&db, true).expect("free again");
    }

    #[tokio::test]
    async fn a_revocation_by_another_process_cannot_hide_behind_the_cache() {
        // The attack: process B logs a user out in the shared file while
        // process A keeps serving its cached copy. A cached store refuses to
        // open a file another process serves, and the other way round.
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}", dir.path().join("s.db").display());
        let cached = crate::session::StoreOptions::default();
        let uncached = crate::session::StoreOptions {
            cache: None,
            ..Default::default()
        };
        let a = crate::session::open_store_with(&url, &cached)
            .await
            .expect("first");
        assert!(
            crate::session::open_store_with(&url, &uncached)
                .await
                .is_err()
        );
        assert!(
            crate::session::open_store_with(&url, &cached)
                .await
                .is_err()
        );
        // The admin commands (gc, migrate) do not claim the file.
        let admin = crate::session::StoreOptions {
            cache: None,
            claim_sqlite_file: false,
            ..Default::default()
        };
        crate::session::open_store_with(&url, &admin)
            .await
            .expect("gc beside a serving process");
        drop(a);
        crate::session::open_store_with(&url, &uncached)
            .await
            .expect("free after the first one ends");
    }
}
