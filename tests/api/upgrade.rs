//! Upgrading a database whose sessions hold refresh tokens of the format before chained
//! tokens (`tsr_` + 32 random bytes, found by hash alone): those tokens keep working, their
//! next rotation issues a chained token, and once rotated out they are still recognised as
//! reuse. The database is built at schema version 2 (the last one before chained tokens),
//! exactly as that release wrote its rows, and the server upgrades it when it starts.

use std::path::PathBuf;
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::rand::{SecureRandom, SystemRandom};
use sqlx::{Connection, PgConnection};
use tessera::crypto::RefreshToken;
use tessera::domain::{Clock, SessionId, SystemClock, UserId};

use crate::helpers::*;

const SQLITE_BEFORE: [&str; 2] = [
    include_str!("../../migrations/sqlite/0001_init.sql"),
    include_str!("../../migrations/sqlite/0002_session_revocations.sql"),
];
const POSTGRES_BEFORE: [(&str, &str); 2] = [
    (
        "0001_init.sql",
        include_str!("../../migrations/postgres/0001_init.sql"),
    ),
    (
        "0002_session_revocations.sql",
        include_str!("../../migrations/postgres/0002_session_revocations.sql"),
    ),
];
const DAY_MS: i64 = 86_400_000;

fn legacy_token(rng: &SystemRandom) -> RefreshToken {
    let mut secret = [0u8; 32];
    rng.fill(&mut secret).expect("rng");
    RefreshToken::parse(&format!("tsr_{}", URL_SAFE_NO_PAD.encode(secret))).expect("the old format")
}

fn now_ms() -> i64 {
    SystemClock.now().millis()
}

async fn assert_reuse(app: &TestApp, token: &RefreshToken) {
    assert_problem(app.refresh(token.expose()).await, 401, "refresh_token_reused").await;
}

/// A session as the old release left it: its chain `tokens[0] -> ... -> tokens[last]`, the
/// last one current, the previous ones rotated out an hour ago (outside any grace window).
struct LegacySession {
    id: SessionId,
    tokens: Vec<RefreshToken>,
}

enum OldDatabase {
    Sqlite(rusqlite::Connection),
    Postgres(PgConnection),
}

impl OldDatabase {
    /// Creates the schema as it was at version 2, and one user.
    async fn create(database_url: &str) -> (OldDatabase, UserId) {
        let mut db = if let Some(path) = database_url.strip_prefix("sqlite://") {
            let conn = rusqlite::Connection::open(PathBuf::from(path)).expect("open");
            for sql in SQLITE_BEFORE {
                conn.execute_batch(sql).expect("old schema");
            }
            conn.pragma_update(None, "user_version", 2).expect("user_version");
            OldDatabase::Sqlite(conn)
        } else {
            // sqlx's migrator, as the old release ran it: the same files, so the same
            // checksums, and the new release applies only what is missing.
            let dir = tempfile::tempdir().expect("tempdir");
            for (name, sql) in POSTGRES_BEFORE {
                std::fs::write(dir.path().join(name), sql).expect("write migration");
            }
            let mut conn = PgConnection::connect(database_url).await.expect("connect");
            sqlx::migrate::Migrator::new(dir.path())
                .await
                .expect("migrator")
                .run(&mut conn)
                .await
                .expect("old schema");
            OldDatabase::Postgres(conn)
        };
        let user = UserId::new();
        // Any PHC string will do: these tests never log in with a password.
        let insert = "INSERT INTO users (id, email, password_hash, roles, created_at) VALUES ";
        let hash = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA";
        match &mut db {
            OldDatabase::Sqlite(conn) => {
                conn.execute(
                    &format!("{insert}(?1, ?2, ?3, '[\"reader\"]', ?4)"),
                    rusqlite::params![user.to_string(), EMAIL, hash, now_ms()],
                )
                .expect("user");
            }
            OldDatabase::Postgres(conn) => {
                sqlx::query(&format!("{insert}($1, $2, $3, '[\"reader\"]', $4)"))
                    .bind(user.0)
                    .bind(EMAIL)
                    .bind(hash)
                    .bind(now_ms())
                    .execute(conn)
                    .await
                    .expect("user");
            }
        }
        (db, user)
    }

