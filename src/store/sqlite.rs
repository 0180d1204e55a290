//! The embedded SQLite store (WAL mode), on `rusqlite`: SQLite is a library, so a statement
//! is a function call, not a message to another thread.
//!
//! - **Reads** run on the calling task, on a connection taken from a small idle list (WAL
//!   gives each a consistent snapshot, and readers never wait for the writer). A read is a
//!   few microseconds from the page cache: cheaper than any hand-off to another thread.
//! - **Writes** go to one writer thread, which drains every write queued meanwhile and runs
//!   them in one transaction: one commit, one WAL append, for all of them (group commit).
//!   Each caller is answered only after its batch committed. SQLite has one writer anyway;
//!   queueing in the process replaces contention for its lock, and batching turns N commits
//!   into one.
//!
//! Durability: `synchronous = NORMAL` in WAL mode. A committed batch is in the WAL file (the
//! operating system's cache) before anyone is answered, so a crash of the process loses no
//! acknowledged write. A power loss or kernel crash can lose the batches committed since the
//! last checkpoint's sync (never corrupting the database); `docs/BENCHMARKS.md` says more.

use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{params, Connection, ErrorCode, OpenFlags, OptionalExtension, Row};

use super::*;

mod operator;
pub use operator::inspect;

/// The schema, in order; `PRAGMA user_version` records how many are applied.
const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/sqlite/0001_init.sql"),
    include_str!("../../migrations/sqlite/0002_session_revocations.sql"),
    include_str!("../../migrations/sqlite/0003_chained_refresh_tokens.sql"),
    include_str!("../../migrations/sqlite/0004_login_failures.sql"),
    include_str!("../../migrations/sqlite/0005_user_admin.sql"),
    include_str!("../../migrations/sqlite/0006_alert_outbox.sql"),
    include_str!("../../migrations/sqlite/0007_revocation_feed.sql"),
    include_str!("../../migrations/sqlite/0008_signing_key_stages.sql"),
    include_str!("../../migrations/sqlite/0009_credentials.sql"),
    include_str!("../../migrations/sqlite/0010_mail_outbox.sql"),
    include_str!("../../migrations/sqlite/0011_user_data.sql"),
    include_str!("../../migrations/sqlite/0012_email_tokens.sql"),
    include_str!("../../migrations/sqlite/0013_email_link_browser.sql"),
    include_str!("../../migrations/sqlite/0014_mfa.sql"),
    include_str!("../../migrations/sqlite/0015_passkeys.sql"),
];

/// The most writes one transaction takes; more wait for the next batch.
const MAX_BATCH: usize = 512;
/// How long a statement waits for another process (the CLI) holding the write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// The writer's page cache, in KiB: the pages of the sessions being refreshed and of their
/// chains stay in it under load (SQLite's default is 2 MiB).
const WRITER_CACHE_KIB: i64 = 32 * 1024;
/// How often the WAL is copied back into the database file, off the writer's path.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);
/// The WAL's size (in 4 KiB pages) at which the writer finishes a checkpoint itself so the
/// WAL can start over: it stays under about 64 MiB. Each such checkpoint syncs the files
/// while writes wait (tens of ms on a slow disk), so it should come rarely.
const WAL_RESTART_PAGES: i64 = 16_384;

// Column lists as macros, so every statement is one `&'static str` built at compile time:
// `prepare_cached` finds its statement by text, and a `format!` per call would allocate and
// format the SQL on every request.
macro_rules! session_columns {
    () => {
        "s.id, s.user_id, s.created_at, s.last_used_at, s.absolute_expires_at, \
         s.refresh_expires_at, s.revoked_at, s.revoked_reason, s.user_agent, s.ip, s.generation, \
         s.rotated_at, s.sealed_current, s.csrf_token, s.amr, s.auth_time"
    };
}
/// The same columns as `RETURNING` names them (no table alias there).
macro_rules! returned_session_columns {
    () => {
        "id, user_id, created_at, last_used_at, absolute_expires_at, refresh_expires_at, \
         revoked_at, revoked_reason, user_agent, ip, generation, rotated_at, sealed_current, csrf_token, \
         amr, auth_time"
    };
}
macro_rules! user_columns {
    () => {
        "u.id AS u_id, u.email, u.password_hash, u.roles, u.created_at AS u_created_at, u.credential_epoch, \
         u.user_metadata, u.app_metadata, u.email_verified_at"
    };
}
/// The system clock as SQLite sees it, in milliseconds (the revocation log's clock).
macro_rules! sql_now_millis {
    () => {
        "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)"
    };
}

