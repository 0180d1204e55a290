//! Signing keys as the flows use them: reloaded when another process rotates them (and on
//! an unknown `kid`, rate limited, and within half a second of a revocation), refused for
//! signing when they could not be read for too long; and the `tessera keys` commands
//! (`list`, `rotate`, `revoke`, `encrypt`).
//!
//! Stages: a key is *next* (published in the JWKS, not signing) until its activation time,
//! then *active* (signing), then *retired* (verifying until its tokens can have expired),
//! then *expired*; or *revoked* at any point (refused at once, gone from the JWKS). Which key
//! signs is computed from the key table at each issue, so every instance switches at the
//! activation time by itself, with no coordination (see [`crate::tokens::signing_key_at`]).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::{token_internal, AuthError, AuthService, Policy};
use crate::alerts::AlertSink;
use crate::crypto::master_key::{is_sealed, MasterKeyError, MasterKeys, SealState};
use crate::domain::{AuditKind, Timestamp};
use crate::store::{AfterKeyRevocation, AuditEvent, KeyRevocation, Store, StoreError};
use crate::tokens::{
    signing_key_at, AccessClaims, AccessTokens, KeyStage, SigningAlg, SigningKeyRecord, TokenError,
};

/// An unknown `kid` triggers at most one key reload per this interval, so forged kids
/// cannot turn into a database query each.
const KEY_RELOAD_MIN_INTERVAL: Duration = Duration::from_secs(1);

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

/// How often each instance asks whether a key was revoked or added: a revocation is an
/// emergency, so it must not wait for the minute's reload (a read of a few short rows).
const KEY_WATCH_EVERY: Duration = super::REVOCATION_POLL_EVERY;

impl AuthService {
    /// Re-reads the signing keys: picks up a rotation and lets retired keys age out. When the
    /// key set is what we already hold, it is kept, and with it the cache of verified tokens
    /// (a forged unknown `kid` triggers a reload, and must not cost every client its cache).
    pub async fn reload_keys(&self) -> Result<(), AuthError> {
        let now = self.clock.now();
        self.last_key_reload.store(now.millis(), Ordering::Relaxed);
        let keys = self.store.find_signing_keys().await?;
        let held = self.tokens();
        let kids: Vec<(String, bool)> = keys
            .iter()
            .map(|k| (k.kid.clone(), k.revoked_at.is_some()))
            .collect();
        if !held.same_key_set(&keys, now, retired_grace(&self.policy)) || !held.knows_kids(&kids) {
            let tokens = build_key_set(&keys, &self.issuer, &self.audience, now, &self.policy)?;
            *self.tokens.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(tokens);
        }
        self.keys_loaded_at.store(now.millis(), Ordering::Relaxed);
        Ok(())
    }

    /// Reloads the keys whenever a key is revoked or added (by `tessera keys` anywhere), for
    /// as long as the process runs: a revoked key's tokens are refused, and it leaves the
    /// JWKS, within [`KEY_WATCH_EVERY`]; a key in the next stage is published as soon. Only
    /// kids are read each time; the minute's reload stays the guarantee when this fails.
    pub async fn watch_signing_keys(&self) {
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
            let held = self.tokens();
            if held.knows_kids(&kids) {
                continue;
            }
            let revoked = kids
                .iter()
                .filter(|(kid, revoked)| *revoked && !held.revoked_kids().contains(kid))
                .count();
            match self.reload_keys().await {
                Ok(()) if revoked > 0 => tracing::warn!(revoked, "signing key revoked: keys reloaded"),
                Ok(()) => tracing::info!("signing keys changed: keys reloaded"),
                Err(e) => tracing::error!(error = %e, "signing keys changed but could not be reloaded"),
            }
        }
    }

    /// The key set to sign with: refused (503) when the keys could not be read for
    /// [`KEY_SET_MAX_AGE`], after one more attempt, because another process may have retired
    /// the key we hold.
    pub(super) async fn signing_keys(&self) -> Result<Arc<AccessTokens>, AuthError> {
        let now = self.clock.now().millis();
        let age = now.saturating_sub(self.keys_loaded_at.load(Ordering::Relaxed));
        if age > KEY_SET_MAX_AGE.as_millis() as i64 {
            if let Err(e) = self.reload_keys().await {
                tracing::error!(error = %e, "signing keys could not be reloaded; not issuing tokens");
                return Err(AuthError::Store(StoreError::Unavailable(
                    "signing keys could not be reloaded".into(),
                )));
            }
        }
        Ok(self.tokens())
    }

    /// Verifies an access token; a `kid` we do not know yet makes us reload the keys (rate
    /// limited) and try once more, so a key another instance just rotated in is accepted.
    pub(super) async fn verify_access_token(
        &self,
        jwt: &str,
        allow_expired: bool,
    ) -> Result<AccessClaims, TokenError> {
        let now = self.clock.now();
        match self.tokens().verify(jwt, allow_expired, now) {
            Err(TokenError::UnknownKey) => {
                let last = self.last_key_reload.load(Ordering::Relaxed);
                if now.millis() - last < KEY_RELOAD_MIN_INTERVAL.as_millis() as i64 {
                    return Err(TokenError::UnknownKey);
                }
                if let Err(e) = self.reload_keys().await {
                    tracing::warn!(error = %e, "could not reload signing keys");
                    return Err(TokenError::UnknownKey);
                }
                self.tokens().verify(jwt, allow_expired, now)
            }
            other => other,
        }
    }
}

