use std::path::PathBuf;
use std::time::Duration;

use clap::{CommandFactory, Parser};

use super::*;

/// The command line as the binary parses it (flags, then their `TESSERA_*` variables).
#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    config: ConfigArgs,
}

/// `ConfigArgs` from flags as clap parses them (with `TESSERA_*` variables of this process).
fn flags(argv: &[&str]) -> ConfigArgs {
    Cli::try_parse_from(std::iter::once("tessera").chain(argv.iter().copied()))
        .unwrap_or_else(|e| panic!("{argv:?}: {e}"))
        .config
}

fn load(argv: &[&str]) -> Result<Config, ConfigError> {
    Config::load(&flags(argv))
}

/// A TOML file in a fresh directory (kept alive by the returned guard).
fn file(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tessera.toml");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

fn load_file(text: &str) -> Result<Config, ConfigError> {
    let (_dir, path) = file(text);
    Config::load(&ConfigArgs {
        config: Some(path),
        ..ConfigArgs::default()
    })
}

const FEED_CREDENTIAL: &str = "feedcredential-0123456789abcdef0123456789";
const ADMIN_SECRET: &str = "adminsecret-0123456789abcdef0123456789abcd";

/// A configuration with every secret set, each one a distinct findable word.
fn every_secret_set() -> (Config, Vec<String>) {
    let master = MasterKey::generate().unwrap();
    let previous = MasterKey::generate().unwrap();
    let config = Config {
        database_url: "postgres://tessera:dbs3cret@db/tessera?password=qs3cret".into(),
        alert_webhook_url: Some("https://u:hooks3cret@hooks.example.com/T0/paths3cret".into()),
        alert_webhook_secret: Some("hmacs3cret".into()),
        revocation_feed_credentials: vec![FEED_CREDENTIAL.into()],
        admin_credentials: vec![format!("desk:admin:write:{ADMIN_SECRET}").into()],
        master_key: Some(master.clone()),
        master_key_previous: Some(previous.clone()),
        smtp_url: Some(SmtpUrl::parse("smtp://mailer:smtps3cret@mail.example.com").unwrap()),
        mail_from: Some("Example <no-reply@example.com>".into()),
        ..Config::default()
    };
    let secrets = [
        "dbs3cret",
        "smtps3cret",
        "qs3cret",
        "hooks3cret",
        "paths3cret",
        "hmacs3cret",
        FEED_CREDENTIAL,
        ADMIN_SECRET,
    ]
    .map(str::to_owned)
    .into_iter()
    .chain([master.to_base64(), previous.to_base64()])
    .collect();
    (config, secrets)
}

#[test]
fn every_setting_has_its_flag_its_variable_and_its_key() {
    let command = Cli::command();
    let secrets = [
        "alert_webhook_secret",
        "revocation_feed_credentials",
        "admin_credentials",
        "master_key",
        "master_key_previous",
        "smtp_url",
    ];
    for name in Config::NAMES {
        let arg = command
            .get_arguments()
            .find(|a| a.get_id() == *name)
            .unwrap_or_else(|| panic!("no flag for {name}"));
        assert_eq!(arg.get_long(), Some(name.replace('_', "-").as_str()));
        let env = format!("TESSERA_{}", name.to_uppercase());
        assert_eq!(arg.get_env(), Some(std::ffi::OsStr::new(&env)), "{name}");
        assert!(arg.is_global_set(), "{name} is a flag of every command");
        // A secret's value never shows in `--help`, even when its variable is set.
        assert_eq!(arg.is_hide_env_values_set(), secrets.contains(name), "{name}");
    }
    assert_eq!(Config::NAMES.len(), 63);
    // Every key `tessera config` prints is a setting, and every setting has its line (or, for
    // the secrets printed as comments and the unset lists, its name in one).
    let (config, _) = every_secret_set();
    let config = Config {
        alert_events: vec!["account_locked".into()],
        custom_claims: vec!["tenant_id".into()],
        mfa_required_roles: vec!["admin".into()],
        public_url: Some("https://auth.example.com".into()),
        smtp_ca_file: Some(PathBuf::from("/etc/tessera/ca.pem")),
        mail_templates: Some(PathBuf::from("/etc/tessera/mail")),
        product_name: Some("Example".into()),
        return_to_origins: vec!["https://app.example.com".into()],
        logo_url: Some("https://cdn.example.com/logo.svg".into()),
        accent_color: Some("#123456".into()),
        webauthn_rp_id: Some("example.com".into()),
        webauthn_origins: vec!["https://auth.example.com".into()],
        ..config
    };
    let printed = config.to_toml_redacted();
    for name in Config::NAMES {
        assert!(
            printed.lines().any(|line| line.starts_with(&format!("{name} = "))
                || line.starts_with(&format!("# {name} is set"))
                || line.starts_with(&format!("# {name}: "))),
            "{name} missing from\n{printed}"
        );
    }
}

#[test]
fn a_flag_beats_the_file_which_beats_the_default_for_each_kind_of_setting() {
    let (_dir, path) = file(
        "access_ttl = \"2m\"\nreuse_grace = 3\nmax_sessions = 4\nbody_limit = 1000\n\
         cookie_secure = false\npages = false\nsession_check = \"strict\"\n\
         cors_origins = [\"https://file.example\"]\nalert_webhook_secret = \"file-secret\"\n\
         issuer = \"https://file.example\"\n",
    );
    let c = load(&[
        "--config",
        path.to_str().unwrap(),
        "--access-ttl",
        "4m",
        "--max-sessions",
        "7",
        "--cookie-secure",
        "yes",
        "--session-check",
        "cached",
        "--cors-origins",
        "https://flag.example",
        "--alert-webhook-secret",
        "flag-secret",
    ])
    .unwrap();
    // Given as a flag and in the file: the flag.
    assert_eq!(c.access_ttl, Duration::from_secs(240));
    assert_eq!(c.max_sessions, 7);
    assert!(c.cookie_secure);
    assert_eq!(c.session_check, SessionCheck::Cached);
    assert_eq!(c.cors_origins, ["https://flag.example"]);
    assert_eq!(c.alert_webhook_secret.as_deref(), Some("flag-secret"));
    // In the file only: the file.
    assert_eq!(c.reuse_grace, Duration::from_secs(3));
    assert_eq!(c.body_limit, 1000);
    assert!(!c.pages);
    assert_eq!(c.issuer, "https://file.example");
    // Neither: the default.
    let d = Config::default();
    assert_eq!(c.refresh_ttl, d.refresh_ttl);
    assert_eq!(c.refresh_ttl, Duration::from_secs(30 * 86_400));
    assert_eq!(c.login_rate, 30);
    assert_eq!(c.audience, "tessera");
}

/// Variables are read by clap in this process: the checks run in a child process of this
/// test binary, with the variables set there only.
#[test]
fn a_variable_beats_the_file_and_a_flag_beats_the_variable() {
    const CHILD: &str = "TESSERA_UNIT_TEST_CHILD";
    let (_dir, path) = file(
        "access_ttl = \"2m\"\nrefresh_ttl = \"2d\"\nsession_ttl = \"3d\"\nmax_sessions = 4\n\
         cookie_secure = true\nalert_webhook_secret = \"file-secret\"\n\
         cors_origins = [\"https://file.example\"]\n",
    );
    if std::env::var_os(CHILD).is_some() {
        let c = load(&["--config", path.to_str().unwrap(), "--access-ttl", "4m"]).unwrap();
        assert_eq!(c.access_ttl, Duration::from_secs(240), "flag over variable");
        assert_eq!(
            c.refresh_ttl,
            Duration::from_secs(4 * 86_400),
            "variable over file"
        );
        assert_eq!(c.session_ttl, Duration::from_secs(3 * 86_400), "file");
        assert_eq!(c.reuse_grace, Duration::from_secs(10), "default");
        assert_eq!(c.max_sessions, 5);
        assert!(!c.cookie_secure);
        assert_eq!(c.alert_webhook_secret.as_deref(), Some("env-secret"));
        assert_eq!(c.cors_origins, ["https://env.example", "https://env2.example"]);
        return;
    }
    let mut child = std::process::Command::new(std::env::current_exe().unwrap());
    child.args([
        "--exact",
        "config::tests::a_variable_beats_the_file_and_a_flag_beats_the_variable",
        "--test-threads=1",
    ]);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("TESSERA_") {
            child.env_remove(name);
        }
    }
    let out = child
        .env(CHILD, "1")
        .env("TESSERA_ACCESS_TTL", "3m")
        .env("TESSERA_REFRESH_TTL", "4d")
        .env("TESSERA_MAX_SESSIONS", "5")
        .env("TESSERA_COOKIE_SECURE", "off")
        .env("TESSERA_ALERT_WEBHOOK_SECRET", "env-secret")
        .env("TESSERA_CORS_ORIGINS", "https://env.example https://env2.example")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("1 passed"), "the child ran the checks: {said}");
}

