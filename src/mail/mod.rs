//! Mail, delivered through an outbox. A flow queues a [`Mail`] as a row of `mail_outbox`,
//! in the same transaction as the state change it tells of (see `store::MailStore`); a
//! [`Deliverer`] task on every instance claims due mails with a lease, renders them from the
//! [`Templates`] and hands them to the SMTP server ([`Transport`]), retrying with capped
//! exponential back-off across restarts until the server takes them, refuses them for good, or
//! the mail's time is up. Nothing here runs on a request's path: a slow or dead mail server
//! never slows or fails a request.
//!
//! With no SMTP server configured the transport writes each mail to the log (development).
//!
//! - `templates`: the message kinds' templates (embedded, overridable from a directory) and
//!   their rendering, with HTML escaping.
//! - `transport`: SMTP through lettre (STARTTLS, implicit TLS, AUTH; rustls), or the log.
//! - `deliverer`: the delivery task.

mod deliverer;
mod templates;
mod transport;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

pub use deliverer::{Deliverer, DeliverySettings};
pub use templates::{Rendered, Templates};
pub use transport::{SendError, SmtpSecurity, SmtpServer, Transport};

use crate::domain::{Email, Timestamp};
use crate::store::{NewMail, Store, StoreResult};

#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("mail template {name}: {message}")]
    Template { name: String, message: String },
    #[error("mail templates directory {path}: {message}")]
    TemplateDir { path: String, message: String },
    #[error("SMTP: {0}")]
    Smtp(String),
    #[error("mail_from: {0}")]
    From(String),
}

/// What a mail says: one variant per message kind, with what its template needs. Stored as
/// JSON (`{"kind": "password_reset", ...}`) in the outbox until sent; a token in it is erased
/// then.
///
/// Links carry their token in the URL's fragment (`/reset#token=...`): a fragment never
/// reaches a server's access log, a proxy or a `Referer` header, and the page reads it in the
/// browser.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum MailKind {
    /// `tessera mail test`: does mail reach people?
    Test,
    /// Confirm the address of a new account: `/verify#token=`.
    VerifyEmail { token: String },
    /// To an address's owner when someone tried to sign up with it (registration does not
    /// tell whether an address has an account).
    SignupAttempt,
    /// A password reset link: `/reset#token=`, good for `expires_in_minutes`.
    PasswordReset { token: String, expires_in_minutes: u64 },
    /// An account an administrator made without a password: choose one (`/reset#token=`).
    Invitation { token: String, expires_in_minutes: u64 },
    /// The password was changed or reset.
    PasswordChanged,
    /// To the new address: confirm the change (`/verify#change=`).
    EmailChangeConfirm { token: String, new_email: String },
    /// To the old address: a change to `new_email` was asked for.
    EmailChangeNotice { new_email: String },
    /// A sign-in link: `/login#link=`, good for `expires_in_minutes`.
    SignInLink { token: String, expires_in_minutes: u64 },
    /// A change of the account's sign-in security (second factors turned on or off, a
    /// recovery code used, factors reset by an operator): `change` says which.
    SecurityChange { change: String },
    /// A login from a device not seen before for the account.
    NewDevice {
        device: String,
        ip: String,
        #[serde(with = "millis")]
        at: Timestamp,
    },
}

/// A timestamp in the outbox's JSON: milliseconds, read back exactly.
mod millis {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::domain::Timestamp;

    pub fn serialize<S: Serializer>(t: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i64(t.millis())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        i64::deserialize(d).map(Timestamp)
    }
}

impl MailKind {
    /// Every kind's name, which is also its templates' file name (`<name>.txt`, `<name>.html`).
    pub const NAMES: &'static [&'static str] = &[
        "test",
        "verify_email",
        "signup_attempt",
        "password_reset",
        "invitation",
        "password_changed",
        "email_change_confirm",
        "email_change_notice",
        "sign_in_link",
        "new_device",
        "security_change",
    ];

    pub fn name(&self) -> &'static str {
        match self {
            MailKind::Test => "test",
            MailKind::VerifyEmail { .. } => "verify_email",
            MailKind::SignupAttempt => "signup_attempt",
            MailKind::PasswordReset { .. } => "password_reset",
            MailKind::Invitation { .. } => "invitation",
            MailKind::PasswordChanged => "password_changed",
            MailKind::EmailChangeConfirm { .. } => "email_change_confirm",
            MailKind::EmailChangeNotice { .. } => "email_change_notice",
            MailKind::SignInLink { .. } => "sign_in_link",
            MailKind::NewDevice { .. } => "new_device",
            MailKind::SecurityChange { .. } => "security_change",
        }
    }
}