/// A signing key as `tessera keys list` shows it: never its private part.
#[derive(Clone, Debug, Serialize)]
pub struct KeyView {
    pub kid: String,
    pub alg: String,
    pub stage: KeyStage,
    pub created_at: Timestamp,
    pub activates_at: Timestamp,
    pub retired_at: Option<Timestamp>,
    pub revoked_at: Option<Timestamp>,
    /// Is its private key sealed with a master key (rather than stored in clear)?
    pub encrypted: bool,
}

/// What `revoke` did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Revoked {
    /// Revoked; `signing` is the key that signs from now on.
    Revoked {
        signing: Option<String>,
    },
    AlreadyRevoked,
    NotFound,
}

/// What `encrypt` did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Encrypted {
    /// Keys that were stored in clear, now sealed.
    pub sealed: usize,
    /// Keys sealed with the previous master key, now sealed with the current one.
    pub resealed: usize,
    /// Keys already sealed with the current master key.
    pub unchanged: usize,
}

/// The key operations of the command line and of start-up: each writes the key table (new
/// private keys sealed when a master key is set), audits, and raises its alert.
pub struct KeyOps<'a> {
    pub store: &'a dyn Store,
    pub alerts: &'a dyn AlertSink,
    pub master: &'a MasterKeys,
    /// Who ran the command (the operating-system user), for the audit trail.
    pub admin: Option<String>,
}

