-- Back office (issue 21): profile data the user edits (`user_metadata`) and data only
-- administrators set (`app_metadata`, some keys of which may be copied into access tokens),
-- each a JSON object as text, size-bounded by the service.
ALTER TABLE users ADD COLUMN user_metadata text NOT NULL DEFAULT '{}';
ALTER TABLE users ADD COLUMN app_metadata text NOT NULL DEFAULT '{}';
