//! Registration and login: the two flows that check or set a password.

use std::sync::Arc;

use super::{write_audit, AuthError, AuthService, ClientInfo, TokenGrant, Transport, UserView};
use crate::crypto::{self, RefreshToken};
use crate::domain::{Email, FieldError, Password, SessionId, UserId};
use crate::store::{AuditEvent, SessionRecord, StoreError, UserRecord};

impl AuthService {
    pub async fn register(
        &self,
        email: &str,
        password: &str,
        client: &ClientInfo,
    ) -> Result<UserView, AuthError> {
        let email = Email::parse(email);
        let password = Password::parse(password);
        let (email, password) = match (email, password) {
            (Ok(e), Ok(p)) => (e, p),
            (e, p) => {
                let errors = [e.err(), p.err()].into_iter().flatten().collect();
                return Err(AuthError::Validation(errors));
            }
        };
        let permit = self.hashing_permit().await?;
        let hash = self
            .spawn_hash(permit, move |hasher| hasher.hash(&password))
            .await
            .map_err(|e| AuthError::Internal(e.to_string()))??;
        let user = UserRecord {
            id: UserId::new(),
            email,
            password_hash: hash,
            roles: Vec::new(),
            created_at: self.clock.now(),
        };
        match self.store.insert_user(&user).await {
            Ok(()) => {}
            Err(StoreError::Conflict(_)) => return Err(AuthError::EmailTaken),
            Err(e) => return Err(e.into()),
        }
        self.audit("user_registered", Some(user.id), None, client, None)
            .await;
        Ok(UserView::from(&user))
    }

    pub async fn login(
        &self,
        email: &str,
        password: &str,
        transport: Transport,
        client: &ClientInfo,
    ) -> Result<TokenGrant, AuthError> {
        let mut errors = Vec::new();
        if email.trim().is_empty() {
            errors.push(FieldError::new("email", "must not be empty"));
        }
        if password.is_empty() {
            errors.push(FieldError::new("password", "must not be empty"));
        } else if password.chars().count() > Password::MAX_CHARS {
            errors.push(FieldError::new("password", "must be at most 1024 characters"));
        }
        if !errors.is_empty() {
            return Err(AuthError::Validation(errors));
        }
        // Anything that is not a valid address cannot belong to a user: same answer as a
        // wrong password, after the same amount of work.
        let user = match Email::parse(email) {
            Ok(e) => self.store.find_user_by_email(&e).await?,
            Err(_) => None,
        };
        let stored = user
            .as_ref()
            .map_or_else(|| self.dummy_hash.clone(), |u| u.password_hash.clone());
        let password = password.to_owned();
        let permit = self.hashing_permit().await?;
        // A hash imported from another system (bcrypt, other argon2 parameters) that verifies
        // is replaced by our own, computed here while the password is at hand; the dummy hash
        // never needs it, so an unknown email costs one hash, like a wrong password.
        let hashing = self.spawn_hash(permit, move |hasher| {
            let matches = hasher.verify(&password, &stored);
            let upgrade = (matches && hasher.needs_upgrade(&stored))
                .then(|| hasher.rehash_verified(&password).ok().map(|new| (stored, new)))
                .flatten();
            (matches, upgrade)
        });
        // Once the hash has started, it and the audit record of a failure run to the end on a
        // task of their own, even if this request is dropped because the client hung up: the
        // attempt was made and must be on record. (A client that leaves while still queued for
        // a permit made no attempt: nothing was checked.)
        let failure = self.audit_event("login_failed", user.as_ref().map(|u| u.id), None, client, None);
        let (store, clock, known) = (Arc::clone(&self.store), Arc::clone(&self.clock), user.is_some());
        let (matches, upgrade) = tokio::spawn(async move {
            let (matches, upgrade) = hashing.await.map_err(|e| AuthError::Internal(e.to_string()))?;
            if !(matches && known) {
                write_audit(
                    store.as_ref(),
                    AuditEvent {
                        at: clock.now(),
                        ..failure
                    },
                )
                .await;
            }
            Ok::<_, AuthError>((matches, upgrade))
        })
        .await
        .map_err(|e| AuthError::Internal(e.to_string()))??;
        let user = match user {
            Some(u) if matches => u,
            _ => return Err(AuthError::InvalidCredentials),
        };

        // Checked before anything is written: no session is created that gets no tokens.
        let keys = self.signing_keys().await?;
        let now = self.clock.now();
        let absolute = now.plus(self.policy.session_ttl);
        let session = SessionRecord {
            id: SessionId::new(),
            user_id: user.id,
            created_at: now,
            last_used_at: now,
            absolute_expires_at: absolute,
            refresh_expires_at: now.plus(self.policy.refresh_ttl).min(absolute),
            revoked_at: None,
            revoked_reason: None,
            user_agent: client.user_agent.clone(),
            ip: client.ip.clone(),
            generation: 0,
            rotated_at: None,
            sealed_current: None,
            csrf_token: match transport {
                Transport::Body => None,
                Transport::Cookie => Some(crypto::random_token(&self.rng, 32)?),
            },
        };
        let refresh = RefreshToken::issue(&self.rng, session.id, 0)?;
        if !self.store.insert_session(&session, &refresh.hash()).await? {
            // Disabled (`tessera users disable`): the same answer as a wrong password, after
            // the same work, so disabling an account tells nobody anything about it, not even
            // someone who holds its password.
            self.audit(
                "login_failed",
                Some(user.id),
                None,
                client,
                Some("account disabled".into()),
            )
            .await;
            return Err(AuthError::InvalidCredentials);
        }
        let mut detail = None;
        if let Some((old, new)) = upgrade {
            // Only if unchanged: a password set meanwhile is not overwritten. A failure
            // leaves the imported hash, which the next login upgrades.
            match self.store.upgrade_password_hash(user.id, &old, &new).await {
                Ok(true) => detail = Some("password hash upgraded to argon2id".to_owned()),
                Ok(false) => {}
                Err(e) => tracing::warn!(user = %user.id, error = %e, "could not upgrade a password hash"),
            }
        }
        let evicted = self
            .store
            .revoke_sessions_over_limit(user.id, self.policy.max_sessions, now)
            .await?;
        if evicted > 0 {
            self.learn_own_revocations().await;
            let detail = format!("{evicted} least recently used session(s) revoked: session limit");
            self.audit("session_evicted", Some(user.id), None, client, Some(detail))
                .await;
        }
        self.audit("login_succeeded", Some(user.id), Some(session.id), client, detail)
            .await;
        self.grant(&keys, &user, &session, refresh, now)
    }
}
