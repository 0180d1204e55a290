//! Registration and login: the two flows that check or set a password.

use std::sync::Arc;

use super::attempt::Attempt;
use super::{AuthError, AuthService, ClientInfo, LoginOutcome, TokenGrant, Transport, UserView};
use crate::crypto::{self, RefreshToken};
use crate::domain::{AuditKind, Email, FieldError, Password, SessionId, Timestamp, UserId};
use crate::store::{AuditEvent, FailureKey, SessionRecord, StoreError, UserRecord};

impl AuthService {
    pub async fn register(
        &self,
        email: &str,
        password: &str,
        user_metadata: Option<&serde_json::Value>,
        client: &ClientInfo,
    ) -> Result<UserView, AuthError> {
        let email = Email::parse(email);
        let password = Password::parse(password);
        let metadata = user_metadata
            .map(|m| super::metadata::metadata_text("user_metadata", m))
            .transpose();
        let (email, password, metadata) = match (email, password, metadata) {
            (Ok(e), Ok(p), Ok(m)) => (e, p, m),
            (e, p, m) => {
                let mut errors: Vec<_> = [e.err(), p.err()].into_iter().flatten().collect();
                if let Err(AuthError::Validation(more)) = m {
                    errors.extend(more);
                }
                return Err(AuthError::Validation(errors));
            }
        };
        let hash = self
            .hashing
            .hash_in_turn(move |hasher| hasher.hash(&password))
            .await??;
        let fresh = UserRecord::new(email, hash, self.clock.now());
        let user = match metadata {
            Some(user_metadata) => UserRecord {
                user_metadata,
                ..fresh
            },
            None => fresh,
        };
        match self.store.insert_user(&user).await {
            Ok(()) => {}
            Err(StoreError::Conflict(_)) => return Err(AuthError::EmailTaken),
            Err(e) => return Err(e.into()),
        }
        self.events
            .audit(AuditKind::UserRegistered, Some(user.id), None, client, None)
            .await;
        // The account exists either way; a lost mail is what `email/verify/resend` is for.
        if let Err(e) = self.send_verification(&user).await {
            tracing::warn!(error = %e, "could not queue the verification mail");
        }
        Ok(UserView::from(&user))
    }

