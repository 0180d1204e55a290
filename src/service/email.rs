//! The account's lifecycle by email: verifying the address, resetting a forgotten password,
//! changing the address, signing in by a mailed link, and telling the holder of a sign-in
//! from a new device.
//!
//! Every link carries a single-use token: 256 random bits, stored only as its SHA-256
//! (`store::EmailTokenStore`), issued in the same transaction as the mail that carries it, and
//! superseded by a newer one of its kind. A reset token is also bound to the credential epoch
//! it was issued under, so a password change, a completed reset or a disable voids it.
//!
//! Where the answer must not tell whether an address has an account (forgot password,
//! sign-in links), the flow validates the input, answers, and does the lookup and the queuing
//! on a task of its own: both cases answer after the same work.

use std::sync::Arc;
use std::time::Duration;

use ring::digest;

use super::events::revoked_by;
use super::liveness::{Known, SessionSnapshot};
use super::{AuthContext, AuthError, AuthService, ClientInfo, LoginOutcome, Transport, UserView};
use crate::crypto::{self, RefreshToken};
use crate::domain::{AuditKind, Email, FieldError, Password, Timestamp};
use crate::mail::{Mail, MailKind};
use crate::store::{
    EmailTokenKind, EmailTokenRecord, FailureKey, LoginFailures, SessionRecord, StoreError, UserRecord,
};

/// What the flows by email enforce.
#[derive(Clone, Copy, Debug)]
pub struct EmailPolicy {
    /// Sign-in (password or link) is refused until the address is verified, and registration
    /// answers alike whether or not the address has an account.
    pub require_verified: bool,
    /// How long a verification or email change link works.
    pub verify_ttl: Duration,
    /// How long a password reset link works.
    pub reset_ttl: Duration,
    /// Whether sign-in links are offered at all.
    pub link_signin: bool,
    /// How long a sign-in link works.
    pub link_ttl: Duration,
}

impl Default for EmailPolicy {
    fn default() -> Self {
        EmailPolicy {
            require_verified: false,
            verify_ttl: Duration::from_secs(86_400),
            reset_ttl: Duration::from_secs(30 * 60),
            link_signin: false,
            link_ttl: Duration::from_secs(15 * 60),
        }
    }
}

/// The longest token a client can present: ours are 43 characters.
const MAX_TOKEN_CHARS: usize = 128;

