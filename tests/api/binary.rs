//! The real `tessera serve` binary: configuration from the environment, the ready line, the
//! database location, and a clean exit on SIGTERM.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::helpers::{EMAIL, PASSWORD};

const READY_PREFIX: &str = "listening on http://";
const EXIT_DEADLINE: Duration = Duration::from_secs(10);

/// A running `tessera serve` child process; killed if a test ends without stopping it.
pub(crate) struct Served {
    child: Child,
    addr: SocketAddr,
    stderr_log: std::path::PathBuf,
}

impl Served {
    /// Starts the binary in `dir` with rate limits off, a free port, no inherited `TESSERA_*`
    /// settings, plus `env`; waits for the ready line.
    fn start(dir: &Path, env: &[(&str, String)]) -> Served {
        Served::start_with(dir, &[], env)
    }

    /// [`Served::start`] with extra command-line arguments after `serve`.
    pub(crate) fn start_with(dir: &Path, args: &[&str], env: &[(&str, String)]) -> Served {
        let (mut served, lines) = Served::spawn(dir, args, env);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(addr) = line.trim().strip_prefix(READY_PREFIX) {
                        served.addr = addr.parse().unwrap_or_else(|e| panic!("bad address {addr}: {e}"));
                        return served;
                    }
                }
                Err(e) => panic!("no ready line ({e}); stderr:\n{}", served.stderr()),
            }
        }
    }

    /// Spawns `tessera serve` as [`Served::start_with`] does, without waiting for it to be
    /// ready; returns it and the lines of its standard output.
    pub(crate) fn spawn(
        dir: &Path,
        args: &[&str],
        env: &[(&str, String)],
    ) -> (Served, mpsc::Receiver<String>) {
        let stderr_log = dir.join("stderr.log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tessera"));
        cmd.arg("serve")
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(File::create(&stderr_log).expect("stderr log"));
        for (name, _) in std::env::vars().filter(|(k, _)| k.starts_with("TESSERA_")) {
            cmd.env_remove(name);
        }
        cmd.env("TESSERA_LISTEN", "127.0.0.1:0")
            .env("TESSERA_LOGIN_RATE", "0")
            .envs(env.iter().map(|(k, v)| (k, v)));
        let mut child = cmd.spawn().expect("spawn tessera");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let served = Served {
            child,
            addr: "0.0.0.0:0".parse().unwrap(),
            stderr_log,
        };
        (served, rx)
    }

    pub(crate) fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// SIGKILL: no shutdown, no draining, no flushing.
    pub(crate) fn kill_9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_log).unwrap_or_default()
    }

    fn sigterm(&self) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().expect("kill");
        assert!(sent.success(), "kill -TERM {pid}");
    }

    /// Waits (at most [`EXIT_DEADLINE`]) for the process to exit.
    pub(crate) fn wait_for_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + EXIT_DEADLINE;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "still running after {EXIT_DEADLINE:?}; stderr:\n{}",
            self.stderr()
        );
    }

    /// Sends SIGTERM and asserts a successful exit within [`EXIT_DEADLINE`].
    pub(crate) fn terminate(&mut self) {
        self.sigterm();
        self.assert_exits_cleanly();
    }

    fn assert_exits_cleanly(&mut self) {
        let status = self.wait_for_exit();
        assert!(
            status.success(),
            "exit status {status}; stderr:\n{}",
            self.stderr()
        );
    }

    /// Sends one HTTP/1.1 request and returns the status code and body.
    pub(crate) fn request(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        let mut stream = TcpStream::connect(self.addr).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        stream
            .write_all(request_head(method, path, body).as_bytes())
            .unwrap();
        stream.write_all(body.unwrap_or_default().as_bytes()).unwrap();
        read_response(stream)
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn request_head(method: &str, path: &str, body: Option<&str>) -> String {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    if let Some(body) = body {
        head += &format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        );
    }
    head + "\r\n"
}

/// Reads a whole `Connection: close` response; returns the status code and body.
fn read_response(mut stream: TcpStream) -> (u16, String) {
    let mut raw = String::new();
    stream.read_to_string(&mut raw).expect("read response");
    let status = raw
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {raw:?}"));
    let body = raw.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_owned();
    (status, body)
}

pub(crate) fn credentials_body() -> String {
    serde_json::json!({ "email": EMAIL, "password": PASSWORD }).to_string()
}

fn assert_healthy(served: &Served) {
    let (status, body) = served.request("GET", "/healthz", None);
    assert_eq!(status, 200, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(body, serde_json::json!({ "status": "ok" }));
}

#[test]
fn serve_prints_its_address_answers_and_exits_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("t.db");
    let url = format!("sqlite://{}", db.display());
    assert!(url.starts_with("sqlite:///"), "absolute form: {url}");
    let mut served = Served::start(dir.path(), &[("TESSERA_DATABASE_URL", url)]);
    assert!(served.addr.port() != 0, "port 0 resolved to a real port");
    assert_healthy(&served);
    let (status, body) = served.request("POST", "/v1/auth/register", Some(&credentials_body()));
    assert_eq!(status, 201, "{body}");
    assert!(db.exists(), "database at the absolute path");
    served.terminate();
}

