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
