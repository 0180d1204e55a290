//! Refresh: rotation of the presented token (one store call in the common case), the grace
//! replay, and reuse detection, wherever a refresh token is presented (refresh or logout).

use super::events::revoked_by;
use super::rotation::{self, RefreshDecision};
use super::{check_csrf, AuthError, AuthService, ClientInfo, LogoutOutcome, TokenGrant};
use crate::crypto::{RefreshToken, RefreshTokenKey};
use crate::domain::{AuditKind, SessionId, Timestamp};
use crate::store::{CurrentRotation, FoundRefreshToken, Rotation, SessionRecord};

impl AuthService {
    /// Rotates a refresh token. `csrf` is the CSRF token that came with a refresh token taken
    /// from a cookie; it must match the one bound to the session.
    pub async fn refresh(
        &self,
        presented: &str,
        csrf: Option<&str>,
        client: &ClientInfo,
    ) -> Result<TokenGrant, AuthError> {
        let presented = RefreshToken::parse(presented).ok_or(AuthError::InvalidRefreshToken)?;
        let key = presented.key();

        // The common case, in one store call: the presented token is current, its session
        // live. Only when that does not hold do we read and decide. The keys are checked
        // first, once for every path below: a rotation whose tokens cannot be signed must not
        // happen. (A legacy token does not name its session, so it always takes the slow
        // path; its session's next token is chained.)
        let keys = self.keys.for_signing().await?;
        if let RefreshTokenKey::Chained {
            session_id,
            generation,
            hash,
        } = key
        {
            // No session reaches the last generation, so a token naming it is not ours.
            let successor = generation.checked_add(1).ok_or(AuthError::InvalidRefreshToken)?;
            let now = self.clock.now();
            let next = RefreshToken::issue(&self.rng, session_id, successor)?;
            let rotation = CurrentRotation {
                session_id,
                generation,
                presented: hash,
                new_hash: next.hash(),
                sealed_new: presented.seal_successor(&next, &self.rng)?,
                now,
                refresh_expires_at: now.plus(self.policy.refresh_ttl),
                csrf: csrf.map(str::to_owned),
            };
            if let Some((session, user)) = self.store.rotate_current(&rotation).await? {
                return self.grant(&keys, &user, &session, next, now);
            }
        }

        let FoundRefreshToken {
            generation,
            mut session,
            user,
        } = self
            .store
            .find_refresh_token(&key)
            .await?
            .ok_or(AuthError::InvalidRefreshToken)?;
        check_csrf(&session, csrf)?;

        // Losing a rotation race, or a replay decided on the first read, sends us round again
        // with the session re-read; three rounds suffice. The bound is a guard.
        let mut reread = false;
        for _ in 0..4 {
            let now = self.clock.now();
            match rotation::decide(&session, generation, now, self.policy.reuse_grace) {
                RefreshDecision::Revoked => return Err(AuthError::SessionRevoked),
                RefreshDecision::Expired => return Err(AuthError::RefreshTokenExpired),
                RefreshDecision::Reuse => return Err(self.on_reuse(&session, now, client).await),
                RefreshDecision::ReplayCurrent if !reread => {
                    // A replay writes nothing, so confirm it on a fresh read: the chain may
                    // have moved on, or the session been revoked, since the token lookup.
                    session = self.reread(session.id).await?;
                    reread = true;
                }
                RefreshDecision::ReplayCurrent => {
                    let sealed = session.sealed_current.as_deref().unwrap_or_default();
                    let current = presented
                        .open_successor(sealed)
                        .ok_or_else(|| AuthError::Internal("sealed successor does not open".into()))?;
                    return self.grant(&keys, &user, &session, current, now);
                }
                RefreshDecision::Rotate => {
                    let successor = generation.checked_add(1).ok_or(AuthError::InvalidRefreshToken)?;
                    let next = RefreshToken::issue(&self.rng, session.id, successor)?;
                    let refresh_expires_at =
                        now.plus(self.policy.refresh_ttl).min(session.absolute_expires_at);
                    let rotation = Rotation {
                        session_id: session.id,
                        expected_generation: generation,
                        new_hash: next.hash(),
                        sealed_new: Some(presented.seal_successor(&next, &self.rng)?),
                        now,
                        refresh_expires_at,
                    };
                    if self.store.rotate(&rotation).await? {
                        session.generation = successor;
                        session.last_used_at = now;
                        session.rotated_at = Some(now);
                        session.refresh_expires_at = refresh_expires_at;
                        return self.grant(&keys, &user, &session, next, now);
                    }
                    // Someone else rotated (or revoked) first: decide again on fresh state.
                    session = self.reread(session.id).await?;
                    reread = true;
                }
            }
        }
        Err(AuthError::Internal("refresh did not settle".into()))
    }