impl KeyOps<'_> {
    /// A fresh key pair, its private part as it will be stored.
    fn fresh_key(
        &self,
        alg: SigningAlg,
        now: Timestamp,
        activates_at: Timestamp,
    ) -> Result<SigningKeyRecord, AuthError> {
        let mut key = SigningKeyRecord::generate(alg, now).map_err(token_internal)?;
        key.activates_at = activates_at;
        key.private_pkcs8 = self
            .master
            .seal_for_storage(&key.kid, &key.private_pkcs8)
            .map_err(|e| at_rest(&key.kid, e))?;
        Ok(key)
    }

    /// The first key of an empty database, active at once (a no-op when another instance
    /// starting at the same moment won).
    pub async fn insert_first_key(&self, alg: SigningAlg, now: Timestamp) -> Result<(), AuthError> {
        let key = self.fresh_key(alg, now, now)?;
        Ok(self.store.insert_signing_key_if_none_active(&key).await?)
    }

    /// Adds a key that signs from `activates_at` (now: at once; later: it is in the next stage
    /// until then, published, while the current key goes on signing), audited and alerted as
    /// `signing_key_rotated` with `by` saying who. Returns the new key, private part cleared.
    pub async fn rotate(
        &self,
        alg: SigningAlg,
        now: Timestamp,
        activates_at: Timestamp,
        by: &str,
    ) -> Result<SigningKeyRecord, AuthError> {
        // With no key signing yet (a database no server has started on), there is nothing to
        // publish ahead of: no token and no cached JWKS exists. Waiting would only leave the
        // servers without a key to sign with until the activation time.
        let keys = self.store.find_signing_keys().await?;
        let activates_at = match signing_key_at(&keys, now) {
            Some(_) => activates_at.max(now),
            None => now,
        };
        let mut key = self.fresh_key(alg, now, activates_at)?;
        self.store.rotate_signing_key(&key).await?;
        let detail = serde_json::json!({
            "kid": key.kid,
            "alg": alg.as_str(),
            "by": by,
            "activates_at": key.activates_at,
        });
        self.security_event(AuditKind::SigningKeyRotated, now, detail)
            .await;
        key.private_pkcs8.clear();
        Ok(key)
    }

    /// Revokes a key: refused at once by every instance (they poll for revocations twice a
    /// second) and gone from the JWKS. If it was signing, the next key signs from now, or a
    /// fresh key of `alg` when none was waiting: an emergency skips the publish-ahead, and
    /// verifiers meet the new kid before their cached JWKS has it (they refetch on an
    /// unknown kid; Tessera's own instances reload on it).
    pub async fn revoke(
        &self,
        kid: &str,
        alg: SigningAlg,
        now: Timestamp,
        by: &str,
    ) -> Result<Revoked, AuthError> {
        let keys = self.store.find_signing_keys().await?;
        let Some(target) = keys.iter().find(|k| k.kid == kid) else {
            return Ok(Revoked::NotFound);
        };
        if target.revoked_at.is_some() {
            return Ok(Revoked::AlreadyRevoked);
        }
        let then = match plan_revocation(&keys, target, now) {
            Plan::Done(then) => then,
            Plan::Replace => AfterKeyRevocation::Replace(self.fresh_key(alg, now, now)?),
        };
        let signing = match &then {
            AfterKeyRevocation::Promote(kid) => Some(kid.clone()),
            AfterKeyRevocation::Replace(key) => Some(key.kid.clone()),
            AfterKeyRevocation::Nothing | AfterKeyRevocation::Restore { .. } => signing_key_at(&keys, now)
                .map(|k| k.kid.clone())
                .filter(|k| k != kid),
        };
        let revocation = KeyRevocation {
            kid: kid.to_owned(),
            now,
            then,
        };
        if !self.store.revoke_signing_key(&revocation).await? {
            return Ok(Revoked::AlreadyRevoked);
        }
        let detail = serde_json::json!({ "kid": kid, "by": by, "signing": signing });
        self.security_event(AuditKind::SigningKeyRevoked, now, detail)
            .await;
        Ok(Revoked::Revoked { signing })
    }

    /// Seals every private key stored in clear, and re-seals those sealed with the previous
    /// master key, under the current one. Idempotent: a second run finds nothing to do.
    pub async fn encrypt(&self, now: Timestamp, by: &str) -> Result<Encrypted, AuthError> {
        let Some(current) = &self.master.current else {
            return Err(AuthError::KeyAtRest {
                kid: "(all)".into(),
                reason: "cannot be encrypted: TESSERA_MASTER_KEY is not set".into(),
            });
        };
        let mut done = Encrypted::default();
        for key in self.store.find_signing_keys().await? {
            let (plain, state) = self
                .master
                .open(&key.kid, &key.private_pkcs8)
                .map_err(|e| at_rest(&key.kid, e))?;
            if state == SealState::Current {
                done.unchanged += 1;
                continue;
            }
            let sealed = current.seal(&key.kid, &plain).map_err(|e| at_rest(&key.kid, e))?;
            // Compare-and-set: a concurrent run that got there first is not overwritten.
            if self
                .store
                .update_signing_key_private(&key.kid, &key.private_pkcs8, &sealed)
                .await?
            {
                match state {
                    SealState::Plain => done.sealed += 1,
                    _ => done.resealed += 1,
                }
            } else {
                done.unchanged += 1;
            }
        }
        if done.sealed + done.resealed > 0 {
            let detail = serde_json::json!({
                "by": by, "sealed": done.sealed, "resealed": done.resealed,
            });
            let event = audit_event(AuditKind::SigningKeysEncrypted, now, self.with_admin(detail));
            super::write_audit(self.store, event).await;
        }
        Ok(done)
    }

    /// Every key with its stage at `now`, oldest first.
    pub async fn list(&self, now: Timestamp, policy: &Policy) -> Result<Vec<KeyView>, AuthError> {
        let keys = self.store.find_signing_keys().await?;
        let grace = retired_grace(policy);
        Ok(keys
            .iter()
            .map(|k| KeyView {
                kid: k.kid.clone(),
                alg: k.alg.clone(),
                stage: k.stage_at(&keys, now, grace),
                created_at: k.created_at,
                activates_at: k.activates_at,
                retired_at: k.retired_at,
                revoked_at: k.revoked_at,
                encrypted: is_sealed(&k.private_pkcs8),
            })
            .collect())
    }

    async fn security_event(&self, event: AuditKind, now: Timestamp, detail: serde_json::Value) {
        let detail = self.with_admin(detail);
        super::record_security_event(self.store, self.alerts, audit_event(event, now, detail)).await;
    }

    fn with_admin(&self, mut detail: serde_json::Value) -> serde_json::Value {
        if let (Some(admin), Some(fields)) = (&self.admin, detail.as_object_mut()) {
            fields.insert("admin".into(), admin.clone().into());
        }
        detail
    }
}

