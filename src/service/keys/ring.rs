//! The key ring: the key set this instance signs and verifies with, reloaded when another
//! process rotates the keys (every minute, on an unknown `kid`, rate limited, and within half
//! a second of a revocation), and refused for signing when it could not be read for too long.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use super::{build_key_set, warn_about_keys_at_rest, KeyOps, KeyPolicy, KEY_SET_MAX_AGE};
use crate::alerts::AlertSink;
use crate::domain::Clock;
use crate::service::error::AuthError;
use crate::store::{Store, StoreError};
use crate::tokens::{AccessClaims, AccessTokens, TokenError};

/// An unknown `kid` triggers at most one key reload per this interval, so forged kids
/// cannot turn into a database query each.
const KEY_RELOAD_MIN_INTERVAL: Duration = Duration::from_secs(1);

/// How often each instance asks whether a key was revoked or added: a revocation is an
/// emergency, so it must not wait for the minute's reload (a read of a few short rows).
const KEY_WATCH_EVERY: Duration = crate::service::REVOCATION_POLL_EVERY;

pub struct KeyRing {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    policy: KeyPolicy,
    issuer: String,
    audience: String,
    /// Swapped whole when the keys are reloaded (another instance or `tessera keys` may have
    /// changed them); readers clone the `Arc` and never wait on a reload.
    held: RwLock<Arc<AccessTokens>>,
    /// When a key reload was last attempted (unknown kids reload at most once a second).
    last_reload: AtomicI64,
    /// When the keys were last read successfully: after [`KEY_SET_MAX_AGE`] no token is issued.
    loaded_at: AtomicI64,
}

impl KeyRing {
    /// Loads the signing keys, creating the first one on an empty database, and rotating to
    /// a new key when the configured algorithm changed.
    pub async fn open(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        alerts: &dyn AlertSink,
        policy: KeyPolicy,
        issuer: &str,
        audience: &str,
    ) -> Result<KeyRing, AuthError> {
        let mut keys = store.find_signing_keys().await?;
        let ops = KeyOps {
            store: store.as_ref(),
            alerts,
            master: &policy.master_keys,
            admin: None,
        };
        // The newest key's algorithm: the one signing, or about to (a key in the next stage
        // already has the configured algorithm when `keys rotate` made it).
        let active_alg = keys
            .iter()
            .filter(|k| k.active)
            .max_by_key(|k| k.created_at)
            .map(|k| k.alg.clone());
        match active_alg {
            None => {
                ops.insert_first_key(policy.signing_alg, clock.now()).await?;
                // Read back: a concurrently starting instance may have won.
                keys = store.find_signing_keys().await?;
            }
            // A new algorithm is a rotation: tokens signed with the old key keep verifying
            // until they expire. It takes effect at once, as it always did: a verifier that
            // caches the JWKS refetches it on the unknown kid (`tessera keys rotate --alg`
            // publishes the new key ahead instead). Instances must agree on the algorithm,
            // or each start undoes the last; instances starting together may rotate more
            // than once, harmlessly.
            Some(alg) if alg != policy.signing_alg.as_str() => {
                let now = clock.now();
                let key = ops
                    .rotate(policy.signing_alg, now, now, "algorithm_change")
                    .await?;
                tracing::info!(from = %alg, to = %policy.signing_alg, kid = %key.kid, "signing algorithm changed: key rotated");
                keys = store.find_signing_keys().await?;
            }
            Some(_) => {}
        }
        let now = clock.now();
        let held = build_key_set(&keys, issuer, audience, now, &policy)?;
        warn_about_keys_at_rest(&keys, &policy);
        Ok(KeyRing {
            store,
            clock,
            policy,
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            held: RwLock::new(Arc::new(held)),
            // Not "now": the first unknown kid after start may reload at once.
            last_reload: AtomicI64::new(0),
            loaded_at: AtomicI64::new(now.millis()),
        })
    }

    pub fn jwks(&self) -> Arc<serde_json::Value> {
        self.held().jwks()
    }

