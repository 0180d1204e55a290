//! Second factors: an account's TOTP factor, its recovery codes, and the challenges a login
//! holds between its password and its second factor. A trait of its own, a supertrait of
//! [`Store`](super::Store); each backend implements it in its own `factors` module.
//!
//! Every decision that must have one winner across instances is one conditional write: a
//! TOTP time step accepted only if newer than the last (`accept_totp_step`), a recovery code
//! spent only if unspent (`use_recovery_code`), a challenge used only if live
//! (`use_mfa_challenge`).

use async_trait::async_trait;

use super::StoreResult;
use crate::domain::{Timestamp, UserId};

/// An account's TOTP factor as stored. Its `Debug` leaves out the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct TotpFactor {
    /// The secret, sealed with the master key when one is set (else in clear).
    pub secret: Vec<u8>,
    pub created_at: Timestamp,
    /// `None` until a first code confirmed it: until then it is no factor.
    pub confirmed_at: Option<Timestamp>,
    /// The last time step accepted (RFC 6238 `T`).
    pub last_step: Option<i64>,
}

impl std::fmt::Debug for TotpFactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TotpFactor")
            .field("created_at", &self.created_at)
            .field("confirmed_at", &self.confirmed_at)
            .field("last_step", &self.last_step)
            .finish_non_exhaustive()
    }
}

/// A login's pending second step, stored by the SHA-256 of the challenge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MfaChallengeRecord {
    pub hash: String,
    pub user_id: UserId,
    /// The user's credential epoch when the first step passed: a password changed (or the
    /// account disabled) since leaves the challenge without a session.
    pub credential_epoch: i64,
    /// `body` or `cookie`: how the login asked for its tokens.
    pub transport: String,
    /// Cookie transport: the SHA-256 of the `tessera_mfa` cookie the browser must send back.
    pub browser_hash: Option<String>,
    /// What the first step proved (RFC 8176 values), e.g. `["pwd"]`.
    pub amr: Vec<String>,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    /// Wrong codes presented with it so far.
    pub failures: i64,
    pub used_at: Option<Timestamp>,
}

#[async_trait]
pub trait FactorStore: Send + Sync {
    /// Starts (or restarts) a TOTP enrolment with `secret`; returns false, writing nothing,
    /// when the account already has a confirmed TOTP factor.
    async fn insert_pending_totp(&self, user: UserId, secret: &[u8], now: Timestamp) -> StoreResult<bool>;
    /// The account's TOTP factor, confirmed or not.
    async fn find_totp(&self, user: UserId) -> StoreResult<Option<TotpFactor>>;
    /// Confirms a pending TOTP factor with the code of `step`, replacing the recovery codes
    /// with `code_hashes`, in one transaction; false when there was no pending factor.
    async fn confirm_totp(
        &self,
        user: UserId,
        step: i64,
        code_hashes: &[String],
        now: Timestamp,
    ) -> StoreResult<bool>;
    /// Records `step` as the last accepted if the factor is confirmed and `step` is newer than
    /// the last accepted: false means the code was already used (a replay) or there is no factor.
    async fn accept_totp_step(&self, user: UserId, step: i64) -> StoreResult<bool>;
    /// Removes the TOTP factor and the recovery codes; returns whether there was a factor.
    async fn delete_totp(&self, user: UserId) -> StoreResult<bool>;
    /// Replaces the recovery codes with `code_hashes` (the old set dies).
    async fn replace_recovery_codes(
        &self,
        user: UserId,
        code_hashes: &[String],
        now: Timestamp,
    ) -> StoreResult<()>;
    /// Spends the unspent recovery code `hash` of `user`; false when there is none.
    async fn use_recovery_code(&self, user: UserId, hash: &str, now: Timestamp) -> StoreResult<bool>;
    /// How many unspent recovery codes `user` has.
    async fn count_recovery_codes(&self, user: UserId) -> StoreResult<u32>;
    async fn insert_mfa_challenge(&self, challenge: &MfaChallengeRecord) -> StoreResult<()>;
    async fn find_mfa_challenge(&self, hash: &str) -> StoreResult<Option<MfaChallengeRecord>>;
    /// Marks the challenge used if it is unused and unexpired at `now`; the one winner.
    async fn use_mfa_challenge(&self, hash: &str, now: Timestamp) -> StoreResult<bool>;
    /// Counts a wrong code against the challenge; at `max_failures` it is used up (at `now`).
    async fn fail_mfa_challenge(&self, hash: &str, max_failures: i64, now: Timestamp) -> StoreResult<()>;
    /// Deletes at most `limit` challenges that expired before `before`; returns how many.
    async fn delete_mfa_challenges_expired_before(&self, before: Timestamp, limit: u32) -> StoreResult<u64>;
}
