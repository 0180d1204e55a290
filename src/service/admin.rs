//! Administration of accounts and sessions (`tessera users`, `sessions` and `audit`): each
//! action that changes something writes an `admin_*` audit event naming who did it.
//!
//! Revocations go through the store like every other, so the revocation log (and, on
//! PostgreSQL, `NOTIFY`) carries them to running servers: their in-memory liveness view
//! refuses the sessions' access tokens within a poll of the log.
//!
//! Answers of `None` mean "no such user" (or session); the caller words it.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::json;

use super::events::write_audit;
use super::AuthError;
use crate::alerts::{Alert, AlertSink, NoAlerts};
use crate::crypto::PasswordHasher;
use crate::domain::{AuditKind, Clock, Email, FieldError, Password, SessionId, Timestamp, UserId};
use crate::store::{
    AuditEvent, AuditFilter, Store, StoreError, StoredAlert, StoredAuditEvent, UserAccount, UserRecord,
};

/// The `user_agent` recorded on the audit events of administrative actions.
pub const ADMIN_USER_AGENT: &str = concat!("tessera-cli/", env!("CARGO_PKG_VERSION"));

/// A role name: letters, digits and `_ - . :`, 1 to 64 characters (it travels in every
/// access token's `roles` claim).
const MAX_ROLE_CHARS: usize = 64;

#[derive(Clone, Debug, Serialize)]
pub struct AccountView {
    pub id: UserId,
    pub email: String,
    pub roles: Vec<String>,
    pub created_at: Timestamp,
    pub disabled_at: Option<Timestamp>,
    /// Counted for a single account (`users show`), not for listings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub live_sessions: Option<usize>,
}

impl AccountView {
    fn new(account: UserAccount, live_sessions: Option<usize>) -> AccountView {
        AccountView {
            id: account.user.id,
            email: account.user.email.as_str().to_owned(),
            roles: account.user.roles,
            created_at: account.user.created_at,
            disabled_at: account.disabled_at,
            live_sessions,
        }
    }
}

pub use super::SessionView;

/// An alert in the outbox, as `tessera alerts list` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct AlertView {
    pub id: uuid::Uuid,
    pub event: String,
    pub created_at: Timestamp,
    pub attempts: u32,
    /// When the next attempt is due (meaningless once delivered).
    pub next_attempt_at: Timestamp,
    pub delivered_at: Option<Timestamp>,
    /// The body POSTed to the webhook.
    pub payload: serde_json::Value,
}

impl From<StoredAlert> for AlertView {
    fn from(a: StoredAlert) -> Self {
        AlertView {
            id: a.id,
            event: a.event,
            created_at: a.created_at,
            attempts: a.attempts,
            next_attempt_at: a.next_attempt_at,
            delivered_at: a.delivered_at,
            // Written by us as JSON; a row that is not (edited by hand) still shows, as text.
            payload: serde_json::from_str(&a.payload).unwrap_or(serde_json::Value::String(a.payload)),
        }
    }
}

/// What `audit` reads.
#[derive(Clone, Debug, Default)]
pub struct AuditQuery {
    pub email: Option<String>,
    pub kind: Option<String>,
    /// Events at most this old.
    pub since: Option<Duration>,
    pub limit: u32,
}

/// What revoking a session by id found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionRevocation {
    Revoked,
    AlreadyRevoked,
    NotFound,
}

pub struct AdminService {
    pub(super) store: Arc<dyn Store>,
    pub(super) clock: Arc<dyn Clock>,
    /// Who is acting (the operating-system user running the CLI), recorded on audit events.
    pub(super) actor: String,
    /// Where revocations made here are alerted (`session_revoked`, by an admin).
    alerts: Arc<dyn AlertSink>,
}

