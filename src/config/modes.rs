//! The settings that pick one of a few ways: the log format, the access log, the session check.

use std::fmt;

/// The shape of log lines on standard error.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// One line of text per event, for people reading a terminal or a journal.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("{other:?} is neither \"text\" nor \"json\"")),
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        })
    }
}

/// Which requests get an access line (`http::request_log`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AccessLog {
    /// Requests answered 4xx or 5xx: every refusal, rate limit and error, and none of the
    /// successes that make up nearly all the traffic (counted and timed in `/metrics`). A line
    /// per success cost 15 % of a verify's CPU (docs/BENCHMARKS.md).
    #[default]
    Failures,
    /// Every request.
    All,
}

impl AccessLog {
    /// Whether a request answered `status` gets an access line.
    pub fn logs(self, status: u16) -> bool {
        self == AccessLog::All || status >= 400
    }
}

impl std::str::FromStr for AccessLog {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "failures" => Ok(AccessLog::Failures),
            "all" => Ok(AccessLog::All),
            other => Err(format!("{other:?} is neither \"failures\" nor \"all\"")),
        }
    }
}

impl fmt::Display for AccessLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AccessLog::Failures => "failures",
            AccessLog::All => "all",
        })
    }
}

/// How sessions are checked: vocabulary shared with the service, so it lives in `domain`.
pub use crate::domain::SessionCheck;

#[cfg(test)]
mod tests {
    use super::AccessLog;

    #[test]
    fn failures_get_a_line_by_default_and_everything_with_all() {
        for status in [400, 401, 404, 429, 500, 503] {
            assert!(AccessLog::Failures.logs(status), "{status}");
        }
        for status in [200, 201, 204, 302, 399] {
            assert!(!AccessLog::Failures.logs(status), "{status}");
            assert!(AccessLog::All.logs(status), "{status}");
        }
    }
}
