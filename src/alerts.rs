//! Security alerts: when reuse detection revokes a session, a JSON document is POSTed to the
//! configured webhook, signed with HMAC-SHA256, and retried with backoff until a 2xx.
//! Delivery runs in the background so it never slows or fails the request that triggered it.

use std::fmt;
use std::time::Duration;

use ring::hmac;
use serde::Serialize;

use crate::domain::{SessionId, Timestamp, UserId};

/// Give up after this many attempts (about 40 minutes with the backoff below).
const MAX_ATTEMPTS: u32 = 45;
const MAX_BACKOFF: Duration = Duration::from_secs(60);
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
pub const SIGNATURE_HEADER: &str = "x-tessera-signature";

/// The alert body, as the contract defines it.
#[derive(Clone, Debug, Serialize)]
pub struct ReuseAlert {
    pub id: uuid::Uuid,
    pub event: &'static str,
    pub at: Timestamp,
    pub user_id: UserId,
    pub session_id: SessionId,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

/// Where the service reports security events. Implementations must not block.
pub trait AlertSink: Send + Sync + 'static {
    fn refresh_token_reused(&self, alert: ReuseAlert);
}

/// No webhook configured: alerts only reach the log and the audit table.
pub struct NoAlerts;

impl AlertSink for NoAlerts {
    fn refresh_token_reused(&self, _alert: ReuseAlert) {}
}

pub struct WebhookAlerts {
    client: reqwest::Client,
    url: reqwest::Url,
    key: hmac::Key,
}

impl fmt::Debug for WebhookAlerts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookAlerts")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl WebhookAlerts {
    /// Refuses what could never deliver a trustworthy alert: a URL that is not http(s), or
    /// no secret (an unsigned alert can be forged by anyone who can reach the receiver).
    pub fn new(url: &str, secret: Option<&str>) -> Result<WebhookAlerts, String> {
        let url = reqwest::Url::parse(url).map_err(|e| format!("invalid URL {url:?}: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!("URL {url} must be http or https"));
        }
        let secret = secret
            .filter(|s| !s.is_empty())
            .ok_or("TESSERA_ALERT_WEBHOOK_SECRET is required with a webhook URL: alerts are signed")?;
        let client = reqwest::Client::builder()
            .timeout(ATTEMPT_TIMEOUT)
            .build()
            .map_err(|e| e.to_string())?;
        Ok(WebhookAlerts {
            client,
            url,
            key: hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes()),
        })
    }
}

/// `sha256=<hex HMAC-SHA256 of the raw body>`.
pub fn signature(key: &hmac::Key, body: &[u8]) -> String {
    let tag = hmac::sign(key, body);
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

impl AlertSink for WebhookAlerts {
    fn refresh_token_reused(&self, alert: ReuseAlert) {
        let body = match serde_json::to_vec(&alert) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "could not encode alert");
                return;
            }
        };
        let signature = signature(&self.key, &body);
        let client = self.client.clone();
        let url = self.url.clone();
        tokio::spawn(async move {
            let mut backoff = Duration::from_secs(1);
            for attempt in 1..=MAX_ATTEMPTS {
                let request = client
                    .post(url.clone())
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .header(SIGNATURE_HEADER, &signature)
                    .body(body.clone());
                match request.send().await {
                    Ok(r) if r.status().is_success() => return,
                    Ok(r) => tracing::warn!(attempt, status = %r.status(), "alert webhook refused the alert"),
                    Err(e) => tracing::warn!(attempt, error = %e, "alert webhook unreachable"),
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
            tracing::error!(id = %alert.id, "alert webhook gave up after {MAX_ATTEMPTS} attempts");
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhooks_need_an_http_url_and_a_secret() {
        assert!(WebhookAlerts::new("https://alerts.example/hook", Some("k")).is_ok());
        assert!(WebhookAlerts::new("http://127.0.0.1:9/hook", Some("k")).is_ok());
        assert!(WebhookAlerts::new("https://alerts.example/hook", None).is_err());
        assert!(WebhookAlerts::new("https://alerts.example/hook", Some("")).is_err());
        assert!(WebhookAlerts::new("ftp://alerts.example/hook", Some("k")).is_err());
        assert!(WebhookAlerts::new("not a url", Some("k")).is_err());
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
}