impl AdminService {
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, actor: &str) -> AdminService {
        AdminService {
            store,
            clock,
            actor: actor.to_owned(),
            alerts: Arc::new(NoAlerts),
        }
    }

    /// Alerts revocations to `alerts` (the outbox, when a webhook is configured: running
    /// servers deliver them).
    pub fn with_alerts(self, alerts: Arc<dyn AlertSink>) -> AdminService {
        AdminService { alerts, ..self }
    }

    /// A `session_revoked` alert for sessions an administrator revoked (audited already under
    /// the `admin_*` event).
    async fn alert_revoked(&self, user: UserId, session: Option<SessionId>, reason: &str, sessions: u64) {
        if sessions == 0 {
            return;
        }
        let alert = Alert {
            id: uuid::Uuid::now_v7(),
            event: AuditKind::SessionRevoked.as_str(),
            at: self.clock.now(),
            user_id: Some(user),
            session_id: session,
            ip: None,
            user_agent: Some(ADMIN_USER_AGENT.to_owned()),
            detail: Some(
                json!({ "by": "admin", "admin": self.actor, "reason": reason, "sessions": sessions }),
            ),
        };
        self.alerts.raise(alert).await;
    }

    /// Creates an account with a password and roles.
    pub async fn add_user(
        &self,
        email: &str,
        password: Password,
        roles: &[String],
    ) -> Result<AccountView, AuthError> {
        let email = parse_email(email)?;
        let roles = normalize_roles(roles)?;
        let hasher = PasswordHasher::with_pool_limit(1);
        let hash = tokio::task::spawn_blocking(move || hasher.hash(&password))
            .await
            .map_err(|e| AuthError::Internal(e.to_string()))??;
        let user = UserRecord {
            roles,
            ..UserRecord::new(email, hash, self.clock.now())
        };
        match self.store.insert_user(&user).await {
            Ok(()) => {}
            Err(StoreError::Conflict(_)) => return Err(AuthError::EmailTaken),
            Err(e) => return Err(e.into()),
        }
        self.audit(
            AuditKind::AdminUserAdded,
            Some(user.id),
            None,
            json!({ "email": user.email.as_str(), "roles": user.roles }),
        )
        .await;
        Ok(AccountView::new(
            UserAccount {
                user,
                disabled_at: None,
            },
            Some(0),
        ))
    }

    /// One account, with how many live sessions it has.
    pub async fn show_user(&self, email: &str) -> Result<Option<AccountView>, AuthError> {
        let Some(account) = self.account(email).await? else {
            return Ok(None);
        };
        let live = self
            .store
            .find_live_sessions(account.user.id, self.clock.now())
            .await?
            .len();
        Ok(Some(AccountView::new(account, Some(live))))
    }

    /// Up to `limit` accounts in email order, after the email `after` (the last one of the
    /// previous page).
    pub async fn list_users(&self, after: Option<&str>, limit: u32) -> Result<Vec<AccountView>, AuthError> {
        let after = after.map(|a| Email::from_stored(a.to_owned()));
        let page = self.store.find_accounts(after.as_ref(), limit).await?;
        Ok(page.into_iter().map(|a| AccountView::new(a, None)).collect())
    }

    /// Disables an account and revokes every session it has; returns how many it revoked.
    /// From then on its logins are refused and its refresh tokens answer `session_revoked`.
    pub async fn disable_user(&self, email: &str) -> Result<Option<u64>, AuthError> {
        let Some(account) = self.account(email).await? else {
            return Ok(None);
        };
        let revoked = self.store.disable_user(account.user.id, self.clock.now()).await?;
        self.audit(
            AuditKind::AdminUserDisabled,
            Some(account.user.id),
            None,
            json!({ "email": account.user.email.as_str(), "sessions_revoked": revoked,
                    "was_disabled": account.disabled_at.is_some() }),
        )
        .await;
        self.alert_revoked(account.user.id, None, "user_disabled", revoked)
            .await;
        Ok(Some(revoked))
    }

    /// Lets a disabled account log in again; `Some(false)` if it was not disabled.
    pub async fn enable_user(&self, email: &str) -> Result<Option<bool>, AuthError> {
        let Some(account) = self.account(email).await? else {
            return Ok(None);
        };
        let enabled = self.store.enable_user(account.user.id).await?;
        if enabled {
            self.audit(
                AuditKind::AdminUserEnabled,
                Some(account.user.id),
                None,
                json!({ "email": account.user.email.as_str() }),
            )
            .await;
        }
        Ok(Some(enabled))
    }

    /// Replaces an account's roles (they reach its access tokens at the next refresh or
    /// login); returns the roles as stored.
    pub async fn set_roles(&self, email: &str, roles: &[String]) -> Result<Option<Vec<String>>, AuthError> {
        let roles = normalize_roles(roles)?;
        let Some(account) = self.account(email).await? else {
            return Ok(None);
        };
        if !self.store.update_user_roles(account.user.id, &roles).await? {
            return Ok(None);
        }
        self.audit(
            AuditKind::AdminRolesSet,
            Some(account.user.id),
            None,
            json!({ "email": account.user.email.as_str(), "from": account.user.roles, "to": roles }),
        )
        .await;
        Ok(Some(roles))
    }

    /// An account's live sessions, most recently used first.
    pub async fn list_sessions(&self, email: &str) -> Result<Option<Vec<SessionView>>, AuthError> {
        let Some(account) = self.account(email).await? else {
            return Ok(None);
        };
        let live = self
            .store
            .find_live_sessions(account.user.id, self.clock.now())
            .await?;
        Ok(Some(live.iter().map(SessionView::from).collect()))
    }

    /// Revokes one session by id, whoever's it is.
    pub async fn revoke_session(&self, id: &str) -> Result<SessionRevocation, AuthError> {
        let Some(session) = SessionId::parse(id.trim()) else {
            return Ok(SessionRevocation::NotFound);
        };
        let Some(found) = self.store.find_session(session).await? else {
            return Ok(SessionRevocation::NotFound);
        };
        if !self
            .store
            .revoke_session(session, self.clock.now(), "revoked_by_admin")
            .await?
        {
            return Ok(SessionRevocation::AlreadyRevoked);
        }
        self.audit(
            AuditKind::AdminSessionRevoked,
            Some(found.user_id),
            Some(session),
            json!({ "session_id": session }),
        )
        .await;
        self.alert_revoked(found.user_id, Some(session), "revoked_by_admin", 1)
            .await;
        Ok(SessionRevocation::Revoked)
    }

    /// Revokes every live session of an account; returns how many.
    pub async fn revoke_user_sessions(&self, email: &str) -> Result<Option<u64>, AuthError> {
        let Some(account) = self.account(email).await? else {
            return Ok(None);
        };
        let revoked = self
            .store
            .revoke_user_sessions(account.user.id, None, self.clock.now(), "revoked_by_admin")
            .await?;
        self.audit(
            AuditKind::AdminSessionsRevoked,
            Some(account.user.id),
            None,
            json!({ "email": account.user.email.as_str(), "sessions_revoked": revoked }),
        )
        .await;
        self.alert_revoked(account.user.id, None, "revoked_by_admin", revoked)
            .await;
        Ok(Some(revoked))
    }

    /// Audit events, newest first; `None` when the email names no account.
    pub async fn audit_events(&self, query: &AuditQuery) -> Result<Option<Vec<StoredAuditEvent>>, AuthError> {
        let user = match &query.email {
            Some(email) => match self.account(email).await? {
                Some(account) => Some(account.user.id),
                None => return Ok(None),
            },
            None => None,
        };
        let filter = AuditFilter {
            user,
            event: query.kind.clone(),
            since: query.since.map(|d| self.clock.now().minus(d)),
            limit: query.limit,
        };
        let events = self.store.find_audit_events(&filter).await?;
        Ok(Some(events))
    }

    /// The outbox, newest first: every alert still kept, or only the undelivered ones.
    pub async fn alerts(&self, pending_only: bool, limit: u32) -> Result<Vec<AlertView>, AuthError> {
        let alerts = self.store.find_alerts(pending_only, limit).await?;
        Ok(alerts.into_iter().map(AlertView::from).collect())
    }

    async fn account(&self, email: &str) -> Result<Option<UserAccount>, AuthError> {
        Ok(self.store.find_account(&parse_email(email)?).await?)
    }

    /// Records an administrative action; `detail` gets `"by"`, who did it.
    pub(super) async fn audit(
        &self,
        event: AuditKind,
        user_id: Option<UserId>,
        session_id: Option<SessionId>,
        mut detail: serde_json::Value,
    ) {
        if let Some(fields) = detail.as_object_mut() {
            fields.insert("by".into(), self.actor.clone().into());
        }
        let e = AuditEvent {
            id: uuid::Uuid::now_v7(),
            event,
            at: self.clock.now(),
            user_id,
            session_id,
            ip: None,
            user_agent: Some(ADMIN_USER_AGENT.into()),
            detail: Some(detail.to_string()),
        };
        write_audit(self.store.as_ref(), e).await;
    }
}

