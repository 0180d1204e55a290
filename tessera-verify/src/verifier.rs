//! [`Verifier`]: Tessera's JWKS, fetched and cached, and tokens checked against it.
//!
//! The key set is refreshed in two ways: routinely, once the `Cache-Control: max-age` of the
//! last answer has passed, and at once when a token names a `kid` the set does not hold (a
//! key Tessera has just rotated in). Either way at most one fetch runs at a time, callers that
//! were waiting for it use its result, and fetches are at least `refetch_interval` apart, so
//! a stream of tokens with made-up `kid`s costs Tessera one request per interval.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Deserialize;

use crate::revocations::{self, FeedConfig, RevokedSessions};
use crate::token::{self, Claims, Expected, TokenError};
use tessera_jws::{parse_jwks, PublicKey as Key};

/// Default minimum time between two fetches of the JWKS.
pub const DEFAULT_REFETCH_INTERVAL: Duration = Duration::from_secs(30);
/// How long a key set stays fresh when Tessera's answer has no `max-age`.
const DEFAULT_MAX_AGE: Duration = Duration::from_secs(300);
/// However long an answer says it may be cached, keys are re-read at least daily.
const MAX_MAX_AGE: Duration = Duration::from_secs(24 * 3600);
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// A key set is a few kilobytes; anything far larger is not Tessera's.
const MAX_DOCUMENT_BYTES: usize = 1 << 20;

/// Why a token was not accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Error {
    /// Malformed, forged, for another issuer or audience, or signed by a key Tessera does not
    /// publish: `401 invalid_token`.
    Invalid,
    /// Authentic but expired: `401 token_expired` (a refresh will help).
    Expired,
    /// The token names a key we do not hold and the JWKS could not be fetched: `503`. Not
    /// the client's fault, and it may pass.
    KeysUnavailable(String),
    /// Authentic, but its session was revoked at Tessera (known through the revocation
    /// feed, when followed): `401 session_revoked`.
    Revoked,
    /// The revocation feed has been out of step for longer than
    /// [`Builder::revocation_feed_max_lag`] allows: `503`, whatever the token.
    RevocationsUnavailable(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Invalid => f.write_str("invalid access token"),
            Error::Expired => f.write_str("access token expired"),
            Error::KeysUnavailable(why) => write!(f, "signing keys unavailable: {why}"),
            Error::Revoked => f.write_str("session revoked"),
            Error::RevocationsUnavailable(why) => write!(f, "revocation feed out of step: {why}"),
        }
    }
}

impl std::error::Error for Error {}

/// Where the key set comes from.
#[derive(Clone, Debug)]
enum Source {
    Jwks(String),
    /// RFC 8414 metadata at the issuer, whose `jwks_uri` is then used.
    Discovery,
}

/// Configures a [`Verifier`]; see [`Verifier::builder`].
pub struct Builder {
    issuer: String,
    audience: String,
    source: Source,
    refetch_interval: Duration,
    leeway_secs: u64,
    client: Option<reqwest::Client>,
    feed_credential: Option<String>,
    feed_url: Option<String>,
    revocation_memory: Duration,
    feed_max_lag: Option<Duration>,
}

/// How long a revoked session is remembered by default: well over Tessera's default
/// access-token lifetime (15 minutes).
pub const DEFAULT_REVOCATION_MEMORY: Duration = Duration::from_secs(3600);

/// How long the revocation feed may be out of step (unreadable, or not caught up since the
/// start) before a verifier that follows it refuses every token: the bound on how late a
/// revocation can be noticed. [`Builder::revocation_feed_fail_open`] turns the refusal off.
pub const DEFAULT_REVOCATION_FEED_MAX_LAG: Duration = Duration::from_secs(10);

impl Builder {
    /// Follow Tessera's revocation feed with this resource-server credential (one of
    /// Tessera's `TESSERA_REVOCATION_FEED_CREDENTIALS`): tokens of a revoked session are then
    /// refused within about a second ([`Error::Revoked`]) rather than verifying until they
    /// expire. The feed is read at `{issuer}/v1/revocations` unless
    /// [`Builder::revocation_feed_url`] says otherwise.
    pub fn revocation_feed(mut self, credential: impl Into<String>) -> Builder {
        self.feed_credential = Some(credential.into());
        self
    }

