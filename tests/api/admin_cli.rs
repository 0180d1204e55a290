//! The administrative commands (`tessera users|sessions|audit`) through the real binary, on
//! the database of a running server (SQLite, or PostgreSQL with TESSERA_TEST_BACKEND):
//! what they change is what the server then does.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::helpers::*;
use crate::jose::Jwt;

/// What one run of the binary did.
pub(crate) struct Ran {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    /// Standard output, after asserting success.
    pub fn out(&self) -> &str {
        assert!(self.ok, "failed: {}", self.stderr);
        &self.stdout
    }

    /// Each line of standard output as JSON (`--json` prints JSON Lines).
    pub fn json_lines(&self) -> Vec<Value> {
        self.out()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect()
    }
}

/// Runs `tessera ARGS` on `app`'s database with `stdin`, off the test's runtime.
pub(crate) async fn tessera(app: &TestApp, args: &[&str], stdin: Option<&str>) -> Ran {
    tessera_with_env(app, args, stdin, &[]).await
}

/// [`tessera`] with `TESSERA_*` settings of its own in `env`.
pub(crate) async fn tessera_with_env(
    app: &TestApp,
    args: &[&str],
    stdin: Option<&str>,
    env: &[(&str, &str)],
) -> Ran {
    let url = app.config.database_url.clone();
    let dir = app.storage.dir.path().to_owned();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let stdin = stdin.map(str::to_owned);
    let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tessera"));
        for (name, _) in std::env::vars().filter(|(k, _)| k.starts_with("TESSERA_")) {
            cmd.env_remove(name);
        }
        let mut child = cmd
            .args(&args)
            .current_dir(dir)
            .env("TESSERA_DATABASE_URL", url)
            .envs(env)
            .env("USER", "test-operator")
            .env_remove("SUDO_USER")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tessera");
        let mut input = child.stdin.take().expect("stdin");
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).expect("write stdin");
        }
        drop(input);
        let output = child.wait_with_output().expect("run tessera");
        Ran {
            ok: output.status.success(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    })
    .await
    .expect("join")
}

fn roles_of(token_response: &Value) -> Value {
    Jwt::parse(&s(token_response, "access_token")).claims["roles"].clone()
}

/// The audit events `tessera audit ARGS --json` lists.
async fn audit(app: &TestApp, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["audit", "--json"];
    all.extend_from_slice(args);
    tessera(app, &all, None).await.json_lines()
}

#[tokio::test]
async fn users_add_creates_an_account_whose_tokens_carry_its_roles() {
    let app = spawn_app().await;
    let added = tessera(
        &app,
        &[
            "users",
            "add",
            "Bob@Example.com",
            "--password-stdin",
            "--role",
            "admin",
            "--role",
            "ops",
        ],
        Some(&format!("{PASSWORD}\n")),
    )
    .await;
    assert!(
        added.out().starts_with("added bob@example.com"),
        "{}",
        added.stdout
    );
    assert!(!added.stdout.contains(PASSWORD) && !added.stderr.contains(PASSWORD));

    let t = json_ok(app.login_with("bob@example.com", PASSWORD).await).await;
    assert_eq!(roles_of(&t), serde_json::json!(["admin", "ops"]));

    let listed = tessera(&app, &["users", "list", "--json"], None)
        .await
        .json_lines();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["email"], "bob@example.com");
    assert_eq!(listed[0]["disabled_at"], Value::Null);
    let table = tessera(&app, &["users", "list"], None).await;
    assert!(table.out().starts_with("EMAIL"), "{}", table.stdout);
    assert!(table.stdout.contains("admin,ops"), "{}", table.stdout);

    let shown = tessera(&app, &["users", "show", "bob@example.com", "--json"], None)
        .await
        .json_lines();
    assert_eq!(shown[0]["live_sessions"], 1);
    assert_eq!(shown[0]["id"], t["user"]["id"]);

    let events = audit(&app, &["--kind", "admin_user_added"]).await;
    assert_eq!(events.len(), 1, "{events:?}");
    // `--json` prints a detail written as JSON as an object, not as a string holding JSON.
    let detail = &events[0]["detail"];
    assert!(detail.is_object(), "{detail}");
    assert_eq!(detail["by"], "test-operator");
    assert_eq!(detail["email"], "bob@example.com");

    let again = tessera(
        &app,
        &["users", "add", "bob@example.com", "--password-stdin"],
        Some(PASSWORD),
    )
    .await;
    assert!(
        !again.ok && again.stderr.contains("exists already"),
        "{}",
        again.stderr
    );
    let short = tessera(
        &app,
        &["users", "add", "carol@example.com", "--password-stdin"],
        Some("short\n"),
    )
    .await;
    assert!(
        !short.ok && short.stderr.contains("at least 8"),
        "{}",
        short.stderr
    );
    // No terminal and no --password-stdin: refused rather than waiting or creating anything.
    let no_password = tessera(&app, &["users", "add", "carol@example.com"], None).await;
    assert!(
        !no_password.ok && no_password.stderr.contains("--password-stdin"),
        "{}",
        no_password.stderr
    );
    assert_eq!(
        tessera(&app, &["users", "list", "--json"], None)
            .await
            .json_lines()
            .len(),
        1
    );
}

