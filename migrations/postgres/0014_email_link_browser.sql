-- A sign-in link asked for from a browser (cookie transport) works only in that browser: the
-- SHA-256 of a random value the asking browser holds in a cookie.
ALTER TABLE email_tokens ADD COLUMN browser_hash TEXT;
