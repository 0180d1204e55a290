-- Failed logins per (normalised) email, for the per-account lock (`service::lockout`),
-- shared by every instance. Keyed by email, not user, so unknown emails are counted and
-- locked like known ones and a lock reveals nothing about which accounts exist. Rows are
-- swept once their window and lock have both ended a window ago.
CREATE TABLE login_failures (
    email             text PRIMARY KEY,
    failures          integer NOT NULL,
    window_started_at bigint NOT NULL,
    locked_until      bigint,
    locks             integer NOT NULL
);
