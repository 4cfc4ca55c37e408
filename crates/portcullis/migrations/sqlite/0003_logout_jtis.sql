-- Back-channel logout replay protection: the `jti` of every accepted logout
-- token, kept until the token would be refused for its age anyway. Shared by
-- every process using this database, so a replayed token is refused by all.

CREATE TABLE IF NOT EXISTS logout_jtis (
    jti        TEXT    PRIMARY KEY NOT NULL,
    expires_at INTEGER NOT NULL
) WITHOUT ROWID;

CREATE INDEX IF NOT EXISTS logout_jtis_expires_at ON logout_jtis (expires_at);
