-- The revocation log: every session revocation, by whatever instance or process made it.
-- Instances answer "is this session live?" from memory; the trigger below tells them of each
-- revocation at commit (NOTIFY), and the log lets an instance that lost its listening
-- connection catch up on what it missed. `logged_at` is the database's clock, so instances
-- never compare their own clocks with each other's.
CREATE TABLE session_revocations (
    session_id uuid NOT NULL,
    logged_at  bigint NOT NULL
);
CREATE INDEX session_revocations_by_time ON session_revocations (logged_at);

CREATE FUNCTION tessera_log_session_revocation() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO session_revocations (session_id, logged_at)
    VALUES (NEW.id, (extract(epoch FROM clock_timestamp()) * 1000)::bigint);
    -- Delivered to every listening instance when (and only if) this transaction commits.
    PERFORM pg_notify('tessera_session_revoked', NEW.id::text);
    RETURN NULL;
END
$$;

CREATE TRIGGER sessions_log_revocation AFTER UPDATE OF revoked_at ON sessions
FOR EACH ROW WHEN (OLD.revoked_at IS NULL AND NEW.revoked_at IS NOT NULL)
EXECUTE FUNCTION tessera_log_session_revocation();