// Account administration, import and the audit trail (uses the macros above).
mod accounts;
// The alert outbox.
mod alerts;
// The mail outbox.
pub(super) mod mail;
// Single-use tokens sent by mail.
mod email_tokens;
// Passkeys and their ceremonies.
mod passkeys;
// Second factors and login challenges.
mod factors;

pub struct SqliteStore {
    readers: Readers,
    writer: Writer,
}

/// Where the database lives, and how to open another connection to it.
#[derive(Clone)]
struct Location {
    path: PathBuf,
    flags: OpenFlags,
}

/// The file `url` names when it does not exist (`None` for one that does, or in memory).
pub(super) fn missing_file(url: &str) -> StoreResult<Option<PathBuf>> {
    let location = Location::parse(url)?;
    let in_memory = location.path.to_string_lossy().starts_with("file:");
    Ok((!in_memory && !location.path.exists()).then_some(location.path))
}

impl Location {
    /// `sqlite://relative.db`, `sqlite:///absolute.db`, `sqlite:relative.db` or
    /// `sqlite::memory:` (query parameters are ignored).
    fn parse(url: &str) -> StoreResult<Location> {
        let rest = url
            .strip_prefix("sqlite:")
            .ok_or_else(|| StoreError::UnsupportedUrl(url.to_owned()))?;
        let rest = rest.strip_prefix("//").unwrap_or(rest);
        let path = rest.split('?').next().unwrap_or_default();
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI;
        if path == ":memory:" {
            // One private in-memory database shared by this store's connections (a plain
            // `:memory:` is a new, empty database per connection). It lives while the writer
            // keeps its connection open.
            let name = format!(
                "file:tessera-{}?mode=memory&cache=shared",
                uuid::Uuid::new_v4().simple()
            );
            return Ok(Location {
                path: PathBuf::from(name),
                flags,
            });
        }
        if path.is_empty() {
            return Err(StoreError::UnsupportedUrl(url.to_owned()));
        }
        Ok(Location {
            path: PathBuf::from(path),
            flags,
        })
    }

    fn open(&self) -> rusqlite::Result<Connection> {
        let conn = Connection::open_with_flags(&self.path, self.flags)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        conn.pragma_update(None, "foreign_keys", true)?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.set_prepared_statement_cache_capacity(64);
        Ok(conn)
    }
}

/// Read connections, reused. A read never awaits while it holds one, so at most one per
/// runtime worker thread is ever in use; the idle list keeps up to `keep`.
struct Readers {
    location: Location,
    idle: Mutex<Vec<Connection>>,
    keep: usize,
}

impl Readers {
    fn read<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> StoreResult<T> {
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let conn = match idle {
            Some(conn) => conn,
            None => self.location.open().map_err(map_sqlite)?,
        };
        let result = f(&conn);
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < self.keep {
            idle.push(conn);
        }
        result.map_err(map_sqlite)
    }
}

/// Answers a write's caller once its batch has committed (or failed).
type Reply = Box<dyn FnOnce(Result<(), StoreError>) + Send>;
/// A write: runs inside the batch's transaction, returns how to answer its caller.
type Job = Box<dyn FnOnce(&Connection) -> Reply + Send>;

struct Writer {
    /// `Sender` is `Sync`: every request task sends on it directly.
    jobs: mpsc::Sender<Job>,
}

impl Writer {
    fn start(conn: Connection, checkpointer: Connection) -> std::io::Result<Writer> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let (stop_checkpoints, stopped) = mpsc::channel::<()>();
        std::thread::Builder::new()
            .name("tessera-sqlite-writer".into())
            .spawn(move || {
                run_writer(&conn, &queue);
                drop(stop_checkpoints);
            })?;
        std::thread::Builder::new()
            .name("tessera-sqlite-checkpoint".into())
            .spawn(move || run_checkpoints(&checkpointer, &stopped))?;
        Ok(Writer { jobs })
    }
}

