//! Signing keys and their stages.

use async_trait::async_trait;

use super::StoreResult;
use crate::domain::Timestamp;
use crate::tokens::SigningKeyRecord;

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

#[async_trait]
pub trait KeyStore: Send + Sync {
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
}
