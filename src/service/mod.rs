//! The auth flows, one file per flow: `login` (register, login), `refresh` (rotation, grace
//! replay, reuse detection), `sessions` (authentication, listing, revocation, logout, sweep),
//! with `keys` (signing keys), `hashing` (bounded password hashing), `revocations` and
//! `liveness` (session liveness from memory) and `rotation` (the pure refresh state machine);
//! `admin` is the command line's account and session administration, `import` its import
//! of accounts from other systems.
//! No HTTP types here: callers pass plain values and get [`AuthError`]s.

pub mod admin;
pub mod aligned_clock;
mod attempt;
pub mod feed;
mod hashing;
pub mod import;
mod keys;
pub mod liveness;
pub mod lockout;
mod login;
mod password;
mod refresh;
mod revocations;
pub mod rotation;
mod sessions;

pub use crate::store::PoolUsage;
pub use hashing::HashingStats;
pub use keys::{
    open_key_set_records, retired_grace, KeyOps, KeyView, Revoked, JWKS_MAX_AGE, KEY_RELOAD_EVERY,
    KEY_SET_MAX_AGE, MIN_KEY_PUBLISH_AHEAD,
};
pub use revocations::{REVOCATION_LOG_RETENTION, REVOCATION_POLL_EVERY};
pub use sessions::ENDED_SESSION_RETENTION;

use std::sync::atomic::AtomicI64;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use ring::rand::SystemRandom;
use serde::Serialize;
use tokio::sync::Semaphore;

use crate::alerts::{Alert, AlertSink};
use crate::crypto::master_key::MasterKeys;
use crate::crypto::{CryptoError, PasswordHashString, PasswordHasher, RefreshToken};
use crate::domain::{AuditKind, Clock, FieldError, SessionCheck, SessionId, Timestamp, UserId};
use crate::store::{AuditEvent, SessionRecord, Store, StoreError, UserRecord};
use crate::tokens::{AccessClaims, AccessTokens, SigningAlg, TokenError};
use feed::FeedCredentials;
use keys::build_key_set;
use liveness::{LiveSessions, SessionSnapshot};
use lockout::LockoutPolicy;

/// How many sessions each instance remembers for the liveness check (about 250 bytes each).
pub const REMEMBERED_SESSIONS: usize = 100_000;

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
    #[error("CSRF token missing or wrong")]
    CsrfFailed,
    /// Too much password hashing queued: shed load rather than let every login wait.
    #[error("overloaded")]
    Overloaded,
    /// Too many failed logins for this account (see `lockout`); try again after this long.
    #[error("account locked; retry after {0:?}")]
    AccountLocked(Duration),
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

/// The lifetimes and limits the flows enforce.
#[derive(Clone, Debug)]
pub struct Policy {
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
    pub session_ttl: Duration,
    pub reuse_grace: Duration,
    pub max_sessions: u32,
    pub session_check: SessionCheck,
    /// How many password hashes may run at once (each holds 19 MiB and a blocking thread).
    pub hash_concurrency: usize,
    pub lockout: LockoutPolicy,
    /// Audit events older than this are swept (`ZERO`: kept forever).
    pub audit_retention: Duration,
    /// The algorithm new keys are made for.
    pub signing_alg: SigningAlg,
    /// Who may read the revocation feed.
    pub feed_credentials: FeedCredentials,
    /// The master keys that seal private signing keys at rest (none: stored in clear).
    pub master_keys: MasterKeys,
    /// How long a key rotated in by `tessera keys rotate` is published before it signs.
    pub key_publish_ahead: Duration,
}

/// Who is asking, as far as we can tell; recorded on sessions and audit events.
#[derive(Clone, Debug, Default)]
pub struct ClientInfo {
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct UserView {
    pub id: UserId,
    pub email: String,
    pub created_at: Timestamp,
}

impl From<&UserRecord> for UserView {
    fn from(u: &UserRecord) -> Self {
        UserView {
            id: u.id,
            email: u.email.as_str().to_owned(),
            created_at: u.created_at,
        }
    }
}

/// A session as its owner (or an administrator) sees it: never the store's row, so no token
/// hashes and no CSRF token.
#[derive(Clone, Debug, Serialize)]
pub struct SessionView {
    pub id: SessionId,
    pub created_at: Timestamp,
    pub last_used_at: Timestamp,
    /// When it ends if nothing more happens.
    pub expires_at: Timestamp,
    pub user_agent: Option<String>,
    pub ip: Option<String>,
}

impl From<&SessionRecord> for SessionView {
    fn from(s: &SessionRecord) -> Self {
        SessionView {
            id: s.id,
            created_at: s.created_at,
            last_used_at: s.last_used_at,
            expires_at: s.expires_at(),
            user_agent: s.user_agent.clone(),
            ip: s.ip.clone(),
        }
    }
}

/// How a client holds its tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// Mobile/API clients: tokens in response bodies, access token as a bearer header.
    Body,
    /// Browsers: tokens in HttpOnly cookies, a CSRF token bound to the session.
    Cookie,
}

