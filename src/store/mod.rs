//! Storage: one trait, one implementation per database (SQLite embedded, PostgreSQL for
//! several instances). The service layer talks only to
//! [`Store`]; SQL lives in the implementations.
//!
//! Verbs: `find_*` read, `insert_*` create, `revoke_*` mark sessions dead, `delete_*` remove.

use std::sync::Arc;

use async_trait::async_trait;

use crate::crypto::{PasswordHashString, RefreshTokenHash, RefreshTokenKey};
use crate::domain::{Email, SessionId, Timestamp, UserId};
use crate::tokens::SigningKeyRecord;

mod accounts;
mod alerts;
pub mod postgres;
pub mod sqlite;

pub use accounts::{AccountStore, AuditFilter, StoredAuditEvent, UserAccount};
pub use alerts::{AlertStore, NewAlert, StoredAlert};

#[derive(Clone, Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique constraint said no (e.g. the email is taken).
    #[error("conflict: {0}")]
    Conflict(&'static str),
    /// The database cannot be reached or timed out; callers answer 503.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("database error: {0}")]
    Database(String),
    #[error("migration failed: {0}")]
    Migration(String),
    #[error("unsupported database url: {0}")]
    UnsupportedUrl(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

#[derive(Clone, Debug)]
pub struct UserRecord {
    pub id: UserId,
    pub email: Email,
    pub password_hash: PasswordHashString,
    pub roles: Vec<String>,
    pub created_at: Timestamp,
    /// Bumped whenever the account's credential stops being what it was (password changed or
    /// set, account disabled); a login's session is written only under the epoch it read.
    pub credential_epoch: i64,
}

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
            .finish_non_exhaustive()
    }
}

impl SessionRecord {
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

/// What failed logins are counted against: an account's (normalised) email, or one session
/// whose holder signs in through the account's lock (see `service::lockout`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailureKey(String);

impl FailureKey {
    pub fn account(email: &Email) -> FailureKey {
        FailureKey(email.as_str().to_owned())
    }

    /// An email never contains whitespace, so no session's key is ever an account's.
    pub fn session(id: SessionId) -> FailureKey {
        FailureKey(format!("session {id}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Failed and pending logins counted for one [`FailureKey`]; see `service::lockout`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoginFailures {
    /// Failures in the window that started at `window_started_at`.
    pub failures: u32,
    pub window_started_at: Timestamp,
    /// Until when logins are refused (it may lie in the past: the last lock, remembered so
    /// that the next one in a row lasts longer).
    pub locked_until: Option<Timestamp>,
    /// Locks in a row.
    pub locks: u32,
    /// Attempts admitted whose password is still being checked.
    pub pending: u32,
    /// When the pending attempts stop counting (an instance that died mid-attempt).
    pub pending_until: Option<Timestamp>,
}

/// The next record from the current one (`None`: nothing recorded yet).
pub type NextLoginFailures = Box<dyn FnOnce(Option<LoginFailures>) -> LoginFailures + Send>;

/// A record as it was before a change and as the change left it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoginFailuresChange {
    pub before: Option<LoginFailures>,
    pub after: LoginFailures,
}

#[derive(Clone, Debug)]
pub struct AuditEvent {
    pub id: uuid::Uuid,
    pub event: &'static str,
    pub at: Timestamp,
    pub user_id: Option<UserId>,
    pub session_id: Option<SessionId>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub detail: Option<String>,
}

/// A signing-key revocation, as the service planned it from the key table.
#[derive(Clone, Debug)]
pub struct KeyRevocation {
    pub kid: String,
    pub now: Timestamp,
    pub then: AfterKeyRevocation,
}

/// What keeps the service signing after a revocation.
#[derive(Clone, Debug)]
pub enum AfterKeyRevocation {
    /// The key did not sign and was not about to (retired, expired): nothing more.
    Nothing,
    /// The key was signing and a next key was waiting: that key signs from now (skipping the
    /// rest of its publish-ahead), every other key retires now.
    Promote(String),
    /// The key was in the next stage: the key it was to replace takes over its schedule
    /// (`active` and `retired_at` of the revoked key), so signing goes on as before.
    Restore {
        kid: String,
        active: bool,
        retired_at: Option<Timestamp>,
    },
    /// The key was signing and nothing was next: this fresh key signs from now, every other
    /// key retires now.
    Replace(SigningKeyRecord),
}

/// Sessions revoked since a point in the database's time.
#[derive(Clone, Debug, Default)]
pub struct RevocationsSince {
    pub sessions: Vec<SessionId>,
    /// The database's time when it was asked: the next question starts from a little before it.
    pub asked_at: Timestamp,
}

/// What one step of the idle-session walk did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdleSweep {
    pub deleted: u64,
    /// The last session id the step scanned, where the next step starts; `None` when the
    /// step reached the last session (the next pass starts over from the first).
    pub next: Option<SessionId>,
}

/// One entry of the revocation feed for resource servers: a session revoked before its end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeedRevocation {
    /// Increases in the order entries become visible: a reader that has seen `seq` N never
    /// later finds an entry at or below N, so "entries after N" is a complete resume point.
    pub seq: i64,
    pub session_id: SessionId,
    pub user_id: UserId,
    /// When the database logged it (the database's clock).
    pub at: Timestamp,
    /// `logout`, `reuse_detected`, `admin`... as the session row records it.
    pub reason: Option<String>,
}

/// What a revocation subscription delivers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RevocationNotice {
    /// A session was revoked.
    Revoked(SessionId),
    /// A heartbeat sent with [`Store::send_revocation_heartbeat`] (by this instance or
    /// another), come back through the subscription: everything committed before it was
    /// sent has been delivered.
    Heartbeat(String),
}

