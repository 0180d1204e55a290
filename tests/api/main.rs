//! Integration tests: the real server on a random port over a fresh SQLite file, driven over
//! HTTP. One test binary (faster to link); one module per area.

mod helpers;
mod jose;

mod access_token;
mod binary;
mod concurrency;
mod errors;
mod expiry;
mod jwt_attacks;
mod login;
mod logout;
mod me;
mod refresh;
mod register;
mod restart;
mod reuse;
mod sessions;
mod smoke;
