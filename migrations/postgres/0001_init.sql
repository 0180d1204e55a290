-- Times are bigint milliseconds since the Unix epoch (UTC), as in the SQLite schema, so both
-- stores share one notion of time; ids are native UUIDs.

CREATE TABLE users (
    id            uuid PRIMARY KEY,
    email         text NOT NULL UNIQUE,       -- trimmed and lower-cased before it gets here
    password_hash text NOT NULL,              -- argon2id, PHC string
    roles         text NOT NULL DEFAULT '[]', -- JSON array of strings
    created_at    bigint NOT NULL
);

-- One row per device session; it also holds the head of the session's refresh-token chain,
-- so a rotation is a single conditional UPDATE of this row.
CREATE TABLE sessions (
    id                  uuid PRIMARY KEY,
    user_id             uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at          bigint NOT NULL,
    last_used_at        bigint NOT NULL,
    absolute_expires_at bigint NOT NULL,
    refresh_expires_at  bigint NOT NULL,
    revoked_at          bigint,
    revoked_reason      text,
    user_agent          text,
    ip                  text,
    generation          bigint NOT NULL DEFAULT 0,
    rotated_at          bigint,
    sealed_current      bytea,
    -- Cookie-transport sessions only; see the SQLite schema for why it is kept in clear.
    csrf_token          text
) WITH (fillfactor = 80);
-- No index covers a column a rotation writes (generation, rotated_at, last_used_at,
-- sealed_current, refresh_expires_at), so a rotation adds no index entries for this table and,
-- with room left on each page by the fillfactor, is a HOT update.
-- A user's few sessions are sorted after the lookup; idle sessions are swept by their
-- absolute end rather than by an index on the sliding expiry.
CREATE INDEX sessions_by_user ON sessions (user_id);
CREATE INDEX sessions_by_absolute_end ON sessions (absolute_expires_at);
CREATE INDEX sessions_by_revoked ON sessions (revoked_at) WHERE revoked_at IS NOT NULL;

-- Every refresh token ever issued, by SHA-256.
CREATE TABLE refresh_tokens (
    hash       bytea PRIMARY KEY,
    session_id uuid NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    generation bigint NOT NULL
);
CREATE INDEX refresh_tokens_by_session ON refresh_tokens (session_id);

-- The audit trail outlives the sessions it mentions, so no foreign keys here.
CREATE TABLE audit_events (
    id         uuid PRIMARY KEY,
    event      text NOT NULL,
    at         bigint NOT NULL,
    user_id    uuid,
    session_id uuid,
    ip         text,
    user_agent text,
    detail     text
);
CREATE INDEX audit_events_by_user ON audit_events (user_id, at);
CREATE INDEX audit_events_by_event ON audit_events (event, at);

CREATE TABLE signing_keys (
    kid           text PRIMARY KEY,
    alg           text NOT NULL,
    private_pkcs8 bytea NOT NULL,
    public_key    bytea NOT NULL,
    created_at    bigint NOT NULL,
    active        boolean NOT NULL,
    retired_at    bigint           -- when it stopped signing; it still verifies for a while
);
-- At most one active key, whatever races happen when instances start together.
CREATE UNIQUE INDEX signing_keys_one_active ON signing_keys (active) WHERE active;