#[tokio::test]
async fn disabling_refuses_logins_refreshes_and_running_access_tokens_until_enabled() {
    let app = spawn_app().await;
    let t = app.signup_and_login(EMAIL).await;
    let access = s(&t, "access_token");
    // The server now remembers the session as live: only the revocation log can change that.
    assert_status(app.me(&access).await, 200).await;

    let disabled = tessera(&app, &["users", "disable", EMAIL], None).await;
    assert_eq!(
        disabled.out().trim(),
        format!("disabled {EMAIL}; 1 session(s) revoked")
    );

    let refused = assert_problem(app.login(EMAIL).await, 401, "invalid_credentials").await;
    let wrong = assert_problem(
        app.login_with(EMAIL, "not the password").await,
        401,
        "invalid_credentials",
    )
    .await;
    assert_eq!(
        refused, wrong,
        "a disabled account answers exactly like a wrong password"
    );
    assert_problem(app.refresh(&s(&t, "refresh_token")).await, 401, "session_revoked").await;

    let start = Instant::now();
    loop {
        let r = app.me(&access).await;
        if r.status() == 401 {
            assert_problem(r, 401, "session_revoked").await;
            break;
        }
        assert!(
            start.elapsed() < Duration::from_millis(1500),
            "access token still accepted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let shown = tessera(&app, &["users", "show", EMAIL, "--json"], None)
        .await
        .json_lines();
    assert_rfc3339(&shown[0]["disabled_at"]);
    assert_eq!(shown[0]["live_sessions"], 0);
    let failures = audit(&app, &["--user", EMAIL, "--kind", "login_failed"]).await;
    assert!(
        failures.iter().any(|e| e["detail"] == "account disabled"),
        "{failures:?}"
    );

    let enabled = tessera(&app, &["users", "enable", EMAIL], None).await;
    assert_eq!(enabled.out().trim(), format!("enabled {EMAIL}"));
    app.login_ok(EMAIL).await;
    let again = tessera(&app, &["users", "enable", EMAIL], None).await;
    assert_eq!(again.out().trim(), format!("{EMAIL} was not disabled"));
    let kinds: Vec<Value> = audit(&app, &["--user", EMAIL])
        .await
        .iter()
        .map(|e| e["event"].clone())
        .collect();
    assert!(kinds.contains(&"admin_user_disabled".into()) && kinds.contains(&"admin_user_enabled".into()));

    let nobody = tessera(&app, &["users", "disable", "nobody@example.com"], None).await;
    assert!(
        !nobody.ok && nobody.stderr.contains("no account"),
        "{}",
        nobody.stderr
    );
}

#[tokio::test]
async fn roles_set_from_the_command_line_reach_the_next_refresh() {
    let app = spawn_app().await;
    let t = app.signup_and_login(EMAIL).await;
    assert_eq!(roles_of(&t), serde_json::json!([]));

    let set = tessera(
        &app,
        &["users", "set-roles", EMAIL, "admin", "billing:read", "admin"],
        None,
    )
    .await;
    assert_eq!(set.out().trim(), format!("roles of {EMAIL}: admin billing:read"));
    let t = app.refresh_ok(&s(&t, "refresh_token")).await;
    assert_eq!(roles_of(&t), serde_json::json!(["admin", "billing:read"]));

    tessera(&app, &["users", "set-roles", EMAIL], None).await.out();
    let t = app.refresh_ok(&s(&t, "refresh_token")).await;
    assert_eq!(roles_of(&t), serde_json::json!([]));

    let bad = tessera(&app, &["users", "set-roles", EMAIL, "has space"], None).await;
    assert!(!bad.ok && bad.stderr.contains("role"), "{}", bad.stderr);
    let events = audit(&app, &["--kind", "admin_roles_set"]).await;
    assert_eq!(events.len(), 2, "{events:?}");
}

#[tokio::test]
async fn sessions_are_listed_and_revoked_by_id_or_by_user() {
    let app = spawn_app().await;
    let first = app.signup_and_login(EMAIL).await;
    let second = app.login_ok(EMAIL).await;
    let third = app.login_ok(EMAIL).await;

    let listed = tessera(&app, &["sessions", "list", "--user", EMAIL, "--json"], None)
        .await
        .json_lines();
    let ids: Vec<String> = listed.iter().map(|l| s(l, "id")).collect();
    assert_eq!(
        ids,
        app.session_ids(&s(&third, "access_token")).await,
        "same sessions, same order"
    );
    let table = tessera(&app, &["sessions", "list", "--user", EMAIL], None).await;
    assert_eq!(
        table.out().lines().count(),
        4,
        "header and three sessions: {}",
        table.stdout
    );

    let victim = s(&second, "session_id");
    let revoked = tessera(&app, &["sessions", "revoke", &victim], None).await;
    assert_eq!(revoked.out().trim(), format!("revoked session {victim}"));
    assert_problem(
        app.refresh(&s(&second, "refresh_token")).await,
        401,
        "session_revoked",
    )
    .await;
    let first = app.refresh_ok(&s(&first, "refresh_token")).await;
    let again = tessera(&app, &["sessions", "revoke", &victim], None).await;
    assert_eq!(
        again.out().trim(),
        format!("session {victim} was already revoked")
    );
    let unknown = tessera(
        &app,
        &["sessions", "revoke", &uuid::Uuid::now_v7().to_string()],
        None,
    )
    .await;
    assert!(
        !unknown.ok && unknown.stderr.contains("no session"),
        "{}",
        unknown.stderr
    );

    let all = tessera(&app, &["sessions", "revoke", "--user", EMAIL], None).await;
    assert_eq!(all.out().trim(), format!("2 session(s) of {EMAIL} revoked"));
    for t in [&first, &third] {
        assert_problem(app.refresh(&s(t, "refresh_token")).await, 401, "session_revoked").await;
    }
    let listed = tessera(&app, &["sessions", "list", "--user", EMAIL, "--json"], None).await;
    assert!(listed.json_lines().is_empty());

    let events = audit(&app, &["--user", EMAIL, "--kind", "admin_session_revoked"]).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["session_id"], victim.as_str());
    assert_eq!(audit(&app, &["--kind", "admin_sessions_revoked"]).await.len(), 1);
    let neither = tessera(&app, &["sessions", "revoke"], None).await;
    assert!(!neither.ok, "an id or --user is required");
}

#[tokio::test]
async fn audit_refuses_an_unknown_kind_and_lists_the_kinds_in_its_help() {
    let app = spawn_app().await;
    let typo = tessera(&app, &["audit", "--kind", "login_sucess"], None).await;
    assert!(!typo.ok, "an unknown kind is an error, not an empty answer");
    assert!(
        typo.stderr.contains("login_sucess") && typo.stderr.contains("login_succeeded"),
        "{}",
        typo.stderr
    );
    let help = tessera(&app, &["audit", "--help"], None).await;
    for kind in ["login_failed", "refresh_token_reused", "admin_user_disabled"] {
        assert!(help.out().contains(kind), "{kind} missing from --help");
    }
}

#[tokio::test]
async fn audit_lists_newest_first_filtered_by_user_kind_time_and_count() {
    let app = spawn_app().await;
    app.signup_and_login(EMAIL).await;
    app.signup_and_login("bob@example.com").await;
    assert_status(app.login_with("bob@example.com", "wrong password").await, 401).await;

    let all = audit(&app, &[]).await;
    assert_eq!(
        all.len(),
        5,
        "two registrations, two logins, one failure: {all:?}"
    );
    let times: Vec<String> = all.iter().map(|e| s(e, "at")).collect();
    let mut sorted = times.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(times, sorted, "newest first");

    let bobs = audit(&app, &["--user", "bob@example.com"]).await;
    assert_eq!(bobs.len(), 3);
    assert!(bobs.iter().all(|e| e["email"] == "bob@example.com"), "{bobs:?}");
    let logins = audit(&app, &["--kind", "login_succeeded"]).await;
    assert_eq!(logins.len(), 2);
    assert!(logins.iter().all(|e| e["event"] == "login_succeeded"));
    let failed = audit(&app, &["--user", "bob@example.com", "--kind", "login_failed"]).await;
    assert_eq!(failed.len(), 1);
    assert_eq!(audit(&app, &["--limit", "2"]).await, all[..2].to_vec());

    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(
        audit(&app, &["--since", "1s"]).await.is_empty(),
        "older than a second"
    );
    assert_eq!(audit(&app, &["--since", "1h"]).await.len(), 5);
    tessera(&app, &["users", "disable", "bob@example.com"], None)
        .await
        .out();
    let recent = audit(&app, &["--since", "1s"]).await;
    assert_eq!(recent.len(), 1, "{recent:?}");
    assert_eq!(recent[0]["event"], "admin_user_disabled");

    let table = tessera(&app, &["audit", "--user", EMAIL], None).await;
    let lines: Vec<&str> = table.out().lines().collect();
    assert!(
        lines[0].starts_with("AT") && lines[0].contains("EVENT"),
        "{lines:?}"
    );
    assert_eq!(lines.len(), 3, "header, registration, login: {lines:?}");
    let bad = tessera(&app, &["audit", "--since", "yesterday"], None).await;
    assert!(!bad.ok && bad.stderr.contains("--since"), "{}", bad.stderr);
}

#[tokio::test]
async fn a_password_set_and_a_deletion_from_the_command_line() {
    let app = spawn_app().await;
    let t = app.signup_and_login(EMAIL).await;
    let set = tessera(
        &app,
        &["users", "set-password", EMAIL, "--password-stdin"],
        Some("a new long password\n"),
    )
    .await;
    assert_eq!(
        set.out().trim(),
        format!("password of {EMAIL} set; 1 session(s) revoked")
    );
    assert_problem(app.refresh(&s(&t, "refresh_token")).await, 401, "session_revoked").await;
    let t = json_ok(app.login_with(EMAIL, "a new long password").await).await;

    let deleted = tessera(&app, &["users", "delete", EMAIL], None).await;
    assert_eq!(
        deleted.out().trim(),
        format!("deleted {EMAIL}; 1 session(s) revoked")
    );
    assert_eq!(app.refresh(&s(&t, "refresh_token")).await.status(), 401);
    let again = tessera(&app, &["users", "delete", EMAIL], None).await;
    assert!(!again.ok, "{}", again.stdout);
    let events = audit(&app, &["--kind", "admin_user_deleted"]).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["email"], Value::Null);
}

