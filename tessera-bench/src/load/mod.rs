//! Closed-loop HTTP/1.1 load against Tessera's API.
//!
//! Model (like wrk): `concurrency` workers, each with ONE keep-alive connection, each sending
//! its next request as soon as the previous answer is read. Throughput is what the server
//! sustains at that concurrency; latency includes queueing in the server.
//!
//! A run has three phases:
//! 1. setup (untimed): register the run's users (`201` or `409` are both fine), then give
//!    every worker a session of its own, by logging in or, with `--tokens`, by refreshing one
//!    seeded session's token (which also yields its first access token);
//! 2. warm-up: requests as in the run, latencies not recorded;
//! 3. the measured window: only requests that start and finish inside it count as `ok`.
//!
//! Any answer other than the expected `200` (a `401`, a `429`, a `5xx`), a timeout, or an
//! I/O error is an error, counted by operation and kind, in the warm-up too: the caller
//! exits non-zero if there was any. Nothing is retried silently.
//!
//! Verify and refresh workers each own a session, so a worker's refresh chain is its own:
//! two workers presenting one token would be reuse, and Tessera would rightly revoke the
//! session. Logins go to a separate set of users, so the sessions logins create (and the
//! least recently used sessions they evict past `max_sessions`) never touch the sessions
//! the other workers are using.
//!
//! Seeded sessions (`--tokens FILE`) are used up by a run: their tokens rotate. So at the end
//! of a run the workers' current refresh tokens are written back into FILE (in place of the
//! lines the workers took), and the next run with the same file continues those chains.
//!
//! Every loop is bounded: workers stop at the end of the window, every request has a
//! timeout, setup sends a fixed number of requests.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::client::{Connection, Response, Target};
use crate::report::{Operation, RunReport, Tally};
use crate::seed::{read_emitted, write_emitted, SeededToken};
use crate::{BenchError, BenchResult, BENCH_PASSWORD};
use worker::{Credentials, SessionSource, SessionTokens, Worker};

mod worker;

pub const MAX_CONCURRENCY: usize = 4096;
pub const MAX_DURATION: Duration = Duration::from_secs(3600);
pub const MAX_WARMUP: Duration = Duration::from_secs(600);

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// `GET /v1/auth/me` with the worker's bearer access token.
    Verify,
    /// `POST /v1/auth/refresh`, each worker chaining its own refresh token.
    Refresh,
    /// `POST /v1/auth/login`, round-robin over the run's login users.
    Login,
    /// Per worker, out of every 100 requests: 90 verify, 9 refresh, 1 login.
    Mixed,
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Verify => "verify",
            Scenario::Refresh => "refresh",
            Scenario::Login => "login",
            Scenario::Mixed => "mixed",
        }
    }

    /// The operation of a worker's `n`-th request.
    fn operation(self, n: u64) -> Operation {
        match self {
            Scenario::Verify => Operation::Verify,
            Scenario::Refresh => Operation::Refresh,
            Scenario::Login => Operation::Login,
            Scenario::Mixed => match n % 100 {
                0 => Operation::Login,
                1..=9 => Operation::Refresh,
                _ => Operation::Verify,
            },
        }
    }

    fn needs_sessions(self) -> bool {
        !matches!(self, Scenario::Login)
    }

    fn needs_login_users(self) -> bool {
        matches!(self, Scenario::Login | Scenario::Mixed)
    }
}

#[derive(Clone, Debug)]
pub struct RunOptions {
    /// `http://host:port`, meant to be a server on 127.0.0.1.
    pub url: String,
    pub scenario: Scenario,
    pub concurrency: usize,
    pub duration: Duration,
    pub warmup: Duration,
    /// Seeded sessions (`seed --emit-tokens`): one per worker, instead of logging in.
    pub tokens: Option<PathBuf>,
    /// Users to register and log in (default: one per worker).
    pub users: Option<usize>,
    pub request_timeout: Duration,
}

/// The users a run registers for itself: `bench-{i}` hold the workers' sessions, and
/// `bench-login-{i}` are only ever logged in to.
fn session_user_email(i: usize) -> String {
    format!("bench-{i}@bench.test")
}

fn login_user_email(i: usize) -> String {
    format!("bench-login-{i}@bench.test")
}

