//! What operators ask of a SQLite database outside the request path: `tessera check`'s
//! read-only inspection and the live-sessions count behind the `/metrics` gauge.

use rusqlite::{Connection, OpenFlags, OptionalExtension};

use super::{key_from_row, map_sqlite, Location, SqliteStore, MIGRATIONS};
use crate::domain::Timestamp;
use crate::store::{Inspection, StoreError, StoreResult};

/// Reads the schema version and the signing keys without changing anything: the file is
/// opened read-only, never created, never migrated.
pub fn inspect(url: &str) -> StoreResult<Inspection> {
    let location = Location::parse(url)?;
    let latest = i64::try_from(MIGRATIONS.len()).unwrap_or(i64::MAX);
    if location.flags.contains(OpenFlags::SQLITE_OPEN_CREATE) && !location.path.exists() {
        return Ok(Inspection {
            exists: false,
            schema_version: 0,
            latest_schema_version: latest,
            signing_keys: Vec::new(),
        });
    }
    let flags = (location.flags - OpenFlags::SQLITE_OPEN_READ_WRITE - OpenFlags::SQLITE_OPEN_CREATE)
        | OpenFlags::SQLITE_OPEN_READ_ONLY;
    let conn = Connection::open_with_flags(&location.path, flags).map_err(map_sqlite)?;
    let schema_version = schema_version(&conn).map_err(map_sqlite)?;
    let signing_keys = if schema_version >= 1 {
        // Every column: a database not migrated yet lacks the newer ones (`key_from_row`
        // reads them as absent).
        conn.prepare("SELECT * FROM signing_keys ORDER BY created_at")
            .and_then(|mut statement| statement.query_map([], key_from_row)?.collect())
            .map_err(map_sqlite)?
    } else {
        Vec::new()
    };
    Ok(Inspection {
        exists: true,
        schema_version,
        latest_schema_version: latest,
        signing_keys,
    })
}

/// `PRAGMA user_version`, or what sqlx recorded for databases migrated by earlier releases.
fn schema_version(conn: &Connection) -> rusqlite::Result<i64> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version != 0 {
        return Ok(version);
    }
    let by_sqlx: Option<i64> = conn
        .query_row(
            "SELECT coalesce(max(version), 0) FROM _sqlx_migrations WHERE success",
            [],
            |r| r.get(0),
        )
        .optional()
        .or_else(|e| match e {
            // No such table: a new database, or not one of ours.
            rusqlite::Error::SqliteFailure(_, Some(ref m)) if m.contains("no such table") => Ok(None),
            e => Err(e),
        })?;
    Ok(by_sqlx.unwrap_or(0))
}

impl SqliteStore {
    /// Sessions neither revoked nor ended at `now`. A scan of `sessions`, so it runs on the
    /// blocking pool with a connection of its own rather than on a request's thread.
    pub(in crate::store) async fn count_live(&self, now: Timestamp) -> StoreResult<u64> {
        let location = self.readers.location.clone();
        tokio::task::spawn_blocking(move || {
            let conn = location.open().map_err(map_sqlite)?;
            conn.query_row(
                "SELECT count(*) FROM sessions WHERE revoked_at IS NULL \
                 AND absolute_expires_at > ?1 AND refresh_expires_at > ?1",
                [now.millis()],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| u64::try_from(n).unwrap_or(0))
            .map_err(map_sqlite)
        })
        .await
        .map_err(|e| StoreError::Database(format!("live-session count: {e}")))?
    }
}
