//! What the flows enforce, as plain values: startup builds it from the configuration
//! (`startup::policy`), so the service never reads `Config`.

use std::borrow::Cow;
use std::time::Duration;

use super::admin_access::AdminAccess;
use super::email::EmailPolicy;
use super::feed::FeedCredentials;
use super::keys::KeyPolicy;
use super::lockout::LockoutPolicy;
use super::passkeys::PasskeyPolicy;
use crate::domain::SessionCheck;

/// The lifetimes and limits the flows enforce.
#[derive(Clone, Debug)]
pub struct Policy {
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
    pub session_ttl: Duration,
    pub reuse_grace: Duration,
    pub max_sessions: u32,
    pub session_check: SessionCheck,
    /// How many password hashes may run at once (each holds 19 MiB and a hashing thread).
    pub hash_concurrency: usize,
    pub lockout: LockoutPolicy,
    /// Audit events older than this are swept (`ZERO`: kept forever).
    pub audit_retention: Duration,
    /// Who may read the revocation feed.
    pub feed_credentials: FeedCredentials,
    /// Who may call the admin API.
    pub admin: AdminAccess,
    /// The `app_metadata` keys copied into access tokens.
    pub custom_claims: Vec<String>,
    /// The signing keys: algorithm, sealing at rest, publish-ahead.
    pub keys: KeyPolicy,
    /// The flows by email: verification, reset, sign-in links.
    pub email: EmailPolicy,
    /// The WebAuthn relying party of passkeys, or why they are off.
    pub passkeys: PasskeyPolicy,
    /// How recent a sign-in must be for sensitive changes.
    pub reauthentication_max_age: Duration,
    /// Roles that take effect only in sessions signed in with a second factor.
    pub mfa_required_roles: Vec<String>,
}

impl Policy {
    /// The roles a session's access tokens carry (see [`roles_in_session`]).
    pub fn session_roles<'a>(&self, roles: &'a [String], amr: &[String]) -> Cow<'a, [String]> {
        roles_in_session(roles, &self.mfa_required_roles, amr)
    }

    /// Whether `role` is in effect for a session signed in as `amr` says.
    pub fn role_in_effect(&self, role: &str, amr: &[String]) -> bool {
        !self.mfa_required_roles.iter().any(|r| r == role) || signed_in_with_mfa(amr)
    }
}

fn signed_in_with_mfa(amr: &[String]) -> bool {
    amr.iter().any(|a| a == "mfa")
}

/// The account's `roles`, less those in `mfa_required` when the session was not signed in
/// with a second factor (`amr` without `mfa`). Borrowed when nothing is left out, which is
/// every refresh of a deployment without such roles.
pub fn roles_in_session<'a>(
    roles: &'a [String],
    mfa_required: &[String],
    amr: &[String],
) -> Cow<'a, [String]> {
    if mfa_required.is_empty() || signed_in_with_mfa(amr) || !roles.iter().any(|r| mfa_required.contains(r)) {
        return Cow::Borrowed(roles);
    }
    Cow::Owned(
        roles
            .iter()
            .filter(|r| !mfa_required.contains(r))
            .cloned()
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn roles_needing_a_second_factor_are_left_out_without_one() {
        let roles = strings(&["admin", "support"]);
        let required = strings(&["admin"]);
        let pwd = strings(&["pwd"]);
        let mfa = strings(&["pwd", "otp", "mfa"]);
        assert_eq!(
            &*roles_in_session(&roles, &required, &pwd),
            &strings(&["support"])[..]
        );
        assert_eq!(&*roles_in_session(&roles, &required, &mfa), &roles[..]);
        assert!(matches!(roles_in_session(&roles, &[], &pwd), Cow::Borrowed(_)));
        let others = strings(&["support"]);
        assert!(matches!(
            roles_in_session(&others, &required, &pwd),
            Cow::Borrowed(_)
        ));
        // A session from before amr was recorded has none: treated as no second factor.
        assert_eq!(
            &*roles_in_session(&roles, &required, &[]),
            &strings(&["support"])[..]
        );
    }
}
