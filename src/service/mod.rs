//! The auth flows: register, login, refresh (rotation and reuse detection), logout, sessions.
//! No HTTP types here: callers pass plain values and get [`AuthError`]s.

pub mod aligned_clock;
pub mod liveness;
pub mod rotation;

use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use ring::rand::SystemRandom;
use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::alerts::{AlertSink, ReuseAlert};
use crate::config::{Config, SessionCheck};
use crate::crypto::{self, CryptoError, PasswordHashString, PasswordHasher, RefreshToken};
use crate::domain::{Clock, Email, FieldError, Password, SessionId, Timestamp, UserId};
use crate::store::{
    AuditEvent, CurrentRotation, FoundRefreshToken, RevocationListener, Rotation, SessionRecord, Store,
    StoreError, UserRecord,
};
use crate::tokens::{AccessClaims, AccessTokens, SigningAlg, SigningKeyRecord, TokenError};
use liveness::{Known, LiveSessions, SessionSnapshot};
use rotation::RefreshDecision;

/// Revoked and ended sessions are kept this long (so their tokens answer `session_revoked`)
/// before the sweeper deletes them.
pub const ENDED_SESSION_RETENTION: Duration = Duration::from_secs(7 * 86_400);
/// Revocation-log entries are kept this long; an instance whose feed was down for longer
/// forgets every session it remembered rather than trust them.
pub const REVOCATION_LOG_RETENTION: Duration = Duration::from_secs(86_400);
/// How many sessions each instance remembers for the liveness check (about 250 bytes each).
pub const REMEMBERED_SESSIONS: usize = 100_000;
/// Catching up re-reads this much of the log before the previous question: a revocation
/// logged just before it but committed just after is not missed.
const REVOCATION_LOG_OVERLAP: Duration = Duration::from_secs(2);
/// How often the revocation log is polled (the only feed on SQLite; a safety net beside
/// PostgreSQL's notices).
pub const REVOCATION_POLL_EVERY: Duration = Duration::from_millis(500);

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
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("internal error: {0}")]
    Internal(String),
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
    /// The algorithm new keys are made for.
    pub signing_alg: SigningAlg,
}

impl Policy {
    pub fn from_config(c: &Config) -> Policy {
        Policy {
            access_ttl: c.access_ttl,
            refresh_ttl: c.refresh_ttl,
            session_ttl: c.session_ttl,
            reuse_grace: c.reuse_grace,
            max_sessions: c.max_sessions,
            session_check: c.session_check,
            hash_concurrency: c.hash_concurrency,
            signing_alg: c.signing_alg,
        }
    }
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

/// An unknown `kid` triggers at most one key reload per this interval, so forged kids
/// cannot turn into a database query each.
const KEY_RELOAD_MIN_INTERVAL: Duration = Duration::from_secs(1);

/// The longest a login or registration waits for a turn at password hashing before it is
/// answered 503: a flood of hashing requests then costs its senders, not every other user.
const HASH_QUEUE_TIMEOUT: Duration = Duration::from_secs(5);

/// Signing keys are reloaded every minute. An instance that has not managed to read them for
/// this long may be signing with a key another process has retired: it stops issuing tokens
/// (503) until a reload succeeds. Retired keys keep verifying this much longer than a token
/// they signed can live, so tokens issued in the meantime stay valid on every instance.
pub const KEY_SET_MAX_AGE: Duration = Duration::from_secs(180);

/// What `logout` found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogoutOutcome {
    /// A session was ended, or there was nothing to end.
    Done,
    /// The refresh token was a rotated-out one the grace rule does not forgive: the session
    /// was revoked as stolen (the answer is still 204).
    ReuseDetected,
}

/// Password hashing as it happens: for `/metrics` and tests.
#[derive(Debug, Default)]
pub struct HashingStats {
    in_progress: AtomicUsize,
    peak: AtomicUsize,
    finished: AtomicU64,
    permits: usize,
}

impl HashingStats {
    /// Hashes running right now.
    pub fn in_progress(&self) -> usize {
        self.in_progress.load(Ordering::Relaxed)
    }

