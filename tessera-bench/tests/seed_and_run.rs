//! End to end: `tessera-bench seed` fills a fresh database, the real Tessera serves it, the
//! emitted refresh tokens refresh, and `tessera-bench run` reports zero errors for verify,
//! refresh and mixed. On SQLite always; on PostgreSQL when it is reachable (see
//! tests/support/postgres.rs at the repository root for how it is found or skipped).

#[path = "../../tests/support/postgres.rs"]
mod postgres_support;

use std::path::Path;
use std::process::Output;

use serde_json::Value;
use tessera::config::Config;
use tessera::startup::Application;
use tessera_bench::client::{Connection, Target};
use tessera_bench::seed::{read_emitted, SeededToken};
use tessera_bench::BENCH_PASSWORD;
use tokio::process::Command;
use tokio::sync::oneshot;

use crate::postgres_support::TestDatabase;

const USERS: &str = "50";
const SESSIONS: &str = "200";
const EMITTED: usize = 40;
const WORKERS: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_sqlite_database_serves_load_without_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("seeded.db").display());
    seed_serve_and_load(&url, dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_postgres_database_serves_load_without_errors() {
    let Some(database) = TestDatabase::create("seeded_postgres_database_serves_load_without_errors").await
    else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    seed_serve_and_load(&database.url, dir.path()).await;
    database.drop_database().await;
}

async fn seed_serve_and_load(database_url: &str, dir: &Path) {
    let tokens_path = dir.join("tokens.jsonl");
    let seeded = bench(&[
        "seed",
        "--database-url",
        database_url,
        "--users",
        USERS,
        "--sessions",
        SESSIONS,
        "--emit-tokens",
        &tokens_path.display().to_string(),
        "--emit",
        &EMITTED.to_string(),
        "--quiet",
    ])
    .await;
    assert_success(&seeded, "seed");
    let tokens = read_emitted(&tokens_path).expect("emitted tokens");
    assert_eq!(tokens.len(), EMITTED);
    let distinct: std::collections::HashSet<_> = tokens.iter().map(|t| &t.session_id).collect();
    assert_eq!(distinct.len(), EMITTED, "each emitted line is its own session");

    // The real server on the seeded database, rate limits off as the benchmark needs.
    let config = Config {
        listen: "127.0.0.1:0".into(),
        database_url: database_url.to_owned(),
        login_rate: 0,
        refresh_rate: 0,
        ..Config::default()
    };
    let app = Application::build(&config)
        .await
        .expect("server starts on the seeded database");
    let base = format!("http://{}", app.local_addr());
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        app.run_until_stopped(async {
            let _ = stopped.await;
        })
        .await
        .expect("server ran");
    });

    // Workers' tokens for the two runs; the rest are refreshed here, one by one.
    let (for_verify, rest) = tokens.split_at(WORKERS);
    let (for_refresh, rest) = rest.split_at(WORKERS);
    let (for_revocation, to_check) = rest.split_at(1);
    let mut connection = Connection::new(std::sync::Arc::new(Target::parse(&base).expect("url")));
    for token in to_check {
        assert_refreshes(&mut connection, token).await;
    }
    // The stored password hash is real: a seeded user logs in with the known password.
    let login = serde_json::json!({ "email": to_check[0].email, "password": BENCH_PASSWORD });
    let response = connection
        .post_json("/v1/auth/login", login.to_string().into_bytes())
        .await
        .expect("login answered");
    assert_eq!(response.status.as_u16(), 200, "seeded user logs in");

    for (scenario, tokens) in [("verify", for_verify), ("refresh", for_refresh)] {
        let file = dir.join(format!("{scenario}.jsonl"));
        write_tokens(&file, tokens);
        let run = bench(&[
            "run",
            "--url",
            &base,
            "--scenario",
            scenario,
            "--concurrency",
            &WORKERS.to_string(),
            "--duration",
            "2",
            "--warmup",
            "0.5",
            "--tokens",
            &file.display().to_string(),
            "--json",
        ])
        .await;
        let report = assert_clean_run(&run, scenario);
        assert!(
            report["operations"][scenario]["ok"].as_u64().unwrap_or(0) > 0,
            "{report}"
        );
    }

    // The refresh run rotated its sessions' tokens many times and wrote the current ones back
    // into its file, so a second run with the same file continues those chains cleanly.
    let written_back = read_emitted(&dir.join("refresh.jsonl")).expect("written back");
    assert_eq!(written_back.len(), WORKERS);
    for (before, after) in for_refresh.iter().zip(&written_back) {
        assert_eq!(before.session_id, after.session_id);
        assert_ne!(before.refresh_token, after.refresh_token);
    }
    let refresh_file = dir.join("refresh.jsonl").display().to_string();
    let run = bench(&[
        "run",
        "--url",
        &base,
        "--scenario",
        "refresh",
        "-c",
        "4",
        "-d",
        "1",
        "--warmup",
        "0",
        "--tokens",
        &refresh_file,
        "--json",
    ])
    .await;
    assert_clean_run(&run, "refresh again");

    // Mixed, with users the run registers and logs in itself (no seeded tokens).
    let run = bench(&[
        "run",
        "--url",
        &base,
        "--scenario",
        "mixed",
        "-c",
        "2",
        "-d",
        "1",
        "--warmup",
        "0",
        "--json",
    ])
    .await;
    let report = assert_clean_run(&run, "mixed");
    assert!(
        report["operations"]["verify"]["ok"].as_u64().unwrap_or(0) > 0,
        "{report}"
    );

    assert_errors_are_counted_and_fail_the_run(&mut connection, &base, &for_revocation[0], dir).await;

    let _ = stop.send(());
    server.await.expect("server stopped");
}