/// Runs the whole thing and returns what it measured; the caller decides how to print it.
/// Setup failures are errors; errors during the load are in the report.
pub async fn run(options: &RunOptions) -> BenchResult<RunReport> {
    validate(options)?;
    let target = Arc::new(Target::parse(&options.url)?);
    let concurrency = options.concurrency;
    let users = options.users.unwrap_or(concurrency).max(1);

    let seeded = match &options.tokens {
        Some(path) if options.scenario.needs_sessions() => {
            let tokens = read_emitted(path)?;
            if tokens.len() < concurrency {
                return Err(BenchError::InvalidArgument(format!(
                    "{} holds {} sessions; every worker needs its own ({concurrency})",
                    path.display(),
                    tokens.len()
                )));
            }
            Some(tokens)
        }
        _ => None,
    };

    // Setup 1: register the run's users.
    let mut to_register = Vec::new();
    if options.scenario.needs_sessions() && seeded.is_none() {
        to_register.extend((0..users).map(session_user_email));
    }
    if options.scenario.needs_login_users() {
        to_register.extend((0..users).map(login_user_email));
    }
    register_all(&target, to_register, concurrency, options.request_timeout).await?;

    // Setup 2: every worker opens its connection and gets its session.
    let login_emails: Arc<Vec<String>> = Arc::new((0..users).map(login_user_email).collect());
    let mut setups = Vec::with_capacity(concurrency);
    for index in 0..concurrency {
        let credentials = match (&seeded, options.scenario.needs_sessions()) {
            (_, false) => None,
            (Some(tokens), true) => Some(SessionSource::Seeded(tokens[index].clone())),
            (None, true) => Some(SessionSource::Login(Credentials {
                email: session_user_email(index % users),
                password: BENCH_PASSWORD.to_owned(),
            })),
        };
        let mut worker = Worker {
            index,
            concurrency,
            connection: Connection::new(Arc::clone(&target)),
            session: None,
            credentials: None,
            login_emails: Arc::clone(&login_emails),
            logins_sent: 0,
            request_timeout: options.request_timeout,
            tally: Tally::default(),
        };
        setups.push(tokio::spawn(async move {
            if let Some(source) = credentials {
                worker.open_session(source).await?;
            }
            Ok::<Worker, BenchError>(worker)
        }));
    }
    let mut workers = Vec::with_capacity(concurrency);
    let mut setup_error = None;
    for setup in setups {
        match setup.await {
            Ok(Ok(worker)) => workers.push(worker),
            Ok(Err(e)) => {
                setup_error.get_or_insert(e);
            }
            Err(e) => {
                setup_error.get_or_insert(BenchError::Setup(format!("worker setup task: {e}")));
            }
        }
    }
    if let Some(error) = setup_error {
        // The workers that got their session rotated their seeded token: keep the file
        // usable for the next run before giving up on this one.
        if let (Some(path), Some(seeded)) = (&options.tokens, seeded) {
            let sessions = workers
                .into_iter()
                .filter_map(|w| w.session.map(|s| (w.index, s)));
            continue_chains(path, seeded, sessions)?;
        }
        return Err(error);
    }

    // Warm-up and the measured window, on one clock for every worker.
    let window_start = Instant::now() + options.warmup;
    let window_end = window_start + options.duration;
    let scenario = options.scenario;
    let runs: Vec<_> = workers
        .into_iter()
        .map(|worker| tokio::spawn(worker.run(scenario, window_start, window_end)))
        .collect();
    let mut tally = Tally::default();
    let mut sessions = Vec::with_capacity(concurrency);
    for (index, run) in runs.into_iter().enumerate() {
        match run.await {
            Ok((worker_tally, session)) => {
                tally.merge(worker_tally);
                sessions.extend(session.map(|s| (index, s)));
            }
            // A worker that panicked is a broken run, not a slow one.
            Err(e) => tally.record_error(format!("worker failed: {e}")),
        }
    }
    if let (Some(path), Some(seeded)) = (&options.tokens, seeded) {
        continue_chains(path, seeded, sessions.into_iter())?;
    }
    Ok(RunReport::new(
        &options.url,
        scenario.name(),
        concurrency,
        options.duration,
        options.warmup,
        &tally,
    ))
}

/// Rewrites the `--tokens` file with each worker's current session in place of the line it
/// took (worker i took line i), so the next run continues those chains.
fn continue_chains(
    path: &Path,
    mut seeded: Vec<SeededToken>,
    sessions: impl Iterator<Item = (usize, SessionTokens)>,
) -> BenchResult<()> {
    for (index, session) in sessions {
        if let Some(line) = seeded.get_mut(index) {
            line.session_id = session.session_id;
            line.refresh_token = session.refresh_token;
        }
    }
    write_emitted(path, &seeded)
}