    /// The session as it is now (gone if the sweeper just deleted it).
    pub(super) async fn reread(&self, id: SessionId) -> Result<SessionRecord, AuthError> {
        self.store
            .find_session(id)
            .await?
            .ok_or(AuthError::InvalidRefreshToken)
    }

    /// Theft suspected: revoke the whole session, then record and report it (once, even when
    /// several stolen copies arrive together).
    pub(super) async fn on_reuse(
        &self,
        session: &SessionRecord,
        now: Timestamp,
        client: &ClientInfo,
    ) -> AuthError {
        let revoked_now = match self
            .store
            .revoke_session(session.id, now, "refresh_token_reused")
            .await
        {
            Ok(revoked_now) => revoked_now,
            Err(e) => return e.into(),
        };
        self.revocations.learnt(session.id);
        if revoked_now {
            tracing::warn!(session = %session.id, user = %session.user_id, ip = ?client.ip,
                "refresh token reuse detected; session revoked");
            self.events
                .security(
                    AuditKind::RefreshTokenReused,
                    Some(session.user_id),
                    Some(session.id),
                    client,
                    None,
                )
                .await;
            // Audited above as the reuse itself; the session's end is an alert of its own
            // for subscribers of `session_revoked`.
            self.events
                .alert_sessions_revoked(
                    session.user_id,
                    Some(session.id),
                    client,
                    revoked_by("reuse_detection", "refresh_token_reused", 1),
                )
                .await;
        }
        AuthError::RefreshTokenReused
    }

    /// Revokes the session a refresh token belongs to. Unknown tokens are fine: logout is idempotent.
    pub async fn logout_with_refresh_token(
        &self,
        presented: &str,
        csrf: Option<&str>,
        client: &ClientInfo,
    ) -> Result<LogoutOutcome, AuthError> {
        let Some(token) = RefreshToken::parse(presented) else {
            return Ok(LogoutOutcome::Done);
        };
        let Some(found) = self.store.find_refresh_token(&token.key()).await? else {
            return Ok(LogoutOutcome::Done);
        };
        check_csrf(&found.session, csrf)?;
        let now = self.clock.now();
        // A rotated-out token that the grace rule does not forgive is a stolen copy, whatever
        // endpoint it is presented at: record and report it as reuse, not as a plain logout.
        // The answer stays 204 (logout is idempotent and reveals nothing).
        match rotation::decide(&found.session, found.generation, now, self.policy.reuse_grace) {
            RefreshDecision::Revoked => Ok(LogoutOutcome::Done),
            RefreshDecision::Reuse => match self.on_reuse(&found.session, now, client).await {
                AuthError::RefreshTokenReused => Ok(LogoutOutcome::ReuseDetected),
                other => Err(other),
            },
            RefreshDecision::Rotate | RefreshDecision::ReplayCurrent | RefreshDecision::Expired => {
                self.end_session(&found.session, "logout", client).await?;
                Ok(LogoutOutcome::Done)
            }
        }
    }
}
