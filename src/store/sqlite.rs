//! The embedded SQLite store (WAL mode). Writes run on the one writer connection, so they
//! queue in order inside the process instead of in SQLite's busy handler. Every write on a
//! request path is a single statement (triggers keep `refresh_tokens` in step with the
//! session rows); only the rare key rotation needs a transaction.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::Row;

use super::*;

pub struct SqliteStore {
    /// Readers run concurrently (WAL mode gives each a consistent snapshot).
    reads: SqlitePool,
    /// One connection: SQLite has a single writer anyway, and queueing writes here, in
    /// order, beats several connections contending for the lock through SQLite's busy
    /// handler, which sleeps in steps of up to 100 ms (p99 refresh latency went from 115 ms
    /// to a few ms).
    writes: SqlitePool,
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

const SESSION_COLUMNS: &str = "s.id, s.user_id, s.created_at, s.last_used_at, s.absolute_expires_at, \
     s.refresh_expires_at, s.revoked_at, s.revoked_reason, s.user_agent, s.ip, s.generation, \
     s.rotated_at, s.sealed_current, s.csrf_token";
const USER_COLUMNS: &str = "u.id AS u_id, u.email, u.password_hash, u.roles, u.created_at AS u_created_at";

impl SqliteStore {
    /// `sqlite://relative.db`, `sqlite:///absolute.db` or `sqlite::memory:`.
    pub async fn connect(url: &str, max_connections: u32) -> StoreResult<SqliteStore> {
        let in_memory = url.contains(":memory:");
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::UnsupportedUrl(e.to_string()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // NORMAL is durable across application crashes in WAL mode; only a power loss can
            // drop the last commits, and it never corrupts the database.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let pool = |connections: u32| {
            SqlitePoolOptions::new()
                .max_connections(connections)
                .min_connections(1)
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(options.clone())
        };
        let writes = pool(1).await.map_err(map_sqlx)?;
        MIGRATOR
            .run(&writes)
            .await
            .map_err(|e| StoreError::Migration(e.to_string()))?;
        // An in-memory database exists per connection: there, the writer must read too.
        let reads = if in_memory {
            writes.clone()
        } else {
            pool(max_connections).await.map_err(map_sqlx)?
        };
        Ok(SqliteStore { reads, writes })
    }
}

fn uuid_col(row: &SqliteRow, col: &str) -> Result<uuid::Uuid, sqlx::Error> {
    let s: String = row.try_get(col)?;
    uuid::Uuid::parse_str(&s).map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

fn session_from_row(row: &SqliteRow) -> Result<SessionRecord, sqlx::Error> {
    Ok(SessionRecord {
        id: SessionId(uuid_col(row, "id")?),
        user_id: UserId(uuid_col(row, "user_id")?),
        created_at: Timestamp(row.try_get("created_at")?),
        last_used_at: Timestamp(row.try_get("last_used_at")?),
        absolute_expires_at: Timestamp(row.try_get("absolute_expires_at")?),
        refresh_expires_at: Timestamp(row.try_get("refresh_expires_at")?),
        revoked_at: row.try_get::<Option<i64>, _>("revoked_at")?.map(Timestamp),
        revoked_reason: row.try_get("revoked_reason")?,
        user_agent: row.try_get("user_agent")?,
        ip: row.try_get("ip")?,
        generation: row.try_get("generation")?,
        rotated_at: row.try_get::<Option<i64>, _>("rotated_at")?.map(Timestamp),
        sealed_current: row.try_get("sealed_current")?,
        csrf_token: row.try_get("csrf_token")?,
    })
}

fn user_from_row(row: &SqliteRow) -> Result<UserRecord, sqlx::Error> {
    Ok(UserRecord {
        id: UserId(uuid_col(row, "u_id")?),
        email: Email::from_stored(row.try_get("email")?),
        password_hash: PasswordHashString(row.try_get("password_hash")?),
        roles: parse_roles(row.try_get("roles")?),
        created_at: Timestamp(row.try_get("u_created_at")?),
    })
}

fn key_from_row(row: &SqliteRow) -> Result<SigningKeyRecord, sqlx::Error> {
    Ok(SigningKeyRecord {
        kid: row.try_get("kid")?,
        alg: row.try_get("alg")?,
        private_pkcs8: row.try_get("private_pkcs8")?,
        public_key: row.try_get("public_key")?,
        created_at: Timestamp(row.try_get("created_at")?),
        active: row.try_get::<i64, _>("active")? == 1,
        retired_at: row.try_get::<Option<i64>, _>("retired_at")?.map(Timestamp),
    })
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1")
            .execute(&self.reads)
            .await
            .map_err(map_sqlx)?;
        Ok(())
    }

    async fn insert_user(&self, user: &UserRecord) -> StoreResult<()> {
        sqlx::query("INSERT INTO users (id, email, password_hash, roles, created_at) VALUES (?, ?, ?, ?, ?)")
            .bind(user.id.to_string())
            .bind(user.email.as_str())
            .bind(&user.password_hash.0)
            .bind(roles_json(&user.roles))
            .bind(user.created_at.millis())
            .execute(&self.writes)
            .await
            .map_err(|e| {
                if is_unique_violation(&e) {
                    StoreError::Conflict("email")
                } else {
                    map_sqlx(e)
                }
            })?;
        Ok(())
    }

    async fn find_user_by_email(&self, email: &Email) -> StoreResult<Option<UserRecord>> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users u WHERE u.email = ?");
        let row = sqlx::query(&sql)
            .bind(email.as_str())
            .fetch_optional(&self.reads)
            .await
            .map_err(map_sqlx)?;
        row.as_ref().map(user_from_row).transpose().map_err(map_sqlx)
    }

