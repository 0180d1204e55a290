-- Durable mail: every mail waits here until the SMTP server took it (or it was given up), so a
-- restart or a dead server loses none, and a request never waits for the server. A mail is
-- queued in the same transaction as the state change it tells of. `payload` is what the
-- mail's template needs (JSON, possibly a single-use token): it is erased ('') once the mail
-- is sent or given up. A delivery task claims due rows by setting `claimed_until`/`claimed_by`
-- (a lease) in the writer's transaction, so two processes sharing the file never send the
-- same mail at once.
CREATE TABLE mail_outbox (
    id TEXT PRIMARY KEY,
    recipient TEXT NOT NULL,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    claimed_until INTEGER,
    claimed_by TEXT,
    sent_at INTEGER,
    failed_at INTEGER,
    last_error TEXT
);

-- The delivery task's question: pending mails that are due.
CREATE INDEX mail_outbox_due ON mail_outbox (next_attempt_at)
    WHERE sent_at IS NULL AND failed_at IS NULL;
-- Pruning finished mails after their retention.
CREATE INDEX mail_outbox_finished ON mail_outbox (created_at)
    WHERE sent_at IS NOT NULL OR failed_at IS NOT NULL;
