//! Domain vocabulary shared by every layer: ids, timestamps, validated inputs, the clock.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use uuid::Uuid;

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A new time-ordered (v7) id.
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }

            pub fn parse(s: &str) -> Option<Self> {
                Uuid::try_parse(s).ok().map(Self)
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

uuid_id!(
    /// Identifies a user account.
    UserId
);
uuid_id!(
    /// Identifies a passkey registered to an account (not the credential's own id).
    PasskeyId
);
uuid_id!(
    /// Identifies one device session: one login and its chain of refresh tokens.
    SessionId
);

/// A point in time as milliseconds since the Unix epoch, UTC.
///
/// Stored as a plain integer so SQLite and PostgreSQL compare and index it the same way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub fn millis(self) -> i64 {
        self.0
    }

    pub fn seconds(self) -> i64 {
        self.0.div_euclid(1000)
    }

    pub fn plus(self, d: std::time::Duration) -> Timestamp {
        Timestamp(
            self.0
                .saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
        )
    }

    pub fn minus(self, d: std::time::Duration) -> Timestamp {
        Timestamp(
            self.0
                .saturating_sub(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
        )
    }

    /// Whole seconds from `self` until `later`, never negative.
    pub fn seconds_until(self, later: Timestamp) -> i64 {
        (later.0 - self.0).max(0) / 1000
    }

    /// RFC 3339 in UTC with millisecond precision, e.g. `2026-11-22T23:16:19.123Z`.
    pub fn to_rfc3339(self) -> String {
        Rfc3339::new(self).as_str().to_owned()
    }
}

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // Written on the stack, no string and no formatting machinery: every `/v1/auth/me`
        // answer carries one (through `fmt`, it was a fiftieth of a verify's CPU).
        s.serialize_str(Rfc3339::new(*self).as_str())
    }
}

/// A timestamp as [`Timestamp::to_rfc3339`] writes it: `YYYY-MM-DDTHH:MM:SS.mmmZ`, always
/// 24 ASCII bytes. A time whose year does not fit four digits (outside 0000-9999: nothing a
/// clock or a TTL produces) is written as the epoch.
struct Rfc3339([u8; 24]);

impl Rfc3339 {
    const EPOCH: &'static [u8; 24] = b"1970-01-01T00:00:00.000Z";

    fn new(t: Timestamp) -> Rfc3339 {
        let nanos = i128::from(t.0) * 1_000_000;
        let Ok(t) = time::OffsetDateTime::from_unix_timestamp_nanos(nanos) else {
            return Rfc3339(*Self::EPOCH);
        };
        let Ok(year) = u16::try_from(t.year()) else {
            return Rfc3339(*Self::EPOCH);
        };
        if year > 9999 {
            return Rfc3339(*Self::EPOCH);
        }
        let mut out = *Self::EPOCH;
        let mut put = |at: usize, width: usize, mut value: u16| {
            for i in (at..at + width).rev() {
                out[i] = b'0' + (value % 10) as u8;
                value /= 10;
            }
        };
        put(0, 4, year);
        put(5, 2, u16::from(u8::from(t.month())));
        put(8, 2, u16::from(t.day()));
        put(11, 2, u16::from(t.hour()));
        put(14, 2, u16::from(t.minute()));
        put(17, 2, u16::from(t.second()));
        put(20, 3, t.millisecond());
        Rfc3339(out)
    }

    fn as_str(&self) -> &str {
        // Digits and the separators of `EPOCH` only, so always UTF-8.
        std::str::from_utf8(&self.0).unwrap_or("1970-01-01T00:00:00.000Z")
    }
}

/// Where the service gets "now" from; tests substitute a clock they can move.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Timestamp;
}

/// The wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        Timestamp(ms)
    }
}

/// Whom a per-client limit counts (rate limits, open connections): an IPv4 address, or an
/// IPv6 /64. One subscriber usually holds a whole /64, so counting single IPv6 addresses would
/// limit nothing. IPv4-mapped IPv6 addresses count as their IPv4 address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ClientNetwork {
    V4(Ipv4Addr),
    /// The first four segments of the address.
    V6Prefix([u16; 4]),
}

