//! The mail outbox: mails waiting for the SMTP server. A trait of its own, a supertrait of
//! [`Store`](super::Store); each backend implements it in its own `mail` module.
//!
//! **Queuing a mail with a state change, in one transaction.** A flow whose write and mail
//! must happen together (a reset token and the mail that carries it) gets a store method of
//! its own that takes the [`NewMail`] beside its other arguments, and queues it inside the
//! same transaction through the backend's helper: `sqlite::mail::queue_mail(conn, &mail)`
//! inside the write's `in_savepoint`, `postgres::mail::queue_mail(&mut *tx, &mail)` before
//! `tx.commit()`. Either both are committed or neither is. [`MailStore::insert_mail`] is the
//! same insert alone, for mails that go with no state change (`tessera mail test`).

use async_trait::async_trait;

use super::StoreResult;
use crate::domain::Timestamp;

/// A mail to queue: who it goes to, what kind it is and what its template needs (rendered
/// when it is sent, with the templates and public URL of the instance sending it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewMail {
    pub id: uuid::Uuid,
    pub recipient: String,
    /// The message kind (`password_reset`, ...), for listings.
    pub kind: String,
    /// What the kind's template needs, as JSON. May hold a token: it is erased once the mail
    /// is sent or given up.
    pub payload: String,
    pub created_at: Timestamp,
    /// Not worth sending after this (the link it carries has expired); `None`: only the
    /// deliverer's general bound applies.
    pub expires_at: Option<Timestamp>,
}

/// A mail as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueuedMail {
    pub id: uuid::Uuid,
    pub recipient: String,
    pub kind: String,
    /// Empty once the mail is sent or given up.
    pub payload: String,
    pub created_at: Timestamp,
    pub expires_at: Option<Timestamp>,
    /// Delivery attempts started so far (a claim counts as one).
    pub attempts: u32,
    pub next_attempt_at: Timestamp,
    pub claimed_until: Option<Timestamp>,
    pub sent_at: Option<Timestamp>,
    /// When delivery was given up (a permanent refusal, or out of time).
    pub failed_at: Option<Timestamp>,
    /// Why the last attempt failed (the SMTP server's answer, or the connection error).
    pub last_error: Option<String>,
}

impl QueuedMail {
    /// Neither sent nor given up.
    pub fn is_pending(&self) -> bool {
        self.sent_at.is_none() && self.failed_at.is_none()
    }
}

#[async_trait]
pub trait MailStore: Send + Sync {
    /// Queues a mail, due at once.
    async fn insert_mail(&self, mail: &NewMail) -> StoreResult<()>;
    /// Claims up to `limit` pending mails that are due at `now` and not leased by anyone: each
    /// gets `claimed_by = claimer`, `claimed_until = lease_until` and one more attempt,
    /// atomically, so concurrent claimers (on any instance) never get the same mail. Oldest
    /// due first.
    async fn claim_mails(
        &self,
        claimer: &str,
        now: Timestamp,
        lease_until: Timestamp,
        limit: u32,
    ) -> StoreResult<Vec<QueuedMail>>;
    /// Marks a mail sent and erases its payload, if `claimer` still holds it or it is
    /// pending; returns whether it did.
    async fn mark_mail_sent(&self, id: uuid::Uuid, claimer: &str, now: Timestamp) -> StoreResult<bool>;
    /// Releases `claimer`'s lease, records `error` and makes the mail due again at
    /// `next_attempt_at`; returns whether `claimer` still held it.
    async fn reschedule_mail(
        &self,
        id: uuid::Uuid,
        claimer: &str,
        next_attempt_at: Timestamp,
        error: &str,
    ) -> StoreResult<bool>;
    /// Hands back every mail `claimer` still holds (a deliverer stopping): another instance,
    /// or the next start, may try them at once instead of after the lease. Returns how many.
    async fn release_mail_claims(&self, claimer: &str) -> StoreResult<u64>;
    /// Gives a mail up: marks it failed with `error` and erases its payload, if `claimer`
    /// still holds it; returns whether it did.
    async fn mark_mail_failed(
        &self,
        id: uuid::Uuid,
        claimer: &str,
        now: Timestamp,
        error: &str,
    ) -> StoreResult<bool>;
    async fn find_mail(&self, id: uuid::Uuid) -> StoreResult<Option<QueuedMail>>;
    /// Newest first, at most `limit`; only pending ones when `pending_only`.
    async fn find_mails(&self, pending_only: bool, limit: u32) -> StoreResult<Vec<QueuedMail>>;
    /// Deletes at most `limit` mails sent or given up that were queued before `before`;
    /// returns how many.
    async fn delete_mails_finished_before(&self, before: Timestamp, limit: u32) -> StoreResult<u64>;
}
