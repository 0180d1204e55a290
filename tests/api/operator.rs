//! Operator tools: `tessera config` and `tessera check` (the real binary), and the
//! live-sessions and database-pool gauges of `/metrics`.

use std::path::Path;
use std::process::{Command, Output};

use crate::helpers::*;

/// Runs `tessera <args>` in `dir` with no inherited `TESSERA_*` settings, plus `env`.
fn tessera(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tessera"));
    cmd.args(args).current_dir(dir);
    for (name, _) in std::env::vars().filter(|(k, _)| k.starts_with("TESSERA_")) {
        cmd.env_remove(name);
    }
    cmd.envs(env.iter().copied()).output().expect("run tessera")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn config_prints_the_merged_settings_with_secrets_redacted() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tessera.toml");
    std::fs::write(&file, "access_ttl = \"2m\"\nmax_sessions = 4\n").unwrap();
    let out = tessera(
        dir.path(),
        &[
            "config",
            "--config",
            file.to_str().unwrap(),
            "--max-sessions",
            "3",
        ],
        &[
            (
                "TESSERA_DATABASE_URL",
                "postgres://tessera:dbpass-s3cret@127.0.0.1:1/t",
            ),
            (
                "TESSERA_ALERT_WEBHOOK_URL",
                "https://hooks.example.com/services/T0/B0/path-s3cret",
            ),
            ("TESSERA_ALERT_WEBHOOK_SECRET", "hmac-s3cret"),
            ("TESSERA_LOG_FORMAT", "json"),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let printed = stdout(&out);
    assert!(!printed.contains("s3cret"), "{printed}");
    let parsed: toml::Table =
        toml::from_str(&printed).unwrap_or_else(|e| panic!("not TOML ({e}):\n{printed}"));
    assert_eq!(parsed["access_ttl"].as_str(), Some("2m"), "from the file");
    assert_eq!(
        parsed["max_sessions"].as_integer(),
        Some(3),
        "the flag beats the file"
    );
    assert_eq!(
        parsed["log_format"].as_str(),
        Some("json"),
        "from the environment"
    );
    assert_eq!(parsed["refresh_ttl"].as_str(), Some("30d"), "the default");
    assert_eq!(
        parsed["database_url"].as_str(),
        Some("postgres://tessera:<redacted>@127.0.0.1:1/t")
    );
    assert_eq!(parsed["alert_webhook_secret"].as_str(), Some("<redacted>"));
    assert_eq!(
        parsed["alert_webhook_url"].as_str(),
        Some("https://hooks.example.com/<redacted>")
    );
    // Nothing was opened or created: printing is all `config` does.
    assert!(!dir.path().join("tessera.db").exists());
}

#[test]
fn check_follows_a_database_from_nothing_to_ready_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = tessera(dir.path(), &["check"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("does not exist yet"), "{}", stdout(&out));
    assert!(!dir.path().join("tessera.db").exists(), "check creates nothing");

    assert!(tessera(dir.path(), &["migrate"], &[]).status.success());
    let out = tessera(dir.path(), &["check"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let said = stdout(&out);
    assert!(said.contains("schema up to date"), "{said}");
    assert!(said.contains("no signing key yet"), "{said}");

    let rotated = stdout(&tessera(dir.path(), &["rotate-key"], &[]));
    let kid = rotated.trim().rsplit(' ').next().expect("kid").to_owned();
    let out = tessera(dir.path(), &["check"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains(&format!("ok: signing keys: active {kid} (EdDSA)")),
        "{}",
        stdout(&out)
    );
    assert!(stderr(&out).is_empty(), "{}", stderr(&out));
}

#[test]
fn check_says_when_serve_will_rotate_to_another_algorithm() {
    let dir = tempfile::tempdir().unwrap();
    assert!(tessera(dir.path(), &["migrate"], &[]).status.success());
    let rotated = tessera(dir.path(), &["rotate-key"], &[("TESSERA_SIGNING_ALG", "RS256")]);
    assert!(rotated.status.success(), "{}", stderr(&rotated));
    let out = tessera(dir.path(), &["check", "--signing-alg", "RS256"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("ok: signing keys: active"),
        "{}",
        stdout(&out)
    );
    assert!(
        stdout(&out).contains("(RS256)"),
        "rotate-key made a key of the configured algorithm"
    );

    let out = tessera(dir.path(), &["check"], &[("TESSERA_SIGNING_ALG", "es256")]);
    assert!(
        out.status.success(),
        "a pending rotation is not a problem: {}",
        stderr(&out)
    );
    let said = stdout(&out);
    assert!(
        said.contains("note: signing keys: active") && said.contains("will rotate to a new ES256 key"),
        "{said}"
    );
}

/// Every problem on a line of its own, and a failing exit.
fn assert_problems(out: &Output, expected: &[&str]) {
    assert!(!out.status.success(), "stdout {}", stdout(out));
    let said = stderr(out);
    let lines: Vec<&str> = said.lines().collect();
    assert_eq!(lines.len(), expected.len(), "{said}");
    for (line, words) in lines.iter().zip(expected) {
        assert!(
            line.starts_with("problem: ") && line.contains(words),
            "{line:?} should say {words:?}"
        );
    }
}

#[test]
fn check_reports_each_problem_on_one_line_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let out = tessera(
        dir.path(),
        &[
            "check",
            "--issuer",
            "auth server",
            "--listen",
            "127.0.0.1:notaport",
        ],
        &[
            (
                "TESSERA_ALERT_WEBHOOK_URL",
                "https://hooks.example.com/services/path-s3cret",
            ),
            (
                "TESSERA_DATABASE_URL",
                "postgres://tessera:dbpass-s3cret@127.0.0.1:1/t",
            ),
        ],
    );
    assert_problems(
        &out,
        &[
            "issuer \"auth server\"",
            "alert webhook",
            "listen address",
            "database postgres://tessera:<redacted>@",
        ],
    );
    assert!(!stderr(&out).contains("s3cret"), "{}", stderr(&out));

    let out = tessera(dir.path(), &["check"], &[("TESSERA_ACCESS_TTL", "soon")]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("access_ttl"), "{}", stderr(&out));
}

#[test]
fn check_refuses_a_damaged_key_and_a_schema_newer_than_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    assert!(tessera(dir.path(), &["migrate"], &[]).status.success());
    let kid = stdout(&tessera(dir.path(), &["rotate-key"], &[]))
        .trim()
        .rsplit(' ')
        .next()
        .expect("kid")
        .to_owned();
    let db = rusqlite::Connection::open(dir.path().join("tessera.db")).unwrap();
    db.execute("UPDATE signing_keys SET public_key = zeroblob(32)", [])
        .unwrap();
    let out = tessera(dir.path(), &["check"], &[]);
    assert_problems(&out, &[&format!("signing keys: bad signing key {kid}")]);

    db.execute_batch("PRAGMA user_version = 99").unwrap();
    let out = tessera(dir.path(), &["check"], &[]);
    assert_problems(
        &out,
        &[
            "schema version 99, newer than this release's",
            &format!("bad signing key {kid}"),
        ],
    );
}

/// The value of an unlabelled metric in a Prometheus text body.
fn metric(body: &str, name: &str) -> Option<f64> {
    body.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn metrics_count_live_sessions_at_most_once_a_minute() {
    let app = spawn_app().await;
    let alice = app.signup_and_login(EMAIL).await;
    app.login_ok(EMAIL).await;
    let bob = app.signup_and_login("bob@example.com").await;
    assert_status(app.logout_with_bearer(&s(&bob, "access_token")).await, 204).await;
    // A revoked session is not live; an ended one neither (alice's are both live).
    let scrape = || async { app.get("/metrics").await.text().await.expect("body") };
    let body = scrape().await;
    assert_eq!(metric(&body, "tessera_live_sessions"), Some(2.0), "{body}");

    // A third live session: not seen before the next count, however often scraped.
    app.login_ok(EMAIL).await;
    for _ in 0..5 {
        assert_eq!(metric(&scrape().await, "tessera_live_sessions"), Some(2.0));
    }
    assert_status(app.logout_with_bearer(&s(&alice, "access_token")).await, 204).await;

    let pool = metric(&body, "tessera_database_pool_connections_max");
    if app.config.database_url.starts_with("postgres") {
        assert_eq!(
            pool,
            Some(f64::from(app.config.database_max_connections)),
            "{body}"
        );
        let open = metric(&body, "tessera_database_pool_connections_open").expect("open");
        let in_use = metric(&body, "tessera_database_pool_connections_in_use").expect("in use");
        assert!(in_use <= open && open >= 1.0, "{body}");
    } else {
        assert_eq!(pool, None, "SQLite has no pool to report: {body}");
    }
}
