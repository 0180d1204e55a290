//! Configuration: command-line flags beat `TESSERA_*` environment variables, which beat an
//! optional TOML file, which beats the defaults of the contract.
//!
//! Each setting is written once, in the `settings!` list below: its help, variable, type and
//! default. From it come the resolved [`Config`], the all-optional [`Layer`] that clap (flags
//! and variables) and the file fill alike, the merge, `Debug` and `tessera config`; how a
//! value is read and shown (secrets redacted) follows from its type (`setting.rs`). Checks
//! that bound a value beyond its type are in `validate.rs`.

#[macro_use]
mod layer;
mod modes;
mod secret;
mod setting;
mod smtp;
mod toml_out;
mod validate;
mod values;
mod webauthn;

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;

use crate::crypto::master_key::{MasterKey, MasterKeys};
pub use crate::tokens::SigningAlg;
pub use modes::{AccessLog, LogFormat, SessionCheck};
pub use secret::Secret;
use setting::{AdminCredentials, BaseUrl, ClaimNames, DatabaseUrl, Events, Origins, RoleNames, WebhookUrl};
pub use smtp::{SmtpSecurity, SmtpUrl};
pub use values::{
    format_duration, parse_duration, parse_origins, redact_url, redact_webhook_url, MIN_FEED_CREDENTIAL_LEN,
};
pub use webauthn::{Passkeys, RelyingParty};

