//! `tessera mail`: queue a test mail (does mail reach people?) and list the outbox. Like the
//! other commands it works on the database: running servers deliver what it queues.

use std::time::{Duration, Instant};

use clap::Subcommand;
use serde::Serialize;

use super::output::{or_dash, Out, Table};
use super::CliError;
use crate::config::{parse_duration, Config};
use crate::domain::{Clock, Email, SystemClock, Timestamp};
use crate::mail::{Mail, MailKind, Outbox};
use crate::store::{self, QueuedMail};

#[derive(Subcommand)]
pub enum MailCommand {
    /// Queue a test mail to ADDRESS; a running server sends it. Waits (--wait, default 30s)
    /// for it to be sent and reports the SMTP server's answer; fails if it was refused or is
    /// still queued then (`0` queues without waiting).
    Test {
        #[arg(long, value_name = "ADDRESS")]
        to: String,
        #[arg(long, value_name = "DURATION", default_value = "30s")]
        wait: String,
    },
    /// The mail outbox, newest first: recipient, kind, attempts, and whether each mail was
    /// sent, given up (with the last error) or is waiting for its next attempt.
    List {
        /// Only mails not yet sent or given up.
        #[arg(long)]
        pending: bool,
        /// At most this many mails.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// JSON Lines: one object per mail.
        #[arg(long)]
        json: bool,
    },
}

/// A mail as listed (never its payload, which may hold a token).
#[derive(Serialize)]
struct MailView {
    id: uuid::Uuid,
    to: String,
    kind: String,
    queued_at: Timestamp,
    attempts: u32,
    state: &'static str,
    next_attempt_at: Option<Timestamp>,
    sent_at: Option<Timestamp>,
    failed_at: Option<Timestamp>,
    last_error: Option<String>,
}

impl From<&QueuedMail> for MailView {
    fn from(m: &QueuedMail) -> Self {
        MailView {
            id: m.id,
            to: m.recipient.clone(),
            kind: m.kind.clone(),
            queued_at: m.created_at,
            attempts: m.attempts,
            state: state(m),
            next_attempt_at: m.is_pending().then_some(m.next_attempt_at),
            sent_at: m.sent_at,
            failed_at: m.failed_at,
            last_error: m.last_error.clone(),
        }
    }
}

fn state(m: &QueuedMail) -> &'static str {
    match (m.sent_at, m.failed_at) {
        (Some(_), _) => "sent",
        (None, Some(_)) => "failed",
        (None, None) => "pending",
    }
}

/// How often `mail test --wait` looks at the outbox.
const WAIT_POLL: Duration = Duration::from_millis(200);

/// Runs `tessera mail ...`.
pub async fn mail(config: &Config, command: MailCommand) -> Result<(), CliError> {
    // Refuse what a server would refuse (broken templates, an unreadable CA file) here too.
    crate::startup::mail::transport(config).map_err(|e| CliError::Invalid(e.to_string()))?;
    crate::startup::mail::templates(config).map_err(|e| CliError::Invalid(e.to_string()))?;
    let store = store::connect_existing(&config.database_url, 2).await?;
    let mut out = Out::new();
    match command {
        MailCommand::Test { to, wait } => {
            let wait = parse_duration(&wait).map_err(|e| CliError::Invalid(format!("--wait: {e}")))?;
            let to = Email::parse(&to).map_err(|e| CliError::Invalid(format!("--to: {}", e.message)))?;
            let id = Outbox::new()
                .send(
                    store.as_ref(),
                    &Mail::new(to.clone(), MailKind::Test),
                    SystemClock.now(),
                )
                .await?;
            out.line(&format!("queued test mail {id} to {}", to.as_str()))?;
            if config.smtp_url.is_none() {
                out.line(
                    "no SMTP server is configured (TESSERA_SMTP_URL): a running server writes it to its log",
                )?;
            }
            if wait.is_zero() {
                return out.finish();
            }
            let started = Instant::now();
            loop {
                let mail = store.find_mail(id).await?;
                match mail {
                    Some(m) if m.sent_at.is_some() => {
                        out.line(&format!("sent after {} attempt(s)", m.attempts))?;
                        break;
                    }
                    Some(m) if m.failed_at.is_some() => {
                        out.finish()?;
                        return Err(CliError::Invalid(format!(
                            "test mail given up: {}",
                            m.last_error.unwrap_or_default()
                        )));
                    }
                    Some(m) if started.elapsed() >= wait => {
                        out.finish()?;
                        let why = match m.last_error {
                            Some(e) => format!("last attempt failed: {e}"),
                            None if m.attempts == 0 => {
                                "no server has tried it yet: is `tessera serve` running on this database?"
                                    .to_owned()
                            }
                            None => "an attempt is in progress".to_owned(),
                        };
                        return Err(CliError::Invalid(format!(
                            "test mail not sent within {}s ({why}); it stays queued",
                            wait.as_secs()
                        )));
                    }
                    Some(_) => tokio::time::sleep(WAIT_POLL).await,
                    None => return Err(CliError::Invalid("the test mail left the outbox".into())),
                }
            }
        }
        MailCommand::List { pending, limit, json } => {
            let mails = store.find_mails(pending, limit).await?;
            if json {
                for m in &mails {
                    out.json(&MailView::from(m))?;
                }
            } else {
                let rows: Vec<_> = mails
                    .iter()
                    .map(|m| {
                        vec![
                            m.id.to_string(),
                            m.recipient.clone(),
                            m.kind.clone(),
                            m.created_at.to_rfc3339(),
                            m.attempts.to_string(),
                            match (m.sent_at, m.failed_at) {
                                (Some(at), _) => format!("sent {}", at.to_rfc3339()),
                                (None, Some(at)) => format!("failed {}", at.to_rfc3339()),
                                (None, None) => format!("next attempt {}", m.next_attempt_at.to_rfc3339()),
                            },
                            or_dash(m.last_error.clone()),
                        ]
                    })
                    .collect();
                Table::new(&["ID", "TO", "KIND", "QUEUED", "ATTEMPTS", "STATE", "LAST ERROR"])
                    .print(&mut out, &rows)?;
            }
        }
    }
    out.finish()
}
