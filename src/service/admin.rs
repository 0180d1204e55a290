//! Administration of accounts and sessions, one implementation for the command line
//! (`tessera users`, `sessions`, `audit`, `alerts`) and the admin API (`/v1/admin/`): each
//! action that changes something writes an `admin_*` audit event naming who did it (an
//! [`Actor`]) and raises it as an alert for the webhook.
//!
//! Revocations go through the store like every other, so the revocation log (and, on
//! PostgreSQL, `NOTIFY`) carries them to running servers: their in-memory liveness view
//! refuses the sessions' access tokens within a poll of the log.
//!
//! Answers of `None` mean "no such user" (or session); the caller words it.

use std::sync::Arc;
use std::time::Duration;

use ring::rand::SystemRandom;
use serde::Serialize;
use serde_json::json;

use super::events::record_security_event;
use super::hashing::Hashing;
use super::metadata::{metadata_text, metadata_value};
use super::mfa::FactorsView;
use super::revocations::RevocationFollower;
use super::views::ClientInfo;
use super::AuthError;
use crate::alerts::{Alert, AlertSink, NoAlerts};
use crate::crypto::{self, PasswordHashString, PasswordHasher};
use crate::domain::{AuditKind, Clock, Email, FieldError, Password, SessionId, Timestamp, UserId};
use crate::mail::{Mail, MailKind};
use crate::store::{
    AccountFilter, AuditEvent, AuditFilter, EmailTokenKind, EmailTokenRecord, Store, StoreError, StoredAlert,
    StoredAuditEvent, UserAccount, UserRecord,
};

/// The `user_agent` recorded on the audit events of administrative actions.
pub const ADMIN_USER_AGENT: &str = concat!("tessera-cli/", env!("CARGO_PKG_VERSION"));

/// Who is acting, recorded on every audit event an action writes (`detail.by`, and
/// `detail.actor` for its kind).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Actor {
    /// The operating-system user running the command line.
    Operator(String),
    /// A signed-in user holding the admin role.
    User(UserId),
    /// A back-office credential, by its configured name.
    Credential(String),
}

impl Actor {
    fn by(&self) -> String {
        match self {
            Actor::Operator(name) | Actor::Credential(name) => name.clone(),
            Actor::User(id) => id.to_string(),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Actor::Operator(_) => "operator",
            Actor::User(_) => "user",
            Actor::Credential(_) => "credential",
        }
    }
}

/// An account named by its email (the command line) or its id (the admin API).
#[derive(Clone, Copy, Debug)]
pub enum UserRef<'a> {
    Email(&'a str),
    Id(UserId),
}

impl<'a> From<&'a str> for UserRef<'a> {
    fn from(email: &'a str) -> Self {
        UserRef::Email(email)
    }
}

impl<'a> From<&'a String> for UserRef<'a> {
    fn from(email: &'a String) -> Self {
        UserRef::Email(email)
    }
}

impl From<UserId> for UserRef<'_> {
    fn from(id: UserId) -> Self {
        UserRef::Id(id)
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct AccountView {
    pub id: UserId,
    pub email: String,
    pub roles: Vec<String>,
    pub created_at: Timestamp,
    pub disabled_at: Option<Timestamp>,
    /// Has the account proved its address (a mailed link, or an administrator)?
    pub email_verified: bool,
    pub user_metadata: serde_json::Value,
    pub app_metadata: serde_json::Value,
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
            email_verified: account.user.email_verified_at.is_some(),
            user_metadata: metadata_value(&account.user.user_metadata),
            app_metadata: metadata_value(&account.user.app_metadata),
            live_sessions,
        }
    }
}

/// One account with what an administrator looks at next.
#[derive(Clone, Debug, Serialize)]
pub struct AccountDetail {
    pub user: AccountView,
    /// Its live sessions, most recently used first.
    pub sessions: Vec<SessionView>,
    /// Its second factors, one object each (`type`: `totp`, `recovery_codes`, `passkey`).
    pub factors: Vec<serde_json::Value>,
    /// Its last successful login still in the audit trail.
    pub last_login_at: Option<Timestamp>,
}

