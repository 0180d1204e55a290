//! The second step of a sign-in: a right password (or sign-in link) for an account with a
//! second factor yields a challenge instead of tokens ([`AuthService::issue_mfa_challenge`]),
//! and `verify_mfa` exchanges the challenge and a code for the session.
//!
//! A challenge is 256 random bits, stored only as its SHA-256, valid for
//! [`MFA_CHALLENGE_TTL`], used once, and dead after [`MFA_CHALLENGE_MAX_FAILURES`] wrong
//! codes. It is bound to the account, the credential epoch the first step passed under (a
//! password changed meanwhile leaves it without a session), the transport the login asked
//! for and, in cookie transport, the browser: the SHA-256 of the `tessera_mfa` cookie set with
//! it must come back. Wrong codes count on the account's lock like wrong passwords; the first
//! step's right password clears nothing (see `login`), so knowing the password buys no more
//! code guesses than the lock allows.

use std::time::Duration;

use super::email::token_hash;
use super::mfa::{FactorProof, FactorsView, HolderProof};
use super::{AuthContext, AuthError, AuthService, ClientInfo, MfaChallenge, TokenGrant, Transport};
use crate::crypto::{self, RefreshToken};
use crate::domain::AuditKind;
use crate::store::{MfaChallengeRecord, Rotation, SessionRecord, UserRecord};

/// How long a second step may take.
pub const MFA_CHALLENGE_TTL: Duration = Duration::from_secs(300);
/// Wrong codes a challenge takes before it dies (the account's lock may stop them sooner).
pub const MFA_CHALLENGE_MAX_FAILURES: i64 = 5;
/// Ours are 43 characters.
const MAX_CHALLENGE_CHARS: usize = 128;

/// `amr` after a second factor: the first step's, the factor's, and `mfa` (RFC 8176).
pub(super) fn with_factor(mut amr: Vec<String>, factor: &str) -> Vec<String> {
    for value in [factor, "mfa"] {
        if !amr.iter().any(|a| a == value) {
            amr.push(value.to_owned());
        }
    }
    amr
}

impl AuthService {
    /// The challenge of a first step that `user` passed (proving `amr`), for an account with
    /// `factors`.
    pub(super) async fn issue_mfa_challenge(
        &self,
        user: &UserRecord,
        transport: Transport,
        amr: Vec<String>,
        factors: &FactorsView,
    ) -> Result<MfaChallenge, AuthError> {
        let challenge = crypto::random_token(&self.rng, 32)?;
        let browser_cookie = match transport {
            Transport::Body => None,
            Transport::Cookie => Some(crypto::random_token(&self.rng, 32)?),
        };
        let now = self.clock.now();
        let record = MfaChallengeRecord {
            hash: token_hash(&challenge),
            user_id: user.id,
            credential_epoch: user.credential_epoch,
            transport: match transport {
                Transport::Body => "body",
                Transport::Cookie => "cookie",
            }
            .to_owned(),
            browser_hash: browser_cookie.as_deref().map(token_hash),
            amr,
            created_at: now,
            expires_at: now.plus(MFA_CHALLENGE_TTL),
            failures: 0,
            used_at: None,
        };
        self.store.insert_mfa_challenge(&record).await?;
        Ok(MfaChallenge {
            challenge,
            expires_in: i64::try_from(MFA_CHALLENGE_TTL.as_secs()).unwrap_or(300),
            methods: factors.methods(),
            browser_cookie,
        })
    }

    /// The gate every flow that opens a session passes: `Some(challenge)` when `user` has a
    /// second factor (the flow answers it instead of tokens).
    pub(super) async fn mfa_gate(
        &self,
        user: &UserRecord,
        transport: Transport,
        amr: Vec<String>,
    ) -> Result<Option<MfaChallenge>, AuthError> {
        let factors = self.factors_of(user.id).await?;
        if !factors.any_active() {
            return Ok(None);
        }
        self.issue_mfa_challenge(user, transport, amr, &factors)
            .await
            .map(Some)
    }

    /// A sign-in's challenge that can still be answered: not used, not expired,
    /// and (cookie transport) presented from the browser that signed in. Every request of the
    /// second step checks all three, the passkey options as much as the answer.
    pub(super) async fn live_challenge(
        &self,
        challenge: &str,
        browser: Option<&str>,
    ) -> Result<MfaChallengeRecord, AuthError> {
        if challenge.is_empty() || challenge.len() > MAX_CHALLENGE_CHARS {
            return Err(AuthError::MfaChallengeInvalid);
        }
        let hash = token_hash(challenge);
        let record = self
            .store
            .find_mfa_challenge(&hash)
            .await?
            .filter(|r| r.used_at.is_none())
            .ok_or(AuthError::MfaChallengeInvalid)?;
        if self.clock.now() >= record.expires_at {
            return Err(AuthError::MfaChallengeExpired);
        }
        if let Some(expected) = &record.browser_hash {
            if !browser.is_some_and(|b| crypto::secrets_equal(expected, &token_hash(b))) {
                return Err(AuthError::MfaChallengeOtherBrowser);
            }
        }
        Ok(record)
    }

