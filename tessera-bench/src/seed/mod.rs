//! Bulk seeding: users, sessions and each session's first refresh token, written straight
//! into a migrated Tessera database, fast enough that 10 million sessions take minutes.
//!
//! The rows are exactly what a login would have written (same columns, same token format,
//! same hashes), so the running server serves the seeded sessions like any other:
//! - every user gets a real argon2id hash of [`BENCH_PASSWORD`], computed once and reused
//!   (hashing 10 million passwords would take days and prove nothing);
//! - every session's refresh token comes from `tessera::crypto::RefreshToken::issue`, and
//!   only its SHA-256 (`RefreshToken::hash`) is stored, like the server does;
//! - on SQLite the schema's trigger records the first token in `refresh_tokens` when the
//!   session row is inserted (with `sessions.current_hash`); on PostgreSQL the token rows are
//!   written alongside.
//!
//! Speed comes from batching: on PostgreSQL each batch is a transaction of two `COPY ... FROM
//! STDIN` streams; on SQLite each batch is a transaction of multi-row `INSERT`s on one
//! rusqlite connection with `synchronous=OFF` (a crash mid-seed leaves a database to throw
//! away, which is fine for a benchmark fixture), run on a blocking thread since rusqlite
//! blocks. Multi-row statements measured faster than a prepared single-row `INSERT` executed
//! per row (roughly 100k against 75k sessions/s, seeding 200k sessions). Token generation
//! runs on a thread of its own, one batch ahead of the database writes.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use ring::rand::SystemRandom;
use serde::{Deserialize, Serialize};
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{Connection, Executor};
use tessera::crypto::{PasswordHashString, PasswordHasher, RefreshToken, RefreshTokenHash};
use tessera::domain::{Clock, Password, SessionId, SystemClock, Timestamp, UserId};
use tokio::sync::mpsc;

use crate::{BenchError, BenchResult, BENCH_PASSWORD};
use sqlite::{on_blocking_thread, sqlite_path, take_sqlite, SqliteSeeder};

mod sqlite;

/// A seeded session lasts as long as a fresh login's with Tessera's defaults.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(90 * 24 * 3600);
/// The first refresh token's lifetime (Tessera's default sliding lifetime).
pub const REFRESH_LIFETIME: Duration = Duration::from_secs(30 * 24 * 3600);
/// How many seeded sessions' tokens `--emit-tokens` writes unless told otherwise.
pub const DEFAULT_EMIT: u64 = 1000;

/// Written into every seeded session, as a login would record the client's.
const SEEDED_USER_AGENT: &str = "tessera-bench/seed";
const SEEDED_IP: &str = "127.0.0.1";

/// Sessions per transaction: big enough that commits are rare, small enough that the
/// progress bar moves and a batch's rows (~200 bytes each) stay a few MB.
const SESSIONS_PER_BATCH: usize = 20_000;
/// Users per transaction.
const USERS_PER_BATCH: usize = 20_000;

pub struct SeedOptions {
    /// `sqlite://path` or `postgres://...`; migrated first, like `tessera migrate`.
    pub database_url: String,
    pub users: u64,
    pub sessions: u64,
    /// Where to write the emitted sessions' tokens, one JSON object per line.
    pub emit_tokens: Option<PathBuf>,
    /// How many sessions to emit (spread evenly over all seeded sessions).
    pub emit: u64,
    pub show_progress: bool,
}

#[derive(Debug)]
pub struct SeedSummary {
    pub users: u64,
    pub sessions: u64,
    pub emitted: u64,
    pub elapsed: Duration,
}

/// One line of the `--emit-tokens` file: a seeded session's current refresh token and the
/// credentials of the user it belongs to.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SeededToken {
    pub email: String,
    pub password: String,
    pub session_id: String,
    pub refresh_token: String,
}

/// The email of the `index`-th seeded user. Seeding twice into one database fails on the
/// unique email rather than mixing two fixtures.
pub fn seeded_email(index: u64) -> String {
    format!("seed-{index}@bench.test")
}

