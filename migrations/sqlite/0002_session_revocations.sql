-- The revocation log: every session revocation, by whatever process made it (a server, the
-- CLI), so running servers that answer from memory learn of it by polling this table.
-- `logged_at` is the database's clock (here the machine's), not the writer's, so readers can
-- ask "since when" without trusting another process's clock.
CREATE TABLE session_revocations (
    session_id TEXT NOT NULL,
    logged_at  INTEGER NOT NULL
);
CREATE INDEX session_revocations_by_time ON session_revocations (logged_at);

CREATE TRIGGER sessions_log_revocation AFTER UPDATE OF revoked_at ON sessions
WHEN OLD.revoked_at IS NULL AND NEW.revoked_at IS NOT NULL
BEGIN
    INSERT INTO session_revocations (session_id, logged_at)
    VALUES (NEW.id, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER));
END;
