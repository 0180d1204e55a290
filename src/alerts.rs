//! Security alerts, delivered through an outbox. Raising an alert inserts one row into the
//! `alert_outbox` table (the request that raised it waits only for that insert, and a failed
//! insert is logged, never an error for the request). A [`Deliverer`] task on every instance
//! claims due alerts with a lease, POSTs them to the webhook signed with HMAC-SHA256, marks
//! them delivered on a 2xx and otherwise retries them with capped exponential backoff, with
//! no limit on attempts, across restarts: an alert is lost only if the database is.
//!
//! Delivery is at least once: a receiver that answered 2xx to a POST whose answer never came
//! back (or whose "delivered" mark failed to commit) sees the alert again, with the same `id`.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use ring::hmac;
use serde::Serialize;
use tokio::sync::{Notify, Semaphore};

use crate::domain::{Clock, SessionId, Timestamp, UserId};
use crate::store::{AuditEvent, NewAlert, Store, StoredAlert};

/// The contract's signature: `sha256=<hex HMAC-SHA256 of the raw body>`. Kept for receivers
/// written against it; it signs no time, so prefer [`TIMESTAMP_SIGNATURE_HEADER`].
pub const SIGNATURE_HEADER: &str = "x-tessera-signature";
/// When the POST was signed, in Unix seconds.
pub const TIMESTAMP_HEADER: &str = "x-tessera-timestamp";
/// `sha256=<hex HMAC-SHA256 of "<timestamp>.<raw body>">`: a captured alert cannot be replayed
/// later than the receiver's tolerance for old timestamps.
pub const TIMESTAMP_SIGNATURE_HEADER: &str = "x-tessera-timestamp-signature";

/// One POST may take this long; the lease a claim takes outlasts it.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a claimed alert stays out of other claimers' reach: longer than an attempt, so two
/// instances never post it at once, short enough that a crashed instance's claims come back.
const LEASE: Duration = Duration::from_secs(30);
/// POSTs in flight at once per instance: a slow receiver holds at most this many tasks.
const MAX_IN_FLIGHT: usize = 8;
/// How often the outbox is looked at when nothing woke the deliverer (alerts raised on other
/// instances, retries coming due).
const POLL_EVERY: Duration = Duration::from_millis(500);
/// Delivered alerts are deleted this many at a time.
const PRUNE_BATCH: u32 = 100;
/// Repeats of one event for one session within this window are one alert.
pub const COALESCE_WINDOW: Duration = Duration::from_secs(60);

/// The alert body. The contract fixes `id`, `event`, `at`, `user_id`, `session_id`, `ip` and
/// `user_agent`; `detail` is added for the events that need more.
#[derive(Clone, Debug, Serialize)]
pub struct Alert {
    /// Stable across retries and restarts: receivers deduplicate on it.
    pub id: uuid::Uuid,
    pub event: &'static str,
    pub at: Timestamp,
    pub user_id: Option<UserId>,
    pub session_id: Option<SessionId>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<serde_json::Value>,
}

impl Alert {
    /// Alerts with the same key within [`COALESCE_WINDOW`] are one: the event, its subject
    /// (session, else user, else the alert itself), who caused it (`detail.by`, so a user's
    /// revocation and reuse detection's stay two alerts) and the window the alert falls in.
    fn dedup_key(&self) -> String {
        let subject = match (self.session_id, self.user_id) {
            (Some(s), _) => s.to_string(),
            (None, Some(u)) => u.to_string(),
            (None, None) => self.id.to_string(),
        };
        let by = self
            .detail
            .as_ref()
            .and_then(|d| d.get("by"))
            .and_then(serde_json::Value::as_str)
            .unwrap_or("");
        let window = i64::try_from(COALESCE_WINDOW.as_millis()).unwrap_or(i64::MAX);
        format!(
            "{}:{subject}:{by}:{}",
            self.event,
            self.at.millis().div_euclid(window)
        )
    }
}

/// Where the service reports security events.
#[async_trait]
pub trait AlertSink: Send + Sync + 'static {
    /// Queues `alert` for delivery. Never fails: a failure is logged.
    async fn raise(&self, alert: Alert);
}

/// No webhook configured: alerts only reach the log and the audit table.
pub struct NoAlerts;

