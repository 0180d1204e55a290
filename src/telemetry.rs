//! Logging: human-readable lines on standard error, filtered by `RUST_LOG`.
//! Standard output is kept for the one `listening on` line that scripts wait for.

use tracing_subscriber::EnvFilter;

pub fn init() {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,tower_http=warn"));
    // Err only if a subscriber is already set (tests); keeping that one is right.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
