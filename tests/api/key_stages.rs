//! Signing-key stages and keys at rest, through running servers and the real `tessera keys`
//! binary, on SQLite (or PostgreSQL with TESSERA_TEST_BACKEND=postgres), with publish-ahead
//! windows of seconds so the tests run fast:
//! - `keys rotate` publishes the next key in the JWKS before any instance signs with it;
//! - `keys revoke` removes a key from the JWKS and refuses its tokens at once, on every
//!   running server sharing the database;
//! - `keys encrypt` seals the private keys with TESSERA_MASTER_KEY (and re-seals them under a
//!   new one); without the right master key, encrypted keys stop `serve` and `check` clearly.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tessera::crypto::master_key::MasterKey;
use tessera::startup::Application;

use crate::admin_cli::{tessera, tessera_with_env, Ran};
use crate::helpers::*;
use crate::jose::Jwt;

/// How long a change made by the command line may take to reach a running server: the
/// servers look for new or revoked keys twice a second.
const PROPAGATION: Duration = Duration::from_secs(2);

fn kids(jwks: &Value) -> HashSet<String> {
    jwks["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| s(k, "kid"))
        .collect()
}

fn kid_of(tokens: &Value) -> String {
    s(&Jwt::parse(&s(tokens, "access_token")).header, "kid")
}

/// Polls `check` until it holds or `within` passes; returns how long it took.
async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            return start.elapsed();
        }
        assert!(start.elapsed() < within, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `tessera keys list --json`, by kid.
async fn listed(app: &TestApp, env: &[(&str, &str)]) -> Vec<Value> {
    tessera_with_env(app, &["keys", "list", "--json"], None, env)
        .await
        .json_lines()
}

fn stage_of(list: &[Value], kid: &str) -> String {
    let key = list
        .iter()
        .find(|k| k["kid"] == kid)
        .unwrap_or_else(|| panic!("{kid} not listed: {list:?}"));
    s(key, "stage")
}

/// The stored private parts of every signing key, read beside the server.
async fn stored_private_keys(app: &TestApp) -> Vec<Vec<u8>> {
    let url = &app.config.database_url;
    if let Some(path) = url.strip_prefix("sqlite://") {
        let conn = rusqlite::Connection::open(path).expect("sqlite");
        let mut statement = conn
            .prepare("SELECT private_pkcs8 FROM signing_keys")
            .expect("prepare");
        let rows = statement
            .query_map([], |r| r.get::<_, Vec<u8>>(0))
            .expect("query");
        rows.map(|r| r.expect("row")).collect()
    } else {
        let pool = sqlx::PgPool::connect(url).await.expect("postgres");
        let keys = sqlx::query_scalar("SELECT private_pkcs8 FROM signing_keys")
            .fetch_all(&pool)
            .await
            .expect("query");
        pool.close().await;
        keys
    }
}

fn sealed(private: &[u8]) -> bool {
    private.starts_with(b"TSK\x01")
}

#[tokio::test]
async fn the_jwks_publishes_the_next_key_before_it_signs_and_it_signs_after_its_activation() {
    // Logins in a loop below: room for their sessions beside the first one.
    let app = spawn_app_with(|c| c.max_sessions = 1000).await;
    let old_kid = app.kid().await;
    let before = app.signup_and_login(EMAIL).await;
    let ahead = [("TESSERA_KEY_PUBLISH_AHEAD", "4s")];

    let rotated = tessera_with_env(&app, &["keys", "rotate"], None, &ahead).await;
    let said = rotated.out();
    let new_kid = said
        .strip_prefix("new signing key ")
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_else(|| panic!("unexpected output {said:?}"))
        .to_owned();
    // A window this short is allowed, but said to be too short for cached JWKS copies.
    assert!(rotated.stderr.contains("warning"), "{}", rotated.stderr);

    // Published by the running server without waiting for its minute's reload...
    eventually(PROPAGATION, "the next key in the JWKS", || async {
        kids(&app.jwks().await).contains(&new_kid)
    })
    .await;
    assert_eq!(
        kids(&app.jwks().await),
        HashSet::from([old_kid.clone(), new_kid.clone()])
    );
    // ... while tokens are still signed with the old key.
    let during = app.login_ok(EMAIL).await;
    assert_eq!(kid_of(&during), old_kid, "the next key must not sign yet");
    let list = listed(&app, &[]).await;
    assert_eq!(stage_of(&list, &new_kid), "next");
    assert_eq!(stage_of(&list, &old_kid), "active");

    // From its activation time on, the same server signs with the new key by itself.
    eventually(Duration::from_secs(8), "the next key signing", || async {
        kid_of(&app.login_ok(EMAIL).await) == new_kid
    })
    .await;
    let list = listed(&app, &[]).await;
    assert_eq!(stage_of(&list, &new_kid), "active");
    assert_eq!(stage_of(&list, &old_kid), "retired");
    // Tokens of the retired key keep working until they expire.
    assert_status(app.me(&s(&before, "access_token")).await, 200).await;
    assert_eq!(kids(&app.jwks().await), HashSet::from([old_kid, new_kid.clone()]));

    // A server started now signs with the new key too.
    let second = start(app.config.clone(), Arc::clone(&app.storage)).await;
    assert_eq!(kid_of(&second.login_ok(EMAIL).await), new_kid);
}

#[tokio::test]
async fn a_revoked_keys_tokens_are_refused_at_once_on_every_server_and_it_leaves_the_jwks() {
    let a = spawn_app().await;
    let b = start(a.config.clone(), Arc::clone(&a.storage)).await;
    // And a real `tessera serve` process on the same database.
    let dir = a.storage.dir.path().to_owned();
    let url = a.config.database_url.clone();
    let c = tokio::task::spawn_blocking(move || {
        crate::binary::Served::start_with(&dir, &[], &[("TESSERA_DATABASE_URL", url)])
    })
    .await
    .expect("join");
    let c_me = |token: &str| {
        a.client
            .get(format!("{}/v1/auth/me", c.base()))
            .bearer_auth(token)
            .send()
    };
    let leaked = a.kid().await;
    let tokens = a.signup_and_login(EMAIL).await;
    let access = s(&tokens, "access_token");
    // Every server has verified (and remembered) the token.
    assert_status(a.me(&access).await, 200).await;
    assert_status(b.me(&access).await, 200).await;
    assert_eq!(c_me(&access).await.expect("c").status(), 200);

    let revoked = tessera(&a, &["keys", "revoke", &leaked], None).await;
    let said = revoked.out().to_owned();
    assert!(
        said.starts_with(&format!("revoked signing key {leaked}")),
        "{said}"
    );
    let replacement = said
        .lines()
        .find_map(|l| l.strip_prefix("signing with "))
        .unwrap_or_else(|| panic!("no replacement named: {said}"))
        .to_owned();

    for (name, server) in [("a", &a), ("b", &b)] {
        let took = eventually(PROPAGATION, "the leaked key's token refused", || async {
            server.me(&access).await.status() == 401
        })
        .await;
        assert_problem(server.me(&access).await, 401, "invalid_token").await;
        let published = kids(&server.jwks().await);
        assert!(!published.contains(&leaked), "{name}: {published:?}");
        assert!(published.contains(&replacement), "{name}: {published:?}");
        eprintln!("server {name} refused the revoked key's token after {took:?}");
    }
    let took = eventually(
        PROPAGATION,
        "the process refusing the leaked key's token",
        || async { c_me(&access).await.expect("c").status() == 401 },
    )
    .await;
    eprintln!("the tessera serve process refused the revoked key's token after {took:?}");

    // The service goes on: new tokens are signed with the replacement and accepted everywhere;
    // the session itself was not revoked, so its refresh token still works.
    let fresh = b.login_ok(EMAIL).await;
    assert_eq!(kid_of(&fresh), replacement);
    assert_status(a.me(&s(&fresh, "access_token")).await, 200).await;
    assert_eq!(c_me(&s(&fresh, "access_token")).await.expect("c").status(), 200);
    let refreshed = a.refresh_ok(&s(&tokens, "refresh_token")).await;
    assert_eq!(kid_of(&refreshed), replacement);

    let list = listed(&a, &[]).await;
    assert_eq!(stage_of(&list, &leaked), "revoked");
    assert_eq!(stage_of(&list, &replacement), "active");
    let audited = tessera(&a, &["audit", "--kind", "signing_key_revoked", "--json"], None)
        .await
        .json_lines();
    assert_eq!(audited.len(), 1, "{audited:?}");
    assert_eq!(audited[0]["detail"]["kid"], leaked.as_str());

    // A second revocation of the same key changes nothing; an unknown kid is an error.
    assert!(tessera(&a, &["keys", "revoke", &leaked], None)
        .await
        .out()
        .contains("already revoked"));
    assert!(!tessera(&a, &["keys", "revoke", "no-such-kid"], None).await.ok);
}

#[tokio::test]
async fn revoking_the_next_key_keeps_the_active_one_signing() {
    let app = spawn_app().await;
    let active = app.kid().await;
    app.signup_and_login(EMAIL).await;
    let ahead = [("TESSERA_KEY_PUBLISH_AHEAD", "1h")];
    let rotated = tessera_with_env(&app, &["keys", "rotate"], None, &ahead).await;
    let next = rotated.out().split(' ').nth(3).expect("kid").to_owned();
    eventually(PROPAGATION, "the next key in the JWKS", || async {
        kids(&app.jwks().await).contains(&next)
    })
    .await;

    tessera(&app, &["keys", "revoke", &next], None).await.out();
    eventually(PROPAGATION, "the next key gone from the JWKS", || async {
        kids(&app.jwks().await) == HashSet::from([active.clone()])
    })
    .await;
    let list = listed(&app, &[]).await;
    assert_eq!(stage_of(&list, &active), "active");
    assert_eq!(stage_of(&list, &next), "revoked");
    // The table for people: one line per key under a header.
    let table = tessera(&app, &["keys", "list"], None).await;
    let lines: Vec<&str> = table.out().lines().collect();
    assert_eq!(lines.len(), 3, "{}", table.stdout);
    assert!(lines[0].starts_with("KID") && lines[0].contains("STAGE") && lines[0].contains("ENCRYPTED"));
    assert!(lines
        .iter()
        .any(|l| l.starts_with(&next) && l.contains("revoked")));
    assert!(lines
        .iter()
        .any(|l| l.starts_with(&active) && l.contains(" active ")));
    assert_eq!(kid_of(&app.login_ok(EMAIL).await), active);
    // Still active after a restart: its retirement was called off with the next key.
    let (config, storage) = app.stop().await;
    let restarted = start(config, storage).await;
    assert_eq!(kid_of(&restarted.login_ok(EMAIL).await), active);
}

/// What `Application::build` says for `config`, if it fails.
async fn build_error(config: &tessera::config::Config) -> Option<String> {
    Application::build(config).await.err().map(|e| e.to_string())
}

fn problem_lines(ran: &Ran) -> Vec<String> {
    ran.stderr
        .lines()
        .filter(|l| l.starts_with("problem: "))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn keys_encrypted_with_the_master_key_are_stored_sealed_and_still_sign_and_verify() {
    let app = spawn_app().await;
    let tokens = app.signup_and_login(EMAIL).await;
    let access = s(&tokens, "access_token");
    assert!(stored_private_keys(&app).await.iter().all(|k| !sealed(k)));
    let master = MasterKey::generate().expect("master key").to_base64();
    let with_master = [("TESSERA_MASTER_KEY", master.as_str())];

    // No master key: nothing to encrypt with, and `check` says keys are stored in clear.
    let refused = tessera(&app, &["keys", "encrypt"], None).await;
    assert!(
        !refused.ok && refused.stderr.contains("TESSERA_MASTER_KEY"),
        "{}",
        refused.stderr
    );
    let checked = tessera(&app, &["check"], None).await;
    assert!(
        checked.stdout.contains("TESSERA_MASTER_KEY is not set"),
        "{}",
        checked.stdout
    );

    let encrypted = tessera_with_env(&app, &["keys", "encrypt"], None, &with_master).await;
    assert!(
        encrypted.out().starts_with("encrypted 1 signing key(s)"),
        "{}",
        encrypted.stdout
    );
    let stored = stored_private_keys(&app).await;
    assert!(!stored.is_empty() && stored.iter().all(|k| sealed(k)));
    let again = tessera_with_env(&app, &["keys", "encrypt"], None, &with_master).await;
    assert!(again.out().starts_with("nothing to do"), "{}", again.stdout);
    let list = listed(&app, &[]).await;
    assert!(list.iter().all(|k| k["encrypted"] == true), "{list:?}");
    assert!(!master.is_empty() && !again.stdout.contains(&master));

    // A server with the master key signs and verifies as before.
    let mut config = app.config.clone();
    config.master_key = Some(MasterKey::parse(&master).expect("parse"));
    let served = start(config.clone(), Arc::clone(&app.storage)).await;
    assert_status(served.me(&access).await, 200).await;
    let fresh = served.login_ok(EMAIL).await;
    assert_status(served.me(&s(&fresh, "access_token")).await, 200).await;
    // Keys it creates are stored sealed from the start.
    tessera_with_env(&app, &["keys", "rotate", "--now"], None, &with_master)
        .await
        .out();
    assert!(stored_private_keys(&app).await.iter().all(|k| sealed(k)));
    let checked = tessera_with_env(&app, &["check"], None, &with_master).await;
    assert!(checked.ok, "{}", checked.stderr);
    assert!(checked.stdout.contains("encrypted at rest"), "{}", checked.stdout);

    // Without it, or with another one, `serve` and `check` fail and say why.
    for (what, key) in [
        ("missing", None),
        ("wrong", Some(MasterKey::generate().expect("key"))),
    ] {
        let mut config = app.config.clone();
        config.master_key = key.clone();
        let said = build_error(&config)
            .await
            .unwrap_or_else(|| panic!("{what} master key: serve must not start"));
        assert!(said.contains("TESSERA_MASTER_KEY"), "{what}: {said}");
        let text = key.map(|k| k.to_base64()).unwrap_or_default();
        let env = [("TESSERA_MASTER_KEY", text.as_str())];
        let checked = tessera_with_env(&app, &["check"], None, &env).await;
        assert!(!checked.ok, "{what}");
        let problems = problem_lines(&checked);
        assert!(
            problems.iter().any(|l| l.contains("TESSERA_MASTER_KEY")),
            "{what}: {problems:?}"
        );
        // One true statement: the keys are encrypted, so none is said to be stored in clear.
        assert!(
            !checked.stdout.contains("in clear") && !checked.stderr.contains("in clear"),
            "{what}: {}{}",
            checked.stdout,
            checked.stderr
        );
    }

    // A new master key: the previous one opens, `keys encrypt` re-seals under the new one.
    let newer = MasterKey::generate().expect("master key").to_base64();
    let rotating = [
        ("TESSERA_MASTER_KEY", newer.as_str()),
        ("TESSERA_MASTER_KEY_PREVIOUS", master.as_str()),
    ];
    let resealed = tessera_with_env(&app, &["keys", "encrypt"], None, &rotating).await;
    assert!(resealed.out().contains("re-encrypted 2"), "{}", resealed.stdout);
    config.master_key = Some(MasterKey::parse(&newer).expect("parse"));
    let on_newer = start(config, Arc::clone(&app.storage)).await;
    assert_status(on_newer.me(&s(&fresh, "access_token")).await, 200).await;
    on_newer.login_ok(EMAIL).await;
}

#[tokio::test]
async fn the_master_key_is_checked_and_never_printed() {
    let app = spawn_app().await;
    let master = MasterKey::generate().expect("master key").to_base64();
    let shown = tessera_with_env(&app, &["config"], None, &[("TESSERA_MASTER_KEY", &master)]).await;
    assert!(!shown.out().contains(&master), "{}", shown.stdout);
    assert!(shown.stdout.contains("# master_key is set"), "{}", shown.stdout);
    // 16 bytes: refused, naming the setting, without echoing the value.
    let short = "AAECAwQFBgcICQoLDA0ODw==";
    let refused = tessera_with_env(&app, &["keys", "list"], None, &[("TESSERA_MASTER_KEY", short)]).await;
    assert!(!refused.ok);
    assert!(
        refused.stderr.contains("master_key") && refused.stderr.contains("32"),
        "{}",
        refused.stderr
    );
    assert!(!refused.stderr.contains(short));
}

/// The migrations of `backend` before the one that added key stages, by file name, read at
/// run time so that migrations added around it keep their order without naming versions here.
fn migrations_before_key_stages(backend: &str) -> Vec<(String, String)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join(backend);
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .expect("migrations")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".sql"))
        .collect();
    names.sort();
    names
        .into_iter()
        .take_while(|n| !n.contains("signing_key_stages"))
        .map(|n| {
            let sql = std::fs::read_to_string(dir.join(&n)).expect("read migration");
            (n, sql)
        })
        .collect()
}