/// Seeds the database named in `options` and returns what was written.
pub async fn seed(options: &SeedOptions) -> BenchResult<SeedSummary> {
    if options.users == 0 && options.sessions > 0 {
        return Err(BenchError::InvalidArgument(
            "sessions need at least one user (--users)".into(),
        ));
    }
    let started = Instant::now();

    // The same migration `tessera migrate` and `tessera serve` run, so the schema is
    // exactly the server's. The store's own connections are closed before bulk loading.
    let store = tessera::store::connect(&options.database_url, 1).await?;
    drop(store);

    let password = Password::parse(BENCH_PASSWORD)
        .map_err(|e| BenchError::InvalidArgument(format!("bench password: {}", e.message)))?;
    let password_hash = tokio::task::spawn_blocking(move || PasswordHasher::new().hash(&password))
        .await
        .map_err(|e| BenchError::Setup(format!("hashing task: {e}")))??;

    let now = SystemClock.now();
    let times = SessionTimes {
        now,
        absolute_expires_at: now.plus(SESSION_LIFETIME),
        refresh_expires_at: now.plus(REFRESH_LIFETIME),
    };
    let user_ids: Arc<Vec<UserId>> = Arc::new((0..options.users).map(|_| UserId::new()).collect());

    let mut database = Database::open(&options.database_url).await?;

    let users_bar = progress_bar(options.show_progress, options.users, "users");
    for (batch_number, batch) in user_ids.chunks(USERS_PER_BATCH).enumerate() {
        let first_index = (batch_number * USERS_PER_BATCH) as u64;
        database
            .insert_users(batch, first_index, &password_hash, times.now)
            .await?;
        users_bar.inc(batch.len() as u64);
    }
    users_bar.finish();

    let sessions_bar = progress_bar(options.show_progress, options.sessions, "sessions");
    let emit = if options.emit_tokens.is_some() {
        options.emit.min(options.sessions)
    } else {
        0
    };
    // Batches are generated one ahead of the writes, on a thread of its own: random bytes,
    // base64 and SHA-256 for every token are the seeder's own CPU work.
    let (batches_tx, mut batches_rx) = mpsc::channel::<Vec<SessionRow>>(2);
    let generator = {
        let user_ids = Arc::clone(&user_ids);
        let sessions = options.sessions;
        tokio::task::spawn_blocking(move || generate_sessions(sessions, &user_ids, emit, &batches_tx))
    };
    while let Some(batch) = batches_rx.recv().await {
        let written = batch.len() as u64;
        database.insert_sessions(batch, times).await?;
        sessions_bar.inc(written);
    }
    let emitted = generator
        .await
        .map_err(|e| BenchError::Setup(format!("token generator: {e}")))??;
    sessions_bar.finish();

    database.finish().await?;

    if let Some(path) = &options.emit_tokens {
        write_emitted(path, &emitted)?;
    }
    Ok(SeedSummary {
        users: options.users,
        sessions: options.sessions,
        emitted: emitted.len() as u64,
        elapsed: started.elapsed(),
    })
}

#[derive(Clone, Copy)]
struct SessionTimes {
    now: Timestamp,
    absolute_expires_at: Timestamp,
    refresh_expires_at: Timestamp,
}

/// A session as generated: only the hash of its token goes to the database.
struct SessionRow {
    id: SessionId,
    user_id: UserId,
    token_hash: RefreshTokenHash,
}

/// Generates every session in batches and sends them on; returns the emitted sessions'
/// tokens, `emit` of them spread evenly over all sessions (so a load run touches the whole
/// table, not only the pages written first).
fn generate_sessions(
    sessions: u64,
    user_ids: &[UserId],
    emit: u64,
    batches: &mpsc::Sender<Vec<SessionRow>>,
) -> BenchResult<Vec<SeededToken>> {
    let rng = SystemRandom::new();
    let users = user_ids.len() as u64;
    // Emitting none: never due (`checked_div` of 0 is `None`).
    let emit_every = sessions.checked_div(emit).map_or(u64::MAX, |every| every.max(1));
    let mut emitted = Vec::with_capacity(emit as usize);
    let mut index = 0u64;
    while index < sessions {
        let batch_len = (sessions - index).min(SESSIONS_PER_BATCH as u64);
        let mut batch = Vec::with_capacity(batch_len as usize);
        for _ in 0..batch_len {
            let user_index = index % users;
            let id = SessionId::new();
            let token = RefreshToken::issue(&rng, id, 0)?;
            let row = SessionRow {
                id,
                user_id: user_ids[user_index as usize],
                token_hash: token.hash(),
            };
            if index.is_multiple_of(emit_every) && (emitted.len() as u64) < emit {
                emitted.push(SeededToken {
                    email: seeded_email(user_index),
                    password: BENCH_PASSWORD.to_owned(),
                    session_id: row.id.to_string(),
                    refresh_token: token.expose().to_owned(),
                });
            }
            batch.push(row);
            index += 1;
        }
        if batches.blocking_send(batch).is_err() {
            // The writer stopped (it failed and will report why); nothing more to do.
            break;
        }
    }
    Ok(emitted)
}

