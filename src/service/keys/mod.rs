//! Signing keys: the [`KeyRing`] the flows sign and verify with (`ring`), and the key
//! operations of start-up and `tessera keys` (`ops`: list, rotate, revoke, encrypt).
//!
//! Stages: a key is *next* (published in the JWKS, not signing) until its activation time,
//! then *active* (signing), then *retired* (verifying until its tokens can have expired),
//! then *expired*; or *revoked* at any point (refused at once, gone from the JWKS). Which key
//! signs is computed from the key table at each issue, so every instance switches at the
//! activation time by itself, with no coordination (see [`crate::tokens::signing_key_at`]).

mod ops;
mod ring;

pub use ops::{Encrypted, KeyOps, KeyView, Revoked};
pub use ring::KeyRing;

use std::time::Duration;

use super::error::{token_internal, AuthError};
use crate::crypto::master_key::{is_sealed, MasterKeyError, MasterKeys};
use crate::domain::Timestamp;
use crate::tokens::{AccessTokens, SigningAlg, SigningKeyRecord};

/// Signing keys are reloaded every minute. An instance that has not managed to read them for
/// this long may be signing with a key another process has retired: it stops issuing tokens
/// (503) until a reload succeeds. Retired keys keep verifying this much longer than a token
/// they signed can live, so tokens issued in the meantime stay valid on every instance.
pub const KEY_SET_MAX_AGE: Duration = Duration::from_secs(180);

/// How often every instance re-reads the signing keys (a rotation made elsewhere is in its
/// JWKS at most this long after it was written).
pub const KEY_RELOAD_EVERY: Duration = Duration::from_secs(60);

/// The `max-age` of the JWKS response: how long a verifier may use a copy.
pub const JWKS_MAX_AGE: Duration = Duration::from_secs(60);

/// The shortest publish-ahead that guarantees a verifier caching the JWKS never meets a kid
/// its copy lacks: an instance may learn of a new key only at its next reload, and a copy
/// fetched just before that lives for the JWKS's max-age. Shorter settings are allowed (tests,
/// deployments without third-party verifiers) but warned about.
pub const MIN_KEY_PUBLISH_AHEAD: Duration =
    Duration::from_secs(KEY_RELOAD_EVERY.as_secs() + JWKS_MAX_AGE.as_secs());

/// What the key ring and the key operations need to know.
#[derive(Clone, Debug)]
pub struct KeyPolicy {
    /// The algorithm new keys are made for.
    pub signing_alg: SigningAlg,
    /// The master keys that seal private signing keys at rest (none: stored in clear).
    pub master_keys: MasterKeys,
    /// How long a key rotated in by `tessera keys rotate` is published before it signs.
    pub publish_ahead: Duration,
    /// How long a retired key keeps verifying (see [`KeyPolicy::new`]).
    pub retired_grace: Duration,
}

impl KeyPolicy {
    /// A retired key keeps verifying for the longest a token it signed can live
    /// (`access_ttl`), plus the longest an instance may go on signing with it unawares
    /// ([`KEY_SET_MAX_AGE`]), plus a minute.
    pub fn new(
        signing_alg: SigningAlg,
        master_keys: MasterKeys,
        publish_ahead: Duration,
        access_ttl: Duration,
    ) -> KeyPolicy {
        KeyPolicy {
            signing_alg,
            master_keys,
            publish_ahead,
            retired_grace: access_ttl + KEY_SET_MAX_AGE + Duration::from_secs(60),
        }
    }
}

/// Opens the sealed private keys of the records a key set at `now` loads (the others, such
/// as long-expired keys, are never used and need not open). `tessera check` uses it too.
pub fn open_key_set_records(
    keys: &[SigningKeyRecord],
    now: Timestamp,
    policy: &KeyPolicy,
) -> Result<Vec<SigningKeyRecord>, AuthError> {
    keys.iter()
        .map(|k| {
            let mut k = k.clone();
            if k.in_key_set_at(now, policy.retired_grace) {
                k.private_pkcs8 = policy
                    .master_keys
                    .open(&k.kid, &k.private_pkcs8)
                    .map_err(|e| at_rest(&k.kid, e))?
                    .0;
            }
            Ok(k)
        })
        .collect()
}

/// The key set, its sealed private keys opened with the master keys.
fn build_key_set(
    keys: &[SigningKeyRecord],
    issuer: &str,
    audience: &str,
    now: Timestamp,
    policy: &KeyPolicy,
) -> Result<AccessTokens, AuthError> {
    let opened = open_key_set_records(keys, now, policy)?;
    AccessTokens::new(&opened, issuer, audience, now, policy.retired_grace).map_err(token_internal)
}

fn at_rest(kid: &str, e: MasterKeyError) -> AuthError {
    AuthError::KeyAtRest {
        kid: kid.to_owned(),
        reason: e.to_string(),
    }
}

/// Says at start what an operator should know about the keys at rest: stored in clear (no
/// master key), or some still in clear although a master key is set.
fn warn_about_keys_at_rest(keys: &[SigningKeyRecord], policy: &KeyPolicy) {
    if policy.master_keys.current.is_none() {
        tracing::warn!(
            "TESSERA_MASTER_KEY is not set: private signing keys are stored in clear in the database"
        );
    } else if keys
        .iter()
        .any(|k| k.revoked_at.is_none() && !is_sealed(&k.private_pkcs8))
    {
        tracing::warn!("some private signing keys are stored in clear: run `tessera keys encrypt`");
    }
    if policy.publish_ahead < MIN_KEY_PUBLISH_AHEAD {
        tracing::warn!(
            publish_ahead_secs = policy.publish_ahead.as_secs(),
            minimum_secs = MIN_KEY_PUBLISH_AHEAD.as_secs(),
            "TESSERA_KEY_PUBLISH_AHEAD is shorter than the JWKS max-age plus the key reload interval: \
             verifiers caching the JWKS may meet a rotated key before they know it"
        );
    }
}