impl ClientNetwork {
    pub fn of(ip: IpAddr) -> ClientNetwork {
        match ip {
            IpAddr::V4(v4) => ClientNetwork::V4(v4),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => ClientNetwork::V4(v4),
                None => {
                    let s = v6.segments();
                    ClientNetwork::V6Prefix([s[0], s[1], s[2], s[3]])
                }
            },
        }
    }
}

impl fmt::Display for ClientNetwork {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientNetwork::V4(v4) => v4.fmt(f),
            ClientNetwork::V6Prefix([a, b, c, d]) => write!(f, "{a:x}:{b:x}:{c:x}:{d:x}::/64"),
        }
    }
}

/// How an access token's session is checked on this server's authenticated endpoints.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SessionCheck {
    /// From memory: revocations made by this instance apply at once, those of other
    /// instances (PostgreSQL `NOTIFY`) or processes (a revocation log, polled) within
    /// moments; whenever that feed is down, every request reads the database.
    #[default]
    Cached,
    /// A database read on every authenticated request.
    Strict,
}

impl std::str::FromStr for SessionCheck {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "cached" => Ok(SessionCheck::Cached),
            "strict" => Ok(SessionCheck::Strict),
            other => Err(format!("{other:?} is neither \"cached\" nor \"strict\"")),
        }
    }
}

impl fmt::Display for SessionCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SessionCheck::Cached => "cached",
            SessionCheck::Strict => "strict",
        })
    }
}

/// Declares [`AuditKind`] from one list of variants and their names, so that `as_str`,
/// `parse` and `ALL` cannot disagree.
macro_rules! audit_kinds {
    ($($variant:ident => $name:literal,)*) => {
        /// Every kind of audit event, by the one name it is stored, logged and alerted under: a
        /// call site cannot misspell one.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum AuditKind {
            $($variant,)*
        }

        impl AuditKind {
            /// Every kind, in the list's order (`tessera audit --kind` offers these).
            pub const ALL: &'static [AuditKind] = &[$(AuditKind::$variant,)*];

            pub const fn as_str(self) -> &'static str {
                match self {
                    $(AuditKind::$variant => $name,)*
                }
            }

            pub fn parse(name: &str) -> Option<AuditKind> {
                AuditKind::ALL.iter().copied().find(|k| k.as_str() == name)
            }
        }
    };
}

audit_kinds! {
    UserRegistered => "user_registered",
    LoginSucceeded => "login_succeeded",
    LoginFailed => "login_failed",
    LoginFailedBurst => "login_failed_burst",
    LoginNewDevice => "login_new_device",
    AccountLocked => "account_locked",
    RefreshTokenReused => "refresh_token_reused",
    SessionRevoked => "session_revoked",
    SessionEvicted => "session_evicted",
    LogoutAll => "logout_all",
    LogoutOthers => "logout_others",
    PasswordChanged => "password_changed",
    PasswordChangeFailed => "password_change_failed",
    EmailVerified => "email_verified",
    EmailChangeRequested => "email_change_requested",
    EmailChanged => "email_changed",
    MfaEnabled => "mfa_enabled",
    MfaDisabled => "mfa_disabled",
    RecoveryCodeUsed => "recovery_code_used",
    SigningKeyRotated => "signing_key_rotated",
    SigningKeyRevoked => "signing_key_revoked",
    SigningKeysEncrypted => "signing_keys_encrypted",
    AdminUsersImported => "admin_users_imported",
    AdminUserEnabled => "admin_user_enabled",
    AdminUserDisabled => "admin_user_disabled",
    AdminUserAdded => "admin_user_added",
    AdminSessionsRevoked => "admin_sessions_revoked",
    AdminSessionRevoked => "admin_session_revoked",
    AdminRolesSet => "admin_roles_set",
    AdminUserUpdated => "admin_user_updated",
    AdminPasswordSet => "admin_password_set",
    AdminUserDeleted => "admin_user_deleted",
    PasskeyAdded => "passkey_added",
    PasskeyRemoved => "passkey_removed",
    PasskeyCounterRegressed => "passkey_counter_regressed",
}

