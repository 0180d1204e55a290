//! Accounts as the auth flows read and create them.

use async_trait::async_trait;

use super::StoreResult;
use crate::crypto::PasswordHashString;
use crate::domain::{Email, Timestamp, UserId};

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
    /// A JSON object (as text) the user edits: profile data, size-bounded by the service.
    pub user_metadata: String,
    /// A JSON object (as text) only administrators set; some of its keys may be copied into
    /// access tokens (`TESSERA_CUSTOM_CLAIMS`).
    pub app_metadata: String,
    /// When the address was proved (a verification, sign-in or change link); `None`: not yet.
    pub email_verified_at: Option<Timestamp>,
}

impl UserRecord {
    /// A new account created at `now`: a fresh id, no roles, the first credential epoch.
    /// (Set anything else with struct update syntax.)
    pub fn new(email: Email, password_hash: PasswordHashString, now: Timestamp) -> UserRecord {
        UserRecord {
            id: UserId::new(),
            email,
            password_hash,
            roles: Vec::new(),
            created_at: now,
            credential_epoch: 0,
            user_metadata: "{}".to_owned(),
            app_metadata: "{}".to_owned(),
            email_verified_at: None,
        }
    }
}

#[async_trait]
pub trait UserStore: Send + Sync {
    /// Inserts a user; `Conflict` when the (normalised) email exists.
    async fn insert_user(&self, user: &UserRecord) -> StoreResult<()>;
    async fn find_user_by_email(&self, email: &Email) -> StoreResult<Option<UserRecord>>;
    async fn find_user_by_id(&self, user: UserId) -> StoreResult<Option<UserRecord>>;
    /// Replaces the user's `user_metadata` (a JSON object as text); returns the user as it
    /// is now, `None` if there is no such user.
    async fn update_user_metadata(
        &self,
        user: UserId,
        user_metadata: &str,
    ) -> StoreResult<Option<UserRecord>>;
}
