//! Signing keys as the flows use them: reloaded when another process rotates them (and on
//! an unknown `kid`, rate limited), refused for signing when they could not be read for too
//! long, and the `rotate-key` command.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::{token_internal, AuthError, AuthService, Policy};
use crate::alerts::AlertSink;
use crate::domain::Timestamp;
use crate::store::{AuditEvent, Store, StoreError};
use crate::tokens::{AccessClaims, AccessTokens, SigningAlg, SigningKeyRecord, TokenError};

/// An unknown `kid` triggers at most one key reload per this interval, so forged kids
/// cannot turn into a database query each.
const KEY_RELOAD_MIN_INTERVAL: Duration = Duration::from_secs(1);

/// Signing keys are reloaded every minute. An instance that has not managed to read them for
/// this long may be signing with a key another process has retired: it stops issuing tokens
/// (503) until a reload succeeds. Retired keys keep verifying this much longer than a token
/// they signed can live, so tokens issued in the meantime stay valid on every instance.
pub const KEY_SET_MAX_AGE: Duration = Duration::from_secs(180);

impl AuthService {
    /// Re-reads the signing keys: picks up a rotation and lets retired keys age out. When the
    /// key set is what we already hold, it is kept, and with it the cache of verified tokens
    /// (a forged unknown `kid` triggers a reload, and must not cost every client its cache).
    pub async fn reload_keys(&self) -> Result<(), AuthError> {
        let now = self.clock.now();
        self.last_key_reload.store(now.millis(), Ordering::Relaxed);
        let keys = self.store.find_signing_keys().await?;
        if !self
            .tokens()
            .same_key_set(&keys, now, retired_grace(&self.policy))
        {
            let tokens = build_key_set(&keys, &self.issuer, &self.audience, now, &self.policy)?;
            *self.tokens.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(tokens);
        }
        self.keys_loaded_at.store(now.millis(), Ordering::Relaxed);
        Ok(())
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

/// Retires the active signing key and makes a new one active (the `rotate-key` command, and
/// a start with a new algorithm), audited and alerted as `signing_key_rotated` with `by` saying
/// which. Running instances pick the new key up on their next reload or on first sight of its
/// `kid`.
pub async fn rotate_signing_key(
    store: &dyn Store,
    alerts: &dyn AlertSink,
    alg: SigningAlg,
    now: Timestamp,
    by: &str,
) -> Result<String, AuthError> {
    let key = SigningKeyRecord::generate(alg, now).map_err(token_internal)?;
    store.rotate_signing_key(&key, now).await?;
    let detail = serde_json::json!({ "kid": key.kid, "alg": alg.as_str(), "by": by });
    let event = AuditEvent {
        id: uuid::Uuid::now_v7(),
        event: "signing_key_rotated",
        at: now,
        user_id: None,
        session_id: None,
        ip: None,
        user_agent: None,
        detail: Some(detail.to_string()),
    };
    super::record_security_event(store, alerts, event).await;
    Ok(key.kid)
}

/// The key set: retired keys keep verifying for as long as a token they signed can live
/// (plus a minute for instances whose clocks or reloads lag).
pub(super) fn build_key_set(
    keys: &[SigningKeyRecord],
    issuer: &str,
    audience: &str,
    now: Timestamp,
    policy: &Policy,
) -> Result<AccessTokens, AuthError> {
    AccessTokens::new(keys, issuer, audience, now, retired_grace(policy)).map_err(token_internal)
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
        let policy = Policy::from_config(&Config::default());
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
        rotate_signing_key(
            service.store.as_ref(),
            &NoAlerts,
            SigningAlg::EdDSA,
            service.clock.now(),
            "test",
        )
        .await
        .unwrap();
        service.reload_keys().await.unwrap();
        assert!(!Arc::ptr_eq(&before, &service.tokens()));
    }
}
