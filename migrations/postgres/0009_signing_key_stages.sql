-- Signing-key stages (issue 10). A key can be published before it signs (the next stage,
-- until activates_at) and revoked (revoked_at: it neither signs nor verifies, and leaves the
-- JWKS). Keys created before this migration signed from their creation. `active` keeps its
-- meaning of "the newest key", signing or about to; its unique index still keeps instances
-- starting together from each creating a first key. `retired_at` may now lie ahead: the key
-- a next key replaces retires when that key activates.
ALTER TABLE signing_keys ADD COLUMN activates_at bigint;
ALTER TABLE signing_keys ADD COLUMN revoked_at bigint;
UPDATE signing_keys SET activates_at = created_at;
