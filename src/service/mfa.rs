//! Second factors: TOTP (RFC 6238) enrolment, confirmation and removal, recovery codes, the
//! factors an account has, and checking a code (for the second step of a login in
//! `mfa_login`, and for removing a factor).
//!
//! A TOTP secret is stored sealed with the master key when one is set, exactly as signing
//! keys are (`crypto::master_key`, under its own associated-data prefix and the user id); in
//! clear it is its base32 text, which never starts with the sealed format's magic bytes. A
//! code is accepted only for a time step newer than the last one accepted (a compare-and-set
//! in the store), so no code works twice, on any instance. Recovery codes are 80 random bits
//! each, stored as the SHA-256 of the user id and the code (they are random, so a fast hash is
//! enough), spent by one conditional write.

use ring::digest;
use ring::rand::SecureRandom;
use serde::Serialize;

use super::{AuthContext, AuthError, AuthService, ClientInfo};
use crate::crypto::master_key::TOTP_AAD_PREFIX;
use crate::domain::{AuditKind, FieldError, Timestamp, UserId};
use crate::mail::MailKind;
use crate::store::{Store, UserRecord};

/// The TOTP parameters every authenticator app understands: SHA-1, 6 digits, 30 s, ±1 step.
const TOTP_STEP_SECONDS: i64 = 30;
const TOTP_DIGITS: u8 = 6;
const TOTP_SKEW_STEPS: i64 = 1;
/// 160 bits, RFC 4226's recommendation.
const TOTP_SECRET_BYTES: usize = 20;
/// Shown in authenticator apps beside the account's address.
const TOTP_ISSUER: &str = "Tessera";
/// A set of recovery codes.
pub const RECOVERY_CODES: usize = 10;
/// Characters of a recovery code (grouped by four with `-` when shown).
const RECOVERY_CODE_CHARS: usize = 16;
/// 32 symbols without look-alikes (no `l`, `o`, `0`, `1`): 5 bits each, 80 bits a code.
const RECOVERY_ALPHABET: &[u8; 32] = b"abcdefghijkmnpqrstuvwxyz23456789";

/// A second factor's proof, as a client presents it.
#[derive(Clone)]
pub enum FactorProof {
    Totp(String),
    RecoveryCode(String),
    /// A passkey's assertion (`PublicKeyCredential` JSON) answering the account's second-factor
    /// ceremony (`POST /v1/auth/mfa/passkey/options`).
    Passkey(serde_json::Value),
}

impl std::fmt::Debug for FactorProof {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FactorProof::Totp(_) => "Totp(<redacted>)",
            FactorProof::RecoveryCode(_) => "RecoveryCode(<redacted>)",
            FactorProof::Passkey(_) => "Passkey(<assertion>)",
        })
    }
}

impl FactorProof {
    /// The proof named by a request's `method` and `code`; `None` for an unknown method.
    pub fn parse(method: &str, code: &str) -> Option<FactorProof> {
        match method {
            "totp" => Some(FactorProof::Totp(code.to_owned())),
            "recovery_code" => Some(FactorProof::RecoveryCode(code.to_owned())),
            _ => None,
        }
    }
}

/// A TOTP enrolment started: what the person puts into an authenticator app. Its `Debug`
/// shows none of it.
pub struct TotpEnrolment {
    /// The secret in base32 (for typing it in).
    pub secret: String,
    /// `otpauth://totp/...` (what the QR code holds).
    pub otpauth_uri: String,
    /// The URI as a QR code, an SVG document.
    pub qr_svg: String,
}

impl std::fmt::Debug for TotpEnrolment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TotpEnrolment(<redacted>)")
    }
}

/// Recovery codes in clear: shown once, never stored.
pub struct RecoveryCodes(pub Vec<String>);

impl std::fmt::Debug for RecoveryCodes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RecoveryCodes(<{} redacted>)", self.0.len())
    }
}

/// The account's TOTP factor, as its holder sees it.
#[derive(Clone, Debug, Serialize)]
pub struct TotpView {
    /// Confirmed with a first code (an unconfirmed enrolment is no factor).
    pub enabled: bool,
    pub created_at: Timestamp,
}

/// A passkey, as its holder sees it (filled by the passkeys flow).
#[derive(Clone, Debug, Serialize)]
pub struct PasskeyView {
    pub id: String,
    pub name: String,
    pub created_at: Timestamp,
}

/// The second factors of an account.
#[derive(Clone, Debug, Serialize)]
pub struct FactorsView {
    pub totp: Option<TotpView>,
    pub recovery_codes_left: u32,
    pub passkeys: Vec<PasskeyView>,
}

