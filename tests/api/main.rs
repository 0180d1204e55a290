//! Integration tests: the real server on a random port over a fresh database (SQLite, or
//! PostgreSQL with `TESSERA_TEST_BACKEND=postgres`), driven over HTTP. One test binary
//! (faster to link); one module per area.

#[path = "../support/authenticator.rs"]
mod authenticator;
mod helpers;
mod jose;
#[path = "../support/postgres.rs"]
mod postgres_support;
#[path = "../support/smtp.rs"]
mod smtp_support;

mod access_token;
mod admin_api;
mod admin_cli;
mod binary;
mod clock_skew;
mod concurrency;
mod config_binary;
mod cookies;
mod cors;
mod crash;
mod discovery;
mod email_flows;
mod errors;
mod expiry;
mod forwarded_for;
mod hashing_hangups;
mod hostile_connections;
mod import;
mod jwt_attacks;
mod key_rotation;
mod key_stages;
mod liveness;
mod lockout;
mod login;
mod logout;
mod logs;
mod mail;
mod me;
mod metrics;
mod mfa;
mod openapi;
mod operator;
mod pages;
mod passkeys;
mod password;
mod rate_limit_scale;
mod rate_limits;
mod refresh;
mod register;
mod restart;
mod reuse;
mod revocation_feed;
mod sessions;
mod signing_algs;
mod signing_keys_and_expiry;
mod slow_clients;
mod smoke;
mod upgrade;
mod user_data;
mod webhook;
