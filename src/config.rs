//! Configuration: command-line flags beat `TESSERA_*` environment variables, which beat an
//! optional TOML file, which beats the defaults of the contract.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use serde::Deserialize;

use crate::crypto::master_key::{MasterKey, MasterKeys};
pub use crate::tokens::SigningAlg;

/// Every setting of a running server, resolved.
#[derive(Clone)]
pub struct Config {
    pub listen: String,
    pub database_url: String,
    pub database_max_connections: u32,
    pub issuer: String,
    pub audience: String,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
    pub session_ttl: Duration,
    pub reuse_grace: Duration,
    pub max_sessions: u32,
    pub login_rate: u32,
    pub refresh_rate: u32,
    pub cookie_secure: bool,
    pub alert_webhook_url: Option<String>,
    pub alert_webhook_secret: Option<String>,
    pub trust_proxy_headers: bool,
    pub body_limit: usize,
    /// How long a client may take to send a request's headers, and then its body; also how
    /// long an idle keep-alive connection stays open.
    pub client_timeout: Duration,
    /// Open connections in total; new ones beyond it are closed at once. Capped further below
    /// the process's open-file limit at start.
    pub max_connections: usize,
    /// Open connections per client address (the socket peer); `0` = no per-address cap.
    pub max_connections_per_ip: usize,
    /// Password hashes running at once (each holds 19 MiB and a blocking thread).
    pub hash_concurrency: usize,
    /// How authenticated requests learn whether their session is still live.
    pub session_check: SessionCheck,
    /// Failed logins for one account within `lockout_window` that lock it (`0` = never).
    pub lockout_threshold: u32,
    /// The window in which failed logins of one account are counted.
    pub lockout_window: Duration,
    /// How long the first lock lasts; each further lock in a row lasts twice as long.
    pub lockout_cooldown: Duration,
    /// Audit events older than this are deleted by the sweeper (`0`: kept forever).
    pub audit_retention: Duration,
    /// The wait before the first retry of an alert the webhook did not take; it doubles after
    /// each failure.
    pub alert_retry_min: Duration,
    /// The longest wait between two attempts to deliver an alert.
    pub alert_retry_max: Duration,
    /// Delivered alerts are deleted from the outbox after this long (`0`: kept forever).
    pub alert_retention: Duration,
    /// The security events sent to the webhook (empty: every one); all are audited anyway.
    pub alert_events: Vec<String>,
    /// How log lines on standard error are written.
    pub log_format: LogFormat,
    /// The algorithm new access tokens are signed with; a change rotates the key at start.
    pub signing_alg: SigningAlg,
    /// Seals private signing keys at rest (`TESSERA_MASTER_KEY`); none: stored in clear.
    pub master_key: Option<MasterKey>,
    /// The master key being replaced: it only opens keys, until `tessera keys encrypt`
    /// re-sealed them under `master_key` (`TESSERA_MASTER_KEY_PREVIOUS`).
    pub master_key_previous: Option<MasterKey>,
    /// How long `tessera keys rotate` publishes a new key in the JWKS before it signs.
    pub key_publish_ahead: Duration,
    /// Origins (`scheme://host[:port]`, lower-cased) whose pages may call the API from a
    /// browser, with credentials (CORS). Empty: no cross-origin access at all.
    pub cors_origins: Vec<String>,
    /// Serve the built-in `/login` and `/account` pages (off for API-only deployments).
    pub pages: bool,
    /// Bearer credentials resource servers present to read the revocation feed
    /// (`GET /v1/revocations`). Empty: the feed is off.
    pub revocation_feed_credentials: Vec<String>,
}

/// The shape of log lines on standard error.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// One line of text per event, for people reading a terminal or a journal.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("{other:?} is neither \"text\" nor \"json\"")),
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        })
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