fn parse_email(email: &str) -> Result<Email, AuthError> {
    Email::parse(email).map_err(|e| AuthError::Validation(vec![e]))
}

/// Checks role names and drops repeats, keeping the order given.
pub(super) fn normalize_roles(roles: &[String]) -> Result<Vec<String>, AuthError> {
    let mut out: Vec<String> = Vec::with_capacity(roles.len());
    for role in roles {
        let ok = !role.is_empty()
            && role.chars().count() <= MAX_ROLE_CHARS
            && role
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'));
        if !ok {
            return Err(AuthError::Validation(vec![FieldError::new(
                "role",
                format!("{role:?}: letters, digits and _ - . : only, 1 to {MAX_ROLE_CHARS} characters"),
            )]));
        }
        if !out.contains(role) {
            out.push(role.clone());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_checked_and_deduplicated_in_order() {
        let roles = |r: &[&str]| r.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            normalize_roles(&roles(&["admin", "ops:read", "admin"])).unwrap(),
            roles(&["admin", "ops:read"])
        );
        assert!(normalize_roles(&roles(&[])).unwrap().is_empty());
        for bad in ["", "has space", "quote\"", &"x".repeat(65)] {
            assert!(normalize_roles(&roles(&[bad])).is_err(), "{bad:?}");
        }
    }
}