/// The writer thread: takes every job queued, runs them in one transaction, commits, answers.
fn run_writer(conn: &Connection, queue: &mpsc::Receiver<Job>) {
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        commit_batch(conn, batch);
    }
}

/// Copies the WAL back into the database every [`CHECKPOINT_EVERY`] until the writer stops.
/// PASSIVE never waits for readers or the writer; what it cannot copy now it copies next time.
fn run_checkpoints(conn: &Connection, writer_stopped: &mpsc::Receiver<()>) {
    while let Err(mpsc::RecvTimeoutError::Timeout) = writer_stopped.recv_timeout(CHECKPOINT_EVERY) {
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::warn!(error = %e, "sqlite: checkpoint failed");
        }
    }
    // A last full checkpoint, so a clean shutdown leaves a small WAL behind.
    let _ = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
}

fn commit_batch(conn: &Connection, batch: Vec<Job>) {
    if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
        // Dropping the jobs drops their callers' channels: each is answered "unavailable".
        tracing::error!(error = %e, "sqlite: cannot begin a write transaction");
        return;
    }
    let mut replies: Vec<Reply> = Vec::with_capacity(batch.len());
    for job in batch {
        let reply = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(conn))) {
            Ok(reply) => reply,
            Err(_) => {
                tracing::error!("sqlite: a write panicked");
                continue;
            }
        };
        replies.push(reply);
        if conn.is_autocommit() {
            // SQLite rolled the whole transaction back (disk full, I/O error): everything
            // done so far in it is gone. Fail those writes, go on in a new transaction.
            for reply in replies.drain(..) {
                reply(Err(StoreError::Database("write transaction rolled back".into())));
            }
            if conn.execute_batch("BEGIN IMMEDIATE").is_err() {
                return;
            }
        }
    }
    let committed = conn.execute_batch("COMMIT").map_err(|e| {
        let _ = conn.execute_batch("ROLLBACK");
        map_sqlite(e)
    });
    for reply in replies {
        reply(committed.clone());
    }
}

impl SqliteStore {
    /// Opens (creating if missing) and migrates the database named by `url`.
    pub async fn connect(url: &str, max_connections: u32) -> StoreResult<SqliteStore> {
        let location = Location::parse(url)?;
        let mut conn = location.open().map_err(map_sqlite)?;
        // Persistent in the file; readers never block the writer or each other.
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(map_sqlite)?;
        migrate(&mut conn)?;
        conn.pragma_update(None, "cache_size", -WRITER_CACHE_KIB)
            .map_err(map_sqlite)?;
        // A thread of its own copies the WAL back into the database file (and syncs it)
        // without blocking anyone. But under constant writes its checkpoints never catch the
        // WAL's end, and the WAL only starts over after a checkpoint that did: so the writer
        // too checkpoints, once the WAL passes WAL_RESTART_PAGES, by then only the last few
        // frames, between batches, when nothing can be appended meanwhile.
        conn.pragma_update(None, "wal_autocheckpoint", WAL_RESTART_PAGES)
            .map_err(map_sqlite)?;
        let checkpointer = location.open().map_err(map_sqlite)?;
        let writer = Writer::start(conn, checkpointer).map_err(|e| StoreError::Unavailable(e.to_string()))?;
        Ok(SqliteStore {
            readers: Readers {
                location,
                idle: Mutex::new(Vec::new()),
                keep: usize::try_from(max_connections).unwrap_or(16).max(1),
            },
            writer,
        })
    }

    /// Queues `op` for the writer and waits until its batch has committed.
    async fn write<T: Send + 'static>(
        &self,
        op: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> StoreResult<T> {
        let (answer, answered) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |conn| {
            let result = op(conn);
            Box::new(move |committed: Result<(), StoreError>| {
                let _ = answer.send(match (result, committed) {
                    (Ok(value), Ok(())) => Ok(value),
                    (Err(e), _) => Err(map_sqlite(e)),
                    (Ok(_), Err(e)) => Err(e),
                });
            })
        });
        if self.writer.jobs.send(job).is_err() {
            return Err(StoreError::Unavailable("sqlite writer stopped".into()));
        }
        answered
            .await
            .map_err(|_| StoreError::Unavailable("sqlite write was not committed".into()))?
    }
}

