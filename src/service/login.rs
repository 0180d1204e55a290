//! Registration and login: the two flows that check or set a password.

use std::sync::Arc;
use std::time::Duration;

use super::lockout::LockoutPolicy;
use super::{
    record_security_event, write_audit, AuthError, AuthService, ClientInfo, TokenGrant, Transport, UserView,
};
use crate::alerts::AlertSink;
use crate::crypto::{self, RefreshToken};
use crate::domain::{Email, FieldError, Password, SessionId, Timestamp, UserId};
use crate::store::{AuditEvent, SessionRecord, Store, StoreError, UserRecord};

impl AuthService {
    pub async fn register(
        &self,
        email: &str,
        password: &str,
        client: &ClientInfo,
    ) -> Result<UserView, AuthError> {
        let email = Email::parse(email);
        let password = Password::parse(password);
        let (email, password) = match (email, password) {
            (Ok(e), Ok(p)) => (e, p),
            (e, p) => {
                let errors = [e.err(), p.err()].into_iter().flatten().collect();
                return Err(AuthError::Validation(errors));
            }
        };
        let hash = self.hash_in_turn(move |hasher| hasher.hash(&password)).await??;
        let user = UserRecord {
            id: UserId::new(),
            email,
            password_hash: hash,
            roles: Vec::new(),
            created_at: self.clock.now(),
        };
        match self.store.insert_user(&user).await {
            Ok(()) => {}
            Err(StoreError::Conflict(_)) => return Err(AuthError::EmailTaken),
            Err(e) => return Err(e.into()),
        }
        self.audit("user_registered", Some(user.id), None, client, None)
            .await;
        Ok(UserView::from(&user))
    }

