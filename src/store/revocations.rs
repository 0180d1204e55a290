//! The revocation log: what every instance follows to answer liveness from memory, and the feed resource servers read.

use async_trait::async_trait;

use super::StoreResult;
use crate::domain::{SessionId, Timestamp, UserId};

/// Sessions revoked since a point in the database's time.
#[derive(Clone, Debug, Default)]
pub struct RevocationsSince {
    pub sessions: Vec<SessionId>,
    /// The database's time when it was asked: the next question starts from a little before it.
    pub asked_at: Timestamp,
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
    /// A heartbeat sent with [`RevocationStore::send_revocation_heartbeat`] (by this instance or
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
pub trait RevocationStore: Send + Sync {
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
}
