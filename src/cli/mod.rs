//! The administrative commands of the `tessera` binary: `users`, `sessions`, `audit`,
//! `alerts`, `keys` and `mail`.
//! They work on the database directly (a server need not run); revocations reach running
//! servers through the revocation log (and `NOTIFY` on PostgreSQL), like any other.
//!
//! Output: an aligned table by default; with `--json`, one JSON object per line (JSON Lines).

mod import;
mod keys;
mod mail;
mod output;
mod password;

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, Subcommand};

use tokio::sync::Notify;

use crate::alerts::{AlertSink, NoAlerts, OutboxAlerts, Webhook};
use crate::config::{parse_duration, Config};
use crate::domain::{AuditKind, SystemClock};
use crate::service::admin::{AccountView, AdminService, AuditQuery, SessionRevocation};
use crate::service::AuthError;
use crate::store::{self, Store, StoreError, StoredAuditEvent};
pub use keys::{keys, rotate_key, KeysCommand};
pub use mail::{mail, MailCommand};
use output::{or_dash, Out, Table};

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Invalid(String),
    #[error("no account with email {0}")]
    NoSuchUser(String),
    #[error("no session {0}")]
    NoSuchSession(String),
    #[error("an account with email {0} exists already")]
    EmailTaken(String),
    #[error(
        "no database at {0}: TESSERA_DATABASE_URL (or --database-url) names it, relative to the \
         working directory; point it at the server's database, or create one with `tessera migrate`"
    )]
    NoDatabase(String),
    #[error(transparent)]
    Store(StoreError),
    #[error("{0}")]
    Service(AuthError),
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
    /// Standard output was closed by its reader (`| head`): not a failure.
    #[error("standard output closed")]
    ReaderGone,
}

impl From<StoreError> for CliError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Missing(path) => CliError::NoDatabase(path),
            other => CliError::Store(other),
        }
    }
}

impl From<AuthError> for CliError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Validation(errors) => CliError::Invalid(
                errors
                    .iter()
                    .map(|e| format!("{}: {}", e.field, e.message))
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
            AuthError::Store(e) => e.into(),
            other => CliError::Service(other),
        }
    }
}

#[derive(Subcommand)]
pub enum MfaCommand {
    /// Remove every second factor of the account (TOTP and its recovery codes).
    Reset { email: String },
}