    /// Where the revocation feed is, when not under the issuer URL.
    pub fn revocation_feed_url(mut self, url: impl Into<String>) -> Builder {
        self.feed_url = Some(url.into());
        self
    }

    /// How long the feed may be out of step before every token is refused with
    /// [`Error::RevocationsUnavailable`] (`503 revocations_unavailable`), rather than accept
    /// tokens of sessions that may have been revoked meanwhile: unreadable, or not yet caught
    /// up after start (verifications before the first catch-up wait for it, at most this long
    /// from the start). [`DEFAULT_REVOCATION_FEED_MAX_LAG`] (10 s) unless set.
    pub fn revocation_feed_max_lag(mut self, lag: Duration) -> Builder {
        self.feed_max_lag = Some(lag);
        self
    }

    /// Fail open: while the feed is out of step, go on judging tokens by the revocations
    /// already known (none before the first catch-up), however long that lasts.
    /// [`Verifier::revocations_in_sync`] still tells a readiness check.
    pub fn revocation_feed_fail_open(mut self) -> Builder {
        self.feed_max_lag = None;
        self
    }

    /// How long a revoked session is remembered: must be at least Tessera's access-token
    /// lifetime (`TESSERA_ACCESS_TTL`); one hour by default.
    pub fn revocation_memory(mut self, memory: Duration) -> Builder {
        self.revocation_memory = memory;
        self
    }

    /// Fetch the keys from this URL (Tessera's `/.well-known/jwks.json`) instead of finding it
    /// through the issuer's metadata.
    pub fn jwks_url(mut self, url: impl Into<String>) -> Builder {
        self.source = Source::Jwks(url.into());
        self
    }

    /// The least time between two fetches of the key set (default 30 s).
    pub fn refetch_interval(mut self, interval: Duration) -> Builder {
        self.refetch_interval = interval;
        self
    }

    /// Clock skew forgiven on `exp`; at most 30 s (Tessera's own ceiling), default none.
    pub fn leeway(mut self, leeway: Duration) -> Builder {
        self.leeway_secs = leeway.as_secs().min(token::MAX_LEEWAY_SECS);
        self
    }

    /// The HTTP client to fetch with (proxies, custom roots); a fresh one with a 5 s timeout
    /// otherwise.
    pub fn http_client(mut self, client: reqwest::Client) -> Builder {
        self.client = Some(client);
        self
    }

    pub fn build(self) -> Result<Verifier, reqwest::Error> {
        let client = match self.client {
            Some(client) => client,
            None => reqwest::Client::builder().timeout(FETCH_TIMEOUT).build()?,
        };
        let jwks_url = match &self.source {
            Source::Jwks(url) => Some(url.clone()),
            Source::Discovery => None,
        };
        let feed = self.feed_credential.map(|credential| FeedConfig {
            url: self
                .feed_url
                .unwrap_or_else(|| format!("{}/v1/revocations", self.issuer.trim_end_matches('/'))),
            credential,
            memory: self.revocation_memory,
            max_lag: self.feed_max_lag,
        });
        Ok(Verifier {
            inner: Arc::new(Inner {
                issuer: self.issuer,
                audience: self.audience,
                source: self.source,
                refetch_interval: self.refetch_interval,
                leeway_secs: self.leeway_secs,
                client,
                keys: RwLock::new(None),
                feed,
                revoked: Arc::new(RevokedSessions::default()),
                generation: AtomicU64::new(0),
                fetch: tokio::sync::Mutex::new(FetchState {
                    jwks_url,
                    last_attempt: None,
                    last_error: None,
                }),
            }),
        })
    }
}

/// Verifies Tessera access tokens. Cheap to clone: clones share the cached key set.
#[derive(Clone)]
pub struct Verifier {
    inner: Arc<Inner>,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("issuer", &self.inner.issuer)
            .field("audience", &self.inner.audience)
            .field("source", &self.inner.source)
            .finish_non_exhaustive()
    }
}

