-- Back office (issue 21): profile data the user edits (`user_metadata`) and data only
-- administrators set (`app_metadata`, some keys of which may be copied into access tokens),
-- each a JSON object as text, size-bounded by the service.
ALTER TABLE users ADD COLUMN user_metadata TEXT NOT NULL DEFAULT '{}';
ALTER TABLE users ADD COLUMN app_metadata TEXT NOT NULL DEFAULT '{}';
-- The admin API lists accounts in creation order (keyset on the UUIDv7 id, the primary key)
-- and finds a user's last login among its audit events (audit_events_by_user).
