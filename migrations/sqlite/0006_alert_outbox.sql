-- Durable alerts: every alert waits here until a webhook answered it with a 2xx, so a restart
-- or a dead receiver loses none. `id` is the alert's stable id (receivers deduplicate on it);
-- `dedup_key` coalesces repeats of one event for one session within a short window (a second
-- insert with the same key is a no-op). A delivery task claims due rows by setting
-- `claimed_until`/`claimed_by` (a lease) in the writer's transaction, so two processes sharing
-- the file never post the same alert at once.
CREATE TABLE alert_outbox (
    id TEXT PRIMARY KEY,
    event TEXT NOT NULL,
    dedup_key TEXT NOT NULL UNIQUE,
    payload TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    claimed_until INTEGER,
    claimed_by TEXT,
    delivered_at INTEGER
);

-- The delivery task's question: undelivered alerts that are due.
CREATE INDEX alert_outbox_due ON alert_outbox (next_attempt_at) WHERE delivered_at IS NULL;
-- Pruning delivered alerts after their retention.
CREATE INDEX alert_outbox_delivered ON alert_outbox (delivered_at) WHERE delivered_at IS NOT NULL;
