//! Sessions after login: authenticating access tokens against session liveness, listing,
//! revoking one or all, logout by access token, and sweeping ended sessions.

use std::sync::Arc;
use std::time::Duration;

use super::liveness::{Known, SessionSnapshot};
use super::revocations::REVOCATION_LOG_RETENTION;
use super::{
    check_csrf, revoked_by, AuthContext, AuthError, AuthService, ClientInfo, LogoutScope, SessionView,
};
use crate::domain::{AuditKind, SessionCheck, SessionId, Timestamp};
use crate::store::SessionRecord;
use crate::tokens::{AccessClaims, TokenError};

/// Revoked and ended sessions are kept this long (so their tokens answer `session_revoked`)
/// before the sweeper deletes them.
pub const ENDED_SESSION_RETENTION: Duration = Duration::from_secs(7 * 86_400);

impl AuthService {
    /// Verifies an access token and checks its session is still live: the gate of every
    /// authenticated endpoint of this server. Liveness comes from memory when it can be
    /// trusted (see [`super::liveness`]), else from the database.
    pub async fn authenticate(&self, jwt: &str) -> Result<AuthContext, AuthError> {
        let claims = self.verify_access_token(jwt, false).await.map_err(|e| match e {
            TokenError::Expired => AuthError::TokenExpired,
            _ => AuthError::InvalidToken,
        })?;
        let now = self.clock.now();
        let id = claims.session_id();
        if self.policy.session_check == SessionCheck::Cached && self.live.in_sync() {
            match self.live.get(id) {
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
        self.live.remember(Arc::clone(&session));
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
        let Ok(claims) = self.verify_access_token(jwt, true).await else {
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
        self.learnt_revocation(session.id);
        if revoked {
            self.audit(
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
                self.alert_sessions_revoked(
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
        self.learn_own_revocations().await;
        self.audit(
            reason,
            Some(ctx.user_id()),
            Some(ctx.session_id()),
            client,
            Some(format!("{n} session(s) revoked")),
        )
        .await;
        if n > 0 {
            // Other sessions (or all): the subject is the account, not one session.
            self.alert_sessions_revoked(
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

    /// Deletes sessions that ended more than [`ENDED_SESSION_RETENTION`] ago (with their
    /// tokens) and audit events older than the configured retention, both in batches of
    /// [`SWEEP_BATCH`] with a pause between (requests write between the batches), plus
    /// revocation-log entries older than [`REVOCATION_LOG_RETENTION`] and failed-login records
    /// whose window and lock ended a window ago (a lock is remembered that long, so the next
    /// one in a row lasts longer). Returns how many sessions were deleted.
    pub async fn sweep(&self) -> Result<u64, AuthError> {
        let now = self.clock.now();
        self.store
            .delete_revocations_logged_before(now.minus(REVOCATION_LOG_RETENTION))
            .await?;
        self.store
            .delete_login_failures_ended_before(now.minus(self.policy.lockout.window))
            .await?;
        if !self.policy.audit_retention.is_zero() {
            let before = now.minus(self.policy.audit_retention);
            let deleted =
                sweep_in_batches(|| self.store.delete_audit_events_before(before, SWEEP_BATCH)).await?;
            if deleted > 0 {
                tracing::info!(deleted, "swept audit events past their retention");
            }
        }
        let before = now.minus(ENDED_SESSION_RETENTION);
        let ended = sweep_in_batches(|| self.store.delete_sessions_ended_before(before, SWEEP_BATCH)).await?;
        Ok(ended + self.sweep_idle_sessions(before).await?)
    }

    /// Deletes sessions whose sliding expiry passed before `before` (they went idle: refused
    /// since then, and past the retention now). No index finds them, since every rotation
    /// moves the sliding expiry, so the sweep walks all sessions by primary key instead, up
    /// to [`IDLE_SCAN_PER_SWEEP`] per sweep, resuming where the last sweep stopped: a pass
    /// over 10 million sessions takes ten sweeps (under two hours), costs the hot paths
    /// nothing, and each step holds the writer or its rows only briefly.
    async fn sweep_idle_sessions(&self, before: Timestamp) -> Result<u64, AuthError> {
        let mut cursor = self.idle_sweep_cursor.lock().await;
        let mut deleted = 0;
        let mut scanned = 0;
        while scanned < IDLE_SCAN_PER_SWEEP {
            let step = self
                .store
                .delete_idle_sessions(*cursor, IDLE_SCAN_STEP, before)
                .await?;
            deleted += step.deleted;
            scanned += IDLE_SCAN_STEP;
            *cursor = step.next;
            if step.next.is_none() {
                // The pass reached the last session; the next sweep starts a new one.
                break;
            }
            tokio::time::sleep(SWEEP_PAUSE).await;
        }
        Ok(deleted)
    }
}

/// Sessions one step of the idle-session walk scans (and so deletes at most).
const IDLE_SCAN_STEP: u32 = 500;
/// Sessions one sweep scans for idle ones at most.
pub const IDLE_SCAN_PER_SWEEP: u32 = 1_000_000;

/// Rows one sweep statement deletes at most. A session takes its refresh tokens with it (one
/// row per rotation, thousands for a long-lived session), so batches are small.
pub const SWEEP_BATCH: u32 = 100;
/// The pause between two batches: the writer (SQLite) or the rows (PostgreSQL) are free for
/// requests meanwhile.
const SWEEP_PAUSE: Duration = Duration::from_millis(10);

/// Runs `batch` until it deletes fewer than a full batch; returns the total.
async fn sweep_in_batches<F, Fut>(mut batch: F) -> Result<u64, AuthError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<u64, crate::store::StoreError>>,
{
    let mut total = 0;
    loop {
        let deleted = batch().await?;
        total += deleted;
        if deleted < u64::from(SWEEP_BATCH) {
            return Ok(total);
        }
        tokio::time::sleep(SWEEP_PAUSE).await;
    }
}

/// The checks a live-looking session must pass for this access token.
fn check_session(
    claims: AccessClaims,
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