/// Everything but the secrets: the webhook secret shows only whether it is set; the database
/// and webhook URLs are shown with their passwords (and any `password=` parameter) redacted.
impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("database_url", &redact_url(&self.database_url))
            .field("database_max_connections", &self.database_max_connections)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("access_ttl", &self.access_ttl)
            .field("refresh_ttl", &self.refresh_ttl)
            .field("session_ttl", &self.session_ttl)
            .field("reuse_grace", &self.reuse_grace)
            .field("max_sessions", &self.max_sessions)
            .field("login_rate", &self.login_rate)
            .field("refresh_rate", &self.refresh_rate)
            .field("cookie_secure", &self.cookie_secure)
            .field(
                "alert_webhook_url",
                &self.alert_webhook_url.as_deref().map(redact_url),
            )
            .field(
                "alert_webhook_secret",
                &self.alert_webhook_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("trust_proxy_headers", &self.trust_proxy_headers)
            .field("body_limit", &self.body_limit)
            .field("client_timeout", &self.client_timeout)
            .field("session_check", &self.session_check)
            .field("max_connections", &self.max_connections)
            .field("max_connections_per_ip", &self.max_connections_per_ip)
            .field("hash_concurrency", &self.hash_concurrency)
            .field("lockout_threshold", &self.lockout_threshold)
            .field("lockout_window", &self.lockout_window)
            .field("lockout_cooldown", &self.lockout_cooldown)
            .field("audit_retention", &self.audit_retention)
            .field("alert_retry_min", &self.alert_retry_min)
            .field("alert_retry_max", &self.alert_retry_max)
            .field("alert_retention", &self.alert_retention)
            .field("alert_events", &self.alert_events)
            .field("log_format", &self.log_format)
            .field("signing_alg", &self.signing_alg)
            .field("master_key", &self.master_key.as_ref().map(|_| "<redacted>"))
            .field(
                "master_key_previous",
                &self.master_key_previous.as_ref().map(|_| "<redacted>"),
            )
            .field("key_publish_ahead", &self.key_publish_ahead)
            .field("cors_origins", &self.cors_origins)
            .field("pages", &self.pages)
            .field(
                "revocation_feed_credentials",
                &format_args!("<{} redacted>", self.revocation_feed_credentials.len()),
            )
            .finish()
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:8080".into(),
            database_url: "sqlite://tessera.db".into(),
            database_max_connections: 16,
            issuer: "http://127.0.0.1:8080".into(),
            audience: "tessera".into(),
            access_ttl: Duration::from_secs(15 * 60),
            refresh_ttl: Duration::from_secs(30 * 86_400),
            session_ttl: Duration::from_secs(90 * 86_400),
            reuse_grace: Duration::from_secs(10),
            max_sessions: 10,
            login_rate: 30,
            refresh_rate: 120,
            cookie_secure: true,
            alert_webhook_url: None,
            alert_webhook_secret: None,
            trust_proxy_headers: false,
            body_limit: 64 * 1024,
            client_timeout: Duration::from_secs(10),
            session_check: SessionCheck::Cached,
            max_connections: 10_000,
            max_connections_per_ip: 256,
            hash_concurrency: std::thread::available_parallelism().map_or(2, |n| n.get() * 2),
            lockout_threshold: 10,
            lockout_window: Duration::from_secs(15 * 60),
            lockout_cooldown: Duration::from_secs(60),
            audit_retention: Duration::from_secs(90 * 86_400),
            alert_retry_min: Duration::from_secs(1),
            alert_retry_max: Duration::from_secs(600),
            alert_retention: Duration::from_secs(7 * 86_400),
            alert_events: Vec::new(),
            log_format: LogFormat::Text,
            signing_alg: SigningAlg::EdDSA,
            master_key: None,
            master_key_previous: None,
            // Longer than the JWKS max-age plus the key reload interval (two minutes) by a wide
            // margin: some verifier libraries cache a JWKS for up to ten minutes whatever its
            // max-age says.
            key_publish_ahead: Duration::from_secs(15 * 60),
            cors_origins: Vec::new(),
            pages: true,
            revocation_feed_credentials: Vec::new(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    /// Only toml's message and the line: its full error quotes the offending line, which
    /// may hold a secret.
    #[error("invalid config file {path}, line {line}: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("invalid value for {name}: {message}")]
    Invalid { name: &'static str, message: String },
}

/// The settings as flags (each also read from its `TESSERA_*` variable by clap).
/// Everything is optional here so we can tell "not given" from "given the default".
#[derive(Args, Clone, Default)]
pub struct ConfigArgs {
    /// Optional TOML file with any of the settings below (keys as the flag names, `_` for `-`).
    #[arg(long, env = "TESSERA_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, env = "TESSERA_LISTEN", global = true)]
    pub listen: Option<String>,
    /// `sqlite://PATH` (relative), `sqlite:///ABS/PATH` or `postgres://...`.
    #[arg(long, env = "TESSERA_DATABASE_URL", global = true)]
    pub database_url: Option<String>,
    /// Size of the database connection pool.
    #[arg(long, env = "TESSERA_DATABASE_MAX_CONNECTIONS", global = true)]
    pub database_max_connections: Option<u32>,
    /// `iss` of access tokens.
    #[arg(long, env = "TESSERA_ISSUER", global = true)]
    pub issuer: Option<String>,
    /// `aud` of access tokens.
    #[arg(long, env = "TESSERA_AUDIENCE", global = true)]
    pub audience: Option<String>,
    /// Access token lifetime (seconds, or `15m`, `1h`...).
    #[arg(long, env = "TESSERA_ACCESS_TTL", global = true)]
    pub access_ttl: Option<String>,
    /// Refresh token lifetime, sliding on each rotation.
    #[arg(long, env = "TESSERA_REFRESH_TTL", global = true)]
    pub refresh_ttl: Option<String>,
    /// Absolute session lifetime.
    #[arg(long, env = "TESSERA_SESSION_TTL", global = true)]
    pub session_ttl: Option<String>,
    /// Grace window in which the immediate predecessor of a refresh token is forgiven.
    #[arg(long, env = "TESSERA_REUSE_GRACE", global = true)]
    pub reuse_grace: Option<String>,
    /// Live sessions per user; the least recently used is revoked beyond it.
    #[arg(long, env = "TESSERA_MAX_SESSIONS", global = true)]
    pub max_sessions: Option<u32>,
    /// Failed logins of one account within the lockout window that lock it (0 = never).
    #[arg(long, env = "TESSERA_LOCKOUT_THRESHOLD", global = true)]
    pub lockout_threshold: Option<u32>,
    /// The window in which an account's failed logins are counted.
    #[arg(long, env = "TESSERA_LOCKOUT_WINDOW", global = true)]
    pub lockout_window: Option<String>,
    /// The first lock's length; each further lock in a row doubles it (at most 64 times).
    #[arg(long, env = "TESSERA_LOCKOUT_COOLDOWN", global = true)]
    pub lockout_cooldown: Option<String>,
    /// How long audit events are kept (0 = forever).
    #[arg(long, env = "TESSERA_AUDIT_RETENTION", global = true)]
    pub audit_retention: Option<String>,
    /// The wait before an undelivered alert's first retry; it doubles after each failure.
    #[arg(long, env = "TESSERA_ALERT_RETRY_MIN", global = true)]
    pub alert_retry_min: Option<String>,
    /// The longest wait between attempts to deliver an alert.
    #[arg(long, env = "TESSERA_ALERT_RETRY_MAX", global = true)]
    pub alert_retry_max: Option<String>,
    /// How long delivered alerts stay in the outbox (0 = forever).
    #[arg(long, env = "TESSERA_ALERT_RETENTION", global = true)]
    pub alert_retention: Option<String>,
    /// Security events to send to the webhook, comma-separated (default: all).
    #[arg(long, env = "TESSERA_ALERT_EVENTS", global = true)]
    pub alert_events: Option<String>,
    /// Login attempts per minute per client IP (0 = unlimited).
    #[arg(long, env = "TESSERA_LOGIN_RATE", global = true)]
    pub login_rate: Option<u32>,
    /// Refreshes per minute per client IP (0 = unlimited).
    #[arg(long, env = "TESSERA_REFRESH_RATE", global = true)]
    pub refresh_rate: Option<u32>,
    /// `Secure` attribute on cookies (`true`/`false`).
    #[arg(long, env = "TESSERA_COOKIE_SECURE", global = true)]
    pub cookie_secure: Option<String>,
    /// Where security alerts are POSTed.
    #[arg(long, env = "TESSERA_ALERT_WEBHOOK_URL", global = true)]
    pub alert_webhook_url: Option<String>,
    /// HMAC-SHA256 key for the alert signature header.
    #[arg(
        long,
        env = "TESSERA_ALERT_WEBHOOK_SECRET",
        global = true,
        hide_env_values = true
    )]
    pub alert_webhook_secret: Option<String>,
    /// Take the client IP from the rightmost `X-Forwarded-For` address.
    #[arg(long, env = "TESSERA_TRUST_PROXY_HEADERS", global = true)]
    pub trust_proxy_headers: Option<String>,
    /// Largest accepted request body in bytes.
    #[arg(long, env = "TESSERA_BODY_LIMIT", global = true)]
    pub body_limit: Option<usize>,
    /// How long a client may take to send a request's headers, and then its body.
    #[arg(long, env = "TESSERA_CLIENT_TIMEOUT", global = true)]
    pub client_timeout: Option<String>,
    /// `cached` (session liveness from memory, kept exact by revocation notices) or `strict`
    /// (a database read on every authenticated request).
    #[arg(long, env = "TESSERA_SESSION_CHECK", global = true)]
    pub session_check: Option<String>,
    /// Open connections in total (kept below the open-file limit).
    #[arg(long, env = "TESSERA_MAX_CONNECTIONS", global = true)]
    pub max_connections: Option<usize>,
    /// Open connections per client address (0 = no per-address cap).
    #[arg(long, env = "TESSERA_MAX_CONNECTIONS_PER_IP", global = true)]
    pub max_connections_per_ip: Option<usize>,
    /// Password hashes running at once (default: twice the CPU count).
    #[arg(long, env = "TESSERA_HASH_CONCURRENCY", global = true)]
    pub hash_concurrency: Option<usize>,
    /// Log lines on standard error: `text` or `json` (one object per line).
    #[arg(long, env = "TESSERA_LOG_FORMAT", global = true)]
    pub log_format: Option<String>,
    /// Access-token signing algorithm: `EdDSA` (default), `Ed25519`, `ES256` or `RS256`.
    #[arg(long, env = "TESSERA_SIGNING_ALG", global = true)]
    pub signing_alg: Option<String>,
    /// Seals private signing keys at rest: 32 random bytes in standard base64
    /// (`openssl rand -base64 32`). Unset: keys are stored in clear (a warning at start).
    #[arg(long, env = "TESSERA_MASTER_KEY", global = true, hide_env_values = true)]
    pub master_key: Option<String>,
    /// The master key being replaced, while `tessera keys encrypt` re-seals under the new one.
    #[arg(
        long,
        env = "TESSERA_MASTER_KEY_PREVIOUS",
        global = true,
        hide_env_values = true
    )]
    pub master_key_previous: Option<String>,
    /// How long `tessera keys rotate` publishes a new key before it signs (default 15m; at
    /// least the JWKS max-age plus the key reload interval, 2m).
    #[arg(long, env = "TESSERA_KEY_PUBLISH_AHEAD", global = true)]
    pub key_publish_ahead: Option<String>,
    /// Comma-separated origins allowed to call the API from a browser (CORS), e.g.
    /// `https://app.example.com,http://localhost:5173`; none by default.
    #[arg(long, env = "TESSERA_CORS_ORIGINS", global = true)]
    pub cors_origins: Option<String>,
    /// Serve the built-in `/login` and `/account` pages (`true`/`false`).
    #[arg(long, env = "TESSERA_PAGES", global = true)]
    pub pages: Option<String>,
    /// Comma-separated bearer credentials (each at least 32 characters) that resource servers
    /// present to read the revocation feed, `GET /v1/revocations`; the feed is off without one.
    #[arg(
        long,
        env = "TESSERA_REVOCATION_FEED_CREDENTIALS",
        global = true,
        hide_env_values = true
    )]
    pub revocation_feed_credentials: Option<String>,
}

