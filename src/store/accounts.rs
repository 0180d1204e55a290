//! Account administration, user import and reading the audit trail: what the `tessera users`,
//! `sessions` and `audit` commands and the upgrade of imported password hashes need from
//! storage. A trait of its own, a supertrait of [`Store`](super::Store), so these statements
//! sit beside the request paths rather than among them; each backend implements it in its
//! own `accounts` module.

use async_trait::async_trait;

use super::{StoreResult, UserRecord};
use crate::crypto::PasswordHashString;
use crate::domain::{Email, SessionId, Timestamp, UserId};

/// A user as an administrator sees it.
#[derive(Clone, Debug)]
pub struct UserAccount {
    pub user: UserRecord,
    /// Set while the account is disabled: no session can be created for it.
    pub disabled_at: Option<Timestamp>,
}

/// Which audit events to read, newest first.
#[derive(Clone, Debug, Default)]
pub struct AuditFilter {
    pub user: Option<UserId>,
    pub event: Option<String>,
    pub since: Option<Timestamp>,
    /// Events before this time only.
    pub until: Option<Timestamp>,
    /// Keyset paging: only events after this one in the order read (`at` then `id`, both
    /// descending), the last of the previous page.
    pub before: Option<(Timestamp, uuid::Uuid)>,
    pub limit: u32,
}

/// Which accounts to list, in creation order (keyset on the UUIDv7 id, so a page never
/// repeats or skips an account whatever is inserted meanwhile).
#[derive(Clone, Debug, Default)]
pub struct AccountFilter {
    /// Only accounts after this id (the last of the previous page).
    pub after: Option<UserId>,
    /// Only emails starting with this (lower-cased already).
    pub email_prefix: Option<String>,
    pub disabled: Option<bool>,
    /// Only accounts with this role.
    pub role: Option<String>,
    /// Created at or after this time.
    pub created_from: Option<Timestamp>,
    /// Created before this time.
    pub created_until: Option<Timestamp>,
    pub limit: u32,
}

/// An audit event as stored, with the email of its user if the user still exists. It is
/// also what `tessera audit --json` prints, field for field, in this order.
#[derive(Clone, Debug, serde::Serialize)]
pub struct StoredAuditEvent {
    pub id: uuid::Uuid,
    pub at: Timestamp,
    pub event: String,
    pub user_id: Option<UserId>,
    pub email: Option<String>,
    pub session_id: Option<SessionId>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub detail: Option<String>,
}

#[async_trait]
pub trait AccountStore: Send + Sync {
    async fn find_account(&self, email: &Email) -> StoreResult<Option<UserAccount>>;
    /// Up to `limit` accounts in email order, after `after` (keyset paging).
    async fn find_accounts(&self, after: Option<&Email>, limit: u32) -> StoreResult<Vec<UserAccount>>;
    /// Marks the user disabled (keeping the first time it was), bumps its credential epoch
    /// and revokes every live session of it, reason `user_disabled`, all in one transaction;
    /// returns how many sessions it revoked. A session insert racing it either commits first
    /// (and is revoked here) or sees the user disabled and inserts nothing (see
    /// `SessionStore::insert_session`).
    async fn disable_user(&self, user: UserId, now: Timestamp) -> StoreResult<u64>;
    /// Clears the disabled mark; returns whether the user was disabled.
    async fn enable_user(&self, user: UserId) -> StoreResult<bool>;
    /// Replaces the user's roles; returns whether the user exists.
    async fn update_user_roles(&self, user: UserId, roles: &[String]) -> StoreResult<bool>;
    /// Replaces the password hash with `new` only if it is still `old` (an imported hash
    /// upgraded at login must not overwrite a password changed meanwhile); returns whether
    /// it did.
    async fn upgrade_password_hash(
        &self,
        user: UserId,
        old: &PasswordHashString,
        new: &PasswordHashString,
    ) -> StoreResult<bool>;
    /// Sets a new password: replaces the hash with `new` only if it is still `old`, bumps the
    /// credential epoch and revokes every live session of the user but `keep`, with
    /// `reason`, in one transaction. `None` when the hash was no longer `old`; otherwise how
    /// many sessions it revoked. A login that verified the old password either wrote its
    /// session first (revoked here) or finds the epoch moved and writes nothing.
    async fn change_password_hash(
        &self,
        user: UserId,
        old: &PasswordHashString,
        new: &PasswordHashString,
        keep: Option<SessionId>,
        now: Timestamp,
        reason: &str,
    ) -> StoreResult<Option<u64>>;
    /// Inserts every user whose email is not taken yet, in one transaction; returns how many
    /// it inserted (the others were already present).
    async fn insert_users_if_absent(&self, users: &[UserRecord]) -> StoreResult<u64>;
    async fn find_audit_events(&self, filter: &AuditFilter) -> StoreResult<Vec<StoredAuditEvent>>;
    async fn find_account_by_id(&self, user: UserId) -> StoreResult<Option<UserAccount>>;
    /// A page of accounts by [`AccountFilter`], in id (creation) order.
    async fn find_accounts_filtered(&self, filter: &AccountFilter) -> StoreResult<Vec<UserAccount>>;
    /// Replaces the user's `app_metadata` (a JSON object as text); returns whether the user
    /// exists.
    async fn update_app_metadata(&self, user: UserId, app_metadata: &str) -> StoreResult<bool>;
    /// The time of the user's last successful login still in the audit trail.
    async fn find_last_login(&self, user: UserId) -> StoreResult<Option<Timestamp>>;
    /// Deletes the user in one transaction: its live sessions are revoked first (reason
    /// `user_deleted`, so the revocation log tells running servers and the feed), then the
    /// user row goes and its sessions and refresh tokens with it (cascade), as does its
    /// failed-login count; its audit events stay under its id, which then names nobody, with
    /// its email replaced by `<deleted>` in their detail. `None` when there is no such user,
    /// else how many sessions it revoked.
    async fn delete_user(&self, user: UserId, now: Timestamp) -> StoreResult<Option<u64>>;
}