/// A live subscription to revocations as they are committed (PostgreSQL `LISTEN`).
#[async_trait]
pub trait RevocationListener: Send {
    /// The next notice. An error means the subscription is gone and notices may have been
    /// lost: the caller must stop trusting memory until it has caught up.
    async fn next(&mut self) -> StoreResult<RevocationNotice>;
}

#[async_trait]
pub trait Store: AccountStore + AlertStore + Send + Sync + 'static {
    /// Is the database answering?
    async fn ping(&self) -> StoreResult<()>;

    /// Inserts a user; `Conflict` when the (normalised) email exists.
    async fn insert_user(&self, user: &UserRecord) -> StoreResult<()>;
    async fn find_user_by_email(&self, email: &Email) -> StoreResult<Option<UserRecord>>;

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
    /// Deletes at most `limit` audit events older than `before`; returns how many.
    async fn delete_audit_events_before(&self, before: Timestamp, limit: u32) -> StoreResult<u64>;

    /// Sessions revoked (by anyone) since `since`, by the revocation log.
    async fn find_revocations_since(&self, since: Timestamp) -> StoreResult<RevocationsSince>;
    /// Subscribes to revocations as they commit, where the database can push them
    /// (PostgreSQL); `None` where the log must be polled (SQLite).
    async fn listen_revocations(&self) -> StoreResult<Option<Box<dyn RevocationListener>>>;
    /// Sends `payload` to every revocation subscription, through the database, after every
    /// revocation committed so far (a no-op where there are no subscriptions).
    async fn send_revocation_heartbeat(&self, payload: &str) -> StoreResult<()>;
    /// Revocation-feed entries numbered above `after`, in order, at most `limit` of them.
    async fn find_revocations_after(&self, after: i64, limit: u32) -> StoreResult<Vec<FeedRevocation>>;
    /// Deletes revocation-log entries older than `before`.
    async fn delete_revocations_logged_before(&self, before: Timestamp) -> StoreResult<u64>;

    /// The failed-login record of a key, if one is remembered.
    async fn find_login_failures(&self, key: &FailureKey) -> StoreResult<Option<LoginFailures>>;
    /// Replaces a key's failed-login record by `next(current)`, atomically across every
    /// instance (concurrent changes are applied one after the other).
    async fn change_login_failures(
        &self,
        key: &FailureKey,
        next: NextLoginFailures,
    ) -> StoreResult<LoginFailuresChange>;
    /// Forgets records whose window, lock and pending attempts all ended before `before`.
    async fn delete_login_failures_ended_before(&self, before: Timestamp) -> StoreResult<u64>;

    async fn insert_audit_event(&self, event: &AuditEvent) -> StoreResult<()>;

    /// Every signing key, in creation order (private keys as stored: maybe sealed).
    async fn find_signing_keys(&self) -> StoreResult<Vec<SigningKeyRecord>>;
    /// Every kid, and whether it is revoked: polled twice a second by every instance, so a
    /// revocation (or a new key) reaches running servers at once without reading the keys
    /// themselves (a scan of a table of a few short rows).
    async fn find_signing_kids(&self) -> StoreResult<Vec<(String, bool)>>;
    /// Inserts `key` as the active key unless an active key exists (then it is a no-op), so
    /// instances starting together on an empty database end up with one active key.
    async fn insert_signing_key_if_none_active(&self, key: &SigningKeyRecord) -> StoreResult<()>;
    /// Makes `key` the active (newest) key, in one transaction: the key active until now
    /// retires at `key.activates_at` (now for an immediate rotation; ahead for a key in the
    /// next stage, which the old key keeps signing until).
    async fn rotate_signing_key(&self, key: &SigningKeyRecord) -> StoreResult<()>;
    /// Revokes a key and applies what keeps the service signing, in one transaction; `false`
    /// (nothing written) when the key does not exist or was already revoked.
    async fn revoke_signing_key(&self, revocation: &KeyRevocation) -> StoreResult<bool>;
    /// Replaces a key's stored private part (sealing it, or re-sealing it under a new master
    /// key), if it is still `expected`; returns whether it was.
    async fn update_signing_key_private(&self, kid: &str, expected: &[u8], new: &[u8]) -> StoreResult<bool>;

    /// The database server's clock, when it is not this machine's (PostgreSQL: instances on
    /// several machines compare times they wrote, so they align their clocks to it). `None`:
    /// the database is on this machine (SQLite), whose clock is already the one to use.
    async fn database_time(&self) -> StoreResult<Option<Timestamp>> {
        Ok(None)
    }

    /// Sessions neither revoked nor ended at `now`, counted in the database (all instances'
    /// sessions). A scan: for a gauge refreshed now and then, never on a request path.
    async fn count_live_sessions(&self, now: Timestamp) -> StoreResult<u64>;

    /// The connection pool's usage, for backends that have one (PostgreSQL). SQLite has none:
    /// reads open connections as they need them, and one writer thread does every write.
    fn pool_usage(&self) -> Option<PoolUsage> {
        None
    }
}