    /// Checks a password and opens a session. `held_refresh_token` is a refresh token the
    /// request carried (body or refresh cookie), if any: a device that proves it holds a live
    /// session of the account is counted on that session's own budget, through a lock (see
    /// `lockout`).
    pub async fn login(
        &self,
        email: &str,
        password: &str,
        transport: Transport,
        held_refresh_token: Option<&str>,
        client: &ClientInfo,
    ) -> Result<LoginOutcome, AuthError> {
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
        // Reserved before hashing, so that concurrent guesses cannot all pass the lock.
        let attempt = match &email {
            Some(e) => self.reserve_attempt(e, user.as_ref(), held_refresh_token).await?,
            None => None,
        };
        let stored = user
            .as_ref()
            .map_or_else(|| self.hashing.dummy_hash().clone(), |u| u.password_hash.clone());
        let password = password.to_owned();
        // An imported hash with more memory than ours is charged for it, so the memory of the
        // hashes running at once stays within the budget whatever was imported.
        let permit = self.hashing.permit(self.hashing.memory_units(&stored)).await?;
        // A hash imported from another system (bcrypt, other argon2 parameters) that verifies
        // is replaced by our own, computed here while the password is at hand; the dummy hash
        // never needs it, so an unknown email costs one hash, like a wrong password.
        let hashing = self.hashing.spawn(permit, move |hasher| {
            let matches = hasher.verify(&password, &stored);
            let upgrade = (matches && hasher.needs_upgrade(&stored))
                .then(|| hasher.rehash_verified(&password).ok().map(|new| (stored, new)))
                .flatten();
            (matches, upgrade)
        });
        // Once the hash has started, it and the record of its outcome run to the end on a
        // task of their own, even if this request is dropped because the client hung up: the
        // attempt was made and must be on record. (A client that leaves while still queued for
        // a permit made no attempt: nothing was checked, and its reservation is handed back.)
        let failure = self.events.event(
            AuditKind::LoginFailed,
            user.as_ref().map(|u| u.id),
            None,
            client,
            None,
        );
        // A right password for an account with a second factor is only half a login: it clears
        // no failures (wrong codes count on the same lock), it hands its reservation back. The
        // factors are read only once the password matched, so a wrong password (or an unknown
        // address) costs no extra read and its timing says nothing about factors.
        let (events, clock, known) = (
            self.events.clone(),
            Arc::clone(&self.clock),
            user.as_ref().map(|u| u.id),
        );
        let store = Arc::clone(&self.store);
        let (matches, upgrade, factors) = tokio::spawn(async move {
            let (matches, upgrade) = hashing.await?;
            let mut factors = None;
            match known {
                Some(id) if matches => {
                    let found = super::mfa::factors_of(store.as_ref(), id).await;
                    let gated = found.as_ref().map_or(true, |f| f.any_active());
                    if let Some(attempt) = attempt {
                        if gated {
                            attempt.released().await;
                        } else {
                            attempt.succeeded().await;
                        }
                    }
                    factors = Some(found?);
                }
                _ => {
                    let at = clock.now();
                    if let Some(attempt) = attempt {
                        attempt.failed(events.alerts(), &failure, at).await;
                    }
                    events.write(AuditEvent { at, ..failure }).await;
                }
            }
            Ok::<_, AuthError>((matches, upgrade, factors))
        })
        .await
        .map_err(|e| AuthError::Internal(e.to_string()))??;
        let user = match user {
            Some(u) if matches => u,
            _ => return Err(AuthError::InvalidCredentials),
        };
        // Only to whoever proved the password: nobody else learns the account exists.
        if self.policy.email.require_verified && user.email_verified_at.is_none() {
            return Err(AuthError::EmailNotVerified);
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
        let amr = vec!["pwd".to_owned()];
        // An account with a second factor gets no session for its password alone.
        if let Some(factors) = factors.filter(|f| f.any_active()) {
            let challenge = self.issue_mfa_challenge(&user, transport, amr, &factors).await?;
            return Ok(LoginOutcome::MfaRequired(challenge));
        }
        let now = self.clock.now();
        self.open_session(&user, user.credential_epoch, transport, client, amr, now, detail)
            .await
            .map(LoginOutcome::Tokens)
    }

    /// Opens a session for `user` (under `credential_epoch`: a password changed or the account
    /// disabled since leaves none) whose holder proved `amr` at `auth_time`, and answers its
    /// tokens: the session limit applied, the login audited, a new device announced.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn open_session(
        &self,
        user: &UserRecord,
        credential_epoch: i64,
        transport: Transport,
        client: &ClientInfo,
        amr: Vec<String>,
        auth_time: Timestamp,
        detail: Option<String>,
    ) -> Result<TokenGrant, AuthError> {
        // Checked before anything is written: no session is created that gets no tokens.
        let keys = self.keys.for_signing().await?;
        let now = self.clock.now();
        let absolute = now.plus(self.policy.session_ttl);
        let session = SessionRecord {
            user_agent: client.user_agent.clone(),
            ip: client.ip.clone(),
            csrf_token: match transport {
                Transport::Body => None,
                Transport::Cookie => Some(crypto::random_token(&self.rng, 32)?),
            },
            ..SessionRecord::opened(
                user.id,
                now,
                absolute,
                now.plus(self.policy.refresh_ttl).min(absolute),
                amr,
                auth_time,
            )
        };
        let refresh = RefreshToken::issue(&self.rng, session.id, 0)?;
        // Read before this login's session exists, which would match itself.
        let new_device = self.is_new_device(user.id, client).await;
        // Only under the credential just verified: a password changed (or the account
        // disabled) since it was read leaves no session behind for the old password.
        if !self
            .store
            .insert_session(&session, &refresh.hash(), credential_epoch)
            .await?
        {
            // The same answer as a wrong password, after the same work, so disabling an
            // account tells nobody anything about it, not even someone who holds its password.
            let disabled = match self.store.find_account(&user.email).await {
                Ok(Some(account)) => account.disabled_at.is_some(),
                _ => false,
            };
            let detail = if disabled {
                "account disabled"
            } else {
                "password changed during the login"
            };
            self.events
                .audit(
                    AuditKind::LoginFailed,
                    Some(user.id),
                    None,
                    client,
                    Some(detail.into()),
                )
                .await;
            return Err(AuthError::InvalidCredentials);
        }
        let evicted = self
            .store
            .revoke_sessions_over_limit(user.id, self.policy.max_sessions, now)
            .await?;
        if evicted > 0 {
            self.revocations.learn_own().await;
            let detail = format!("{evicted} least recently used session(s) revoked: session limit");
            self.events
                .audit(
                    AuditKind::SessionEvicted,
                    Some(user.id),
                    None,
                    client,
                    Some(detail),
                )
                .await;
        }
        self.events
            .audit(
                AuditKind::LoginSucceeded,
                Some(user.id),
                Some(session.id),
                client,
                detail,
            )
            .await;
        if new_device {
            self.events
                .security(
                    AuditKind::LoginNewDevice,
                    Some(user.id),
                    Some(session.id),
                    client,
                    None,
                )
                .await;
            self.notify_new_device(user, client, now).await;
        }
        self.grant(&keys, user, &session, refresh, now)
    }

