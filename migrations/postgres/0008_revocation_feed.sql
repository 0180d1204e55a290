-- The revocation log becomes the revocation feed for resource servers (GET /v1/revocations):
-- each entry says whose session it was and why it ended, and gets a sequence number readers
-- resume after.
--
-- The number is not drawn when the entry is written: concurrent transactions commit in
-- another order than they draw from a sequence, so a reader that has seen entry N could
-- later find N-1 and would skip it. Instead, entries are numbered after they commit, by
-- `tessera_publish_session_revocations()`, which takes a lock so numberings run one after
-- the other: each sees every entry committed before it and numbers them above everything
-- numbered earlier. Readers only ever see numbered entries, so numbers appear in order.
-- The revoking transactions themselves take no lock and wait for nothing.
ALTER TABLE session_revocations
    ADD COLUMN user_id uuid,
    ADD COLUMN reason text,
    ADD COLUMN seq bigint;
CREATE SEQUENCE session_revocations_seq AS bigint OWNED BY session_revocations.seq;
CREATE UNIQUE INDEX session_revocations_by_seq ON session_revocations (seq);
CREATE INDEX session_revocations_unnumbered ON session_revocations (logged_at) WHERE seq IS NULL;

UPDATE session_revocations r
SET user_id = s.user_id, reason = s.revoked_reason
FROM sessions s WHERE s.id = r.session_id;
-- Entries of sessions already swept have no user to name any more; they are past any access
-- token's lifetime, so resource servers lose nothing without them.
DELETE FROM session_revocations WHERE user_id IS NULL;
ALTER TABLE session_revocations ALTER COLUMN user_id SET NOT NULL;

CREATE OR REPLACE FUNCTION tessera_log_session_revocation() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO session_revocations (session_id, user_id, reason, logged_at)
    VALUES (NEW.id, NEW.user_id, NEW.revoked_reason,
            (extract(epoch FROM clock_timestamp()) * 1000)::bigint);
    -- Delivered to every listening instance when (and only if) this transaction commits.
    PERFORM pg_notify('tessera_session_revoked', NEW.id::text);
    RETURN NULL;
END
$$;

-- Numbers the committed, unnumbered entries (in the order they were logged) and returns how
-- many. The advisory lock is held to the end of the caller's transaction: run it in a
-- transaction of its own, before reading.
CREATE FUNCTION tessera_publish_session_revocations() RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    numbered bigint;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM session_revocations WHERE seq IS NULL) THEN
        RETURN 0;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('tessera_session_revocations_seq'));
    -- A statement after the lock: its snapshot includes the numbering that held it before.
    UPDATE session_revocations r SET seq = nextval('session_revocations_seq')
    FROM (SELECT ctid FROM session_revocations WHERE seq IS NULL ORDER BY logged_at) pending
    WHERE r.ctid = pending.ctid;
    GET DIAGNOSTICS numbered = ROW_COUNT;
    RETURN numbered;
END
$$;