#[derive(Subcommand)]
pub enum UsersCommand {
    /// Create an account. The password is read from standard input with --password-stdin,
    /// else asked for twice on the terminal; it is never echoed.
    Add {
        email: String,
        /// Read the password from the first line of standard input.
        #[arg(long, conflicts_with = "invite")]
        password_stdin: bool,
        /// No password: mail the address a link to choose one (a running server sends it;
        /// the link works for 7 days).
        #[arg(long)]
        invite: bool,
        /// A role for the access token's `roles` claim (repeat for several).
        #[arg(long = "role", value_name = "ROLE")]
        roles: Vec<String>,
    },
    /// Every account, in email order.
    List {
        /// JSON Lines: one object per account.
        #[arg(long)]
        json: bool,
    },
    /// One account, with its live session count.
    Show {
        email: String,
        #[arg(long)]
        json: bool,
    },
    /// Refuse the account's logins and revoke every session it has (its refresh tokens
    /// answer `session_revoked`; running servers refuse its access tokens within a second).
    Disable { email: String },
    /// Let a disabled account log in again.
    Enable { email: String },
    /// Replace the account's roles (none: no roles). Its access tokens carry them from its
    /// next refresh or login.
    SetRoles {
        email: String,
        #[arg(value_name = "ROLE")]
        roles: Vec<String>,
    },
    /// Mark the account's address as proved (`true`: checked another way) or not (`false`).
    SetEmailVerified {
        email: String,
        #[arg(value_name = "true|false", action = clap::ArgAction::Set)]
        verified: bool,
    },
    /// Set a new password (read as `add` reads one): the account's every session is revoked,
    /// as with a password change.
    SetPassword {
        email: String,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Delete the account: its sessions are revoked and deleted; its audit events stay under
    /// its id, with its email erased from them.
    Delete { email: String },
    /// Second factors: `reset` removes every one (the holder signs in with the password
    /// alone), audited and mailed to the holder.
    Mfa {
        #[command(subcommand)]
        command: MfaCommand,
    },
    /// Import accounts from JSON Lines: {"email", "password_hash", "created_at"?, "roles"?},
    /// hashes bcrypt ($2a$, $2b$, $2y$) or argon2 PHC. Present emails are left alone, so a
    /// second run changes nothing; bad lines are reported by number and skipped.
    Import { file: PathBuf },
}

#[derive(Subcommand)]
pub enum SessionsCommand {
    /// The live sessions of an account, most recently used first.
    List {
        #[arg(long, value_name = "EMAIL")]
        user: String,
        #[arg(long)]
        json: bool,
    },
    /// Revoke one session by id, or every session of an account with --user.
    Revoke {
        #[arg(required_unless_present = "user", conflicts_with = "user")]
        id: Option<String>,
        #[arg(long, value_name = "EMAIL")]
        user: Option<String>,
    },
}

#[derive(Args)]
pub struct AuditArgs {
    /// Only the events of this account.
    #[arg(long, value_name = "EMAIL")]
    user: Option<String>,
    /// Only events of this kind.
    #[arg(long, value_name = "KIND", value_parser = audit_kinds())]
    kind: Option<String>,
    /// Only events at most this old (e.g. 90s, 15m, 1h, 7d).
    #[arg(long, value_name = "DURATION")]
    since: Option<String>,
    /// At most this many events, newest first.
    #[arg(long, default_value_t = 100)]
    limit: u32,
    /// JSON Lines: one object per event.
    #[arg(long)]
    json: bool,
}

/// The kinds `--kind` accepts (and `--help` lists): every audit event's name.
fn audit_kinds() -> clap::builder::PossibleValuesParser {
    clap::builder::PossibleValuesParser::new(AuditKind::ALL.iter().map(|k| k.as_str()))
}

#[derive(Subcommand)]
pub enum AlertsCommand {
    /// The alert outbox, newest first: when each alert was raised, how many delivery attempts
    /// it took, and when it was delivered (or when the next attempt is due).
    List {
        /// Only alerts not delivered yet.
        #[arg(long)]
        pending: bool,
        /// At most this many alerts.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// JSON Lines: one object per alert, with the body the webhook gets.
        #[arg(long)]
        json: bool,
    },
}

/// Accounts listed per database read.
const LIST_PAGE: u32 = 1000;

/// Who runs the command, for the audit trail: the operating-system user (the one behind
/// `sudo` if any).
fn actor() -> String {
    ["SUDO_USER", "USER", "LOGNAME"]
        .iter()
        .find_map(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
        .unwrap_or_else(|| "unknown".into())
}

/// Where a command-line process (no deliverer of its own) reports security events: the
/// outbox when a webhook is configured, so that running servers deliver them.
fn alert_sink(config: &Config, store: &Arc<dyn Store>) -> Result<Arc<dyn AlertSink>, CliError> {
    match &config.alert_webhook_url {
        Some(url) => {
            Webhook::new(url, config.alert_webhook_secret.as_deref()).map_err(CliError::Invalid)?;
            Ok(Arc::new(OutboxAlerts::new(
                Arc::clone(store),
                Arc::new(Notify::new()),
                config.alert_events.clone(),
            )))
        }
        None => Ok(Arc::new(NoAlerts)),
    }
}

async fn admin(config: &Config) -> Result<AdminService, CliError> {
    let store = store::connect_existing(&config.database_url, 2).await?;
    // Revocations made here are alerted through the outbox; running servers deliver them.
    let alerts = alert_sink(config, &store)?;
    Ok(AdminService::new(store, Arc::new(SystemClock), &actor()).with_alerts(alerts))
}

/// Runs `tessera users ...`.
pub async fn users(config: &Config, command: UsersCommand) -> Result<(), CliError> {
    let admin = admin(config).await?;
    let mut out = Out::new();
    match command {
        UsersCommand::Add {
            email,
            password_stdin,
            invite,
            roles,
        } => {
            let password = match invite {
                true => None,
                false => Some(password::read_new_password(password_stdin)?),
            };
            let account = admin
                .add_user(&email, password, &roles)
                .await
                .map_err(|e| match e {
                    AuthError::EmailTaken => CliError::EmailTaken(email.trim().to_lowercase()),
                    other => other.into(),
                })?;
            out.line(&format!(
                "added {} ({}){}",
                account.email,
                account.id,
                if invite { "; invitation queued" } else { "" }
            ))?;
        }
        UsersCommand::List { json } => {
            let mut table = Table::new(&["EMAIL", "ID", "ROLES", "CREATED", "DISABLED"]);
            let mut after: Option<String> = None;
            loop {
                let page = admin.list_users(after.as_deref(), LIST_PAGE).await?;
                if json {
                    for account in &page {
                        out.json(account)?;
                    }
                } else {
                    table.print(&mut out, &page.iter().map(account_row).collect::<Vec<_>>())?;
                }
                match page.last() {
                    Some(last) if page.len() == LIST_PAGE as usize => after = Some(last.email.clone()),
                    _ => break,
                }
            }
        }
        UsersCommand::Show { email, json } => {
            let account = admin
                .show_user(&email)
                .await?
                .ok_or_else(|| CliError::NoSuchUser(email.clone()))?;
            let factors = admin
                .factors(&email)
                .await?
                .ok_or_else(|| CliError::NoSuchUser(email.clone()))?;
            if json {
                let mut value =
                    serde_json::to_value(&account).map_err(|e| CliError::Invalid(e.to_string()))?;
                if let Some(fields) = value.as_object_mut() {
                    fields.insert("factors".into(), factors.as_list().into());
                }
                out.json(&value)?;
            } else {
                for (name, value) in [
                    ("email", account.email.clone()),
                    ("id", account.id.to_string()),
                    ("roles", account.roles.join(" ")),
                    ("created", account.created_at.to_rfc3339()),
                    ("disabled", or_dash(account.disabled_at.map(|t| t.to_rfc3339()))),
                    (
                        "email verified",
                        if account.email_verified { "yes" } else { "no" }.to_owned(),
                    ),
                    ("live sessions", account.live_sessions.unwrap_or(0).to_string()),
                    ("second factors", factors.summary()),
                ] {
                    out.line(&format!("{name:<16}{value}"))?;
                }
            }
        }
        UsersCommand::Disable { email } => {
            let revoked = admin
                .disable_user(&email)
                .await?
                .ok_or_else(|| CliError::NoSuchUser(email.clone()))?;
            out.line(&format!("disabled {email}; {revoked} session(s) revoked"))?;
        }
        UsersCommand::Mfa {
            command: MfaCommand::Reset { email },
        } => {
            let removed = admin
                .reset_mfa(&email)
                .await?
                .ok_or_else(|| CliError::NoSuchUser(email.clone()))?;
            out.line(&if removed {
                format!("removed the second factors of {email}")
            } else {
                format!("{email} had no second factor")
            })?;
        }
        UsersCommand::Enable { email } => {
            let enabled = admin
                .enable_user(&email)
                .await?
                .ok_or_else(|| CliError::NoSuchUser(email.clone()))?;
            out.line(&if enabled {
                format!("enabled {email}")
            } else {
                format!("{email} was not disabled")
            })?;
        }
        UsersCommand::SetEmailVerified { email, verified } => {
            let update = crate::service::admin::AccountUpdate {
                email_verified: Some(verified),
                ..Default::default()
            };
            admin
                .update_user(&email, update)
                .await?
                .ok_or_else(|| CliError::NoSuchUser(email.clone()))?;
            out.line(&format!(
                "{email}: address {}",
                if verified { "verified" } else { "not verified" }
            ))?;
        }
        UsersCommand::SetRoles { email, roles } => {
            let roles = admin
                .set_roles(&email, &roles)
                .await?
                .ok_or_else(|| CliError::NoSuchUser(email.clone()))?;
            out.line(&format!("roles of {email}: {}", or_dash(Some(roles.join(" ")))))?;
        }
        UsersCommand::SetPassword {
            email,
            password_stdin,
        } => {
            let password = password::read_new_password(password_stdin)?;
            let revoked = admin
                .set_password(&email, password)
                .await?
                .ok_or_else(|| CliError::NoSuchUser(email.clone()))?;
            out.line(&format!("password of {email} set; {revoked} session(s) revoked"))?;
        }
        UsersCommand::Delete { email } => {
            let revoked = admin
                .delete_user(&email)
                .await?
                .ok_or_else(|| CliError::NoSuchUser(email.clone()))?;
            out.line(&format!("deleted {email}; {revoked} session(s) revoked"))?;
        }
        UsersCommand::Import { file } => import::import(&admin, &file, &mut out).await?,
    }
    out.finish()
}

fn account_row(a: &AccountView) -> Vec<String> {
    vec![
        a.email.clone(),
        a.id.to_string(),
        or_dash(Some(a.roles.join(","))),
        a.created_at.to_rfc3339(),
        or_dash(a.disabled_at.map(|t| t.to_rfc3339())),
    ]
}

/// Runs `tessera sessions ...`.
pub async fn sessions(config: &Config, command: SessionsCommand) -> Result<(), CliError> {
    let admin = admin(config).await?;
    let mut out = Out::new();
    match command {
        SessionsCommand::List { user, json } => {
            let sessions = admin
                .list_sessions(&user)
                .await?
                .ok_or_else(|| CliError::NoSuchUser(user.clone()))?;
            if json {
                for s in &sessions {
                    out.json(s)?;
                }
            } else {
                let rows: Vec<_> = sessions
                    .iter()
                    .map(|s| {
                        vec![
                            s.id.to_string(),
                            s.created_at.to_rfc3339(),
                            s.last_used_at.to_rfc3339(),
                            s.expires_at.to_rfc3339(),
                            or_dash(s.ip.clone()),
                            or_dash(s.user_agent.clone()),
                        ]
                    })
                    .collect();
                Table::new(&["ID", "CREATED", "LAST USED", "EXPIRES", "IP", "USER AGENT"])
                    .print(&mut out, &rows)?;
            }
        }
        SessionsCommand::Revoke { id: Some(id), .. } => match admin.revoke_session(&id).await? {
            SessionRevocation::Revoked => out.line(&format!("revoked session {}", id.trim()))?,
            SessionRevocation::AlreadyRevoked => {
                out.line(&format!("session {} was already revoked", id.trim()))?
            }
            SessionRevocation::NotFound => return Err(CliError::NoSuchSession(id)),
        },
        SessionsCommand::Revoke { id: None, user } => {
            let user =
                user.ok_or_else(|| CliError::Invalid("a session id or --user EMAIL is needed".into()))?;
            let revoked = admin
                .revoke_user_sessions(&user)
                .await?
                .ok_or_else(|| CliError::NoSuchUser(user.clone()))?;
            out.line(&format!("{revoked} session(s) of {user} revoked"))?;
        }
    }
    out.finish()
}

/// Runs `tessera audit ...`.
pub async fn audit(config: &Config, args: AuditArgs) -> Result<(), CliError> {
    let since = args
        .since
        .as_deref()
        .map(parse_duration)
        .transpose()
        .map_err(|e| CliError::Invalid(format!("--since: {e}")))?;
    let admin = admin(config).await?;
    let query = AuditQuery {
        email: args.user.clone(),
        kind: args.kind,
        since,
        limit: args.limit,
    };
    let events = admin
        .audit_events(&query)
        .await?
        .ok_or_else(|| CliError::NoSuchUser(args.user.unwrap_or_default()))?;
    let mut out = Out::new();
    if args.json {
        for e in &events {
            out.json(&audit_json(e)?)?;
        }
    } else {
        let rows: Vec<_> = events
            .iter()
            .map(|e| {
                vec![
                    e.at.to_rfc3339(),
                    e.event.clone(),
                    or_dash(e.email.clone().or_else(|| e.user_id.map(|u| u.to_string()))),
                    or_dash(e.session_id.map(|s| s.to_string())),
                    or_dash(e.ip.clone()),
                    or_dash(e.detail.clone()),
                ]
            })
            .collect();
        Table::new(&["AT", "EVENT", "USER", "SESSION", "IP", "DETAIL"]).print(&mut out, &rows)?;
    }
    out.finish()
}

/// An audit event as `--json` prints it: a `detail` written as JSON is an object (or array)
/// there, not a string holding JSON.
fn audit_json(e: &StoredAuditEvent) -> Result<serde_json::Value, CliError> {
    let mut value = serde_json::to_value(e).map_err(|e| CliError::Invalid(e.to_string()))?;
    let structured = e
        .detail
        .as_deref()
        .and_then(|d| serde_json::from_str::<serde_json::Value>(d).ok())
        .filter(|d| d.is_object() || d.is_array());
    if let Some(detail) = structured {
        value["detail"] = detail;
    }
    Ok(value)
}

/// Runs `tessera alerts ...`.
pub async fn alerts(config: &Config, command: AlertsCommand) -> Result<(), CliError> {
    let AlertsCommand::List { pending, limit, json } = command;
    let alerts = admin(config).await?.alerts(pending, limit).await?;
    let mut out = Out::new();
    if json {
        for a in &alerts {
            out.json(a)?;
        }
    } else {
        let rows: Vec<_> = alerts
            .iter()
            .map(|a| {
                vec![
                    a.id.to_string(),
                    a.event.clone(),
                    a.created_at.to_rfc3339(),
                    a.attempts.to_string(),
                    match a.delivered_at {
                        Some(at) => format!("delivered {}", at.to_rfc3339()),
                        None => format!("next attempt {}", a.next_attempt_at.to_rfc3339()),
                    },
                ]
            })
            .collect();
        Table::new(&["ID", "EVENT", "RAISED", "ATTEMPTS", "STATE"]).print(&mut out, &rows)?;
    }
    out.finish()
}