/// Applies the migrations not yet applied, in one transaction (another process starting on
/// the same file waits for it, then finds nothing to do). Databases created by earlier
/// releases recorded their migrations in sqlx's `_sqlx_migrations` table instead.
fn migrate(conn: &mut Connection) -> StoreResult<()> {
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(|e| StoreError::Migration(e.to_string()))?;
    let migration = |e: rusqlite::Error| StoreError::Migration(e.to_string());
    let mut applied: i64 = tx
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(migration)?;
    if applied == 0 {
        let by_sqlx: bool = tx
            .query_row(
                "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
                [],
                |r| r.get(0),
            )
            .map_err(migration)?;
        if by_sqlx {
            applied = tx
                .query_row(
                    "SELECT coalesce(max(version), 0) FROM _sqlx_migrations WHERE success",
                    [],
                    |r| r.get(0),
                )
                .map_err(migration)?;
        }
    }
    for (version, sql) in (1..).zip(MIGRATIONS) {
        if version > applied {
            tx.execute_batch(sql).map_err(migration)?;
        }
    }
    let latest = i64::try_from(MIGRATIONS.len()).unwrap_or(i64::MAX);
    if latest < applied {
        return Err(StoreError::Migration(format!(
            "the database is at schema version {applied}, newer than this release ({latest})"
        )));
    }
    tx.pragma_update(None, "user_version", latest)
        .map_err(migration)?;
    tx.commit().map_err(migration)
}

/// Busy, locked, unopenable or failing storage means "unavailable, try again" (503); any
/// other error is a bug or corruption (500).
fn map_sqlite(e: rusqlite::Error) -> StoreError {
    match e.sqlite_error_code() {
        Some(
            ErrorCode::DatabaseBusy
            | ErrorCode::DatabaseLocked
            | ErrorCode::CannotOpen
            | ErrorCode::SystemIoFailure
            | ErrorCode::DiskFull
            | ErrorCode::OutOfMemory,
        ) => StoreError::Unavailable(e.to_string()),
        _ => StoreError::Database(e.to_string()),
    }
}

fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if f.code == ErrorCode::ConstraintViolation
            && matches!(f.extended_code, rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE | rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY))
}

fn uuid_col(row: &Row<'_>, col: &str) -> rusqlite::Result<uuid::Uuid> {
    let s: String = row.get(col)?;
    uuid::Uuid::parse_str(&s)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e)))
}

fn session_from_row(row: &Row<'_>) -> rusqlite::Result<SessionRecord> {
    Ok(SessionRecord {
        id: SessionId(uuid_col(row, "id")?),
        user_id: UserId(uuid_col(row, "user_id")?),
        created_at: Timestamp(row.get("created_at")?),
        last_used_at: Timestamp(row.get("last_used_at")?),
        absolute_expires_at: Timestamp(row.get("absolute_expires_at")?),
        refresh_expires_at: Timestamp(row.get("refresh_expires_at")?),
        revoked_at: row.get::<_, Option<i64>>("revoked_at")?.map(Timestamp),
        revoked_reason: row.get("revoked_reason")?,
        user_agent: row.get("user_agent")?,
        ip: row.get("ip")?,
        generation: row.get("generation")?,
        rotated_at: row.get::<_, Option<i64>>("rotated_at")?.map(Timestamp),
        sealed_current: row.get("sealed_current")?,
        csrf_token: row.get("csrf_token")?,
        amr: row
            .get::<_, Option<String>>("amr")?
            .map_or_else(Vec::new, |a| parse_roles(&a)),
        auth_time: Timestamp(
            row.get::<_, Option<i64>>("auth_time")?
                .unwrap_or(row.get("created_at")?),
        ),
    })
}

fn user_from_row(row: &Row<'_>) -> rusqlite::Result<UserRecord> {
    Ok(UserRecord {
        id: UserId(uuid_col(row, "u_id")?),
        email: Email::from_stored(row.get("email")?),
        password_hash: PasswordHashString(row.get("password_hash")?),
        roles: parse_roles(&row.get::<_, String>("roles")?),
        created_at: Timestamp(row.get("u_created_at")?),
        credential_epoch: row.get("credential_epoch")?,
        user_metadata: row.get("user_metadata")?,
        app_metadata: row.get("app_metadata")?,
        email_verified_at: row.get::<_, Option<i64>>("email_verified_at")?.map(Timestamp),
    })
}