/// The SHA-256 of a mailed token, in lower-case hex: all the database ever holds of it.
pub(super) fn token_hash(token: &str) -> String {
    digest::digest(&digest::SHA256, token.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn minutes(d: Duration) -> u64 {
    d.as_secs().div_ceil(60).max(1)
}

/// A presented token: present, and not absurdly long.
fn check_token_field(token: &str) -> Result<(), AuthError> {
    if token.is_empty() {
        return Err(AuthError::Validation(vec![FieldError::new(
            "token",
            "must not be empty",
        )]));
    }
    if token.len() > MAX_TOKEN_CHARS {
        return Err(AuthError::InvalidEmailToken);
    }
    Ok(())
}

impl AuthService {
    /// Whether sign-in needs a verified address (registration then answers alike for new and
    /// existing addresses).
    pub fn requires_verified_email(&self) -> bool {
        self.policy.email.require_verified
    }

    /// Whether sign-in links are on (`TESSERA_EMAIL_LINK_SIGNIN`).
    pub fn offers_sign_in_links(&self) -> bool {
        self.policy.email.link_signin
    }

    /// A new token of `kind` for `user` and the record that stores its hash.
    fn issue_email_token(
        &self,
        kind: EmailTokenKind,
        user: &UserRecord,
        new_email: Option<Email>,
        ttl: Duration,
        now: Timestamp,
    ) -> Result<(String, EmailTokenRecord), AuthError> {
        let token = crypto::random_token(&self.rng, 32)?;
        let record = EmailTokenRecord {
            hash: token_hash(&token),
            kind,
            user_id: user.id,
            new_email,
            credential_epoch: user.credential_epoch,
            created_at: now,
            expires_at: now.plus(ttl),
            used_at: None,
            browser_hash: None,
        };
        Ok((token, record))
    }

    /// Stores the token and queues its mail in one transaction, then wakes the deliverer.
    async fn queue_token_mail(
        &self,
        record: &EmailTokenRecord,
        mail: Mail,
        now: Timestamp,
    ) -> Result<(), AuthError> {
        let mail = mail.expiring_at(record.expires_at).record(now);
        self.store.insert_email_token(record, &mail).await?;
        self.outbox.queued();
        Ok(())
    }

    /// Queues a mail that goes with no state change (a notice); a failure is logged, never
    /// the caller's: the change it tells of is made.
    pub(super) async fn queue_notice(&self, to: &Email, kind: MailKind) {
        if let Err(e) = self
            .outbox
            .send(
                self.store.as_ref(),
                &Mail::new(to.clone(), kind),
                self.clock.now(),
            )
            .await
        {
            tracing::warn!(error = %e, "could not queue a notice mail");
        }
    }

    /// Mails `user` a link that verifies their address (registration, and resending).
    pub(super) async fn send_verification(&self, user: &UserRecord) -> Result<(), AuthError> {
        let now = self.clock.now();
        let (token, record) = self.issue_email_token(
            EmailTokenKind::VerifyEmail,
            user,
            None,
            self.policy.email.verify_ttl,
            now,
        )?;
        let mail = Mail::new(user.email.clone(), MailKind::VerifyEmail { token });
        self.queue_token_mail(&record, mail, now).await
    }

    /// The token of `kind` presented, checked but not used yet: unknown, of another kind or
    /// already used is `InvalidEmailToken`; past its time, `EmailTokenExpired`.
    async fn check_email_token(
        &self,
        token: &str,
        kind: EmailTokenKind,
    ) -> Result<(EmailTokenRecord, UserRecord), AuthError> {
        check_token_field(token)?;
        let (record, user) = self
            .store
            .find_email_token(&token_hash(token))
            .await?
            .ok_or(AuthError::InvalidEmailToken)?;
        if record.kind != kind || record.used_at.is_some() {
            return Err(AuthError::InvalidEmailToken);
        }
        if self.clock.now() >= record.expires_at {
            return Err(AuthError::EmailTokenExpired);
        }
        Ok((record, user))
    }

    /// Uses a checked token: one use wins, whoever races it.
    async fn use_email_token(&self, record: &EmailTokenRecord) -> Result<(), AuthError> {
        if self.store.use_email_token(&record.hash, self.clock.now()).await? {
            Ok(())
        } else {
            Err(AuthError::InvalidEmailToken)
        }
    }

    /// Registration where the answer must not tell whether the address has an account: a
    /// new address gets its account and a verification mail, a taken one a mail to its owner
    /// saying someone tried; both after hashing the password. Returns the address.
    pub async fn register_quietly(
        &self,
        email: &str,
        password: &str,
        user_metadata: Option<&serde_json::Value>,
        client: &ClientInfo,
    ) -> Result<Email, AuthError> {
        let metadata = user_metadata
            .map(|m| super::metadata::metadata_text("user_metadata", m))
            .transpose();
        let (email, password, metadata) = match (Email::parse(email), Password::parse(password), metadata) {
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
        let fresh = UserRecord::new(email.clone(), hash, self.clock.now());
        let user = match metadata {
            Some(user_metadata) => UserRecord {
                user_metadata,
                ..fresh
            },
            None => fresh,
        };
        match self.store.insert_user(&user).await {
            Ok(()) => {
                self.events
                    .audit(AuditKind::UserRegistered, Some(user.id), None, client, None)
                    .await;
                self.send_verification(&user).await?;
            }
            Err(StoreError::Conflict(_)) => self.queue_notice(&email, MailKind::SignupAttempt).await,
            Err(e) => return Err(e.into()),
        }
        Ok(email)
    }

    /// Mails the signed-in user a new verification link (the older ones stop working). An
    /// address already verified gets nothing.
    pub async fn resend_verification(&self, ctx: &AuthContext) -> Result<(), AuthError> {
        let (_, user) = self
            .store
            .find_session_with_user(ctx.session_id())
            .await?
            .ok_or(AuthError::SessionRevoked)?;
        if user.email_verified_at.is_some() {
            return Ok(());
        }
        self.send_verification(&user).await
    }

    /// Verifies the address a verification link was sent to.
    pub async fn verify_email(&self, token: &str, client: &ClientInfo) -> Result<UserView, AuthError> {
        let (record, user) = self.check_email_token(token, EmailTokenKind::VerifyEmail).await?;
        self.use_email_token(&record).await?;
        let now = self.clock.now();
        self.store.mark_email_verified(user.id, now).await?;
        self.events
            .audit(AuditKind::EmailVerified, Some(user.id), None, client, None)
            .await;
        let user = UserRecord {
            email_verified_at: user.email_verified_at.or(Some(now)),
            ..user
        };
        self.refresh_user_snapshots(&user).await;
        Ok(UserView::from(&user))
    }

    /// Starts a password reset: validates the address and returns at once; the lookup and the
    /// mail (to an account that exists and is not disabled) happen on a task of their own, so
    /// neither the answer nor its timing tells whether the account exists.
    pub fn forgot_password(self: &Arc<Self>, email: &str) -> Result<(), AuthError> {
        let email = Email::parse(email).map_err(|e| AuthError::Validation(vec![e]))?;
        let service = Arc::clone(self);
        tokio::spawn(async move {
            if let Err(e) = service.send_password_reset(&email).await {
                tracing::warn!(error = %e, "could not queue a password reset");
            }
        });
        Ok(())
    }

    async fn send_password_reset(&self, email: &Email) -> Result<(), AuthError> {
        let Some(account) = self.store.find_account(email).await? else {
            return Ok(());
        };
        if account.disabled_at.is_some() {
            return Ok(());
        }
        let now = self.clock.now();
        let ttl = self.policy.email.reset_ttl;
        let (token, record) =
            self.issue_email_token(EmailTokenKind::PasswordReset, &account.user, None, ttl, now)?;
        let mail = Mail::new(
            account.user.email.clone(),
            MailKind::PasswordReset {
                token,
                expires_in_minutes: minutes(ttl),
            },
        );
        self.queue_token_mail(&record, mail, now).await
    }

    /// Sets a new password with a reset link's token. The same step as a password change
    /// moves the credential epoch and revokes every session, so no session (nor a login in
    /// flight with the old password) outlives it; the per-account lock is lifted, and the
    /// holder is told.
    pub async fn reset_password(
        &self,
        token: &str,
        new_password: &str,
        client: &ClientInfo,
    ) -> Result<(), AuthError> {
        let mut errors = Vec::new();
        if token.is_empty() {
            errors.push(FieldError::new("token", "must not be empty"));
        }
        let new = match Password::parse(new_password) {
            Ok(p) => Some(p),
            Err(e) => {
                errors.push(FieldError::new("new_password", e.message));
                None
            }
        };
        let Some(new) = new.filter(|_| errors.is_empty()) else {
            return Err(AuthError::Validation(errors));
        };
        let (record, user) = self
            .check_email_token(token, EmailTokenKind::PasswordReset)
            .await?;
        // Issued before the password last changed (or the account was disabled): void.
        if record.credential_epoch != user.credential_epoch {
            return Err(AuthError::InvalidEmailToken);
        }
        let hash = self
            .hashing
            .hash_in_turn(move |hasher| hasher.hash(&new))
            .await??;
        self.use_email_token(&record).await?;
        let now = self.clock.now();
        let Some(revoked) = self
            .store
            .change_password_hash(user.id, &user.password_hash, &hash, None, now, "password_reset")
            .await?
        else {
            // The password changed between the check and now: the link was for the old one.
            return Err(AuthError::InvalidEmailToken);
        };
        self.revocations.learn_own().await;
        self.lift_lock(&user.email, now).await;
        self.events
            .security(
                AuditKind::PasswordChanged,
                Some(user.id),
                None,
                client,
                Some(format!("reset by email link; {revoked} session(s) revoked")),
            )
            .await;
        if revoked > 0 {
            self.events
                .alert_sessions_revoked(
                    user.id,
                    None,
                    client,
                    revoked_by("password_reset", "password_reset", revoked),
                )
                .await;
        }
        self.queue_notice(&user.email, MailKind::PasswordChanged).await;
        Ok(())
    }

    /// A reset proves the address: the account's lock (others' guesses) no longer applies.
    async fn lift_lock(&self, email: &Email, now: Timestamp) {
        if !self.policy.lockout.enabled() {
            return;
        }
        let lifted = self
            .store
            .change_login_failures(
                &FailureKey::account(email),
                Box::new(move |r| {
                    let pending = r.map_or(0, |r| r.pending);
                    let pending_until = r.and_then(|r| r.pending_until);
                    LoginFailures {
                        failures: 0,
                        window_started_at: now,
                        locked_until: None,
                        locks: 0,
                        pending,
                        pending_until,
                    }
                }),
            )
            .await;
        if let Err(e) = lifted {
            tracing::warn!(error = %e, "could not lift the account's lock after a reset");
        }
    }

    /// Asks to move the signed-in account to `new_email`, proving the current password: a
    /// confirmation link goes to the new address and a notice to the old one; nothing changes
    /// until the link is used. An address that has an account gets no link, and the answer is
    /// the same.
    pub async fn request_email_change(
        &self,
        ctx: &AuthContext,
        new_email: &str,
        current_password: &str,
        client: &ClientInfo,
    ) -> Result<(), AuthError> {
        let mut errors = Vec::new();
        let new_email = match Email::parse(new_email) {
            Ok(e) => Some(e),
            Err(e) => {
                errors.push(FieldError::new("new_email", e.message));
                None
            }
        };
        if current_password.is_empty() {
            errors.push(FieldError::new("current_password", "must not be empty"));
        } else if current_password.chars().count() > Password::MAX_CHARS {
            errors.push(FieldError::new(
                "current_password",
                "must be at most 1024 characters",
            ));
        }
        let Some(new_email) = new_email.filter(|_| errors.is_empty()) else {
            return Err(AuthError::Validation(errors));
        };
        self.require_recent_sign_in(ctx)?;
        let (session, user) = self
            .store
            .find_session_with_user(ctx.session_id())
            .await?
            .ok_or(AuthError::SessionRevoked)?;
        // Guessing through here counts against the account, as at login.
        let attempt = self.reserve_attempt(&user.email, None, None).await?;
        let matches = self
            .hashing
            .verify_in_turn(current_password.to_owned(), user.password_hash.clone())
            .await?;
        if !matches {
            let failure = self.events.event(
                AuditKind::PasswordChangeFailed,
                Some(user.id),
                Some(session.id),
                client,
                Some("email change".into()),
            );
            if let Some(attempt) = attempt {
                attempt.failed(self.events.alerts(), &failure, failure.at).await;
            }
            self.events.write(failure).await;
            return Err(AuthError::InvalidCredentials);
        }
        if let Some(attempt) = attempt {
            attempt.succeeded().await;
        }
        if new_email == user.email {
            return Ok(());
        }
        self.events
            .audit(
                AuditKind::EmailChangeRequested,
                Some(user.id),
                Some(session.id),
                client,
                Some(new_email.as_str().to_owned()),
            )
            .await;
        self.queue_notice(
            &user.email,
            MailKind::EmailChangeNotice {
                new_email: new_email.as_str().to_owned(),
            },
        )
        .await;
        if self.store.find_user_by_email(&new_email).await?.is_some() {
            // Taken: its owner is told someone tried, the requester learns nothing.
            self.queue_notice(&new_email, MailKind::SignupAttempt).await;
            return Ok(());
        }
        let now = self.clock.now();
        let (token, record) = self.issue_email_token(
            EmailTokenKind::EmailChange,
            &user,
            Some(new_email.clone()),
            self.policy.email.verify_ttl,
            now,
        )?;
        let mail = Mail::new(
            new_email.clone(),
            MailKind::EmailChangeConfirm {
                token,
                new_email: new_email.as_str().to_owned(),
            },
        );
        self.queue_token_mail(&record, mail, now).await
    }

    /// Moves the account to the address the confirmation link was sent to (which it proves).
    /// An address taken meanwhile is `EmailTaken`, and the account keeps its address.
    pub async fn confirm_email_change(
        &self,
        token: &str,
        client: &ClientInfo,
    ) -> Result<UserView, AuthError> {
        let (record, user) = self.check_email_token(token, EmailTokenKind::EmailChange).await?;
        let new_email = record.new_email.clone().ok_or(AuthError::InvalidEmailToken)?;
        self.use_email_token(&record).await?;
        let now = self.clock.now();
        match self.store.change_email(user.id, &new_email, now).await {
            Ok(true) => {}
            Ok(false) => return Err(AuthError::InvalidEmailToken),
            Err(StoreError::Conflict(_)) => return Err(AuthError::EmailTaken),
            Err(e) => return Err(e.into()),
        }
        self.events
            .audit(
                AuditKind::EmailChanged,
                Some(user.id),
                None,
                client,
                Some(format!("{} -> {}", user.email.as_str(), new_email.as_str())),
            )
            .await;
        let user = UserRecord {
            email: new_email,
            email_verified_at: Some(now),
            ..user
        };
        self.refresh_user_snapshots(&user).await;
        Ok(UserView::from(&user))
    }

    /// Mails a sign-in link to the account with this address, if there is one; as
    /// [`forgot_password`](Self::forgot_password), the answer and its timing are the same
    /// either way. `LinkSigninDisabled` when the option is off.
    /// How long a sign-in link works.
    pub fn sign_in_link_ttl(&self) -> Duration {
        self.policy.email.link_ttl
    }

    /// With `in_browser` (cookie transport) the answer is a secret for the asking browser to
    /// keep (a cookie): the link then signs in only where it is presented again. Made for every
    /// request alike, whether or not the address has an account.
    pub fn send_sign_in_link(
        self: &Arc<Self>,
        email: &str,
        in_browser: bool,
    ) -> Result<Option<String>, AuthError> {
        if !self.policy.email.link_signin {
            return Err(AuthError::LinkSigninDisabled);
        }
        let email = Email::parse(email).map_err(|e| AuthError::Validation(vec![e]))?;
        let browser = match in_browser {
            true => Some(crypto::random_token(&self.rng, 32)?),
            false => None,
        };
        let for_task = browser.clone();
        let service = Arc::clone(self);
        tokio::spawn(async move {
            if let Err(e) = service.queue_sign_in_link(&email, for_task.as_deref()).await {
                tracing::warn!(error = %e, "could not queue a sign-in link");
            }
        });
        Ok(browser)
    }

    async fn queue_sign_in_link(&self, email: &Email, browser: Option<&str>) -> Result<(), AuthError> {
        let Some(account) = self.store.find_account(email).await? else {
            return Ok(());
        };
        if account.disabled_at.is_some() {
            return Ok(());
        }
        let now = self.clock.now();
        let ttl = self.policy.email.link_ttl;
        let (token, mut record) =
            self.issue_email_token(EmailTokenKind::SignInLink, &account.user, None, ttl, now)?;
        record.browser_hash = browser.map(token_hash);
        let mail = Mail::new(
            account.user.email.clone(),
            MailKind::SignInLink {
                token,
                expires_in_minutes: minutes(ttl),
            },
        );
        self.queue_token_mail(&record, mail, now).await
    }

    /// Opens a session with a sign-in link's token (which also proves the address).
    /// `browser` is what the presenting browser holds (see [`Self::send_sign_in_link`]).
    pub async fn sign_in_with_link(
        &self,
        token: &str,
        transport: Transport,
        browser: Option<&str>,
        client: &ClientInfo,
    ) -> Result<LoginOutcome, AuthError> {
        if !self.policy.email.link_signin {
            return Err(AuthError::LinkSigninDisabled);
        }
        let (record, user) = self.check_email_token(token, EmailTokenKind::SignInLink).await?;
        // A link asked for in a browser signs in there only: a mail read (or intercepted)
        // elsewhere does not open a session for whoever has it. Checked before the token is
        // spent, so the right browser can still use it.
        if let Some(expected) = &record.browser_hash {
            if !browser.is_some_and(|b| crypto::secrets_equal(expected, &token_hash(b))) {
                return Err(AuthError::EmailLinkOtherBrowser);
            }
        }
        // Checked before the token is used: no token is spent on a session that gets no tokens.
        let keys = self.keys.for_signing().await?;
        self.use_email_token(&record).await?;
        let now = self.clock.now();
        let newly_verified = user.email_verified_at.is_none();
        if newly_verified {
            self.store.mark_email_verified(user.id, now).await?;
        }
        let user = UserRecord {
            email_verified_at: user.email_verified_at.or(Some(now)),
            ..user
        };
        if newly_verified {
            self.refresh_user_snapshots(&user).await;
        }
        // The link stands for the password, never for the second factor: an account with one
        // gets the same challenge as after a password. (`email` is not an RFC 8176 value;
        // resource servers read it as "proved the mailbox".)
        let amr = vec!["email".to_owned()];
        if let Some(challenge) = self.mfa_gate(&user, transport, amr.clone()).await? {
            return Ok(LoginOutcome::MfaRequired(challenge));
        }
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
                now,
            )
        };
        let refresh = RefreshToken::issue(&self.rng, session.id, 0)?;
        // Under the epoch the token was found with: disabled (or reset) meanwhile, no session.
        if !self
            .store
            .insert_session(&session, &refresh.hash(), user.credential_epoch)
            .await?
        {
            return Err(AuthError::InvalidEmailToken);
        }
        let evicted = self
            .store
            .revoke_sessions_over_limit(user.id, self.policy.max_sessions, now)
            .await?;
        if evicted > 0 {
            self.revocations.learn_own().await;
        }
        self.events
            .audit(
                AuditKind::LoginSucceeded,
                Some(user.id),
                Some(session.id),
                client,
                Some("sign-in link".into()),
            )
            .await;
        self.grant(&keys, &user, &session, refresh, now)
            .map(LoginOutcome::Tokens)
    }

    /// Tells the account's holder of a sign-in from a device not seen before.
    pub(super) async fn notify_new_device(&self, user: &UserRecord, client: &ClientInfo, at: Timestamp) {
        let kind = MailKind::NewDevice {
            device: client
                .user_agent
                .clone()
                .unwrap_or_else(|| "an unknown device".to_owned()),
            ip: client
                .ip
                .clone()
                .unwrap_or_else(|| "an unknown address".to_owned()),
            at,
        };
        self.queue_notice(&user.email, kind).await;
    }

    /// The user changed (address verified or changed): this instance's memory of the user's
    /// live sessions is brought up to date, so `/me` says so at once here. (Other instances
    /// show it once they read the session again; new access tokens carry it at once.)
    async fn refresh_user_snapshots(&self, user: &UserRecord) {
        let sessions = match self.store.find_live_sessions(user.id, self.clock.now()).await {
            Ok(sessions) => sessions,
            Err(e) => {
                tracing::warn!(error = %e, "could not refresh the user's sessions in memory");
                return;
            }
        };
        let live = self.revocations.live();
        for session in sessions {
            if matches!(live.get(session.id), Some(Known::Live(_))) {
                live.remember(Arc::new(SessionSnapshot::new(&session, user)));
            }
        }
    }
}