#[async_trait]
impl AlertSink for NoAlerts {
    async fn raise(&self, _alert: Alert) {}
}

/// Queues alerts in the outbox and wakes this instance's deliverer.
pub struct OutboxAlerts {
    store: Arc<dyn Store>,
    wake: Arc<Notify>,
    /// The events to queue; empty: all.
    events: Vec<String>,
}

impl OutboxAlerts {
    pub fn new(store: Arc<dyn Store>, wake: Arc<Notify>, events: Vec<String>) -> OutboxAlerts {
        OutboxAlerts { store, wake, events }
    }
}

impl Alert {
    /// The alert for a security event just audited: the same id, time, subject and detail
    /// (a JSON detail as JSON, any other as a string).
    pub fn from_audit(e: &AuditEvent) -> Alert {
        Alert {
            id: e.id,
            event: e.event.as_str(),
            at: e.at,
            user_id: e.user_id,
            session_id: e.session_id,
            ip: e.ip.clone(),
            user_agent: e.user_agent.clone(),
            detail: e.detail.as_ref().map(|d| {
                serde_json::from_str::<serde_json::Value>(d)
                    .ok()
                    .filter(serde_json::Value::is_object)
                    .unwrap_or_else(|| serde_json::Value::String(d.clone()))
            }),
        }
    }
}

#[async_trait]
impl AlertSink for OutboxAlerts {
    async fn raise(&self, alert: Alert) {
        if !self.events.is_empty() && !self.events.iter().any(|e| e == alert.event) {
            return;
        }
        let payload = match serde_json::to_string(&alert) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, event = alert.event, "could not encode alert");
                return;
            }
        };
        let row = NewAlert {
            id: alert.id,
            event: alert.event.to_owned(),
            dedup_key: alert.dedup_key(),
            payload,
            created_at: alert.at,
        };
        match self.store.insert_alert(&row).await {
            Ok(true) => self.wake.notify_one(),
            Ok(false) => tracing::debug!(event = alert.event, "alert coalesced with a recent one"),
            Err(e) => tracing::error!(error = %e, id = %alert.id, event = alert.event,
                "could not queue alert"),
        }
    }
}

/// A validated webhook: where, and the signing key.
pub struct Webhook {
    url: reqwest::Url,
    key: hmac::Key,
}

impl fmt::Debug for Webhook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The path may be a bearer secret (chat webhooks): the origin is enough to debug.
        f.debug_struct("Webhook")
            .field("origin", &self.url.origin().ascii_serialization())
            .finish_non_exhaustive()
    }
}

impl Webhook {
    /// Refuses what could never deliver a trustworthy alert: a URL that is not https (plain
    /// http only to a loopback host, where nothing on the network can read or change it), or
    /// no secret (an unsigned alert can be forged by anyone who can reach the receiver).
    /// Errors never quote the URL: its path or user part may be a secret, and they get logged.
    pub fn new(url: &str, secret: Option<&str>) -> Result<Webhook, String> {
        let url = reqwest::Url::parse(url).map_err(|e| format!("invalid webhook URL: {e}"))?;
        match url.scheme() {
            "https" => {}
            "http" if is_loopback(&url) => {}
            "http" => {
                return Err(
                    "webhook URL must be https (plain http is allowed only to a loopback host)".into(),
                )
            }
            _ => return Err("webhook URL must be https".into()),
        }
        let secret = secret
            .filter(|s| !s.is_empty())
            .ok_or("TESSERA_ALERT_WEBHOOK_SECRET is required with a webhook URL: alerts are signed")?;
        Ok(Webhook {
            url,
            key: hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes()),
        })
    }
}

fn is_loopback(url: &reqwest::Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    // An IPv6 host comes in brackets.
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => host.eq_ignore_ascii_case("localhost"),
    }
}