/// A new account from the admin API.
#[derive(Debug)]
pub struct NewAccount<'a> {
    pub email: &'a str,
    /// `None`: the account gets no usable password, and its address an invitation to choose
    /// one ([`INVITATION_TTL`]).
    pub password: Option<Password>,
    pub roles: &'a [String],
    pub app_metadata: Option<&'a serde_json::Value>,
    pub user_metadata: Option<&'a serde_json::Value>,
}

/// What an update changes; `None` leaves a field as it is.
#[derive(Debug, Default)]
pub struct AccountUpdate<'a> {
    pub roles: Option<&'a [String]>,
    pub app_metadata: Option<&'a serde_json::Value>,
    /// Marks the address proved (or not): for an address checked another way, or a mistake.
    pub email_verified: Option<bool>,
}

/// A page of the audit trail for the admin API, newest first.
#[derive(Clone, Debug, Default)]
pub struct AuditPageQuery {
    pub user: Option<UserId>,
    pub kind: Option<String>,
    pub since: Option<Timestamp>,
    pub until: Option<Timestamp>,
    /// The last event of the previous page (its time and id).
    pub before: Option<(Timestamp, uuid::Uuid)>,
    pub limit: u32,
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
    /// Who is acting, recorded on audit events.
    pub(super) actor: Actor,
    /// Where the action came from (the admin API's client; none for the command line).
    client: ClientInfo,
    /// Where actions and the revocations made here are alerted.
    alerts: Arc<dyn AlertSink>,
    /// The server's bounded hashing (the admin API); `None`: a hasher of its own (the CLI).
    hashing: Option<Arc<Hashing>>,
    /// The server's memory of sessions (the admin API), told at once of revocations made
    /// here; the CLI's are learnt from the revocation log within a poll.
    follower: Option<Arc<RevocationFollower>>,
    /// Wakes the server's mail deliverer (the admin API); the CLI's mails wait for a running
    /// server's next poll of the outbox.
    outbox: Option<crate::mail::Outbox>,
}

/// What the admin API's service shares with the running server.
pub(super) struct ServerParts {
    pub(super) store: Arc<dyn Store>,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) alerts: Arc<dyn AlertSink>,
    pub(super) hashing: Arc<Hashing>,
    pub(super) follower: Arc<RevocationFollower>,
    pub(super) outbox: crate::mail::Outbox,
}

/// How long an invitation's link works.
pub const INVITATION_TTL: Duration = Duration::from_secs(7 * 86_400);