fn audit_event(event: AuditKind, at: Timestamp, detail: serde_json::Value) -> AuditEvent {
    AuditEvent {
        id: uuid::Uuid::now_v7(),
        event,
        at,
        user_id: None,
        session_id: None,
        ip: None,
        user_agent: None,
        detail: Some(detail.to_string()),
    }
}

/// What a revocation must do besides revoking, before a fresh key is made for it.
#[derive(Debug)]
enum Plan {
    Done(AfterKeyRevocation),
    /// A fresh key must sign from now.
    Replace,
}

/// Keeps the service signing through a revocation of `target` at `now`.
fn plan_revocation(keys: &[SigningKeyRecord], target: &SigningKeyRecord, now: Timestamp) -> Plan {
    let live = || {
        keys.iter()
            .filter(|k| k.kid != target.kid && k.revoked_at.is_none())
    };
    if signing_key_at(keys, now).is_some_and(|k| k.kid == target.kid) {
        // The newest key waiting in the next stage takes over now; without one, a fresh key.
        return match live()
            .filter(|k| now < k.activates_at && k.retired_at.is_none_or(|t| now < t))
            .max_by_key(|k| (k.activates_at, k.created_at))
        {
            Some(next) => Plan::Done(AfterKeyRevocation::Promote(next.kid.clone())),
            None => Plan::Replace,
        };
    }
    if now < target.activates_at {
        // A key in the next stage: the key it was to replace (retiring when it activates)
        // takes over its schedule.
        if let Some(predecessor) = live().find(|k| k.retired_at == Some(target.activates_at)) {
            return Plan::Done(AfterKeyRevocation::Restore {
                kid: predecessor.kid.clone(),
                active: target.active,
                retired_at: target.retired_at,
            });
        }
        if target.active {
            return Plan::Replace;
        }
    }
    Plan::Done(AfterKeyRevocation::Nothing)
}

