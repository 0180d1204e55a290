//! A real SMTP server for tests: aiosmtpd (PyPI, pinned in `tests/mail/requirements.txt`)
//! running `tests/mail/smtp_sink.py`, which writes every mail it accepts to a directory as
//! JSON (envelope, TLS, authenticated user, headers, decoded text and HTML parts).
//!
//! The Python it runs comes from `TESSERA_TEST_SMTP_PYTHON` if set; else from a venv under
//! `target/mail-venv`, created (and aiosmtpd installed from PyPI) on first use. When that
//! fails the test says `SKIPPED` and passes, unless `CI` or `TESSERA_TEST_SMTP_REQUIRED` is
//! set (`.ci/run` sets the latter), where it fails.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The venv's Python, found or made once per test process (tests run in parallel).
static PYTHON: Mutex<Option<Result<PathBuf, String>>> = Mutex::new(None);

fn required() -> bool {
    ["CI", "TESSERA_TEST_SMTP_REQUIRED"]
        .iter()
        .any(|v| std::env::var(v).is_ok_and(|v| !v.is_empty() && v != "0" && v != "false"))
}

fn has_aiosmtpd(python: &Path) -> bool {
    Command::new(python)
        .args(["-c", "import aiosmtpd"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn find_or_install() -> Result<PathBuf, String> {
    if let Ok(python) = std::env::var("TESSERA_TEST_SMTP_PYTHON") {
        let python = PathBuf::from(python);
        return if has_aiosmtpd(&python) {
            Ok(python)
        } else {
            Err(format!(
                "TESSERA_TEST_SMTP_PYTHON={} cannot import aiosmtpd",
                python.display()
            ))
        };
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let venv = root.join("target/mail-venv");
    let python = venv.join("bin/python");
    if has_aiosmtpd(&python) {
        return Ok(python);
    }
    let run = |cmd: &mut Command, what: &str| -> Result<(), String> {
        let out = cmd.output().map_err(|e| format!("{what}: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!("{what} failed: {}", String::from_utf8_lossy(&out.stderr)))
        }
    };
    eprintln!("installing aiosmtpd into {} for the mail tests", venv.display());
    if !python.exists() {
        run(
            Command::new("python3").args(["-m", "venv"]).arg(&venv),
            "python3 -m venv",
        )?;
    }
    run(
        Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check", "-r"])
            .arg(root.join("tests/mail/requirements.txt")),
        "pip install aiosmtpd",
    )?;
    if has_aiosmtpd(&python) {
        Ok(python)
    } else {
        Err("aiosmtpd installed but not importable".into())
    }
}

/// The Python to run the sink with, or `None` (after saying so) when there is none and the
/// mail tests are not required here.
fn python(test: &str) -> Option<PathBuf> {
    let mut found = PYTHON.lock().unwrap_or_else(|p| p.into_inner());
    let result = found.get_or_insert_with(find_or_install).clone();
    match result {
        Ok(python) => Some(python),
        Err(e) if required() => panic!("the mail tests need aiosmtpd: {e}"),
        Err(e) => {
            eprintln!("SKIPPED {test}: no aiosmtpd ({e}); set TESSERA_TEST_SMTP_REQUIRED=1 to require it");
            None
        }
    }
}

/// How the sink listens.
#[derive(Clone, Debug, Default)]
pub struct SinkOptions {
    /// 0: any free port.
    pub port: u16,
    /// Offer and require STARTTLS with this (certificate, key).
    pub starttls: Option<(PathBuf, PathBuf)>,
    /// TLS from the first byte with this (certificate, key).
    pub implicit_tls: Option<(PathBuf, PathBuf)>,
    /// Require AUTH as this user and password.
    pub auth: Option<(String, String)>,
}

/// A running sink; killed when dropped.
pub struct SmtpSink {
    child: Child,
    pub port: u16,
    maildir: tempfile::TempDir,
}

/// One mail the sink accepted.
#[derive(Clone, Debug)]
pub struct Received(pub Value);

impl Received {
    pub fn header(&self, name: &str) -> String {
        self.0["headers"][name.to_ascii_lowercase()]
            .as_str()
            .unwrap_or_else(|| panic!("no {name} header in {}", self.0))
            .to_owned()
    }

    pub fn text(&self) -> String {
        self.0["text"].as_str().unwrap_or_default().to_owned()
    }

    pub fn html(&self) -> String {
        self.0["html"].as_str().unwrap_or_default().to_owned()
    }

    pub fn tls(&self) -> bool {
        self.0["tls"] == true
    }

    pub fn auth_user(&self) -> Option<String> {
        self.0["auth_user"].as_str().map(str::to_owned)
    }

    pub fn rcpt_tos(&self) -> Vec<String> {
        self.0["rcpt_tos"]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
            .unwrap_or_default()
    }
}

impl SmtpSink {
    /// Starts the sink; `None` when aiosmtpd is not available and not required (said so).
    pub fn start(test: &str, options: &SinkOptions) -> Option<SmtpSink> {
        let python = python(test)?;
        let maildir = tempfile::tempdir().expect("maildir");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mail/smtp_sink.py");
        let mut cmd = Command::new(python);
        cmd.arg("-W")
            .arg("ignore")
            .arg(script)
            .arg("--port")
            .arg(options.port.to_string())
            .arg("--maildir")
            .arg(maildir.path());
        if let Some((cert, key)) = &options.starttls {
            cmd.arg("--starttls").arg(cert).arg(key);
        }
        if let Some((cert, key)) = &options.implicit_tls {
            cmd.arg("--implicit-tls").arg(cert).arg(key);
        }
        if let Some((user, password)) = &options.auth {
            cmd.arg("--auth").arg(format!("{user}:{password}"));
        }
        // Its complaints (a client refusing its certificate, as some tests want) go to a file
        // beside the mails, not into the test's output.
        let log = std::fs::File::create(maildir.path().join("sink.log")).expect("sink log");
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start the SMTP sink");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).expect("sink output");
        let port = line
            .trim()
            .strip_prefix("ready ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| {
                let log = std::fs::read_to_string(maildir.path().join("sink.log")).unwrap_or_default();
                panic!("the SMTP sink did not start: {line:?}\n{log}")
            });
        Some(SmtpSink { child, port, maildir })
    }

    /// Every mail accepted so far, in order.
    pub fn mails(&self) -> Vec<Received> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.maildir.path())
            .expect("maildir")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        files.sort();
        files
            .iter()
            .map(|f| {
                let text = std::fs::read_to_string(f).expect("mail file");
                Received(serde_json::from_str(&text).expect("mail JSON"))
            })
            .collect()
    }

    /// Waits until `n` mails have arrived (at most `within`); returns them all.
    pub async fn wait_for(&self, n: usize, within: Duration) -> Vec<Received> {
        let deadline = Instant::now() + within;
        loop {
            let mails = self.mails();
            if mails.len() >= n {
                return mails;
            }
            assert!(
                Instant::now() < deadline,
                "{} mail(s) arrived within {within:?}, {n} expected",
                mails.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn url_host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port nothing listens on now (bound and released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A private CA and a server certificate it signed for `127.0.0.1` and `localhost`, made
/// with the openssl command: (CA certificate, server certificate, server key) in `dir`.
pub fn certificates(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let (ca_key, ca) = (dir.join("ca.key"), dir.join("ca.pem"));
    let (key, csr, cert) = (
        dir.join("server.key"),
        dir.join("server.csr"),
        dir.join("server.pem"),
    );
    let ext = dir.join("server.ext");
    std::fs::write(
        &ext,
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .expect("write ext");
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl").args(args).output().expect("run openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let p = |p: &PathBuf| p.to_str().expect("utf-8 path").to_owned();
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        &p(&ca_key),
        "-out",
        &p(&ca),
        "-days",
        "2",
        "-subj",
        "/CN=Tessera test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        &p(&key),
        "-out",
        &p(&csr),
        "-subj",
        "/CN=localhost",
    ]);
    openssl(&[
        "x509",
        "-req",
        "-in",
        &p(&csr),
        "-CA",
        &p(&ca),
        "-CAkey",
        &p(&ca_key),
        "-CAcreateserial",
        "-out",
        &p(&cert),
        "-days",
        "2",
        "-extfile",
        &p(&ext),
    ]);
    (ca, cert, key)
}
