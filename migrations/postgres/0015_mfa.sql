-- Second factors (issue 18). A TOTP factor per account: its secret sealed with the master key
-- when one is set (as signing keys are), counting only once confirmed with a first code.
-- `last_step`: the last RFC 6238 time step accepted, so a code is never accepted twice, on
-- any instance (a compare-and-set on this column).
CREATE TABLE totp_factors (
    user_id uuid PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    secret bytea NOT NULL,
    created_at bigint NOT NULL,
    confirmed_at bigint,
    last_step bigint
);

-- Single-use recovery codes, by SHA-256 (hex) of the user id and the code; a new set
-- replaces the old.
CREATE TABLE recovery_codes (
    user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    hash text NOT NULL,
    created_at bigint NOT NULL,
    used_at bigint,
    PRIMARY KEY (user_id, hash)
);

-- A password (or sign-in link) accepted for an account with a second factor: the challenge
-- the second step presents, by SHA-256 (hex). Bound to the user, the credential epoch it was
-- issued under, the transport asked for and, in cookie transport, the browser (`browser_hash`:
-- the SHA-256 of the `tessera_mfa` cookie). `amr`: JSON list of what was proved so far.
CREATE TABLE mfa_challenges (
    hash text PRIMARY KEY,
    user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    credential_epoch bigint NOT NULL,
    transport text NOT NULL,
    browser_hash text,
    amr text NOT NULL,
    created_at bigint NOT NULL,
    expires_at bigint NOT NULL,
    failures bigint NOT NULL DEFAULT 0,
    used_at bigint
);
CREATE INDEX mfa_challenges_expires ON mfa_challenges (expires_at);

-- How the session's holder signed in (RFC 8176 `amr` values, a JSON list) and when
-- (`auth_time`, ms; renewed by reauthentication). NULL on sessions older than this.
ALTER TABLE sessions ADD COLUMN amr text;
ALTER TABLE sessions ADD COLUMN auth_time bigint;
