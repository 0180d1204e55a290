//! Sessions and the refresh-token chains they head: creation, rotation, revocation, the sweep.

use async_trait::async_trait;

use crate::crypto::{RefreshTokenHash, RefreshTokenKey};
use crate::domain::{SessionId, Timestamp, UserId};

use super::StoreResult;
use super::UserRecord;

/// One device session and the head of its refresh-token chain. Its `Debug` leaves out the
/// CSRF token and the sealed successor.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionRecord {
    pub id: SessionId,
    pub user_id: UserId,
    pub created_at: Timestamp,
    pub last_used_at: Timestamp,
    /// The absolute end of the session, fixed at login.
    pub absolute_expires_at: Timestamp,
    /// When the current refresh token expires (slides on each rotation).
    pub refresh_expires_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
    pub revoked_reason: Option<String>,
    pub user_agent: Option<String>,
    pub ip: Option<String>,
    /// Generation of the current refresh token; the first token is generation 0.
    pub generation: i64,
    /// When generation `generation - 1` was rotated out (None before the first rotation).
    pub rotated_at: Option<Timestamp>,
    /// The current token sealed under its predecessor (see `RefreshToken::seal_successor`).
    pub sealed_current: Option<Vec<u8>>,
    /// Set for browser (cookie transport) sessions: the CSRF token bound to the session.
    pub csrf_token: Option<String>,
    /// How the holder signed in (RFC 8176 values: `pwd`, `otp`, `mfa`, ...), renewed by
    /// reauthentication; empty for sessions older than the column.
    pub amr: Vec<String>,
    /// When the holder last proved themself (the login, or a reauthentication).
    pub auth_time: Timestamp,
}

impl std::fmt::Debug for SessionRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionRecord")
            .field("id", &self.id)
            .field("user_id", &self.user_id)
            .field("created_at", &self.created_at)
            .field("last_used_at", &self.last_used_at)
            .field("absolute_expires_at", &self.absolute_expires_at)
            .field("refresh_expires_at", &self.refresh_expires_at)
            .field("revoked_at", &self.revoked_at)
            .field("revoked_reason", &self.revoked_reason)
            .field("user_agent", &self.user_agent)
            .field("ip", &self.ip)
            .field("generation", &self.generation)
            .field("rotated_at", &self.rotated_at)
            .field("amr", &self.amr)
            .field("auth_time", &self.auth_time)
            .finish_non_exhaustive()
    }
}

impl SessionRecord {
    /// A session of `user_id` opened at `now`, ending at `absolute_expires_at` at the latest,
    /// of a holder who proved `amr` at `auth_time`: its first refresh token (generation 0) is
    /// current, nothing rotated or revoked yet, no device recorded and no CSRF token bound
    /// (set those with struct update syntax).
    pub fn opened(
        user_id: UserId,
        now: Timestamp,
        absolute_expires_at: Timestamp,
        refresh_expires_at: Timestamp,
        amr: Vec<String>,
        auth_time: Timestamp,
    ) -> SessionRecord {
        SessionRecord {
            id: SessionId::new(),
            user_id,
            created_at: now,
            last_used_at: now,
            absolute_expires_at,
            refresh_expires_at,
            revoked_at: None,
            revoked_reason: None,
            user_agent: None,
            ip: None,
            generation: 0,
            rotated_at: None,
            sealed_current: None,
            csrf_token: None,
            amr,
            auth_time,
        }
    }

    /// When the session ends if nothing more happens.
    pub fn expires_at(&self) -> Timestamp {
        self.absolute_expires_at.min(self.refresh_expires_at)
    }

    /// Does `presented` equal the CSRF token bound to this (cookie) session?
    pub fn csrf_matches(&self, presented: &str) -> bool {
        crate::crypto::csrf_matches(self.csrf_token.as_deref(), presented)
    }
}

/// A refresh token found by its key, with the session it belongs to.
#[derive(Clone, Debug)]
pub struct FoundRefreshToken {
    pub generation: i64,
    pub session: SessionRecord,
    pub user: UserRecord,
}

/// What a successful rotation writes.
#[derive(Clone, Debug)]
pub struct Rotation {
    pub session_id: SessionId,
    /// The generation the caller saw as current; the write succeeds only if it still is.
    pub expected_generation: i64,
    pub new_hash: RefreshTokenHash,
    /// The new token sealed under the presented one, for a grace-window replay; `None` when
    /// nothing may be replayed (a rotation not made by presenting the predecessor, such as a
    /// password change: the old token is then reuse, never a retry).
    pub sealed_new: Option<Vec<u8>>,
    pub now: Timestamp,
    pub refresh_expires_at: Timestamp,
}