    async fn insert_session(&self, s: &SessionRecord, first: &RefreshTokenHash) -> StoreResult<()> {
        // The trigger `sessions_record_first_token` records `first` in refresh_tokens.
        sqlx::query(
            "INSERT INTO sessions (id, user_id, created_at, last_used_at, absolute_expires_at, \
             refresh_expires_at, user_agent, ip, generation, csrf_token, current_hash) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(s.id.to_string())
        .bind(s.user_id.to_string())
        .bind(s.created_at.millis())
        .bind(s.last_used_at.millis())
        .bind(s.absolute_expires_at.millis())
        .bind(s.refresh_expires_at.millis())
        .bind(&s.user_agent)
        .bind(&s.ip)
        .bind(s.generation)
        .bind(&s.csrf_token)
        .bind(&first.0[..])
        .execute(&self.writes)
        .await
        .map_err(map_sqlx)?;
        Ok(())
    }

    async fn find_session(&self, id: SessionId) -> StoreResult<Option<SessionRecord>> {
        let sql = format!("SELECT {SESSION_COLUMNS} FROM sessions s WHERE s.id = ?");
        let row = sqlx::query(&sql)
            .bind(id.to_string())
            .fetch_optional(&self.reads)
            .await
            .map_err(map_sqlx)?;
        row.as_ref().map(session_from_row).transpose().map_err(map_sqlx)
    }

    async fn find_session_with_user(
        &self,
        id: SessionId,
    ) -> StoreResult<Option<(SessionRecord, UserRecord)>> {
        let sql = format!(
            "SELECT {SESSION_COLUMNS}, {USER_COLUMNS} FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.id = ?"
        );
        let row = sqlx::query(&sql)
            .bind(id.to_string())
            .fetch_optional(&self.reads)
            .await
            .map_err(map_sqlx)?;
        row.as_ref()
            .map(|r| Ok((session_from_row(r)?, user_from_row(r)?)))
            .transpose()
            .map_err(map_sqlx)
    }

    async fn find_live_sessions(&self, user: UserId, now: Timestamp) -> StoreResult<Vec<SessionRecord>> {
        let sql = format!(
            "SELECT {SESSION_COLUMNS} FROM sessions s WHERE s.user_id = ? AND s.revoked_at IS NULL \
             AND s.absolute_expires_at > ? AND s.refresh_expires_at > ? \
             ORDER BY s.last_used_at DESC, s.id DESC"
        );
        let rows = sqlx::query(&sql)
            .bind(user.to_string())
            .bind(now.millis())
            .bind(now.millis())
            .fetch_all(&self.reads)
            .await
            .map_err(map_sqlx)?;
        rows.iter()
            .map(session_from_row)
            .collect::<Result<_, _>>()
            .map_err(map_sqlx)
    }

    async fn find_refresh_token(&self, hash: &RefreshTokenHash) -> StoreResult<Option<FoundRefreshToken>> {
        let sql = format!(
            "SELECT t.generation AS token_generation, {SESSION_COLUMNS}, {USER_COLUMNS} FROM refresh_tokens t \
             JOIN sessions s ON s.id = t.session_id JOIN users u ON u.id = s.user_id WHERE t.hash = ?"
        );
        let row = sqlx::query(&sql)
            .bind(&hash.0[..])
            .fetch_optional(&self.reads)
            .await
            .map_err(map_sqlx)?;
        row.as_ref()
            .map(|r| {
                Ok(FoundRefreshToken {
                    generation: r.try_get("token_generation")?,
                    session: session_from_row(r)?,
                    user: user_from_row(r)?,
                })
            })
            .transpose()
            .map_err(map_sqlx)
    }

    async fn rotate(&self, r: &Rotation) -> StoreResult<bool> {
        // One conditional UPDATE; the trigger `sessions_record_rotated_token` records the new
        // hash in refresh_tokens within the same statement. The affected-row count (which
        // does not include the trigger's insert) says whether we won.
        let updated = sqlx::query(
            "UPDATE sessions SET generation = generation + 1, current_hash = ?2, rotated_at = ?1, \
             last_used_at = ?1, sealed_current = ?3, refresh_expires_at = ?4 \
             WHERE id = ?5 AND generation = ?6 AND revoked_at IS NULL \
             AND absolute_expires_at > ?1 AND refresh_expires_at > ?1",
        )
        .bind(r.now.millis())
        .bind(&r.new_hash.0[..])
        .bind(&r.sealed_new)
        .bind(r.refresh_expires_at.millis())
        .bind(r.session_id.to_string())
        .bind(r.expected_generation)
        .execute(&self.writes)
        .await
        .map_err(map_sqlx)?
        .rows_affected();
        Ok(updated == 1)
    }

    async fn revoke_session(&self, id: SessionId, now: Timestamp, reason: &str) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE sessions SET revoked_at = ?, revoked_reason = ?, sealed_current = NULL \
             WHERE id = ? AND revoked_at IS NULL",
        )
        .bind(now.millis())
        .bind(reason)
        .bind(id.to_string())
        .execute(&self.writes)
        .await
        .map_err(map_sqlx)?;
        Ok(done.rows_affected() == 1)
    }

    async fn revoke_user_sessions(
        &self,
        user: UserId,
        keep: Option<SessionId>,
        now: Timestamp,
        reason: &str,
    ) -> StoreResult<u64> {
        let done = sqlx::query(
            "UPDATE sessions SET revoked_at = ?, revoked_reason = ?, sealed_current = NULL \
             WHERE user_id = ? AND revoked_at IS NULL AND id IS NOT ?",
        )
        .bind(now.millis())
        .bind(reason)
        .bind(user.to_string())
        .bind(keep.map(|k| k.to_string()))
        .execute(&self.writes)
        .await
        .map_err(map_sqlx)?;
        Ok(done.rows_affected())
    }

    async fn revoke_sessions_over_limit(
        &self,
        user: UserId,
        max_live: u32,
        now: Timestamp,
    ) -> StoreResult<u64> {
        let done = sqlx::query(
            "UPDATE sessions SET revoked_at = ?1, revoked_reason = 'session_limit', sealed_current = NULL \
             WHERE id IN (SELECT id FROM sessions WHERE user_id = ?2 AND revoked_at IS NULL \
               AND absolute_expires_at > ?1 AND refresh_expires_at > ?1 \
               ORDER BY last_used_at DESC, id DESC LIMIT -1 OFFSET ?3)",
        )
        .bind(now.millis())
        .bind(user.to_string())
        .bind(i64::from(max_live))
        .execute(&self.writes)
        .await
        .map_err(map_sqlx)?;
        Ok(done.rows_affected())
    }

    async fn delete_sessions_ended_before(&self, before: Timestamp) -> StoreResult<u64> {
        let done = sqlx::query("DELETE FROM sessions WHERE absolute_expires_at < ?1 OR revoked_at < ?1")
            .bind(before.millis())
            .execute(&self.writes)
            .await
            .map_err(map_sqlx)?;
        Ok(done.rows_affected())
    }

    async fn find_revocations_since(&self, since: Timestamp) -> StoreResult<RevocationsSince> {
        let now: i64 =
            sqlx::query_scalar("SELECT CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)")
                .fetch_one(&self.reads)
                .await
                .map_err(map_sqlx)?;
        let ids: Vec<String> =
            sqlx::query_scalar("SELECT session_id FROM session_revocations WHERE logged_at >= ?")
                .bind(since.millis())
                .fetch_all(&self.reads)
                .await
                .map_err(map_sqlx)?;
        Ok(RevocationsSince {
            sessions: ids.iter().filter_map(|id| SessionId::parse(id)).collect(),
            asked_at: Timestamp(now),
        })
    }

    async fn listen_revocations(&self) -> StoreResult<Option<Box<dyn RevocationListener>>> {
        Ok(None)
    }

    async fn delete_revocations_logged_before(&self, before: Timestamp) -> StoreResult<u64> {
        let done = sqlx::query("DELETE FROM session_revocations WHERE logged_at < ?")
            .bind(before.millis())
            .execute(&self.writes)
            .await
            .map_err(map_sqlx)?;
        Ok(done.rows_affected())
    }

    async fn insert_audit_event(&self, e: &AuditEvent) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO audit_events (id, event, at, user_id, session_id, ip, user_agent, detail) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(e.id.to_string())
        .bind(e.event)
        .bind(e.at.millis())
        .bind(e.user_id.map(|u| u.to_string()))
        .bind(e.session_id.map(|s| s.to_string()))
        .bind(&e.ip)
        .bind(&e.user_agent)
        .bind(&e.detail)
        .execute(&self.writes)
        .await
        .map_err(map_sqlx)?;
        Ok(())
    }

    async fn find_signing_keys(&self) -> StoreResult<Vec<SigningKeyRecord>> {
        let rows = sqlx::query(
            "SELECT kid, alg, private_pkcs8, public_key, created_at, active, retired_at FROM signing_keys \
             ORDER BY created_at",
        )
        .fetch_all(&self.reads)
        .await
        .map_err(map_sqlx)?;
        rows.iter()
            .map(key_from_row)
            .collect::<Result<_, _>>()
            .map_err(map_sqlx)
    }

    async fn insert_signing_key_if_none_active(&self, k: &SigningKeyRecord) -> StoreResult<()> {
        // The partial unique index on `active` turns a second active key into a conflict,
        // which DO NOTHING swallows: the first writer's key wins.
        sqlx::query(
            "INSERT INTO signing_keys (kid, alg, private_pkcs8, public_key, created_at, active) \
             VALUES (?, ?, ?, ?, ?, 1) ON CONFLICT DO NOTHING",
        )
        .bind(&k.kid)
        .bind(&k.alg)
        .bind(&k.private_pkcs8)
        .bind(&k.public_key)
        .bind(k.created_at.millis())
        .execute(&self.writes)
        .await
        .map_err(map_sqlx)?;
        Ok(())
    }

    async fn rotate_signing_key(&self, k: &SigningKeyRecord, now: Timestamp) -> StoreResult<()> {
        let mut tx = self.writes.begin().await.map_err(map_sqlx)?;
        sqlx::query("UPDATE signing_keys SET active = 0, retired_at = ? WHERE active = 1")
            .bind(now.millis())
            .execute(&mut *tx)
            .await
            .map_err(map_sqlx)?;
        sqlx::query(
            "INSERT INTO signing_keys (kid, alg, private_pkcs8, public_key, created_at, active) VALUES (?, ?, ?, ?, ?, 1)",
        )
        .bind(&k.kid)
        .bind(&k.alg)
        .bind(&k.private_pkcs8)
        .bind(&k.public_key)
        .bind(k.created_at.millis())
        .execute(&mut *tx)
        .await
        .map_err(map_sqlx)?;
        tx.commit().await.map_err(map_sqlx)
    }
}