impl FactorsView {
    /// Does the account have a factor that a login must prove?
    pub fn any_active(&self) -> bool {
        self.totp.as_ref().is_some_and(|t| t.enabled) || !self.passkeys.is_empty()
    }

    /// One JSON object per factor, for operators (`type`: `totp`, `recovery_codes`, `passkey`).
    pub fn as_list(&self) -> Vec<serde_json::Value> {
        let mut list = Vec::new();
        if let Some(t) = &self.totp {
            list.push(serde_json::json!({
                "type": "totp", "enabled": t.enabled, "created_at": t.created_at.to_rfc3339(),
            }));
        }
        if self.recovery_codes_left > 0 {
            list.push(serde_json::json!({ "type": "recovery_codes", "left": self.recovery_codes_left }));
        }
        for p in &self.passkeys {
            list.push(serde_json::json!({
                "type": "passkey", "id": p.id, "name": p.name, "created_at": p.created_at.to_rfc3339(),
            }));
        }
        list
    }

    /// A line for people: `totp, 9 recovery codes`, or `-`.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        match &self.totp {
            Some(t) if t.enabled => parts.push("totp".to_owned()),
            Some(_) => parts.push("totp (not confirmed)".to_owned()),
            None => {}
        }
        if !self.passkeys.is_empty() {
            parts.push(format!("{} passkey(s)", self.passkeys.len()));
        }
        if self.recovery_codes_left > 0 {
            parts.push(format!("{} recovery codes", self.recovery_codes_left));
        }
        if parts.is_empty() {
            "-".to_owned()
        } else {
            parts.join(", ")
        }
    }

    /// The methods a second step may use, in the order a page offers them.
    pub fn methods(&self) -> Vec<&'static str> {
        let mut methods = Vec::new();
        if self.totp.as_ref().is_some_and(|t| t.enabled) {
            methods.push("totp");
        }
        if !self.passkeys.is_empty() {
            methods.push("passkey");
        }
        if self.any_active() {
            methods.push("recovery_code");
        }
        methods
    }
}