// In the order of `--help`, `Debug` and `tessera config`. A new setting is one entry here
// (the TOML key is its name, the flag its name with `-`), plus a check in `validate.rs` if
// its type does not bound it enough.
settings! {
    /// Address to listen on; port 0 picks a free port.
    #[arg(env = "TESSERA_LISTEN")]
    listen: String = "127.0.0.1:8080".into();
    /// `sqlite://PATH` (relative), `sqlite:///ABS/PATH` or `postgres://...`.
    #[arg(env = "TESSERA_DATABASE_URL")]
    database_url: String as DatabaseUrl = "sqlite://tessera.db".into();
    /// Size of the database connection pool.
    #[arg(env = "TESSERA_DATABASE_MAX_CONNECTIONS")]
    database_max_connections: u32 = 16;
    /// `iss` of access tokens (default: the public URL, else `http://` and the listen
    /// address, so `--listen 127.0.0.1:8181` alone gives a consistent issuer).
    #[arg(env = "TESSERA_ISSUER")]
    issuer: String = "http://127.0.0.1:8080".into();
    /// `aud` of access tokens.
    #[arg(env = "TESSERA_AUDIENCE")]
    audience: String = "tessera".into();
    /// Access token lifetime (seconds, or `15m`, `1h`...).
    #[arg(env = "TESSERA_ACCESS_TTL")]
    access_ttl: Duration = Duration::from_secs(15 * 60);
    /// Refresh token lifetime, sliding on each rotation.
    #[arg(env = "TESSERA_REFRESH_TTL")]
    refresh_ttl: Duration = Duration::from_secs(30 * 86_400);
    /// Absolute session lifetime.
    #[arg(env = "TESSERA_SESSION_TTL")]
    session_ttl: Duration = Duration::from_secs(90 * 86_400);
    /// Grace window in which the immediate predecessor of a refresh token is forgiven.
    #[arg(env = "TESSERA_REUSE_GRACE")]
    reuse_grace: Duration = Duration::from_secs(10);
    /// Live sessions per user; the least recently used is revoked beyond it.
    #[arg(env = "TESSERA_MAX_SESSIONS")]
    max_sessions: u32 = 10;
    /// Login attempts per minute per client IP (0 = unlimited).
    #[arg(env = "TESSERA_LOGIN_RATE")]
    login_rate: u32 = 30;
    /// Refreshes per minute per client IP (0 = unlimited).
    #[arg(env = "TESSERA_REFRESH_RATE")]
    refresh_rate: u32 = 120;
    /// `Secure` attribute on cookies (`true`/`false`).
    #[arg(env = "TESSERA_COOKIE_SECURE")]
    cookie_secure: bool = true;
    /// Where security alerts are POSTed.
    #[arg(env = "TESSERA_ALERT_WEBHOOK_URL")]
    alert_webhook_url: Option<String> as WebhookUrl = None;
    /// HMAC-SHA256 key for the alert signature header.
    #[arg(env = "TESSERA_ALERT_WEBHOOK_SECRET", hide_env_values = true)]
    alert_webhook_secret: Option<Secret> = None;
    /// Take the client IP from the rightmost `X-Forwarded-For` address.
    #[arg(env = "TESSERA_TRUST_PROXY_HEADERS")]
    trust_proxy_headers: bool = false;
    /// Largest accepted request body in bytes.
    #[arg(env = "TESSERA_BODY_LIMIT")]
    body_limit: usize = 64 * 1024;
    // Also how long an idle keep-alive connection stays open.
    /// How long a client may take to send a request's headers, and then its body.
    #[arg(env = "TESSERA_CLIENT_TIMEOUT")]
    client_timeout: Duration = Duration::from_secs(10);
    /// `cached` (session liveness from memory, kept exact by revocation notices) or `strict`
    /// (a database read on every authenticated request).
    #[arg(env = "TESSERA_SESSION_CHECK")]
    session_check: SessionCheck = SessionCheck::Cached;
    // New connections beyond it are closed at once; capped further below the process's
    // open-file limit at start.
    /// Open connections in total (kept below the open-file limit).
    #[arg(env = "TESSERA_MAX_CONNECTIONS")]
    max_connections: usize = 10_000;
    /// Open connections per client address (0 = no per-address cap).
    #[arg(env = "TESSERA_MAX_CONNECTIONS_PER_IP")]
    max_connections_per_ip: usize = 256;
    // Each holds 19 MiB and a hashing thread.
    /// Password hashes running at once (default: twice the CPU count).
    #[arg(env = "TESSERA_HASH_CONCURRENCY")]
    hash_concurrency: usize = std::thread::available_parallelism().map_or(2, |n| n.get() * 2);
    /// Log lines on standard error: `text` or `json` (one object per line).
    #[arg(env = "TESSERA_LOG_FORMAT")]
    log_format: LogFormat = LogFormat::Text;
    /// Which requests get an access line: `failures` (answered 4xx or 5xx) or `all`.
    #[arg(env = "TESSERA_ACCESS_LOG")]
    access_log: AccessLog = AccessLog::Failures;
    // A change rotates the key at start.
    /// Access-token signing algorithm: `EdDSA` (default), `Ed25519`, `ES256` or `RS256`.
    #[arg(env = "TESSERA_SIGNING_ALG")]
    signing_alg: SigningAlg = SigningAlg::EdDSA;
    // Longer than the JWKS max-age plus the key reload interval (two minutes) by a wide
    // margin: some verifier libraries cache a JWKS for up to ten minutes whatever its max-age
    // says.
    /// How long `tessera keys rotate` publishes a new key before it signs (default 15m; at
    /// least the JWKS max-age plus the key reload interval, 2m).
    #[arg(env = "TESSERA_KEY_PUBLISH_AHEAD")]
    key_publish_ahead: Duration = Duration::from_secs(15 * 60);
    /// Failed logins of one account within the lockout window that lock it (0 = never).
    #[arg(env = "TESSERA_LOCKOUT_THRESHOLD")]
    lockout_threshold: u32 = 10;
    /// The window in which an account's failed logins are counted.
    #[arg(env = "TESSERA_LOCKOUT_WINDOW")]
    lockout_window: Duration = Duration::from_secs(15 * 60);
    /// The first lock's length; each further lock in a row doubles it (at most 64 times).
    #[arg(env = "TESSERA_LOCKOUT_COOLDOWN")]
    lockout_cooldown: Duration = Duration::from_secs(60);
    // `scheme://host[:port]`, lower-cased, as browsers send `Origin`; credentials allowed.
    /// Comma-separated origins allowed to call the API from a browser (CORS), e.g.
    /// `https://app.example.com,http://localhost:5173`; none by default.
    #[arg(env = "TESSERA_CORS_ORIGINS")]
    cors_origins: Vec<String> as Origins = Vec::new();
    /// Serve the built-in pages: `/`, `/docs`, `/login` and `/account` (`true`/`false`).
    #[arg(env = "TESSERA_PAGES")]
    pages: bool = true;
    /// Where `/login?return_to=URL` may send a user after signing in, besides this server's
    /// own pages: comma-separated origins (`https://app.example.com`); none by default.
    #[arg(env = "TESSERA_RETURN_TO_ORIGINS")]
    return_to_origins: Vec<String> as Origins = Vec::new();
    /// A logo for the built-in pages: an `https://` URL (its origin is allowed by their CSP).
    #[arg(env = "TESSERA_LOGO_URL")]
    logo_url: Option<String> as BaseUrl = None;
    /// The accent colour of the built-in pages, `#rgb` or `#rrggbb`.
    #[arg(env = "TESSERA_ACCENT_COLOR")]
    accent_color: Option<String> = None;
    // Empty: every one. All are audited anyway.
    /// Security events to send to the webhook, comma-separated (default: all).
    #[arg(env = "TESSERA_ALERT_EVENTS")]
    alert_events: Vec<String> as Events = Vec::new();
    /// How long audit events are kept (0 = forever).
    #[arg(env = "TESSERA_AUDIT_RETENTION")]
    audit_retention: Duration = Duration::from_secs(90 * 86_400);
    /// The wait before an undelivered alert's first retry; it doubles after each failure.
    #[arg(env = "TESSERA_ALERT_RETRY_MIN")]
    alert_retry_min: Duration = Duration::from_secs(1);
    /// The longest wait between attempts to deliver an alert.
    #[arg(env = "TESSERA_ALERT_RETRY_MAX")]
    alert_retry_max: Duration = Duration::from_secs(600);
    /// How long delivered alerts stay in the outbox (0 = forever).
    #[arg(env = "TESSERA_ALERT_RETENTION")]
    alert_retention: Duration = Duration::from_secs(7 * 86_400);
    // Defaults to the issuer, which is the server's address for resource servers too.
    /// The server's public base URL (`https://auth.example.com`): links in mails point at its
    /// pages (default: the issuer).
    #[arg(env = "TESSERA_PUBLIC_URL")]
    public_url: Option<String> as BaseUrl = None;
    /// Where mail goes: `smtp://user:pass@host:587` (STARTTLS, required), `smtps://...`
    /// (implicit TLS) or `smtp://localhost:1025?tls=none` (a development server). Unset: mails
    /// are written to the log instead (development).
    #[arg(env = "TESSERA_SMTP_URL", hide_env_values = true)]
    smtp_url: Option<SmtpUrl> = None;
    /// A PEM file of certificates to trust for the SMTP server's TLS, besides the public roots
    /// (a private CA, or a self-signed server certificate).
    #[arg(env = "TESSERA_SMTP_CA_FILE")]
    smtp_ca_file: Option<PathBuf> = None;
    /// The `From` of mails: `no-reply@example.com` or `Example <no-reply@example.com>`
    /// (required with an SMTP server).
    #[arg(env = "TESSERA_MAIL_FROM")]
    mail_from: Option<String> = None;
    /// A directory whose `<kind>.txt` / `<kind>.html` files replace the built-in mail
    /// templates of the same name.
    #[arg(env = "TESSERA_MAIL_TEMPLATES")]
    mail_templates: Option<PathBuf> = None;
    /// The product name mails and the built-in pages speak of (default: the public URL's host
    /// in mails, "Tessera" on the pages).
    #[arg(env = "TESSERA_PRODUCT_NAME")]
    product_name: Option<String> = None;
    /// A mail not delivered within this long of being queued is given up (and logged).
    #[arg(env = "TESSERA_MAIL_GIVE_UP_AFTER")]
    mail_give_up_after: Duration = Duration::from_secs(86_400);
    /// Refuse sign-in until the account's address is verified (`true`/`false`); registration
    /// then answers alike whether or not the address has an account.
    #[arg(env = "TESSERA_REQUIRE_VERIFIED_EMAIL")]
    require_verified_email: bool = false;
    /// How long a mailed verification (or email change) link works.
    #[arg(env = "TESSERA_EMAIL_VERIFY_TTL")]
    email_verify_ttl: Duration = Duration::from_secs(86_400);
    /// How long a mailed password reset link works.
    #[arg(env = "TESSERA_PASSWORD_RESET_TTL")]
    password_reset_ttl: Duration = Duration::from_secs(30 * 60);
    /// Sign-in by a link mailed to the account's address (`true`/`false`).
    #[arg(env = "TESSERA_EMAIL_LINK_SIGNIN")]
    email_link_signin: bool = false;
    /// How long a mailed sign-in link works.
    #[arg(env = "TESSERA_EMAIL_LINK_TTL")]
    email_link_ttl: Duration = Duration::from_secs(15 * 60);
    /// How recent a sign-in (or `POST /v1/auth/reauthenticate`) must be for sensitive changes:
    /// the password, the email address, the second factors.
    #[arg(env = "TESSERA_REAUTHENTICATION_MAX_AGE")]
    reauthentication_max_age: Duration = Duration::from_secs(10 * 60);
    // Enforced where roles take effect: access tokens carry these roles, and the admin API
    // honours them, only for sessions signed in with a second factor.
    /// Comma-separated roles that need a second factor, e.g. `admin`: a session of an account
    /// holding one that was not signed in with a second factor gets tokens without those roles
    /// (its holder can still sign in, enrol a factor and reauthenticate with it). None by default.
    #[arg(env = "TESSERA_MFA_REQUIRED_ROLES")]
    mfa_required_roles: Vec<String> as RoleNames = Vec::new();
    /// Comma-separated bearer credentials (each at least 32 characters) that resource servers
    /// present to read the revocation feed, `GET /v1/revocations`; the feed is off without one.
    #[arg(env = "TESSERA_REVOCATION_FEED_CREDENTIALS", hide_env_values = true)]
    revocation_feed_credentials: Vec<Secret> = Vec::new();
    /// The role whose access tokens may call the admin API, `/v1/admin/`.
    #[arg(env = "TESSERA_ADMIN_ROLE")]
    admin_role: String = "admin".into();
    /// Comma-separated back-office credentials for the admin API, each `NAME:SCOPE:SECRET`
    /// with the scope `admin:read` or `admin:write` and a secret of at least 32 characters
    /// (only its SHA-256 is kept in memory), presented as a bearer token.
    #[arg(env = "TESSERA_ADMIN_CREDENTIALS", hide_env_values = true)]
    admin_credentials: Vec<Secret> as AdminCredentials = Vec::new();
    /// Admin API requests per minute per client IP (0 = unlimited).
    #[arg(env = "TESSERA_ADMIN_RATE")]
    admin_rate: u32 = 300;
    /// Comma-separated `app_metadata` keys copied into access tokens as claims of the same
    /// name (e.g. `tenant_id`); standard claim names are refused.
    #[arg(env = "TESSERA_CUSTOM_CLAIMS")]
    custom_claims: Vec<String> as ClaimNames = Vec::new();
    /// Serve the built-in `/admin` page (`true`/`false`; with the other pages on).
    #[arg(env = "TESSERA_ADMIN_PAGE")]
    admin_page: bool = false;
    /// The WebAuthn relying party id of passkeys: a domain (`example.com`, or `localhost` in
    /// development), never an IP address (default: the public URL's host).
    #[arg(env = "TESSERA_WEBAUTHN_RP_ID")]
    webauthn_rp_id: Option<String> = None;
    /// Comma-separated origins whose passkey ceremonies count, each on the relying party id
    /// or a subdomain, `https://` (`http://` on localhost) (default: the public URL's origin).
    #[arg(env = "TESSERA_WEBAUTHN_ORIGINS")]
    webauthn_origins: Vec<String> as Origins = Vec::new();
    /// Seals private signing keys at rest: 32 random bytes in standard base64
    /// (`openssl rand -base64 32`). Unset: keys are stored in clear (a warning at start).
    #[arg(env = "TESSERA_MASTER_KEY", hide_env_values = true)]
    master_key: Option<MasterKey> = None;
    /// The master key being replaced, while `tessera keys encrypt` re-seals under the new one.
    #[arg(env = "TESSERA_MASTER_KEY_PREVIOUS", hide_env_values = true)]
    master_key_previous: Option<MasterKey> = None;
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

/// The command line's part: the file to read, and the settings as flags (each also read from
/// its `TESSERA_*` variable by clap).
#[derive(Args, Clone, Default)]
pub struct ConfigArgs {
    /// Optional TOML file with any of the settings below (keys as the flag names, `_` for `-`).
    #[arg(long, env = "TESSERA_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub settings: Layer,
}

impl Config {
    /// Flags and variables (already merged by clap) over the file over the defaults, parsed
    /// and checked.
    pub fn load(args: &ConfigArgs) -> Result<Config, ConfigError> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => Layer::default(),
        };
        let merged = args.settings.clone().or(file);
        let issuer_given = merged.issuer.is_some();
        let mut config = merged.resolve()?;
        if !issuer_given {
            if let Some(derived) = config.derived_issuer() {
                config.issuer = derived;
            }
        }
        config.validate()?;
        Ok(config)
    }

    /// The issuer when none is configured: the public URL, or else the address this server
    /// listens on as a client on this machine reaches it (`0.0.0.0` is `127.0.0.1`). `None`
    /// for port 0, whose port is known only once bound: the default stays, and the start
    /// warns (see [`Config::issuer_mismatch`]).
    fn derived_issuer(&self) -> Option<String> {
        if let Some(public) = &self.public_url {
            return Some(public.trim_end_matches('/').to_owned());
        }
        let addr: std::net::SocketAddr = self.listen_addr().parse().ok()?;
        if addr.port() == 0 {
            return None;
        }
        let host = match addr.ip() {
            std::net::IpAddr::V4(ip) if ip.is_unspecified() => "127.0.0.1".to_owned(),
            std::net::IpAddr::V6(ip) if ip.is_unspecified() => "[::1]".to_owned(),
            std::net::IpAddr::V4(ip) => ip.to_string(),
            std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        };
        Some(format!("http://{host}:{}", addr.port()))
    }

    /// Why the issuer cannot be this server as bound at `bound`: it names this machine
    /// (`localhost`, a loopback address) on another port. An issuer naming another host is
    /// taken to be a proxy in front, and is not second-guessed.
    pub fn issuer_mismatch(&self, bound: std::net::SocketAddr) -> Option<String> {
        let url = reqwest::Url::parse(&self.issuer).ok()?;
        let host = url.host_str()?;
        let local = host.eq_ignore_ascii_case("localhost")
            || host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        let port = url.port_or_known_default()?;
        (local && port != bound.port()).then(|| {
            format!(
                "the issuer {} names this machine on port {port}, but the server listens on {bound}: \
                 discovery and tokens point elsewhere (set TESSERA_PUBLIC_URL or TESSERA_ISSUER)",
                self.issuer
            )
        })
    }

    /// The master keys the service seals and opens private signing keys with.
    pub fn master_keys(&self) -> MasterKeys {
        MasterKeys {
            current: self.master_key.clone(),
            previous: self.master_key_previous.clone(),
        }
    }

    /// The base of links in mails: `public_url`, else the issuer (without a trailing `/`).
    pub fn public_url(&self) -> &str {
        self.public_url
            .as_deref()
            .unwrap_or(&self.issuer)
            .trim_end_matches('/')
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

/// The TOML file as a layer: its keys are the settings' names.
fn read_file(path: &Path) -> Result<Layer, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    toml::from_str(&text).map_err(|e: toml::de::Error| ConfigError::Parse {
        path: path.to_owned(),
        // One more than the newlines before the error: counting `lines()` instead was one
        // short when the error starts a line (an unknown key).
        line: e.span().map_or(0, |span| {
            let before = &text.as_bytes()[..span.start.min(text.len())];
            before.iter().filter(|&&b| b == b'\n').count() + 1
        }),
        message: e.message().to_owned(),
    })
}

#[cfg(test)]
mod tests;
