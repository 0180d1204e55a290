-- The credential a login verified must still be the account's when its session is written
-- (`service::login`): a password change, reset or disable bumps `credential_epoch`, and the
-- session insert is conditional on the epoch the login read with the hash. Upgrading an
-- imported hash to argon2id keeps the same password, and the epoch.
ALTER TABLE users ADD COLUMN credential_epoch bigint NOT NULL DEFAULT 0;

-- Attempts reserved before their password is hashed (`service::lockout`): a login counts as
-- pending from its reservation to its outcome, so concurrent guesses cannot all pass the
-- threshold check. `pending_until` ends the reservations of a process that died mid-attempt.
ALTER TABLE login_failures ADD COLUMN pending integer NOT NULL DEFAULT 0;
ALTER TABLE login_failures ADD COLUMN pending_until bigint;