impl fmt::Display for AuditKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Every security event that can reach the alert webhook (`TESSERA_ALERT_EVENTS` picks among
/// them).
pub const SECURITY_EVENTS: &[&str] = &[
    AuditKind::RefreshTokenReused.as_str(),
    AuditKind::SessionRevoked.as_str(),
    AuditKind::AccountLocked.as_str(),
    AuditKind::LoginFailedBurst.as_str(),
    AuditKind::LoginNewDevice.as_str(),
    AuditKind::PasswordChanged.as_str(),
    AuditKind::MfaEnabled.as_str(),
    AuditKind::MfaDisabled.as_str(),
    AuditKind::RecoveryCodeUsed.as_str(),
    AuditKind::SigningKeyRotated.as_str(),
    AuditKind::SigningKeyRevoked.as_str(),
    AuditKind::AdminUsersImported.as_str(),
    AuditKind::AdminUserAdded.as_str(),
    AuditKind::AdminUserUpdated.as_str(),
    AuditKind::AdminRolesSet.as_str(),
    AuditKind::AdminUserDisabled.as_str(),
    AuditKind::AdminUserEnabled.as_str(),
    AuditKind::AdminPasswordSet.as_str(),
    AuditKind::AdminUserDeleted.as_str(),
    AuditKind::AdminSessionRevoked.as_str(),
    AuditKind::AdminSessionsRevoked.as_str(),
    AuditKind::PasskeyAdded.as_str(),
    AuditKind::PasskeyRemoved.as_str(),
    AuditKind::PasskeyCounterRegressed.as_str(),
];

/// A comma-separated list of [`SECURITY_EVENTS`] (`all` or nothing: every one, as an empty
/// list).
pub fn parse_security_events(text: &str) -> Result<Vec<String>, String> {
    let mut events = Vec::new();
    for name in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        if name == "all" {
            return Ok(Vec::new());
        }
        if !SECURITY_EVENTS.contains(&name) {
            return Err(format!(
                "unknown event {name:?} (known: {})",
                SECURITY_EVENTS.join(", ")
            ));
        }
        if !events.iter().any(|e| e == name) {
            events.push(name.to_owned());
        }
    }
    Ok(events)
}

/// What a back-office credential (`TESSERA_ADMIN_CREDENTIALS`) may do on the admin API.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum AdminScope {
    /// `admin:read`: the reads (`GET`).
    Read,
    /// `admin:write`: the reads and every change.
    Write,
}

impl AdminScope {
    pub const fn as_str(self) -> &'static str {
        match self {
            AdminScope::Read => "admin:read",
            AdminScope::Write => "admin:write",
        }
    }
}

/// The shortest secret of a back-office credential: guessing one must be out of reach.
pub const MIN_ADMIN_SECRET_LEN: usize = 32;

/// One back-office credential as configured, `NAME:SCOPE:SECRET` (`support-desk:admin:write:
/// <32+ printable characters>`), split; an error never quotes the secret.
pub fn parse_admin_credential(entry: &str) -> Result<(&str, AdminScope, &str), String> {
    let (name, rest) = entry.split_once(':').ok_or("is not NAME:SCOPE:SECRET")?;
    let name_ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if !name_ok {
        return Err("has a name that is not 1 to 64 letters, digits, `_`, `-` or `.`".into());
    }
    let (scope, secret) = if let Some(secret) = rest.strip_prefix("admin:read:") {
        (AdminScope::Read, secret)
    } else if let Some(secret) = rest.strip_prefix("admin:write:") {
        (AdminScope::Write, secret)
    } else {
        return Err(format!("{name:?} has no scope `admin:read` or `admin:write`"));
    };
    if secret.len() < MIN_ADMIN_SECRET_LEN {
        return Err(format!(
            "{name:?} has a secret shorter than {MIN_ADMIN_SECRET_LEN} characters"
        ));
    }
    if !secret.chars().all(|c| c.is_ascii_graphic()) {
        return Err(format!(
            "{name:?} has a secret with characters other than printable ASCII"
        ));
    }
    Ok((name, scope, secret))
}

