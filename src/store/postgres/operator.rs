//! What operators ask of a PostgreSQL database outside the request path: `tessera check`'s
//! read-only inspection, the live-sessions count behind the `/metrics` gauge, and the pool's
//! usage.

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions as _, Connection as _, Row as _};

use super::{key_from_row, map_pg, PostgresStore, MIGRATOR};
use crate::domain::Timestamp;
use crate::store::{Inspection, PoolUsage, StoreError, StoreResult};

/// Reads the schema version and the signing keys over one connection, changing nothing (no
/// migration, no advisory lock).
pub async fn inspect(url: &str) -> StoreResult<Inspection> {
    let options: PgConnectOptions = url
        .parse()
        .map_err(|e: sqlx::Error| StoreError::UnsupportedUrl(e.to_string()))?;
    let mut conn: PgConnection = options.connect().await.map_err(map_pg)?;
    let latest = MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
    let tables = sqlx::query(
        "SELECT to_regclass('_sqlx_migrations') IS NOT NULL AS migrations, \
                to_regclass('signing_keys') IS NOT NULL AS keys",
    )
    .fetch_one(&mut conn)
    .await
    .map_err(map_pg)?;
    let schema_version: i64 = if tables.try_get("migrations").map_err(map_pg)? {
        sqlx::query_scalar("SELECT coalesce(max(version), 0) FROM _sqlx_migrations WHERE success")
            .fetch_one(&mut conn)
            .await
            .map_err(map_pg)?
    } else {
        0
    };
    let signing_keys = if tables.try_get("keys").map_err(map_pg)? {
        // Every column: a database not migrated yet lacks the newer ones (`key_from_row`
        // reads them as absent).
        sqlx::query("SELECT * FROM signing_keys ORDER BY created_at")
            .fetch_all(&mut conn)
            .await
            .map_err(map_pg)?
            .iter()
            .map(key_from_row)
            .collect::<Result<_, _>>()
            .map_err(map_pg)?
    } else {
        Vec::new()
    };
    let _ = conn.close().await;
    Ok(Inspection {
        exists: true,
        schema_version,
        latest_schema_version: latest,
        signing_keys,
    })
}

impl PostgresStore {
    /// Sessions neither revoked nor ended at `now` (a sequential scan of `sessions`: callers
    /// run it rarely).
    pub(in crate::store) async fn count_live(&self, now: Timestamp) -> StoreResult<u64> {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM sessions WHERE revoked_at IS NULL \
             AND absolute_expires_at > $1 AND refresh_expires_at > $1",
        )
        .bind(now.millis())
        .fetch_one(&self.pool)
        .await
        .map_err(map_pg)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    pub(in crate::store) fn usage(&self) -> PoolUsage {
        let open = self.pool.size();
        let idle = u32::try_from(self.pool.num_idle()).unwrap_or(open);
        PoolUsage {
            open,
            in_use: open.saturating_sub(idle),
            max: self.pool.options().get_max_connections(),
        }
    }
}
