-- The session row holds the hash of its current refresh token (as on SQLite), so the common
-- refresh checks the presented token against the row it updates and reads no token row at
-- all. Joining the batch of presented tokens to `refresh_tokens` instead made the rotation's
-- plan depend on that table's statistics: on a fresh database, before autovacuum had analysed
-- it, PostgreSQL chose sequential scans of it, and refresh slowed down as the table grew.
-- Sessions created before this migration have none: their next refresh takes the slow path
-- (found in `refresh_tokens`, rotated by `Store::rotate`), which sets it.
ALTER TABLE sessions ADD COLUMN current_hash bytea;