/// `sha256=<hex HMAC-SHA256 of message>`.
pub fn signature(key: &hmac::Key, message: &[u8]) -> String {
    let tag = hmac::sign(key, message);
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

/// The timestamped signature: over `"<timestamp>.<body>"`.
pub fn timestamp_signature(key: &hmac::Key, timestamp: i64, body: &[u8]) -> String {
    let mut message = Vec::with_capacity(body.len() + 21);
    message.extend_from_slice(timestamp.to_string().as_bytes());
    message.push(b'.');
    message.extend_from_slice(body);
    signature(key, &message)
}

/// How retries are spaced, and how long delivered alerts are kept.
#[derive(Clone, Copy, Debug)]
pub struct DeliverySettings {
    /// The wait after the first failed attempt; it doubles after each failure.
    pub retry_min: Duration,
    /// The longest wait between attempts.
    pub retry_max: Duration,
    /// Delivered alerts are deleted after this long (0: never).
    pub retention: Duration,
}

impl DeliverySettings {
    /// The wait after `attempts` failed attempts: `retry_min * 2^(attempts-1)`, at most `retry_max`.
    pub fn backoff(&self, attempts: u32) -> Duration {
        let doublings = attempts.saturating_sub(1).min(30);
        self.retry_min
            .checked_mul(1 << doublings)
            .unwrap_or(self.retry_max)
            .min(self.retry_max)
    }
}

/// Claims due alerts and POSTs them; one per instance, any number of instances.
pub struct Deliverer {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    webhook: Webhook,
    client: reqwest::Client,
    settings: DeliverySettings,
    /// Names this instance's claims: random per start, so a restart never trusts the leases
    /// of the process before it.
    claimer: String,
    wake: Arc<Notify>,
    in_flight: Arc<Semaphore>,
}

impl Deliverer {
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        webhook: Webhook,
        settings: DeliverySettings,
        wake: Arc<Notify>,
    ) -> Result<Deliverer, String> {
        let client = reqwest::Client::builder()
            .timeout(ATTEMPT_TIMEOUT)
            // A redirect would resend the alert somewhere nobody configured.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Deliverer {
            store,
            clock,
            webhook,
            client,
            settings,
            claimer: uuid::Uuid::new_v4().to_string(),
            wake,
            in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
        })
    }

    /// Delivers until the task is aborted.
    pub async fn run(self: Arc<Self>) {
        let mut last_prune = Timestamp(0);
        loop {
            let claimed = self.claim_and_post().await;
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

    /// Claims as many due alerts as there are free delivery slots and starts a POST for each;
    /// returns how many it claimed.
    async fn claim_and_post(self: &Arc<Self>) -> usize {
        let free = self.in_flight.available_permits();
        if free == 0 {
            return 0;
        }
        let now = self.clock.now();
        let limit = u32::try_from(free).unwrap_or(1);
        let claimed = match self
            .store
            .claim_alerts(&self.claimer, now, now.plus(LEASE), limit)
            .await
        {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "could not claim alerts");
                return 0;
            }
        };
        let n = claimed.len();
        for alert in claimed {
            let Ok(permit) = Arc::clone(&self.in_flight).try_acquire_owned() else {
                // Cannot happen (we claimed no more than the free permits, and only this task
                // takes them); the lease runs out and the alert comes back.
                break;
            };
            let me = Arc::clone(self);
            tokio::spawn(async move {
                me.deliver(alert).await;
                drop(permit);
                me.wake.notify_one();
            });
        }
        n
    }

    async fn deliver(&self, alert: StoredAlert) {
        let timestamp = self.clock.now().seconds();
        let body = alert.payload.into_bytes();
        let request = self
            .client
            .post(self.webhook.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(SIGNATURE_HEADER, signature(&self.webhook.key, &body))
            .header(TIMESTAMP_HEADER, timestamp.to_string())
            .header(
                TIMESTAMP_SIGNATURE_HEADER,
                timestamp_signature(&self.webhook.key, timestamp, &body),
            )
            .body(body);
        let delivered = match request.send().await {
            Ok(r) if r.status().is_success() => true,
            Ok(r) => {
                tracing::warn!(id = %alert.id, attempt = alert.attempts, status = %r.status(),
                    "alert webhook refused the alert");
                false
            }
            Err(e) => {
                // Without the URL: it may carry a secret.
                tracing::warn!(id = %alert.id, attempt = alert.attempts, error = %e.without_url(),
                    "alert webhook unreachable");
                false
            }
        };
        let now = self.clock.now();
        let recorded = if delivered {
            self.store
                .mark_alert_delivered(alert.id, &self.claimer, now)
                .await
        } else {
            let next = now.plus(self.settings.backoff(alert.attempts));
            self.store.reschedule_alert(alert.id, &self.claimer, next).await
        };
        if let Err(e) = recorded {
            // The lease runs out and the alert is tried again: at least once, never lost.
            tracing::warn!(id = %alert.id, error = %e, "could not record an alert delivery attempt");
        }
    }

    async fn prune(&self, now: Timestamp) {
        if self.settings.retention.is_zero() {
            return;
        }
        let before = now.minus(self.settings.retention);
        loop {
            match self
                .store
                .delete_alerts_delivered_before(before, PRUNE_BATCH)
                .await
            {
                Ok(n) if u64::from(PRUNE_BATCH) > n => return,
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "could not prune delivered alerts");
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::AuditKind;

    #[test]
    fn webhooks_need_https_or_loopback_and_a_secret() {
        assert!(Webhook::new("https://alerts.example/hook", Some("k")).is_ok());
        assert!(Webhook::new("http://127.0.0.1:9/hook", Some("k")).is_ok());
        assert!(Webhook::new("http://[::1]:9/hook", Some("k")).is_ok());
        assert!(Webhook::new("http://localhost:9/hook", Some("k")).is_ok());
        assert!(Webhook::new("http://alerts.example/hook", Some("k")).is_err());
        assert!(Webhook::new("http://10.0.0.1/hook", Some("k")).is_err());
        assert!(Webhook::new("https://alerts.example/hook", None).is_err());
        assert!(Webhook::new("https://alerts.example/hook", Some("")).is_err());
        assert!(Webhook::new("ftp://alerts.example/hook", Some("k")).is_err());
        assert!(Webhook::new("not a url", Some("k")).is_err());
    }

    #[test]
    fn a_refused_url_is_not_quoted() {
        for url in [
            "http://alerts.example/services/T0/s3cretpath",
            "ftp://user:s3cretpw@alerts.example/s3cretpath",
            "https://alerts.example:99999/s3cretpath",
        ] {
            let Err(said) = Webhook::new(url, Some("k")) else {
                panic!("{url} must be refused");
            };
            assert!(!said.contains("s3cret"), "{said}");
        }
    }

    #[test]
    fn signature_is_hex_hmac_sha256() {
        // RFC 4231 test case 2.
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"Jefe");
        assert_eq!(
            signature(&key, b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn the_timestamp_signature_covers_timestamp_dot_body() {
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"k");
        assert_eq!(
            timestamp_signature(&key, 1_700_000_000, b"{}"),
            signature(&key, b"1700000000.{}")
        );
        assert_ne!(
            timestamp_signature(&key, 1_700_000_000, b"{}"),
            timestamp_signature(&key, 1_700_000_001, b"{}")
        );
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let s = DeliverySettings {
            retry_min: Duration::from_secs(1),
            retry_max: Duration::from_secs(600),
            retention: Duration::ZERO,
        };
        assert_eq!(s.backoff(1), Duration::from_secs(1));
        assert_eq!(s.backoff(2), Duration::from_secs(2));
        assert_eq!(s.backoff(4), Duration::from_secs(8));
        assert_eq!(s.backoff(10), Duration::from_secs(512));
        assert_eq!(s.backoff(11), Duration::from_secs(600));
        assert_eq!(s.backoff(u32::MAX), Duration::from_secs(600));
    }

    #[test]
    fn repeats_within_the_window_share_a_dedup_key() {
        let session = SessionId(uuid::Uuid::new_v4());
        let alert = |at: i64| Alert {
            id: uuid::Uuid::new_v4(),
            event: AuditKind::RefreshTokenReused.as_str(),
            at: Timestamp(at),
            user_id: None,
            session_id: Some(session),
            ip: None,
            user_agent: None,
            detail: None,
        };
        assert_eq!(alert(120_000).dedup_key(), alert(179_999).dedup_key());
        assert_ne!(alert(120_000).dedup_key(), alert(180_000).dedup_key());
        let other = Alert {
            event: AuditKind::SessionRevoked.as_str(),
            ..alert(120_000)
        };
        assert_ne!(alert(120_000).dedup_key(), other.dedup_key());
    }
}