/// The SHA-256 (hex) of a recovery code, normalised (case, spaces and dashes ignored), bound
/// to its account.
fn recovery_code_hash(user: UserId, code: &str) -> String {
    let normal: String = code
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .flat_map(char::to_lowercase)
        .collect();
    digest::digest(&digest::SHA256, format!("{user}:{normal}").as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The RFC 6238 time step of `at`.
fn time_step(at: Timestamp) -> i64 {
    at.seconds().div_euclid(TOTP_STEP_SECONDS)
}

fn totp_for(secret: &[u8], account: &str) -> Result<totp_rs::Totp, AuthError> {
    totp_rs::Builder::new()
        .with_digits(TOTP_DIGITS)
        .with_skew(0)
        .with_step_duration(TOTP_STEP_SECONDS.unsigned_abs())
        .with_secret(totp_rs::Secret::new(secret.to_vec().into_boxed_slice()))
        .with_issuer(Some(TOTP_ISSUER))
        .with_account_name(account.replace(':', "_"))
        .build()
        .map_err(|e| AuthError::Internal(format!("totp: {e}")))
}

/// The time step within ±1 of `now` whose code `code` is, if any.
fn matching_step(totp: &totp_rs::Totp, code: &str, now: Timestamp) -> Option<i64> {
    let code = code.trim();
    if code.len() != usize::from(TOTP_DIGITS) || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let current = time_step(now);
    (current - TOTP_SKEW_STEPS..=current + TOTP_SKEW_STEPS)
        .find(|&step| u64::try_from(step * TOTP_STEP_SECONDS).is_ok_and(|t| totp.check(code, t).is_some()))
}

/// The factors of `user`: the one place that lists them (the account's page, the login's
/// gate, the admin API and `tessera users show`). Passkeys join in [`passkey_views`].
pub(super) async fn factors_of(store: &dyn Store, user: UserId) -> Result<FactorsView, AuthError> {
    let totp = store.find_totp(user).await?.map(|t| TotpView {
        enabled: t.confirmed_at.is_some(),
        created_at: t.confirmed_at.unwrap_or(t.created_at),
    });
    let recovery_codes_left = store.count_recovery_codes(user).await?;
    Ok(FactorsView {
        totp,
        recovery_codes_left,
        passkeys: passkey_views(store, user).await?,
    })
}

/// The passkeys of `user`: each one a factor (`service::passkeys` registers them).
pub(super) async fn passkey_views(store: &dyn Store, user: UserId) -> Result<Vec<PasskeyView>, AuthError> {
    Ok(store
        .find_passkeys(user)
        .await?
        .into_iter()
        .map(|p| PasskeyView {
            id: p.id.to_string(),
            name: p.name,
            created_at: p.created_at,
        })
        .collect())
}

impl AuthService {
    /// The factors of `user` (see [`factors_of`]).
    pub async fn factors_of(&self, user: UserId) -> Result<FactorsView, AuthError> {
        factors_of(self.store.as_ref(), user).await
    }

    /// The caller's factors.
    pub async fn my_factors(&self, ctx: &AuthContext) -> Result<FactorsView, AuthError> {
        self.factors_of(ctx.user_id()).await
    }

    /// Starts (or restarts) a TOTP enrolment: a new secret, not a factor until confirmed.
    pub async fn start_totp(&self, ctx: &AuthContext) -> Result<TotpEnrolment, AuthError> {
        let user = ctx.user_id();
        let mut secret = [0u8; TOTP_SECRET_BYTES];
        self.rng
            .fill(&mut secret)
            .map_err(|_| AuthError::Internal("random".into()))?;
        let totp = totp_for(&secret, &ctx.session.user.email)?;
        let base32 = totp_rs::Secret::new(secret.to_vec().into_boxed_slice()).to_base32();
        let stored = self
            .policy
            .keys
            .master_keys
            .seal_for_storage_as(TOTP_AAD_PREFIX, &user.to_string(), base32.as_bytes())
            .map_err(|e| AuthError::Internal(e.to_string()))?;
        if !self
            .store
            .insert_pending_totp(user, &stored, self.clock.now())
            .await?
        {
            return Err(AuthError::MfaAlreadyEnabled);
        }
        let otpauth_uri = totp
            .to_url()
            .map_err(|e| AuthError::Internal(format!("totp: {e}")))?;
        let qr_svg = qrcode::QrCode::new(otpauth_uri.as_bytes())
            .map_err(|e| AuthError::Internal(format!("qr: {e}")))?
            .render::<qrcode::render::svg::Color<'_>>()
            .min_dimensions(200, 200)
            .build();
        Ok(TotpEnrolment {
            secret: base32,
            otpauth_uri,
            qr_svg,
        })
    }

    /// Confirms the pending enrolment with a first code: TOTP is on, and the first set of
    /// recovery codes is answered (once).
    pub async fn confirm_totp(
        &self,
        ctx: &AuthContext,
        code: &str,
        client: &ClientInfo,
    ) -> Result<RecoveryCodes, AuthError> {
        let user = ctx.user_id();
        let factor = match self.store.find_totp(user).await? {
            Some(f) if f.confirmed_at.is_none() => f,
            Some(_) => return Err(AuthError::MfaAlreadyEnabled),
            None => return Err(AuthError::MfaNotEnabled),
        };
        let now = self.clock.now();
        let secret = self.open_totp_secret(user, &factor.secret)?;
        let totp = totp_for(&secret, &ctx.session.user.email)?;
        let step = matching_step(&totp, code, now).ok_or(AuthError::InvalidMfaCode)?;
        let codes = self.new_recovery_codes()?;
        let hashes: Vec<String> = codes.0.iter().map(|c| recovery_code_hash(user, c)).collect();
        if !self.store.confirm_totp(user, step, &hashes, now).await? {
            return Err(AuthError::MfaAlreadyEnabled);
        }
        self.events
            .security(
                AuditKind::MfaEnabled,
                Some(user),
                Some(ctx.session_id()),
                client,
                Some("totp".into()),
            )
            .await;
        self.security_notice(&ctx.session.user.email, "two-step verification was turned on")
            .await;
        Ok(codes)
    }

    /// Turns TOTP off (and its recovery codes), proven with the password or a code, or
    /// without one after a recent sign-in.
    pub async fn disable_totp(
        &self,
        ctx: &AuthContext,
        proof: Option<HolderProof>,
        client: &ClientInfo,
    ) -> Result<(), AuthError> {
        let (_, user) = self
            .store
            .find_session_with_user(ctx.session_id())
            .await?
            .ok_or(AuthError::SessionRevoked)?;
        match self.store.find_totp(user.id).await? {
            Some(f) if f.confirmed_at.is_some() => {}
            _ => return Err(AuthError::MfaNotEnabled),
        }
        self.prove_or_recent(&user, proof, ctx, client).await?;
        self.store.delete_totp(user.id).await?;
        self.events
            .security(
                AuditKind::MfaDisabled,
                Some(user.id),
                Some(ctx.session_id()),
                client,
                Some("totp".into()),
            )
            .await;
        self.security_notice(user.email.as_str(), "two-step verification was turned off")
            .await;
        Ok(())
    }

    /// A new set of recovery codes (the old set dies), proven with the password or a code, or
    /// without one after a recent sign-in.
    pub async fn regenerate_recovery_codes(
        &self,
        ctx: &AuthContext,
        proof: Option<HolderProof>,
        client: &ClientInfo,
    ) -> Result<RecoveryCodes, AuthError> {
        let (_, user) = self
            .store
            .find_session_with_user(ctx.session_id())
            .await?
            .ok_or(AuthError::SessionRevoked)?;
        if !self.factors_of(user.id).await?.any_active() {
            return Err(AuthError::MfaNotEnabled);
        }
        self.prove_or_recent(&user, proof, ctx, client).await?;
        let codes = self.new_recovery_codes()?;
        let hashes: Vec<String> = codes.0.iter().map(|c| recovery_code_hash(user.id, c)).collect();
        self.store
            .replace_recovery_codes(user.id, &hashes, self.clock.now())
            .await?;
        self.events
            .audit(
                AuditKind::MfaEnabled,
                Some(user.id),
                Some(ctx.session_id()),
                client,
                Some("recovery codes regenerated".into()),
            )
            .await;
        self.security_notice(
            user.email.as_str(),
            "new recovery codes were made (the old ones no longer work)",
        )
        .await;
        Ok(codes)
    }

    /// A change of factors: proven in the request, or else by a recent sign-in.
    async fn prove_or_recent(
        &self,
        user: &UserRecord,
        proof: Option<HolderProof>,
        ctx: &AuthContext,
        client: &ClientInfo,
    ) -> Result<(), AuthError> {
        match proof {
            Some(proof) => self.prove_holder(user, proof, ctx, client).await.map(|_| ()),
            None => self.require_recent_sign_in(ctx),
        }
    }

    /// The holder proves themself again (password or a second factor), on the account's lock;
    /// answers the RFC 8176 value of what was proved.
    pub(super) async fn prove_holder(
        &self,
        user: &UserRecord,
        proof: HolderProof,
        ctx: &AuthContext,
        client: &ClientInfo,
    ) -> Result<&'static str, AuthError> {
        let attempt = self.reserve_attempt(&user.email, None, None).await?;
        let outcome = match proof {
            HolderProof::Password(password) => {
                if self
                    .hashing
                    .verify_in_turn(password, user.password_hash.clone())
                    .await?
                {
                    Ok("pwd")
                } else {
                    Err(AuthError::InvalidCredentials)
                }
            }
            HolderProof::Factor(proof) => self.check_factor(user, &proof, client).await,
        };
        match (&outcome, attempt) {
            (Ok(_), Some(attempt)) => attempt.succeeded().await,
            (
                Err(AuthError::InvalidCredentials | AuthError::InvalidMfaCode | AuthError::MfaCodeReplayed),
                Some(attempt),
            ) => {
                let failure = self.events.event(
                    AuditKind::LoginFailed,
                    Some(user.id),
                    Some(ctx.session_id()),
                    client,
                    Some("wrong proof of the holder".into()),
                );
                attempt.failed(self.events.alerts(), &failure, failure.at).await;
                self.events.write(failure).await;
            }
            _ => {}
        }
        outcome
    }

    /// Checks a second factor's proof for `user`, spending it (a TOTP step, a recovery code).
    /// Answers the RFC 8176 `amr` value it stands for.
    pub(super) async fn check_factor(
        &self,
        user: &UserRecord,
        proof: &FactorProof,
        client: &ClientInfo,
    ) -> Result<&'static str, AuthError> {
        let now = self.clock.now();
        match proof {
            FactorProof::Totp(code) => {
                let factor = match self.store.find_totp(user.id).await? {
                    Some(f) if f.confirmed_at.is_some() => f,
                    _ => return Err(AuthError::InvalidMfaCode),
                };
                let secret = self.open_totp_secret(user.id, &factor.secret)?;
                let totp = totp_for(&secret, user.email.as_str())?;
                let step = matching_step(&totp, code, now).ok_or(AuthError::InvalidMfaCode)?;
                if !self.store.accept_totp_step(user.id, step).await? {
                    return Err(AuthError::MfaCodeReplayed);
                }
                Ok("otp")
            }
            FactorProof::RecoveryCode(code) => {
                if code.len() > 64
                    || !self
                        .store
                        .use_recovery_code(user.id, &recovery_code_hash(user.id, code), now)
                        .await?
                {
                    return Err(AuthError::InvalidMfaCode);
                }
                let left = self.store.count_recovery_codes(user.id).await.unwrap_or(0);
                self.events
                    .security(
                        AuditKind::RecoveryCodeUsed,
                        Some(user.id),
                        None,
                        client,
                        Some(format!("{left} recovery code(s) left")),
                    )
                    .await;
                self.security_notice(
                    user.email.as_str(),
                    &format!("a recovery code was used to sign in ({left} left)"),
                )
                .await;
                Ok("otp")
            }
            FactorProof::Passkey(credential) => self.check_passkey_factor(user, credential, client).await,
        }
    }

    /// Tells the holder of a change to their sign-in security (`security_change` mail).
    pub(super) async fn security_notice(&self, email: &str, change: &str) {
        let to = crate::domain::Email::from_stored(email.to_owned());
        self.queue_notice(
            &to,
            MailKind::SecurityChange {
                change: change.to_owned(),
            },
        )
        .await;
    }

    /// The raw TOTP secret of `user` from what is stored.
    fn open_totp_secret(&self, user: UserId, stored: &[u8]) -> Result<Vec<u8>, AuthError> {
        let (base32, _) = self
            .policy
            .keys
            .master_keys
            .open_for(TOTP_AAD_PREFIX, &user.to_string(), stored)
            .map_err(|e| AuthError::Internal(format!("totp secret {e}")))?;
        let text = String::from_utf8(base32).map_err(|_| AuthError::Internal("totp secret".into()))?;
        totp_rs::Secret::try_from_base32(&text)
            .map(|s| s.as_bytes().to_vec())
            .map_err(|_| AuthError::Internal("totp secret".into()))
    }

    fn new_recovery_codes(&self) -> Result<RecoveryCodes, AuthError> {
        let mut codes = Vec::with_capacity(RECOVERY_CODES);
        for _ in 0..RECOVERY_CODES {
            let mut bytes = [0u8; RECOVERY_CODE_CHARS];
            self.rng
                .fill(&mut bytes)
                .map_err(|_| AuthError::Internal("random".into()))?;
            // 256 is a multiple of 32: no symbol more likely than another.
            let chars: Vec<char> = bytes
                .iter()
                .map(|b| char::from(RECOVERY_ALPHABET[usize::from(b % 32)]))
                .collect();
            let groups: Vec<String> = chars.chunks(4).map(|g| g.iter().collect()).collect();
            codes.push(groups.join("-"));
        }
        Ok(RecoveryCodes(codes))
    }
}