/// What a login or refresh hands out. Its `Debug` shows no token.
pub struct TokenGrant {
    pub access_token: String,
    pub access_expires_in: i64,
    pub refresh_token: RefreshToken,
    pub refresh_expires_in: i64,
    pub session_id: SessionId,
    pub user: UserView,
    /// Present for cookie-transport sessions.
    pub csrf_token: Option<String>,
}

impl std::fmt::Debug for TokenGrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenGrant")
            .field("session_id", &self.session_id)
            .field("access_expires_in", &self.access_expires_in)
            .field("refresh_token", &self.refresh_token)
            .field("refresh_expires_in", &self.refresh_expires_in)
            .field("user", &self.user.id)
            .finish_non_exhaustive()
    }
}

/// A verified access token whose session is live.
#[derive(Clone, Debug)]
pub struct AuthContext {
    pub claims: AccessClaims,
    pub session: Arc<SessionSnapshot>,
}

impl AuthContext {
    pub fn user_id(&self) -> UserId {
        self.session.user_id()
    }

    pub fn session_id(&self) -> SessionId {
        self.session.id
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogoutScope {
    All,
    Others,
}

/// What `logout` found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogoutOutcome {
    /// A session was ended, or there was nothing to end.
    Done,
    /// The refresh token was a rotated-out one the grace rule does not forgive: the session
    /// was revoked as stolen (the answer is still 204).
    ReuseDetected,
}

pub struct AuthService {
    store: Arc<dyn Store>,
    /// Swapped whole when the keys are reloaded (another instance or `tessera rotate-key` may
    /// have changed them); readers clone the `Arc` and never wait on a reload.
    tokens: RwLock<Arc<AccessTokens>>,
    /// When a key reload was last attempted (unknown kids reload at most once a second).
    last_key_reload: AtomicI64,
    /// When the keys were last read successfully: after [`KEY_SET_MAX_AGE`] no token is issued.
    keys_loaded_at: AtomicI64,
    issuer: String,
    audience: String,
    clock: Arc<dyn Clock>,
    policy: Policy,
    rng: SystemRandom,
    passwords: Arc<PasswordHasher>,
    dummy_hash: PasswordHashString,
    /// argon2 takes 19 MiB and tens of milliseconds per hash: bound how many run at once. A
    /// permit is owned by the blocking work itself, so a client hanging up cannot free it
    /// while its hash still runs.
    hashing: Arc<Semaphore>,
    hashing_stats: Arc<HashingStats>,
    alerts: Arc<dyn AlertSink>,
    live: LiveSessions,
    /// The database time the revocation log was last read up to. The lock also keeps two
    /// catch-ups from interleaving.
    revocations_read_at: tokio::sync::Mutex<Timestamp>,
    /// Woken whenever this instance learns of a revocation: revocation-feed readers waiting
    /// for news.
    revocations_learnt: tokio::sync::Notify,
    /// Where the walk that deletes idle sessions resumes (`sessions::sweep_idle_sessions`).
    idle_sweep_cursor: tokio::sync::Mutex<Option<SessionId>>,
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
    ) -> Result<AuthService, AuthError> {
        let mut keys = store.find_signing_keys().await?;
        let ops = KeyOps {
            store: store.as_ref(),
            alerts: alerts.as_ref(),
            master: &policy.master_keys,
            admin: None,
        };
        // The newest key's algorithm: the one signing, or about to (a key in the next stage
        // already has the configured algorithm when `keys rotate` made it).
        let active_alg = keys
            .iter()
            .filter(|k| k.active)
            .max_by_key(|k| k.created_at)
            .map(|k| k.alg.clone());
        match active_alg {
            None => {
                ops.insert_first_key(policy.signing_alg, clock.now()).await?;
                // Read back: a concurrently starting instance may have won.
                keys = store.find_signing_keys().await?;
            }
            // A new algorithm is a rotation: tokens signed with the old key keep verifying
            // until they expire. It takes effect at once, as it always did: a verifier that
            // caches the JWKS refetches it on the unknown kid (`tessera keys rotate --alg`
            // publishes the new key ahead instead). Instances must agree on the algorithm,
            // or each start undoes the last; instances starting together may rotate more
            // than once, harmlessly.
            Some(alg) if alg != policy.signing_alg.as_str() => {
                let now = clock.now();
                let key = ops
                    .rotate(policy.signing_alg, now, now, "algorithm_change")
                    .await?;
                tracing::info!(from = %alg, to = %policy.signing_alg, kid = %key.kid, "signing algorithm changed: key rotated");
                keys = store.find_signing_keys().await?;
            }
            Some(_) => {}
        }
        let now = clock.now();
        let tokens = build_key_set(&keys, issuer, audience, now, &policy)?;
        keys::warn_about_keys_at_rest(&keys, &policy);
        let permits = policy.hash_concurrency.max(1);
        // One working buffer per hash that may run at once, never more.
        let passwords = Arc::new(PasswordHasher::with_pool_limit(permits));
        let hasher = Arc::clone(&passwords);
        let dummy_hash = tokio::task::spawn_blocking(move || hasher.dummy_hash())
            .await
            .map_err(|e| AuthError::Internal(e.to_string()))??;
        // Where the revocation log stands before any session is remembered: the first
        // catch-up reads from here, so nothing revoked after a remembered read is missed.
        let revocations_read_at = store.find_revocations_since(Timestamp(i64::MAX)).await?.asked_at;
        Ok(AuthService {
            store,
            tokens: RwLock::new(Arc::new(tokens)),
            // Not "now": the first unknown kid after start may reload at once.
            last_key_reload: AtomicI64::new(0),
            keys_loaded_at: AtomicI64::new(now.millis()),
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            clock,
            policy,
            rng: SystemRandom::new(),
            passwords,
            dummy_hash,
            hashing: Arc::new(Semaphore::new(permits)),
            hashing_stats: Arc::new(HashingStats::new(permits)),
            alerts,
            live: LiveSessions::new(REMEMBERED_SESSIONS),
            revocations_read_at: tokio::sync::Mutex::new(revocations_read_at),
            revocations_learnt: tokio::sync::Notify::new(),
            idle_sweep_cursor: tokio::sync::Mutex::new(None),
        })
    }

