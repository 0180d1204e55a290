//! The SQLite side of seeding: one rusqlite connection, written from one blocking thread at
//! a time, with multi-row `INSERT`s.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::OpenFlags;
use tessera::domain::{Timestamp, UserId};

use super::{seeded_email, SessionRow, SessionTimes, SEEDED_IP, SEEDED_USER_AGENT};
use crate::{BenchError, BenchResult};

/// Rows per multi-row SQLite `INSERT`: 3 parameters each stays far below SQLite's limit of
/// 32766 parameters per statement, and larger statements gain nothing measurable.
const SQLITE_ROWS_PER_STATEMENT: usize = 500;
/// How long a SQLite statement waits for a lock another connection holds.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs `work` on the SQLite connection on one of tokio's blocking threads (rusqlite blocks
/// for as long as a batch takes to write), then puts the connection back for the next batch.
pub(super) async fn on_blocking_thread<T: Send + 'static>(
    slot: &mut Option<SqliteSeeder>,
    work: impl FnOnce(&mut SqliteSeeder) -> rusqlite::Result<T> + Send + 'static,
) -> BenchResult<T> {
    let mut seeder = take_sqlite(slot)?;
    let (seeder, result) = tokio::task::spawn_blocking(move || {
        let result = work(&mut seeder);
        (seeder, result)
    })
    .await
    .map_err(|e| BenchError::Setup(format!("SQLite task: {e}")))?;
    *slot = Some(seeder);
    Ok(result?)
}

/// Takes the SQLite seeder out of its slot to hand it to a blocking thread.
pub(super) fn take_sqlite(slot: &mut Option<SqliteSeeder>) -> BenchResult<SqliteSeeder> {
    // Empty only if an earlier batch's thread panicked, and that error ended the seeding.
    slot.take()
        .ok_or_else(|| BenchError::Setup("the SQLite connection was lost in an earlier batch".into()))
}

/// The SQLite side of [`super::Database`]: one rusqlite connection, used from one blocking thread at
/// a time.
pub(super) struct SqliteSeeder {
    connection: rusqlite::Connection,
    /// Whether the schema's trigger records a session's first token by itself (it does in
    /// today's schema); if not, the seeder inserts the `refresh_tokens` rows.
    trigger_records_first_token: bool,
}

