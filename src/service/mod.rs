//! The auth flows and the components they are built from. No HTTP types here: callers pass
//! plain values and get [`AuthError`]s.
//!
//! Components, each owning its state: [`KeyRing`] (`keys`: the signing keys, reloaded and
//! watched), [`Hashing`] (bounded password hashing), [`RevocationFollower`] (`revocations`:
//! session liveness from memory, kept in step with revocations made anywhere, over
//! `liveness`), [`Events`] (audit and alerts), [`Sweeper`] (`sweep`) and the mail outbox's
//! wake-up (`mail::Outbox`: flows queue mail in their transaction). [`AuthService`]
//! composes them; each flow is a file of its own that borrows the components it needs:
//! `login` (register, login, with `attempt` and `lockout` for the per-account lock),
//! `mfa` (second factors: TOTP, recovery codes) and `mfa_login` (the second step of a login,
//! reauthentication),
//! `refresh` (rotation, grace replay and reuse detection, over the pure `rotation`),
//! `sessions` (authentication, listing, revocation, logout), `password` (change), `email`
//! (verification, reset, address change, sign-in links, new-device notices) and `feed` (the
//! revocation feed). `admin` is the account and session administration of the
//! command line and the admin API (`admin_access`: who may call it), `import` the command
//! line's import of accounts from other systems; `metadata` checks user and app metadata.

pub mod admin;
mod admin_access;
pub mod aligned_clock;
mod attempt;
mod email;
mod error;
mod events;
pub mod feed;
mod hashing;
pub mod import;
mod keys;
pub mod liveness;
pub mod lockout;
mod login;
pub mod metadata;
mod mfa;
mod mfa_login;
mod passkeys;
mod password;
mod policy;
mod profile;
mod refresh;
mod revocations;
pub mod rotation;
mod sessions;
mod sweep;
mod views;

pub use crate::store::PoolUsage;
pub use admin_access::AdminAccess;
pub use email::EmailPolicy;
pub use error::AuthError;
pub use events::Events;
pub use hashing::{Hashing, HashingStats};
pub use keys::{
    open_key_set_records, Encrypted, KeyOps, KeyPolicy, KeyRing, KeyView, Revoked, JWKS_MAX_AGE,
    KEY_RELOAD_EVERY, KEY_SET_MAX_AGE, MIN_KEY_PUBLISH_AHEAD,
};
pub use mfa::{FactorProof, FactorsView, HolderProof, PasskeyView, RecoveryCodes, TotpEnrolment, TotpView};
pub use passkeys::{PasskeyPolicy, PasskeySignInOptions, RegisteredPasskey, CEREMONY_TTL};
pub use policy::Policy;
pub use revocations::{
    RevocationFollower, REMEMBERED_SESSIONS, REVOCATION_LOG_RETENTION, REVOCATION_POLL_EVERY,
};
pub use sweep::{Sweeper, ENDED_SESSION_RETENTION};
pub use views::{
    AuthContext, ClientInfo, LoginOutcome, LogoutOutcome, LogoutScope, MfaChallenge, SessionView, TokenGrant,
    Transport, UserMetadata, UserView,
};

use std::sync::Arc;

use ring::rand::SystemRandom;

use crate::alerts::AlertSink;
use crate::crypto::RefreshToken;
use crate::domain::{Clock, Timestamp};
use crate::mail::Outbox;
use crate::store::{SessionRecord, Store, UserRecord};
use crate::tokens::{AccessTokens, SignedIn};
use error::token_internal;

/// The service the HTTP layer calls: the components, the store and the policy. Each flow
/// (`login`, `refresh`, `sessions`, `password`, `feed`) adds its methods in its own file.
pub struct AuthService {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    policy: Policy,
    rng: SystemRandom,
    keys: KeyRing,
    hashing: Arc<Hashing>,
    revocations: Arc<RevocationFollower>,
    events: Events,
    sweeper: Sweeper,
    /// Wakes the mail deliverer once a flow has queued a mail.
    outbox: Outbox,
}

