//! Starts the real Tessera binary for the integration tests: a fresh SQLite file, a free
//! port, the settings a test asks for.
//!
//! The binary belongs to another package, so Cargo does not build it for these tests and sets
//! no `CARGO_BIN_EXE_tessera`. It is looked for where Cargo puts it, `target/debug/tessera`
//! next to this test's own executable (`target/debug/deps/`), or at `TESSERA_BIN`. CI builds
//! it first (`cargo build -p tessera --bin tessera`, see .ci/run); building it from inside the
//! test would wait on the build-directory lock the running `cargo test` holds.

#![allow(dead_code)] // each test binary uses its own part of the helpers

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub const ISSUER: &str = "https://tessera.test";
pub const AUDIENCE: &str = "orders-api";
pub const PASSWORD: &str = "correct horse battery";

pub fn tessera_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("TESSERA_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("the test's own path");
    let path = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|debug| debug.join("tessera"))
        .expect("target/debug");
    assert!(
        path.exists(),
        "no Tessera binary at {}: run `cargo build -p tessera --bin tessera` first (or set TESSERA_BIN)",
        path.display()
    );
    path
}

pub struct Tessera {
    pub base: String,
    env: Vec<(String, String)>,
    _child: Child,
    _dir: tempfile::TempDir,
}

impl Tessera {
    /// A running Tessera with these `TESSERA_*` settings on top of the test defaults.
    pub async fn start(settings: &[(&str, &str)]) -> Tessera {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut env: Vec<(String, String)> = vec![
            (
                "TESSERA_DATABASE_URL".into(),
                format!("sqlite://{}", dir.path().join("tessera.db").display()),
            ),
            ("TESSERA_LISTEN".into(), "127.0.0.1:0".into()),
            ("TESSERA_ISSUER".into(), ISSUER.into()),
            ("TESSERA_AUDIENCE".into(), AUDIENCE.into()),
            // Every test client is 127.0.0.1; rate limits have tests of their own.
            ("TESSERA_LOGIN_RATE".into(), "0".into()),
            ("TESSERA_REFRESH_RATE".into(), "0".into()),
            ("RUST_LOG".into(), "warn".into()),
        ];
        for (name, value) in settings {
            env.retain(|(n, _)| n != name);
            env.push(((*name).into(), (*value).into()));
        }
        let mut child = Command::new(tessera_bin())
            .arg("serve")
            .envs(env.iter().map(|(n, v)| (n, v)))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("start tessera");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let base = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await.expect("read stdout") {
                if let Some(url) = line.strip_prefix("listening on ") {
                    return url.trim().to_string();
                }
            }
            panic!("tessera exited before listening");
        })
        .await
        .expect("tessera did not start within 30 s");
        // Keep draining stdout so the server never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Tessera {
            base,
            env,
            _child: child,
            _dir: dir,
        }
    }

    /// The server's process id (to stop and continue it as a stalled host would be).
    #[allow(dead_code)]
    pub fn pid(&self) -> u32 {
        self._child.id().expect("the server is running")
    }

    pub fn jwks_url(&self) -> String {
        format!("{}/.well-known/jwks.json", self.base)
    }

    /// Runs a `tessera` command on the same database as the server, with its settings and
    /// `overrides` on top.
    pub async fn cli(&self, overrides: &[(&str, &str)], args: &[&str]) {
        let output = Command::new(tessera_bin())
            .args(args)
            .envs(self.env.iter().map(|(n, v)| (n.as_str(), v.as_str())))
            .envs(overrides.iter().copied())
            .output()
            .await
            .expect("run tessera");
        assert!(
            output.status.success(),
            "tessera {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Registers `email` (if new) and logs in; returns the token response.
    pub async fn login(&self, email: &str) -> Value {
        let client = reqwest::Client::new();
        let registered = client
            .post(format!("{}/v1/auth/register", self.base))
            .json(&json!({"email": email, "password": PASSWORD}))
            .send()
            .await
            .expect("register");
        assert!(
            registered.status() == 201 || registered.status() == 409,
            "register: {}",
            registered.status()
        );
        let login = client
            .post(format!("{}/v1/auth/login", self.base))
            .json(&json!({"email": email, "password": PASSWORD}))
            .send()
            .await
            .expect("login");
        assert_eq!(login.status(), 200, "login");
        login.json().await.expect("token response")
    }
}

/// The `kid` in a token's header.
pub fn kid(token: &str) -> String {
    header(token)["kid"].as_str().unwrap_or_default().to_string()
}

/// The `alg` in a token's header.
pub fn alg(token: &str) -> String {
    header(token)["alg"].as_str().unwrap_or_default().to_string()
}

fn header(token: &str) -> Value {
    use base64::Engine as _;
    let header = token.split('.').next().unwrap_or_default();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .expect("base64url header");
    serde_json::from_slice(&bytes).expect("JSON header")
}