/// Claim names an access token has, or that JWT (RFC 7519, 9068) and OIDC give a meaning: a
/// custom claim (`TESSERA_CUSTOM_CLAIMS`) may not take one.
pub const RESERVED_CLAIMS: &[&str] = &[
    "iss",
    "sub",
    "aud",
    "exp",
    "nbf",
    "iat",
    "jti",
    "sid",
    "roles",
    "scope",
    "client_id",
    "typ",
    "cty",
    "auth_time",
    "acr",
    "amr",
    "azp",
    "cnf",
    "act",
    "may_act",
    "nonce",
    "at_hash",
    "groups",
    "entitlements",
    "email_verified",
];

/// The most custom claims a deployment may copy into access tokens.
pub const MAX_CUSTOM_CLAIMS: usize = 16;

/// Role names: 1 to [`MAX_ROLE_CHARS`] letters, digits and `_ - . :` (a role travels in
/// every access token's `roles` claim).
pub const MAX_ROLE_CHARS: usize = 64;

pub fn is_role_name(role: &str) -> bool {
    !role.is_empty()
        && role.chars().count() <= MAX_ROLE_CHARS
        && role
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'))
}

/// Comma-separated role names (a setting), repeats dropped.
pub fn parse_role_names(text: &str) -> Result<Vec<String>, String> {
    let mut roles: Vec<String> = Vec::new();
    for role in text.split(',').map(str::trim).filter(|r| !r.is_empty()) {
        if !is_role_name(role) {
            return Err(format!(
                "{role:?} is not 1 to {MAX_ROLE_CHARS} letters, digits, `_`, `-`, `.` or `:`"
            ));
        }
        if !roles.iter().any(|r| r == role) {
            roles.push(role.to_owned());
        }
    }
    Ok(roles)
}

/// Comma-separated `app_metadata` keys to copy into access tokens as claims of the same name.
pub fn parse_claim_names(text: &str) -> Result<Vec<String>, String> {
    let mut names: Vec<String> = Vec::new();
    for name in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let ok = name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'));
        if !ok {
            return Err(format!(
                "{name:?} is not 1 to 64 letters, digits, `_`, `-`, `.` or `:`"
            ));
        }
        if RESERVED_CLAIMS.contains(&name) {
            return Err(format!("{name:?} is a reserved claim name"));
        }
        if !names.iter().any(|n| n == name) {
            names.push(name.to_owned());
        }
    }
    if names.len() > MAX_CUSTOM_CLAIMS {
        return Err(format!("at most {MAX_CUSTOM_CLAIMS} custom claims"));
    }
    Ok(names)
}

/// A validation problem with one input field.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: &str, message: impl Into<String>) -> Self {
        Self {
            field: field.to_owned(),
            message: message.into(),
        }
    }
}

/// An email address as stored: trimmed, checked, lower-cased.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Email(String);

impl Email {
    pub const MAX_LEN: usize = 254;

