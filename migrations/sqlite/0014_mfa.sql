-- Second factors (issue 18). A TOTP factor per account: its secret sealed with the master key
-- when one is set (as signing keys are), counting only once confirmed with a first code.
-- `last_step`: the last RFC 6238 time step accepted, so a code is never accepted twice, on
-- any instance (a compare-and-set on this column).
CREATE TABLE totp_factors (
    user_id TEXT PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    secret BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    confirmed_at INTEGER,
    last_step INTEGER
);

-- Single-use recovery codes, by SHA-256 (hex) of the user id and the code; a new set
-- replaces the old.
CREATE TABLE recovery_codes (
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    hash TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    used_at INTEGER,
    PRIMARY KEY (user_id, hash)
);

-- A password (or sign-in link) accepted for an account with a second factor: the challenge
-- the second step presents, by SHA-256 (hex). Bound to the user, the credential epoch it was
-- issued under, the transport asked for and, in cookie transport, the browser (`browser_hash`:
-- the SHA-256 of the `tessera_mfa` cookie). `amr`: JSON list of what was proved so far.
CREATE TABLE mfa_challenges (
    hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    credential_epoch INTEGER NOT NULL,
    transport TEXT NOT NULL,
    browser_hash TEXT,
    amr TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    failures INTEGER NOT NULL DEFAULT 0,
    used_at INTEGER
);
CREATE INDEX mfa_challenges_expires ON mfa_challenges (expires_at);

-- How the session's holder signed in (RFC 8176 `amr` values, a JSON list) and when
-- (`auth_time`, ms; renewed by reauthentication). NULL on sessions older than this.
ALTER TABLE sessions ADD COLUMN amr TEXT;
ALTER TABLE sessions ADD COLUMN auth_time INTEGER;