/// The TOML file: the same keys, values as TOML scalars.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    database_url: Option<String>,
    database_max_connections: Option<u32>,
    issuer: Option<String>,
    audience: Option<String>,
    access_ttl: Option<DurationValue>,
    refresh_ttl: Option<DurationValue>,
    session_ttl: Option<DurationValue>,
    reuse_grace: Option<DurationValue>,
    max_sessions: Option<u32>,
    lockout_threshold: Option<u32>,
    lockout_window: Option<DurationValue>,
    lockout_cooldown: Option<DurationValue>,
    audit_retention: Option<DurationValue>,
    alert_retry_min: Option<DurationValue>,
    alert_retry_max: Option<DurationValue>,
    alert_retention: Option<DurationValue>,
    alert_events: Option<String>,
    login_rate: Option<u32>,
    refresh_rate: Option<u32>,
    cookie_secure: Option<bool>,
    alert_webhook_url: Option<String>,
    alert_webhook_secret: Option<String>,
    trust_proxy_headers: Option<bool>,
    body_limit: Option<usize>,
    client_timeout: Option<DurationValue>,
    session_check: Option<String>,
    max_connections: Option<usize>,
    max_connections_per_ip: Option<usize>,
    hash_concurrency: Option<usize>,
    log_format: Option<String>,
    signing_alg: Option<String>,
    master_key: Option<String>,
    master_key_previous: Option<String>,
    key_publish_ahead: Option<DurationValue>,
    cors_origins: Option<OriginsValue>,
    pages: Option<bool>,
    revocation_feed_credentials: Option<String>,
}

