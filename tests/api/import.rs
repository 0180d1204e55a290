//! `tessera users import` through the real binary, then logins with the imported passwords
//! on the running server: bcrypt in every variant and a foreign argon2 hash verify, and are
//! replaced by our argon2id on the first successful login.

use argon2::password_hash::{PasswordHasher as _, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use serde_json::{json, Value};

use crate::admin_cli::tessera;
use crate::helpers::*;
use crate::jose::Jwt;

/// Shorter than today's minimum: the old stack allowed it, and it must still work (and be
/// upgraded).
const OLD_PASSWORD: &str = "old-pw";

/// The stored hash of `email`, read through a store of our own on the test's database.
async fn stored_hash(app: &TestApp, email: &str) -> String {
    let store = tessera::store::connect(&app.config.database_url, 1)
        .await
        .expect("store");
    let email = tessera::domain::Email::parse(email).expect("email");
    store
        .find_user_by_email(&email)
        .await
        .expect("find")
        .expect("present")
        .password_hash
        .0
}

fn import_file(lines: &[String]) -> tempfile::NamedTempFile {
    let file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(file.path(), lines.join("\n") + "\n").expect("write");
    file
}

#[tokio::test]
async fn imported_bcrypt_and_argon2_users_log_in_and_are_upgraded_and_a_rerun_changes_nothing() {
    let app = spawn_app().await;
    let bcrypt = bcrypt::hash_with_result(OLD_PASSWORD, 4).expect("bcrypt");
    let argon2i = Argon2::new(
        Algorithm::Argon2i,
        Version::V0x13,
        Params::new(4096, 3, 1, None).expect("params"),
    )
    .hash_password(
        b"argon2i password",
        &SaltString::generate(&mut argon2::password_hash::rand_core::OsRng),
    )
    .expect("argon2i")
    .to_string();
    let lines = [
        json!({ "email": "Ann@Example.com", "password_hash": bcrypt.format_for_version(bcrypt::Version::TwoB),
                "created_at": "2021-05-06T07:08:09.010Z", "roles": ["admin"] })
        .to_string(),
        json!({ "email": "bo@example.com", "password_hash": bcrypt.format_for_version(bcrypt::Version::TwoA),
                "created_at": 1_600_000_000_000_i64 })
        .to_string(),
        "{\"email\": \"broken@example.com\",".to_owned(),
        json!({ "email": "cy@example.com", "password_hash": bcrypt.format_for_version(bcrypt::Version::TwoY) }).to_string(),
        String::new(),
        json!({ "email": "ANN@example.com", "password_hash": bcrypt.to_string() }).to_string(),
        json!({ "email": "not-an-email", "password_hash": bcrypt.to_string() }).to_string(),
        json!({ "email": "di@example.com", "password_hash": argon2i }).to_string(),
        json!({ "email": "ed@example.com", "password_hash": "5f4dcc3b5aa765d61d8327deb882cf99" }).to_string(),
    ];
    let file = import_file(&lines);
    let path = file.path().to_str().expect("UTF-8 path");

    let first = tessera(&app, &["users", "import", path], None).await;
    // Bad lines are skipped and reported, and the command fails so that a script notices.
    assert!(!first.ok, "bad lines end non-zero");
    assert_eq!(first.stdout.trim(), "imported 4, already present 1, bad 3");
    assert!(
        first.stderr.contains("3 line(s) were not imported"),
        "{}",
        first.stderr
    );
    for (line, why) in [(3, "not a JSON object"), (7, "email"), (9, "neither bcrypt")] {
        let reported = first
            .stderr
            .lines()
            .find(|l| l.starts_with(&format!("line {line}: ")))
            .unwrap_or_else(|| panic!("line {line} not reported: {}", first.stderr));
        assert!(reported.contains(why), "{reported}");
    }
    assert!(
        !first.stderr.contains("5f4dcc3b"),
        "a bad hash is not repeated: {}",
        first.stderr
    );

    // bcrypt ($2b$, with a password shorter than today's minimum): verified, then upgraded.
    assert!(stored_hash(&app, "ann@example.com").await.starts_with("$2b$"));
    let t = json_ok(app.login_with("ann@example.com", OLD_PASSWORD).await).await;
    assert_eq!(t["user"]["created_at"], "2021-05-06T07:08:09.010Z");
    assert_eq!(
        Jwt::parse(&s(&t, "access_token")).claims["roles"],
        json!(["admin"])
    );
    let upgraded = stored_hash(&app, "ann@example.com").await;
    assert!(
        upgraded.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "{upgraded}"
    );
    json_ok(app.login_with("ann@example.com", OLD_PASSWORD).await).await;
    assert_problem(
        app.login_with("ann@example.com", "old-px").await,
        401,
        "invalid_credentials",
    )
    .await;
    assert_eq!(
        stored_hash(&app, "ann@example.com").await,
        upgraded,
        "upgraded once"
    );

    // $2a$, $2y$ and argon2i verify too; a wrong password upgrades nothing.
    assert_problem(
        app.login_with("bo@example.com", "wrong-pw").await,
        401,
        "invalid_credentials",
    )
    .await;
    assert!(stored_hash(&app, "bo@example.com").await.starts_with("$2a$"));
    for (email, password) in [
        ("bo@example.com", OLD_PASSWORD),
        ("cy@example.com", OLD_PASSWORD),
        ("di@example.com", "argon2i password"),
    ] {
        let t = json_ok(app.login_with(email, password).await).await;
        assert_eq!(t["user"]["email"], email);
        assert!(
            stored_hash(&app, email).await.starts_with("$argon2id$"),
            "{email}"
        );
    }
    let upgrades: Vec<Value> = tessera(&app, &["audit", "--kind", "login_succeeded", "--json"], None)
        .await
        .json_lines()
        .into_iter()
        .filter(|e| e["detail"] == "password hash upgraded to argon2id")
        .collect();
    assert_eq!(upgrades.len(), 4, "one upgrade per imported account");

    let second = tessera(&app, &["users", "import", path], None).await;
    assert!(!second.ok);
    assert_eq!(
        second.stdout.trim(),
        "imported 0, already present 5, bad 3 (nothing changed)"
    );
    assert_eq!(
        stored_hash(&app, "ann@example.com").await,
        upgraded,
        "a rerun overwrites nothing"
    );
    let imports = tessera(&app, &["audit", "--kind", "admin_users_imported", "--json"], None)
        .await
        .json_lines();
    assert_eq!(imports.len(), 2);
    let detail = &imports[0]["detail"];
    assert_eq!(
        (detail["imported"].clone(), detail["already_present"].clone()),
        (json!(0), json!(5))
    );
}

#[tokio::test]
async fn a_json_array_csv_or_empty_file_is_refused_by_name() {
    let app = spawn_app().await;
    let hash = bcrypt::hash("hunter22", 4).expect("bcrypt");
    let array = json!([{ "email": "a@example.com", "password_hash": hash }]).to_string();
    let cases = [
        (array.as_str(), "JSON array; JSON Lines expected"),
        (
            "email,password_hash\na@example.com,$2b$04$x",
            "looks like CSV; JSON Lines expected",
        ),
        ("\n\n", "holds no account"),
    ];
    for (text, why) in cases {
        let file = import_file(&[text.to_owned()]);
        let ran = tessera(
            &app,
            &["users", "import", file.path().to_str().expect("UTF-8")],
            None,
        )
        .await;
        assert!(!ran.ok, "{text:?} succeeded");
        assert!(ran.stderr.contains(why), "{text:?}: {}", ran.stderr);
    }
    assert!(tessera(&app, &["users", "list", "--json"], None)
        .await
        .json_lines()
        .is_empty());
}

#[tokio::test]
async fn an_unreadable_import_file_fails_without_importing() {
    let app = spawn_app().await;
    let missing = app.storage.dir.path().join("missing.jsonl");
    let ran = tessera(&app, &["users", "import", missing.to_str().expect("UTF-8")], None).await;
    assert!(!ran.ok && ran.stderr.contains("cannot read"), "{}", ran.stderr);
    assert!(tessera(&app, &["users", "list", "--json"], None)
        .await
        .json_lines()
        .is_empty());
}

/// Hashes too costly to verify at every login are refused line by line, and a stored one
/// (imported by an older version) is never computed: the login fails at once.
#[tokio::test]
async fn hashes_too_costly_to_verify_are_refused_and_never_computed() {
    let app = spawn_app().await;
    let argon2 = |m: u32, t: u32, p: u32| {
        format!("$argon2id$v=19$m={m},t={t},p={p}$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaGhhc2g")
    };
    let bcrypt_15 = bcrypt::hash_with_result(OLD_PASSWORD, 4)
        .expect("bcrypt")
        .to_string()
        .replacen("$04$", "$15$", 1);
    let lines = [
        json!({ "email": "m@example.com", "password_hash": argon2(262_144, 2, 1) }).to_string(),
        json!({ "email": "t@example.com", "password_hash": argon2(19_456, 11, 1) }).to_string(),
        json!({ "email": "p@example.com", "password_hash": argon2(19_456, 2, 5) }).to_string(),
        json!({ "email": "b@example.com", "password_hash": bcrypt_15 }).to_string(),
        json!({ "email": "ok@example.com", "password_hash": argon2(65_536, 10, 4) }).to_string(),
    ];
    let file = import_file(&lines);
    let run = tessera(
        &app,
        &["users", "import", file.path().to_str().expect("path")],
        None,
    )
    .await;
    assert!(!run.ok, "bad lines end non-zero");
    assert_eq!(run.stdout.trim(), "imported 1, already present 0, bad 4");
    for (line, why) in [(1, "64 MiB"), (2, "passes"), (3, "lanes"), (4, "cost over 14")] {
        let reported = run
            .stderr
            .lines()
            .find(|l| l.starts_with(&format!("line {line}: ")))
            .unwrap_or_else(|| panic!("line {line} not reported: {}", run.stderr));
        assert!(reported.contains(why), "{reported}");
    }

    // One that got in before the bounds: stored as it is, it is never computed.
    let store = tessera::store::connect(&app.config.database_url, 1)
        .await
        .expect("store");
    store
        .insert_user(&tessera::store::UserRecord::new(
            tessera::domain::Email::parse("huge@example.com").expect("email"),
            tessera::crypto::PasswordHashString(argon2(4_194_304, 2, 1)),
            tessera::domain::Timestamp(0),
        ))
        .await
        .expect("insert");
    let started = std::time::Instant::now();
    assert_problem(
        app.login_with("huge@example.com", "anything").await,
        401,
        "invalid_credentials",
    )
    .await;
    assert!(
        started.elapsed() < std::time::Duration::from_secs(2),
        "a 4 GiB argon2 hash was computed"
    );
}

/// An imported argon2 hash with more memory than ours is charged for it against the hashing
/// budget: with 4 units (4 × 19 MiB) and a 64 MiB hash, its verifications run one at a time.
#[tokio::test]
async fn an_imported_hash_is_charged_its_memory_against_the_hashing_budget() {
    let app = spawn_app_with(|c| c.hash_concurrency = 4).await;
    let big = Argon2::new(
        Algorithm::Argon2id,
        Version::V0x13,
        Params::new(65_536, 1, 1, None).expect("params"),
    )
    .hash_password(
        OLD_PASSWORD.as_bytes(),
        &SaltString::generate(&mut argon2::password_hash::rand_core::OsRng),
    )
    .expect("argon2id")
    .to_string();
    let file = import_file(&[json!({ "email": "big@example.com", "password_hash": big }).to_string()]);
    let run = tessera(
        &app,
        &["users", "import", file.path().to_str().expect("path")],
        None,
    )
    .await;
    assert_eq!(run.out().trim(), "imported 1, already present 0, bad 0");
    let logins: Vec<_> = (0..6)
        .map(|i| {
            let (client, url) = (app.client.clone(), app.url("/v1/auth/login"));
            tokio::spawn(async move {
                client
                    .post(url)
                    .json(&json!({ "email": "big@example.com", "password": format!("wrong {i}") }))
                    .send()
                    .await
                    .expect("request")
                    .status()
                    .as_u16()
            })
        })
        .collect();
    for login in logins {
        assert_eq!(login.await.expect("join"), 401);
    }
    let metrics = app.get("/metrics").await.text().await.expect("metrics");
    let peak = metrics
        .lines()
        .find_map(|l| l.strip_prefix("tessera_password_hashes_peak "))
        .expect("the peak gauge");
    assert_eq!(
        peak.trim(),
        "1",
        "64 MiB hashes verified {peak} at once on a 4 × 19 MiB budget"
    );
}
