//! What the flows enforce, as plain values: startup builds it from the configuration
//! (`startup::policy`), so the service never reads `Config`.

use std::time::Duration;

use super::admin_access::AdminAccess;
use super::email::EmailPolicy;
use super::feed::FeedCredentials;
use super::keys::KeyPolicy;
use super::lockout::LockoutPolicy;
use super::passkeys::PasskeyPolicy;
use crate::domain::SessionCheck;

/// The lifetimes and limits the flows enforce.
#[derive(Clone, Debug)]
pub struct Policy {
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
    pub session_ttl: Duration,
    pub reuse_grace: Duration,
    pub max_sessions: u32,
    pub session_check: SessionCheck,
    /// How many password hashes may run at once (each holds 19 MiB and a blocking thread).
    pub hash_concurrency: usize,
    pub lockout: LockoutPolicy,
    /// Audit events older than this are swept (`ZERO`: kept forever).
    pub audit_retention: Duration,
    /// Who may read the revocation feed.
    pub feed_credentials: FeedCredentials,
    /// Who may call the admin API.
    pub admin: AdminAccess,
    /// The `app_metadata` keys copied into access tokens.
    pub custom_claims: Vec<String>,
    /// The signing keys: algorithm, sealing at rest, publish-ahead.
    pub keys: KeyPolicy,
    /// The flows by email: verification, reset, sign-in links.
    pub email: EmailPolicy,
    /// The WebAuthn relying party of passkeys, or why they are off.
    pub passkeys: PasskeyPolicy,
    /// How recent a sign-in must be for sensitive changes.
    pub reauthentication_max_age: Duration,
}
