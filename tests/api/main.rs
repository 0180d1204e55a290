//! Integration tests: the real server on a random port over a fresh SQLite file, driven over
//! HTTP. One test binary (faster to link); one module per area.

mod helpers;

mod smoke;
