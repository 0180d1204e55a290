//! Tessera: an authentication token server. Short-lived access JWTs (EdDSA by default), opaque
//! refresh tokens rotated on every use with reuse detection, and per-device sessions.
//!
//! # Layout
//!
//! - [`config`]: settings from flags, `TESSERA_*` variables and an optional TOML file.
//! - [`cli`]: the administrative commands (`users`, `sessions`, `audit`, `alerts`, `keys`,
//!   `mail`, `config`, `check`, `migrate`).
//! - [`startup`]: builds the application (store, service, router) and runs it until shutdown:
//!   the accept loop and its connection limits, the maintenance tasks, the signals.
//! - [`http`]: routes, extractors and the one mapping of errors to problem+json.
//! - [`service`]: the auth flows; [`service::rotation`] is the refresh-token state machine,
//!   [`service::liveness`] the in-memory view of which sessions are live.
//! - [`store`]: one storage trait per aggregate, composed into `Store`, each with its SQLite
//!   (rusqlite) and PostgreSQL (sqlx) implementation side by side.
//! - [`tokens`]: signing keys and the key set that signs and strictly verifies access tokens
//!   (the JOSE wire rules are the `tessera-jws` crate's), the JWKS.
//! - [`crypto`]: password hashing, refresh-token secrets, sealing a successor token.
//! - [`domain`]: ids, timestamps, validated inputs and the clock.
//! - [`alerts`]: security alerts: the outbox, the signed webhook and its deliverer.
//! - [`mail`]: mail: message kinds, templates, the SMTP transport and the outbox deliverer.
//! - [`telemetry`]: logging setup.
//! - [`operator`]: `tessera check`, which validates configuration, database and keys.
//!
//! Requests flow `http -> service -> store`; `service` never sees HTTP types and `http`
//! never sees SQL.

pub mod alerts;
pub mod cli;
pub mod config;
pub mod crypto;
pub mod domain;
pub mod http;
pub mod mail;
pub mod operator;
pub mod service;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod tokens;
