//! Sessions after login: authenticating access tokens against session liveness, listing,
//! revoking one or all, and logout by access token.

use std::sync::Arc;

use super::events::revoked_by;
use super::liveness::{Known, SessionSnapshot};
use super::{check_csrf, AuthContext, AuthError, AuthService, ClientInfo, LogoutScope, SessionView};
use crate::domain::{AuditKind, SessionCheck, SessionId, Timestamp};
use crate::store::SessionRecord;
use crate::tokens::{AccessClaims, TokenError};

impl AuthService {
    /// Verifies an access token and checks its session is still live: the gate of every
    /// authenticated endpoint of this server. Liveness comes from memory when it can be
    /// trusted (see [`super::liveness`]), else from the database.
    pub async fn authenticate(&self, jwt: &str) -> Result<AuthContext, AuthError> {
        let claims = self.keys.verify(jwt, false).await.map_err(|e| match e {
            TokenError::Expired => AuthError::TokenExpired,
            _ => AuthError::InvalidToken,
        })?;
        let now = self.clock.now();
        let id = claims.session_id();
        if self.policy.session_check == SessionCheck::Cached && self.revocations.live().in_sync() {
            match self.revocations.live().get(id) {
                Some(Known::Revoked) => return Err(AuthError::SessionRevoked),
                Some(Known::Live(session)) if now < session.expires_at() => {
                    return check_session(claims, session, now);
                }
                // Unknown, or apparently ended: a rotation elsewhere may have extended it.
                _ => {}
            }
        }
        let (session, user) = self
            .store
            .find_session_with_user(id)
            .await?
            .ok_or(AuthError::InvalidToken)?;
        let session = Arc::new(SessionSnapshot::new(&session, &user));
        self.revocations.live().remember(Arc::clone(&session));
        check_session(claims, session, now)
    }

    /// Revokes the session of an access token; an invalid token is a no-op, and an expired but
    /// authentic one still ends its session (the user asked to log out).
    pub async fn logout_with_access_token(
        &self,
        jwt: &str,
        csrf: Option<&str>,
        client: &ClientInfo,
    ) -> Result<(), AuthError> {
        let Ok(claims) = self.keys.verify(jwt, true).await else {
            return Ok(());
        };
        if let Some(session) = self.store.find_session(claims.session_id()).await? {
            if session.user_id == claims.user_id() {
                check_csrf(&session, csrf)?;
                self.end_session(&session, "logout", client).await?;
            }
        }
        Ok(())
    }

    pub(super) async fn end_session(
        &self,
        session: &SessionRecord,
        reason: &str,
        client: &ClientInfo,
    ) -> Result<(), AuthError> {
        let now = self.clock.now();
        let revoked = self.store.revoke_session(session.id, now, reason).await?;
        self.revocations.learnt(session.id);
        if revoked {
            self.events
                .audit(
                    AuditKind::SessionRevoked,
                    Some(session.user_id),
                    Some(session.id),
                    client,
                    Some(reason.into()),
                )
                .await;
            // A logout is the session ending itself: no alert. Revoking a session from
            // another one (`DELETE /v1/auth/sessions/{id}`) is worth telling the user about.
            if reason != "logout" {
                self.events
                    .alert_sessions_revoked(
                        session.user_id,
                        Some(session.id),
                        client,
                        revoked_by("user", reason, 1),
                    )
                    .await;
            }
        }
        Ok(())
    }

    pub async fn logout_all(
        &self,
        ctx: &AuthContext,
        scope: LogoutScope,
        client: &ClientInfo,
    ) -> Result<u64, AuthError> {
        let keep = match scope {
            LogoutScope::All => None,
            LogoutScope::Others => Some(ctx.session_id()),
        };
        let reason = match scope {
            LogoutScope::All => AuditKind::LogoutAll,
            LogoutScope::Others => AuditKind::LogoutOthers,
        };
        let n = self
            .store
            .revoke_user_sessions(ctx.user_id(), keep, self.clock.now(), reason.as_str())
            .await?;
        self.revocations.learn_own().await;
        self.events
            .audit(
                reason,
                Some(ctx.user_id()),
                Some(ctx.session_id()),
                client,
                Some(format!("{n} session(s) revoked")),
            )
            .await;
        if n > 0 {
            // Other sessions (or all): the subject is the account, not one session.
            self.events
                .alert_sessions_revoked(
                    ctx.user_id(),
                    None,
                    client,
                    revoked_by("user", reason.as_str(), n),
                )
                .await;
        }
        Ok(n)
    }

    /// The caller's live sessions, most recently used first.
    pub async fn list_sessions(&self, ctx: &AuthContext) -> Result<Vec<SessionView>, AuthError> {
        let sessions = self
            .store
            .find_live_sessions(ctx.user_id(), self.clock.now())
            .await?;
        Ok(sessions.iter().map(SessionView::from).collect())
    }

    /// Revokes one of the caller's own sessions; anyone else's (or no such id) is "not found".
    pub async fn revoke_session(
        &self,
        ctx: &AuthContext,
        id: &str,
        client: &ClientInfo,
    ) -> Result<(), AuthError> {
        let id = SessionId::parse(id).ok_or(AuthError::SessionNotFound)?;
        let session = self
            .store
            .find_session(id)
            .await?
            .filter(|s| s.user_id == ctx.user_id())
            .ok_or(AuthError::SessionNotFound)?;
        self.end_session(&session, "revoked_by_user", client).await
    }
}

/// The checks a live-looking session must pass for this access token.
fn check_session(
    claims: Arc<AccessClaims>,
    session: Arc<SessionSnapshot>,
    now: Timestamp,
) -> Result<AuthContext, AuthError> {
    if session.user_id() != claims.user_id() {
        return Err(AuthError::InvalidToken);
    }
    if session.revoked {
        return Err(AuthError::SessionRevoked);
    }
    if now >= session.expires_at() {
        return Err(AuthError::TokenExpired);
    }
    Ok(AuthContext { claims, session })
}
