//! The alert outbox: security alerts waiting for the webhook. A trait of its own, a supertrait
//! of [`Store`](super::Store), beside [`AccountStore`](super::AccountStore); each backend
//! implements it in its own `alerts` module. Nothing on the refresh fast path touches it.

use async_trait::async_trait;

use super::StoreResult;
use crate::domain::{Timestamp, UserId};

/// An alert to queue.
#[derive(Clone, Debug)]
pub struct NewAlert {
    /// The alert's stable id: it travels in the body, so receivers can drop a redelivery.
    pub id: uuid::Uuid,
    pub event: String,
    /// Alerts with the same key are one alert: the second insert is a no-op (coalescing).
    pub dedup_key: String,
    /// The JSON body, exactly as it will be POSTed.
    pub payload: String,
    pub created_at: Timestamp,
}

/// An alert as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredAlert {
    pub id: uuid::Uuid,
    pub event: String,
    pub payload: String,
    pub created_at: Timestamp,
    /// Delivery attempts started so far (a claim counts as one).
    pub attempts: u32,
    pub next_attempt_at: Timestamp,
    pub claimed_until: Option<Timestamp>,
    pub delivered_at: Option<Timestamp>,
}

#[async_trait]
pub trait AlertStore: Send + Sync {
    /// Queues an alert, due at once; returns `false` when an alert with the same dedup key is
    /// already queued (this one is coalesced into it).
    async fn insert_alert(&self, alert: &NewAlert) -> StoreResult<bool>;
    /// Claims up to `limit` undelivered alerts that are due at `now` and not leased by anyone:
    /// each gets `claimed_by = claimer`, `claimed_until = lease_until` and one more attempt,
    /// atomically, so concurrent claimers (on any instance) never get the same alert. Oldest
    /// first.
    async fn claim_alerts(
        &self,
        claimer: &str,
        now: Timestamp,
        lease_until: Timestamp,
        limit: u32,
    ) -> StoreResult<Vec<StoredAlert>>;
    /// Marks an alert delivered, if `claimer` still holds it or it is undelivered; returns
    /// whether it did.
    async fn mark_alert_delivered(&self, id: uuid::Uuid, claimer: &str, now: Timestamp) -> StoreResult<bool>;
    /// Releases `claimer`'s lease and makes the alert due again at `next_attempt_at`; returns
    /// whether `claimer` still held it.
    async fn reschedule_alert(
        &self,
        id: uuid::Uuid,
        claimer: &str,
        next_attempt_at: Timestamp,
    ) -> StoreResult<bool>;
    /// Newest first, at most `limit`; only undelivered ones when `pending_only`.
    async fn find_alerts(&self, pending_only: bool, limit: u32) -> StoreResult<Vec<StoredAlert>>;
    /// The distinct (user agent, IP) pairs of the user's sessions (live or not yet swept) and
    /// successful logins on record, at most `limit`: what `login_new_device` compares against.
    async fn find_known_devices(
        &self,
        user: UserId,
        limit: u32,
    ) -> StoreResult<Vec<(Option<String>, Option<String>)>>;
    /// Deletes at most `limit` alerts delivered before `before`; returns how many.
    async fn delete_alerts_delivered_before(&self, before: Timestamp, limit: u32) -> StoreResult<u64>;
}
