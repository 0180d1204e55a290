-- Refresh tokens now name their session and generation (`tsr_` + format byte + session id +
-- generation + 32 random bytes), so each is kept under the key (session, generation): a
-- session's tokens sit together on one leaf, and a rotation writes where the session's
-- previous tokens already are, instead of at a random place in an index of every token ever
-- issued (which made refresh slow down as that index outgrew every cache). Still only the
-- SHA-256 of each token is stored, so a copy of the database reveals no usable token.

DROP TRIGGER sessions_record_first_token;
DROP TRIGGER sessions_record_rotated_token;

-- Tokens issued before: found by hash, as before, until their sessions end (each one's next
-- rotation issues a chained token). Nothing is added to this table any more.
ALTER TABLE refresh_tokens RENAME TO legacy_refresh_tokens;
DROP INDEX refresh_tokens_by_session;
CREATE INDEX legacy_refresh_tokens_by_session ON legacy_refresh_tokens (session_id);

CREATE TABLE refresh_tokens (
    session_id TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    generation INTEGER NOT NULL,
    hash       BLOB NOT NULL,   -- SHA-256 of the whole token
    PRIMARY KEY (session_id, generation)
) WITHOUT ROWID;

-- As before, the statement that writes a chain head records it, so creating a session and
-- rotating a token each stay one statement.
CREATE TRIGGER sessions_record_first_token AFTER INSERT ON sessions
BEGIN
    INSERT INTO refresh_tokens (session_id, generation, hash)
    VALUES (NEW.id, NEW.generation, NEW.current_hash);
END;
CREATE TRIGGER sessions_record_rotated_token AFTER UPDATE OF current_hash ON sessions
BEGIN
    INSERT INTO refresh_tokens (session_id, generation, hash)
    VALUES (NEW.id, NEW.generation, NEW.current_hash);
END;