#[tokio::test]
async fn users_show_and_set_whether_an_address_is_verified() {
    let app = spawn_app().await;
    assert_eq!(app.register("vera@example.com").await.status(), 201);
    let shown = tessera(&app, &["users", "show", "vera@example.com"], None).await;
    assert!(shown.out().contains("email verified  no"), "{}", shown.stdout);
    let set = tessera(
        &app,
        &["users", "set-email-verified", "vera@example.com", "true"],
        None,
    )
    .await;
    assert!(set.out().contains("address verified"), "{}", set.stdout);
    let shown = tessera(&app, &["users", "show", "vera@example.com", "--json"], None).await;
    assert_eq!(shown.json_lines()[0]["email_verified"], true);
    let unset = tessera(
        &app,
        &["users", "set-email-verified", "vera@example.com", "false"],
        None,
    )
    .await;
    assert!(unset.out().contains("not verified"), "{}", unset.stdout);
    let missing = tessera(
        &app,
        &["users", "set-email-verified", "nobody@example.com", "true"],
        None,
    )
    .await;
    assert!(
        !missing.ok && missing.stderr.contains("no account"),
        "{}",
        missing.stderr
    );
}

#[tokio::test]
async fn users_add_invite_makes_an_account_that_waits_for_its_password() {
    let app = spawn_app().await;
    let added = tessera(&app, &["users", "add", "invitee@example.com", "--invite"], None).await;
    assert!(added.out().contains("invitation queued"), "{}", added.stdout);
    let events = audit(&app, &["--kind", "admin_user_added"]).await;
    assert_eq!(events[0]["detail"]["invited"], true);
    assert_problem(
        app.login_with("invitee@example.com", PASSWORD).await,
        401,
        "invalid_credentials",
    )
    .await;
}
