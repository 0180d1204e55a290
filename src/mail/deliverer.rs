//! The delivery task: one per instance, any number of instances. It claims due mails with a
//! lease (PostgreSQL: `FOR UPDATE SKIP LOCKED`; SQLite: the writer's serial transactions),
//! renders each and hands it to the transport on a task of its own; the SMTP server taking it
//! marks it sent, a temporary failure reschedules it after a back-off that doubles from 1 s up
//! to 30 s (so a mail goes out within about half a minute of a dead server coming back), and a
//! permanent refusal, or running out of time, gives it up with a warning in the log.
//!
//! Delivery is at least once: a server that took a mail whose "sent" mark then failed to
//! commit (or whose answer came after the lease ran out) may get it again.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, Semaphore};

use super::{MailKind, Outbox, Templates, Transport};
use crate::domain::{Clock, Timestamp};
use crate::store::{QueuedMail, Store};

/// One attempt (connect, greet, send) may take this long in all.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a claimed mail stays out of other claimers' reach: longer than an attempt, so two
/// instances never send it at once, short enough that a crashed instance's claims come back.
const LEASE: Duration = Duration::from_secs(60);
/// Mails in flight at once per instance.
const MAX_IN_FLIGHT: usize = 4;
/// How often the outbox is looked at when nothing woke the deliverer (mails queued by other
/// instances or by the command line, retries coming due).
const POLL_EVERY: Duration = Duration::from_millis(500);
/// Finished (sent or given up) mails are deleted this many at a time...
const PRUNE_BATCH: u32 = 100;
/// ...once they are this old. Their payload was erased when they finished; what stays is who
/// got what kind of mail, and when, for `tessera mail list`.
const RETENTION: Duration = Duration::from_secs(7 * 86_400);

/// How retries are spaced and when they stop.
#[derive(Clone, Copy, Debug)]
pub struct DeliverySettings {
    /// The wait after the first failed attempt; it doubles after each failure.
    pub retry_min: Duration,
    /// The longest wait between attempts.
    pub retry_max: Duration,
    /// A mail not sent within this long of being queued is given up.
    pub give_up_after: Duration,
}

impl DeliverySettings {
    pub fn new(give_up_after: Duration) -> DeliverySettings {
        DeliverySettings {
            retry_min: Duration::from_secs(1),
            retry_max: Duration::from_secs(30),
            give_up_after,
        }
    }

    /// The wait after `attempts` failed attempts: `retry_min * 2^(attempts-1)`, at most
    /// `retry_max`.
    pub fn backoff(&self, attempts: u32) -> Duration {
        let doublings = attempts.saturating_sub(1).min(30);
        self.retry_min
            .checked_mul(1 << doublings)
            .unwrap_or(self.retry_max)
            .min(self.retry_max)
    }

    /// When `mail` stops being worth sending: its own expiry, or `give_up_after` after it was
    /// queued, whichever comes first.
    pub fn deadline(&self, mail: &QueuedMail) -> Timestamp {
        let general = mail.created_at.plus(self.give_up_after);
        mail.expires_at.map_or(general, |own| own.min(general))
    }
}

/// What to do with a mail after an attempt that failed.
#[derive(Debug, PartialEq, Eq)]
enum AfterFailure {
    RetryAt(Timestamp),
    GiveUp,
}

fn after_failure(
    settings: &DeliverySettings,
    mail: &QueuedMail,
    permanent: bool,
    now: Timestamp,
) -> AfterFailure {
    if permanent {
        return AfterFailure::GiveUp;
    }
    let next = now.plus(settings.backoff(mail.attempts));
    if next >= settings.deadline(mail) {
        AfterFailure::GiveUp
    } else {
        AfterFailure::RetryAt(next)
    }
}

/// Claims due mails and sends them.
pub struct Deliverer {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    transport: Transport,
    templates: Templates,
    settings: DeliverySettings,
    /// Names this instance's claims: random per start, so a restart never trusts the leases
    /// of the process before it.
    claimer: String,
    wake: Arc<Notify>,
    in_flight: Arc<Semaphore>,
    stats: Arc<super::MailStats>,
}