/// CORS origins in a TOML file: a list of strings, or one comma-separated string as in the
/// environment.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OriginsValue {
    List(Vec<String>),
    Text(String),
}

/// A duration in a TOML file may be a number of seconds or a string like `15m`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum DurationValue {
    Seconds(u64),
    Text(String),
}

impl DurationValue {
    fn into_string(self) -> String {
        match self {
            DurationValue::Seconds(n) => n.to_string(),
            DurationValue::Text(s) => s,
        }
    }
}

impl Config {
    /// Resolves flags/environment (already merged by clap) over the file over the defaults.
    pub fn load(args: &ConfigArgs) -> Result<Config, ConfigError> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let d = Config::default();
        let duration = |name: &'static str,
                        flag: &Option<String>,
                        file: Option<DurationValue>,
                        default: Duration|
         -> Result<Duration, ConfigError> {
            match flag.clone().or(file.map(DurationValue::into_string)) {
                Some(s) => parse_duration(&s).map_err(|message| ConfigError::Invalid { name, message }),
                None => Ok(default),
            }
        };
        let boolean = |name: &'static str,
                       flag: &Option<String>,
                       file: Option<bool>,
                       default: bool|
         -> Result<bool, ConfigError> {
            match flag {
                Some(s) => parse_bool(s).map_err(|message| ConfigError::Invalid { name, message }),
                None => Ok(file.unwrap_or(default)),
            }
        };
        let config = Config {
            listen: args.listen.clone().or(file.listen).unwrap_or(d.listen),
            database_url: args
                .database_url
                .clone()
                .or(file.database_url)
                .unwrap_or(d.database_url),
            database_max_connections: args
                .database_max_connections
                .or(file.database_max_connections)
                .unwrap_or(d.database_max_connections),
            issuer: args.issuer.clone().or(file.issuer).unwrap_or(d.issuer),
            audience: args.audience.clone().or(file.audience).unwrap_or(d.audience),
            access_ttl: duration("access_ttl", &args.access_ttl, file.access_ttl, d.access_ttl)?,
            refresh_ttl: duration("refresh_ttl", &args.refresh_ttl, file.refresh_ttl, d.refresh_ttl)?,
            session_ttl: duration("session_ttl", &args.session_ttl, file.session_ttl, d.session_ttl)?,
            reuse_grace: duration("reuse_grace", &args.reuse_grace, file.reuse_grace, d.reuse_grace)?,
            max_sessions: args.max_sessions.or(file.max_sessions).unwrap_or(d.max_sessions),
            lockout_threshold: args
                .lockout_threshold
                .or(file.lockout_threshold)
                .unwrap_or(d.lockout_threshold),
            lockout_window: duration(
                "lockout_window",
                &args.lockout_window,
                file.lockout_window,
                d.lockout_window,
            )?,
            lockout_cooldown: duration(
                "lockout_cooldown",
                &args.lockout_cooldown,
                file.lockout_cooldown,
                d.lockout_cooldown,
            )?,
            audit_retention: duration(
                "audit_retention",
                &args.audit_retention,
                file.audit_retention,
                d.audit_retention,
            )?,
            alert_retry_min: duration(
                "alert_retry_min",
                &args.alert_retry_min,
                file.alert_retry_min,
                d.alert_retry_min,
            )?,
            alert_retry_max: duration(
                "alert_retry_max",
                &args.alert_retry_max,
                file.alert_retry_max,
                d.alert_retry_max,
            )?,
            alert_retention: duration(
                "alert_retention",
                &args.alert_retention,
                file.alert_retention,
                d.alert_retention,
            )?,
            login_rate: args.login_rate.or(file.login_rate).unwrap_or(d.login_rate),
            refresh_rate: args.refresh_rate.or(file.refresh_rate).unwrap_or(d.refresh_rate),
            cookie_secure: boolean(
                "cookie_secure",
                &args.cookie_secure,
                file.cookie_secure,
                d.cookie_secure,
            )?,
            alert_webhook_url: non_empty(args.alert_webhook_url.clone().or(file.alert_webhook_url)),
            alert_webhook_secret: non_empty(args.alert_webhook_secret.clone().or(file.alert_webhook_secret)),
            trust_proxy_headers: boolean(
                "trust_proxy_headers",
                &args.trust_proxy_headers,
                file.trust_proxy_headers,
                d.trust_proxy_headers,
            )?,
            body_limit: args.body_limit.or(file.body_limit).unwrap_or(d.body_limit),
            client_timeout: duration(
                "client_timeout",
                &args.client_timeout,
                file.client_timeout,
                d.client_timeout,
            )?,
            session_check: match args.session_check.clone().or(file.session_check) {
                Some(s) => s.parse().map_err(|message| ConfigError::Invalid {
                    name: "session_check",
                    message,
                })?,
                None => d.session_check,
            },
            max_connections: args
                .max_connections
                .or(file.max_connections)
                .unwrap_or(d.max_connections),
            max_connections_per_ip: args
                .max_connections_per_ip
                .or(file.max_connections_per_ip)
                .unwrap_or(d.max_connections_per_ip),
            hash_concurrency: args
                .hash_concurrency
                .or(file.hash_concurrency)
                .unwrap_or(d.hash_concurrency),
            log_format: match args.log_format.clone().or(file.log_format) {
                Some(s) => s.parse().map_err(|message| ConfigError::Invalid {
                    name: "log_format",
                    message,
                })?,
                None => d.log_format,
            },
            signing_alg: match args.signing_alg.clone().or(file.signing_alg) {
                Some(s) => s.parse().map_err(|message| ConfigError::Invalid {
                    name: "signing_alg",
                    message,
                })?,
                None => d.signing_alg,
            },
            master_key: master_key("master_key", args.master_key.clone().or(file.master_key))?,
            master_key_previous: master_key(
                "master_key_previous",
                args.master_key_previous.clone().or(file.master_key_previous),
            )?,
            key_publish_ahead: duration(
                "key_publish_ahead",
                &args.key_publish_ahead,
                file.key_publish_ahead,
                d.key_publish_ahead,
            )?,
            cors_origins: match args.cors_origins.clone() {
                Some(text) => parse_origins([text.as_str()]),
                None => match file.cors_origins {
                    Some(OriginsValue::List(list)) => parse_origins(list.iter().map(String::as_str)),
                    Some(OriginsValue::Text(text)) => parse_origins([text.as_str()]),
                    None => Ok(d.cors_origins),
                },
            }
            .map_err(|message| ConfigError::Invalid {
                name: "cors_origins",
                message,
            })?,
            pages: boolean("pages", &args.pages, file.pages, d.pages)?,
            revocation_feed_credentials: match non_empty(
                args.revocation_feed_credentials
                    .clone()
                    .or(file.revocation_feed_credentials),
            ) {
                Some(text) => parse_feed_credentials(&text).map_err(|message| ConfigError::Invalid {
                    name: "revocation_feed_credentials",
                    message,
                })?,
                None => d.revocation_feed_credentials,
            },
            alert_events: match args.alert_events.clone().or(file.alert_events) {
                Some(text) => {
                    crate::domain::parse_security_events(&text).map_err(|message| ConfigError::Invalid {
                        name: "alert_events",
                        message,
                    })?
                }
                None => d.alert_events,
            },
        };
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |name, message: &str| {
            Err(ConfigError::Invalid {
                name,
                message: message.to_owned(),
            })
        };
        if self.access_ttl.is_zero() {
            return invalid("access_ttl", "must be positive");
        }
        if self.refresh_ttl.is_zero() {
            return invalid("refresh_ttl", "must be positive");
        }
        if self.session_ttl.is_zero() {
            return invalid("session_ttl", "must be positive");
        }
        if self.max_sessions == 0 {
            return invalid("max_sessions", "must be at least 1");
        }
        if self.lockout_threshold > 0 && (self.lockout_window.is_zero() || self.lockout_cooldown.is_zero()) {
            return invalid(
                "lockout_window",
                "and lockout_cooldown must be positive when locking is on",
            );
        }
        if self.client_timeout.is_zero() {
            return invalid("client_timeout", "must be positive");
        }
        if self.hash_concurrency == 0 {
            return invalid("hash_concurrency", "must be at least 1");
        }
        if self.max_connections == 0 {
            return invalid("max_connections", "must be at least 1");
        }
        if self.database_max_connections == 0 {
            return invalid("database_max_connections", "must be at least 1");
        }
        // A zero wait would retry a dead webhook in a tight loop.
        if self.alert_retry_min.is_zero() {
            return invalid("alert_retry_min", "must be positive");
        }
        if self.alert_retry_max < self.alert_retry_min {
            return invalid("alert_retry_max", "must be at least alert_retry_min");
        }
        Ok(())
    }

    /// The master keys the service seals and opens private signing keys with.
    pub fn master_keys(&self) -> MasterKeys {
        MasterKeys {
            current: self.master_key.clone(),
            previous: self.master_key_previous.clone(),
        }
    }

    /// The listen address with the `:PORT` shorthand expanded (all interfaces, as in Go).
    pub fn listen_addr(&self) -> String {
        if self.listen.starts_with(':') {
            format!("0.0.0.0{}", self.listen)
        } else {
            self.listen.clone()
        }
    }
}