/// How a holder proves themself to change their factors.
pub enum HolderProof {
    Password(String),
    Factor(FactorProof),
}

impl HolderProof {
    /// From a body's `password`, or `method` (default `totp`) and `code`; `None` for neither.
    pub fn from_fields(
        password: Option<&str>,
        method: Option<&str>,
        code: Option<&str>,
    ) -> Result<Option<HolderProof>, AuthError> {
        match (password, code) {
            (None, None) if method.is_none() => Ok(None),
            (Some(p), None) if !p.is_empty() => Ok(Some(HolderProof::Password(p.to_owned()))),
            (None, Some(c)) => FactorProof::parse(method.unwrap_or("totp"), c)
                .map(|p| Some(HolderProof::Factor(p)))
                .ok_or_else(|| {
                    AuthError::Validation(vec![FieldError::new(
                        "method",
                        "must be \"totp\" or \"recovery_code\"",
                    )])
                }),
            _ => Err(AuthError::Validation(vec![FieldError::new(
                "password",
                "send either password or code",
            )])),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovery_codes_hash_alike_whatever_their_case_and_dashes() {
        let user = UserId::new();
        assert_eq!(
            recovery_code_hash(user, "abcd-efgh-ijkm-npqr"),
            recovery_code_hash(user, " ABCDefgh ijkmnpqr")
        );
        assert_ne!(
            recovery_code_hash(user, "abcd-efgh-ijkm-npqr"),
            recovery_code_hash(UserId::new(), "abcd-efgh-ijkm-npqr")
        );
    }

    #[test]
    fn a_code_matches_its_step_and_the_neighbours_only() {
        let totp = totp_for(b"12345678901234567890", "a@example.com").unwrap();
        let now = Timestamp(59_000);
        let code = totp.generate(30).to_string();
        assert_eq!(matching_step(&totp, &code, now), Some(1));
        let far = totp.generate(300).to_string();
        assert_eq!(matching_step(&totp, &far, now), None);
        assert_eq!(matching_step(&totp, "12345", now), None);
        assert_eq!(matching_step(&totp, "abcdef", now), None);
    }
}
