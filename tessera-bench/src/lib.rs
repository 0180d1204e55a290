//! Benchmark tooling for Tessera: fill a database with many sessions, then drive load.
//!
//! # Layout
//!
//! - [`seed`]: bulk-creates users, sessions and each session's first refresh token straight
//!   into a migrated Tessera database (SQLite or PostgreSQL), and can write some of the
//!   seeded sessions' tokens to a file for a load run.
//! - [`load`]: a closed-loop HTTP/1.1 load generator (one keep-alive connection per worker,
//!   requests back to back) for the verify, refresh, login and mixed scenarios.
//! - [`client`]: the one-connection HTTP/1.1 client the load generator and tests use.
//! - [`report`]: latency histograms, error counts, and how a run is printed.
//!
//! The binary (`src/main.rs`) only parses the command line and calls into these.

pub mod client;
pub mod load;
pub mod report;
pub mod seed;

/// Every failure the tool reports; the binary prints it and exits non-zero.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("SQLite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("opening and migrating the database: {0}")]
    Store(#[from] tessera::store::StoreError),
    #[error("crypto: {0}")]
    Crypto(#[from] tessera::crypto::CryptoError),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("HTTP: {0}")]
    Http(String),
    #[error("setup failed: {0}")]
    Setup(String),
}

pub type BenchResult<T> = Result<T, BenchError>;

/// The password every seeded and every load-run user has.
pub const BENCH_PASSWORD: &str = "correct horse battery staple";
