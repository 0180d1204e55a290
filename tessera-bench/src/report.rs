//! What a load run measured: successes and latency per operation, errors by kind, and how
//! that is printed (a table for people, one JSON line for scripts).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// What one request of a run does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    /// `GET /v1/auth/me` with a bearer access token.
    Verify,
    /// `POST /v1/auth/refresh`, chaining the worker's own refresh token.
    Refresh,
    /// `POST /v1/auth/login`.
    Login,
}

impl Operation {
    pub fn name(self) -> &'static str {
        match self {
            Operation::Verify => "verify",
            Operation::Refresh => "refresh",
            Operation::Login => "login",
        }
    }
}

/// Latencies are recorded in microseconds, from 1 µs to 60 s, to 3 significant digits.
const LATENCY_MAX_MICROS: u64 = 60_000_000;

pub fn new_histogram() -> Histogram<u64> {
    // hdrhistogram refuses only sigfig > 5 or a lowest bound below 1: not these constants.
    Histogram::new_with_bounds(1, LATENCY_MAX_MICROS, 3).expect("constant histogram bounds are valid")
}

/// One worker's (or, merged, the whole run's) measurements.
#[derive(Clone, Debug, Default)]
pub struct Tally {
    pub ok: BTreeMap<Operation, Histogram<u64>>,
    /// Every request that did not get the expected answer, by kind (`"401 session_revoked"`,
    /// `"timeout"`, `"io"`, ...), whether in the warm-up or the measured window.
    pub errors: BTreeMap<String, u64>,
}

impl Tally {
    pub fn record_ok(&mut self, operation: Operation, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX).max(1);
        self.ok
            .entry(operation)
            .or_insert_with(new_histogram)
            .saturating_record(micros);
    }

    pub fn record_error(&mut self, kind: String) {
        *self.errors.entry(kind).or_insert(0) += 1;
    }

    pub fn merge(&mut self, other: Tally) {
        for (operation, histogram) in other.ok {
            let mine = self.ok.entry(operation).or_insert_with(new_histogram);
            // Same bounds on both sides, so adding cannot fail; saturate if it ever did.
            if mine.add(&histogram).is_err() {
                for value in histogram.iter_recorded() {
                    mine.saturating_record_n(value.value_iterated_to(), value.count_at_value());
                }
            }
        }
        for (kind, count) in other.errors {
            *self.errors.entry(kind).or_insert(0) += count;
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct LatencyMs {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct OperationSummary {
    pub ok: u64,
    pub rps: f64,
    pub latency_ms: LatencyMs,
}

/// The result of a run, as printed.
#[derive(Clone, Debug, Serialize)]
pub struct RunReport {
    pub url: String,
    pub scenario: String,
    pub concurrency: usize,
    pub duration_s: f64,
    pub warmup_s: f64,
    /// Successful requests per second in the measured window, all operations together.
    pub rps: f64,
    pub ok: u64,
    pub error_total: u64,
    pub errors: BTreeMap<String, u64>,
    pub latency_ms: LatencyMs,
    pub operations: BTreeMap<&'static str, OperationSummary>,
}

impl RunReport {
    pub fn new(
        url: &str,
        scenario: &str,
        concurrency: usize,
        duration: Duration,
        warmup: Duration,
        tally: &Tally,
    ) -> RunReport {
        let seconds = duration.as_secs_f64().max(f64::MIN_POSITIVE);
        let mut all = new_histogram();
        let mut operations = BTreeMap::new();
        for (operation, histogram) in &tally.ok {
            let _ = all.add(histogram);
            operations.insert(
                operation.name(),
                OperationSummary {
                    ok: histogram.len(),
                    rps: histogram.len() as f64 / seconds,
                    latency_ms: latency(histogram),
                },
            );
        }
        RunReport {
            url: url.to_owned(),
            scenario: scenario.to_owned(),
            concurrency,
            duration_s: duration.as_secs_f64(),
            warmup_s: warmup.as_secs_f64(),
            rps: all.len() as f64 / seconds,
            ok: all.len(),
            error_total: tally.errors.values().sum(),
            errors: tally.errors.clone(),
            latency_ms: latency(&all),
            operations,
        }
    }

    /// The human-readable table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = writeln!(
            out,
            "{} against {}: {} workers, {:.0} s measured after {:.0} s warm-up",
            self.scenario, self.url, self.concurrency, self.duration_s, self.warmup_s
        );
        let _ = writeln!(
            out,
            "{:<9} {:>10} {:>10} {:>8} {:>8} {:>8} {:>8} {:>8}",
            "operation", "ok", "req/s", "p50 ms", "p90 ms", "p99 ms", "max ms", "mean ms"
        );
        let mut row = |name: &str, ok: u64, rps: f64, l: &LatencyMs| {
            let _ = writeln!(
                out,
                "{:<9} {:>10} {:>10.1} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2}",
                name, ok, rps, l.p50, l.p90, l.p99, l.max, l.mean
            );
        };
        if self.operations.len() > 1 {
            for (name, summary) in &self.operations {
                row(name, summary.ok, summary.rps, &summary.latency_ms);
            }
        }
        row("total", self.ok, self.rps, &self.latency_ms);
        if self.errors.is_empty() {
            let _ = writeln!(out, "errors: none");
        } else {
            let listed: Vec<String> = self.errors.iter().map(|(k, n)| format!("{k}: {n}")).collect();
            let _ = writeln!(out, "errors: {} ({})", self.error_total, listed.join(", "));
        }
        out
    }
}

fn latency(histogram: &Histogram<u64>) -> LatencyMs {
    let ms = |micros: u64| micros as f64 / 1000.0;
    if histogram.is_empty() {
        return LatencyMs {
            p50: 0.0,
            p90: 0.0,
            p99: 0.0,
            max: 0.0,
            mean: 0.0,
        };
    }
    LatencyMs {
        p50: ms(histogram.value_at_quantile(0.50)),
        p90: ms(histogram.value_at_quantile(0.90)),
        p99: ms(histogram.value_at_quantile(0.99)),
        max: ms(histogram.max()),
        mean: histogram.mean() / 1000.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_tallies_add_up() {
        let mut a = Tally::default();
        let mut b = Tally::default();
        for ms in 1..=100 {
            a.record_ok(Operation::Verify, Duration::from_millis(ms));
        }
        b.record_ok(Operation::Refresh, Duration::from_millis(5));
        b.record_error("401 session_revoked".into());
        b.record_error("401 session_revoked".into());
        a.merge(b);
        let report = RunReport::new(
            "http://x",
            "mixed",
            2,
            Duration::from_secs(10),
            Duration::ZERO,
            &a,
        );
        assert_eq!(report.ok, 101);
        assert!((report.rps - 10.1).abs() < 1e-9);
        assert_eq!(report.error_total, 2);
        assert_eq!(report.operations["verify"].ok, 100);
        let p50 = report.operations["verify"].latency_ms.p50;
        assert!((49.9..=50.1).contains(&p50), "{p50}");
        assert!(report.table().contains("401 session_revoked: 2"));
    }
}