    pub fn jwks(&self) -> Arc<serde_json::Value> {
        self.tokens().jwks()
    }

    fn tokens(&self) -> Arc<AccessTokens> {
        // A poisoned lock only means a reload panicked; the key set it guards is still whole.
        Arc::clone(&self.tokens.read().unwrap_or_else(|p| p.into_inner()))
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
        let access_token = keys
            .issue(user.id, session.id, &user.roles, now, access_expires_at)
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

    /// Audit failures are logged, never turned into request failures: the action happened.
    async fn audit(
        &self,
        event: AuditKind,
        user_id: Option<UserId>,
        session_id: Option<SessionId>,
        client: &ClientInfo,
        detail: Option<String>,
    ) {
        let e = self.audit_event(event, user_id, session_id, client, detail);
        write_audit(self.store.as_ref(), e).await;
    }

    /// [`record_security_event`] for an event of this request.
    async fn security_event(
        &self,
        event: AuditKind,
        user_id: Option<UserId>,
        session_id: Option<SessionId>,
        client: &ClientInfo,
        detail: Option<String>,
    ) {
        let e = self.audit_event(event, user_id, session_id, client, detail);
        record_security_event(self.store.as_ref(), self.alerts.as_ref(), e).await;
    }

    /// A `session_revoked` alert for revocations already audited under their own event
    /// (`logout_others`, `password_changed`, ...): the alert only, no second audit row.
    async fn alert_sessions_revoked(
        &self,
        user_id: UserId,
        session_id: Option<SessionId>,
        client: &ClientInfo,
        detail: String,
    ) {
        let e = self.audit_event(
            AuditKind::SessionRevoked,
            Some(user_id),
            session_id,
            client,
            Some(detail),
        );
        self.alerts.raise(Alert::from_audit(&e)).await;
    }

    fn audit_event(
        &self,
        event: AuditKind,
        user_id: Option<UserId>,
        session_id: Option<SessionId>,
        client: &ClientInfo,
        detail: Option<String>,
    ) -> AuditEvent {
        AuditEvent {
            id: uuid::Uuid::now_v7(),
            event,
            at: self.clock.now(),
            user_id,
            session_id,
            ip: client.ip.clone(),
            user_agent: client.user_agent.clone(),
            detail,
        }
    }
}

/// Audits a security event and raises its alert (the sink decides whether it goes to the
/// webhook); the alert carries the audit event's id.
pub(super) async fn record_security_event(store: &dyn Store, alerts: &dyn AlertSink, e: AuditEvent) {
    let alert = Alert::from_audit(&e);
    write_audit(store, e).await;
    alerts.raise(alert).await;
}

/// The `detail` of a `session_revoked` alert: who revoked, and the session's revocation reason.
fn revoked_by(by: &str, reason: &str, sessions: u64) -> String {
    serde_json::json!({ "by": by, "reason": reason, "sessions": sessions }).to_string()
}

async fn write_audit(store: &dyn Store, e: AuditEvent) {
    if let Err(err) = store.insert_audit_event(&e).await {
        tracing::error!(event = e.event.as_str(), error = %err, "could not write audit event");
    }
}

/// A credential taken from a cookie comes with a CSRF token that must be the session's own.
fn check_csrf(session: &SessionRecord, csrf: Option<&str>) -> Result<(), AuthError> {
    match csrf {
        Some(presented) if !session.csrf_matches(presented) => Err(AuthError::CsrfFailed),
        _ => Ok(()),
    }
}

fn token_internal(e: TokenError) -> AuthError {
    AuthError::Internal(e.to_string())
}