fn validate(options: &RunOptions) -> BenchResult<()> {
    let invalid = |m: String| Err(BenchError::InvalidArgument(m));
    if options.concurrency == 0 || options.concurrency > MAX_CONCURRENCY {
        return invalid(format!("--concurrency must be 1 to {MAX_CONCURRENCY}"));
    }
    if options.duration.is_zero() || options.duration > MAX_DURATION {
        return invalid(format!(
            "--duration must be above 0 and at most {} s",
            MAX_DURATION.as_secs()
        ));
    }
    if options.warmup > MAX_WARMUP {
        return invalid(format!("--warmup must be at most {} s", MAX_WARMUP.as_secs()));
    }
    if options.users == Some(0) {
        return invalid("--users must be at least 1".into());
    }
    if options.request_timeout.is_zero() {
        return invalid("--timeout must be above 0".into());
    }
    Ok(())
}

/// Registers `emails` over up to `parallel` connections; an existing user is fine.
async fn register_all(
    target: &Arc<Target>,
    emails: Vec<String>,
    parallel: usize,
    request_timeout: Duration,
) -> BenchResult<()> {
    let parallel = parallel.clamp(1, emails.len().max(1));
    let emails = Arc::new(emails);
    let mut tasks = Vec::with_capacity(parallel);
    for lane in 0..parallel {
        let emails = Arc::clone(&emails);
        let mut connection = Connection::new(Arc::clone(target));
        tasks.push(tokio::spawn(async move {
            for email in emails.iter().skip(lane).step_by(parallel) {
                let body = serde_json::json!({ "email": email, "password": BENCH_PASSWORD });
                let response = send_with_timeout(
                    request_timeout,
                    connection.post_json("/v1/auth/register", body.to_string().into_bytes()),
                )
                .await
                .map_err(|kind| BenchError::Setup(format!("register {email}: {kind}")))?;
                match response.status.as_u16() {
                    201 | 409 => {}
                    _ => return Err(setup_failure(&format!("register {email}"), &response)),
                }
            }
            Ok::<(), BenchError>(())
        }));
    }
    for task in tasks {
        task.await
            .map_err(|e| BenchError::Setup(format!("registration task: {e}")))??;
    }
    Ok(())
}

fn setup_failure(what: &str, response: &Response) -> BenchError {
    let code = response.problem_code().unwrap_or_default();
    let hint = if response.status.as_u16() == 429 {
        " (run the server with TESSERA_LOGIN_RATE=0 TESSERA_REFRESH_RATE=0)"
    } else {
        ""
    };
    BenchError::Setup(format!("{what}: {} {code}{hint}", response.status.as_u16()))
}

/// Awaits a request for at most `limit`; the error is the kind it is counted under.
async fn send_with_timeout(
    limit: Duration,
    request: impl std::future::Future<Output = Result<Response, crate::client::RequestError>>,
) -> Result<Response, String> {
    match tokio::time::timeout(limit, request).await {
        Err(_) => Err("timeout".into()),
        Ok(Err(e)) => Err(e.kind().into()),
        Ok(Ok(response)) => Ok(response),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixed_is_90_verify_9_refresh_1_login() {
        let mut counts = std::collections::BTreeMap::new();
        for n in 500..1500 {
            *counts.entry(Scenario::Mixed.operation(n)).or_insert(0) += 1;
        }
        assert_eq!(counts[&Operation::Verify], 900);
        assert_eq!(counts[&Operation::Refresh], 90);
        assert_eq!(counts[&Operation::Login], 10);
    }

    #[test]
    fn out_of_range_options_are_refused() {
        let ok = RunOptions {
            url: "http://127.0.0.1:1".into(),
            scenario: Scenario::Verify,
            concurrency: 4,
            duration: Duration::from_secs(1),
            warmup: Duration::ZERO,
            tokens: None,
            users: None,
            request_timeout: Duration::from_secs(1),
        };
        assert!(validate(&ok).is_ok());
        assert!(validate(&RunOptions {
            concurrency: 0,
            ..ok.clone()
        })
        .is_err());
        assert!(validate(&RunOptions {
            duration: Duration::ZERO,
            ..ok.clone()
        })
        .is_err());
        assert!(validate(&RunOptions {
            users: Some(0),
            ..ok.clone()
        })
        .is_err());
    }
}
