//! Configuration precedence in the real binary: a flag beats its `TESSERA_*` variable, which
//! beats the `--config` TOML file, which beats the default; an invalid value stops `serve`.

use crate::binary::{credentials_body, Served};

/// The TOML file every precedence test starts from.
const CONFIG_FILE: &str = "access_ttl = \"2m\"\n";

/// Runs `tessera serve --config FILE` (FILE sets `access_ttl` to 2m) with `args` and `env`,
/// logs in and returns the token response's `expires_in`.
fn login_expires_in(args: &[&str], env: &[(&str, String)]) -> i64 {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tessera.toml");
    std::fs::write(&file, CONFIG_FILE).unwrap();
    let mut all = vec!["--config", file.to_str().expect("UTF-8 path")];
    all.extend_from_slice(args);
    let mut served = Served::start_with(dir.path(), &all, env);
    let (status, body) = served.request("POST", "/v1/auth/register", Some(&credentials_body()));
    assert_eq!(status, 201, "{body}");
    let (status, body) = served.request("POST", "/v1/auth/login", Some(&credentials_body()));
    assert_eq!(status, 200, "{body}");
    served.terminate();
    let token: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    token["expires_in"]
        .as_i64()
        .unwrap_or_else(|| panic!("expires_in missing: {token}"))
}

fn access_ttl_env(value: &str) -> [(&'static str, String); 1] {
    [("TESSERA_ACCESS_TTL", value.to_owned())]
}

#[test]
fn a_flag_beats_the_environment_and_the_file() {
    let expires_in = login_expires_in(&["--access-ttl", "4m"], &access_ttl_env("3m"));
    assert_eq!(expires_in, 240);
}

#[test]
fn the_environment_beats_the_file() {
    assert_eq!(login_expires_in(&[], &access_ttl_env("3m")), 180);
}

#[test]
fn the_file_beats_the_default() {
    assert_eq!(login_expires_in(&[], &[]), 120);
}

#[test]
fn an_invalid_setting_stops_serve_with_a_message_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let (mut served, stdout) = Served::spawn(dir.path(), &[], &access_ttl_env("banana"));
    let status = served.wait_for_exit();
    assert!(!status.success(), "exit status {status}");
    let stderr = served.stderr().to_lowercase();
    assert!(
        stderr.contains("access_ttl") || stderr.contains("access-ttl"),
        "stderr names the setting: {stderr}"
    );
    assert!(stderr.contains("banana"), "stderr shows the value: {stderr}");
    // The process has exited: its output ends.
    let printed: Vec<String> = stdout.iter().collect();
    assert!(
        !printed.iter().any(|line| line.contains("listening on")),
        "{printed:?}"
    );
}

/// `tessera <command> --help`, standard output.
fn help(args: &[&str]) -> String {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(args)
        .arg("--help")
        .output()
        .expect("run tessera");
    assert!(output.status.success(), "{args:?} --help");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn each_command_lists_only_the_settings_it_reads() {
    let serve = help(&["serve"]);
    for flag in ["--listen", "--access-ttl", "--database-url", "--smtp-url"] {
        assert!(serve.contains(flag), "serve --help lacks {flag}");
    }
    for command in [
        &["users"][..],
        &["users", "add"],
        &["sessions", "list"],
        &["audit"],
        &["migrate"],
    ] {
        let text = help(command);
        assert!(text.contains("--database-url"), "{command:?}");
        for flag in [
            "--listen",
            "--access-ttl",
            "--cors-origins",
            "--smtp-url",
            "--lockout-threshold",
        ] {
            assert!(!text.contains(flag), "{command:?} --help lists {flag}");
        }
    }
    let keys = help(&["keys", "rotate"]);
    assert!(keys.contains("--signing-alg") && keys.contains("--master-key") && !keys.contains("--listen"));
    let mail = help(&["mail", "test"]);
    assert!(mail.contains("--smtp-url") && !mail.contains("--access-ttl"));
}

#[test]
fn a_setting_hidden_from_a_commands_help_is_still_accepted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    let migrated = std::process::Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["migrate", "--database-url", &url, "--listen", "127.0.0.1:9"])
        .output()
        .expect("run tessera");
    assert!(
        migrated.status.success(),
        "{}",
        String::from_utf8_lossy(&migrated.stderr)
    );
    let listed = std::process::Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["--access-ttl", "5m", "users", "list", "--database-url", &url])
        .output()
        .expect("run tessera");
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
}
