//! Changing a password: the signed-in user proves the current one, and every other session
//! ends (whoever else got in, with the old password or a stolen token, is out). The caller's
//! own session goes on, with a fresh refresh token that its predecessor cannot replay.

use super::events::revoked_by;
use super::{AuthContext, AuthError, AuthService, ClientInfo, TokenGrant};
use crate::crypto::RefreshToken;
use crate::domain::{AuditKind, FieldError, Password};
use crate::store::Rotation;

impl AuthService {
    pub async fn change_password(
        &self,
        ctx: &AuthContext,
        current: &str,
        new: &str,
        client: &ClientInfo,
    ) -> Result<TokenGrant, AuthError> {
        let mut errors = Vec::new();
        if current.is_empty() {
            errors.push(FieldError::new("current_password", "must not be empty"));
        } else if current.chars().count() > Password::MAX_CHARS {
            errors.push(FieldError::new(
                "current_password",
                "must be at most 1024 characters",
            ));
        }
        let new = match Password::parse(new) {
            Ok(p) => Some(p),
            Err(e) => {
                errors.push(FieldError::new("new_password", e.message));
                None
            }
        };
        let Some(new) = new.filter(|_| errors.is_empty()) else {
            return Err(AuthError::Validation(errors));
        };
        self.require_recent_sign_in(ctx)?;
        let keys = self.keys.for_signing().await?;
        let (session, user) = self
            .store
            .find_session_with_user(ctx.session_id())
            .await?
            .ok_or(AuthError::SessionRevoked)?;
        // Guessing through this endpoint (with a stolen access token) counts against the
        // account like guessing at login, and a locked account refuses it too. The caller
        // holds a live session, but here the session itself is what may be stolen, so it
        // gets no budget of its own.
        let attempt = self.reserve_attempt(&user.email, None, None).await?;

        let matches = self
            .hashing
            .verify_in_turn(current.to_owned(), user.password_hash.clone())
            .await?;
        if !matches {
            let failure = self.events.event(
                AuditKind::PasswordChangeFailed,
                Some(user.id),
                Some(session.id),
                client,
                None,
            );
            if let Some(attempt) = attempt {
                attempt.failed(self.events.alerts(), &failure, failure.at).await;
            }
            self.events.write(failure).await;
            return Err(AuthError::InvalidCredentials);
        }
        if let Some(attempt) = attempt {
            attempt.succeeded().await;
        }
        let hash = self
            .hashing
            .hash_in_turn(move |hasher| hasher.hash(&new))
            .await??;
        let now = self.clock.now();
        // Only over the hash just verified: a change racing this one (or an admin's) wins,
        // and this caller is told its current password is no longer right. The same step
        // moves the credential epoch and ends every other session, so a login that verified
        // the old password leaves no session behind, whenever it finishes.
        let Some(others) = self
            .store
            .change_password_hash(
                user.id,
                &user.password_hash,
                &hash,
                Some(session.id),
                now,
                "password_changed",
            )
            .await?
        else {
            return Err(AuthError::InvalidCredentials);
        };
        self.revocations.learn_own().await;
        // A fresh refresh token for this session, with nothing sealed: the token it replaces
        // is not forgiven as a retry, so whoever else holds it gets `refresh_token_reused`
        // (and the session is revoked) rather than this new token.
        let generation = session
            .generation
            .checked_add(1)
            .ok_or(AuthError::InvalidRefreshToken)?;
        let next = RefreshToken::issue(&self.rng, session.id, generation)?;
        let refresh_expires_at = now.plus(self.policy.refresh_ttl).min(session.absolute_expires_at);
        let rotation = Rotation {
            session_id: session.id,
            expected_generation: session.generation,
            new_hash: next.hash(),
            sealed_new: None,
            now,
            refresh_expires_at,
        };
        if !self.store.rotate(&rotation).await? {
            // Revoked, ended or refreshed meanwhile: the password is changed; this session's
            // tokens are whatever that other request made of them.
            return Err(AuthError::SessionRevoked);
        }
        let mut rotated = session;
        rotated.generation = generation;
        rotated.last_used_at = now;
        rotated.rotated_at = Some(now);
        rotated.refresh_expires_at = refresh_expires_at;
        rotated.sealed_current = None;
        self.events
            .security(
                AuditKind::PasswordChanged,
                Some(user.id),
                Some(rotated.id),
                client,
                Some(format!("{others} other session(s) revoked")),
            )
            .await;
        if others > 0 {
            // The other sessions: the subject is the account, not the one kept.
            self.events
                .alert_sessions_revoked(
                    user.id,
                    None,
                    client,
                    revoked_by("password_change", "password_changed", others),
                )
                .await;
        }
        // The holder is told (whoever changed it may not be the holder).
        self.queue_notice(&user.email, crate::mail::MailKind::PasswordChanged)
            .await;
        self.grant(&keys, &user, &rotated, next, now)
    }
}
