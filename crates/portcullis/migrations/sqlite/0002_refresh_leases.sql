-- Refresh leases: at most one token refresh per session at a time, across
-- every process sharing this database (see `SessionStore::acquire_refresh_lease`).
--
-- A row is a lease held by `token` until `expires_at_ms` (unix milliseconds);
-- an expired row may be taken over by the next acquirer. Release deletes it.

CREATE TABLE IF NOT EXISTS refresh_leases (
    -- SessionHash hex, like sessions.id. No foreign key: a lease may outlive
    -- a session deleted mid-refresh, and release removes it anyway.
    id            TEXT    PRIMARY KEY NOT NULL,
    token         TEXT    NOT NULL,
    expires_at_ms INTEGER NOT NULL
) WITHOUT ROWID;