impl Deliverer {
    /// The deliverer that `outbox` wakes.
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        transport: Transport,
        templates: Templates,
        settings: DeliverySettings,
        outbox: &Outbox,
    ) -> Deliverer {
        Deliverer {
            store,
            clock,
            transport,
            templates,
            settings,
            claimer: uuid::Uuid::new_v4().to_string(),
            wake: outbox.wake(),
            in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
            stats: outbox.stats(),
        }
    }

    /// Hands back the mails this deliverer had claimed, once its task has stopped (a clean
    /// shutdown): the next start, or another instance, tries them without waiting out the lease.
    pub async fn release_claims(&self) {
        match self.store.release_mail_claims(&self.claimer).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(mails = n, "mails in delivery handed back at shutdown"),
            Err(e) => tracing::warn!(error = %e, "could not hand back the mails in delivery"),
        }
    }

    /// Delivers until the task is aborted.
    pub async fn run(self: Arc<Self>) {
        let mut last_prune = Timestamp(0);
        loop {
            let claimed = self.claim_and_send().await;
            let now = self.clock.now();
            if now.millis() - last_prune.millis() > 60_000 {
                last_prune = now;
                self.prune(now).await;
            }
            // A full batch means more may be due: look again at once.
            if claimed < MAX_IN_FLIGHT {
                tokio::select! {
                    () = self.wake.notified() => {}
                    () = tokio::time::sleep(POLL_EVERY) => {}
                }
            }
        }
    }

    /// Claims as many due mails as there are free slots and starts sending each; returns how
    /// many it claimed.
    async fn claim_and_send(self: &Arc<Self>) -> usize {
        let free = self.in_flight.available_permits();
        if free == 0 {
            return 0;
        }
        let now = self.clock.now();
        let limit = u32::try_from(free).unwrap_or(1);
        let claimed = match self
            .store
            .claim_mails(&self.claimer, now, now.plus(LEASE), limit)
            .await
        {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "could not claim mails");
                return 0;
            }
        };
        let n = claimed.len();
        for mail in claimed {
            let Ok(permit) = Arc::clone(&self.in_flight).try_acquire_owned() else {
                // Cannot happen (no more claimed than free permits, and only this task takes
                // them); the lease runs out and the mail comes back.
                break;
            };
            let me = Arc::clone(self);
            tokio::spawn(async move {
                me.deliver(mail).await;
                drop(permit);
                me.wake.notify_one();
            });
        }
        n
    }

    async fn deliver(&self, mail: QueuedMail) {
        let now = self.clock.now();
        if now >= self.settings.deadline(&mail) {
            let error = match &mail.last_error {
                Some(last) => format!("not sent in time; last error: {last}"),
                None => "not sent in time".to_owned(),
            };
            return self.give_up(&mail, &error).await;
        }
        let kind: MailKind = match serde_json::from_str(&mail.payload) {
            Ok(kind) => kind,
            Err(e) => return self.give_up(&mail, &format!("unreadable payload: {e}")).await,
        };
        let rendered = self.templates.render(&mail.recipient, &kind);
        let sent = match tokio::time::timeout(
            ATTEMPT_TIMEOUT,
            self.transport.send(mail.id, &mail.recipient, &rendered),
        )
        .await
        {
            Ok(result) => result,
            Err(_) => Err(super::SendError {
                permanent: false,
                message: format!("no answer within {ATTEMPT_TIMEOUT:?}"),
            }),
        };
        let now = self.clock.now();
        if sent.is_err() {
            self.stats.count_failed_attempt();
        }
        match sent {
            Ok(()) => {
                self.stats.count_sent();
                if !self.transport.is_log() {
                    tracing::info!(id = %mail.id, kind = %mail.kind, attempt = mail.attempts, "mail sent");
                }
                if let Err(e) = self.store.mark_mail_sent(mail.id, &self.claimer, now).await {
                    // The lease runs out and the mail is sent again: at least once.
                    tracing::warn!(id = %mail.id, error = %e, "could not record a mail as sent");
                }
            }
            Err(e) => match after_failure(&self.settings, &mail, e.permanent, now) {
                AfterFailure::GiveUp => {
                    let why = if e.permanent {
                        format!("refused: {}", e.message)
                    } else {
                        format!("not sent in time; last error: {}", e.message)
                    };
                    self.give_up(&mail, &why).await;
                }
                AfterFailure::RetryAt(next) => {
                    tracing::warn!(id = %mail.id, kind = %mail.kind, attempt = mail.attempts,
                        error = %e.message, retry_in_ms = next.millis() - now.millis(),
                        "mail not sent; will retry");
                    if let Err(e) = self
                        .store
                        .reschedule_mail(mail.id, &self.claimer, next, &e.message)
                        .await
                    {
                        tracing::warn!(id = %mail.id, error = %e, "could not reschedule a mail");
                    }
                }
            },
        }
    }

    async fn give_up(&self, mail: &QueuedMail, error: &str) {
        self.stats.count_given_up();
        tracing::warn!(id = %mail.id, kind = %mail.kind, attempts = mail.attempts, error,
            "mail given up");
        if let Err(e) = self
            .store
            .mark_mail_failed(mail.id, &self.claimer, self.clock.now(), error)
            .await
        {
            tracing::warn!(id = %mail.id, error = %e, "could not record a mail as given up");
        }
    }

    async fn prune(&self, now: Timestamp) {
        let before = now.minus(RETENTION);
        loop {
            match self.store.delete_mails_finished_before(before, PRUNE_BATCH).await {
                Ok(n) if u64::from(PRUNE_BATCH) > n => return,
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "could not prune finished mails");
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mail(created: i64, expires: Option<i64>, attempts: u32) -> QueuedMail {
        QueuedMail {
            id: uuid::Uuid::now_v7(),
            recipient: "a@example.com".into(),
            kind: "test".into(),
            payload: "{}".into(),
            created_at: Timestamp(created),
            expires_at: expires.map(Timestamp),
            attempts,
            next_attempt_at: Timestamp(created),
            claimed_until: None,
            sent_at: None,
            failed_at: None,
            last_error: None,
        }
    }

    #[test]
    fn backoff_doubles_from_a_second_up_to_half_a_minute() {
        let s = DeliverySettings::new(Duration::from_secs(86_400));
        let waits: Vec<u64> = (1..=7).map(|n| s.backoff(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(s.backoff(u32::MAX), Duration::from_secs(30));
    }

    #[test]
    fn a_failure_is_retried_until_the_deadline_and_a_refusal_never() {
        let s = DeliverySettings::new(Duration::from_secs(60));
        let m = mail(0, None, 1);
        assert_eq!(
            after_failure(&s, &m, false, Timestamp(0)),
            AfterFailure::RetryAt(Timestamp(1000))
        );
        assert_eq!(after_failure(&s, &m, true, Timestamp(0)), AfterFailure::GiveUp);
        // The next attempt would fall past the general bound.
        assert_eq!(
            after_failure(&s, &m, false, Timestamp(59_500)),
            AfterFailure::GiveUp
        );
        // A mail's own expiry comes first when it is earlier.
        let m = mail(0, Some(5_000), 3);
        assert_eq!(s.deadline(&m), Timestamp(5_000));
        assert_eq!(
            after_failure(&s, &m, false, Timestamp(0)),
            AfterFailure::RetryAt(Timestamp(4_000))
        );
        assert_eq!(
            after_failure(&s, &m, false, Timestamp(1_000)),
            AfterFailure::GiveUp
        );
        assert_eq!(s.deadline(&mail(0, Some(999_999), 1)), Timestamp(60_000));
    }
}