    /// A session whose chain has `links` tokens, written as the old release wrote them.
    async fn legacy_session(&mut self, user: UserId, links: usize) -> LegacySession {
        let rng = SystemRandom::new();
        let id = SessionId::new();
        let tokens: Vec<RefreshToken> = (0..links).map(|_| legacy_token(&rng)).collect();
        let now = now_ms();
        let current = tokens.len() - 1;
        let generation = i64::try_from(current).expect("small");
        let rotated_at = (current > 0).then_some(now - 3_600_000);
        let sealed = (current > 0).then(|| {
            tokens[current - 1]
                .seal_successor(&tokens[current], &rng)
                .expect("seal")
        });
        let columns = "id, user_id, created_at, last_used_at, absolute_expires_at, refresh_expires_at, \
                       user_agent, ip, generation, rotated_at, sealed_current";
        match self {
            OldDatabase::Sqlite(conn) => {
                // The old triggers recorded each chain head in `refresh_tokens` by hash.
                conn.execute(
                    &format!(
                        "INSERT INTO sessions ({columns}, current_hash) \
                         VALUES (?1, ?2, ?3, ?3, ?4, ?5, 'old-release/1.0', '127.0.0.1', 0, NULL, NULL, ?6)"
                    ),
                    rusqlite::params![
                        id.to_string(),
                        user.to_string(),
                        now,
                        now + 90 * DAY_MS,
                        now + 30 * DAY_MS,
                        &tokens[0].hash().0[..]
                    ],
                )
                .expect("session");
                for (g, token) in tokens.iter().enumerate().skip(1) {
                    conn.execute(
                        "UPDATE sessions SET generation = ?1, current_hash = ?2 WHERE id = ?3",
                        rusqlite::params![g as i64, &token.hash().0[..], id.to_string()],
                    )
                    .expect("rotate");
                }
                conn.execute(
                    "UPDATE sessions SET rotated_at = ?1, sealed_current = ?2 WHERE id = ?3",
                    rusqlite::params![rotated_at, sealed, id.to_string()],
                )
                .expect("chain head");
            }
            OldDatabase::Postgres(conn) => {
                sqlx::query(&format!(
                    "INSERT INTO sessions ({columns}) \
                     VALUES ($1, $2, $3, $3, $4, $5, 'old-release/1.0', '127.0.0.1', $6, $7, $8)"
                ))
                .bind(id.0)
                .bind(user.0)
                .bind(now)
                .bind(now + 90 * DAY_MS)
                .bind(now + 30 * DAY_MS)
                .bind(generation)
                .bind(rotated_at)
                .bind(sealed)
                .execute(&mut *conn)
                .await
                .expect("session");
                for (g, token) in tokens.iter().enumerate() {
                    sqlx::query(
                        "INSERT INTO refresh_tokens (hash, session_id, generation) VALUES ($1, $2, $3)",
                    )
                    .bind(&token.hash().0[..])
                    .bind(id.0)
                    .bind(g as i64)
                    .execute(&mut *conn)
                    .await
                    .expect("token");
                }
            }
        }
        LegacySession { id, tokens }
    }

    async fn close(self) {
        match self {
            OldDatabase::Sqlite(conn) => conn.close().map_err(|(_, e)| e).expect("close"),
            OldDatabase::Postgres(conn) => conn.close().await.expect("close"),
        }
    }
}

#[tokio::test]
async fn refresh_tokens_issued_before_the_chained_format_keep_working() {
    let storage = test_storage().await;
    let config = test_config(&storage);
    let (mut old, user) = OldDatabase::create(&config.database_url).await;
    let current = old.legacy_session(user, 1).await;
    let rotated = old.legacy_session(user, 3).await;
    let replayed = old.legacy_session(user, 2).await;
    old.close().await;

    let app = start(config, Arc::new(storage)).await;

    // The current legacy token rotates, into a chained token (longer: it names its session).
    let t = app.refresh_ok(current.tokens[0].expose()).await;
    assert_eq!(s(&t, "session_id"), current.id.to_string());
    let next = s(&t, "refresh_token");
    assert!(next.starts_with("tsr_") && next.len() > current.tokens[0].expose().len());
    json_ok(app.me(&s(&t, "access_token")).await).await;
    // The chain goes on from the chained token.
    let t = app.refresh_ok(&next).await;
    json_ok(app.me(&s(&t, "access_token")).await).await;
    // The legacy token is now an ancestor: presenting it is reuse, and kills the session.
    assert_reuse(&app, &current.tokens[0]).await;
    assert_problem(app.refresh(&s(&t, "refresh_token")).await, 401, "session_revoked").await;

    // A legacy token rotated out long ago (found by hash in the old table) is reuse too.
    assert_reuse(&app, &rotated.tokens[0]).await;
    assert_problem(
        app.refresh(rotated.tokens[2].expose()).await,
        401,
        "session_revoked",
    )
    .await;

    // A legacy session whose current token is legacy but was rotated from a legacy
    // predecessor: the current one rotates; then the (out-of-grace) predecessor is reuse.
    let t = app.refresh_ok(replayed.tokens[1].expose()).await;
    assert_eq!(s(&t, "session_id"), replayed.id.to_string());
    assert_reuse(&app, &replayed.tokens[0]).await;
}
