//! Who may call the admin API (`/v1/admin/`): a signed-in user whose account holds the admin
//! role (`TESSERA_ADMIN_ROLE`), or a back-office tool presenting one of the configured
//! credentials (`TESSERA_ADMIN_CREDENTIALS`) with the scope the request needs.
//!
//! A user's access token is authenticated as on every endpoint (signature, expiry, session
//! liveness: a revoked admin session is refused at once), and then the account itself is read:
//! the role must still be in its stored roles and the account must not be disabled, so a
//! demotion or a disable takes effect on the next request, not when the token expires.

use std::fmt;
use std::sync::Arc;

use ring::digest::{digest, SHA256};

use super::admin::{Actor, AdminService};
use super::views::{AuthContext, ClientInfo};
use super::{AuthError, AuthService, KeyOps, KeyView};
use crate::domain::{parse_admin_credential, AdminScope};

/// One back-office credential: its name, its scope and the SHA-256 of its secret.
struct AdminCredential {
    name: String,
    scope: AdminScope,
    digest: [u8; 32],
}

/// The admin role and the back-office credentials, as the policy holds them.
#[derive(Clone)]
pub struct AdminAccess {
    role: String,
    credentials: Arc<Vec<AdminCredential>>,
}

impl Default for AdminAccess {
    fn default() -> Self {
        AdminAccess::new("admin", &[] as &[&str])
    }
}

impl AdminAccess {
    /// `entries` are `NAME:SCOPE:SECRET` as configured (checked at start; an entry that does
    /// not read is left out).
    pub fn new<S: AsRef<str>>(role: &str, entries: &[S]) -> AdminAccess {
        let credentials = entries
            .iter()
            .filter_map(|e| parse_admin_credential(e.as_ref()).ok())
            .map(|(name, scope, secret)| AdminCredential {
                name: name.to_owned(),
                scope,
                digest: sha256(secret),
            })
            .collect();
        AdminAccess {
            role: role.to_owned(),
            credentials: Arc::new(credentials),
        }
    }

    pub fn role(&self) -> &str {
        &self.role
    }

    /// The credential whose secret `presented` is. Digests are compared, so the time taken
    /// says nothing about a secret.
    fn credential(&self, presented: &str) -> Option<&AdminCredential> {
        let presented = sha256(presented);
        self.credentials.iter().find(|c| c.digest == presented)
    }
}

impl fmt::Debug for AdminAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.credentials.iter().map(|c| c.name.as_str()).collect();
        write!(
            f,
            "AdminAccess {{ role: {:?}, credentials: {names:?} }}",
            self.role
        )
    }
}

fn sha256(text: &str) -> [u8; 32] {
    let mut out = [0; 32];
    out.copy_from_slice(digest(&SHA256, text.as_bytes()).as_ref());
    out
}

impl AuthService {
    /// A back-office credential presented as a bearer token: `None` if `token` is none of
    /// them (it may be an access token), `Forbidden` if its scope does not cover `needs`.
    pub fn admin_credential(&self, token: &str, needs: AdminScope) -> Result<Option<Actor>, AuthError> {
        match self.policy.admin.credential(token) {
            None => Ok(None),
            Some(c) if c.scope >= needs => Ok(Some(Actor::Credential(c.name.clone()))),
            Some(_) => Err(AuthError::Forbidden),
        }
    }

    /// An authenticated user as an administrator: its account must hold the admin role now
    /// and not be disabled; anyone else is `Forbidden`, with no word of why.
    pub async fn admin_user(&self, ctx: &AuthContext) -> Result<Actor, AuthError> {
        let account = self.store.find_account_by_id(ctx.user_id()).await?;
        match account {
            Some(a) if a.disabled_at.is_none() && a.user.roles.contains(&self.policy.admin.role) => {
                if self
                    .policy
                    .role_in_effect(&self.policy.admin.role, &ctx.claims.amr)
                {
                    Ok(Actor::User(a.user.id))
                } else {
                    Err(AuthError::SecondFactorRequired)
                }
            }
            _ => Err(AuthError::Forbidden),
        }
    }

    /// The signing keys, as `tessera keys list` shows them.
    pub async fn list_keys(&self) -> Result<Vec<KeyView>, AuthError> {
        let ops = KeyOps {
            store: self.store.as_ref(),
            alerts: self.events.alerts(),
            master: &self.policy.keys.master_keys,
            admin: None,
        };
        ops.list(self.clock.now(), &self.policy.keys).await
    }

    /// The administration service acting for `actor`, from `client`.
    pub fn admin(&self, actor: Actor, client: ClientInfo) -> AdminService {
        let server = super::admin::ServerParts {
            store: Arc::clone(&self.store),
            clock: Arc::clone(&self.clock),
            alerts: self.events.sink(),
            hashing: Arc::clone(&self.hashing),
            follower: Arc::clone(&self.revocations),
            outbox: self.outbox.clone(),
        };
        AdminService::for_request(server, actor, client)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_found_by_secret_with_their_scope() {
        let (r, w) = ("r".repeat(32), "w".repeat(40));
        let access = AdminAccess::new(
            "ops",
            &[format!("ro:admin:read:{r}"), format!("rw:admin:write:{w}")],
        );
        assert_eq!(
            access.credential(&r).map(|c| (c.name.as_str(), c.scope)),
            Some(("ro", AdminScope::Read))
        );
        assert_eq!(access.credential(&w).map(|c| c.scope), Some(AdminScope::Write));
        assert!(access.credential(&"r".repeat(31)).is_none());
        assert!(access.credential("").is_none());
        assert!(!format!("{access:?}").contains("rrrr"));
    }
}