struct KeySet {
    keys: HashMap<String, Key>,
    fresh_until: Instant,
}

struct FetchState {
    /// Known from the start, or once discovery has found it.
    jwks_url: Option<String>,
    last_attempt: Option<Instant>,
    /// Why the last attempt failed, if it did.
    last_error: Option<String>,
}

pub(crate) struct Inner {
    issuer: String,
    audience: String,
    source: Source,
    refetch_interval: Duration,
    leeway_secs: u64,
    pub(crate) client: reqwest::Client,
    keys: RwLock<Option<Arc<KeySet>>>,
    /// The revocation feed, when followed.
    feed: Option<FeedConfig>,
    pub(crate) revoked: Arc<RevokedSessions>,
    /// Counts finished fetch attempts, so a caller that waited for the fetch lock can tell
    /// that someone else fetched meanwhile.
    generation: AtomicU64,
    fetch: tokio::sync::Mutex<FetchState>,
}

#[derive(Deserialize)]
struct Metadata {
    issuer: String,
    jwks_uri: String,
}

/// The freshness lifetime `Cache-Control` gives, if any: `no-cache`/`no-store` mean none.
pub(crate) fn max_age(cache_control: &str) -> Option<Duration> {
    let mut found = None;
    for directive in cache_control.split(',').map(str::trim) {
        let (name, value) = directive.split_once('=').unwrap_or((directive, ""));
        match name.trim().to_ascii_lowercase().as_str() {
            "no-cache" | "no-store" => return Some(Duration::ZERO),
            "max-age" => {
                found = value
                    .trim()
                    .trim_matches('"')
                    .parse::<u64>()
                    .ok()
                    .map(Duration::from_secs)
            }
            _ => {}
        }
    }
    found
}

fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Verifier {
    /// Tokens issued by `issuer` (Tessera's `TESSERA_ISSUER`) for `audience`
    /// (`TESSERA_AUDIENCE`). Without [`Builder::jwks_url`] the key set is found through the
    /// issuer's `/.well-known/oauth-authorization-server` metadata.
    pub fn builder(issuer: impl Into<String>, audience: impl Into<String>) -> Builder {
        Builder {
            issuer: issuer.into(),
            audience: audience.into(),
            source: Source::Discovery,
            refetch_interval: DEFAULT_REFETCH_INTERVAL,
            leeway_secs: 0,
            client: None,
            feed_credential: None,
            feed_url: None,
            revocation_memory: DEFAULT_REVOCATION_MEMORY,
            feed_max_lag: Some(DEFAULT_REVOCATION_FEED_MAX_LAG),
        }
    }

    /// Fetches the key set now, so the first request does not wait for it (and a wrong
    /// configuration shows at start). Verification fetches on its own when needed.
    pub async fn prefetch(&self) -> Result<(), Error> {
        self.follow_revocations();
        let seen = self.inner.generation.load(Ordering::Acquire);
        self.inner.refresh(seen, true).await.map(drop)
    }

    /// Whether the revocation feed is followed and current: its last read succeeded and, for
    /// a verifier that fails closed, what it knows is no older than the bound. `false` means
    /// tokens are refused (failing closed) or judged by revocations that may be out of date
    /// (failing open): a readiness check may want to say so.
    pub fn revocations_in_sync(&self) -> bool {
        let revoked = &self.inner.revoked;
        let current = match self.inner.feed.as_ref().and_then(|feed| feed.max_lag) {
            Some(max) => revoked.caught_up_once() && revoked.staleness() <= max,
            None => true,
        };
        revoked.in_sync() && current
    }

    /// Why the revocation feed could not be read last time, while it cannot.
    pub fn revocation_feed_error(&self) -> Option<String> {
        self.inner.revoked.last_error()
    }

    /// Starts following the revocation feed, if configured, the first time it is called;
    /// the task ends when the last clone of this `Verifier` is dropped.
    fn follow_revocations(&self) {
        if let Some(feed) = &self.inner.feed {
            if self.inner.revoked.start_once() {
                tokio::spawn(revocations::follow(
                    Arc::downgrade(&self.inner.revoked),
                    self.inner.client.clone(),
                    feed.clone(),
                ));
            }
        }
    }

    /// Verifies `token` as Tessera would and returns its claims.
    pub async fn verify(&self, token: &str) -> Result<Claims, Error> {
        self.follow_revocations();
        let claims = self.verify_signed(token).await?;
        if let Some(feed) = &self.inner.feed {
            if let Some(max) = feed.max_lag {
                self.revocations_current_within(max).await?;
            }
            if self.inner.revoked.contains(&claims.session_id) {
                return Err(Error::Revoked);
            }
        }
        Ok(claims)
    }

    /// Fails closed: `Err` unless the feed has caught up since the start and is out of step
    /// for no longer than `max`. Before the first catch-up this waits for it, until `max`
    /// from the follower's start at most.
    async fn revocations_current_within(&self, max: Duration) -> Result<(), Error> {
        let revoked = &self.inner.revoked;
        if !revoked.caught_up_once() {
            revoked
                .wait_caught_up(max.saturating_sub(revoked.staleness()))
                .await;
        }
        if revoked.caught_up_once() && revoked.staleness() <= max {
            return Ok(());
        }
        let why = revoked.last_error().unwrap_or_else(|| {
            match revoked.caught_up_once() {
                true => "no answer from the feed",
                false => "not caught up yet",
            }
            .into()
        });
        Err(Error::RevocationsUnavailable(why))
    }

    async fn verify_signed(&self, token: &str) -> Result<Claims, Error> {
        let inner = &self.inner;
        let seen = inner.generation.load(Ordering::Acquire);
        let keys = match inner.current() {
            Some(keys) if Instant::now() < keys.fresh_until => keys,
            // Stale: refreshed, but an unreachable Tessera leaves us with the keys we have
            // (they are still Tessera's; the unknown-kid path below reports outages).
            Some(stale) => inner.refresh(seen, false).await.unwrap_or(stale),
            None => match inner.refresh(seen, false).await {
                Ok(keys) => keys,
                // No keys at all: a token that is not even well-formed is still the client's
                // fault (401); only one that names a key is kept waiting on the outage (503).
                Err(unavailable) => {
                    let none = KeySet {
                        keys: HashMap::new(),
                        fresh_until: Instant::now(),
                    };
                    return match inner.check(token, &none) {
                        Err(TokenError::UnknownKey) => Err(unavailable),
                        _ => Err(Error::Invalid),
                    };
                }
            },
        };
        match inner.check(token, &keys) {
            Err(TokenError::UnknownKey) => {
                let fresh = inner.refresh(seen, false).await?;
                match inner.check(token, &fresh) {
                    Err(TokenError::UnknownKey) => Err(Error::Invalid),
                    other => other.map_err(Inner::public_error),
                }
            }
            other => other.map_err(Inner::public_error),
        }
    }
}

impl Inner {
    fn current(&self) -> Option<Arc<KeySet>> {
        self.keys.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn check(&self, token: &str, keys: &KeySet) -> Result<Claims, TokenError> {
        let expected = Expected {
            issuer: &self.issuer,
            audience: &self.audience,
            leeway_secs: self.leeway_secs,
        };
        token::verify(token, &keys.keys, &expected, now_millis())
    }

    fn public_error(e: TokenError) -> Error {
        match e {
            TokenError::Expired => Error::Expired,
            TokenError::Invalid | TokenError::UnknownKey => Error::Invalid,
        }
    }

    /// The key set after a fetch, unless one finished since the caller looked (generation
    /// `seen`), or the last attempt is less than `refetch_interval` old (then the keys held,
    /// or the last failure). `force` skips only the interval.
    async fn refresh(&self, seen: u64, force: bool) -> Result<Arc<KeySet>, Error> {
        let mut state = self.fetch.lock().await;
        let recent = state
            .last_attempt
            .is_some_and(|at| at.elapsed() < self.refetch_interval);
        if self.generation.load(Ordering::Acquire) != seen || (recent && !force) {
            return match (self.current(), &state.last_error) {
                (_, Some(why)) => Err(Error::KeysUnavailable(why.clone())),
                (Some(keys), None) => Ok(keys),
                (None, None) => Err(Error::KeysUnavailable("no key set fetched yet".into())),
            };
        }
        let result = self.fetch(&mut state).await;
        state.last_attempt = Some(Instant::now());
        let outcome = match result {
            Ok(keys) => {
                state.last_error = None;
                let keys = Arc::new(keys);
                *self.keys.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::clone(&keys));
                Ok(keys)
            }
            Err(why) => {
                state.last_error = Some(why.clone());
                Err(Error::KeysUnavailable(why))
            }
        };
        self.generation.fetch_add(1, Ordering::AcqRel);
        outcome
    }

