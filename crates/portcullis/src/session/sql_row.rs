//! The one row codec of the SQL stores (SQLite and PostgreSQL): which
//! columns a session row has, what is written into them, and how a row
//! becomes a [`SessionRecord`] again. The backends keep only their SQL.

use sqlx::{ColumnIndex, Decode, Row, Type};

use super::seal::PayloadCodec;
use super::{SessionRecord, StoreError};
use crate::time::UnixTime;

/// The values a save binds besides the plaintext lookup columns the record
/// carries itself (`id`, `sub`, `sid`, the times).
pub(super) struct SessionRow {
    /// The sealed (or plain JSON) record.
    pub payload: Vec<u8>,
    /// For operators only: the payload keeps the exact `u64`.
    pub version: i64,
}

impl SessionRow {
    pub fn encode(codec: &PayloadCodec, record: &SessionRecord) -> Result<Self, StoreError> {
        Ok(Self {
            payload: codec.encode_session(record)?,
            version: i64::try_from(record.version).unwrap_or(i64::MAX),
        })
    }
}

/// Decode a row selected as `id, payload, last_seen_at, idle_expires_at`, checking the payload
/// belongs to the row's id; `None` when a sealed payload does not open
/// (treated as no session). A column of the wrong type is `Corrupt`, and the
/// message names the session by the first 8 characters of its key only.
pub(super) fn record_from_row<'r, R>(
    codec: &PayloadCodec,
    row: &'r R,
) -> Result<Option<SessionRecord>, StoreError>
where
    R: Row,
    &'static str: ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    Vec<u8>: Decode<'r, R::Database> + Type<R::Database>,
    UnixTime: Decode<'r, R::Database> + Type<R::Database>,
{
    let id: String = row
        .try_get("id")
        .map_err(|e| StoreError::Corrupt(format!("session row id: {e}")))?;
    let label = short(&id);
    let corrupt = |column: &str, e: sqlx::Error| {
        StoreError::Corrupt(format!("session {label}: {column}: {e}"))
    };
    let payload: Vec<u8> = row.try_get("payload").map_err(|e| corrupt("payload", e))?;
    let Some(mut record) = codec.decode_session(&id, &payload)? else {
        return Ok(None);
    };
    // `touch` updates these columns alone; they are newer than the payload's copies.
    record.last_seen_at = row
        .try_get("last_seen_at")
        .map_err(|e| corrupt("last_seen_at", e))?;
    record.idle_expires_at = row
        .try_get("idle_expires_at")
        .map_err(|e| corrupt("idle_expires_at", e))?;
    Ok(Some(record))
}

/// First 8 chars of a key for messages; keys read back from the database may
/// be any length, so never slice blindly.
fn short(key: &str) -> &str {
    key.get(..8).unwrap_or(key)
}