    /// The most hashes that ever ran at once.
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }

    /// Hashes finished since start.
    pub fn finished(&self) -> u64 {
        self.finished.load(Ordering::Relaxed)
    }

    /// The bound on hashes running at once.
    pub fn permits(&self) -> usize {
        self.permits
    }

    /// Counts a hash as running until the guard is dropped (even by a panic).
    fn running(&self) -> RunningHash<'_> {
        let now = self.in_progress.fetch_add(1, Ordering::Relaxed) + 1;
        self.peak.fetch_max(now, Ordering::Relaxed);
        RunningHash(self)
    }
}

struct RunningHash<'a>(&'a HashingStats);

impl Drop for RunningHash<'_> {
    fn drop(&mut self) {
        self.0.in_progress.fetch_sub(1, Ordering::Relaxed);
        self.0.finished.fetch_add(1, Ordering::Relaxed);
    }
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
        let active_alg = keys
            .iter()
            .filter(|k| k.active)
            .max_by_key(|k| k.created_at)
            .map(|k| k.alg.clone());
        match active_alg {
            None => {
                let key =
                    SigningKeyRecord::generate(policy.signing_alg, clock.now()).map_err(token_internal)?;
                store.insert_signing_key_if_none_active(&key).await?;
                // Read back: a concurrently starting instance may have won.
                keys = store.find_signing_keys().await?;
            }
            // A new algorithm is a rotation: tokens signed with the old key keep verifying
            // until they expire. (Instances must agree on the algorithm, or each start undoes
            // the last; instances starting together may rotate more than once, harmlessly.)
            Some(alg) if alg != policy.signing_alg.as_str() => {
                let kid = rotate_signing_key(store.as_ref(), policy.signing_alg, clock.now()).await?;
                tracing::info!(from = %alg, to = %policy.signing_alg, %kid, "signing algorithm changed: key rotated");
                keys = store.find_signing_keys().await?;
            }
            Some(_) => {}
        }
        let now = clock.now();
        let tokens = build_key_set(&keys, issuer, audience, now, &policy)?;
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
            hashing_stats: Arc::new(HashingStats {
                permits,
                ..HashingStats::default()
            }),
            alerts,
            live: LiveSessions::new(REMEMBERED_SESSIONS),
            revocations_read_at: tokio::sync::Mutex::new(revocations_read_at),
        })
    }

    pub fn jwks(&self) -> Arc<serde_json::Value> {
        self.tokens().jwks()
    }

    fn tokens(&self) -> Arc<AccessTokens> {
        // A poisoned lock only means a reload panicked; the key set it guards is still whole.
        Arc::clone(&self.tokens.read().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn hashing_stats(&self) -> &HashingStats {
        &self.hashing_stats
    }

    /// Live sessions in the database (every instance's), for the metrics gauge: a scan, so
    /// its caller rations it.
    pub async fn count_live_sessions(&self) -> Result<u64, AuthError> {
        Ok(self.store.count_live_sessions(self.clock.now()).await?)
    }

    /// The database connection pool's usage, where the backend has a pool.
    pub fn pool_usage(&self) -> Option<crate::store::PoolUsage> {
        self.store.pool_usage()
    }

    /// Re-reads the signing keys: picks up a rotation and lets retired keys age out. When the
    /// key set is what we already hold, it is kept, and with it the cache of verified tokens
    /// (a forged unknown `kid` triggers a reload, and must not cost every client its cache).
    pub async fn reload_keys(&self) -> Result<(), AuthError> {
        let now = self.clock.now();
        self.last_key_reload.store(now.millis(), Ordering::Relaxed);
        let keys = self.store.find_signing_keys().await?;
        if !self
            .tokens()
            .same_key_set(&keys, now, retired_grace(&self.policy))
        {
            let tokens = build_key_set(&keys, &self.issuer, &self.audience, now, &self.policy)?;
            *self.tokens.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(tokens);
        }
        self.keys_loaded_at.store(now.millis(), Ordering::Relaxed);
        Ok(())
    }

    /// The key set to sign with: refused (503) when the keys could not be read for
    /// [`KEY_SET_MAX_AGE`], after one more attempt, because another process may have retired
    /// the key we hold.
    async fn signing_keys(&self) -> Result<Arc<AccessTokens>, AuthError> {
        let now = self.clock.now().millis();
        let age = now.saturating_sub(self.keys_loaded_at.load(Ordering::Relaxed));
        if age > KEY_SET_MAX_AGE.as_millis() as i64 {
            if let Err(e) = self.reload_keys().await {
                tracing::error!(error = %e, "signing keys could not be reloaded; not issuing tokens");
                return Err(AuthError::Store(StoreError::Unavailable(
                    "signing keys could not be reloaded".into(),
                )));
            }
        }
        Ok(self.tokens())
    }

    /// Verifies an access token; a `kid` we do not know yet makes us reload the keys (rate
    /// limited) and try once more, so a key another instance just rotated in is accepted.
    async fn verify_access_token(&self, jwt: &str, allow_expired: bool) -> Result<AccessClaims, TokenError> {
        let now = self.clock.now();
        match self.tokens().verify(jwt, allow_expired, now) {
            Err(TokenError::UnknownKey) => {
                let last = self.last_key_reload.load(Ordering::Relaxed);
                if now.millis() - last < KEY_RELOAD_MIN_INTERVAL.as_millis() as i64 {
                    return Err(TokenError::UnknownKey);
                }
                if let Err(e) = self.reload_keys().await {
                    tracing::warn!(error = %e, "could not reload signing keys");
                    return Err(TokenError::UnknownKey);
                }
                self.tokens().verify(jwt, allow_expired, now)
            }
            other => other,
        }
    }

    pub async fn health(&self) -> Result<(), AuthError> {
        Ok(self.store.ping().await?)
    }

    pub async fn register(
        &self,
        email: &str,
        password: &str,
        client: &ClientInfo,
    ) -> Result<UserView, AuthError> {
        let email = Email::parse(email);
        let password = Password::parse(password);
        let (email, password) = match (email, password) {
            (Ok(e), Ok(p)) => (e, p),
            (e, p) => {
                let errors = [e.err(), p.err()].into_iter().flatten().collect();
                return Err(AuthError::Validation(errors));
            }
        };
        let permit = self.hashing_permit().await?;
        let hash = self
            .spawn_hash(permit, move |hasher| hasher.hash(&password))
            .await
            .map_err(|e| AuthError::Internal(e.to_string()))??;
        let user = UserRecord {
            id: UserId::new(),
            email,
            password_hash: hash,
            roles: Vec::new(),
            created_at: self.clock.now(),
        };
        match self.store.insert_user(&user).await {
            Ok(()) => {}
            Err(StoreError::Conflict(_)) => return Err(AuthError::EmailTaken),
            Err(e) => return Err(e.into()),
        }
        self.audit("user_registered", Some(user.id), None, client, None)
            .await;
        Ok(UserView::from(&user))
    }

    pub async fn login(
        &self,
        email: &str,
        password: &str,
        transport: Transport,
        client: &ClientInfo,
    ) -> Result<TokenGrant, AuthError> {
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
        let user = match Email::parse(email) {
            Ok(e) => self.store.find_user_by_email(&e).await?,
            Err(_) => None,
        };
        let stored = user
            .as_ref()
            .map_or_else(|| self.dummy_hash.clone(), |u| u.password_hash.clone());
        let password = password.to_owned();
        let permit = self.hashing_permit().await?;
        let hashing = self.spawn_hash(permit, move |hasher| hasher.verify(&password, &stored));
        // Once the hash has started, it and the audit record of a failure run to the end on a
        // task of their own, even if this request is dropped because the client hung up: the
        // attempt was made and must be on record. (A client that leaves while still queued for
        // a permit made no attempt: nothing was checked.)
        let failure = self.audit_event("login_failed", user.as_ref().map(|u| u.id), None, client, None);
        let (store, clock, known) = (Arc::clone(&self.store), Arc::clone(&self.clock), user.is_some());
        let matches = tokio::spawn(async move {
            let matches = hashing.await.map_err(|e| AuthError::Internal(e.to_string()))?;
            if !(matches && known) {
                write_audit(
                    store.as_ref(),
                    AuditEvent {
                        at: clock.now(),
                        ..failure
                    },
                )
                .await;
            }
            Ok::<bool, AuthError>(matches)
        })
        .await
        .map_err(|e| AuthError::Internal(e.to_string()))??;
        let user = match user {
            Some(u) if matches => u,
            _ => return Err(AuthError::InvalidCredentials),
        };

        // Checked before anything is written: no session is created that gets no tokens.
        let keys = self.signing_keys().await?;
        let now = self.clock.now();
        let absolute = now.plus(self.policy.session_ttl);
        let session = SessionRecord {
            id: SessionId::new(),
            user_id: user.id,
            created_at: now,
            last_used_at: now,
            absolute_expires_at: absolute,
            refresh_expires_at: now.plus(self.policy.refresh_ttl).min(absolute),
            revoked_at: None,
            revoked_reason: None,
            user_agent: client.user_agent.clone(),
            ip: client.ip.clone(),
            generation: 0,
            rotated_at: None,
            sealed_current: None,
            csrf_token: match transport {
                Transport::Body => None,
                Transport::Cookie => Some(crypto::random_token(&self.rng, 32)?),
            },
        };
        let refresh = RefreshToken::generate(&self.rng)?;
        self.store.insert_session(&session, &refresh.hash()).await?;
        let evicted = self
            .store
            .revoke_sessions_over_limit(user.id, self.policy.max_sessions, now)
            .await?;
        if evicted > 0 {
            self.learn_own_revocations().await;
            let detail = format!("{evicted} least recently used session(s) revoked: session limit");
            self.audit("session_evicted", Some(user.id), None, client, Some(detail))
                .await;
        }
        self.audit("login_succeeded", Some(user.id), Some(session.id), client, None)
            .await;
        self.grant(&keys, &user, &session, refresh, now)
    }

    /// Rotates a refresh token. `csrf` is the CSRF token that came with a refresh token taken
    /// from a cookie; it must match the one bound to the session.
    pub async fn refresh(
        &self,
        presented: &str,
        csrf: Option<&str>,
        client: &ClientInfo,
    ) -> Result<TokenGrant, AuthError> {
        let presented = RefreshToken::parse(presented).ok_or(AuthError::InvalidRefreshToken)?;
        let hash = presented.hash();

        // The common case, in one store call: the presented token is current, its session
        // live. Only when that does not hold do we read and decide. The keys are checked
        // first, once for every path below: a rotation whose tokens cannot be signed must not
        // happen.
        let keys = self.signing_keys().await?;
        let now = self.clock.now();
        let next = RefreshToken::generate(&self.rng)?;
        let rotation = CurrentRotation {
            presented: hash,
            new_hash: next.hash(),
            sealed_new: presented.seal_successor(&next, &self.rng)?,
            now,
            refresh_expires_at: now.plus(self.policy.refresh_ttl),
            csrf: csrf.map(str::to_owned),
        };
        if let Some((session, user)) = self.store.rotate_current(&rotation).await? {
            return self.grant(&keys, &user, &session, next, now);
        }

        let FoundRefreshToken {
            generation,
            mut session,
            user,
        } = self
            .store
            .find_refresh_token(&hash)
            .await?
            .ok_or(AuthError::InvalidRefreshToken)?;
        check_csrf(&session, csrf)?;

        // Losing a rotation race, or a replay decided on the first read, sends us round again
        // with the session re-read; three rounds suffice. The bound is a guard.
        let mut reread = false;
        for _ in 0..4 {
            let now = self.clock.now();
            match rotation::decide(&session, generation, now, self.policy.reuse_grace) {
                RefreshDecision::Revoked => return Err(AuthError::SessionRevoked),
                RefreshDecision::Expired => return Err(AuthError::RefreshTokenExpired),
                RefreshDecision::Reuse => return Err(self.on_reuse(&session, now, client).await),
                RefreshDecision::ReplayCurrent if !reread => {
                    // A replay writes nothing, so confirm it on a fresh read: the chain may
                    // have moved on, or the session been revoked, since the token lookup.
                    session = self.reread(session.id).await?;
                    reread = true;
                }
                RefreshDecision::ReplayCurrent => {
                    let sealed = session.sealed_current.as_deref().unwrap_or_default();
                    let current = presented
                        .open_successor(sealed)
                        .ok_or_else(|| AuthError::Internal("sealed successor does not open".into()))?;
                    return self.grant(&keys, &user, &session, current, now);
                }
                RefreshDecision::Rotate => {
                    let next = RefreshToken::generate(&self.rng)?;
                    let refresh_expires_at =
                        now.plus(self.policy.refresh_ttl).min(session.absolute_expires_at);
                    let rotation = Rotation {
                        session_id: session.id,
                        expected_generation: generation,
                        new_hash: next.hash(),
                        sealed_new: presented.seal_successor(&next, &self.rng)?,
                        now,
                        refresh_expires_at,
                    };
                    if self.store.rotate(&rotation).await? {
                        session.generation = generation + 1;
                        session.last_used_at = now;
                        session.rotated_at = Some(now);
                        session.refresh_expires_at = refresh_expires_at;
                        return self.grant(&keys, &user, &session, next, now);
                    }
                    // Someone else rotated (or revoked) first: decide again on fresh state.
                    session = self.reread(session.id).await?;
                    reread = true;
                }
            }
        }
        Err(AuthError::Internal("refresh did not settle".into()))
    }

    /// The session as it is now (gone if the sweeper just deleted it).
    async fn reread(&self, id: SessionId) -> Result<SessionRecord, AuthError> {
        self.store
            .find_session(id)
            .await?
            .ok_or(AuthError::InvalidRefreshToken)
    }

    /// Theft suspected: revoke the whole session, then record and report it (once, even when
    /// several stolen copies arrive together).
    async fn on_reuse(&self, session: &SessionRecord, now: Timestamp, client: &ClientInfo) -> AuthError {
        let revoked_now = match self
            .store
            .revoke_session(session.id, now, "refresh_token_reused")
            .await
        {
            Ok(revoked_now) => revoked_now,
            Err(e) => return e.into(),
        };
        self.live.revoked(session.id);
        if revoked_now {
            tracing::warn!(session = %session.id, user = %session.user_id, ip = ?client.ip,
                "refresh token reuse detected; session revoked");
            self.audit(
                "refresh_token_reused",
                Some(session.user_id),
                Some(session.id),
                client,
                None,
            )
            .await;
            self.alerts.refresh_token_reused(ReuseAlert {
                id: uuid::Uuid::now_v7(),
                event: "refresh_token_reused",
                at: now,
                user_id: session.user_id,
                session_id: session.id,
                ip: client.ip.clone(),
                user_agent: client.user_agent.clone(),
            });
        }
        AuthError::RefreshTokenReused
    }

    /// Revokes the session a refresh token belongs to. Unknown tokens are fine: logout is idempotent.
    pub async fn logout_with_refresh_token(
        &self,
        presented: &str,
        csrf: Option<&str>,
        client: &ClientInfo,
    ) -> Result<LogoutOutcome, AuthError> {
        let Some(token) = RefreshToken::parse(presented) else {
            return Ok(LogoutOutcome::Done);
        };
        let Some(found) = self.store.find_refresh_token(&token.hash()).await? else {
            return Ok(LogoutOutcome::Done);
        };
        check_csrf(&found.session, csrf)?;
        let now = self.clock.now();
        // A rotated-out token that the grace rule does not forgive is a stolen copy, whatever
        // endpoint it is presented at: record and report it as reuse, not as a plain logout.
        // The answer stays 204 (logout is idempotent and reveals nothing).
        match rotation::decide(&found.session, found.generation, now, self.policy.reuse_grace) {
            RefreshDecision::Revoked => Ok(LogoutOutcome::Done),
            RefreshDecision::Reuse => match self.on_reuse(&found.session, now, client).await {
                AuthError::RefreshTokenReused => Ok(LogoutOutcome::ReuseDetected),
                other => Err(other),
            },
            RefreshDecision::Rotate | RefreshDecision::ReplayCurrent | RefreshDecision::Expired => {
                self.end_session(&found.session, "logout", client).await?;
                Ok(LogoutOutcome::Done)
            }
        }
    }

    /// Revokes the session of an access token; an invalid token is a no-op, and an expired but
    /// authentic one still ends its session (the user asked to log out).
    pub async fn logout_with_access_token(
        &self,
        jwt: &str,
        csrf: Option<&str>,
        client: &ClientInfo,
    ) -> Result<(), AuthError> {
        let Ok(claims) = self.verify_access_token(jwt, true).await else {
            return Ok(());
        };
        if let Some(session) = self.store.find_session(claims.session_id()).await? {
            if session.user_id == claims.user_id() {
                check_csrf(&session, csrf)?;
                self.end_session(&session, "logout", client).await?;
            }
        }
        Ok(())
    }

    async fn end_session(
        &self,
        session: &SessionRecord,
        reason: &str,
        client: &ClientInfo,
    ) -> Result<(), AuthError> {
        let now = self.clock.now();
        let revoked = self.store.revoke_session(session.id, now, reason).await?;
        self.live.revoked(session.id);
        if revoked {
            self.audit(
                "session_revoked",
                Some(session.user_id),
                Some(session.id),
                client,
                Some(reason.into()),
            )
            .await;
        }
        Ok(())
    }

    /// Verifies an access token and checks its session is still live: the gate of every
    /// authenticated endpoint of this server. Liveness comes from memory when it can be
    /// trusted (see [`liveness`]), else from the database.
    pub async fn authenticate(&self, jwt: &str) -> Result<AuthContext, AuthError> {
        let claims = self.verify_access_token(jwt, false).await.map_err(|e| match e {
            TokenError::Expired => AuthError::TokenExpired,
            _ => AuthError::InvalidToken,
        })?;
        let now = self.clock.now();
        let id = claims.session_id();
        if self.policy.session_check == SessionCheck::Cached && self.live.in_sync() {
            match self.live.get(id) {
                Some(Known::Revoked) => return Err(AuthError::SessionRevoked),
                Some(Known::Live(session)) if now < session.expires_at() => {
                    return check_session(claims, session, now);
                }
                // Unknown, or apparently ended: a rotation elsewhere may have extended it.
                _ => {}
            }
        }
        let (session, user) = self
            .store
            .find_session_with_user(id)
            .await?
            .ok_or(AuthError::InvalidToken)?;
        let session = Arc::new(SessionSnapshot::new(&session, &user));
        self.live.remember(Arc::clone(&session));
        check_session(claims, session, now)
    }

    /// Follows revocations made elsewhere for as long as the process runs: subscribes where
    /// the database pushes them, catches up from the revocation log, then applies notices
    /// and polls the log. Memory is trusted only while this is in step.
    pub async fn follow_revocations(&self) {
        let mut backoff = Duration::from_millis(100);
        loop {
            let listener = match self.subscribe_and_catch_up().await {
                Ok(listener) => listener,
                Err(e) => {
                    self.live.set_in_sync(false);
                    tracing::warn!(error = %e, "cannot follow session revocations");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            backoff = Duration::from_millis(100);
            self.live.set_in_sync(true);
            let lost = self.apply_revocations(listener).await;
            self.live.set_in_sync(false);
            tracing::warn!(error = %lost, "session revocation feed lost");
        }
    }

    /// Subscribed first, then caught up: nothing falls between the two.
    async fn subscribe_and_catch_up(&self) -> Result<Option<Box<dyn RevocationListener>>, AuthError> {
        let listener = self.store.listen_revocations().await?;
        self.catch_up_revocations().await?;
        Ok(listener)
    }

    /// Applies notices as they come and polls the log, until either fails.
    async fn apply_revocations(&self, mut listener: Option<Box<dyn RevocationListener>>) -> AuthError {
        let mut poll = tokio::time::interval(REVOCATION_POLL_EVERY);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let notice = async {
                match listener.as_mut() {
                    Some(listener) => listener.next().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                notice = notice => match notice {
                    Ok(id) => self.live.revoked(id),
                    Err(e) => return e.into(),
                },
                _ = poll.tick() => {
                    if let Err(e) = self.catch_up_revocations().await {
                        return e;
                    }
                }
            }
        }
    }

    /// Applies every revocation logged since the last read (with some overlap).
    async fn catch_up_revocations(&self) -> Result<(), AuthError> {
        let mut read_at = self.revocations_read_at.lock().await;
        let since = *read_at;
        let found = self
            .store
            .find_revocations_since(since.minus(REVOCATION_LOG_OVERLAP))
            .await?;
        if found.asked_at.minus(REVOCATION_LOG_RETENTION) > since {
            // The log no longer reaches back to our last read: trust nothing remembered.
            self.live.clear();
        }
        for id in found.sessions {
            self.live.revoked(id);
        }
        *read_at = found.asked_at;
        Ok(())
    }

    /// After revoking sessions by a rule (all of a user's, those over the limit), learn which
    /// from the log, so this instance refuses them before the request is answered.
    async fn learn_own_revocations(&self) {
        if let Err(e) = self.catch_up_revocations().await {
            self.live.set_in_sync(false);
            tracing::warn!(error = %e, "cannot read the revocation log");
        }
    }

    pub async fn logout_all(
        &self,
        ctx: &AuthContext,
        scope: LogoutScope,
        client: &ClientInfo,
    ) -> Result<u64, AuthError> {
        let keep = match scope {
            LogoutScope::All => None,
            LogoutScope::Others => Some(ctx.session_id()),
        };
        let reason = match scope {
            LogoutScope::All => "logout_all",
            LogoutScope::Others => "logout_others",
        };
        let n = self
            .store
            .revoke_user_sessions(ctx.user_id(), keep, self.clock.now(), reason)
            .await?;
        self.learn_own_revocations().await;
        self.audit(
            reason,
            Some(ctx.user_id()),
            Some(ctx.session_id()),
            client,
            Some(format!("{n} session(s) revoked")),
        )
        .await;
        Ok(n)
    }

    /// The caller's live sessions, most recently used first.
    pub async fn list_sessions(&self, ctx: &AuthContext) -> Result<Vec<SessionRecord>, AuthError> {
        Ok(self
            .store
            .find_live_sessions(ctx.user_id(), self.clock.now())
            .await?)
    }

    /// Revokes one of the caller's own sessions; anyone else's (or no such id) is "not found".
    pub async fn revoke_session(
        &self,
        ctx: &AuthContext,
        id: &str,
        client: &ClientInfo,
    ) -> Result<(), AuthError> {
        let id = SessionId::parse(id).ok_or(AuthError::SessionNotFound)?;
        let session = self
            .store
            .find_session(id)
            .await?
            .filter(|s| s.user_id == ctx.user_id())
            .ok_or(AuthError::SessionNotFound)?;
        self.end_session(&session, "revoked_by_user", client).await
    }

    /// Deletes sessions that ended more than [`ENDED_SESSION_RETENTION`] ago, and
    /// revocation-log entries older than [`REVOCATION_LOG_RETENTION`].
    pub async fn sweep(&self) -> Result<u64, AuthError> {
        let now = self.clock.now();
        self.store
            .delete_revocations_logged_before(now.minus(REVOCATION_LOG_RETENTION))
            .await?;
        Ok(self
            .store
            .delete_sessions_ended_before(now.minus(ENDED_SESSION_RETENTION))
            .await?)
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

    /// A turn at password hashing, waited for at most [`HASH_QUEUE_TIMEOUT`].
    async fn hashing_permit(&self) -> Result<OwnedSemaphorePermit, AuthError> {
        tokio::time::timeout(HASH_QUEUE_TIMEOUT, Arc::clone(&self.hashing).acquire_owned())
            .await
            .map_err(|_| AuthError::Overloaded)?
            .map_err(|e| AuthError::Internal(e.to_string()))
    }

    /// Runs password hashing on the blocking pool. The permit moves into the blocking closure
    /// and is released only when the hash is done, so the number of hashes running (threads
    /// busy, buffers in use) never exceeds the permits whatever the clients do.
    fn spawn_hash<T: Send + 'static>(
        &self,
        permit: OwnedSemaphorePermit,
        work: impl FnOnce(&PasswordHasher) -> T + Send + 'static,
    ) -> tokio::task::JoinHandle<T> {
        let hasher = Arc::clone(&self.passwords);
        let stats = Arc::clone(&self.hashing_stats);
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let _running = stats.running();
            work(&hasher)
        })
    }

    /// Audit failures are logged, never turned into request failures: the action happened.
    async fn audit(
        &self,
        event: &'static str,
        user_id: Option<UserId>,
        session_id: Option<SessionId>,
        client: &ClientInfo,
        detail: Option<String>,
    ) {
        let e = self.audit_event(event, user_id, session_id, client, detail);
        write_audit(self.store.as_ref(), e).await;
    }

    fn audit_event(
        &self,
        event: &'static str,
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

async fn write_audit(store: &dyn Store, e: AuditEvent) {
    if let Err(err) = store.insert_audit_event(&e).await {
        tracing::error!(event = e.event, error = %err, "could not write audit event");
    }
}

/// Retires the active signing key and makes a new one active (the `rotate-key` command).
/// Running instances pick the new key up on their next reload or on first sight of its `kid`.
pub async fn rotate_signing_key(
    store: &dyn Store,
    alg: SigningAlg,
    now: Timestamp,
) -> Result<String, AuthError> {
    let key = SigningKeyRecord::generate(alg, now).map_err(token_internal)?;
    store.rotate_signing_key(&key, now).await?;
    Ok(key.kid)
}

/// The key set: retired keys keep verifying for as long as a token they signed can live
/// (plus a minute for instances whose clocks or reloads lag).
fn build_key_set(
    keys: &[SigningKeyRecord],
    issuer: &str,
    audience: &str,
    now: Timestamp,
    policy: &Policy,
) -> Result<AccessTokens, AuthError> {
    AccessTokens::new(keys, issuer, audience, now, retired_grace(policy)).map_err(token_internal)
}

/// How long a retired key keeps verifying: the longest a token it signed can live, plus the
/// longest an instance may go on signing with it unawares ([`KEY_SET_MAX_AGE`]), plus a minute.
pub fn retired_grace(policy: &Policy) -> Duration {
    policy.access_ttl + KEY_SET_MAX_AGE + Duration::from_secs(60)
}

/// The checks a live-looking session must pass for this access token.
fn check_session(
    claims: AccessClaims,
    session: Arc<SessionSnapshot>,
    now: Timestamp,
) -> Result<AuthContext, AuthError> {
    if session.user_id() != claims.user_id() {
        return Err(AuthError::InvalidToken);
    }
    if session.revoked {
        return Err(AuthError::SessionRevoked);
    }
    if now >= session.expires_at() {
        return Err(AuthError::TokenExpired);
    }
    Ok(AuthContext { claims, session })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::NoAlerts;
    use crate::domain::SystemClock;

    async fn service(dir: &tempfile::TempDir) -> AuthService {
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = crate::store::connect(&url, 2).await.unwrap();
        let policy = Policy::from_config(&Config::default());
        AuthService::start(
            store,
            Arc::new(SystemClock),
            Arc::new(NoAlerts),
            policy,
            "iss",
            "aud",
        )
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn a_forged_unknown_kid_does_not_throw_away_the_verified_token_cache() {
        let dir = tempfile::tempdir().unwrap();
        let service = service(&dir).await;
        let before = service.tokens();
        // A token with a kid nobody has: it makes the service reload its keys.
        let header = base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            br#"{"alg":"EdDSA","typ":"at+jwt","kid":"forged"}"#,
        );
        let forged = format!("{header}.e30.c2ln");
        assert!(matches!(
            service.verify_access_token(&forged, false).await,
            Err(TokenError::UnknownKey)
        ));
        assert!(
            service.last_key_reload.load(Ordering::Relaxed) > 0,
            "a reload happened"
        );
        assert!(
            Arc::ptr_eq(&before, &service.tokens()),
            "the same key set, and with it its cache, is kept"
        );
        // A real change of keys is still picked up.
        rotate_signing_key(service.store.as_ref(), SigningAlg::EdDSA, service.clock.now())
            .await
            .unwrap();
        service.reload_keys().await.unwrap();
        assert!(!Arc::ptr_eq(&before, &service.tokens()));
    }
}