#[test]
fn the_default_database_is_created_in_the_working_directory() {
    let dir = tempfile::tempdir().unwrap();
    let mut served = Served::start(dir.path(), &[]);
    assert_healthy(&served);
    assert!(dir.path().join("tessera.db").exists(), "./tessera.db created");
    served.terminate();
}

#[test]
fn a_relative_database_url_is_relative_to_the_working_directory() {
    let dir = tempfile::tempdir().unwrap();
    let mut served = Served::start(
        dir.path(),
        &[("TESSERA_DATABASE_URL", "sqlite://relative.db".into())],
    );
    assert_healthy(&served);
    assert!(
        dir.path().join("relative.db").exists(),
        "relative.db in the working directory"
    );
    served.terminate();
}

#[test]
fn sigterm_lets_a_request_in_flight_finish() {
    let dir = tempfile::tempdir().unwrap();
    let mut served = Served::start(dir.path(), &[]);
    let body = credentials_body();
    let (first, rest) = body.split_at(body.len() / 2);
    let mut stream = TcpStream::connect(served.addr).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    stream
        .write_all(request_head("POST", "/v1/auth/register", Some(&body)).as_bytes())
        .unwrap();
    stream.write_all(first.as_bytes()).unwrap();
    thread::sleep(Duration::from_millis(200));

    served.sigterm();
    thread::sleep(Duration::from_millis(300));
    stream.write_all(rest.as_bytes()).unwrap();
    let (status, response) = read_response(stream);
    assert_eq!(status, 201, "the request in flight completes: {response}");
    served.assert_exits_cleanly();
}

/// Runs `tessera <command>` to completion in `dir` with `env`; returns its standard output.
fn run_command(dir: &Path, command: &str, env: &[(&str, String)]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .arg(command)
        .current_dir(dir)
        .env_remove("TESSERA_DATABASE_URL")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .expect("run tessera");
    assert!(
        output.status.success(),
        "tessera {command} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn migrate_and_rotate_key_prepare_the_database_serve_uses() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("ops.db").display());
    let env = [("TESSERA_DATABASE_URL", url)];
    assert!(run_command(dir.path(), "migrate", &env).contains("migrations applied"));
    let rotated = run_command(dir.path(), "rotate-key", &env);
    let kid = rotated
        .trim()
        .strip_prefix("new active signing key: ")
        .unwrap_or_else(|| panic!("unexpected output {rotated:?}"))
        .to_owned();

    let mut served = Served::start(dir.path(), &env);
    let (status, jwks) = served.request("GET", "/.well-known/jwks.json", None);
    assert_eq!(status, 200);
    let jwks: serde_json::Value = serde_json::from_str(&jwks).expect("JSON");
    let kids: Vec<_> = jwks["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| k["kid"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(kids, vec![kid], "serve signs with the key rotate-key made");
    served.terminate();
}

#[test]
fn a_start_that_cannot_listen_changes_nothing_in_the_database() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("bind.db").display());
    let env = [("TESSERA_DATABASE_URL", url.clone())];
    let mut served = Served::start(dir.path(), &env);
    let (_, jwks) = served.request("GET", "/.well-known/jwks.json", None);
    served.terminate();

    // A new algorithm would rotate the key at start; the port is taken, so there is no start.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").to_string();
    let (mut failed, _) = Served::spawn(
        dir.path(),
        &[],
        &[
            ("TESSERA_DATABASE_URL", url.clone()),
            ("TESSERA_LISTEN", port),
            ("TESSERA_SIGNING_ALG", "ES256".into()),
        ],
    );
    let status = failed.wait_for_exit();
    assert!(!status.success(), "a taken port is an error");
    assert!(failed.stderr().contains("listen"), "{}", failed.stderr());
    drop(taken);

    let mut again = Served::start(dir.path(), &env);
    let (_, after) = again.request("GET", "/.well-known/jwks.json", None);
    again.terminate();
    assert_eq!(
        after, jwks,
        "the same keys: nothing was rotated by the failed start"
    );
}

#[test]
fn the_issuer_follows_the_listen_address() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("issuer.db").display());
    // A free port, named explicitly (port 0 is known only once bound).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let mut served = Served::start(
        dir.path(),
        &[
            ("TESSERA_DATABASE_URL", url),
            ("TESSERA_LISTEN", format!("127.0.0.1:{port}")),
        ],
    );
    let (status, body) = served.request("GET", "/.well-known/openid-configuration", None);
    served.terminate();
    assert_eq!(status, 200, "{body}");
    let doc: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(doc["issuer"], format!("http://127.0.0.1:{port}"));
}

#[test]
fn admin_commands_refuse_a_database_that_is_not_there_and_create_none() {
    let dir = tempfile::tempdir().expect("tempdir");
    for args in [
        &["users", "list"][..],
        &["sessions", "list", "--user", "a@example.com"],
        &["audit"],
        &["keys", "list"],
        &["rotate-key"],
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_tessera"))
            .args(args)
            .current_dir(dir.path())
            .env_remove("TESSERA_DATABASE_URL")
            .output()
            .expect("run tessera");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?} succeeded");
        assert!(
            stderr.contains("no database at tessera.db") && stderr.contains("TESSERA_DATABASE_URL"),
            "{args:?}: {stderr}"
        );
        assert!(
            !dir.path().join("tessera.db").exists(),
            "{args:?} created a database"
        );
    }
}