/// Opens the sealed private keys of the records a key set at `now` loads (the others, such
/// as long-expired keys, are never used and need not open). `tessera check` uses it too.
pub fn open_key_set_records(
    keys: &[SigningKeyRecord],
    now: Timestamp,
    policy: &Policy,
) -> Result<Vec<SigningKeyRecord>, AuthError> {
    let grace = retired_grace(policy);
    keys.iter()
        .map(|k| {
            let mut k = k.clone();
            if k.in_key_set_at(now, grace) {
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

fn at_rest(kid: &str, e: MasterKeyError) -> AuthError {
    AuthError::KeyAtRest {
        kid: kid.to_owned(),
        reason: e.to_string(),
    }
}

/// Says at start what an operator should know about the keys at rest: stored in clear (no
/// master key), or some still in clear although a master key is set.
pub(super) fn warn_about_keys_at_rest(keys: &[SigningKeyRecord], policy: &Policy) {
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
    if policy.key_publish_ahead < MIN_KEY_PUBLISH_AHEAD {
        tracing::warn!(
            publish_ahead_secs = policy.key_publish_ahead.as_secs(),
            minimum_secs = MIN_KEY_PUBLISH_AHEAD.as_secs(),
            "TESSERA_KEY_PUBLISH_AHEAD is shorter than the JWKS max-age plus the key reload interval: \
             verifiers caching the JWKS may meet a rotated key before they know it"
        );
    }
}

/// The key set, its sealed private keys opened with the master keys.
pub(super) fn build_key_set(
    keys: &[SigningKeyRecord],
    issuer: &str,
    audience: &str,
    now: Timestamp,
    policy: &Policy,
) -> Result<AccessTokens, AuthError> {
    let opened = open_key_set_records(keys, now, policy)?;
    AccessTokens::new(&opened, issuer, audience, now, retired_grace(policy)).map_err(token_internal)
}

/// How long a retired key keeps verifying: the longest a token it signed can live, plus the
/// longest an instance may go on signing with it unawares ([`KEY_SET_MAX_AGE`]), plus a minute.
pub fn retired_grace(policy: &Policy) -> Duration {
    policy.access_ttl + KEY_SET_MAX_AGE + Duration::from_secs(60)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::NoAlerts;
    use crate::config::Config;
    use crate::domain::SystemClock;

    pub(super) async fn service(dir: &tempfile::TempDir) -> AuthService {
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = crate::store::connect(&url, 2).await.unwrap();
        let policy = crate::startup::policy(&Config::default());
        AuthService::start(
            store,
            Arc::new(SystemClock),
            Arc::new(NoAlerts),
            policy,
            "iss",
            "aud",
        )
        .await
        .unwrap()
    }

    #[tokio::test]
    pub(super) async fn a_forged_unknown_kid_does_not_throw_away_the_verified_token_cache() {
        let dir = tempfile::tempdir().unwrap();
        let service = service(&dir).await;
        let before = service.tokens();
        // A token with a kid nobody has: it makes the service reload its keys.
        let header = base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            br#"{"alg":"EdDSA","typ":"at+jwt","kid":"forged"}"#,
        );
        let forged = format!("{header}.e30.c2ln");
        assert!(matches!(
            service.verify_access_token(&forged, false).await,
            Err(TokenError::UnknownKey)
        ));
        assert!(
            service.last_key_reload.load(Ordering::Relaxed) > 0,
            "a reload happened"
        );
        assert!(
            Arc::ptr_eq(&before, &service.tokens()),
            "the same key set, and with it its cache, is kept"
        );
        // A real change of keys is still picked up.
        let now = service.clock.now();
        KeyOps {
            store: service.store.as_ref(),
            alerts: &NoAlerts,
            master: &MasterKeys::default(),
            admin: None,
        }
        .rotate(SigningAlg::EdDSA, now, now, "test")
        .await
        .unwrap();
        service.reload_keys().await.unwrap();
        assert!(!Arc::ptr_eq(&before, &service.tokens()));
    }

    fn key(created: i64) -> SigningKeyRecord {
        SigningKeyRecord::generate_ed25519(Timestamp(created)).unwrap()
    }

    /// At `now`, `old` signs and is to retire when `next`, already published, activates.
    fn signing_and_next() -> (Timestamp, SigningKeyRecord, SigningKeyRecord) {
        let mut old = key(1_000);
        let mut next = key(900_000);
        old.active = false;
        old.retired_at = Some(Timestamp(2_000_000));
        next.activates_at = Timestamp(2_000_000);
        (Timestamp(1_000_000), old, next)
    }

    #[test]
    fn revoking_the_signing_key_promotes_the_next_one_or_makes_a_fresh_one() {
        let (now, old, next) = signing_and_next();
        let keys = [old.clone(), next.clone()];
        assert!(matches!(
            plan_revocation(&keys, &old, now),
            Plan::Done(AfterKeyRevocation::Promote(kid)) if kid == next.kid
        ));
        // Nothing waiting: a fresh key.
        let alone = key(1_000);
        assert!(matches!(
            plan_revocation(std::slice::from_ref(&alone), &alone, now),
            Plan::Replace
        ));
    }

    #[test]
    fn revoking_a_next_key_hands_its_schedule_back_to_the_key_it_was_to_replace() {
        let (now, old, next) = signing_and_next();
        let keys = [old.clone(), next.clone()];
        assert!(matches!(
            plan_revocation(&keys, &next, now),
            Plan::Done(AfterKeyRevocation::Restore { kid, active: true, retired_at: None }) if kid == old.kid
        ));
        // A retired key: nothing else changes.
        let mut retired = key(500);
        retired.active = false;
        retired.retired_at = Some(Timestamp(1_000));
        let keys = [retired.clone(), old, next];
        assert!(matches!(
            plan_revocation(&keys, &retired, now),
            Plan::Done(AfterKeyRevocation::Nothing)
        ));
    }
}
