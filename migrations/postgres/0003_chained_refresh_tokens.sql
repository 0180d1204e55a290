-- Refresh tokens now name their session and generation (`tsr_` + format byte + session id +
-- generation + 32 random bytes), so each is kept under the key (session, generation): a
-- session's tokens sit together in the index, and a rotation's insert lands on a page the
-- session's earlier tokens keep hot, instead of at a random place in an index of every token
-- ever issued (which made refresh slow down as that index outgrew shared_buffers). Still only
-- the SHA-256 of each token is stored, so a copy of the database reveals no usable token.

-- Tokens issued before: found by hash, as before, until their sessions end (each one's next
-- rotation issues a chained token). Nothing is added to this table any more.
ALTER TABLE refresh_tokens RENAME TO legacy_refresh_tokens;
ALTER INDEX refresh_tokens_pkey RENAME TO legacy_refresh_tokens_pkey;
ALTER INDEX refresh_tokens_by_session RENAME TO legacy_refresh_tokens_by_session;
ALTER TABLE legacy_refresh_tokens
    RENAME CONSTRAINT refresh_tokens_session_id_fkey TO legacy_refresh_tokens_session_id_fkey;

CREATE TABLE refresh_tokens (
    session_id uuid NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    generation bigint NOT NULL,
    hash       bytea NOT NULL,  -- SHA-256 of the whole token
    PRIMARY KEY (session_id, generation)
);
