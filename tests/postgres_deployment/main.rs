//! Tessera as deployed on PostgreSQL: several real server processes on one database, a
//! database that goes away and comes back, and query plans that stay index lookups.

#[path = "../support/postgres.rs"]
mod postgres_support;
mod stalls;

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use postgres_support::TestDatabase;
use reqwest::StatusCode;
use serde_json::{json, Value};

const PASSWORD: &str = "correct horse battery staple";

/// A `tessera serve` process; killed when dropped.
struct Server {
    child: Child,
    base: String,
}

impl Server {
    fn start(database_url: &str, extra_env: &[(&str, &str)]) -> Server {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tessera"));
        cmd.arg("serve")
            .env("TESSERA_LISTEN", "127.0.0.1:0")
            .env("TESSERA_DATABASE_URL", database_url)
            .env("TESSERA_LOGIN_RATE", "0")
            .env("TESSERA_REFRESH_RATE", "0")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn tessera");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("listening on ") {
                    let _ = tx.send(addr.to_owned());
                }
            }
        });
        let base = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("server printed its ready line");
        Server { child, base }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

async fn post(c: &reqwest::Client, url: String, body: Value) -> reqwest::Response {
    c.post(url).json(&body).send().await.expect("request")
}

/// Asserts a 401 problem with `code`.
async fn assert_unauthorized(r: reqwest::Response, code: &str) {
    let status = r.status();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    assert_eq!(
        (status, body["code"].as_str().unwrap_or_default()),
        (StatusCode::UNAUTHORIZED, code)
    );
}

/// Registers and logs in on `server`; returns the token response.
async fn login(c: &reqwest::Client, server: &Server, email: &str) -> Value {
    let r = post(
        c,
        server.url("/v1/auth/register"),
        json!({"email": email, "password": PASSWORD}),
    )
    .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    login_again(c, server, email).await
}

async fn refresh(c: &reqwest::Client, server: &Server, token: &str) -> reqwest::Response {
    post(
        c,
        server.url("/v1/auth/refresh"),
        json!({ "refresh_token": token }),
    )
    .await
}

async fn me(c: &reqwest::Client, server: &Server, access: &str) -> reqwest::Response {
    c.get(server.url("/v1/auth/me"))
        .bearer_auth(access)
        .send()
        .await
        .expect("request")
}

fn field(v: &Value, key: &str) -> String {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} missing in {v}"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_rotate_exactly_once_and_agree_on_reuse() {
    let Some(db) = TestDatabase::create("two_instances").await else {
        return;
    };
    // Both start at the same moment on an empty database: one schema, one signing key.
    let grace = [("TESSERA_REUSE_GRACE", "2s")];
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| Server::start(&db.url, &grace));
        let b = s.spawn(|| Server::start(&db.url, &grace));
        (a.join().expect("a"), b.join().expect("b"))
    });
    let c = client();
    let jwks_a: Value = c
        .get(a.url("/.well-known/jwks.json"))
        .send()
        .await
        .expect("jwks")
        .json()
        .await
        .expect("json");
    let jwks_b: Value = c
        .get(b.url("/.well-known/jwks.json"))
        .send()
        .await
        .expect("jwks")
        .json()
        .await
        .expect("json");
    assert_eq!(jwks_a, jwks_b);
    assert_eq!(jwks_a["keys"].as_array().map(Vec::len), Some(1));

    let tokens = login(&c, &a, "race@example.com").await;
    let original = field(&tokens, "refresh_token");

    // 20 concurrent refreshes of one token, alternating between the two instances.
    let attempts: Vec<_> = (0..20)
        .map(|i| {
            let c = c.clone();
            let url = if i % 2 == 0 {
                a.url("/v1/auth/refresh")
            } else {
                b.url("/v1/auth/refresh")
            };
            let body = json!({ "refresh_token": original });
            tokio::spawn(async move { c.post(url).json(&body).send().await })
        })
        .collect();
    let mut successors = HashSet::new();
    let mut latest_access = String::new();
    for attempt in attempts {
        let r = attempt.await.expect("join").expect("request");
        assert_ne!(r.status().as_u16() / 100, 5, "no server errors under contention");
        if r.status() == StatusCode::OK {
            let v: Value = r.json().await.expect("json");
            assert_eq!(v["session_id"], tokens["session_id"]);
            successors.insert(field(&v, "refresh_token"));
            latest_access = field(&v, "access_token");
        }
    }
    assert_eq!(successors.len(), 1, "exactly one successor across both instances");
    let successor = successors.into_iter().next().unwrap_or_default();

    // The chain continues on either instance; tokens from one work on the other.
    let r = refresh(&c, &b, &successor).await;
    assert_eq!(r.status(), StatusCode::OK);
    let next: Value = r.json().await.expect("json");
    assert_eq!(
        me(&c, &a, &field(&next, "access_token")).await.status(),
        StatusCode::OK
    );
    assert_eq!(me(&c, &b, &latest_access).await.status(), StatusCode::OK);

    // After the grace window, replaying the original on B revokes the session for A too.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    assert_unauthorized(refresh(&c, &b, &original).await, "refresh_token_reused").await;
    assert_unauthorized(me(&c, &a, &field(&next, "access_token")).await, "session_revoked").await;
    assert_unauthorized(
        refresh(&c, &a, &field(&next, "refresh_token")).await,
        "session_revoked",
    )
    .await;
    drop((a, b));
    db.drop_database().await;
}