impl AdminService {
    /// For the command line: `actor` is the operating-system user.
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, actor: &str) -> AdminService {
        AdminService {
            store,
            clock,
            actor: Actor::Operator(actor.to_owned()),
            client: ClientInfo {
                ip: None,
                user_agent: Some(ADMIN_USER_AGENT.to_owned()),
            },
            alerts: Arc::new(NoAlerts),
            hashing: None,
            follower: None,
            outbox: None,
        }
    }

    /// For the admin API (`AuthService::admin`): a caller over HTTP, the server's hashing.
    pub(super) fn for_request(server: ServerParts, actor: Actor, client: ClientInfo) -> AdminService {
        AdminService {
            store: server.store,
            clock: server.clock,
            actor,
            client,
            alerts: server.alerts,
            hashing: Some(server.hashing),
            follower: Some(server.follower),
            outbox: Some(server.outbox),
        }
    }

    /// Alerts revocations to `alerts` (the outbox, when a webhook is configured: running
    /// servers deliver them).
    pub fn with_alerts(self, alerts: Arc<dyn AlertSink>) -> AdminService {
        AdminService { alerts, ..self }
    }

    /// After sessions were revoked here: the server's memory learns of them at once, and a
    /// `session_revoked` alert is raised (audited already under the `admin_*` event).
    async fn alert_revoked(&self, user: UserId, session: Option<SessionId>, reason: &str, sessions: u64) {
        if sessions == 0 {
            return;
        }
        // This server refuses them before the request is answered.
        if let Some(follower) = &self.follower {
            follower.learn_own().await;
        }
        let alert = Alert {
            id: uuid::Uuid::now_v7(),
            event: AuditKind::SessionRevoked.as_str(),
            at: self.clock.now(),
            user_id: Some(user),
            session_id: session,
            ip: self.client.ip.clone(),
            user_agent: self.client.user_agent.clone(),
            detail: Some(
                json!({ "by": "admin", "admin": self.actor.by(), "reason": reason, "sessions": sessions }),
            ),
        };
        self.alerts.raise(alert).await;
    }

    /// Creates an account with a password and roles (no password: an invitation is mailed).
    pub async fn add_user(
        &self,
        email: &str,
        password: Option<Password>,
        roles: &[String],
    ) -> Result<AccountView, AuthError> {
        self.create_user(NewAccount {
            email,
            password,
            roles,
            app_metadata: None,
            user_metadata: None,
        })
        .await
    }

    /// Creates an account with a password, roles and metadata.
    pub async fn create_user(&self, new: NewAccount<'_>) -> Result<AccountView, AuthError> {
        let email = parse_email(new.email);
        let roles = normalize_roles(new.roles);
        let app = new
            .app_metadata
            .map(|m| metadata_text("app_metadata", m))
            .transpose();
        let profile = new
            .user_metadata
            .map(|m| metadata_text("user_metadata", m))
            .transpose();
        let mut errors = Vec::new();
        for e in [
            email.as_ref().err(),
            roles.as_ref().err(),
            app.as_ref().err(),
            profile.as_ref().err(),
        ]
        .into_iter()
        .flatten()
        {
            if let AuthError::Validation(fields) = e {
                errors.extend(fields.iter().cloned());
            }
        }
        if !errors.is_empty() {
            return Err(AuthError::Validation(errors));
        }
        let (email, roles, app, profile) = (email?, roles?, app?, profile?);
        let invited = new.password.is_none();
        let password = match new.password {
            Some(p) => p,
            // Nobody knows it: the account opens only through the invitation's link.
            None => Password::parse(&crypto::random_token(&SystemRandom::new(), 32)?)
                .map_err(|e| AuthError::Validation(vec![e]))?,
        };
        let hash = self.hash(password).await?;
        let fresh = UserRecord::new(email, hash, self.clock.now());
        let user = UserRecord {
            roles,
            app_metadata: app.unwrap_or(fresh.app_metadata.clone()),
            user_metadata: profile.unwrap_or(fresh.user_metadata.clone()),
            ..fresh
        };
        match self.store.insert_user(&user).await {
            Ok(()) => {}
            Err(StoreError::Conflict(_)) => return Err(AuthError::EmailTaken),
            Err(e) => return Err(e.into()),
        }
        if invited {
            self.invite(&user).await?;
        }
        self.audit(
            AuditKind::AdminUserAdded,
            Some(user.id),
            None,
            json!({ "email": user.email.as_str(), "roles": user.roles, "invited": invited }),
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

    /// Mails `user` a link to choose a password: a reset token (so `/reset` and
    /// `POST /v1/auth/password/reset` take it), stored with its mail in one transaction.
    async fn invite(&self, user: &UserRecord) -> Result<(), AuthError> {
        let now = self.clock.now();
        let token = crypto::random_token(&SystemRandom::new(), 32)?;
        let expires_at = now.plus(INVITATION_TTL);
        let record = EmailTokenRecord {
            hash: super::email::token_hash(&token),
            kind: EmailTokenKind::PasswordReset,
            user_id: user.id,
            new_email: None,
            credential_epoch: user.credential_epoch,
            created_at: now,
            expires_at,
            used_at: None,
            browser_hash: None,
        };
        let mail = Mail::new(
            user.email.clone(),
            MailKind::Invitation {
                token,
                expires_in_minutes: INVITATION_TTL.as_secs() / 60,
            },
        )
        .expiring_at(expires_at)
        .record(now);
        self.store.insert_email_token(&record, &mail).await?;
        if let Some(outbox) = &self.outbox {
            outbox.queued();
        }
        Ok(())
    }

    /// One account, with how many live sessions it has.
    pub async fn show_user<'a>(
        &self,
        user: impl Into<UserRef<'a>>,
    ) -> Result<Option<AccountView>, AuthError> {
        let Some(account) = self.account(user).await? else {
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

    /// A page of accounts in creation order (see [`AccountFilter`]).
    pub async fn find_users(&self, filter: &AccountFilter) -> Result<Vec<AccountView>, AuthError> {
        let page = self.store.find_accounts_filtered(filter).await?;
        Ok(page.into_iter().map(|a| AccountView::new(a, None)).collect())
    }

    /// One account with its live sessions, factors and last login.
    pub async fn user_detail<'a>(
        &self,
        user: impl Into<UserRef<'a>>,
    ) -> Result<Option<AccountDetail>, AuthError> {
        let Some(account) = self.account(user).await? else {
            return Ok(None);
        };
        let id = account.user.id;
        let live = self.store.find_live_sessions(id, self.clock.now()).await?;
        let last_login_at = self.store.find_last_login(id).await?;
        let factors = super::mfa::factors_of(self.store.as_ref(), id).await?;
        Ok(Some(AccountDetail {
            user: AccountView::new(account, Some(live.len())),
            sessions: live.iter().map(SessionView::from).collect(),
            factors: factors.as_list(),
            last_login_at,
        }))
    }

    /// Changes roles and `app_metadata` (each when given); one audit event per field changed.
    /// The roles and claims reach the account's access tokens at its next refresh or login.
    pub async fn update_user<'a>(
        &self,
        user: impl Into<UserRef<'a>>,
        update: AccountUpdate<'_>,
    ) -> Result<Option<AccountView>, AuthError> {
        let roles = update.roles.map(normalize_roles).transpose()?;
        let app = update
            .app_metadata
            .map(|m| metadata_text("app_metadata", m))
            .transpose()?;
        let Some(account) = self.account(user).await? else {
            return Ok(None);
        };
        let id = account.user.id;
        if let Some(roles) = &roles {
            if !self.set_roles_of(&account, roles).await? {
                return Ok(None);
            }
        }
        if let Some(verified) = update.email_verified {
            let found = match verified {
                true => self.store.mark_email_verified(id, self.clock.now()).await?,
                false => self.store.unmark_email_verified(id).await?,
            };
            if !found {
                return Ok(None);
            }
            self.audit(
                AuditKind::AdminUserUpdated,
                Some(id),
                None,
                json!({ "email": account.user.email.as_str(), "email_verified": verified }),
            )
            .await;
        }
        if let Some(app) = &app {
            if !self.store.update_app_metadata(id, app).await? {
                return Ok(None);
            }
            self.audit(
                AuditKind::AdminUserUpdated,
                Some(id),
                None,
                json!({ "email": account.user.email.as_str(), "app_metadata": metadata_value(app) }),
            )
            .await;
        }
        self.show_user(id).await
    }

    /// Sets a new password as a change does: the credential epoch moves and every session of
    /// the account is revoked. Returns how many sessions it revoked.
    pub async fn set_password<'a>(
        &self,
        user: impl Into<UserRef<'a>>,
        password: Password,
    ) -> Result<Option<u64>, AuthError> {
        let Some(account) = self.account(user).await? else {
            return Ok(None);
        };
        let id = account.user.id;
        let hash = self.hash(password).await?;
        let revoked = match self
            .store
            .change_password_hash(
                id,
                &account.user.password_hash,
                &hash,
                None,
                self.clock.now(),
                "password_set_by_admin",
            )
            .await?
        {
            Some(revoked) => revoked,
            // Changed meanwhile (by its owner, or another administrator): set it over that.
            None => match self.account(id).await? {
                Some(now) => self
                    .store
                    .change_password_hash(
                        id,
                        &now.user.password_hash,
                        &hash,
                        None,
                        self.clock.now(),
                        "password_set_by_admin",
                    )
                    .await?
                    .ok_or_else(|| AuthError::Internal("the password changed twice meanwhile".into()))?,
                None => return Ok(None),
            },
        };
        self.audit(
            AuditKind::AdminPasswordSet,
            Some(id),
            None,
            json!({ "email": account.user.email.as_str(), "sessions_revoked": revoked }),
        )
        .await;
        self.alert_revoked(id, None, "password_set_by_admin", revoked)
            .await;
        Ok(Some(revoked))
    }

    /// Deletes an account: its sessions are revoked and deleted, its audit events stay
    /// under its id with its email erased. Returns how many sessions it revoked.
    pub async fn delete_user<'a>(&self, user: impl Into<UserRef<'a>>) -> Result<Option<u64>, AuthError> {
        let Some(account) = self.account(user).await? else {
            return Ok(None);
        };
        let id = account.user.id;
        let Some(revoked) = self.store.delete_user(id, self.clock.now()).await? else {
            return Ok(None);
        };
        // No email: the event stays, and names the account by its id alone.
        self.audit(
            AuditKind::AdminUserDeleted,
            Some(id),
            None,
            json!({ "sessions_revoked": revoked }),
        )
        .await;
        self.alert_revoked(id, None, "user_deleted", revoked).await;
        Ok(Some(revoked))
    }

    /// Removes every second factor of the account (TOTP and its recovery codes, passkeys):
    /// the holder who lost them signs in with the password alone again. Audited
    /// (`mfa_disabled`) and mailed to the holder. `Some(false)`: it had none.
    pub async fn reset_mfa<'a>(&self, user: impl Into<UserRef<'a>>) -> Result<Option<bool>, AuthError> {
        let Some(account) = self.account(user).await? else {
            return Ok(None);
        };
        let id = account.user.id;
        let had_totp = self.store.delete_totp(id).await?;
        let passkeys_removed = self.store.delete_passkeys(id).await?;
        if !had_totp && passkeys_removed == 0 {
            return Ok(Some(false));
        }
        self.audit(
            AuditKind::MfaDisabled,
            Some(id),
            None,
            json!({ "email": account.user.email.as_str(), "reset": true, "passkeys_removed": passkeys_removed }),
        )
        .await;
        let mail = Mail::new(
            account.user.email.clone(),
            MailKind::SecurityChange {
                change: "an administrator removed your two-step verification".into(),
            },
        );
        let now = self.clock.now();
        let queued = match &self.outbox {
            Some(outbox) => outbox.send(self.store.as_ref(), &mail, now).await.map(|_| ()),
            None => self.store.insert_mail(&mail.record(now)).await,
        };
        if let Err(e) = queued {
            tracing::warn!(error = %e, "could not queue the factor reset's notice");
        }
        Ok(Some(true))
    }

    /// The second factors of the account.
    pub async fn factors<'a>(&self, user: impl Into<UserRef<'a>>) -> Result<Option<FactorsView>, AuthError> {
        let Some(account) = self.account(user).await? else {
            return Ok(None);
        };
        Ok(Some(
            super::mfa::factors_of(self.store.as_ref(), account.user.id).await?,
        ))
    }

    /// Disables an account and revokes every session it has; returns how many it revoked.
    /// From then on its logins are refused and its refresh tokens answer `session_revoked`.
    pub async fn disable_user<'a>(&self, user: impl Into<UserRef<'a>>) -> Result<Option<u64>, AuthError> {
        let Some(account) = self.account(user).await? else {
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
    pub async fn enable_user<'a>(&self, user: impl Into<UserRef<'a>>) -> Result<Option<bool>, AuthError> {
        let Some(account) = self.account(user).await? else {
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
    pub async fn set_roles<'a>(
        &self,
        user: impl Into<UserRef<'a>>,
        roles: &[String],
    ) -> Result<Option<Vec<String>>, AuthError> {
        let roles = normalize_roles(roles)?;
        let Some(account) = self.account(user).await? else {
            return Ok(None);
        };
        if !self.set_roles_of(&account, &roles).await? {
            return Ok(None);
        }
        Ok(Some(roles))
    }

    async fn set_roles_of(&self, account: &UserAccount, roles: &[String]) -> Result<bool, AuthError> {
        if !self.store.update_user_roles(account.user.id, roles).await? {
            return Ok(false);
        }
        self.audit(
            AuditKind::AdminRolesSet,
            Some(account.user.id),
            None,
            json!({ "email": account.user.email.as_str(), "from": account.user.roles, "to": roles }),
        )
        .await;
        Ok(true)
    }

    /// An account's live sessions, most recently used first.
    pub async fn list_sessions<'a>(
        &self,
        user: impl Into<UserRef<'a>>,
    ) -> Result<Option<Vec<SessionView>>, AuthError> {
        let Some(account) = self.account(user).await? else {
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
    pub async fn revoke_user_sessions<'a>(
        &self,
        user: impl Into<UserRef<'a>>,
    ) -> Result<Option<u64>, AuthError> {
        let Some(account) = self.account(user).await? else {
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
            ..AuditFilter::default()
        };
        let events = self.store.find_audit_events(&filter).await?;
        Ok(Some(events))
    }

    /// A page of audit events, newest first (the admin API).
    pub async fn audit_page(&self, query: &AuditPageQuery) -> Result<Vec<StoredAuditEvent>, AuthError> {
        let filter = AuditFilter {
            user: query.user,
            event: query.kind.clone(),
            since: query.since,
            until: query.until,
            before: query.before,
            limit: query.limit,
        };
        Ok(self.store.find_audit_events(&filter).await?)
    }

    /// The outbox, newest first: every alert still kept, or only the undelivered ones.
    pub async fn alerts(&self, pending_only: bool, limit: u32) -> Result<Vec<AlertView>, AuthError> {
        let alerts = self.store.find_alerts(pending_only, limit).await?;
        Ok(alerts.into_iter().map(AlertView::from).collect())
    }

    async fn account<'a>(&self, user: impl Into<UserRef<'a>>) -> Result<Option<UserAccount>, AuthError> {
        Ok(match user.into() {
            UserRef::Email(email) => self.store.find_account(&parse_email(email)?).await?,
            UserRef::Id(id) => self.store.find_account_by_id(id).await?,
        })
    }

    /// Hashes a new password: in turn with the server's logins (the admin API), or on a
    /// hasher of its own (the command line).
    async fn hash(&self, password: Password) -> Result<PasswordHashString, AuthError> {
        match &self.hashing {
            Some(hashing) => hashing.hash_in_turn(move |h| h.hash(&password)).await?,
            None => {
                let hasher = PasswordHasher::with_pool_limit(1);
                tokio::task::spawn_blocking(move || hasher.hash(&password))
                    .await
                    .map_err(|e| AuthError::Internal(e.to_string()))?
            }
        }
        .map_err(AuthError::from)
    }

    /// Records an administrative action and raises it as an alert; `detail` gets `"by"`,
    /// who did it (a name, or a user id), and `"actor"`, which kind of who.
    pub(super) async fn audit(
        &self,
        event: AuditKind,
        user_id: Option<UserId>,
        session_id: Option<SessionId>,
        mut detail: serde_json::Value,
    ) {
        if let Some(fields) = detail.as_object_mut() {
            fields.insert("by".into(), self.actor.by().into());
            fields.insert("actor".into(), self.actor.kind().into());
        }
        let e = AuditEvent {
            id: uuid::Uuid::now_v7(),
            event,
            at: self.clock.now(),
            user_id,
            session_id,
            ip: self.client.ip.clone(),
            user_agent: self.client.user_agent.clone(),
            detail: Some(detail.to_string()),
        };
        record_security_event(self.store.as_ref(), self.alerts.as_ref(), e).await;
    }
}

fn parse_email(email: &str) -> Result<Email, AuthError> {
    Email::parse(email).map_err(|e| AuthError::Validation(vec![e]))
}

/// Checks role names and drops repeats, keeping the order given.
pub(super) fn normalize_roles(roles: &[String]) -> Result<Vec<String>, AuthError> {
    let mut out: Vec<String> = Vec::with_capacity(roles.len());
    for role in roles {
        let ok = crate::domain::is_role_name(role);
        if !ok {
            return Err(AuthError::Validation(vec![FieldError::new(
                "role",
                format!(
                    "{role:?}: letters, digits and _ - . : only, 1 to {} characters",
                    crate::domain::MAX_ROLE_CHARS
                ),
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