/// A session revoked in the middle of a run: its worker's next requests are `401
/// session_revoked`, counted by kind, and the run exits 1 however many requests succeeded.
async fn assert_errors_are_counted_and_fail_the_run(
    connection: &mut Connection,
    base: &str,
    token: &SeededToken,
    dir: &Path,
) {
    let file = dir.join("revoked.jsonl");
    write_tokens(&file, std::slice::from_ref(token));
    let file_arg = file.display().to_string();
    let args = [
        "run",
        "--url",
        base,
        "--scenario",
        "verify",
        "-c",
        "1",
        "-d",
        "2",
        "--warmup",
        "0",
        "--tokens",
        &file_arg,
        "--json",
    ];
    let run = bench(&args);
    let revoke_during_the_run = async {
        tokio::time::sleep(std::time::Duration::from_millis(700)).await;
        // Log in as the session's user and end every session of theirs, the worker's included.
        let login = serde_json::json!({ "email": token.email, "password": BENCH_PASSWORD });
        let response = connection
            .post_json("/v1/auth/login", login.to_string().into_bytes())
            .await
            .expect("login answered");
        assert_eq!(response.status.as_u16(), 200);
        let answer: Value = serde_json::from_slice(&response.body).expect("token response");
        let access = answer["access_token"].as_str().expect("access token").to_owned();
        let response = connection
            .post_json_with_bearer("/v1/auth/logout-all", b"{}".to_vec(), &access)
            .await
            .expect("logout-all answered");
        assert_eq!(response.status.as_u16(), 204);
    };
    let (run, ()) = tokio::join!(run, revoke_during_the_run);
    assert_eq!(run.status.code(), Some(1), "a run with errors exits 1");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let report: Value = serde_json::from_str(stdout.lines().last().unwrap_or_default()).expect("JSON line");
    assert!(
        report["errors"]["verify 401 session_revoked"]
            .as_u64()
            .unwrap_or(0)
            >= 1,
        "{report}"
    );
    assert!(report["ok"].as_u64().unwrap_or(0) > 0, "{report}");
}

async fn bench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tessera-bench"))
        .args(args)
        .output()
        .await
        .expect("tessera-bench runs")
}

fn assert_success(output: &Output, what: &str) {
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The run exited 0 and its JSON line reports successes and not a single error.
fn assert_clean_run(output: &Output, scenario: &str) -> Value {
    assert_success(output, scenario);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    let report: Value = serde_json::from_str(last).unwrap_or_else(|e| panic!("{scenario}: {e}: {stdout}"));
    assert_eq!(report["error_total"], 0, "{scenario}: {report}");
    assert!(report["ok"].as_u64().unwrap_or(0) > 0, "{scenario}: {report}");
    report
}

async fn assert_refreshes(connection: &mut Connection, token: &SeededToken) {
    let body = serde_json::json!({ "refresh_token": token.refresh_token });
    let response = connection
        .post_json("/v1/auth/refresh", body.to_string().into_bytes())
        .await
        .expect("refresh answered");
    assert_eq!(
        response.status.as_u16(),
        200,
        "seeded token refreshes: {:?}",
        response.body
    );
    let answer: Value = serde_json::from_slice(&response.body).expect("token response");
    assert_eq!(answer["session_id"], token.session_id.as_str());
    let successor = answer["refresh_token"].as_str().expect("new refresh token");
    assert!(successor.starts_with("tsr_") && successor != token.refresh_token);
    assert_eq!(answer["user"]["email"], token.email.as_str());
}

fn write_tokens(path: &Path, tokens: &[SeededToken]) {
    let lines: Vec<String> = tokens
        .iter()
        .map(|t| serde_json::to_string(t).expect("serialisable"))
        .collect();
    std::fs::write(path, lines.join("\n") + "\n").expect("write tokens");
}