/// The common refresh in one step: the presented token is the current one of a live session.
/// Only chained tokens (which name their session and generation) take this path.
#[derive(Clone, Debug)]
pub struct CurrentRotation {
    /// The session and generation the presented token names, and its hash, which must be the
    /// session's current one.
    pub session_id: SessionId,
    pub generation: i64,
    pub presented: RefreshTokenHash,
    pub new_hash: RefreshTokenHash,
    pub sealed_new: Vec<u8>,
    pub now: Timestamp,
    /// The new sliding expiry, before capping at the session's absolute end.
    pub refresh_expires_at: Timestamp,
    /// Set when the token came from a cookie: the CSRF token the session must be bound to.
    pub csrf: Option<String>,
}

/// What one step of the idle-session walk did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdleSweep {
    pub deleted: u64,
    /// The last session id the step scanned, where the next step starts; `None` when the
    /// step reached the last session (the next pass starts over from the first).
    pub next: Option<SessionId>,
}

#[async_trait]
pub trait SessionStore: Send + Sync {
    /// Creates a session together with its first refresh token (generation 0), unless its
    /// user is disabled or its `credential_epoch` is no longer `credential_epoch` (the
    /// password the login verified was changed meanwhile): then nothing is written and the
    /// answer is `false`. The check is part of the insert, so a login racing a password
    /// change or `disable_user` cannot leave a live session behind.
    async fn insert_session(
        &self,
        session: &SessionRecord,
        first: &RefreshTokenHash,
        credential_epoch: i64,
    ) -> StoreResult<bool>;
    async fn find_session(&self, id: SessionId) -> StoreResult<Option<SessionRecord>>;
    /// The session and its user in one read: the access-token liveness check.
    async fn find_session_with_user(&self, id: SessionId)
        -> StoreResult<Option<(SessionRecord, UserRecord)>>;
    /// Live sessions of a user, most recently used first.
    async fn find_live_sessions(&self, user: UserId, now: Timestamp) -> StoreResult<Vec<SessionRecord>>;
    /// Any token of a session's chain, current or rotated out; `None` if no token matches
    /// the key (a chained key whose hash differs matches nothing).
    async fn find_refresh_token(&self, key: &RefreshTokenKey) -> StoreResult<Option<FoundRefreshToken>>;

    /// Advances the chain by one if, and only if, the session is unrevoked and its current
    /// generation is still `expected_generation`. One conditional write decides the winner
    /// among concurrent callers; returns whether this caller won.
    async fn rotate(&self, rotation: &Rotation) -> StoreResult<bool>;

    /// The refresh fast path, one statement on PostgreSQL and one queued write on SQLite:
    /// if `presented` is the current token of an unrevoked, unexpired session (bound to
    /// `csrf`, when given), advances the chain to `new_hash` and returns the session as
    /// written and its user. `None` when any of that does not hold (or a concurrent rotation
    /// won): the caller reads and decides (replay, reuse, expiry, unknown) on the slow path.
    async fn rotate_current(
        &self,
        rotation: &CurrentRotation,
    ) -> StoreResult<Option<(SessionRecord, UserRecord)>>;

    /// Records that the holder of the live session `id` proved themself again: `amr` and
    /// `auth_time` replaced; returns whether the session is live.
    async fn reauthenticate_session(
        &self,
        id: SessionId,
        amr: &[String],
        auth_time: Timestamp,
    ) -> StoreResult<bool>;
    /// Revokes one session if not already revoked; returns whether this call revoked it.
    async fn revoke_session(&self, id: SessionId, now: Timestamp, reason: &str) -> StoreResult<bool>;
    /// Revokes every live session of a user, except `keep` if given; returns how many.
    async fn revoke_user_sessions(
        &self,
        user: UserId,
        keep: Option<SessionId>,
        now: Timestamp,
        reason: &str,
    ) -> StoreResult<u64>;
    /// Revokes the least recently used live sessions beyond the newest `max_live`.
    async fn revoke_sessions_over_limit(
        &self,
        user: UserId,
        max_live: u32,
        now: Timestamp,
    ) -> StoreResult<u64>;
    /// Deletes at most `limit` sessions (with their tokens) revoked, or past their absolute
    /// end, before `before`; returns how many. Small batches keep each statement short, so
    /// the sweep never holds the writer (SQLite) or many row locks (PostgreSQL) for long.
    async fn delete_sessions_ended_before(&self, before: Timestamp, limit: u32) -> StoreResult<u64>;
    /// One step of the walk that deletes idle sessions: among the next `scan` sessions in id
    /// order after `after` (from the first when `None`), deletes, with their tokens, those
    /// whose sliding expiry (refresh-token expiry) passed before `before`. Walking the primary
    /// key finds them without an index on the sliding expiry, which every rotation writes.
    async fn delete_idle_sessions(
        &self,
        after: Option<SessionId>,
        scan: u32,
        before: Timestamp,
    ) -> StoreResult<IdleSweep>;

    /// Sessions neither revoked nor ended at `now`, counted in the database (all instances'
    /// sessions). A scan: for a gauge refreshed now and then, never on a request path.
    async fn count_live_sessions(&self, now: Timestamp) -> StoreResult<u64>;
}
