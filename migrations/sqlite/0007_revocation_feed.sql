-- The revocation log becomes the revocation feed for resource servers (GET /v1/revocations):
-- each entry gets a sequence number readers can resume after, and says whose session it was
-- and why it ended. SQLite commits one writer at a time, so AUTOINCREMENT numbers entries in
-- commit order: a reader that has seen entry N will never later find an entry below N. The
-- AUTOINCREMENT (not a bare rowid) keeps numbers from being reused after the sweeper empties
-- the table.
DROP TRIGGER sessions_log_revocation;
DROP INDEX session_revocations_by_time;
ALTER TABLE session_revocations RENAME TO session_revocations_before_feed;

CREATE TABLE session_revocations (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id TEXT NOT NULL,
    user_id    TEXT NOT NULL,
    reason     TEXT,
    logged_at  INTEGER NOT NULL
);
CREATE INDEX session_revocations_by_time ON session_revocations (logged_at);

-- Entries of sessions already swept have no user to name any more; they are past any access
-- token's lifetime, so resource servers lose nothing without them.
INSERT INTO session_revocations (session_id, user_id, reason, logged_at)
SELECT o.session_id, s.user_id, s.revoked_reason, o.logged_at
FROM session_revocations_before_feed o JOIN sessions s ON s.id = o.session_id
ORDER BY o.logged_at;
DROP TABLE session_revocations_before_feed;

CREATE TRIGGER sessions_log_revocation AFTER UPDATE OF revoked_at ON sessions
WHEN OLD.revoked_at IS NULL AND NEW.revoked_at IS NOT NULL
BEGIN
    INSERT INTO session_revocations (session_id, user_id, reason, logged_at)
    VALUES (NEW.id, NEW.user_id, NEW.revoked_reason,
            CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER));
END;
