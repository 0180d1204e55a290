//! The service's one error type: what a flow can answer besides success. The HTTP layer maps
//! each variant to a status and problem code in one place (`http/error.rs`).

use std::time::Duration;

use crate::crypto::CryptoError;
use crate::domain::FieldError;
use crate::store::StoreError;
use crate::tokens::TokenError;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("validation failed")]
    Validation(Vec<FieldError>),
    #[error("email already registered")]
    EmailTaken,
    #[error("invalid email or password")]
    InvalidCredentials,
    #[error("invalid access token")]
    InvalidToken,
    #[error("access token expired")]
    TokenExpired,
    #[error("session revoked")]
    SessionRevoked,
    #[error("invalid refresh token")]
    InvalidRefreshToken,
    #[error("refresh token expired")]
    RefreshTokenExpired,
    #[error("refresh token reused")]
    RefreshTokenReused,
    #[error("session not found")]
    SessionNotFound,
    /// The admin API: no account has this id.
    #[error("user not found")]
    UserNotFound,
    #[error("CSRF token missing or wrong")]
    CsrfFailed,
    /// Authenticated, but not allowed this (the admin API): nothing more is said.
    #[error("forbidden")]
    Forbidden,
    /// Too much password hashing queued: shed load rather than let every login wait.
    #[error("overloaded")]
    Overloaded,
    /// Too many failed logins for this account (see `lockout`); try again after this long.
    #[error("account locked; retry after {0:?}")]
    AccountLocked(Duration),
    /// A mailed link's token that is unknown, already used, superseded or void.
    #[error("invalid or used email link token")]
    InvalidEmailToken,
    /// A mailed link's token past its time.
    #[error("email link token expired")]
    EmailTokenExpired,
    /// A sign-in link asked for in a browser, presented without that browser's cookie.
    #[error("sign-in link asked for in another browser")]
    EmailLinkOtherBrowser,
    /// Sign-in needs a verified address (`TESSERA_REQUIRE_VERIFIED_EMAIL`).
    #[error("email address not verified")]
    EmailNotVerified,
    /// Sign-in links are off (`TESSERA_EMAIL_LINK_SIGNIN`).
    #[error("sign-in links are not enabled")]
    LinkSigninDisabled,
    /// Passkeys are off: no usable WebAuthn relying party (see `config::Passkeys`).
    #[error("passkeys are not enabled")]
    PasskeysDisabled,
    /// The account has no passkey with this id.
    #[error("passkey not found")]
    PasskeyNotFound,
    /// A passkey ceremony that is unknown, already answered, or of another kind.
    #[error("unknown or used passkey ceremony")]
    PasskeyCeremonyInvalid,
    #[error("passkey ceremony expired")]
    PasskeyCeremonyExpired,
    /// A credential or assertion that is malformed or fails WebAuthn's checks (signature,
    /// challenge, user verification); the reason is for the log.
    #[error("passkey answer refused: {0}")]
    PasskeyInvalid(String),
    /// Made for another origin or relying party id.
    #[error("passkey answer for another origin or relying party")]
    PasskeyWrongOrigin,
    /// The credential is registered to no account (or was removed).
    #[error("unknown passkey")]
    PasskeyUnknown,
    /// The authenticator's signature counter did not move forward: possibly a cloned key.
    #[error("passkey signature counter went backwards")]
    PasskeyCounterRegressed,
    /// This credential is registered already.
    #[error("passkey already registered")]
    PasskeyAlreadyRegistered,
    /// A second step's challenge that is unknown, used (or used up by wrong codes).
    #[error("invalid or used second-factor challenge")]
    MfaChallengeInvalid,
    /// A second step's challenge past its time.
    #[error("second-factor challenge expired")]
    MfaChallengeExpired,
    /// A cookie-transport challenge presented without its browser's `tessera_mfa` cookie.
    #[error("second-factor challenge from another browser")]
    MfaChallengeOtherBrowser,
    /// A wrong TOTP or recovery code.
    #[error("invalid second-factor code")]
    InvalidMfaCode,
    /// A TOTP code (or an older one) already accepted.
    #[error("second-factor code already used")]
    MfaCodeReplayed,
    /// TOTP is already on (enrolment, confirmation).
    #[error("second factor already enabled")]
    MfaAlreadyEnabled,
    /// No such factor (or no enrolment pending) to confirm, remove or renew codes for.
    #[error("second factor not enabled")]
    MfaNotEnabled,
    /// A sensitive change needs a recent sign-in (`reauthentication_max_age`).
    #[error("reauthentication required")]
    ReauthenticationRequired,
    /// A role that needs a second factor (`mfa_required_roles`), in a session signed in
    /// without one.
    #[error("second factor required")]
    SecondFactorRequired,
    #[error(transparent)]
    Store(#[from] StoreError),
    /// No resource-server credential is configured, so there is no revocation feed.
    #[error("the revocation feed is not enabled")]
    FeedDisabled,
    /// A stored signing key that cannot be used as it is: encrypted with no master key, or
    /// with another one. The message names the key and `TESSERA_MASTER_KEY`.
    #[error("signing key {kid} {reason}")]
    KeyAtRest { kid: String, reason: String },
    #[error("internal error: {0}")]
    Internal(String),
}

impl AuthError {
    /// The database could not be reached or timed out: a `503`, not a fault of ours.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, AuthError::Store(StoreError::Unavailable(_)))
    }
}

impl From<CryptoError> for AuthError {
    fn from(e: CryptoError) -> Self {
        AuthError::Internal(e.to_string())
    }
}

pub(super) fn token_internal(e: TokenError) -> AuthError {
    AuthError::Internal(e.to_string())
}
