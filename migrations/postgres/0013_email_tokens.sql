-- Account lifecycle by email (issue 17). `email_verified_at`: when the address was proved (a
-- verification link, a sign-in link or a confirmed change); NULL: not yet.
ALTER TABLE users ADD COLUMN email_verified_at bigint;

-- Single-use tokens sent by mail: verification, password reset, email change, sign-in link.
-- Only the token's SHA-256 (hex) is stored. `credential_epoch` is the user's epoch when the
-- token was issued: a password reset is refused once the epoch moved (a password change, a
-- completed reset, a disable). A newer token of the same kind for the same user marks the
-- older ones used (`used_at`), so only the latest link works. `new_email`: the address an
-- email change goes to.
CREATE TABLE email_tokens (
    hash text PRIMARY KEY,
    kind text NOT NULL,
    user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    new_email text,
    credential_epoch bigint NOT NULL,
    created_at bigint NOT NULL,
    expires_at bigint NOT NULL,
    used_at bigint
);
CREATE INDEX email_tokens_user_kind ON email_tokens (user_id, kind) WHERE used_at IS NULL;
CREATE INDEX email_tokens_expires ON email_tokens (expires_at);