/// Writes tokens as `--emit-tokens` does, replacing `path` whole (through a temporary file
/// beside it, so an interrupted write never leaves half a file).
pub fn write_emitted(path: &Path, tokens: &[SeededToken]) -> BenchResult<()> {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = PathBuf::from(temporary);
    let mut out = std::io::BufWriter::new(std::fs::File::create(&temporary)?);
    for token in tokens {
        serde_json::to_writer(&mut out, token)?;
        out.write_all(b"\n")?;
    }
    out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    std::fs::rename(&temporary, path)?;
    Ok(())
}

/// Reads a file written by `--emit-tokens`.
pub fn read_emitted(path: &Path) -> BenchResult<Vec<SeededToken>> {
    let text = std::fs::read_to_string(path)?;
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| serde_json::from_str(line).map_err(BenchError::from))
        .collect()
}

fn progress_bar(show: bool, len: u64, what: &'static str) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len).with_prefix(what);
    if let Ok(style) = ProgressStyle::with_template(
        "{prefix:>8} [{elapsed_precise}] {wide_bar} {human_pos}/{human_len} ({per_sec}, eta {eta})",
    ) {
        bar.set_style(style);
    }
    bar
}

/// One connection to the database being seeded.
enum Database {
    /// `None` only while a batch runs on a blocking thread, or after that thread failed.
    Sqlite(Option<SqliteSeeder>),
    Postgres(PgConnection),
}

impl Database {
    async fn open(url: &str) -> BenchResult<Database> {
        if url.starts_with("sqlite:") {
            let path = sqlite_path(url)?;
            let seeder = tokio::task::spawn_blocking(move || SqliteSeeder::open(&path))
                .await
                .map_err(|e| BenchError::Setup(format!("SQLite task: {e}")))??;
            Ok(Database::Sqlite(Some(seeder)))
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let options = PgConnectOptions::from_str(url)?;
            let mut connection = PgConnection::connect_with(&options).await?;
            // Commits are rare (one per batch), so not waiting for their WAL flush saves
            // little; it is safe because a crash mid-seed loses only a fixture to re-create.
            connection.execute("SET synchronous_commit = off").await?;
            Ok(Database::Postgres(connection))
        } else {
            Err(BenchError::InvalidArgument(format!(
                "unsupported database url {url:?} (sqlite://... or postgres://...)"
            )))
        }
    }

    async fn insert_users(
        &mut self,
        ids: &[UserId],
        first_index: u64,
        password_hash: &PasswordHashString,
        now: Timestamp,
    ) -> BenchResult<()> {
        match self {
            Database::Sqlite(seeder) => {
                let ids = ids.to_vec();
                let password_hash = password_hash.0.clone();
                on_blocking_thread(seeder, move |seeder| {
                    seeder.insert_users(&ids, first_index, &password_hash, now)
                })
                .await?;
            }
            Database::Postgres(connection) => {
                let mut rows = String::with_capacity(ids.len() * 180);
                for (offset, id) in ids.iter().enumerate() {
                    // Writing to a String cannot fail.
                    let _ = writeln!(
                        rows,
                        "{}\t{}\t{}\t[]\t{}",
                        id,
                        seeded_email(first_index + offset as u64),
                        password_hash.0,
                        now.millis()
                    );
                }
                let mut tx = connection.begin().await?;
                copy_in(
                    &mut tx,
                    "COPY users (id, email, password_hash, roles, created_at) FROM STDIN",
                    rows,
                )
                .await?;
                tx.commit().await?;
            }
        }
        Ok(())
    }

