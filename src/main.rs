use std::io::Write;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tessera::config::{Config, ConfigArgs};
use tessera::domain::{Clock, SystemClock};
use tessera::startup::{shutdown_signal, Application};
use tessera::{service, store, telemetry};

/// Tessera: access JWTs, rotating refresh tokens with reuse detection, device sessions.
#[derive(Parser)]
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
    /// Retire the active signing key and start signing with a new one. Tokens signed with the
    /// old key stay valid until they expire; running instances switch within a minute.
    RotateKey,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init();
    let config = match Config::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tessera: {e}");
            return ExitCode::from(2);
        }
    };
    let result = match cli.command {
        Command::Serve => serve(&config).await,
        Command::Migrate => store::connect(&config.database_url, 1)
            .await
            .map(|_| println!("migrations applied"))
            .map_err(|e| e.to_string()),
        Command::RotateKey => rotate_key(&config).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tessera: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn rotate_key(config: &Config) -> Result<(), String> {
    let store = store::connect(&config.database_url, 1)
        .await
        .map_err(|e| e.to_string())?;
    let kid = service::rotate_signing_key(store.as_ref(), SystemClock.now())
        .await
        .map_err(|e| e.to_string())?;
    println!("new active signing key: {kid}");
    Ok(())
}

async fn serve(config: &Config) -> Result<(), String> {
    let app = Application::build(config).await.map_err(|e| e.to_string())?;
    // The ready line scripts and tests wait for; printed only once the socket is bound.
    println!("listening on http://{}", app.local_addr());
    let _ = std::io::stdout().flush();
    app.run_until_stopped(shutdown_signal())
        .await
        .map_err(|e| e.to_string())?;
    tracing::info!("stopped");
    Ok(())
}
