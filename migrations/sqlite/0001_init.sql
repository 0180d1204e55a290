-- Times are integer milliseconds since the Unix epoch (UTC); ids are UUID text.

CREATE TABLE users (
    id            TEXT PRIMARY KEY NOT NULL,
    email         TEXT NOT NULL UNIQUE,       -- trimmed and lower-cased before it gets here
    password_hash TEXT NOT NULL,              -- argon2id, PHC string
    roles         TEXT NOT NULL DEFAULT '[]', -- JSON array of strings
    created_at    INTEGER NOT NULL
);

-- One row per device session; it also holds the head of the session's refresh-token chain,
-- so a rotation is a single conditional UPDATE of this row.
CREATE TABLE sessions (
    id                  TEXT PRIMARY KEY NOT NULL,
    user_id             TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at          INTEGER NOT NULL,
    last_used_at        INTEGER NOT NULL,
    absolute_expires_at INTEGER NOT NULL,
    refresh_expires_at  INTEGER NOT NULL,
    revoked_at          INTEGER,
    revoked_reason      TEXT,
    user_agent          TEXT,
    ip                  TEXT,
    generation          INTEGER NOT NULL DEFAULT 0,
    current_hash        BLOB NOT NULL,  -- SHA-256 of the current refresh token
    rotated_at          INTEGER,
    sealed_current      BLOB,
    -- Cookie-transport sessions only. Kept in clear: the browser's scripts read it anyway, and
    -- it is worthless without the HttpOnly cookies it accompanies.
    csrf_token          TEXT
);
-- No index covers a column a rotation writes (generation, rotated_at, last_used_at,
-- sealed_current, refresh_expires_at), so a rotation adds no index entries for this table.
-- A user's few sessions are sorted after the lookup; idle sessions are swept by their
-- absolute end rather than by an index on the sliding expiry.
CREATE INDEX sessions_by_user ON sessions (user_id);
CREATE INDEX sessions_by_absolute_end ON sessions (absolute_expires_at);
CREATE INDEX sessions_by_revoked ON sessions (revoked_at) WHERE revoked_at IS NOT NULL;

-- Every refresh token ever issued, by SHA-256, so an old ancestor is recognised as reuse
-- rather than as an unknown token.
CREATE TABLE refresh_tokens (
    hash       BLOB PRIMARY KEY NOT NULL,
    session_id TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    generation INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX refresh_tokens_by_session ON refresh_tokens (session_id);

-- Every chain head written to a session is recorded here by the statement that writes it, so
-- creating a session and rotating a token are each one statement, atomic without a
-- transaction (SQLite has one writer; fewer statements per write is more writes per second).
CREATE TRIGGER sessions_record_first_token AFTER INSERT ON sessions
BEGIN
    INSERT INTO refresh_tokens (hash, session_id, generation)
    VALUES (NEW.current_hash, NEW.id, NEW.generation);
END;
CREATE TRIGGER sessions_record_rotated_token AFTER UPDATE OF current_hash ON sessions
BEGIN
    INSERT INTO refresh_tokens (hash, session_id, generation)
    VALUES (NEW.current_hash, NEW.id, NEW.generation);
END;

-- The audit trail outlives the sessions it mentions, so no foreign keys here.
CREATE TABLE audit_events (
    id         TEXT PRIMARY KEY NOT NULL,
    event      TEXT NOT NULL,
    at         INTEGER NOT NULL,
    user_id    TEXT,
    session_id TEXT,
    ip         TEXT,
    user_agent TEXT,
    detail     TEXT
);
CREATE INDEX audit_events_by_user ON audit_events (user_id, at);
CREATE INDEX audit_events_by_event ON audit_events (event, at);

CREATE TABLE signing_keys (
    kid           TEXT PRIMARY KEY NOT NULL,
    alg           TEXT NOT NULL,
    private_pkcs8 BLOB NOT NULL,
    public_key    BLOB NOT NULL,
    created_at    INTEGER NOT NULL,
    active        INTEGER NOT NULL,
    retired_at    INTEGER          -- when it stopped signing; it still verifies for a while
);
-- At most one active key, whatever races happen at first start.
CREATE UNIQUE INDEX signing_keys_one_active ON signing_keys (active) WHERE active = 1;