fn key_from_row(row: &Row<'_>) -> rusqlite::Result<SigningKeyRecord> {
    let created_at: i64 = row.get("created_at")?;
    Ok(SigningKeyRecord {
        kid: row.get("kid")?,
        alg: row.get("alg")?,
        private_pkcs8: row.get("private_pkcs8")?,
        public_key: row.get("public_key")?,
        created_at: Timestamp(created_at),
        active: row.get::<_, i64>("active")? == 1,
        retired_at: row.get::<_, Option<i64>>("retired_at")?.map(Timestamp),
        activates_at: Timestamp(newer_column(row, "activates_at")?.unwrap_or(created_at)),
        revoked_at: newer_column(row, "revoked_at")?.map(Timestamp),
    })
}

/// A column a database not migrated yet lacks (`tessera check` reads such databases as they
/// are): `None` when absent.
fn newer_column(row: &Row<'_>, name: &str) -> rusqlite::Result<Option<i64>> {
    match row.get(name) {
        Err(rusqlite::Error::InvalidColumnName(_)) => Ok(None),
        other => other,
    }
}

/// The columns of a signing key, as `key_from_row` reads them.
const KEY_COLUMNS: &str =
    "kid, alg, private_pkcs8, public_key, created_at, active, retired_at, activates_at, revoked_at";

macro_rules! insert_active_key_sql {
    () => {
        "INSERT INTO signing_keys (kid, alg, private_pkcs8, public_key, created_at, active, activates_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, 1, ?6)"
    };
}

/// Inserts `k` as the active key (the one row with `active` set). With `unless_one_is`, an
/// existing active key wins: the partial unique index on `active` makes the insert a conflict,
/// which DO NOTHING swallows (instances starting together on an empty database).
fn insert_active_key(c: &Connection, k: &SigningKeyRecord, unless_one_is: bool) -> rusqlite::Result<()> {
    let sql = if unless_one_is {
        concat!(insert_active_key_sql!(), " ON CONFLICT DO NOTHING")
    } else {
        insert_active_key_sql!()
    };
    c.prepare_cached(sql)?
        .execute(params![
            k.kid,
            k.alg,
            k.private_pkcs8,
            k.public_key,
            k.created_at.millis(),
            k.activates_at.millis()
        ])
        .map(drop)
}

/// Runs `f` all-or-nothing inside the writer's batch transaction.
fn in_savepoint<T>(
    c: &Connection,
    name: &str,
    f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    c.execute_batch(&format!("SAVEPOINT {name}"))?;
    match f(c) {
        Ok(value) => {
            c.execute_batch(&format!("RELEASE {name}"))?;
            Ok(value)
        }
        Err(e) => {
            c.execute_batch(&format!("ROLLBACK TO {name}; RELEASE {name}"))?;
            Err(e)
        }
    }
}

fn find_login_failures(conn: &Connection, key: &str) -> rusqlite::Result<Option<LoginFailures>> {
    conn.prepare_cached(
        "SELECT failures, window_started_at, locked_until, locks, pending, pending_until \
         FROM login_failures WHERE email = ?1",
    )?
    .query_row([key], |r| {
        Ok(LoginFailures {
            failures: r.get(0)?,
            window_started_at: Timestamp(r.get(1)?),
            locked_until: r.get::<_, Option<i64>>(2)?.map(Timestamp),
            locks: r.get(3)?,
            pending: r.get(4)?,
            pending_until: r.get::<_, Option<i64>>(5)?.map(Timestamp),
        })
    })
    .optional()
}

fn find_user_by_id(conn: &Connection, id: &str) -> rusqlite::Result<UserRecord> {
    conn.prepare_cached(concat!(
        "SELECT ",
        user_columns!(),
        " FROM users u WHERE u.id = ?1"
    ))?
    .query_row([id], user_from_row)
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> StoreResult<()> {
        self.readers
            .read(|c| c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0)))?;
        Ok(())
    }
}

// One file per aggregate (after the macros above, which they use).
mod audit;
mod keys;
mod lockout;
mod revocations;
mod sessions;
mod users;
