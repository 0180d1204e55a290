-- Failed logins per (normalised) email, for the per-account lock (`service::lockout`).
-- Keyed by email, not user, so unknown emails are counted and locked like known ones and a
-- lock reveals nothing about which accounts exist. Rows are swept once their window and
-- lock have both ended a window ago.
CREATE TABLE login_failures (
    email             TEXT PRIMARY KEY NOT NULL,
    failures          INTEGER NOT NULL,
    window_started_at INTEGER NOT NULL,
    locked_until      INTEGER,
    locks             INTEGER NOT NULL
) WITHOUT ROWID;