    /// Trims, validates, then lower-cases, in that order (the contract's rule).
    pub fn parse(raw: &str) -> Result<Email, FieldError> {
        let trimmed = raw.trim();
        let invalid = |m: &str| Err(FieldError::new("email", m));
        if trimmed.is_empty() {
            return invalid("must not be empty");
        }
        if trimmed.len() > Self::MAX_LEN {
            return invalid("must be at most 254 characters");
        }
        let Some((local, domain)) = trimmed.rsplit_once('@') else {
            return invalid("must be an email address");
        };
        let bad_char = |c: char| c.is_whitespace() || c.is_control() || c == '@';
        if local.is_empty()
            || local.len() > 64
            || domain.is_empty()
            || local.chars().any(bad_char)
            || domain.chars().any(bad_char)
            || !domain.contains('.')
            || domain.starts_with('.')
            || domain.ends_with('.')
            || domain.contains("..")
        {
            return invalid("must be an email address");
        }
        Ok(Email(trimmed.to_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// An address already normalised by [`Email::parse`], as read back from the store.
    pub fn from_stored(s: String) -> Email {
        Email(s)
    }
}

/// A password as the user typed it. Never printed.
pub struct Password(String);

impl Password {
    pub const MIN_CHARS: usize = 8;
    pub const MAX_CHARS: usize = 1024;

    /// Length counts Unicode characters, not bytes.
    pub fn parse(raw: &str) -> Result<Password, FieldError> {
        let n = raw.chars().count();
        if n < Self::MIN_CHARS {
            return Err(FieldError::new("password", "must be at least 8 characters"));
        }
        if n > Self::MAX_CHARS {
            return Err(FieldError::new("password", "must be at most 1024 characters"));
        }
        Ok(Password(raw.to_owned()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn custom_claim_names_are_checked_and_never_reserved() {
        assert_eq!(
            parse_claim_names(" tenant_id, plan ,tenant_id").unwrap(),
            ["tenant_id", "plan"]
        );
        assert!(parse_claim_names("").unwrap().is_empty());
        for bad in ["sub", "roles", "tenant id", "exp,plan", &"x".repeat(65)] {
            assert!(parse_claim_names(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn admin_credentials_are_name_scope_secret() {
        let secret = "s".repeat(32);
        let entry = format!("desk:admin:write:{secret}");
        assert_eq!(
            parse_admin_credential(&entry).unwrap(),
            ("desk", AdminScope::Write, secret.as_str())
        );
        let entry = format!("ro.tool:admin:read:{secret}:x");
        assert_eq!(parse_admin_credential(&entry).unwrap().1, AdminScope::Read);
        for bad in [
            format!(":admin:read:{secret}"),
            format!("desk:admin:root:{secret}"),
            "desk:admin:read:short".to_owned(),
            format!("desk:admin:read:{secret} x"),
            secret.clone(),
        ] {
            let err = parse_admin_credential(&bad).unwrap_err();
            assert!(!err.contains(&secret), "{err}");
        }
    }

    #[test]
    fn email_is_trimmed_then_lowercased() {
        let e = Email::parse("  Alice@Example.COM ").unwrap();
        assert_eq!(e.as_str(), "alice@example.com");
    }

    #[test]
    fn email_rejects_garbage() {
        for bad in [
            "", "   ", "no-at", "a@b", "@x.io", "a@", "a b@x.io", "a@x..io", "a@.x.io",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn password_length_counts_characters() {
        assert!(Password::parse("ééééééé").is_err()); // 7 chars, 14 bytes
        assert!(Password::parse("éééééééé").is_ok()); // 8 chars
        assert!(Password::parse(&"x".repeat(1024)).is_ok());
        assert!(Password::parse(&"x".repeat(1025)).is_err());
    }

    #[test]
    fn password_debug_is_redacted() {
        let p = Password::parse("hunter22hunter22").unwrap();
        assert!(!format!("{p:?}").contains("hunter"));
    }

    #[test]
    fn timestamps_format_as_rfc3339_utc() {
        assert_eq!(Timestamp(0).to_rfc3339(), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            Timestamp(1_700_000_000_123).to_rfc3339(),
            "2023-11-14T22:13:20.123Z"
        );
        // Year 0 through 9999 in steps of a prime number of milliseconds (every month, day,
        // hour and millisecond digit position moves), against the calendar written by `fmt`.
        let last = Timestamp(253_402_300_799_999);
        assert_eq!(last.to_rfc3339(), "9999-12-31T23:59:59.999Z");
        let mut ms = -62_167_219_200_000_i64;
        while ms <= last.0 {
            let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).unwrap();
            let expected = format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute(),
                t.second(),
                t.millisecond()
            );
            assert_eq!(Timestamp(ms).to_rfc3339(), expected);
            assert_eq!(
                serde_json::to_string(&Timestamp(ms)).unwrap(),
                format!("\"{expected}\"")
            );
            ms += 1_000_003_333_337;
        }
        // Before year 0 and past 9999 (saturated arithmetic): the epoch, not a malformed date.
        for ms in [i64::MIN, -62_167_219_200_001, last.0 + 1, i64::MAX] {
            assert_eq!(Timestamp(ms).to_rfc3339(), "1970-01-01T00:00:00.000Z");
        }
    }

    #[test]
    fn alert_events_are_a_list_of_known_names() {
        assert_eq!(
            parse_security_events(" password_changed, account_locked ,password_changed").unwrap(),
            ["password_changed", "account_locked"]
        );
        assert!(parse_security_events("all").unwrap().is_empty());
        assert!(parse_security_events("").unwrap().is_empty());
        assert!(parse_security_events("password_changed,login_failed").is_err());
    }
}