    /// The key set held now.
    pub(crate) fn held(&self) -> Arc<AccessTokens> {
        // A poisoned lock only means a reload panicked; the key set it guards is still whole.
        Arc::clone(&self.held.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Re-reads the signing keys: picks up a rotation and lets retired keys age out. When the
    /// key set is what we already hold, it is kept, and with it the cache of verified tokens
    /// (a forged unknown `kid` triggers a reload, and must not cost every client its cache).
    pub async fn reload(&self) -> Result<(), AuthError> {
        let now = self.clock.now();
        self.last_reload.store(now.millis(), Ordering::Relaxed);
        let keys = self.store.find_signing_keys().await?;
        let held = self.held();
        let kids: Vec<(String, bool)> = keys
            .iter()
            .map(|k| (k.kid.clone(), k.revoked_at.is_some()))
            .collect();
        if !held.same_key_set(&keys, now, self.policy.retired_grace) || !held.knows_kids(&kids) {
            let fresh = build_key_set(&keys, &self.issuer, &self.audience, now, &self.policy)?;
            *self.held.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(fresh);
        }
        self.loaded_at.store(now.millis(), Ordering::Relaxed);
        Ok(())
    }

    /// Reloads the keys whenever a key is revoked or added (by `tessera keys` anywhere), for
    /// as long as the process runs: a revoked key's tokens are refused, and it leaves the
    /// JWKS, within [`KEY_WATCH_EVERY`]; a key in the next stage is published as soon. Only
    /// kids are read each time; the minute's reload stays the guarantee when this fails.
    pub async fn watch(&self) {
        let mut every = tokio::time::interval(KEY_WATCH_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            let kids = match self.store.find_signing_kids().await {
                Ok(kids) => kids,
                Err(e) => {
                    tracing::debug!(error = %e, "cannot read the signing kids");
                    continue;
                }
            };
            let held = self.held();
            if held.knows_kids(&kids) {
                continue;
            }
            let revoked = kids
                .iter()
                .filter(|(kid, revoked)| *revoked && !held.revoked_kids().contains(kid))
                .count();
            match self.reload().await {
                Ok(()) if revoked > 0 => tracing::warn!(revoked, "signing key revoked: keys reloaded"),
                Ok(()) => tracing::info!("signing keys changed: keys reloaded"),
                Err(e) => tracing::error!(error = %e, "signing keys changed but could not be reloaded"),
            }
        }
    }

    /// The key set to sign with: refused (503) when the keys could not be read for
    /// [`KEY_SET_MAX_AGE`], after one more attempt, because another process may have retired
    /// the key we hold.
    pub(crate) async fn for_signing(&self) -> Result<Arc<AccessTokens>, AuthError> {
        let now = self.clock.now().millis();
        let age = now.saturating_sub(self.loaded_at.load(Ordering::Relaxed));
        if age > KEY_SET_MAX_AGE.as_millis() as i64 {
            if let Err(e) = self.reload().await {
                tracing::error!(error = %e, "signing keys could not be reloaded; not issuing tokens");
                return Err(AuthError::Store(StoreError::Unavailable(
                    "signing keys could not be reloaded".into(),
                )));
            }
        }
        Ok(self.held())
    }

    /// Verifies an access token; a `kid` we do not know yet makes us reload the keys (rate
    /// limited) and try once more, so a key another instance just rotated in is accepted.
    pub(crate) async fn verify(
        &self,
        jwt: &str,
        allow_expired: bool,
    ) -> Result<Arc<AccessClaims>, TokenError> {
        let now = self.clock.now();
        match self.held().verify(jwt, allow_expired, now) {
            Err(TokenError::UnknownKey) => {
                let last = self.last_reload.load(Ordering::Relaxed);
                if now.millis() - last < KEY_RELOAD_MIN_INTERVAL.as_millis() as i64 {
                    return Err(TokenError::UnknownKey);
                }
                if let Err(e) = self.reload().await {
                    tracing::warn!(error = %e, "could not reload signing keys");
                    return Err(TokenError::UnknownKey);
                }
                self.held().verify(jwt, allow_expired, now)
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::NoAlerts;
    use crate::config::Config;
    use crate::crypto::master_key::MasterKeys;
    use crate::domain::SystemClock;
    use crate::tokens::SigningAlg;

    #[tokio::test]
    async fn a_forged_unknown_kid_does_not_throw_away_the_verified_token_cache() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = crate::store::connect(&url, 2).await.unwrap();
        let policy = crate::startup::policy(&Config::default()).keys;
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let ring = KeyRing::open(
            Arc::clone(&store),
            Arc::clone(&clock),
            &NoAlerts,
            policy,
            "iss",
            "aud",
        )
        .await
        .unwrap();
        let before = ring.held();
        // A token with a kid nobody has: it makes the ring reload its keys.
        let header = base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            br#"{"alg":"EdDSA","typ":"at+jwt","kid":"forged"}"#,
        );
        let forged = format!("{header}.e30.c2ln");
        assert!(matches!(
            ring.verify(&forged, false).await,
            Err(TokenError::UnknownKey)
        ));
        assert!(ring.last_reload.load(Ordering::Relaxed) > 0, "a reload happened");
        assert!(
            Arc::ptr_eq(&before, &ring.held()),
            "the same key set, and with it its cache, is kept"
        );
        // A real change of keys is still picked up.
        let now = clock.now();
        KeyOps {
            store: store.as_ref(),
            alerts: &NoAlerts,
            master: &MasterKeys::default(),
            admin: None,
        }
        .rotate(SigningAlg::EdDSA, now, now, "test")
        .await
        .unwrap();
        ring.reload().await.unwrap();
        assert!(!Arc::ptr_eq(&before, &ring.held()));
    }
}
