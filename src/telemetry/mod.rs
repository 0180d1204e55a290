//! Logging: lines on standard error, as text or one JSON object per line, filtered by
//! `RUST_LOG`. Standard output is kept for the one `listening on` line that scripts wait for.
//!
//! Every request is logged once, when its response is ready, by [`crate::http::request_log`]
//! (target `tessera::access`, level `info`). Nothing logged anywhere carries a request body,
//! a header value other than the request id, or a token: secrets never reach this layer.

use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::Thread;

use tracing::Subscriber;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

mod request_lines;

use request_lines::RequestLines;
pub use request_lines::{with_request_id, WithRequestId, ACCESS_TARGET};

/// The filter when `RUST_LOG` is unset: our events from `info` up, chatty dependencies quieter.
const DEFAULT_FILTER: &str = "info,sqlx=warn";

pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    // Colour codes only for a person at a terminal: in a file or a collector they are noise
    // that breaks searching and parsing.
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    // Err only if a subscriber is already set (tests); keeping that one is right.
    let _ = subscriber(format, filter, ansi, StderrBatch::start()).try_init();
}

/// Writes out every log line still held (see [`StderrBatch`]): before the process prints
/// anything to standard error by itself, and before it exits.
pub fn flush() {
    if let Some(batch) = BATCH.get() {
        batch.write_out();
    }
}

/// Log lines bound for standard error, written out by a thread of their own: a request
/// appends its line to a buffer (a lock and a copy) instead of making a `write(2)` of its
/// own, and under load one write carries the lines of a few milliseconds. The thread wakes as
/// soon as a line arrives after a quiet spell, so lines are not held back when there is no
/// load.
#[derive(Clone)]
pub struct StderrBatch(Arc<Batch>);

pub struct Batch {
    lines: Mutex<Lines>,
    writer: OnceLock<Thread>,
}

#[derive(Default)]
struct Lines {
    bytes: Vec<u8>,
    /// Lines refused while the buffer was full (standard error not being read).
    dropped: u64,
}

/// How long the writer lets lines gather after a write: the most a line waits, under load.
const GATHER: std::time::Duration = std::time::Duration::from_millis(5);

/// Bytes held at most: a standard error nobody reads must not grow memory without bound
/// (lines beyond it are counted and the count written when it drains).
const MAX_HELD: usize = 8 << 20;

static BATCH: OnceLock<Arc<Batch>> = OnceLock::new();

impl StderrBatch {
    /// The process's batch and its writer thread (started once).
    pub fn start() -> StderrBatch {
        let batch = BATCH.get_or_init(|| {
            let batch = Arc::new(Batch {
                lines: Mutex::new(Lines::default()),
                writer: OnceLock::new(),
            });
            let for_thread = Arc::clone(&batch);
            let spawned = std::thread::Builder::new()
                .name("log-writer".into())
                .spawn(move || loop {
                    std::thread::park();
                    for_thread.write_out();
                    // Lines arriving meanwhile gather for the next write: without this pause
                    // nearly every line under load would wake the thread (a system call).
                    std::thread::sleep(GATHER);
                });
            if let Ok(handle) = spawned {
                let _ = batch.writer.set(handle.thread().clone());
            }
            batch
        });
        StderrBatch(Arc::clone(batch))
    }
}

impl Batch {
    fn append(&self, line: &[u8]) {
        let was_empty = {
            let mut lines = self.lines.lock().unwrap_or_else(|p| p.into_inner());
            let was_empty = lines.bytes.is_empty();
            if lines.bytes.len() + line.len() > MAX_HELD {
                lines.dropped += 1;
                return;
            }
            lines.bytes.extend_from_slice(line);
            was_empty
        };
        match self.writer.get() {
            // The writer is busy with earlier lines unless the buffer was empty: it takes
            // these with the next batch, without being woken.
            Some(writer) if was_empty => writer.unpark(),
            Some(_) => {}
            // No thread could be started: write here, as an unbuffered writer would.
            None => self.write_out(),
        }
    }

    /// Writes every line held, in order, until none is left.
    fn write_out(&self) {
        let mut stderr = std::io::stderr().lock();
        loop {
            let (bytes, dropped) = {
                let mut lines = self.lines.lock().unwrap_or_else(|p| p.into_inner());
                (
                    std::mem::take(&mut lines.bytes),
                    std::mem::take(&mut lines.dropped),
                )
            };
            if bytes.is_empty() && dropped == 0 {
                return;
            }
            // Nowhere left to report a failing standard error: the lines are lost.
            let _ = stderr.write_all(&bytes);
            if dropped > 0 {
                let _ = writeln!(
                    stderr,
                    "tessera: {dropped} log line(s) dropped: standard error was not being read"
                );
            }
            let _ = stderr.flush();
        }
    }
}

/// One event's line on its way into the batch (the formatter writes it whole, once).
pub struct BatchLine<'a>(&'a Batch);

impl Write for BatchLine<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.append(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for StderrBatch {
    type Writer = BatchLine<'a>;

    fn make_writer(&'a self) -> BatchLine<'a> {
        BatchLine(&self.0)
    }
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
        LogFormat::Text => Box::new(builder.map_event_format(RequestLines::text).finish()),
        LogFormat::Json => Box::new(
            builder
                .json()
                // Fields at the top level (`"route": ...`, not `"fields": {"route": ...}`).
                .flatten_event(true)
                .with_current_span(false)
                .with_span_list(false)
                .map_event_format(RequestLines::json)
                .finish(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_held_whole_in_order_and_bounded() {
        let batch = Batch {
            lines: Mutex::new(Lines::default()),
            writer: OnceLock::new(),
        };
        // With no writer thread, each line is written out at once (here: to the test's
        // standard error), leaving nothing held.
        batch.append(b"first\n");
        assert!(batch.lines.lock().unwrap().bytes.is_empty());

        // With a writer thread (this one, never woken here), lines wait in order.
        let _ = batch.writer.set(std::thread::current());
        batch.append(b"one\n");
        batch.append(b"two\n");
        assert_eq!(batch.lines.lock().unwrap().bytes, b"one\ntwo\n");
        let big = vec![b'x'; MAX_HELD];
        batch.append(&big);
        let held = batch.lines.lock().unwrap();
        assert_eq!(
            (held.bytes.len(), held.dropped),
            (8, 1),
            "a line over the bound is dropped and counted"
        );
    }
}
