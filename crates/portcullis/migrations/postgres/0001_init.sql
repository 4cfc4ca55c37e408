-- Session store schema for the PostgreSQL backend (`portcullis migrate`, or
-- on start with `session.migrate = true`).
--
-- Once released, never edit this file: sqlx checksums applied migrations and
-- refuses to start on a mismatch. Add 0002_*.sql instead.
--
-- `payload` is the sealed (AES-256-GCM) SessionRecord / LoginState; it is the
-- source of truth except for `last_seen_at` and `idle_expires_at`, which
-- `touch` updates alone and which override the payload's copies on load. The
-- other columns are plaintext copies for lookups and garbage collection; none
-- holds a token or a personal claim.

CREATE TABLE IF NOT EXISTS sessions (
    -- SessionHash hex (SHA-256 of the cookie value), never the cookie itself.
    id              TEXT        PRIMARY KEY,
    sub             TEXT        NOT NULL,
    sid             TEXT        NULL,
    payload         BYTEA       NOT NULL,
    expires_at      BIGINT      NOT NULL,
    idle_expires_at BIGINT      NOT NULL,
    last_seen_at    BIGINT      NOT NULL,
    -- Fencing version for compare-and-swap saves (token refresh).
    version         BIGINT      NOT NULL,
    created_at      BIGINT      NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS sessions_sub ON sessions (sub);
CREATE INDEX IF NOT EXISTS sessions_sid ON sessions (sid) WHERE sid IS NOT NULL;
-- GC deletes by either expiry; one index each so both sides of the OR can use one.
CREATE INDEX IF NOT EXISTS sessions_expires_at ON sessions (expires_at);
CREATE INDEX IF NOT EXISTS sessions_idle_expires_at ON sessions (idle_expires_at);

CREATE TABLE IF NOT EXISTS login_states (
    -- SHA-256 hex of the OAuth `state` parameter.
    key        TEXT   PRIMARY KEY,
    payload    BYTEA  NOT NULL,
    expires_at BIGINT NOT NULL
);

CREATE INDEX IF NOT EXISTS login_states_expires_at ON login_states (expires_at);

-- Refresh leases: at most one token refresh per session at a time across
-- replicas. A row is held by `token` until `expires_at` (database clock, so
-- replicas with skewed clocks agree); an expired row may be taken over.
CREATE TABLE IF NOT EXISTS refresh_leases (
    id         TEXT        PRIMARY KEY,
    token      TEXT        NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);

-- Back-channel logout replay protection: the `jti` of every accepted logout
-- token, kept until the token would be refused for its age anyway.
CREATE TABLE IF NOT EXISTS logout_jtis (
    jti        TEXT   PRIMARY KEY,
    expires_at BIGINT NOT NULL
);

CREATE INDEX IF NOT EXISTS logout_jtis_expires_at ON logout_jtis (expires_at);