#[test]
fn each_check_refuses_with_its_message() {
    for (argv, message) in [
        (
            &["--access-ttl", "0"][..],
            "invalid value for access_ttl: must be positive",
        ),
        (
            &["--refresh-ttl", "0"],
            "invalid value for refresh_ttl: must be positive",
        ),
        (
            &["--session-ttl", "0s"],
            "invalid value for session_ttl: must be positive",
        ),
        (
            &["--password-reset-ttl", "0"],
            "invalid value for password_reset_ttl: must be positive",
        ),
        (
            &["--email-link-ttl", "0"],
            "invalid value for email_link_ttl: must be positive",
        ),
        (
            &["--max-sessions", "0"],
            "invalid value for max_sessions: must be at least 1",
        ),
        (
            &["--lockout-window", "0"],
            "invalid value for lockout_window: and lockout_cooldown must be positive when locking is on",
        ),
        (
            &["--lockout-cooldown", "0"],
            "invalid value for lockout_window: and lockout_cooldown must be positive when locking is on",
        ),
        (
            &["--client-timeout", "0"],
            "invalid value for client_timeout: must be positive",
        ),
        (
            &["--hash-concurrency", "0"],
            "invalid value for hash_concurrency: must be at least 1",
        ),
        (
            &["--max-connections", "0"],
            "invalid value for max_connections: must be at least 1",
        ),
        (
            &["--database-max-connections", "0"],
            "invalid value for database_max_connections: must be at least 1",
        ),
        (
            &["--alert-retry-min", "0"],
            "invalid value for alert_retry_min: must be positive",
        ),
        (
            &["--alert-retry-min", "11m"],
            "invalid value for alert_retry_max: must be at least alert_retry_min",
        ),
        (
            &["--alert-retry-max", "500ms"],
            "invalid value for alert_retry_max: must be at least alert_retry_min",
        ),
        (
            &["--smtp-url", "smtp://mail.example.com"],
            "invalid value for mail_from: is required with smtp_url",
        ),
        (
            &["--mail-from", "not an address"],
            "invalid value for mail_from: must be an address (no-reply@example.com) or a name and one (Example <no-reply@example.com>)",
        ),
        (
            &["--mail-give-up-after", "0"],
            "invalid value for mail_give_up_after: must be positive",
        ),
    ] {
        let err = load(argv).expect_err(&format!("{argv:?} is refused"));
        assert_eq!(err.to_string(), message, "{argv:?}");
    }
    // With locking off, a zero window is no error; at their bounds the others are none.
    for argv in [
        &["--lockout-threshold", "0", "--lockout-window", "0"][..],
        &["--alert-retry-min", "10m", "--alert-retry-max", "10m"],
        &[
            "--max-sessions",
            "1",
            "--hash-concurrency",
            "1",
            "--access-ttl",
            "1s",
        ],
    ] {
        load(argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
    }
}

#[test]
fn each_kind_of_value_is_parsed_with_a_message_naming_its_setting() {
    for (argv, message) in [
        (
            &["--access-ttl", "ten"][..],
            "invalid value for access_ttl: \"ten\" is not a duration (use e.g. 30, 10s, 15m, 12h, 30d)",
        ),
        (
            &["--key-publish-ahead", "1y"],
            "invalid value for key_publish_ahead: \"1y\" has an unknown unit (use s, m, h or d)",
        ),
        (
            &["--pages", "maybe"],
            "invalid value for pages: \"maybe\" is not true or false",
        ),
        (
            &["--session-check", "lazy"],
            "invalid value for session_check: \"lazy\" is neither \"cached\" nor \"strict\"",
        ),
        (
            &["--log-format", "xml"],
            "invalid value for log_format: \"xml\" is neither \"text\" nor \"json\"",
        ),
        (
            &["--signing-alg", "HS256"],
            "invalid value for signing_alg: \"HS256\" is not one of EdDSA, Ed25519, ES256, RS256",
        ),
        (
            &["--cors-origins", "*"],
            "invalid value for cors_origins: \"*\": list each origin by name (no wildcards, no \"null\")",
        ),
        (
            &["--revocation-feed-credentials", "tooshortsecret"],
            "invalid value for revocation_feed_credentials: credential 1 is shorter than 32 characters",
        ),
        (
            &["--admin-credentials", "desk:admin:all:0123456789abcdef0123456789abcdef"],
            "invalid value for admin_credentials: credential 1 \"desk\" has no scope `admin:read` or `admin:write`",
        ),
        (
            &["--public-url", "auth.example.com"],
            "invalid value for public_url: \"auth.example.com\" is not an http(s) URL",
        ),
        (
            &["--smtp-url", "http://mail.example.com"],
            "invalid value for smtp_url: scheme \"http\": use smtp:// or smtps://",
        ),
    ] {
        let err = load(argv).expect_err(&format!("{argv:?} is refused"));
        assert_eq!(err.to_string(), message, "{argv:?}");
    }
    let err = load(&["--alert-events", "nope"]).unwrap_err().to_string();
    assert!(
        err.starts_with("invalid value for alert_events: unknown event \"nope\""),
        "{err}"
    );
    // From the file, the same values are read the same way (a duration in seconds too).
    let c = load_file("access_ttl = 90\nkey_publish_ahead = \"1h\"\nsigning_alg = \"es256\"\n").unwrap();
    assert_eq!(c.access_ttl, Duration::from_secs(90));
    assert_eq!(c.key_publish_ahead, Duration::from_secs(3600));
    assert_eq!(c.signing_alg, SigningAlg::ES256);
    let err = load_file("access_ttl = \"ten\"\n").unwrap_err().to_string();
    assert!(err.starts_with("invalid value for access_ttl: \"ten\""), "{err}");
    // Mail: the public URL defaults to the issuer; a trailing `/` is dropped.
    let c = load(&["--issuer", "https://id.example.com/"]).unwrap();
    assert_eq!(c.public_url(), "https://id.example.com");
    let c = load(&[
        "--public-url",
        "https://app.example.com/auth/",
        "--smtp-url",
        "smtps://u:p@mail.example.com",
        "--mail-from",
        "Example <no-reply@example.com>",
    ])
    .unwrap();
    assert_eq!(c.public_url(), "https://app.example.com/auth");
    let smtp = c.smtp_url.expect("smtp_url");
    assert_eq!((smtp.security, smtp.port), (SmtpSecurity::Tls, 465));
    // An empty value unsets an optional setting.
    let c = load(&["--alert-webhook-url", "", "--master-key", " "]).unwrap();
    assert!(c.alert_webhook_url.is_none() && c.master_key.is_none());
}

#[test]
fn every_secret_is_redacted_in_debug_and_in_the_printed_configuration() {
    let (config, secrets) = every_secret_set();
    let debug = format!("{config:?}");
    let printed = config.to_toml_redacted();
    for secret in &secrets {
        assert!(!debug.contains(secret.as_str()), "{secret} in {debug}");
        assert!(!printed.contains(secret.as_str()), "{secret} in {printed}");
    }
    for line in [
        "database_url = \"postgres://tessera:<redacted>@db/tessera?password=<redacted>\"",
        "alert_webhook_url = \"https://u:<redacted>@hooks.example.com/<redacted>\"",
        "alert_webhook_secret = \"<redacted>\"",
        "# revocation_feed_credentials: 1 set, redacted",
        "# master_key is set (<redacted>; give it as TESSERA_MASTER_KEY)",
        "# master_key_previous is set (<redacted>; give it as TESSERA_MASTER_KEY_PREVIOUS)",
        "smtp_url = \"smtp://mailer:<redacted>@mail.example.com:587\"",
    ] {
        assert!(printed.lines().any(|l| l == line), "{line} not in\n{printed}");
    }
    // The type does it, wherever a secret goes.
    let secret = Secret::from("hmacs3cret");
    assert_eq!(format!("{secret:?}"), "<redacted>");
    assert_eq!(serde_json::to_string(&secret).unwrap(), "\"<redacted>\"");
    assert_eq!(&*secret, "hmacs3cret");
    let unset = Config::default().to_toml_redacted();
    for name in [
        "alert_webhook_secret",
        "revocation_feed_credentials",
        "master_key",
    ] {
        assert!(unset.contains(&format!("# {name} is not set\n")), "{unset}");
    }
}

#[test]
fn errors_never_quote_a_secret() {
    let err = load_file("alert_webhook_secret = hunter2secret\n")
        .expect_err("unquoted string is invalid TOML")
        .to_string();
    assert!(!err.contains("hunter2") && err.contains("line 1"), "{err}");
    let err = load(&["--master-key", "c2hvcnQ="]).unwrap_err().to_string();
    assert!(err.contains("master_key") && err.contains("got 5 bytes"), "{err}");
    assert!(!err.contains("c2hvcnQ"), "{err}");
    let err = load(&[
        "--revocation-feed-credentials",
        &format!("{FEED_CREDENTIAL},tooshortsecret"),
    ])
    .unwrap_err()
    .to_string();
    assert!(err.contains("credential 2") && !err.contains("tooshort"), "{err}");
    assert!(!err.contains("feedcredential"), "{err}");
}

#[test]
fn the_master_key_is_parsed_and_printed_as_set() {
    let key = MasterKey::generate().unwrap().to_base64();
    let config = load(&["--master-key", &key, "--key-publish-ahead", "90s"]).unwrap();
    assert!(config.master_key.is_some() && config.master_key_previous.is_none());
    assert!(config.master_keys().current.is_some());
    assert_eq!(config.key_publish_ahead, Duration::from_secs(90));
    let printed = config.to_toml_redacted();
    assert!(printed.contains("# master_key is set"), "{printed}");
    assert!(printed.contains("# master_key_previous is not set"), "{printed}");
    assert_eq!(Config::default().key_publish_ahead, Duration::from_secs(900));
}

#[test]
fn the_printed_configuration_reads_back_as_the_same_one_without_its_secrets() {
    let config = Config {
        listen: "0.0.0.0:9000".into(),
        database_url: "postgres://tessera:s3cretpw@db/tessera".into(),
        access_ttl: Duration::from_secs(120),
        refresh_ttl: Duration::from_secs(7 * 86_400),
        reuse_grace: Duration::from_millis(1500),
        max_sessions: 3,
        cookie_secure: false,
        alert_webhook_url: Some("https://hooks.example.com/services/T0/B0/s3cretpath".into()),
        alert_webhook_secret: Some("hunter2secret".into()),
        session_check: SessionCheck::Strict,
        log_format: LogFormat::Json,
        signing_alg: SigningAlg::ES256,
        issuer: "https://auth.example.com/\"quoted\"".into(),
        lockout_threshold: 4,
        lockout_window: Duration::from_secs(120),
        lockout_cooldown: Duration::from_secs(5),
        audit_retention: Duration::from_secs(3600),
        cors_origins: vec!["https://a.example".into(), "https://b.example".into()],
        pages: false,
        alert_events: vec!["account_locked".into(), "session_revoked".into()],
        hash_concurrency: 3,
        body_limit: 1 << 20,
        ..Config::default()
    };
    let printed = config.to_toml_redacted();
    for secret in ["s3cretpw", "s3cretpath", "hunter2"] {
        assert!(!printed.contains(secret), "{printed}");
    }
    let read = load_file(&printed).unwrap();
    let expected = Config {
        database_url: "postgres://tessera:<redacted>@db/tessera".into(),
        alert_webhook_url: Some("https://hooks.example.com/<redacted>".into()),
        alert_webhook_secret: Some("<redacted>".into()),
        ..config
    };
    assert_eq!(format!("{read:?}"), format!("{expected:?}"));
    assert_eq!(read.alert_webhook_secret, expected.alert_webhook_secret);
    assert_eq!(read.alert_webhook_url, expected.alert_webhook_url);
    assert_eq!(read.issuer, expected.issuer);
    assert_eq!(read.alert_events, expected.alert_events);
    // The defaults read back as themselves.
    let defaults = load_file(&Config::default().to_toml_redacted()).unwrap();
    assert_eq!(format!("{defaults:?}"), format!("{:?}", Config::default()));
}

#[test]
fn cors_origins_from_a_file_as_a_list_or_as_text() {
    let c = load_file("cors_origins = [\"https://a.example\", \"https://B.example:443\"]\n").unwrap();
    assert_eq!(c.cors_origins, ["https://a.example", "https://b.example"]);
    let c = load_file("cors_origins = \"https://a.example, https://b.example\"\n").unwrap();
    assert_eq!(c.cors_origins, ["https://a.example", "https://b.example"]);
    assert!(Config::default().pages && Config::default().cors_origins.is_empty());
}

#[test]
fn file_errors_are_parse_errors_with_the_line() {
    for (text, line) in [
        ("no_such_thing = 1\n", 1),
        ("config = \"other.toml\"\n", 1),
        ("listen = \"x\"\nconfig = \"other.toml\"\n", 2),
        ("\n\n# three\nno_such_thing = 1\n", 4),
        ("listen = \"x\"\npages = 1\n", 2),
        ("cookie_secure = \"yes\"\n", 1),
        ("pages = 1\n", 1),
        ("access_ttl = true\n", 1),
        ("cors_origins = 5\n", 1),
        ("max_sessions = -1\n", 1),
    ] {
        match load_file(text) {
            Err(ConfigError::Parse { line: at, .. }) => assert_eq!(at, line, "{text}"),
            other => panic!("{text}: {other:?}"),
        }
    }
    let err = load_file("cookie_secure = \"yes\"\n").unwrap_err().to_string();
    assert!(
        err.ends_with("line 1: invalid type: string \"yes\", expected a boolean"),
        "{err}"
    );
    let err = Config::load(&ConfigArgs {
        config: Some("/nonexistent/tessera.toml".into()),
        ..ConfigArgs::default()
    })
    .unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }), "{err}");
}

