//! Single-use tokens sent by mail (verification, password reset, email change, sign-in link)
//! and the account changes they lead to. A trait of its own, a supertrait of
//! [`Store`](super::Store); each backend implements it in its own `email_tokens` module.
//!
//! A token is stored only as its SHA-256; issuing one queues its mail in the same transaction
//! (see `store::MailStore`), so a token exists exactly when its mail does.

use async_trait::async_trait;

use super::{NewMail, StoreResult, UserRecord};
use crate::domain::{Email, Timestamp, UserId};

/// What a token is for. Stored as its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EmailTokenKind {
    VerifyEmail,
    PasswordReset,
    EmailChange,
    SignInLink,
}

impl EmailTokenKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EmailTokenKind::VerifyEmail => "verify_email",
            EmailTokenKind::PasswordReset => "password_reset",
            EmailTokenKind::EmailChange => "email_change",
            EmailTokenKind::SignInLink => "sign_in_link",
        }
    }

    pub fn parse(s: &str) -> Option<EmailTokenKind> {
        [
            EmailTokenKind::VerifyEmail,
            EmailTokenKind::PasswordReset,
            EmailTokenKind::EmailChange,
            EmailTokenKind::SignInLink,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// A token as stored: never the token itself, only its SHA-256 (lower-case hex).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EmailTokenRecord {
    pub hash: String,
    pub kind: EmailTokenKind,
    pub user_id: UserId,
    /// An email change: the address it goes to.
    pub new_email: Option<Email>,
    /// The user's credential epoch when the token was issued.
    pub credential_epoch: i64,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    pub used_at: Option<Timestamp>,
    /// A sign-in link asked for from a browser: the hash of what that browser holds, without
    /// which the link does not sign in.
    pub browser_hash: Option<String>,
}

#[async_trait]
pub trait EmailTokenStore: Send + Sync {
    /// Stores `token` and queues `mail`, in one transaction; every unused token of the same
    /// user and kind is marked used first (a newer request supersedes the older links).
    async fn insert_email_token(&self, token: &EmailTokenRecord, mail: &NewMail) -> StoreResult<()>;
    /// The token with this hash and its user, used or not.
    async fn find_email_token(&self, hash: &str) -> StoreResult<Option<(EmailTokenRecord, UserRecord)>>;
    /// Marks the token used if it is unused and unexpired at `now`; returns whether it did (the
    /// one winner among concurrent uses).
    async fn use_email_token(&self, hash: &str, now: Timestamp) -> StoreResult<bool>;
    /// Marks every unused token of `user` of `kind` used (a password changed otherwise makes
    /// pending reset links void).
    async fn void_email_tokens(&self, user: UserId, kind: EmailTokenKind, now: Timestamp)
        -> StoreResult<u64>;
    /// Records the user's address as proved at `now` (keeps the first time); returns whether
    /// the user exists.
    async fn mark_email_verified(&self, user: UserId, now: Timestamp) -> StoreResult<bool>;
    /// Records the user's address as not proved (an administrator's correction); returns
    /// whether the user exists.
    async fn unmark_email_verified(&self, user: UserId) -> StoreResult<bool>;
    /// Changes the user's address to `new_email`, proved at `now`; `Conflict` when another
    /// account has it. Returns whether the user exists.
    async fn change_email(&self, user: UserId, new_email: &Email, now: Timestamp) -> StoreResult<bool>;
    /// Deletes at most `limit` tokens that expired before `before`; returns how many.
    async fn delete_email_tokens_expired_before(&self, before: Timestamp, limit: u32) -> StoreResult<u64>;
}