    async fn get(&self, url: &str) -> Result<(Vec<u8>, Option<Duration>), String> {
        let response = self
            .client
            .get(url)
            .header(http::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("GET {url}: status {}", response.status()));
        }
        // Refused before reading when the length is announced; checked again after otherwise.
        if response
            .content_length()
            .is_some_and(|n| n > MAX_DOCUMENT_BYTES as u64)
        {
            return Err(format!("GET {url}: document too large"));
        }
        let lifetime = response
            .headers()
            .get(http::header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .and_then(max_age);
        let body = response.bytes().await.map_err(|e| format!("GET {url}: {e}"))?;
        if body.len() > MAX_DOCUMENT_BYTES {
            return Err(format!("GET {url}: document too large"));
        }
        Ok((body.to_vec(), lifetime))
    }

    async fn jwks_url(&self, state: &mut FetchState) -> Result<String, String> {
        if let Some(url) = &state.jwks_url {
            return Ok(url.clone());
        }
        let metadata_url = format!(
            "{}/.well-known/oauth-authorization-server",
            self.issuer.trim_end_matches('/')
        );
        let (body, _) = self.get(&metadata_url).await?;
        let metadata: Metadata = serde_json::from_slice(&body)
            .map_err(|e| format!("{metadata_url}: not authorization server metadata: {e}"))?;
        // RFC 8414 §3.3: metadata naming another issuer must not be used.
        if metadata.issuer != self.issuer {
            return Err(format!(
                "{metadata_url}: issuer {:?} is not {:?}",
                metadata.issuer, self.issuer
            ));
        }
        state.jwks_url = Some(metadata.jwks_uri.clone());
        Ok(metadata.jwks_uri)
    }

    async fn fetch(&self, state: &mut FetchState) -> Result<KeySet, String> {
        let url = self.jwks_url(state).await?;
        let (body, lifetime) = self.get(&url).await?;
        let keys = parse_jwks(&body).map_err(|_| format!("{url}: not a JWK set"))?;
        // Never fresher than the refetch interval allows anyway, never cached for days.
        let lifetime = lifetime
            .unwrap_or(DEFAULT_MAX_AGE)
            .clamp(self.refetch_interval, MAX_MAX_AGE.max(self.refetch_interval));
        Ok(KeySet {
            keys,
            fresh_until: Instant::now() + lifetime,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_control_max_age_is_read_and_no_cache_wins() {
        assert_eq!(max_age("public, max-age=60"), Some(Duration::from_secs(60)));
        assert_eq!(max_age("MAX-AGE=\"5\""), Some(Duration::from_secs(5)));
        assert_eq!(max_age("max-age=60, no-cache"), Some(Duration::ZERO));
        assert_eq!(max_age("no-store"), Some(Duration::ZERO));
        assert_eq!(max_age("public"), None);
        assert_eq!(max_age("max-age=soon"), None);
    }

    #[test]
    fn leeway_is_capped_at_tesseras_ceiling() {
        let v = Verifier::builder("i", "a")
            .leeway(Duration::from_secs(600))
            .build()
            .unwrap();
        assert_eq!(v.inner.leeway_secs, token::MAX_LEEWAY_SECS);
    }
}
