//! Storage: one small trait per aggregate (users, sessions, revocations, lockout, audit,
//! keys, accounts, alerts, mail, email tokens, factors), composed into [`Store`], each implemented per database (SQLite
//! embedded, PostgreSQL for several instances) in a file of its own, side by side. The service
//! layer talks only to these traits; SQL lives in the implementations.
//!
//! Verbs: `find_*` read, `insert_*` create, `revoke_*` mark sessions dead, `delete_*` remove.

use std::sync::Arc;

use async_trait::async_trait;

use crate::crypto::{PasswordHashString, RefreshTokenHash, RefreshTokenKey};
use crate::domain::{Email, SessionId, Timestamp, UserId};
use crate::tokens::SigningKeyRecord;

mod accounts;
mod alerts;
mod audit;
mod email_tokens;
mod factors;
mod keys;
mod lockout;
mod mail;
mod passkeys;
pub mod postgres;
mod revocations;
mod sessions;
pub mod sqlite;
mod users;

pub use accounts::{AccountFilter, AccountStore, AuditFilter, StoredAuditEvent, UserAccount};
pub use alerts::{AlertStore, NewAlert, StoredAlert};
pub use audit::{AuditEvent, AuditStore};
pub use email_tokens::{EmailTokenKind, EmailTokenRecord, EmailTokenStore};
pub use factors::{FactorStore, MfaChallengeRecord, TotpFactor};
pub use keys::{AfterKeyRevocation, KeyRevocation, KeyStore};
pub use lockout::{FailureKey, LockoutStore, LoginFailures, LoginFailuresChange, NextLoginFailures};
pub use mail::{MailStore, NewMail, QueuedMail};
pub use passkeys::{CeremonyRecord, PasskeyRecord, PasskeyStore};
pub use revocations::{
    FeedRevocation, RevocationListener, RevocationNotice, RevocationStore, RevocationsSince,
};
pub use sessions::{CurrentRotation, FoundRefreshToken, IdleSweep, Rotation, SessionRecord, SessionStore};
pub use users::{UserRecord, UserStore};

#[derive(Clone, Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique constraint said no (e.g. the email is taken).
    #[error("conflict: {0}")]
    Conflict(&'static str),
    /// The database cannot be reached or timed out; callers answer 503.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("database error: {0}")]
    Database(String),
    #[error("migration failed: {0}")]
    Migration(String),
    #[error("unsupported database url: {0}")]
    UnsupportedUrl(String),
    /// An existing database was asked for and the SQLite file is not there (its path).
    #[error("no database at {0}")]
    Missing(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Everything the server keeps, one small trait per aggregate, each implemented per backend in
/// a file of its own (`sqlite/<aggregate>.rs`, `postgres/<aggregate>.rs`); this adds health.
#[async_trait]
pub trait Store:
    UserStore
    + SessionStore
    + RevocationStore
    + LockoutStore
    + AuditStore
    + KeyStore
    + AccountStore
    + AlertStore
    + MailStore
    + EmailTokenStore
    + PasskeyStore
    + FactorStore
    + Send
    + Sync
    + 'static
{
    /// Is the database answering?
    async fn ping(&self) -> StoreResult<()>;

    /// The database server's clock, when it is not this machine's (PostgreSQL: instances on
    /// several machines compare times they wrote, so they align their clocks to it). `None`:
    /// the database is on this machine (SQLite), whose clock is already the one to use.
    async fn database_time(&self) -> StoreResult<Option<Timestamp>> {
        Ok(None)
    }

    /// The connection pool's usage, for backends that have one (PostgreSQL). SQLite has none:
    /// reads open connections as they need them, and one writer thread does every write.
    fn pool_usage(&self) -> Option<PoolUsage> {
        None
    }
}

/// A connection pool's state at one moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolUsage {
    /// Connections open now, idle or not.
    pub open: u32,
    /// Connections lent out to a query now.
    pub in_use: u32,
    /// The most the pool will open.
    pub max: u32,
}

/// What `tessera check` reads of a database, without changing it.
#[derive(Debug)]
pub struct Inspection {
    /// False for a SQLite file that does not exist yet (`serve` or `migrate` creates it).
    pub exists: bool,
    /// Migrations applied.
    pub schema_version: i64,
    /// Migrations this release has.
    pub latest_schema_version: i64,
    pub signing_keys: Vec<SigningKeyRecord>,
}

/// Reads the schema version and signing keys of the database at `url`: nothing is created,
/// migrated or written.
pub async fn inspect(url: &str) -> StoreResult<Inspection> {
    if url.starts_with("sqlite:") {
        let url = url.to_owned();
        tokio::task::spawn_blocking(move || sqlite::inspect(&url))
            .await
            .map_err(|e| StoreError::Database(e.to_string()))?
    } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        postgres::inspect(url).await
    } else {
        Err(unsupported_url(url))
    }
}

/// Opens the store named by a database URL and applies its migrations.
pub async fn connect(url: &str, max_connections: u32) -> StoreResult<Arc<dyn Store>> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(
            sqlite::SqliteStore::connect(url, max_connections).await?,
        ))
    } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        Ok(Arc::new(
            postgres::PostgresStore::connect(url, max_connections).await?,
        ))
    } else {
        Err(unsupported_url(url))
    }
}

/// Opens an existing store, as the administration commands do: a SQLite file that is not
/// there is [`StoreError::Missing`], never created (a command run in the wrong directory must
/// not answer from a new, empty database).
pub async fn connect_existing(url: &str, max_connections: u32) -> StoreResult<Arc<dyn Store>> {
    if url.starts_with("sqlite:") {
        if let Some(path) = sqlite::missing_file(url)? {
            return Err(StoreError::Missing(path.display().to_string()));
        }
    }
    connect(url, max_connections).await
}

/// Names only the scheme: the rest of a URL may carry a password, and errors get logged.
fn unsupported_url(url: &str) -> StoreError {
    let scheme = url.split_once(':').map_or("(none)", |(scheme, _)| scheme);
    StoreError::UnsupportedUrl(format!("scheme {scheme:?} (sqlite: or postgres: expected)"))
}

/// Maps sqlx errors: connection trouble is `Unavailable` (503), the rest `Database` (500).
pub(crate) fn map_sqlx(e: sqlx::Error) -> StoreError {
    match e {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) | sqlx::Error::Tls(_) => {
            StoreError::Unavailable(e.to_string())
        }
        other => StoreError::Database(other.to_string()),
    }
}

fn parse_roles(json: &str) -> Vec<String> {
    serde_json::from_str(json).unwrap_or_default()
}

fn roles_json(roles: &[String]) -> String {
    serde_json::to_string(roles).unwrap_or_else(|_| "[]".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_unsupported_url_is_refused_without_echoing_its_credentials() {
        let Err(e) = connect("mysql://admin:hunter2@db.example/app", 1).await else {
            panic!("a mysql URL must be refused");
        };
        let said = e.to_string();
        assert!(said.contains("\"mysql\""), "{said}");
        assert!(!said.contains("hunter2"), "{said}");
    }
}
