//! The request's part in logging, at a cost per request that does not show in a profile.
//!
//! - The request id travels with the request as a task-local value, not a span: a span costs an
//!   allocation, a registry entry and a subscriber call on every poll, for the rare request that
//!   logs anything besides its access line. Events logged while a request runs (a database error,
//!   say) get its id as a `request_id` field, as its access line has.
//! - The access line (target [`ACCESS_TARGET`]) is written here, field by field straight into
//!   the line, in the same shape tracing's own text and JSON formatters give it (they collect
//!   and re-format every field and the timestamp per event). Every other event goes to them.

use std::cell::RefCell;
use std::fmt;
use std::future::Future;

use tokio::task::futures::TaskLocalFuture;

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The target of the one line per request (`http::request_log`).
pub const ACCESS_TARGET: &str = "tessera::access";

/// Request ids are 1 to 128 characters (`http::request_log` replaces any other).
const MAX_ID: usize = 128;

/// A request id, held inline: setting it costs no allocation.
#[derive(Clone, Copy)]
pub struct RequestId {
    len: u8,
    bytes: [u8; MAX_ID],
}

impl RequestId {
    fn new(id: &str) -> RequestId {
        let mut bytes = [0; MAX_ID];
        // Ids are ASCII, so a cut (never needed for a sane id) cannot split a character.
        let len = id.len().min(MAX_ID);
        bytes[..len].copy_from_slice(&id.as_bytes()[..len]);
        RequestId {
            len: len as u8,
            bytes,
        }
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or("")
    }
}

tokio::task_local! {
    static REQUEST_ID: RequestId;
}

/// `request` with `id` as the request id of every event it logs.
pub type WithRequestId<F> = TaskLocalFuture<RequestId, F>;

/// Runs `request` with `id` as the request id of every event it logs.
pub fn with_request_id<F: Future>(id: &str, request: F) -> WithRequestId<F> {
    REQUEST_ID.scope(RequestId::new(id), request)
}

/// The event formatter: access lines written here, every other event by `inner` (tracing's
/// text or JSON format) with the running request's id added.
pub struct RequestLines<F> {
    inner: F,
    json: bool,
}

impl<F> RequestLines<F> {
    pub fn text(inner: F) -> RequestLines<F> {
        RequestLines { inner, json: false }
    }

    pub fn json(inner: F) -> RequestLines<F> {
        RequestLines { inner, json: true }
    }
}

impl<S, N, F> FormatEvent<S, N> for RequestLines<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        // A terminal gets tracing's coloured line; files and collectors get the fast one.
        if event.metadata().target() == ACCESS_TARGET && !writer.has_ansi_escapes() {
            return access_line(&mut writer, event, self.json);
        }
        let Ok(id) = REQUEST_ID.try_with(|id| *id) else {
            return self.inner.format_event(ctx, writer, event);
        };
        // Rare (a request that logs more than its access line): formatted aside, then the id
        // goes in as one more field.
        let mut line = String::new();
        self.inner.format_event(ctx, Writer::new(&mut line), event)?;
        let line = line.trim_end_matches('\n');
        match line.strip_suffix('}') {
            Some(object) if self.json => {
                writer.write_str(object)?;
                writer.write_str(",\"request_id\":")?;
                json_str(&mut writer, id.as_str())?;
                writer.write_str("}\n")
            }
            _ => {
                writer.write_str(line)?;
                writer.write_str(" request_id=")?;
                text_str(&mut writer, id.as_str())?;
                writer.write_char('\n')
            }
        }
    }
}

/// `2026-12-05T02:34:33.847985Z  INFO tessera::access: request method="GET" route="/v1/auth/me"
/// status=200 latency_ms=0.41 request_id="…"`, or the same as one JSON object with the keys in
/// the order tracing's JSON format gives them.
fn access_line(writer: &mut Writer<'_>, event: &Event<'_>, json: bool) -> fmt::Result {
    if json {
        writer.write_str("{\"timestamp\":\"")?;
        timestamp(writer)?;
        writer.write_str("\",\"level\":\"INFO\"")?;
    } else {
        timestamp(writer)?;
        writer.write_str("  INFO ")?;
        writer.write_str(ACCESS_TARGET)?;
        writer.write_char(':')?;
    }
    let mut fields = Fields {
        writer,
        json,
        result: Ok(()),
    };
    event.record(&mut fields);
    fields.result?;
    if json {
        writer.write_str(",\"target\":\"")?;
        writer.write_str(ACCESS_TARGET)?;
        writer.write_str("\"}\n")
    } else {
        writer.write_char('\n')
    }
}

/// Writes each field as it is visited.
struct Fields<'a, 'w> {
    writer: &'a mut Writer<'w>,
    json: bool,
    result: fmt::Result,
}