/// Logs out on `a` and returns how long `b` kept accepting the access token afterwards.
async fn time_until_refused(c: &reqwest::Client, a: &Server, b: &Server, tokens: &Value) -> Duration {
    let access = field(tokens, "access_token");
    assert_eq!(
        me(c, b, &access).await.status(),
        StatusCode::OK,
        "b remembers the session"
    );
    let r = c
        .post(a.url("/v1/auth/logout"))
        .bearer_auth(&access)
        .send()
        .await
        .expect("logout");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let revoked = Instant::now();
    loop {
        let r = me(c, b, &access).await;
        if r.status() != StatusCode::OK {
            assert_unauthorized(r, "session_revoked").await;
            return revoked.elapsed();
        }
        assert!(
            revoked.elapsed() < Duration::from_secs(5),
            "b never refused the revoked session"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_on_one_instance_is_refused_by_the_other_within_100_ms() {
    let Some(db) = TestDatabase::create("logout_across").await else {
        return;
    };
    let a = Server::start(&db.url, &[("TESSERA_MAX_SESSIONS", "100")]);
    let b = Server::start(&db.url, &[]);
    let c = client();
    let tokens = login(&c, &a, "across@example.com").await;
    let mut delays = vec![time_until_refused(&c, &a, &b, &tokens).await];
    assert_unauthorized(
        refresh(&c, &b, &field(&tokens, "refresh_token")).await,
        "session_revoked",
    )
    .await;
    for _ in 0..49 {
        let tokens = login_again(&c, &a, "across@example.com").await;
        delays.push(time_until_refused(&c, &a, &b, &tokens).await);
    }
    delays.sort();
    let p99 = delays[delays.len() * 99 / 100];
    eprintln!(
        "revocation propagation across instances: p50 {:?}, p99 {:?}, max {:?}",
        delays[delays.len() / 2],
        p99,
        delays[delays.len() - 1]
    );
    assert!(p99 < Duration::from_millis(100), "p99 {p99:?}");
    drop((a, b));
    db.drop_database().await;
}

/// Logs an existing user in on `server` (another session); returns the token response.
async fn login_again(c: &reqwest::Client, server: &Server, email: &str) -> Value {
    let r = post(
        c,
        server.url("/v1/auth/login"),
        json!({"email": email, "password": PASSWORD}),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    r.json().await.expect("token response")
}

/// Polls `f` until it returns true or `limit` passes.
async fn eventually<F, Fut>(limit: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < limit {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_answers_503_and_recovers_without_restart() {
    let Some(db) = TestDatabase::create("outage").await else {
        return;
    };
    let server = Server::start(&db.url, &[]);
    let c = client();
    let tokens = login(&c, &server, "outage@example.com").await;
    let health = || async {
        c.get(server.url("/healthz"))
            .send()
            .await
            .map(|r| r.status())
            .unwrap_or(StatusCode::BAD_GATEWAY)
    };
    assert_eq!(health().await, StatusCode::OK);

    // The database stops accepting connections and drops the ones it has.
    db.admin(&format!("ALTER DATABASE {} ALLOW_CONNECTIONS false", db.name))
        .await;
    db.admin(&format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{}'",
        db.name
    ))
    .await;

    assert!(
        eventually(Duration::from_secs(15), || async {
            health().await == StatusCode::SERVICE_UNAVAILABLE
        })
        .await,
        "healthz turns 503"
    );
    let r = me(&c, &server, &field(&tokens, "access_token")).await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let ct = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(ct.starts_with("application/problem+json"), "{ct}");
    let body: Value = r.json().await.expect("problem");
    assert_eq!(body["code"], "service_unavailable");
    assert_eq!(
        refresh(&c, &server, &field(&tokens, "refresh_token"))
            .await
            .status(),
        StatusCode::SERVICE_UNAVAILABLE
    );

    // It comes back: so does Tessera, by itself.
    db.admin(&format!("ALTER DATABASE {} ALLOW_CONNECTIONS true", db.name))
        .await;
    assert!(
        eventually(Duration::from_secs(15), || async {
            health().await == StatusCode::OK
        })
        .await,
        "healthz recovers"
    );
    let r = refresh(&c, &server, &field(&tokens, "refresh_token")).await;
    assert_eq!(r.status(), StatusCode::OK, "the session survived the outage");
    drop(server);
    db.drop_database().await;
}

/// Failed logins are counted in the database: failures spread over two instances lock the
/// account on both, and racing failures are all counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failed_logins_on_two_instances_lock_the_account_on_both() {
    let Some(db) = TestDatabase::create("lockout_two_instances").await else {
        return;
    };
    let lockout = [
        ("TESSERA_LOCKOUT_THRESHOLD", "6"),
        ("TESSERA_LOCKOUT_WINDOW", "60s"),
        ("TESSERA_LOCKOUT_COOLDOWN", "30s"),
    ];
    let a = Server::start(&db.url, &lockout);
    let b = Server::start(&db.url, &lockout);
    let c = client();
    login(&c, &a, "target@example.com").await;
    let wrong = json!({"email": "target@example.com", "password": "wrong password"});
    // Five failures at once, split over both instances: one short of the threshold.
    let failures: Vec<_> = (0..5)
        .map(|i| {
            let (c, url, body) = (
                c.clone(),
                if i % 2 == 0 {
                    a.url("/v1/auth/login")
                } else {
                    b.url("/v1/auth/login")
                },
                wrong.clone(),
            );
            tokio::spawn(async move { post(&c, url, body).await.status() })
        })
        .collect();
    for f in failures {
        assert_eq!(f.await.expect("join"), StatusCode::UNAUTHORIZED);
    }
    login_again(&c, &b, "target@example.com").await;
    // The success cleared the count. Six more at once, over both instances: none of the
    // racing failures may be lost, so the account is now locked everywhere.
    let failures: Vec<_> = (0..6)
        .map(|i| {
            let server = if i % 2 == 0 { &b } else { &a };
            let (c, url, body) = (c.clone(), server.url("/v1/auth/login"), wrong.clone());
            tokio::spawn(async move { post(&c, url, body).await.status() })
        })
        .collect();
    for f in failures {
        assert_eq!(f.await.expect("join"), StatusCode::UNAUTHORIZED);
    }
    let right = json!({"email": "target@example.com", "password": PASSWORD});
    for server in [&a, &b] {
        let r = post(&c, server.url("/v1/auth/login"), right.clone()).await;
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(r.headers().contains_key("retry-after"));
    }
    drop((a, b));
    db.drop_database().await;
}

#[tokio::test]
async fn every_request_path_is_an_index_lookup() {
    use sqlx::{Connection, Executor, Row};

    let Some(db) = TestDatabase::create("plans").await else {
        return;
    };
    drop(tessera::store::connect(&db.url, 1).await.expect("migrate"));
    let mut conn = sqlx::PgConnection::connect(&db.url).await.expect("connect");
    // 50k users, 100k sessions, 200k refresh tokens: enough that a scan would show.
    conn.execute(
        "INSERT INTO users (id, email, password_hash, created_at) \
           SELECT gen_random_uuid(), 'u' || i || '@example.com', 'x', i FROM generate_series(1, 50000) i;
         INSERT INTO sessions (id, user_id, created_at, last_used_at, absolute_expires_at, refresh_expires_at) \
           SELECT gen_random_uuid(), id, 0, 0, 1e13, 1e13 FROM users, generate_series(1, 2);
         INSERT INTO refresh_tokens (hash, session_id, generation) \
           SELECT sha256((id::text || g)::bytea), id, g FROM sessions, generate_series(0, 1) g;
         INSERT INTO legacy_refresh_tokens (hash, session_id, generation) \
           SELECT sha256(('legacy' || id::text)::bytea), id, 0 FROM sessions;
         ANALYZE;",
    )
    .await
    .expect("populate");
    let row = sqlx::query("SELECT s.id::text AS sid, s.user_id::text AS uid, encode(t.hash, 'hex') AS h FROM sessions s JOIN legacy_refresh_tokens t ON t.session_id = s.id LIMIT 1")
        .fetch_one(&mut conn)
        .await
        .expect("sample");
    let (sid, uid, h): (String, String, String) = (row.get("sid"), row.get("uid"), row.get("h"));
    let cols = "s.*, u.email";
    let queries = [
        ("refresh lookup", format!("SELECT t.generation, {cols} FROM refresh_tokens t JOIN sessions s ON s.id = t.session_id JOIN users u ON u.id = s.user_id WHERE t.session_id = '{sid}' AND t.generation = 0 AND t.hash = sha256(('{sid}' || 0)::bytea)")),
        ("legacy refresh lookup", format!("SELECT t.generation, {cols} FROM legacy_refresh_tokens t JOIN sessions s ON s.id = t.session_id JOIN users u ON u.id = s.user_id WHERE t.hash = decode('{h}', 'hex')")),
        ("rotate", format!("UPDATE sessions SET generation = generation + 1 WHERE id = '{sid}' AND generation = 0 AND revoked_at IS NULL")),
        ("session liveness", format!("SELECT {cols} FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.id = '{sid}'")),
        ("revoke session", format!("UPDATE sessions SET revoked_at = 1 WHERE id = '{sid}' AND revoked_at IS NULL")),
        ("list sessions", format!("SELECT * FROM sessions s WHERE s.user_id = '{uid}' AND s.revoked_at IS NULL AND s.absolute_expires_at > 5 AND s.refresh_expires_at > 5 ORDER BY s.last_used_at DESC, s.id DESC")),
        ("revoke user sessions", format!("UPDATE sessions SET revoked_at = 1 WHERE user_id = '{uid}' AND revoked_at IS NULL AND id IS DISTINCT FROM NULL")),
        ("session limit", format!("UPDATE sessions SET revoked_at = 1 WHERE id IN (SELECT id FROM sessions WHERE user_id = '{uid}' AND revoked_at IS NULL AND absolute_expires_at > 5 AND refresh_expires_at > 5 ORDER BY last_used_at DESC, id DESC OFFSET 10)")),
        ("login lookup", "SELECT * FROM users u WHERE u.email = 'u77@example.com'".to_owned()),
    ];
    for (what, sql) in queries {
        let plan: Vec<String> = sqlx::query(&format!("EXPLAIN {sql}"))
            .fetch_all(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"))
            .iter()
            .map(|r| r.get::<String, _>(0))
            .collect();
        let plan = plan.join("\n");
        assert!(!plan.contains("Seq Scan"), "{what} scans a table:\n{plan}");
        assert!(plan.contains("Index"), "{what} uses no index:\n{plan}");
    }
    let _ = conn.close().await;
    db.drop_database().await;
}