    /// Checks a password and opens a session. `held_access_token` is an access token the
    /// request carried (bearer header or access cookie), if any: a device that holds a live
    /// session of the account is let through a lock (see `lockout`).
    pub async fn login(
        &self,
        email: &str,
        password: &str,
        transport: Transport,
        held_access_token: Option<&str>,
        client: &ClientInfo,
    ) -> Result<TokenGrant, AuthError> {
        let mut errors = Vec::new();
        if email.trim().is_empty() {
            errors.push(FieldError::new("email", "must not be empty"));
        }
        if password.is_empty() {
            errors.push(FieldError::new("password", "must not be empty"));
        } else if password.chars().count() > Password::MAX_CHARS {
            errors.push(FieldError::new("password", "must be at most 1024 characters"));
        }
        if !errors.is_empty() {
            return Err(AuthError::Validation(errors));
        }
        // Anything that is not a valid address cannot belong to a user: same answer as a
        // wrong password, after the same amount of work.
        let email = Email::parse(email).ok();
        let user = match &email {
            Some(e) => self.store.find_user_by_email(e).await?,
            None => None,
        };
        let had_failures = match &email {
            Some(e) => self.check_lockout(e, user.as_ref(), held_access_token).await?,
            None => false,
        };
        let stored = user
            .as_ref()
            .map_or_else(|| self.dummy_hash.clone(), |u| u.password_hash.clone());
        let password = password.to_owned();
        let permit = self.hashing_permit().await?;
        // A hash imported from another system (bcrypt, other argon2 parameters) that verifies
        // is replaced by our own, computed here while the password is at hand; the dummy hash
        // never needs it, so an unknown email costs one hash, like a wrong password.
        let hashing = self.spawn_hash(permit, move |hasher| {
            let matches = hasher.verify(&password, &stored);
            let upgrade = (matches && hasher.needs_upgrade(&stored))
                .then(|| hasher.rehash_verified(&password).ok().map(|new| (stored, new)))
                .flatten();
            (matches, upgrade)
        });
        // Once the hash has started, it and the audit record of a failure run to the end on a
        // task of their own, even if this request is dropped because the client hung up: the
        // attempt was made and must be on record. (A client that leaves while still queued for
        // a permit made no attempt: nothing was checked.)
        let failure = self.audit_event("login_failed", user.as_ref().map(|u| u.id), None, client, None);
        let (store, clock, known) = (Arc::clone(&self.store), Arc::clone(&self.clock), user.is_some());
        let alerts = Arc::clone(&self.alerts);
        let (lockout, counted) = (
            self.policy.lockout,
            email.clone().filter(|_| self.policy.lockout.enabled()),
        );
        let (matches, upgrade) = tokio::spawn(async move {
            let (matches, upgrade) = hashing.await.map_err(|e| AuthError::Internal(e.to_string()))?;
            if !(matches && known) {
                let at = clock.now();
                if let Some(email) = counted {
                    count_failure(store.as_ref(), alerts.as_ref(), &email, lockout, &failure, at).await;
                }
                write_audit(store.as_ref(), AuditEvent { at, ..failure }).await;
            }
            Ok::<_, AuthError>((matches, upgrade))
        })
        .await
        .map_err(|e| AuthError::Internal(e.to_string()))??;
        let user = match user {
            Some(u) if matches => u,
            _ => return Err(AuthError::InvalidCredentials),
        };
        if let (true, Some(email)) = (had_failures, &email) {
            // The owner got in: earlier guesses no longer count against the account.
            if let Err(e) = self.store.delete_login_failures(email).await {
                tracing::warn!(error = %e, "could not clear failed logins");
            }
        }

        // Checked before anything is written: no session is created that gets no tokens.
        let keys = self.signing_keys().await?;
        let now = self.clock.now();
        let absolute = now.plus(self.policy.session_ttl);
        let session = SessionRecord {
            id: SessionId::new(),
            user_id: user.id,
            created_at: now,
            last_used_at: now,
            absolute_expires_at: absolute,
            refresh_expires_at: now.plus(self.policy.refresh_ttl).min(absolute),
            revoked_at: None,
            revoked_reason: None,
            user_agent: client.user_agent.clone(),
            ip: client.ip.clone(),
            generation: 0,
            rotated_at: None,
            sealed_current: None,
            csrf_token: match transport {
                Transport::Body => None,
                Transport::Cookie => Some(crypto::random_token(&self.rng, 32)?),
            },
        };
        let refresh = RefreshToken::issue(&self.rng, session.id, 0)?;
        // Read before this login's session exists, which would match itself.
        let new_device = self.is_new_device(user.id, client).await;
        if !self.store.insert_session(&session, &refresh.hash()).await? {
            // Disabled (`tessera users disable`): the same answer as a wrong password, after
            // the same work, so disabling an account tells nobody anything about it, not even
            // someone who holds its password.
            self.audit(
                "login_failed",
                Some(user.id),
                None,
                client,
                Some("account disabled".into()),
            )
            .await;
            return Err(AuthError::InvalidCredentials);
        }
        let mut detail = None;
        if let Some((old, new)) = upgrade {
            // Only if unchanged: a password set meanwhile is not overwritten. A failure
            // leaves the imported hash, which the next login upgrades.
            match self.store.upgrade_password_hash(user.id, &old, &new).await {
                Ok(true) => detail = Some("password hash upgraded to argon2id".to_owned()),
                Ok(false) => {}
                Err(e) => tracing::warn!(user = %user.id, error = %e, "could not upgrade a password hash"),
            }
        }
        let evicted = self
            .store
            .revoke_sessions_over_limit(user.id, self.policy.max_sessions, now)
            .await?;
        if evicted > 0 {
            self.learn_own_revocations().await;
            let detail = format!("{evicted} least recently used session(s) revoked: session limit");
            self.audit("session_evicted", Some(user.id), None, client, Some(detail))
                .await;
        }
        self.audit("login_succeeded", Some(user.id), Some(session.id), client, detail)
            .await;
        if new_device {
            self.security_event("login_new_device", Some(user.id), Some(session.id), client, None)
                .await;
        }
        self.grant(&keys, &user, &session, refresh, now)
    }

    /// Is this login's device new to the account: no session of it (live, or ended and not
    /// swept yet) and no successful login on record came with the same user agent from the
    /// same network ([`network`])? An account's very first login is no news (there is no
    /// device it could be new beside). A failed read says no: the login goes on.
    async fn is_new_device(&self, user: UserId, client: &ClientInfo) -> bool {
        let known = match self.store.find_known_devices(user, KNOWN_DEVICES_READ).await {
            Ok(known) => known,
            Err(e) => {
                tracing::warn!(error = %e, "could not read the account's known devices");
                return false;
            }
        };
        let this = network(client.ip.as_deref());
        !known.is_empty()
            && !known
                .iter()
                .any(|(agent, ip)| *agent == client.user_agent && network(ip.as_deref()) == this)
    }
}

/// How many known (user agent, IP) pairs a login compares itself with, at most.
const KNOWN_DEVICES_READ: u32 = 1000;

