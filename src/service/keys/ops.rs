//! The key operations of start-up and the command line (`tessera keys list`, `rotate`,
//! `revoke`, `encrypt`): each writes the key table (new private keys sealed when a master key
//! is set), audits, and raises its alert.

use serde::Serialize;

use super::{at_rest, KeyPolicy};
use crate::alerts::AlertSink;
use crate::crypto::master_key::{is_sealed, MasterKey, MasterKeys, SealState, TOTP_AAD_PREFIX};
use crate::domain::{AuditKind, Timestamp};
use crate::service::error::{token_internal, AuthError};
use crate::store::{AfterKeyRevocation, AuditEvent, KeyRevocation, Store};
use crate::tokens::{signing_key_at, KeyStage, SigningAlg, SigningKeyRecord};

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
    /// TOTP secrets sealed or re-sealed under the current master key (they are sealed with
    /// it like signing keys, so changing it must re-seal them too).
    pub totp_secrets: usize,
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
        done.totp_secrets = self.seal_totp_secrets(current).await?;
        if done.sealed + done.resealed + done.totp_secrets > 0 {
            let detail = serde_json::json!({
                "by": by, "sealed": done.sealed, "resealed": done.resealed,
                "totp_secrets": done.totp_secrets,
            });
            let event = audit_event(AuditKind::SigningKeysEncrypted, now, self.with_admin(detail));
            crate::service::events::write_audit(self.store, event).await;
        }
        Ok(done)
    }

    /// Seals every TOTP secret stored in clear or under the previous master key with
    /// `current`; how many it wrote.
    async fn seal_totp_secrets(&self, current: &MasterKey) -> Result<usize, AuthError> {
        const PAGE: u32 = 500;
        let mut written = 0;
        let mut after = None;
        loop {
            let page = self.store.list_totp_secrets(after, PAGE).await?;
            for (user, stored) in &page {
                let id = user.to_string();
                let at_rest_totp = |e| AuthError::KeyAtRest {
                    kid: format!("totp secret of user {id}"),
                    reason: format!("{e}"),
                };
                let (plain, state) = self
                    .master
                    .open_for(TOTP_AAD_PREFIX, &id, stored)
                    .map_err(at_rest_totp)?;
                if state == SealState::Current {
                    continue;
                }
                let sealed = current
                    .seal_for(TOTP_AAD_PREFIX, &id, &plain)
                    .map_err(at_rest_totp)?;
                // Compare-and-set: a secret replaced meanwhile (a new enrolment) is kept.
                if self.store.update_totp_secret(*user, stored, &sealed).await? {
                    written += 1;
                }
            }
            match page.last() {
                Some((user, _)) if page.len() == PAGE as usize => after = Some(*user),
                _ => return Ok(written),
            }
        }
    }

    /// Every key with its stage at `now`, oldest first.
    pub async fn list(&self, now: Timestamp, policy: &KeyPolicy) -> Result<Vec<KeyView>, AuthError> {
        let keys = self.store.find_signing_keys().await?;
        let grace = policy.retired_grace;
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
        crate::service::events::record_security_event(
            self.store,
            self.alerts,
            audit_event(event, now, detail),
        )
        .await;
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

#[cfg(test)]
mod tests {
    use super::*;

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