impl Config {
    /// The settings as a TOML file (the keys `--config` reads), secrets redacted: what
    /// `tessera config` prints. Fed back through `--config`, it reproduces this configuration
    /// except for the redacted secrets and the unset values (commented out).
    pub fn to_toml_redacted(&self) -> String {
        fn text(s: &str) -> String {
            toml::Value::String(s.to_owned()).to_string()
        }
        let mut out = String::from(
            "# Effective configuration: flags over TESSERA_* variables over the file over defaults.\n\
             # Secrets are redacted.\n",
        );
        let mut line = |key: &str, value: Option<String>| match value {
            Some(value) => out.push_str(&format!("{key} = {value}\n")),
            None => out.push_str(&format!("# {key} is not set\n")),
        };
        line("listen", Some(text(&self.listen)));
        line("database_url", Some(text(&redact_url(&self.database_url))));
        line(
            "database_max_connections",
            Some(self.database_max_connections.to_string()),
        );
        line("issuer", Some(text(&self.issuer)));
        line("audience", Some(text(&self.audience)));
        line("access_ttl", Some(text(&format_duration(self.access_ttl))));
        line("refresh_ttl", Some(text(&format_duration(self.refresh_ttl))));
        line("session_ttl", Some(text(&format_duration(self.session_ttl))));
        line("reuse_grace", Some(text(&format_duration(self.reuse_grace))));
        line("max_sessions", Some(self.max_sessions.to_string()));
        line("login_rate", Some(self.login_rate.to_string()));
        line("refresh_rate", Some(self.refresh_rate.to_string()));
        line("cookie_secure", Some(self.cookie_secure.to_string()));
        line(
            "alert_webhook_url",
            self.alert_webhook_url
                .as_deref()
                .map(|url| text(&redact_webhook_url(url))),
        );
        line(
            "alert_webhook_secret",
            self.alert_webhook_secret.as_ref().map(|_| text(REDACTED)),
        );
        line("trust_proxy_headers", Some(self.trust_proxy_headers.to_string()));
        line("body_limit", Some(self.body_limit.to_string()));
        line(
            "client_timeout",
            Some(text(&format_duration(self.client_timeout))),
        );
        line(
            "session_check",
            Some(text(match self.session_check {
                SessionCheck::Cached => "cached",
                SessionCheck::Strict => "strict",
            })),
        );
        line("max_connections", Some(self.max_connections.to_string()));
        line(
            "max_connections_per_ip",
            Some(self.max_connections_per_ip.to_string()),
        );
        line("hash_concurrency", Some(self.hash_concurrency.to_string()));
        line("log_format", Some(text(&self.log_format.to_string())));
        line("signing_alg", Some(text(self.signing_alg.as_str())));
        line(
            "key_publish_ahead",
            Some(text(&format_duration(self.key_publish_ahead))),
        );
        line("lockout_threshold", Some(self.lockout_threshold.to_string()));
        line(
            "lockout_window",
            Some(text(&format_duration(self.lockout_window))),
        );
        line(
            "lockout_cooldown",
            Some(text(&format_duration(self.lockout_cooldown))),
        );
        let origins = self.cors_origins.iter().map(|o| toml::Value::String(o.clone()));
        line(
            "cors_origins",
            Some(toml::Value::Array(origins.collect()).to_string()),
        );
        line("pages", Some(self.pages.to_string()));
        if !self.alert_events.is_empty() {
            line("alert_events", Some(text(&self.alert_events.join(","))));
        }
        line(
            "audit_retention",
            Some(text(&format_duration(self.audit_retention))),
        );
        for (name, value) in [
            ("alert_retry_min", self.alert_retry_min),
            ("alert_retry_max", self.alert_retry_max),
            ("alert_retention", self.alert_retention),
        ] {
            line(name, Some(text(&format_duration(value))));
        }
        // Not even a placeholder: read back, it would be a (too short) credential.
        match self.revocation_feed_credentials.len() {
            0 => out.push_str("# revocation_feed_credentials is not set\n"),
            n => out.push_str(&format!("# revocation_feed_credentials: {n} set, redacted\n")),
        }
        // Not even a placeholder, which would read back as a (wrong) key: whether it is set.
        for (key, set) in [
            ("master_key", self.master_key.is_some()),
            ("master_key_previous", self.master_key_previous.is_some()),
        ] {
            out.push_str(&if set {
                format!(
                    "# {key} is set ({REDACTED}; give it as TESSERA_{})\n",
                    key.to_uppercase()
                )
            } else {
                format!("# {key} is not set\n")
            });
        }
        out
    }
}

