-- Durable mail: every mail waits here until the SMTP server took it (or it was given up), so a
-- restart or a dead server loses none, and a request never waits for the server. A mail is
-- queued in the same transaction as the state change it tells of. `payload` is what the
-- mail's template needs (JSON, possibly a single-use token): it is erased ('') once the mail
-- is sent or given up. A delivery task claims due rows by setting `claimed_until`/`claimed_by`
-- (a lease) with `FOR UPDATE SKIP LOCKED`, so two instances never send the same mail at once.
CREATE TABLE mail_outbox (
    id uuid PRIMARY KEY,
    recipient text NOT NULL,
    kind text NOT NULL,
    payload text NOT NULL,
    created_at bigint NOT NULL,
    expires_at bigint,
    attempts bigint NOT NULL DEFAULT 0,
    next_attempt_at bigint NOT NULL,
    claimed_until bigint,
    claimed_by text,
    sent_at bigint,
    failed_at bigint,
    last_error text
);

-- The delivery task's question: pending mails that are due.
CREATE INDEX mail_outbox_due ON mail_outbox (next_attempt_at)
    WHERE sent_at IS NULL AND failed_at IS NULL;
-- Pruning finished mails after their retention.
CREATE INDEX mail_outbox_finished ON mail_outbox (created_at)
    WHERE sent_at IS NOT NULL OR failed_at IS NOT NULL;