/// A mail to queue: to whom, what, and until when it is worth sending.
#[derive(Clone, Debug)]
pub struct Mail {
    pub to: Email,
    pub kind: MailKind,
    /// Not worth sending after this (the token it carries expires then); the deliverer's
    /// general bound (`TESSERA_MAIL_GIVE_UP_AFTER`) applies in any case.
    pub expires_at: Option<Timestamp>,
}

impl Mail {
    pub fn new(to: Email, kind: MailKind) -> Mail {
        Mail {
            to,
            kind,
            expires_at: None,
        }
    }

    pub fn expiring_at(self, at: Timestamp) -> Mail {
        Mail {
            expires_at: Some(at),
            ..self
        }
    }

    /// The outbox row, queued at `now`: hand it to the store method of the flow's state
    /// change, which inserts it in the same transaction.
    pub fn record(&self, now: Timestamp) -> NewMail {
        NewMail {
            id: uuid::Uuid::now_v7(),
            recipient: self.to.as_str().to_owned(),
            kind: self.kind.name().to_owned(),
            // A tagged enum of strings and integers always encodes.
            payload: serde_json::to_string(&self.kind).unwrap_or_default(),
            created_at: now,
            expires_at: self.expires_at,
        }
    }
}

/// Wakes this instance's deliverer once a flow has committed a mail, so that it goes out at
/// once rather than at the next poll. Cheap to clone; a flow holds one.
#[derive(Clone, Default)]
pub struct Outbox {
    wake: Arc<Notify>,
    stats: Arc<MailStats>,
}

/// Mail as it goes, for `/metrics`: counts since this process started (queued by this
/// instance's flows; sent, failed attempts and given up by its deliverer).
#[derive(Debug, Default)]
pub struct MailStats {
    queued: AtomicU64,
    sent: AtomicU64,
    failed_attempts: AtomicU64,
    given_up: AtomicU64,
}

impl MailStats {
    pub fn queued(&self) -> u64 {
        self.queued.load(Ordering::Relaxed)
    }

    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    pub fn failed_attempts(&self) -> u64 {
        self.failed_attempts.load(Ordering::Relaxed)
    }

    pub fn given_up(&self) -> u64 {
        self.given_up.load(Ordering::Relaxed)
    }

    pub(crate) fn count_sent(&self) {
        self.sent.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_failed_attempt(&self) {
        self.failed_attempts.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_given_up(&self) {
        self.given_up.fetch_add(1, Ordering::Relaxed);
    }
}

impl Outbox {
    pub fn new() -> Outbox {
        Outbox::default()
    }

    /// Call after the transaction that queued a mail has committed.
    pub fn queued(&self) {
        self.stats.queued.fetch_add(1, Ordering::Relaxed);
        self.wake.notify_one();
    }

    pub(crate) fn wake(&self) -> Arc<Notify> {
        Arc::clone(&self.wake)
    }

    pub fn stats(&self) -> Arc<MailStats> {
        Arc::clone(&self.stats)
    }

    /// Queues `mail` alone (no state change goes with it) and wakes the deliverer; returns
    /// the outbox row's id.
    pub async fn send(&self, store: &dyn Store, mail: &Mail, now: Timestamp) -> StoreResult<uuid::Uuid> {
        let record = mail.record(now);
        store.insert_mail(&record).await?;
        self.queued();
        Ok(record.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kind_round_trips_through_its_json_and_names_its_templates() {
        let kinds = [
            MailKind::Test,
            MailKind::VerifyEmail { token: "t".into() },
            MailKind::SignupAttempt,
            MailKind::PasswordReset {
                token: "t".into(),
                expires_in_minutes: 30,
            },
            MailKind::Invitation {
                token: "t".into(),
                expires_in_minutes: 10_080,
            },
            MailKind::PasswordChanged,
            MailKind::EmailChangeConfirm {
                token: "t".into(),
                new_email: "b@example.com".into(),
            },
            MailKind::EmailChangeNotice {
                new_email: "b@example.com".into(),
            },
            MailKind::SignInLink {
                token: "t".into(),
                expires_in_minutes: 10,
            },
            MailKind::NewDevice {
                device: "Firefox on Linux".into(),
                ip: "192.0.2.1".into(),
                at: Timestamp(1_700_000_000_000),
            },
            MailKind::SecurityChange {
                change: "two-step verification was turned on".into(),
            },
        ];
        assert_eq!(kinds.len(), MailKind::NAMES.len());
        for (kind, name) in kinds.iter().zip(MailKind::NAMES) {
            assert_eq!(kind.name(), *name);
            let to = Email::parse("a@example.com").unwrap();
            let record = Mail::new(to, kind.clone()).record(Timestamp(5));
            assert_eq!(record.kind, *name);
            assert!(
                record.payload.contains(&format!("\"kind\":\"{name}\"")),
                "{}",
                record.payload
            );
            let back: MailKind = serde_json::from_str(&record.payload).unwrap();
            assert_eq!(&back, kind);
        }
    }
}
