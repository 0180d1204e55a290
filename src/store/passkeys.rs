//! Passkeys (WebAuthn credentials) and the ceremonies that register and use them. A trait of
//! its own, a supertrait of [`Store`](super::Store); each backend implements it in its own
//! `passkeys` module.
//!
//! The store keeps a passkey as the service serialised it (opaque text) beside the columns
//! it is found by; a ceremony's state likewise. A ceremony is *taken*: read and deleted in
//! one statement, so of two answers to one ceremony, on any instances, one gets it.

use async_trait::async_trait;

use super::{StoreResult, UserRecord};
use crate::domain::{PasskeyId, Timestamp, UserId};

/// A registered passkey.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PasskeyRecord {
    pub id: PasskeyId,
    pub user_id: UserId,
    /// The credential id, base64url without padding (unique across accounts).
    pub credential_id: String,
    pub name: String,
    /// The credential (public key, algorithm, counter, flags) as the service serialised it.
    pub passkey: String,
    /// The signature counter last seen.
    pub counter: u32,
    pub created_at: Timestamp,
    pub last_used_at: Option<Timestamp>,
}

/// A ceremony's state between its options and its answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CeremonyRecord {
    /// `register:<user id>`, or the SHA-256 (hex) of a sign-in ceremony's id.
    pub handle: String,
    /// `register` or `authenticate`.
    pub kind: String,
    pub user_id: Option<UserId>,
    /// The ceremony state as the service serialised it.
    pub state: String,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
}

#[async_trait]
pub trait PasskeyStore: Send + Sync {
    /// Stores a ceremony, replacing one with the same handle; ceremonies expired before its
    /// creation are deleted on the way (they are never swept otherwise).
    async fn insert_passkey_ceremony(&self, ceremony: &CeremonyRecord) -> StoreResult<()>;
    /// Reads and deletes the ceremony with this handle, expired or not (the caller tells
    /// the two apart): at most one caller ever gets it.
    async fn take_passkey_ceremony(&self, handle: &str) -> StoreResult<Option<CeremonyRecord>>;
    /// `Conflict` when the credential id is registered already (to any account).
    async fn insert_passkey(&self, passkey: &PasskeyRecord) -> StoreResult<()>;
    /// The user's passkeys, oldest first.
    async fn find_passkeys(&self, user: UserId) -> StoreResult<Vec<PasskeyRecord>>;
    /// The passkey with this credential id, and its account.
    async fn find_passkey_by_credential(
        &self,
        credential_id: &str,
    ) -> StoreResult<Option<(PasskeyRecord, UserRecord)>>;
    /// Renames the user's passkey `id`; false when the user has no such passkey.
    async fn rename_passkey(&self, user: UserId, id: PasskeyId, name: &str) -> StoreResult<bool>;
    /// Deletes the user's passkey `id`; the deleted passkey, if the user had it.
    async fn delete_passkey(&self, user: UserId, id: PasskeyId) -> StoreResult<Option<PasskeyRecord>>;
    /// Deletes all of the user's passkeys in one statement (a reset cannot stop half-way);
    /// how many there were.
    async fn delete_passkeys(&self, user: UserId) -> StoreResult<u64>;
    /// Records a use: the credential as it is now and its counter, at `now`, only if the
    /// stored counter is below `counter` (or `counter` is 0: an authenticator without one), so
    /// two uses signed with the same counter (a cloned key racing) do not both pass. Returns
    /// whether it did.
    async fn record_passkey_use(
        &self,
        id: PasskeyId,
        passkey: &str,
        counter: u32,
        now: Timestamp,
    ) -> StoreResult<bool>;
}