/// The network an address is in, for telling devices apart: its IPv4 /24 or IPv6 /48 (a
/// home or office whose address changes within its provider's block is still the same place).
/// Text that is not an address stands for itself.
fn network(ip: Option<&str>) -> Option<String> {
    let ip = ip?;
    Some(match ip.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(v4)) => {
            let [a, b, c, _] = v4.octets();
            format!("{a}.{b}.{c}.0/24")
        }
        Ok(std::net::IpAddr::V6(v6)) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}::/48", s[0], s[1], s[2])
        }
        Err(_) => ip.to_owned(),
    })
}

impl AuthService {
    /// Refuses a login to a locked account, unless the request comes from a device holding a
    /// live session of it. Returns whether failures are on record (to clear on success).
    pub(super) async fn check_lockout(
        &self,
        email: &Email,
        user: Option<&UserRecord>,
        held_access_token: Option<&str>,
    ) -> Result<bool, AuthError> {
        if !self.policy.lockout.enabled() {
            return Ok(false);
        }
        let Some(record) = self.store.find_login_failures(email).await? else {
            return Ok(false);
        };
        let now = self.clock.now();
        if let Some(until) = self.policy.lockout.locked_until(&record, now) {
            if !self.holds_live_session(held_access_token, user, now).await {
                let wait = Duration::from_millis(u64::try_from(until.0 - now.0).unwrap_or(0));
                return Err(AuthError::AccountLocked(wait));
            }
        }
        Ok(true)
    }

    /// Is `access_token` (expired or not) one of `user`'s, for a session still live?
    async fn holds_live_session(
        &self,
        access_token: Option<&str>,
        user: Option<&UserRecord>,
        now: Timestamp,
    ) -> bool {
        let (Some(token), Some(user)) = (access_token, user) else {
            return false;
        };
        let Ok(claims) = self.verify_access_token(token, true).await else {
            return false;
        };
        if claims.user_id() != user.id {
            return false;
        }
        matches!(
            self.store.find_session(claims.session_id()).await,
            Ok(Some(s)) if s.user_id == user.id && s.revoked_at.is_none() && now < s.expires_at()
        )
    }
}

/// Counts a failed login against its email; the failure that locks the account is audited
/// (and logged, and alerted) as `account_locked`, and the failure that reaches
/// [`LockoutPolicy::burst`] within a window as `login_failed_burst` (so at most once per
/// window). Errors are logged: the login has failed either way.
pub(super) async fn count_failure(
    store: &dyn Store,
    alerts: &dyn AlertSink,
    email: &Email,
    lockout: LockoutPolicy,
    failure: &AuditEvent,
    at: Timestamp,
) {
    match store
        .record_login_failure(
            email,
            Box::new(move |previous| lockout.after_failure(previous, at)),
        )
        .await
    {
        Ok(record) if record.just_locked() => {
            let until = record.locked_until.unwrap_or(at);
            tracing::warn!(user = ?failure.user_id, ip = ?failure.ip, locked_for_ms = until.0 - at.0,
                "too many failed logins; account locked");
            let detail = format!(
                "locked for {} s after {} failed logins",
                (until.0 - at.0 + 999) / 1000,
                lockout.threshold
            );
            let locked = AuditEvent {
                id: uuid::Uuid::now_v7(),
                event: "account_locked",
                at,
                detail: Some(detail),
                ..failure.clone()
            };
            record_security_event(store, alerts, locked).await;
        }
        // Only for an existing account: guesses at unknown emails concern no one to alert.
        Ok(record) if failure.user_id.is_some() && Some(record.failures) == lockout.burst() => {
            let detail = format!(
                "{} failed logins within {} s (the account locks at {})",
                record.failures,
                lockout.window.as_secs(),
                lockout.threshold
            );
            let burst = AuditEvent {
                id: uuid::Uuid::now_v7(),
                event: "login_failed_burst",
                at,
                detail: Some(detail),
                ..failure.clone()
            };
            record_security_event(store, alerts, burst).await;
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "could not count a failed login"),
    }
}

#[cfg(test)]
mod tests {
    use super::network;

    #[test]
    fn a_network_is_an_ipv4_slash_24_or_an_ipv6_slash_48() {
        assert_eq!(network(Some("203.0.113.7")), network(Some("203.0.113.250")));
        assert_ne!(network(Some("203.0.113.7")), network(Some("203.0.114.7")));
        assert_eq!(
            network(Some("2001:db8:1:2::1")),
            network(Some("2001:db8:1:ffff::9"))
        );
        assert_ne!(network(Some("2001:db8:1::1")), network(Some("2001:db8:2::1")));
        assert_eq!(network(Some("unknown")), Some("unknown".to_owned()));
        assert_eq!(network(None), None);
    }
}
