//! Logging: lines on standard error, as text or one JSON object per line, filtered by
//! `RUST_LOG`. Standard output is kept for the one `listening on` line that scripts wait for.
//!
//! Every request is logged once, when its response is ready, by [`crate::http::request_log`]
//! (target `tessera::access`, level `info`). Nothing logged anywhere carries a request body,
//! a header value other than the request id, or a token: secrets never reach this layer.

use std::io::IsTerminal;

use tracing::Subscriber;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// The filter when `RUST_LOG` is unset: our events from `info` up, chatty dependencies quieter.
const DEFAULT_FILTER: &str = "info,sqlx=warn,tower_http=warn";

pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    // Colour codes only for a person at a terminal: in a file or a collector they are noise
    // that breaks searching and parsing.
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    // Err only if a subscriber is already set (tests); keeping that one is right.
    let _ = subscriber(format, filter, ansi, std::io::stderr).try_init();
}

/// The subscriber [`init`] installs, writing to `writer` (tests measure it on a sink).
pub fn subscriber<W>(
    format: LogFormat,
    filter: EnvFilter,
    ansi: bool,
    writer: W,
) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(ansi);
    match format {
        LogFormat::Text => Box::new(builder.finish()),
        LogFormat::Json => Box::new(
            builder
                .json()
                // Fields at the top level (`"route": ...`, not `"fields": {"route": ...}`), and
                // the enclosing request span (its `request_id`) on events logged inside it.
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(false)
                .finish(),
        ),
    }
}
