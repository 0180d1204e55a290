-- Administration (`tessera users disable|enable`): a disabled account keeps its row, roles
-- and audit history, but no new session can be created for it (the session insert locks the
-- user row and checks this column in the same statement) and disabling revoked every session
-- it had. A nullable column with no default: adding it rewrites nothing.
ALTER TABLE users ADD COLUMN disabled_at bigint;

-- `tessera audit --since 1h` with no other filter reads the newest events first.
CREATE INDEX audit_events_by_time ON audit_events (at);