    /// The second step: a live challenge and a right code open the session the first step
    /// asked for. `browser` is the `tessera_mfa` cookie, if the request carried one.
    pub async fn verify_mfa(
        &self,
        challenge: &str,
        proof: FactorProof,
        browser: Option<&str>,
        client: &ClientInfo,
    ) -> Result<TokenGrant, AuthError> {
        let record = self.live_challenge(challenge, browser).await?;
        let user = self
            .store
            .find_user_by_id(record.user_id)
            .await?
            .ok_or(AuthError::MfaChallengeInvalid)?;
        let attempt = self.reserve_attempt(&user.email, None, None).await?;
        let factor = match self.check_factor(&user, &proof, client).await {
            Ok(factor) => factor,
            Err(e @ (AuthError::InvalidMfaCode | AuthError::MfaCodeReplayed)) => {
                let failure = self.events.event(
                    AuditKind::LoginFailed,
                    Some(user.id),
                    None,
                    client,
                    Some("wrong second factor".into()),
                );
                if let Some(attempt) = attempt {
                    attempt.failed(self.events.alerts(), &failure, failure.at).await;
                }
                self.events.write(failure).await;
                self.store
                    .fail_mfa_challenge(&record.hash, MFA_CHALLENGE_MAX_FAILURES, self.clock.now())
                    .await?;
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        if let Some(attempt) = attempt {
            attempt.succeeded().await;
        }
        let now = self.clock.now();
        // One winner among concurrent uses of the challenge.
        if !self.store.use_mfa_challenge(&record.hash, now).await? {
            return Err(AuthError::MfaChallengeInvalid);
        }
        let transport = match record.transport.as_str() {
            "cookie" => Transport::Cookie,
            _ => Transport::Body,
        };
        let detail = match proof {
            FactorProof::Totp(_) => "second factor: totp",
            FactorProof::RecoveryCode(_) => "second factor: recovery code",
            FactorProof::Passkey(_) => "second factor: passkey",
        };
        self.open_session(
            &user,
            record.credential_epoch,
            transport,
            client,
            with_factor(record.amr, factor),
            now,
            Some(detail.into()),
        )
        .await
    }
}

impl AuthService {
    /// Refuses a sensitive change unless the caller's access token says the holder signed in
    /// (or reauthenticated) within `reauthentication_max_age`. Read from the token, so it costs
    /// nothing; `reauthenticate` answers a fresh token with the new `auth_time`.
    pub(super) fn require_recent_sign_in(&self, ctx: &AuthContext) -> Result<(), AuthError> {
        let max_age = i64::try_from(self.policy.reauthentication_max_age.as_secs()).unwrap_or(i64::MAX);
        match ctx.claims.auth_time {
            Some(at) if self.clock.now().seconds().saturating_sub(at) <= max_age => Ok(()),
            _ => Err(AuthError::ReauthenticationRequired),
        }
    }

    /// The holder of the caller's session proves themself again (the password, or a second
    /// factor): the session's `auth_time` is now and its `amr` gains what was proved, and the
    /// answer is fresh tokens saying so (the refresh token rotated, as a password change does).
    pub async fn reauthenticate(
        &self,
        ctx: &AuthContext,
        proof: HolderProof,
        client: &ClientInfo,
    ) -> Result<TokenGrant, AuthError> {
        let keys = self.keys.for_signing().await?;
        let (session, user) = self
            .store
            .find_session_with_user(ctx.session_id())
            .await?
            .ok_or(AuthError::SessionRevoked)?;
        let proved = self.prove_holder(&user, proof, ctx, client).await?;
        let now = self.clock.now();
        let amr = match proved {
            "pwd" => {
                let mut amr = session.amr.clone();
                if !amr.iter().any(|a| a == "pwd") {
                    amr.insert(0, "pwd".to_owned());
                }
                amr
            }
            factor => with_factor(session.amr.clone(), factor),
        };
        if !self.store.reauthenticate_session(session.id, &amr, now).await? {
            return Err(AuthError::SessionRevoked);
        }
        let generation = session
            .generation
            .checked_add(1)
            .ok_or(AuthError::InvalidRefreshToken)?;
        let next = RefreshToken::issue(&self.rng, session.id, generation)?;
        let refresh_expires_at = now.plus(self.policy.refresh_ttl).min(session.absolute_expires_at);
        let rotation = Rotation {
            session_id: session.id,
            expected_generation: session.generation,
            new_hash: next.hash(),
            sealed_new: None,
            now,
            refresh_expires_at,
        };
        if !self.store.rotate(&rotation).await? {
            return Err(AuthError::SessionRevoked);
        }
        let rotated = SessionRecord {
            generation,
            last_used_at: now,
            rotated_at: Some(now),
            refresh_expires_at,
            sealed_current: None,
            amr,
            auth_time: now,
            ..session
        };
        self.events
            .audit(
                AuditKind::LoginSucceeded,
                Some(user.id),
                Some(rotated.id),
                client,
                Some(format!("reauthenticated ({proved})")),
            )
            .await;
        self.grant(&keys, &user, &rotated, next, now)
    }
}