const REDACTED: &str = "<redacted>";

/// A webhook URL fit to show: scheme and host only. Chat and incident services put the
/// webhook's secret in its path (`/services/T…/B…/<secret>`), so the path and query go too.
pub fn redact_webhook_url(url: &str) -> String {
    let redacted = redact_url(url);
    match redacted.split_once("://") {
        Some((scheme, rest)) => {
            let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
            if authority.len() == rest.len() {
                redacted
            } else {
                format!("{scheme}://{authority}/{REDACTED}")
            }
        }
        None => REDACTED.to_owned(),
    }
}

/// A duration in the largest unit that shows it exactly (`15m`, `30d`, `90s`, `250ms`);
/// [`parse_duration`] reads it back.
pub fn format_duration(d: Duration) -> String {
    if d.subsec_nanos() != 0 {
        return format!("{}ms", d.as_millis());
    }
    let secs = d.as_secs();
    match secs {
        0 => "0s".to_owned(),
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// A database URL fit for logs: the password of its user-info part and the value of any
/// `password` query parameter replaced by `<redacted>`.
pub fn redact_url(url: &str) -> String {
    const REDACTED: &str = "<redacted>";
    let (head, query) = match url.split_once('?') {
        Some((h, q)) => (h, Some(q)),
        None => (url, None),
    };
    let mut out = match head.split_once("://") {
        // The last `@` ends the user info (a password may hold unencoded `/` or `@`).
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((userinfo, host_and_path)) => match userinfo.split_once(':') {
                Some((user, _password)) => format!("{scheme}://{user}:{REDACTED}@{host_and_path}"),
                None => head.to_owned(),
            },
            None => head.to_owned(),
        },
        None => head.to_owned(),
    };
    if let Some(query) = query {
        let params: Vec<String> = query
            .split('&')
            .map(|param| match param.split_once('=') {
                Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}={REDACTED}"),
                _ => param.to_owned(),
            })
            .collect();
        out.push('?');
        out.push_str(&params.join("&"));
    }
    out
}

/// The shortest resource-server credential accepted: guessing one must be out of reach.
pub const MIN_FEED_CREDENTIAL_LEN: usize = 32;

fn parse_feed_credentials(text: &str) -> Result<Vec<String>, String> {
    let credentials: Vec<String> = text
        .split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(str::to_owned)
        .collect();
    // Never quote the value: it is a secret.
    for (i, credential) in credentials.iter().enumerate() {
        if credential.len() < MIN_FEED_CREDENTIAL_LEN {
            return Err(format!(
                "credential {} is shorter than {MIN_FEED_CREDENTIAL_LEN} characters",
                i + 1
            ));
        }
        if !credential.chars().all(|c| c.is_ascii_graphic()) {
            return Err(format!(
                "credential {} has characters other than printable ASCII",
                i + 1
            ));
        }
    }
    Ok(credentials)
}

/// A master key setting: base64 of 32 bytes; empty means unset. The error never quotes it.
fn master_key(name: &'static str, v: Option<String>) -> Result<Option<MasterKey>, ConfigError> {
    non_empty(v)
        .map(|text| MasterKey::parse(&text))
        .transpose()
        .map_err(|e| ConfigError::Invalid {
            name,
            message: e.to_string(),
        })
}

fn non_empty(v: Option<String>) -> Option<String> {
    v.filter(|s| !s.trim().is_empty())
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    toml::from_str(&text).map_err(|e: toml::de::Error| ConfigError::Parse {
        path: path.to_owned(),
        line: e.span().map_or(0, |span| {
            text[..span.start.min(text.len())].lines().count().max(1)
        }),
        message: e.message().to_owned(),
    })
}

/// `90`, `90s`, `15m`, `12h`, `30d` (also `500ms`); a bare number is seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (use e.g. 30, 10s, 15m, 12h, 30d)"))?;
    let secs_per_unit = match unit.trim() {
        "" | "s" => 1,
        "ms" => return Ok(Duration::from_millis(n)),
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{s:?} has an unknown unit (use s, m, h or d)")),
    };
    n.checked_mul(secs_per_unit)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{s:?} is too long"))
}