#[tokio::test]
async fn a_database_from_before_key_stages_keeps_its_active_key_active() {
    use sqlx::Connection as _;
    let storage = test_storage().await;
    let config = test_config(&storage);
    let now = tessera::domain::Clock::now(&tessera::domain::SystemClock);
    let active = tessera::tokens::SigningKeyRecord::generate_ed25519(now).expect("key");
    let insert = "INSERT INTO signing_keys (kid, alg, private_pkcs8, public_key, created_at, active) VALUES ";
    if let Some(path) = config.database_url.strip_prefix("sqlite://") {
        let conn = rusqlite::Connection::open(path).expect("open");
        let before = migrations_before_key_stages("sqlite");
        for (_, sql) in &before {
            conn.execute_batch(sql).expect("old schema");
        }
        conn.pragma_update(None, "user_version", before.len() as i64)
            .expect("user_version");
        conn.execute(
            &format!("{insert}(?1, ?2, ?3, ?4, ?5, 1)"),
            rusqlite::params![
                active.kid,
                active.alg,
                active.private_pkcs8,
                active.public_key,
                active.created_at.millis()
            ],
        )
        .expect("old key");
    } else {
        let dir = tempfile::tempdir().expect("tempdir");
        for (name, sql) in migrations_before_key_stages("postgres") {
            std::fs::write(dir.path().join(name), sql).expect("write migration");
        }
        let mut conn = sqlx::PgConnection::connect(&config.database_url)
            .await
            .expect("connect");
        sqlx::migrate::Migrator::new(dir.path())
            .await
            .expect("migrator")
            .run(&mut conn)
            .await
            .expect("old schema");
        sqlx::query(&format!("{insert}($1, $2, $3, $4, $5, true)"))
            .bind(&active.kid)
            .bind(&active.alg)
            .bind(&active.private_pkcs8)
            .bind(&active.public_key)
            .bind(active.created_at.millis())
            .execute(&mut conn)
            .await
            .expect("old key");
        conn.close().await.expect("close");
    }

    let app = start(config, Arc::new(storage)).await;
    assert_eq!(app.kid().await, active.kid);
    let tokens = app.signup_and_login(EMAIL).await;
    assert_eq!(kid_of(&tokens), active.kid);
    let list = listed(&app, &[]).await;
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(stage_of(&list, &active.kid), "active");
    assert_eq!(list[0]["activates_at"], list[0]["created_at"]);
    assert_eq!(list[0]["encrypted"], false);
}

