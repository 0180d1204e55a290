-- Passkeys (WebAuthn, issue 18). `credential_id`: the credential's id, base64url (unique:
-- one credential belongs to one account). `passkey`: the credential as webauthn-rs
-- serialises it (public key, algorithm, counter, flags), JSON. `counter`: its signature
-- counter as last seen, also in `passkey`, kept apart for reading.
CREATE TABLE passkeys (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    credential_id TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    passkey TEXT NOT NULL,
    counter INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    last_used_at INTEGER
);
CREATE INDEX passkeys_user ON passkeys (user_id);

-- A WebAuthn ceremony under way: the state the server must keep between the options it
-- sends and the answer it checks (the challenge above all). Taken (deleted) by its answer,
-- so each is used once, on whichever instance the answer reaches. `handle`: `register:<user>`
-- (one registration at a time per account) or the SHA-256 (hex) of a sign-in's ceremony id.
CREATE TABLE passkey_ceremonies (
    handle TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    user_id TEXT REFERENCES users (id) ON DELETE CASCADE,
    state TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX passkey_ceremonies_expires ON passkey_ceremonies (expires_at);
