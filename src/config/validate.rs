//! The checks that span settings or bound one beyond its type, run once on the merged
//! configuration.

use super::{Config, ConfigError};

impl Config {
    /// Every check here names the setting it refuses; the messages are the operator's only
    /// guide, so keep them as they are.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |name, message: &str| {
            Err(ConfigError::Invalid {
                name,
                message: message.to_owned(),
            })
        };
        if self.access_ttl.is_zero() {
            return invalid("access_ttl", "must be positive");
        }
        if self.refresh_ttl.is_zero() {
            return invalid("refresh_ttl", "must be positive");
        }
        if self.session_ttl.is_zero() {
            return invalid("session_ttl", "must be positive");
        }
        for (name, ttl) in [
            ("email_verify_ttl", self.email_verify_ttl),
            ("password_reset_ttl", self.password_reset_ttl),
            ("email_link_ttl", self.email_link_ttl),
            ("reauthentication_max_age", self.reauthentication_max_age),
        ] {
            if ttl.is_zero() {
                return invalid(name, "must be positive");
            }
        }
        if self.max_sessions == 0 {
            return invalid("max_sessions", "must be at least 1");
        }
        if self.lockout_threshold > 0 && (self.lockout_window.is_zero() || self.lockout_cooldown.is_zero()) {
            return invalid(
                "lockout_window",
                "and lockout_cooldown must be positive when locking is on",
            );
        }
        if self.client_timeout.is_zero() {
            return invalid("client_timeout", "must be positive");
        }
        if self.hash_concurrency == 0 {
            return invalid("hash_concurrency", "must be at least 1");
        }
        if self.max_connections == 0 {
            return invalid("max_connections", "must be at least 1");
        }
        if self.database_max_connections == 0 {
            return invalid("database_max_connections", "must be at least 1");
        }
        if let Some(colour) = &self.accent_color {
            let hex = colour.strip_prefix('#').unwrap_or_default();
            if !matches!(hex.len(), 3 | 6) || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return invalid("accent_color", "must be #rgb or #rrggbb");
            }
        }
        // A zero wait would retry a dead webhook in a tight loop.
        if self.alert_retry_min.is_zero() {
            return invalid("alert_retry_min", "must be positive");
        }
        if self.alert_retry_max < self.alert_retry_min {
            return invalid("alert_retry_max", "must be at least alert_retry_min");
        }
        if let Some(from) = &self.mail_from {
            if from.parse::<lettre::message::Mailbox>().is_err() {
                return invalid(
                    "mail_from",
                    "must be an address (no-reply@example.com) or a name and one (Example <no-reply@example.com>)",
                );
            }
        } else if self.smtp_url.is_some() {
            return invalid("mail_from", "is required with smtp_url");
        }
        if self.mail_give_up_after.is_zero() {
            return invalid("mail_give_up_after", "must be positive");
        }
        // Inconsistent passkey settings refuse the start; an unusable default only turns
        // passkeys off (`Config::passkeys`).
        self.passkeys()?;
        Ok(())
    }
}