    /// Is this login's device new to the account: no session of it (live, or ended and not
    /// swept yet) and no successful login on record came with the same user agent from the
    /// same network ([`network`])? An account's very first login is no news (there is no
    /// device it could be new beside). A failed read says no: the login goes on.
    pub(super) async fn is_new_device(&self, user: UserId, client: &ClientInfo) -> bool {
        let known = match self.store.find_known_devices(user, KNOWN_DEVICES_READ).await {
            Ok(known) => known,
            Err(e) => {
                tracing::warn!(error = %e, "could not read the account's known devices");
                return false;
            }
        };
        let this = network(client.ip.as_deref());
        let family = agent_family(client.user_agent.as_deref());
        !known.is_empty()
            && !known
                .iter()
                .any(|(agent, ip)| agent_family(agent.as_deref()) == family && network(ip.as_deref()) == this)
    }
}

/// A user agent without its version numbers (`Firefox/121.0` → `Firefox/`), so that a
/// browser's update alone is no new device.
fn agent_family(agent: Option<&str>) -> Option<String> {
    agent.map(|a| {
        a.chars()
            .filter(|c| !c.is_ascii_digit() && *c != '.' && *c != '_')
            .collect()
    })
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
    /// Reserves a password check under the per-account lock (`None` when locking is off): on
    /// the account's email, or, for a device proving it holds a live session of the account,
    /// on that session's own budget, which the account's lock does not stop.
    pub(super) async fn reserve_attempt(
        &self,
        email: &Email,
        user: Option<&UserRecord>,
        held_refresh_token: Option<&str>,
    ) -> Result<Option<Attempt>, AuthError> {
        let lockout = self.policy.lockout;
        if !lockout.enabled() {
            return Ok(None);
        }
        let (key, policy, on_account) = match self.proven_session(held_refresh_token, user).await {
            Some(session) => (FailureKey::session(session), lockout.for_session(), false),
            None => (FailureKey::account(email), lockout, true),
        };
        Attempt::reserve(&self.store, &self.clock, key, policy, on_account)
            .await
            .map(Some)
    }

    /// The live session of `user` whose current refresh token is `refresh_token`, if any.
    /// Only the refresh token proves a device: access tokens are shown to every resource
    /// server, proxy and log, and an old one names a session for as long as it lives.
    async fn proven_session(
        &self,
        refresh_token: Option<&str>,
        user: Option<&UserRecord>,
    ) -> Option<SessionId> {
        let (token, user) = (RefreshToken::parse(refresh_token?)?, user?);
        let found = match self.store.find_refresh_token(&token.key()).await {
            Ok(found) => found?,
            Err(e) => {
                tracing::warn!(error = %e, "could not read a refresh token held at login");
                return None;
            }
        };
        let session = found.session;
        let live = session.revoked_at.is_none() && self.clock.now() < session.expires_at();
        (session.user_id == user.id && found.generation == session.generation && live).then_some(session.id)
    }
}

#[cfg(test)]
mod tests {
    use super::{agent_family, network};

    #[test]
    fn an_agent_family_ignores_versions() {
        let chrome = |v: &str| {
            format!("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{v} Safari/537.36")
        };
        assert_eq!(
            agent_family(Some(&chrome("131.0.0.0"))),
            agent_family(Some(&chrome("132.0.6834.83")))
        );
        assert_ne!(
            agent_family(Some("Firefox/120.0")),
            agent_family(Some("Chromium/120.0"))
        );
        assert_eq!(agent_family(None), None);
    }

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