    async fn insert_sessions(&mut self, rows: Vec<SessionRow>, times: SessionTimes) -> BenchResult<()> {
        match self {
            Database::Sqlite(seeder) => {
                on_blocking_thread(seeder, move |seeder| seeder.insert_sessions(&rows, times)).await?;
            }
            Database::Postgres(connection) => {
                let mut sessions = String::with_capacity(rows.len() * 200);
                let mut tokens = String::with_capacity(rows.len() * 120);
                for row in &rows {
                    // Writing to a String cannot fail.
                    let _ = write!(
                        sessions,
                        "{}\t{}\t{now}\t{now}\t{}\t{}\t{SEEDED_USER_AGENT}\t{SEEDED_IP}\t0\t",
                        row.id,
                        row.user_id,
                        times.absolute_expires_at.millis(),
                        times.refresh_expires_at.millis(),
                        now = times.now.millis(),
                    );
                    // bytea in COPY's text format: `\x` + hex, the backslash itself escaped.
                    // The session row holds its current token's hash too (the fast path's check).
                    sessions.push_str("\\\\x");
                    push_hex(&mut sessions, &row.token_hash.0);
                    sessions.push('\n');
                    tokens.push_str("\\\\x");
                    push_hex(&mut tokens, &row.token_hash.0);
                    let _ = writeln!(tokens, "\t{}\t0", row.id);
                }
                let mut tx = connection.begin().await?;
                copy_in(
                    &mut tx,
                    "COPY sessions (id, user_id, created_at, last_used_at, absolute_expires_at, \
                     refresh_expires_at, user_agent, ip, generation, current_hash) FROM STDIN",
                    sessions,
                )
                .await?;
                copy_in(
                    &mut tx,
                    "COPY refresh_tokens (hash, session_id, generation) FROM STDIN",
                    tokens,
                )
                .await?;
                tx.commit().await?;
            }
        }
        Ok(())
    }

    /// Leaves the database ready to serve: statistics for PostgreSQL's planner, and the
    /// SQLite WAL folded into the main file so the server does not start with a huge one.
    async fn finish(self) -> BenchResult<()> {
        match self {
            Database::Sqlite(mut seeder) => {
                let seeder = take_sqlite(&mut seeder)?;
                tokio::task::spawn_blocking(move || seeder.finish())
                    .await
                    .map_err(|e| BenchError::Setup(format!("SQLite task: {e}")))??;
            }
            Database::Postgres(mut connection) => {
                connection
                    .execute("ANALYZE users; ANALYZE sessions; ANALYZE refresh_tokens")
                    .await?;
                connection.close().await?;
            }
        }
        Ok(())
    }
}

async fn copy_in(connection: &mut PgConnection, statement: &str, rows: String) -> BenchResult<()> {
    let mut copy = connection.copy_in_raw(statement).await?;
    if let Err(e) = copy.send(rows.into_bytes()).await {
        // Tell the server the stream is over so the connection stays usable for the error.
        let _ = copy.abort(e.to_string()).await;
        return Err(e.into());
    }
    copy.finish().await?;
    Ok(())
}

fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_lower_case_two_digits_per_byte() {
        let mut out = String::new();
        push_hex(&mut out, &[0x00, 0x0f, 0xa5, 0xff]);
        assert_eq!(out, "000fa5ff");
    }

    #[test]
    fn emitted_sessions_are_spread_over_all_sessions() {
        let users: Vec<UserId> = (0..3).map(|_| UserId::new()).collect();
        let (tx, mut rx) = mpsc::channel(1000);
        let emitted = generate_sessions(100, &users, 10, &tx);
        drop(tx);
        let emitted = emitted.expect("generated");
        assert_eq!(emitted.len(), 10);
        let mut rows = Vec::new();
        while let Ok(batch) = rx.try_recv() {
            rows.extend(batch);
        }
        assert_eq!(rows.len(), 100);
        // Every 10th session, each with its own user's email and a token whose hash was stored.
        for (k, token) in emitted.iter().enumerate() {
            let row = &rows[k * 10];
            assert_eq!(token.session_id, row.id.to_string());
            assert_eq!(token.email, seeded_email((k as u64 * 10) % 3));
            let parsed = RefreshToken::parse(&token.refresh_token).expect("tessera's token format");
            assert_eq!(parsed.hash(), row.token_hash);
        }
    }
}