impl Fields<'_, '_> {
    fn key(&mut self, field: &Field) -> fmt::Result {
        if self.json {
            self.writer.write_str(",\"")?;
            self.writer.write_str(field.name())?;
            self.writer.write_str("\":")
        } else if field.name() == "message" {
            self.writer.write_char(' ')
        } else {
            self.writer.write_char(' ')?;
            self.writer.write_str(field.name())?;
            self.writer.write_char('=')
        }
    }

    fn value(&mut self, field: &Field, write: impl FnOnce(&mut Writer<'_>, bool) -> fmt::Result) {
        if self.result.is_ok() {
            self.result = self.key(field).and_then(|()| write(self.writer, self.json));
        }
    }
}

impl Visit for Fields<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        let bare = !self.json && field.name() == "message";
        self.value(field, |w, json| match (json, bare) {
            (true, _) => json_str(w, value),
            (false, true) => w.write_str(value),
            (false, false) => text_str(w, value),
        });
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.value(field, |w, _| write!(w, "{value}"));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.value(field, |w, _| write!(w, "{value}"));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.value(field, |w, _| thousandths(w, value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.value(field, |w, _| write!(w, "{value}"));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let text = format!("{value:?}");
        self.record_str(field, &text);
    }
}

/// A number to three decimals (`latency_ms=0.412`), in integer arithmetic: the shortest exact
/// form of a float (what `{}` writes) cost more than the rest of the line.
fn thousandths(w: &mut Writer<'_>, value: f64) -> fmt::Result {
    if value.is_finite() && (0.0..1e15).contains(&value) {
        // In range, so the cast is exact enough and cannot overflow.
        let thousandths = (value * 1000.0).round() as u64;
        write!(w, "{}.{:03}", thousandths / 1000, thousandths % 1000)
    } else {
        write!(w, "{value}")
    }
}

/// Characters that go into a quoted value as they are, in text and in JSON.
fn plain(value: &str) -> bool {
    value
        .bytes()
        .all(|b| (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\')
}

/// A quoted text value, escaped as tracing's text format escapes it (`Debug`).
fn text_str(w: &mut Writer<'_>, value: &str) -> fmt::Result {
    if plain(value) {
        w.write_char('"')?;
        w.write_str(value)?;
        w.write_char('"')
    } else {
        write!(w, "{value:?}")
    }
}

/// A JSON string.
fn json_str(w: &mut Writer<'_>, value: &str) -> fmt::Result {
    if plain(value) {
        w.write_char('"')?;
        w.write_str(value)?;
        w.write_char('"')
    } else {
        w.write_str(&serde_json::Value::from(value).to_string())
    }
}

/// Now as `2026-12-05T02:34:33.847985Z` (UTC, microseconds, as tracing writes it). The date
/// and time to the second are formatted once a second per thread.
fn timestamp(w: &mut Writer<'_>) -> fmt::Result {
    thread_local! {
        static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let (secs, micros) = (since_epoch.as_secs(), since_epoch.subsec_micros());
    SECOND.with(|second| {
        let mut second = second.borrow_mut();
        if second.0 != secs {
            second.1 = second_of(secs);
            second.0 = secs;
        }
        w.write_str(&second.1)
    })?;
    write!(w, ".{micros:06}Z")
}

fn second_of(secs: u64) -> String {
    let at = i64::try_from(secs)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_format_as_utc() {
        assert_eq!(second_of(0), "1970-01-01T00:00:00");
        assert_eq!(second_of(1_764_902_073), "2025-12-05T02:34:33");
    }

    #[test]
    fn only_plain_values_go_in_unescaped() {
        assert!(plain("/v1/auth/sessions/{id}"));
        assert!(plain("0190f1e2-7c4b-7a3e-9f0e-3b1c2d4e5f60"));
        assert!(!plain("a\"b"));
        assert!(!plain("a\\b"));
        assert!(!plain("line\nbreak"));
        assert!(!plain("caf\u{e9}"));
    }

    #[test]
    fn latencies_are_written_to_the_microsecond() {
        let written = |v: f64| {
            let mut out = String::new();
            thousandths(&mut Writer::new(&mut out), v).unwrap();
            out
        };
        assert_eq!(written(0.41234), "0.412");
        assert_eq!(written(16.9), "16.900");
        assert_eq!(written(0.0), "0.000");
        assert_eq!(written(1234.5675), "1234.568");
        assert_eq!(written(f64::NAN), "NaN");
        assert_eq!(written(-1.5), "-1.5");
    }

    #[test]
    fn ids_are_held_as_given() {
        assert_eq!(RequestId::new("trace-4711.a").as_str(), "trace-4711.a");
        assert_eq!(RequestId::new(&"a".repeat(MAX_ID)).as_str().len(), MAX_ID);
    }
}