/// A connection pool's state at one moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolUsage {
    /// Connections open now, idle or not.
    pub open: u32,
    /// Connections lent out to a query now.
    pub in_use: u32,
    /// The most the pool will open.
    pub max: u32,
}

/// What `tessera check` reads of a database, without changing it.
#[derive(Debug)]
pub struct Inspection {
    /// False for a SQLite file that does not exist yet (`serve` or `migrate` creates it).
    pub exists: bool,
    /// Migrations applied.
    pub schema_version: i64,
    /// Migrations this release has.
    pub latest_schema_version: i64,
    pub signing_keys: Vec<SigningKeyRecord>,
}

/// Reads the schema version and signing keys of the database at `url`: nothing is created,
/// migrated or written.
pub async fn inspect(url: &str) -> StoreResult<Inspection> {
    if url.starts_with("sqlite:") {
        let url = url.to_owned();
        tokio::task::spawn_blocking(move || sqlite::inspect(&url))
            .await
            .map_err(|e| StoreError::Database(e.to_string()))?
    } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        postgres::inspect(url).await
    } else {
        Err(unsupported_url(url))
    }
}

/// Opens the store named by a database URL and applies its migrations.
pub async fn connect(url: &str, max_connections: u32) -> StoreResult<Arc<dyn Store>> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(
            sqlite::SqliteStore::connect(url, max_connections).await?,
        ))
    } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        Ok(Arc::new(
            postgres::PostgresStore::connect(url, max_connections).await?,
        ))
    } else {
        Err(unsupported_url(url))
    }
}

/// Names only the scheme: the rest of a URL may carry a password, and errors get logged.
fn unsupported_url(url: &str) -> StoreError {
    let scheme = url.split_once(':').map_or("(none)", |(scheme, _)| scheme);
    StoreError::UnsupportedUrl(format!("scheme {scheme:?} (sqlite: or postgres: expected)"))
}

/// Maps sqlx errors: connection trouble is `Unavailable` (503), the rest `Database` (500).
pub(crate) fn map_sqlx(e: sqlx::Error) -> StoreError {
    match e {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) | sqlx::Error::Tls(_) => {
            StoreError::Unavailable(e.to_string())
        }
        other => StoreError::Database(other.to_string()),
    }
}

fn parse_roles(json: &str) -> Vec<String> {
    serde_json::from_str(json).unwrap_or_default()
}

fn roles_json(roles: &[String]) -> String {
    serde_json::to_string(roles).unwrap_or_else(|_| "[]".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_unsupported_url_is_refused_without_echoing_its_credentials() {
        let Err(e) = connect("mysql://admin:hunter2@db.example/app", 1).await else {
            panic!("a mysql URL must be refused");
        };
        let said = e.to_string();
        assert!(said.contains("\"mysql\""), "{said}");
        assert!(!said.contains("hunter2"), "{said}");
    }
}