#[tokio::test]
async fn the_real_server_writes_new_keys_sealed_and_will_not_start_without_its_master_key() {
    let master = MasterKey::generate().expect("master key");
    let app = spawn_app_with(|c| c.master_key = Some(master.clone())).await;
    let kid = app.kid().await;
    let stored = stored_private_keys(&app).await;
    assert!(
        stored.len() == 1 && sealed(&stored[0]),
        "the first key is written sealed"
    );
    let dir = app.storage.dir.path().to_owned();
    let url = app.config.database_url.clone();
    let master = master.to_base64();

    let outcome = tokio::task::spawn_blocking(move || {
        use crate::binary::Served;
        let database = ("TESSERA_DATABASE_URL", url);
        // Without the master key: `serve` exits at once, naming it.
        let (mut refused, _) = Served::spawn(&dir, &[], std::slice::from_ref(&database));
        let status = refused.wait_for_exit();
        let refused_said = refused.stderr();
        // With it: `serve` starts, publishes the key and does not warn about keys in clear.
        let mut served = Served::start_with(&dir, &[], &[database, ("TESSERA_MASTER_KEY", master.clone())]);
        let (code, jwks) = served.request("GET", "/.well-known/jwks.json", None);
        served.terminate();
        let served_said = served.stderr();
        (status.success(), refused_said, code, jwks, served_said, master)
    })
    .await
    .expect("join");
    let (refused_ok, refused_said, code, jwks, served_said, master) = outcome;
    assert!(!refused_ok, "serve started without the master key");
    assert!(
        refused_said.contains("TESSERA_MASTER_KEY") && refused_said.contains(&kid),
        "{refused_said}"
    );
    assert_eq!(code, 200);
    assert!(jwks.contains(&kid), "{jwks}");
    assert!(!served_said.contains("stored in clear"), "{served_said}");
    assert!(!served_said.contains(&master) && !refused_said.contains(&master));
}

