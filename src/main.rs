use std::io::Write;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Subcommand};
use tessera::config::{Config, ConfigArgs};
use tessera::operator::{self, Severity};
use tessera::startup::{shutdown_signal, Application};
use tessera::{cli, store, telemetry};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Tessera: access JWTs, rotating refresh tokens with reuse detection, device sessions.
#[derive(clap::Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    config: ConfigArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP server (migrates the database first).
    Serve,
    /// Create or upgrade the database schema, then exit.
    Migrate,
    /// Accounts: add, list, show, disable, enable, set-roles, set-password, set-email-verified,
    /// delete, import.
    Users {
        #[command(subcommand)]
        command: cli::UsersCommand,
    },
    /// Sessions of an account: list, revoke.
    Sessions {
        #[command(subcommand)]
        command: cli::SessionsCommand,
    },
    /// The audit trail, newest first (filters: --user, --kind, --since, --limit).
    Audit(cli::AuditArgs),
    /// Security alerts queued for the webhook: list (--pending: undelivered only).
    Alerts {
        #[command(subcommand)]
        command: cli::AlertsCommand,
    },
    /// Mail: test (queue a test mail, see it sent), list (the outbox).
    Mail {
        #[command(subcommand)]
        command: cli::MailCommand,
    },
    /// Signing keys: list, rotate, revoke, encrypt (at rest, with TESSERA_MASTER_KEY).
    Keys {
        #[command(subcommand)]
        command: cli::KeysCommand,
    },
    /// Retire the active signing key and sign with a new one (of the configured algorithm)
    /// at once: `tessera keys rotate --now`. Tokens signed with the old key stay valid until
    /// they expire. Prefer `tessera keys rotate`, which publishes the new key first.
    RotateKey,
    /// Print the effective configuration (flags, environment and file merged), secrets redacted.
    Config,
    /// Check the configuration, the database (reachable, schema state) and the signing keys
    /// without changing anything; exit non-zero if `serve` would fail.
    Check,
}

/// The settings each command reads, the others hidden from its `--help` (still accepted,
/// like their variables): `None` for the commands that read them all.
fn settings_read_by(command: &str) -> Option<&'static [&'static str]> {
    const DATABASE: &[&str] = &["database_url", "database_max_connections", "log_format"];
    const ADMIN: &[&str] = &[
        "database_url",
        "database_max_connections",
        "log_format",
        "alert_webhook_url",
        "alert_webhook_secret",
        "alert_events",
    ];
    const KEYS: &[&str] = &[
        "database_url",
        "database_max_connections",
        "log_format",
        "alert_webhook_url",
        "alert_webhook_secret",
        "alert_events",
        "signing_alg",
        "key_publish_ahead",
        "access_ttl",
        "master_key",
        "master_key_previous",
    ];
    const MAIL: &[&str] = &[
        "database_url",
        "database_max_connections",
        "log_format",
        "issuer",
        "public_url",
        "smtp_url",
        "smtp_ca_file",
        "mail_from",
        "mail_templates",
        "product_name",
        "mail_give_up_after",
    ];
    match command {
        "migrate" => Some(DATABASE),
        "users" | "sessions" | "audit" | "alerts" => Some(ADMIN),
        "keys" | "rotate-key" => Some(KEYS),
        "mail" => Some(MAIL),
        _ => None,
    }
}

/// The command line, each subcommand's help showing only the settings it reads: a hidden
/// copy of each other setting is declared on it, which clap then propagates in place of the
/// visible one (values still reach the same place).
fn command_line() -> clap::Command {
    let root = Cli::command();
    let settings: Vec<clap::Arg> = root
        .get_arguments()
        .filter(|a| a.is_global_set() && Config::NAMES.contains(&a.get_id().as_str()))
        .cloned()
        .collect();
    let names: Vec<String> = root.get_subcommands().map(|c| c.get_name().to_owned()).collect();
    names
        .iter()
        .fold(root, |root, name| match settings_read_by(name) {
            None => root,
            Some(read) => root.mut_subcommand(name, |mut sub| {
                for arg in settings.iter().filter(|a| !read.contains(&a.get_id().as_str())) {
                    sub = sub.arg(arg.clone().hide(true));
                }
                sub
            }),
        })
}

fn main() -> ExitCode {
    let cli = match Cli::from_arg_matches(&command_line().get_matches()) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let config = match Config::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tessera: {e}");
            return ExitCode::from(2);
        }
    };
    // After the configuration, which says the log format; its own errors go out plainly above.
    telemetry::init(config.log_format);
    // Blocking threads are bounded (tokio's default would allow 512): they serve DNS lookups
    // and the like. Password hashing has threads of its own (`service::hashing`).
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(BLOCKING_THREADS)
        .build();
    let code = match runtime {
        Ok(runtime) => runtime.block_on(run(cli.command, config)),
        Err(e) => {
            telemetry::flush();
            eprintln!("tessera: cannot start the runtime: {e}");
            ExitCode::FAILURE
        }
    };
    // Log lines still held by the writer thread go out before the process ends.
    telemetry::flush();
    code
}

/// The most blocking threads the runtime starts.
const BLOCKING_THREADS: usize = 16;

async fn run(command: Command, config: Config) -> ExitCode {
    let result = match command {
        Command::Config => {
            print!("{}", config.to_toml_redacted());
            Ok(())
        }
        Command::Check => return check(&config).await,
        Command::Serve => serve(&config).await,
        Command::Migrate => store::connect(&config.database_url, 1)
            .await
            .map(|_| println!("migrations applied"))
            .map_err(|e| e.to_string()),
        Command::Users { command } => admin_result(cli::users(&config, command).await),
        Command::Sessions { command } => admin_result(cli::sessions(&config, command).await),
        Command::Audit(args) => admin_result(cli::audit(&config, args).await),
        Command::Alerts { command } => admin_result(cli::alerts(&config, command).await),
        Command::Keys { command } => admin_result(cli::keys(&config, command).await),
        Command::Mail { command } => admin_result(cli::mail(&config, command).await),
        Command::RotateKey => admin_result(cli::rotate_key(&config).await),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // After what was logged before it, as it happened.
            telemetry::flush();
            eprintln!("tessera: {e}");
            ExitCode::FAILURE
        }
    }
}

/// One line per finding: problems on standard error, the rest on standard output.
async fn check(config: &Config) -> ExitCode {
    let findings = operator::check(config).await;
    telemetry::flush();
    let mut failed = false;
    for finding in &findings {
        if finding.severity == Severity::Problem {
            failed = true;
            eprintln!("{finding}");
        } else {
            println!("{finding}");
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// An administrative command's outcome; a reader closing our output (`| head`) is no failure.
fn admin_result(result: Result<(), cli::CliError>) -> Result<(), String> {
    match result {
        Ok(()) | Err(cli::CliError::ReaderGone) => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}

async fn serve(config: &Config) -> Result<(), String> {
    let app = Application::build(config).await.map_err(|e| e.to_string())?;
    let stop = shutdown_signal().map_err(|e| format!("cannot handle shutdown signals: {e}"))?;
    // The ready line scripts and tests wait for; printed only once the socket is bound and a
    // SIGTERM would be a graceful shutdown.
    println!("listening on http://{}", app.local_addr());
    let _ = std::io::stdout().flush();
    app.run_until_stopped(stop).await.map_err(|e| e.to_string())?;
    tracing::info!("stopped");
    Ok(())
}
