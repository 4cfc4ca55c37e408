-- Session store schema for the SQLite backend.
--
-- Once released, never edit this file: sqlx checksums applied migrations and
-- refuses to start on a mismatch. Add 0002_*.sql instead.
--
-- `payload` holds the whole serialized SessionRecord / LoginState (to be
-- encrypted later). It is the source of truth except for `last_seen_at` and
-- `idle_expires_at`, which `touch` updates alone (so activity never rewrites
-- tokens) and which override the payload's copies on load. The other columns
-- are plaintext copies kept for lookups and garbage collection.

CREATE TABLE IF NOT EXISTS sessions (
    -- SessionHash hex (SHA-256 of the cookie value), never the cookie itself.
    id              TEXT    PRIMARY KEY NOT NULL,
    sub             TEXT    NOT NULL,
    sid             TEXT    NULL,
    payload         BLOB    NOT NULL,
    expires_at      INTEGER NOT NULL,
    idle_expires_at INTEGER NOT NULL,
    last_seen_at    INTEGER NOT NULL,
    version         INTEGER NOT NULL,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
) WITHOUT ROWID;

-- Back-channel logout and admin revocation look sessions up by subject or IdP sid.
CREATE INDEX IF NOT EXISTS sessions_sub ON sessions (sub);
CREATE INDEX IF NOT EXISTS sessions_sid ON sessions (sid) WHERE sid IS NOT NULL;
-- GC deletes by either expiry; one index each so both sides of the OR can use one.
CREATE INDEX IF NOT EXISTS sessions_expires_at ON sessions (expires_at);
CREATE INDEX IF NOT EXISTS sessions_idle_expires_at ON sessions (idle_expires_at);

CREATE TABLE IF NOT EXISTS login_states (
    -- SHA-256 hex of the OAuth `state` parameter.
    key        TEXT    PRIMARY KEY NOT NULL,
    payload    BLOB    NOT NULL,
    expires_at INTEGER NOT NULL
) WITHOUT ROWID;

CREATE INDEX IF NOT EXISTS login_states_expires_at ON login_states (expires_at);