#[tokio::test]
async fn the_real_server_warns_when_keys_are_stored_in_clear() {
    let dir = tempfile::tempdir().expect("tempdir");
    let said = tokio::task::spawn_blocking(move || {
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let mut served = crate::binary::Served::start_with(dir.path(), &[], &[("TESSERA_DATABASE_URL", url)]);
        served.terminate();
        served.stderr()
    })
    .await
    .expect("join");
    assert!(said.contains("TESSERA_MASTER_KEY is not set"), "{said}");
}

/// `keys rotate` on a database no server has started on yet: with no key signing, there is
/// nothing to publish ahead of, so the new key signs at once and the first server starts on it
/// (it used to wait in the next stage, and `serve` refused to start: "no active signing key").
#[tokio::test]
async fn rotating_before_any_server_started_makes_a_key_that_signs_at_once() {
    let storage = test_storage().await;
    let config = test_config(&storage);
    let run = |args: &'static [&'static str]| {
        let url = config.database_url.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                std::process::Command::new(env!("CARGO_BIN_EXE_tessera"))
                    .args(args)
                    .env("TESSERA_DATABASE_URL", url)
                    .env("TESSERA_KEY_PUBLISH_AHEAD", "15m")
                    .output()
                    .expect("run tessera")
            })
            .await
            .expect("join")
        }
    };
    assert!(run(&["migrate"]).await.status.success());
    let rotated = run(&["keys", "rotate"]).await;
    assert!(
        rotated.status.success(),
        "{}",
        String::from_utf8_lossy(&rotated.stderr)
    );
    let app = start(config, Arc::new(storage)).await;
    let listed = listed(&app, &[]).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(s(&listed[0], "stage"), "active");
    let tokens = app.signup_and_login(EMAIL).await;
    assert_eq!(kid_of(&tokens), s(&listed[0], "kid"));
}