#[test]
fn the_listen_shorthand_means_every_interface() {
    let c = Config {
        listen: ":8080".into(),
        ..Config::default()
    };
    assert_eq!(c.listen_addr(), "0.0.0.0:8080");
    assert_eq!(Config::default().listen_addr(), "127.0.0.1:8080");
}

#[test]
fn the_issuer_follows_the_public_url_or_the_listen_address_unless_set() {
    // The default listen address gives the contract's default issuer.
    assert_eq!(load(&[]).unwrap().issuer, "http://127.0.0.1:8080");
    assert_eq!(
        load(&["--listen", "127.0.0.1:8181"]).unwrap().issuer,
        "http://127.0.0.1:8181"
    );
    // All interfaces: reached on this machine through loopback.
    assert_eq!(
        load(&["--listen", ":9000"]).unwrap().issuer,
        "http://127.0.0.1:9000"
    );
    assert_eq!(
        load(&["--listen", "[::]:9000"]).unwrap().issuer,
        "http://[::1]:9000"
    );
    // The public URL wins over the listen address; a set issuer over both.
    let c = load(&[
        "--listen",
        "0.0.0.0:8181",
        "--public-url",
        "https://auth.example.com/",
    ])
    .unwrap();
    assert_eq!(c.issuer, "https://auth.example.com");
    let c = load(&["--listen", "127.0.0.1:8181", "--issuer", "https://id.example"]).unwrap();
    assert_eq!(c.issuer, "https://id.example");
    // Port 0 is known only once bound: the default stays, and the start says so.
    let c = load(&["--listen", "127.0.0.1:0"]).unwrap();
    assert_eq!(c.issuer, "http://127.0.0.1:8080");
    let bound: std::net::SocketAddr = "127.0.0.1:40123".parse().unwrap();
    let warning = c
        .issuer_mismatch(bound)
        .expect("a loopback issuer on another port");
    assert!(warning.contains("TESSERA_PUBLIC_URL"), "{warning}");
    assert!(c.issuer_mismatch("127.0.0.1:8080".parse().unwrap()).is_none());
    // An issuer naming another host is a proxy's address: not second-guessed.
    let c = load(&["--issuer", "https://auth.example.com"]).unwrap();
    assert!(c.issuer_mismatch(bound).is_none());
    let c = load(&["--issuer", "http://localhost:3000"]).unwrap();
    assert!(c.issuer_mismatch(bound).is_some());
}

#[test]
fn the_accent_colour_is_a_hex_colour() {
    assert_eq!(
        load(&["--accent-color", "#0a7"]).unwrap().accent_color.as_deref(),
        Some("#0a7")
    );
    assert!(load(&["--accent-color", "#0a7d4f"]).is_ok());
    for bad in ["red", "#12345", "0a7d4f", "#0a7d4g", "#0a7d4f;x"] {
        let err = load(&["--accent-color", bad]).unwrap_err().to_string();
        assert!(err.contains("accent_color"), "{bad}: {err}");
    }
    let err = load(&["--return-to-origins", "not a url"])
        .unwrap_err()
        .to_string();
    assert!(err.contains("return_to_origins"), "{err}");
}