impl SqliteSeeder {
    /// Opens the database the store has just created and migrated (never creating one: a
    /// missing file here means the URL was read differently, and seeding it would be lost).
    pub(super) fn open(path: &Path) -> rusqlite::Result<SqliteSeeder> {
        // The store's flags (URI file names included), less CREATE.
        let connection = rusqlite::Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI,
        )?;
        // The store just dropped may still be finishing its last checkpoint on its own thread.
        connection.busy_timeout(SQLITE_BUSY_TIMEOUT)?;
        // As the server has it: a session of an unknown user fails here, not when served.
        connection.pragma_update(None, "foreign_keys", true)?;
        // Seeding is a fixture: losing it to a crash costs a re-run, so skip the fsyncs. The
        // server sets its own `synchronous` on its connections.
        connection.pragma_update(None, "synchronous", "OFF")?;
        // 256 MiB of page cache (negative means KiB): the indexes are random-access.
        connection.pragma_update(None, "cache_size", -262_144)?;
        connection.pragma_update(None, "temp_store", "MEMORY")?;
        let triggers: i64 = connection.query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'sessions' \
             AND sql LIKE '%AFTER INSERT%' AND sql LIKE '%refresh_tokens%'",
            [],
            |row| row.get(0),
        )?;
        Ok(SqliteSeeder {
            connection,
            trigger_records_first_token: triggers > 0,
        })
    }

    pub(super) fn insert_users(
        &mut self,
        ids: &[UserId],
        first_index: u64,
        password_hash: &str,
        now: Timestamp,
    ) -> rusqlite::Result<()> {
        let tx = self.connection.transaction()?;
        for (chunk_number, chunk) in ids.chunks(SQLITE_ROWS_PER_STATEMENT).enumerate() {
            let sql = multi_row_insert(
                "INSERT INTO users (id, email, password_hash, roles, created_at) VALUES ",
                &format!("(?, ?, ?, '[]', {})", now.millis()),
                chunk.len(),
            );
            let chunk_first = first_index + (chunk_number * SQLITE_ROWS_PER_STATEMENT) as u64;
            // Cached: every full chunk of every batch has the same SQL, compiled once.
            let mut insert = tx.prepare_cached(&sql)?;
            for (offset, id) in chunk.iter().enumerate() {
                let first_parameter = offset * 3 + 1;
                insert.raw_bind_parameter(first_parameter, id.to_string())?;
                insert.raw_bind_parameter(first_parameter + 1, seeded_email(chunk_first + offset as u64))?;
                insert.raw_bind_parameter(first_parameter + 2, password_hash)?;
            }
            insert.raw_execute()?;
        }
        tx.commit()
    }

    pub(super) fn insert_sessions(
        &mut self,
        rows: &[SessionRow],
        times: SessionTimes,
    ) -> rusqlite::Result<()> {
        let tx = self.connection.transaction()?;
        for chunk in rows.chunks(SQLITE_ROWS_PER_STATEMENT) {
            // The constant columns are literals (numbers and our own constants, no user
            // input), so each row binds only its id, user and token hash.
            let sql = multi_row_insert(
                "INSERT INTO sessions (id, user_id, created_at, last_used_at, absolute_expires_at, \
                 refresh_expires_at, user_agent, ip, generation, current_hash) VALUES ",
                &format!(
                    "(?, ?, {now}, {now}, {absolute}, {refresh}, '{SEEDED_USER_AGENT}', '{SEEDED_IP}', 0, ?)",
                    now = times.now.millis(),
                    absolute = times.absolute_expires_at.millis(),
                    refresh = times.refresh_expires_at.millis(),
                ),
                chunk.len(),
            );
            let mut insert = tx.prepare_cached(&sql)?;
            for (offset, row) in chunk.iter().enumerate() {
                let first_parameter = offset * 3 + 1;
                insert.raw_bind_parameter(first_parameter, row.id.to_string())?;
                insert.raw_bind_parameter(first_parameter + 1, row.user_id.to_string())?;
                insert.raw_bind_parameter(first_parameter + 2, &row.token_hash.0[..])?;
            }
            insert.raw_execute()?;
            if !self.trigger_records_first_token {
                let sql = multi_row_insert(
                    "INSERT INTO refresh_tokens (hash, session_id, generation) VALUES ",
                    "(?, ?, 0)",
                    chunk.len(),
                );
                let mut insert = tx.prepare_cached(&sql)?;
                for (offset, row) in chunk.iter().enumerate() {
                    insert.raw_bind_parameter(offset * 2 + 1, &row.token_hash.0[..])?;
                    insert.raw_bind_parameter(offset * 2 + 2, row.id.to_string())?;
                }
                insert.raw_execute()?;
            }
        }
        tx.commit()
    }

    /// Folds the WAL into the main file and closes the connection.
    pub(super) fn finish(self) -> rusqlite::Result<()> {
        // The pragma answers with a row (busy, log and checkpointed frames), hence query_row.
        self.connection
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        self.connection.close().map_err(|(_, e)| e)
    }
}

/// The file a `sqlite:` URL names, read as Tessera's store reads it (`sqlite://relative.db`,
/// `sqlite:///absolute.db` or `sqlite:relative.db`, query parameters ignored), so the seeder
/// writes into the database the store has just migrated.
pub(super) fn sqlite_path(url: &str) -> BenchResult<PathBuf> {
    let unsupported = || BenchError::InvalidArgument(format!("unsupported database url {url:?}"));
    let rest = url.strip_prefix("sqlite:").ok_or_else(unsupported)?;
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    let path = rest.split('?').next().unwrap_or_default();
    if path == ":memory:" {
        return Err(BenchError::InvalidArgument(
            "an in-memory SQLite database would vanish with the seeder; seed a file".into(),
        ));
    }
    if path.is_empty() {
        return Err(unsupported());
    }
    Ok(PathBuf::from(path))
}

fn multi_row_insert(head: &str, row: &str, rows: usize) -> String {
    let mut sql = String::with_capacity(head.len() + rows * (row.len() + 2));
    sql.push_str(head);
    for i in 0..rows {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push_str(row);
    }
    sql
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_row_insert_repeats_the_row() {
        assert_eq!(
            multi_row_insert("INSERT INTO t VALUES ", "(?, 1)", 3),
            "INSERT INTO t VALUES (?, 1), (?, 1), (?, 1)"
        );
    }
}