/// Origins separated by commas or whitespace, each exactly `http(s)://host[:port]` as a browser
/// sends it in `Origin` (lower-cased here, as browsers do). A wildcard is refused: credentials
/// may only ever go to origins someone listed by name.
pub fn parse_origins<'a>(texts: impl IntoIterator<Item = &'a str>) -> Result<Vec<String>, String> {
    let mut origins = Vec::new();
    for text in texts {
        for raw in text.split(|c: char| c == ',' || c.is_whitespace()) {
            if raw.is_empty() {
                continue;
            }
            let origin = parse_origin(raw)?;
            if !origins.contains(&origin) {
                origins.push(origin);
            }
        }
    }
    Ok(origins)
}

fn parse_origin(raw: &str) -> Result<String, String> {
    if raw.contains('*') || raw.eq_ignore_ascii_case("null") {
        return Err(format!(
            "{raw:?}: list each origin by name (no wildcards, no \"null\")"
        ));
    }
    let origin = raw.to_ascii_lowercase();
    let host = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"))
        .ok_or_else(|| format!("{raw:?} is not an origin: it must start with https:// or http://"))?;
    if host.ends_with('/') {
        return Err(format!("{raw:?}: an origin has no path; drop the trailing \"/\""));
    }
    let well_formed = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'));
    if !well_formed {
        return Err(format!(
            "{raw:?} is not an origin (scheme://host[:port], nothing more)"
        ));
    }
    // Browsers leave the scheme's default port out of `Origin`; so must we, or it never matches.
    let default_port = if origin.starts_with("https://") {
        ":443"
    } else {
        ":80"
    };
    Ok(match origin.strip_suffix(default_port) {
        Some(without) => without.to_owned(),
        None => origin,
    })
}

