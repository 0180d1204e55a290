//! Failed and pending logins per key, for the per-account lock (`service::lockout`).

use async_trait::async_trait;

use super::StoreResult;
use crate::domain::{Email, SessionId, Timestamp};

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

#[async_trait]
pub trait LockoutStore: Send + Sync {
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
}
