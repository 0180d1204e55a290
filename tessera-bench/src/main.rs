//! `tessera-bench`: seed a Tessera database in bulk, or drive load against a running Tessera.
//! See docs/BENCHMARKS.md ("How to run the benchmark").

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tessera_bench::load::{self, RunOptions, Scenario};
use tessera_bench::seed::{self, SeedOptions};

/// Exit status when the tool itself could not do its job (bad arguments, setup failed).
const EXIT_FAILED: u8 = 2;
/// Exit status of a run that completed but saw errors: a benchmark with errors is a failure.
const EXIT_RUN_HAD_ERRORS: u8 = 1;

#[derive(Parser)]
#[command(
    version,
    about = "Seed a Tessera database in bulk, or drive load against a running Tessera"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Migrate a database, then bulk-create users, sessions and their first refresh tokens.
    Seed {
        /// `sqlite://path.db` (created if missing) or `postgres://...`; seed a fresh database.
        #[arg(long)]
        database_url: String,
        /// Users to create; sessions are spread over them round-robin. Keep sessions/users at
        /// or below the server's max sessions per user (default 10), or a login by one of
        /// them would evict that user's least recently used seeded session.
        #[arg(long)]
        users: u64,
        /// Sessions to create, each with its first refresh token.
        #[arg(long)]
        sessions: u64,
        /// Write some seeded sessions' refresh tokens (with their user's email and password)
        /// to this file, one JSON object per line, for `run --tokens`.
        #[arg(long)]
        emit_tokens: Option<PathBuf>,
        /// How many sessions to write to --emit-tokens, spread evenly over all of them.
        #[arg(long, default_value_t = seed::DEFAULT_EMIT)]
        emit: u64,
        /// No progress bar (it is hidden anyway when standard error is not a terminal).
        #[arg(long)]
        quiet: bool,
    },
    /// Closed-loop HTTP/1.1 load: C workers, one keep-alive connection each, requests back to
    /// back. Meant for a Tessera on 127.0.0.1 with its rate limits off
    /// (TESSERA_LOGIN_RATE=0 TESSERA_REFRESH_RATE=0). Exits 1 if any request failed.
    Run {
        /// The server, e.g. http://127.0.0.1:8080 (plain HTTP only). Only this URL is sent
        /// requests.
        #[arg(long)]
        url: String,
        #[arg(long, value_enum)]
        scenario: Scenario,
        /// Workers, each with its own connection (and, except for login, its own session).
        #[arg(long, short = 'c', default_value_t = 32)]
        concurrency: usize,
        /// Seconds measured.
        #[arg(long, short = 'd', default_value_t = 10.0)]
        duration: f64,
        /// Seconds of load before the measured window.
        #[arg(long, default_value_t = 2.0)]
        warmup: f64,
        /// Sessions from `seed --emit-tokens` (one per worker) instead of logging in users.
        #[arg(long)]
        tokens: Option<PathBuf>,
        /// Users to register and log in (default: one per worker). Login and mixed also
        /// register as many separate users to log in to.
        #[arg(long)]
        users: Option<usize>,
        /// Seconds before a request counts as a timeout error.
        #[arg(long, default_value_t = 5.0)]
        timeout: f64,
        /// Runtime threads for the load generator (it shares the machine with the server).
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// Also print the result as one JSON object, on the last line.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Seed {
            database_url,
            users,
            sessions,
            emit_tokens,
            emit,
            quiet,
        } => {
            let options = SeedOptions {
                database_url,
                users,
                sessions,
                emit_tokens,
                emit,
                show_progress: !quiet,
            };
            let result = runtime(0).and_then(|rt| rt.block_on(seed::seed(&options)));
            match result {
                Ok(summary) => {
                    let seconds = summary.elapsed.as_secs_f64();
                    println!(
                        "seeded {} users and {} sessions in {seconds:.1} s ({:.0} sessions/s)",
                        summary.users,
                        summary.sessions,
                        summary.sessions as f64 / seconds.max(f64::MIN_POSITIVE)
                    );
                    if let Some(path) = &options.emit_tokens {
                        println!("wrote {} sessions' tokens to {}", summary.emitted, path.display());
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e),
            }
        }
        Command::Run {
            url,
            scenario,
            concurrency,
            duration,
            warmup,
            tokens,
            users,
            timeout,
            threads,
            json,
        } => {
            let (duration, warmup, timeout) = match (seconds(duration), seconds(warmup), seconds(timeout)) {
                (Some(d), Some(w), Some(t)) => (d, w, t),
                _ => {
                    eprintln!("tessera-bench: --duration, --warmup and --timeout are seconds (0 to 3600)");
                    return ExitCode::from(EXIT_FAILED);
                }
            };
            let options = RunOptions {
                url,
                scenario,
                concurrency,
                duration,
                warmup,
                tokens,
                users,
                request_timeout: timeout,
            };
            let result = runtime(threads.max(1)).and_then(|rt| rt.block_on(load::run(&options)));
            match result {
                Ok(report) => {
                    print!("{}", report.table());
                    if json {
                        match serde_json::to_string(&report) {
                            Ok(line) => println!("{line}"),
                            Err(e) => return fail(&e.into()),
                        }
                    }
                    if report.error_total > 0 {
                        ExitCode::from(EXIT_RUN_HAD_ERRORS)
                    } else {
                        ExitCode::SUCCESS
                    }
                }
                Err(e) => fail(&e),
            }
        }
    }
}

/// A multi-threaded runtime; `threads == 0` means one per core.
fn runtime(threads: usize) -> Result<tokio::runtime::Runtime, tessera_bench::BenchError> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if threads > 0 {
        builder.worker_threads(threads);
    }
    Ok(builder.enable_all().build()?)
}

fn seconds(value: f64) -> Option<Duration> {
    (value.is_finite() && (0.0..=3600.0).contains(&value)).then(|| Duration::from_secs_f64(value))
}

fn fail(error: &tessera_bench::BenchError) -> ExitCode {
    eprintln!("tessera-bench: {error}");
    ExitCode::from(EXIT_FAILED)
}