fn parse_bool(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        other => Err(format!("{other:?} is not true or false")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_master_key_is_parsed_checked_and_never_shown() {
        let key = MasterKey::generate().unwrap().to_base64();
        let args = ConfigArgs {
            master_key: Some(key.clone()),
            key_publish_ahead: Some("90s".into()),
            ..ConfigArgs::default()
        };
        let config = Config::load(&args).unwrap();
        assert!(config.master_key.is_some() && config.master_key_previous.is_none());
        assert_eq!(config.key_publish_ahead, Duration::from_secs(90));
        let printed = config.to_toml_redacted();
        assert!(!printed.contains(&key) && !format!("{config:?}").contains(&key));
        assert!(printed.contains("# master_key is set"), "{printed}");
        assert!(printed.contains("# master_key_previous is not set"), "{printed}");
        assert_eq!(Config::default().key_publish_ahead, Duration::from_secs(900));

        let short = ConfigArgs {
            master_key: Some("c2hvcnQ=".into()),
            ..ConfigArgs::default()
        };
        let err = Config::load(&short)
            .expect_err("a 5-byte key is refused")
            .to_string();
        assert!(err.contains("master_key") && err.contains("got 5 bytes"), "{err}");
        assert!(!err.contains("c2hvcnQ"), "{err}");
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("30d"), Ok(Duration::from_secs(2_592_000)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5y").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn flags_beat_file_beats_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.toml");
        std::fs::write(&path, "reuse_grace = 3\naccess_ttl = \"2m\"\nmax_sessions = 4\n").unwrap();
        let args = ConfigArgs {
            config: Some(path),
            max_sessions: Some(7),
            ..ConfigArgs::default()
        };
        let c = Config::load(&args).unwrap();
        assert_eq!(c.reuse_grace, Duration::from_secs(3));
        assert_eq!(c.access_ttl, Duration::from_secs(120));
        assert_eq!(c.max_sessions, 7);
        assert_eq!(c.refresh_ttl, Duration::from_secs(30 * 86_400));
    }

    #[test]
    fn secrets_never_show() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.toml");
        std::fs::write(&path, "alert_webhook_secret = hunter2secret\n").unwrap();
        let args = ConfigArgs {
            config: Some(path),
            ..ConfigArgs::default()
        };
        let err = Config::load(&args).expect_err("unquoted string is invalid TOML");
        assert!(!err.to_string().contains("hunter2"), "{err}");
        assert!(err.to_string().contains("line 1"), "{err}");
        let config = Config {
            alert_webhook_secret: Some("hunter2secret".into()),
            ..Config::default()
        };
        assert!(!format!("{config:?}").contains("hunter2"));
    }

    #[test]
    fn feed_credentials_are_long_never_shown_and_never_quoted_in_errors() {
        let long = "feedcredential-0123456789abcdef0123456789";
        let credentials = parse_feed_credentials(&format!(" {long} ,, {long}x ")).unwrap();
        assert_eq!(credentials, [long.to_owned(), format!("{long}x")]);
        let err = parse_feed_credentials(&format!("{long},tooshortsecret")).unwrap_err();
        assert!(err.contains("credential 2") && !err.contains("tooshort"), "{err}");
        let config = Config {
            revocation_feed_credentials: credentials,
            ..Config::default()
        };
        assert!(!format!("{config:?}").contains("feedcredential"));
        let printed = config.to_toml_redacted();
        assert!(!printed.contains("feedcredential"), "{printed}");
        assert!(
            printed.contains("# revocation_feed_credentials: 2 set"),
            "{printed}"
        );
    }

    #[test]
    fn database_passwords_never_show() {
        for url in [
            "postgres://tessera:s3cretpw@db.example.com:5432/tessera?sslmode=require",
            "postgres://tessera:s3cretpw@db.example.com/tessera",
            "postgresql://db.example.com/tessera?user=tessera&password=s3cretpw&sslmode=require",
            "postgres://tessera:p%40ss@s3cretpw@host/db",
            "postgres://tessera:s3cre/tpw@host/db",
        ] {
            let config = Config {
                database_url: url.into(),
                ..Config::default()
            };
            let shown = format!("{config:?}");
            assert!(!shown.contains("s3cretpw") && !shown.contains("tpw@"), "{shown}");
            assert!(shown.contains("<redacted>"), "{shown}");
        }
        assert_eq!(
            redact_url("postgres://tessera:pw@db:5432/t?sslmode=require"),
            "postgres://tessera:<redacted>@db:5432/t?sslmode=require"
        );
        assert_eq!(redact_url("sqlite://tessera.db"), "sqlite://tessera.db");
        let config = Config {
            alert_webhook_url: Some("https://hooks:s3cretpw@alerts.example.com/in".into()),
            ..Config::default()
        };
        assert!(!format!("{config:?}").contains("s3cretpw"));
        assert_eq!(redact_url("postgres://tessera@db/t"), "postgres://tessera@db/t");
    }

    #[test]
    fn the_printed_configuration_reads_back_as_the_same_one_without_its_secrets() {
        let config = Config {
            listen: "0.0.0.0:9000".into(),
            database_url: "postgres://tessera:s3cretpw@db/tessera".into(),
            access_ttl: Duration::from_secs(120),
            refresh_ttl: Duration::from_secs(7 * 86_400),
            reuse_grace: Duration::from_millis(1500),
            max_sessions: 3,
            cookie_secure: false,
            alert_webhook_url: Some("https://hooks.example.com/services/T0/B0/s3cretpath".into()),
            alert_webhook_secret: Some("hunter2secret".into()),
            session_check: SessionCheck::Strict,
            log_format: LogFormat::Json,
            signing_alg: SigningAlg::ES256,
            issuer: "https://auth.example.com/\"quoted\"".into(),
            ..Config::default()
        };
        let printed = config.to_toml_redacted();
        for secret in ["s3cretpw", "s3cretpath", "hunter2"] {
            assert!(!printed.contains(secret), "{printed}");
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("printed.toml");
        std::fs::write(&path, &printed).unwrap();
        let read = Config::load(&ConfigArgs {
            config: Some(path),
            ..ConfigArgs::default()
        })
        .unwrap();
        let expected = Config {
            database_url: "postgres://tessera:<redacted>@db/tessera".into(),
            alert_webhook_url: Some("https://hooks.example.com/<redacted>".into()),
            alert_webhook_secret: Some("<redacted>".into()),
            ..config
        };
        assert_eq!(format!("{read:?}"), format!("{expected:?}"));
        assert_eq!(read.alert_webhook_url, expected.alert_webhook_url);
        assert_eq!(read.issuer, expected.issuer);
        let unset = Config::default().to_toml_redacted();
        assert!(unset.contains("# alert_webhook_secret is not set"), "{unset}");
    }

    #[test]
    fn durations_print_in_their_largest_exact_unit() {
        for (d, text) in [
            (Duration::from_secs(900), "15m"),
            (Duration::from_secs(30 * 86_400), "30d"),
            (Duration::from_secs(7200), "2h"),
            (Duration::from_secs(90), "90s"),
            (Duration::from_millis(250), "250ms"),
            (Duration::ZERO, "0s"),
        ] {
            assert_eq!(format_duration(d), text);
            assert_eq!(parse_duration(text), Ok(d));
        }
    }

    #[test]
    fn cors_origins_are_exact_origins() {
        assert_eq!(
            parse_origins(["https://App.example.com, http://localhost:5173"]),
            Ok(vec![
                "https://app.example.com".to_owned(),
                "http://localhost:5173".to_owned()
            ])
        );
        assert_eq!(parse_origins(["", " , "]), Ok(vec![]));
        assert_eq!(
            parse_origins(["https://a.example:443 http://b.example:80 https://c.example:8443"]),
            Ok(vec![
                "https://a.example".to_owned(),
                "http://b.example".to_owned(),
                "https://c.example:8443".to_owned()
            ])
        );
        assert_eq!(
            parse_origins(["http://[::1]:8080 http://[::1]:8080"]),
            Ok(vec!["http://[::1]:8080".to_owned()])
        );
        for bad in [
            "*",
            "https://*.example.com",
            "null",
            "app.example.com",
            "ftp://app.example.com",
            "https://app.example.com/",
            "https://app.example.com/path",
            "https://user@app.example.com",
            "https://",
        ] {
            assert!(parse_origins([bad]).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn lockout_cors_and_pages_survive_the_printed_configuration() {
        let config = Config {
            lockout_threshold: 4,
            lockout_window: Duration::from_secs(120),
            lockout_cooldown: Duration::from_secs(5),
            audit_retention: Duration::from_secs(3600),
            cors_origins: vec!["https://a.example".into(), "https://b.example".into()],
            pages: false,
            ..Config::default()
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("printed.toml");
        std::fs::write(&path, config.to_toml_redacted()).unwrap();
        let read = Config::load(&ConfigArgs {
            config: Some(path),
            ..ConfigArgs::default()
        })
        .unwrap();
        assert_eq!(format!("{read:?}"), format!("{config:?}"));
    }

    #[test]
    fn cors_origins_and_pages_from_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.toml");
        std::fs::write(
            &path,
            "cors_origins = [\"https://a.example\", \"https://b.example\"]\npages = false\n",
        )
        .unwrap();
        let args = ConfigArgs {
            config: Some(path),
            ..ConfigArgs::default()
        };
        let c = Config::load(&args).unwrap();
        assert_eq!(c.cors_origins, ["https://a.example", "https://b.example"]);
        assert!(!c.pages);
        assert!(Config::default().pages && Config::default().cors_origins.is_empty());
    }

    #[test]
    fn unknown_file_keys_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.toml");
        std::fs::write(&path, "no_such_thing = 1\n").unwrap();
        let args = ConfigArgs {
            config: Some(path),
            ..ConfigArgs::default()
        };
        assert!(matches!(Config::load(&args), Err(ConfigError::Parse { .. })));
    }
}
