-- Passkeys (WebAuthn, issue 18). `credential_id`: the credential's id, base64url (unique:
-- one credential belongs to one account). `passkey`: the credential as webauthn-rs
-- serialises it (public key, algorithm, counter, flags), JSON. `counter`: its signature
-- counter as last seen, also in `passkey`, kept apart for reading.
CREATE TABLE passkeys (
    id uuid PRIMARY KEY,
    user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    credential_id text NOT NULL UNIQUE,
    name text NOT NULL,
    passkey text NOT NULL,
    counter bigint NOT NULL,
    created_at bigint NOT NULL,
    last_used_at bigint
);
CREATE INDEX passkeys_user ON passkeys (user_id);

-- A WebAuthn ceremony under way: the state the server must keep between the options it
-- sends and the answer it checks (the challenge above all). Taken (deleted) by its answer,
-- so each is used once, on whichever instance the answer reaches. `handle`: `register:<user>`
-- (one registration at a time per account) or the SHA-256 (hex) of a sign-in's ceremony id.
CREATE TABLE passkey_ceremonies (
    handle text PRIMARY KEY,
    kind text NOT NULL,
    user_id uuid REFERENCES users (id) ON DELETE CASCADE,
    state text NOT NULL,
    created_at bigint NOT NULL,
    expires_at bigint NOT NULL
);
CREATE INDEX passkey_ceremonies_expires ON passkey_ceremonies (expires_at);