impl AuthService {
    /// Loads the signing keys (creating the first one on an empty database) and builds the service.
    pub async fn start(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        alerts: Arc<dyn AlertSink>,
        policy: Policy,
        issuer: &str,
        audience: &str,
        outbox: Outbox,
    ) -> Result<AuthService, AuthError> {
        let keys = KeyRing::open(
            Arc::clone(&store),
            Arc::clone(&clock),
            alerts.as_ref(),
            policy.keys.clone(),
            issuer,
            audience,
        )
        .await?;
        let hashing = Arc::new(Hashing::start(policy.hash_concurrency).await?);
        let revocations = Arc::new(RevocationFollower::start(Arc::clone(&store)).await?);
        let events = Events::new(Arc::clone(&store), alerts, Arc::clone(&clock));
        let sweeper = Sweeper::new(
            Arc::clone(&store),
            Arc::clone(&clock),
            policy.audit_retention,
            policy.lockout.window,
        );
        Ok(AuthService {
            store,
            clock,
            policy,
            rng: SystemRandom::new(),
            keys,
            hashing,
            revocations,
            events,
            sweeper,
            outbox,
        })
    }

    /// The signing keys: the JWKS, and the reload and watch tasks of `startup`.
    pub fn keys(&self) -> &KeyRing {
        &self.keys
    }

    pub fn hashing(&self) -> &Hashing {
        &self.hashing
    }

    /// The follower of revocations (a task of `startup` runs it).
    pub fn revocations(&self) -> &RevocationFollower {
        &self.revocations
    }

    /// What the mail outbox has done, for `/metrics`.
    pub fn mail_stats(&self) -> Arc<crate::mail::MailStats> {
        self.outbox.stats()
    }

    pub fn sweeper(&self) -> &Sweeper {
        &self.sweeper
    }

    /// Live sessions in the database (every instance's), for the metrics gauge: a scan, so
    /// its caller rations it.
    pub async fn count_live_sessions(&self) -> Result<u64, AuthError> {
        Ok(self.store.count_live_sessions(self.clock.now()).await?)
    }

    /// The database connection pool's usage, where the backend has a pool.
    pub fn pool_usage(&self) -> Option<PoolUsage> {
        self.store.pool_usage()
    }

    pub async fn health(&self) -> Result<(), AuthError> {
        Ok(self.store.ping().await?)
    }

    fn grant(
        &self,
        keys: &AccessTokens,
        user: &UserRecord,
        session: &SessionRecord,
        refresh: RefreshToken,
        now: Timestamp,
    ) -> Result<TokenGrant, AuthError> {
        // An access token never outlives its session.
        let access_expires_at = now.plus(self.policy.access_ttl).min(session.expires_at());
        let claims = metadata::custom_claims(&self.policy.custom_claims, &user.app_metadata);
        let access_token = keys
            .issue_for(
                user.id,
                session.id,
                &self.policy.session_roles(&user.roles, &session.amr),
                user.email_verified_at.is_some(),
                now,
                access_expires_at,
                claims.as_ref(),
                Some(SignedIn {
                    amr: &session.amr,
                    auth_time: session.auth_time,
                }),
            )
            .map_err(token_internal)?;
        Ok(TokenGrant {
            access_token,
            access_expires_in: access_expires_at.seconds() - now.seconds(),
            refresh_token: refresh,
            refresh_expires_in: now.seconds_until(session.expires_at()),
            session_id: session.id,
            user: UserView::from(user),
            csrf_token: session.csrf_token.clone(),
        })
    }
}

/// A credential taken from a cookie comes with a CSRF token that must be the session's own.
fn check_csrf(session: &SessionRecord, csrf: Option<&str>) -> Result<(), AuthError> {
    match csrf {
        Some(presented) if !session.csrf_matches(presented) => Err(AuthError::CsrfFailed),
        _ => Ok(()),
    }
}
