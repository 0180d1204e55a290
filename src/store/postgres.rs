//! The PostgreSQL store, for several stateless Tessera instances on one database.
//!
//! Exactly-once rotation across instances rests on PostgreSQL's own row locking: the
//! rotation is `UPDATE ... WHERE generation = $expected AND revoked_at IS NULL`. Under READ
//! COMMITTED a concurrent UPDATE of the same row waits for the first to commit, then
//! re-checks its WHERE clause against the new row version, finds the generation moved on, and
//! updates nothing. No in-process lock, no retry loop, no SERIALIZABLE needed.

use std::sync::LazyLock;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions, PgRow};
use sqlx::Row;

use super::*;

mod accounts;
mod alerts;
mod operator;
mod rotations;
pub use operator::inspect;

pub struct PostgresStore {
    pool: PgPool,
    rotations: rotations::RotationBatcher,
    /// For the revocation listener's own connection, named so operators (and tests) can
    /// tell it apart in `pg_stat_activity`.
    listener_options: PgConnectOptions,
}

/// The channel the revocation trigger notifies (migration 0002).
const REVOCATION_CHANNEL: &str = "tessera_session_revoked";
/// The channel of the revocation subscriptions' heartbeats (`send_revocation_heartbeat`).
const HEARTBEAT_CHANNEL: &str = "tessera_revocations_heartbeat";
/// `application_name` of the connection that listens for revocations.
pub const LISTENER_APPLICATION_NAME: &str = "tessera-revocations";

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

const SESSION_COLUMNS: &str = "s.id, s.user_id, s.created_at, s.last_used_at, s.absolute_expires_at, \
     s.refresh_expires_at, s.revoked_at, s.revoked_reason, s.user_agent, s.ip, s.generation, \
     s.rotated_at, s.sealed_current, s.csrf_token";
const USER_COLUMNS: &str =
    "u.id AS u_id, u.email, u.password_hash, u.roles, u.created_at AS u_created_at, u.credential_epoch";

/// A chained token: one primary-key read among its session's own tokens.
static FIND_CHAINED_TOKEN: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT t.generation AS token_generation, {SESSION_COLUMNS}, {USER_COLUMNS} FROM refresh_tokens t \
         JOIN sessions s ON s.id = t.session_id JOIN users u ON u.id = s.user_id \
         WHERE t.session_id = $1 AND t.generation = $2 AND t.hash = $3"
    )
});
/// A token from before the chained format, by hash.
static FIND_LEGACY_TOKEN: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT t.generation AS token_generation, {SESSION_COLUMNS}, {USER_COLUMNS} FROM legacy_refresh_tokens t \
         JOIN sessions s ON s.id = t.session_id JOIN users u ON u.id = s.user_id WHERE t.hash = $1"
    )
});

impl PostgresStore {
    /// Connects and migrates. sqlx's migrator holds a PostgreSQL advisory lock while it runs,
    /// so instances starting at the same moment apply each migration once.
    pub async fn connect(url: &str, max_connections: u32) -> StoreResult<PostgresStore> {
        let options: PgConnectOptions = url
            .parse()
            .map_err(|e: sqlx::Error| StoreError::UnsupportedUrl(e.to_string()))?;
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            // A database that went away must surface as 503 quickly, not hang requests.
            .acquire_timeout(Duration::from_secs(3))
            .connect_with(options.clone())
            .await
            .map_err(map_pg)?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| StoreError::Migration(e.to_string()))?;
        let listener_options = options.application_name(LISTENER_APPLICATION_NAME);
        Ok(PostgresStore {
            rotations: rotations::RotationBatcher::start(pool.clone()),
            pool,
            listener_options,
        })
    }
}

impl PostgresStore {
    /// Rotates several tokens in one statement and one commit, each decided exactly as by
    /// [`Store::rotate_current`] (which batches concurrent calls through this). Answers in
    /// order; when two rotate the same session, at most one wins.
    pub async fn rotate_together(
        &self,
        rotations: &[CurrentRotation],
    ) -> StoreResult<Vec<Option<(SessionRecord, UserRecord)>>> {
        rotations::rotate_together(&self.pool, rotations).await
    }
}

/// Connection-level failures (class 08), an administrator shutting the server down (57P0x),
/// the database being gone (3D000) or refusing connections (55000), or out of connection
/// slots (53300) mean "unavailable, try again", not "bug".
fn map_pg(e: sqlx::Error) -> StoreError {
    if let sqlx::Error::Database(db) = &e {
        let code = db.code().unwrap_or_default();
        if code.starts_with("08")
            || code.starts_with("57P0")
            || matches!(code.as_ref(), "3D000" | "55000" | "53300")
        {
            return StoreError::Unavailable(e.to_string());
        }
    }
    map_sqlx(e)
}

fn session_from_row(row: &PgRow) -> Result<SessionRecord, sqlx::Error> {
    Ok(SessionRecord {
        id: SessionId(row.try_get("id")?),
        user_id: UserId(row.try_get("user_id")?),
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

fn user_from_row(row: &PgRow) -> Result<UserRecord, sqlx::Error> {
    Ok(UserRecord {
        id: UserId(row.try_get("u_id")?),
        email: Email::from_stored(row.try_get("email")?),
        password_hash: PasswordHashString(row.try_get("password_hash")?),
        roles: parse_roles(row.try_get("roles")?),
        created_at: Timestamp(row.try_get("u_created_at")?),
        credential_epoch: row.try_get("credential_epoch")?,
    })
}

fn login_failures_from_row(row: &PgRow) -> Result<LoginFailures, sqlx::Error> {
    let count = |column: &str| -> Result<u32, sqlx::Error> {
        Ok(u32::try_from(row.try_get::<i32, _>(column)?).unwrap_or(0))
    };
    Ok(LoginFailures {
        failures: count("failures")?,
        window_started_at: Timestamp(row.try_get("window_started_at")?),
        locked_until: row.try_get::<Option<i64>, _>("locked_until")?.map(Timestamp),
        locks: count("locks")?,
        pending: count("pending")?,
        pending_until: row.try_get::<Option<i64>, _>("pending_until")?.map(Timestamp),
    })
}

fn key_from_row(row: &PgRow) -> Result<SigningKeyRecord, sqlx::Error> {
    let created_at: i64 = row.try_get("created_at")?;
    Ok(SigningKeyRecord {
        kid: row.try_get("kid")?,
        alg: row.try_get("alg")?,
        private_pkcs8: row.try_get("private_pkcs8")?,
        public_key: row.try_get("public_key")?,
        created_at: Timestamp(created_at),
        active: row.try_get("active")?,
        retired_at: row.try_get::<Option<i64>, _>("retired_at")?.map(Timestamp),
        activates_at: Timestamp(newer_column(row, "activates_at")?.unwrap_or(created_at)),
        revoked_at: newer_column(row, "revoked_at")?.map(Timestamp),
    })
}

/// A column a database not migrated yet lacks (`tessera check` reads such databases as they
/// are): `None` when absent.
fn newer_column(row: &PgRow, name: &str) -> Result<Option<i64>, sqlx::Error> {
    match row.try_get(name) {
        Err(sqlx::Error::ColumnNotFound(_)) => Ok(None),
        other => other,
    }
}

/// The columns of a signing key, as `key_from_row` reads them.
const KEY_COLUMNS: &str =
    "kid, alg, private_pkcs8, public_key, created_at, active, retired_at, activates_at, revoked_at";

/// Inserts `k` as the active key (the one row with `active` set).
async fn insert_active_key(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    k: &SigningKeyRecord,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO signing_keys (kid, alg, private_pkcs8, public_key, created_at, active, activates_at) \
         VALUES ($1, $2, $3, $4, $5, true, $6)",
    )
    .bind(&k.kid)
    .bind(&k.alg)
    .bind(&k.private_pkcs8)
    .bind(&k.public_key)
    .bind(k.created_at.millis())
    .bind(k.activates_at.millis())
    .execute(&mut **tx)
    .await
    .map_err(map_pg)?;
    Ok(())
}

#[async_trait]
impl Store for PostgresStore {
    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(map_pg)?;
        Ok(())
    }

    async fn insert_user(&self, user: &UserRecord) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO users (id, email, password_hash, roles, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(user.id.0)
        .bind(user.email.as_str())
        .bind(&user.password_hash.0)
        .bind(roles_json(&user.roles))
        .bind(user.created_at.millis())
        .execute(&self.pool)
        .await
        .map_err(|e| match &e {
            sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict("email"),
            _ => map_pg(e),
        })?;
        Ok(())
    }

    async fn find_user_by_email(&self, email: &Email) -> StoreResult<Option<UserRecord>> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users u WHERE u.email = $1");
        let row = sqlx::query(&sql)
            .bind(email.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(map_pg)?;
        row.as_ref().map(user_from_row).transpose().map_err(map_pg)
    }

    async fn insert_session(
        &self,
        s: &SessionRecord,
        first: &RefreshTokenHash,
        credential_epoch: i64,
    ) -> StoreResult<bool> {
        // One statement, so no transaction round trips: the CTE inserts both rows atomically.
        // It share-locks the user row, and only if the user is not disabled and its credential
        // epoch is the one the login read: a `disable_user` or `change_password_hash` holding
        // the row makes it wait and then re-check (and find it changed: nothing is inserted);
        // one arriving after it waits for this commit, and its revocation, a later statement,
        // then sees this session. No session outlives a disable or a password change.
        let inserted = sqlx::query(
            "WITH u AS (SELECT id FROM users WHERE id = $2 AND disabled_at IS NULL \
               AND credential_epoch = $12 FOR SHARE), \
             s AS (INSERT INTO sessions (id, user_id, created_at, last_used_at, absolute_expires_at, \
             refresh_expires_at, user_agent, ip, generation, csrf_token, current_hash) \
             SELECT $1, u.id, $3, $4, $5, $6, $7, $8, $9, $10, $11 FROM u RETURNING id) \
             INSERT INTO refresh_tokens (hash, session_id, generation) SELECT $11, id, $9 FROM s",
        )
        .bind(s.id.0)
        .bind(s.user_id.0)
        .bind(s.created_at.millis())
        .bind(s.last_used_at.millis())
        .bind(s.absolute_expires_at.millis())
        .bind(s.refresh_expires_at.millis())
        .bind(&s.user_agent)
        .bind(&s.ip)
        .bind(s.generation)
        .bind(&s.csrf_token)
        .bind(&first.0[..])
        .bind(credential_epoch)
        .execute(&self.pool)
        .await
        .map_err(map_pg)?
        .rows_affected();
        Ok(inserted == 1)
    }

    async fn find_session(&self, id: SessionId) -> StoreResult<Option<SessionRecord>> {
        let sql = format!("SELECT {SESSION_COLUMNS} FROM sessions s WHERE s.id = $1");
        let row = sqlx::query(&sql)
            .bind(id.0)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_pg)?;
        row.as_ref().map(session_from_row).transpose().map_err(map_pg)
    }

    async fn find_session_with_user(
        &self,
        id: SessionId,
    ) -> StoreResult<Option<(SessionRecord, UserRecord)>> {
        let sql = format!(
            "SELECT {SESSION_COLUMNS}, {USER_COLUMNS} FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.id = $1"
        );
        let row = sqlx::query(&sql)
            .bind(id.0)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_pg)?;
        row.as_ref()
            .map(|r| Ok((session_from_row(r)?, user_from_row(r)?)))
            .transpose()
            .map_err(map_pg)
    }

    async fn find_live_sessions(&self, user: UserId, now: Timestamp) -> StoreResult<Vec<SessionRecord>> {
        let sql = format!(
            "SELECT {SESSION_COLUMNS} FROM sessions s WHERE s.user_id = $1 AND s.revoked_at IS NULL \
             AND s.absolute_expires_at > $2 AND s.refresh_expires_at > $2 \
             ORDER BY s.last_used_at DESC, s.id DESC"
        );
        let rows = sqlx::query(&sql)
            .bind(user.0)
            .bind(now.millis())
            .fetch_all(&self.pool)
            .await
            .map_err(map_pg)?;
        rows.iter()
            .map(session_from_row)
            .collect::<Result<_, _>>()
            .map_err(map_pg)
    }

    async fn find_refresh_token(&self, key: &RefreshTokenKey) -> StoreResult<Option<FoundRefreshToken>> {
        let query = match key {
            RefreshTokenKey::Chained {
                session_id,
                generation,
                hash,
            } => sqlx::query(FIND_CHAINED_TOKEN.as_str())
                .bind(session_id.0)
                .bind(generation)
                .bind(&hash.0[..]),
            RefreshTokenKey::Legacy(hash) => sqlx::query(FIND_LEGACY_TOKEN.as_str()).bind(&hash.0[..]),
        };
        let row = query.fetch_optional(&self.pool).await.map_err(map_pg)?;
        row.as_ref()
            .map(|r| {
                Ok(FoundRefreshToken {
                    generation: r.try_get("token_generation")?,
                    session: session_from_row(r)?,
                    user: user_from_row(r)?,
                })
            })
            .transpose()
            .map_err(map_pg)
    }

    async fn rotate(&self, r: &Rotation) -> StoreResult<bool> {
        // The UPDATE and the INSERT of the new hash are one statement: the INSERT only sees a
        // row from the CTE when the conditional UPDATE won.
        let inserted = sqlx::query(
            "WITH won AS (UPDATE sessions SET generation = generation + 1, rotated_at = $1, last_used_at = $1, \
             sealed_current = $2, refresh_expires_at = $3, current_hash = $6 \
             WHERE id = $4 AND generation = $5 AND revoked_at IS NULL \
             AND absolute_expires_at > $1 AND refresh_expires_at > $1 RETURNING id, generation) \
             INSERT INTO refresh_tokens (hash, session_id, generation) SELECT $6, id, generation FROM won",
        )
        .bind(r.now.millis())
        .bind(&r.sealed_new)
        .bind(r.refresh_expires_at.millis())
        .bind(r.session_id.0)
        .bind(r.expected_generation)
        .bind(&r.new_hash.0[..])
        .execute(&self.pool)
        .await
        .map_err(map_pg)?
        .rows_affected();
        Ok(inserted == 1)
    }

    async fn rotate_current(&self, r: &CurrentRotation) -> StoreResult<Option<(SessionRecord, UserRecord)>> {
        // Find, check and advance in one statement, batched with whatever other rotations
        // are waiting (see `rotations`). A concurrent rotation of the same session holds the
        // row lock; when it commits, the UPDATE re-checks its WHERE against the new row
        // version, finds the generation moved, and returns nothing for this one.
        self.rotations.rotate(r.clone()).await
    }

    async fn revoke_session(&self, id: SessionId, now: Timestamp, reason: &str) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE sessions SET revoked_at = $1, revoked_reason = $2, sealed_current = NULL \
             WHERE id = $3 AND revoked_at IS NULL",
        )
        .bind(now.millis())
        .bind(reason)
        .bind(id.0)
        .execute(&self.pool)
        .await
        .map_err(map_pg)?;
        Ok(done.rows_affected() == 1)
    }

    async fn revoke_user_sessions(
        &self,
        user: UserId,
        keep: Option<SessionId>,
        now: Timestamp,
        reason: &str,
    ) -> StoreResult<u64> {
        // Rows are locked in id order, as `revoke_sessions_over_limit` locks them, so the two
        // running together for one user wait for each other instead of deadlocking.
        let done = sqlx::query(
            "WITH locked AS (SELECT id FROM sessions WHERE user_id = $3 AND revoked_at IS NULL \
               AND id IS DISTINCT FROM $4 ORDER BY id FOR UPDATE) \
             UPDATE sessions s SET revoked_at = $1, revoked_reason = $2, sealed_current = NULL \
             FROM locked WHERE s.id = locked.id AND s.revoked_at IS NULL",
        )
        .bind(now.millis())
        .bind(reason)
        .bind(user.0)
        .bind(keep.map(|k| k.0))
        .execute(&self.pool)
        .await
        .map_err(map_pg)?;
        Ok(done.rows_affected())
    }

    async fn revoke_sessions_over_limit(
        &self,
        user: UserId,
        max_live: u32,
        now: Timestamp,
    ) -> StoreResult<u64> {
        // The outer `revoked_at IS NULL` is re-checked on the row as it is once its lock is
        // ours: a revocation committed meanwhile (reuse, logout) keeps its time and reason.
        // Rows are locked in id order, as `revoke_user_sessions` locks them.
        let done = sqlx::query(
            "WITH over AS (SELECT id FROM sessions WHERE user_id = $2 AND revoked_at IS NULL \
               AND absolute_expires_at > $1 AND refresh_expires_at > $1 \
               ORDER BY last_used_at DESC, id DESC OFFSET $3), \
             locked AS (SELECT id FROM sessions WHERE id IN (SELECT id FROM over) AND revoked_at IS NULL \
               ORDER BY id FOR UPDATE) \
             UPDATE sessions s SET revoked_at = $1, revoked_reason = 'session_limit', sealed_current = NULL \
             FROM locked WHERE s.id = locked.id AND s.revoked_at IS NULL",
        )
        .bind(now.millis())
        .bind(user.0)
        .bind(i64::from(max_live))
        .execute(&self.pool)
        .await
        .map_err(map_pg)?;
        Ok(done.rows_affected())
    }

    async fn delete_idle_sessions(
        &self,
        after: Option<SessionId>,
        scan: u32,
        before: Timestamp,
    ) -> StoreResult<IdleSweep> {
        // One statement: the end of this step's stretch of the primary key, then the idle
        // sessions in it. SKIP LOCKED as in the batches above: a row being written is left
        // for the next pass.
        let row = sqlx::query(
            "WITH stretch_end AS (                  SELECT id FROM sessions WHERE id > $1 ORDER BY id OFFSET $2 LIMIT 1),              idle AS (                  SELECT id FROM sessions WHERE id > $1                  AND id <= COALESCE((SELECT id FROM stretch_end), 'ffffffff-ffff-ffff-ffff-ffffffffffff')                  AND refresh_expires_at < $3 FOR UPDATE SKIP LOCKED),              gone AS (DELETE FROM sessions WHERE id IN (SELECT id FROM idle) RETURNING 1)              SELECT (SELECT id FROM stretch_end) AS stretch_end, (SELECT count(*) FROM gone) AS deleted",
        )
        .bind(after.map_or(uuid::Uuid::nil(), |id| id.0))
        .bind(i64::from(scan.saturating_sub(1)))
        .bind(before.millis())
        .fetch_one(&self.pool)
        .await
        .map_err(map_pg)?;
        Ok(IdleSweep {
            deleted: row.try_get::<i64, _>("deleted").map_err(map_pg)? as u64,
            next: row
                .try_get::<Option<uuid::Uuid>, _>("stretch_end")
                .map_err(map_pg)?
                .map(SessionId),
        })
    }

    async fn delete_sessions_ended_before(&self, before: Timestamp, limit: u32) -> StoreResult<u64> {
        // SKIP LOCKED: a row some request is rotating or revoking right now is left for the
        // next batch rather than waited for.
        let done = sqlx::query(
            "DELETE FROM sessions WHERE id IN (SELECT id FROM sessions \
             WHERE absolute_expires_at < $1 OR revoked_at < $1 LIMIT $2 FOR UPDATE SKIP LOCKED)",
        )
        .bind(before.millis())
        .bind(i64::from(limit))
        .execute(&self.pool)
        .await
        .map_err(map_pg)?;
        Ok(done.rows_affected())
    }

    async fn delete_audit_events_before(&self, before: Timestamp, limit: u32) -> StoreResult<u64> {
        let done = sqlx::query(
            "DELETE FROM audit_events WHERE id IN (SELECT id FROM audit_events WHERE at < $1 LIMIT $2 \
             FOR UPDATE SKIP LOCKED)",
        )
        .bind(before.millis())
        .bind(i64::from(limit))
        .execute(&self.pool)
        .await
        .map_err(map_pg)?;
        Ok(done.rows_affected())
    }

    async fn find_revocations_since(&self, since: Timestamp) -> StoreResult<RevocationsSince> {
        // The database's clock, read in the same statement: the caller's next `since`.
        let rows = sqlx::query(
            "WITH clock AS (SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint AS now) \
             SELECT clock.now, r.session_id FROM clock \
             LEFT JOIN session_revocations r ON r.logged_at >= $1",
        )
        .bind(since.millis())
        .fetch_all(&self.pool)
        .await
        .map_err(map_pg)?;
        let mut found = RevocationsSince::default();
        for row in &rows {
            found.asked_at = Timestamp(row.try_get("now").map_err(map_pg)?);
            if let Some(id) = row
                .try_get::<Option<uuid::Uuid>, _>("session_id")
                .map_err(map_pg)?
            {
                found.sessions.push(SessionId(id));
            }
        }
        Ok(found)
    }

    async fn listen_revocations(&self) -> StoreResult<Option<Box<dyn RevocationListener>>> {
        let mut listener = PgListener::connect_with(
            &PgPoolOptions::new()
                .max_connections(1)
                .acquire_timeout(Duration::from_secs(3))
                .connect_lazy_with(self.listener_options.clone()),
        )
        .await
        .map_err(map_pg)?;
        listener
            .listen_all([REVOCATION_CHANNEL, HEARTBEAT_CHANNEL])
            .await
            .map_err(map_pg)?;
        Ok(Some(Box::new(PgRevocationListener(listener))))
    }

    async fn send_revocation_heartbeat(&self, payload: &str) -> StoreResult<()> {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(HEARTBEAT_CHANNEL)
            .bind(payload)
            .execute(&self.pool)
            .await
            .map_err(map_pg)?;
        Ok(())
    }

    async fn find_revocations_after(&self, after: i64, limit: u32) -> StoreResult<Vec<FeedRevocation>> {
        // Entries are numbered after they commit (migration 0008): number what has committed
        // since the last reader did, in a transaction of its own, then read.
        sqlx::query("SELECT tessera_publish_session_revocations()")
            .execute(&self.pool)
            .await
            .map_err(map_pg)?;
        let rows = sqlx::query(
            "SELECT seq, session_id, user_id, logged_at, reason FROM session_revocations \
             WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(map_pg)?;
        rows.iter()
            .map(|row| {
                Ok(FeedRevocation {
                    seq: row.try_get("seq")?,
                    session_id: SessionId(row.try_get("session_id")?),
                    user_id: UserId(row.try_get("user_id")?),
                    at: Timestamp(row.try_get("logged_at")?),
                    reason: row.try_get("reason")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(map_pg)
    }

    async fn delete_revocations_logged_before(&self, before: Timestamp) -> StoreResult<u64> {
        let done = sqlx::query("DELETE FROM session_revocations WHERE logged_at < $1")
            .bind(before.millis())
            .execute(&self.pool)
            .await
            .map_err(map_pg)?;
        Ok(done.rows_affected())
    }

    async fn find_login_failures(&self, key: &FailureKey) -> StoreResult<Option<LoginFailures>> {
        sqlx::query(
            "SELECT failures, window_started_at, locked_until, locks, pending, pending_until \
             FROM login_failures WHERE email = $1",
        )
        .bind(key.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(map_pg)?
        .as_ref()
        .map(login_failures_from_row)
        .transpose()
        .map_err(map_pg)
    }

    async fn change_login_failures(
        &self,
        key: &FailureKey,
        next: NextLoginFailures,
    ) -> StoreResult<LoginFailuresChange> {
        // The row is locked from read to write, so concurrent changes on any instance are
        // applied one after the other. A first change inserts an empty row to lock (`next`
        // sees nothing recorded either way).
        let mut tx = self.pool.begin().await.map_err(map_pg)?;
        let fresh = sqlx::query(
            "INSERT INTO login_failures (email, failures, window_started_at, locks) VALUES ($1, 0, 0, 0) \
             ON CONFLICT (email) DO NOTHING",
        )
        .bind(key.as_str())
        .execute(&mut *tx)
        .await
        .map_err(map_pg)?
        .rows_affected()
            == 1;
        let current = sqlx::query(
            "SELECT failures, window_started_at, locked_until, locks, pending, pending_until \
             FROM login_failures WHERE email = $1 FOR UPDATE",
        )
        .bind(key.as_str())
        .fetch_one(&mut *tx)
        .await
        .map_err(map_pg)?;
        let before = (!fresh)
            .then(|| login_failures_from_row(&current))
            .transpose()
            .map_err(map_pg)?;
        let after = next(before);
        let count = |n: u32| i32::try_from(n).unwrap_or(i32::MAX);
        sqlx::query(
            "UPDATE login_failures SET failures = $2, window_started_at = $3, locked_until = $4, locks = $5, \
             pending = $6, pending_until = $7 WHERE email = $1",
        )
        .bind(key.as_str())
        .bind(count(after.failures))
        .bind(after.window_started_at.millis())
        .bind(after.locked_until.map(Timestamp::millis))
        .bind(count(after.locks))
        .bind(count(after.pending))
        .bind(after.pending_until.map(Timestamp::millis))
        .execute(&mut *tx)
        .await
        .map_err(map_pg)?;
        tx.commit().await.map_err(map_pg)?;
        Ok(LoginFailuresChange { before, after })
    }

    async fn delete_login_failures_ended_before(&self, before: Timestamp) -> StoreResult<u64> {
        let done = sqlx::query(
            "DELETE FROM login_failures WHERE window_started_at < $1 \
             AND (locked_until IS NULL OR locked_until < $1) \
             AND (pending_until IS NULL OR pending_until < $1)",
        )
        .bind(before.millis())
        .execute(&self.pool)
        .await
        .map_err(map_pg)?;
        Ok(done.rows_affected())
    }

    async fn insert_audit_event(&self, e: &AuditEvent) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO audit_events (id, event, at, user_id, session_id, ip, user_agent, detail) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(e.id)
        .bind(e.event)
        .bind(e.at.millis())
        .bind(e.user_id.map(|u| u.0))
        .bind(e.session_id.map(|s| s.0))
        .bind(&e.ip)
        .bind(&e.user_agent)
        .bind(&e.detail)
        .execute(&self.pool)
        .await
        .map_err(map_pg)?;
        Ok(())
    }

    async fn find_signing_keys(&self) -> StoreResult<Vec<SigningKeyRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {KEY_COLUMNS} FROM signing_keys ORDER BY created_at"
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(map_pg)?;
        rows.iter()
            .map(key_from_row)
            .collect::<Result<_, _>>()
            .map_err(map_pg)
    }

    async fn find_signing_kids(&self) -> StoreResult<Vec<(String, bool)>> {
        sqlx::query_as("SELECT kid, revoked_at IS NOT NULL FROM signing_keys")
            .fetch_all(&self.pool)
            .await
            .map_err(map_pg)
    }

    async fn insert_signing_key_if_none_active(&self, k: &SigningKeyRecord) -> StoreResult<()> {
        // The partial unique index on `active` makes a second active key a conflict, which
        // DO NOTHING swallows: the first instance's key wins, the others read it back.
        sqlx::query(
            "INSERT INTO signing_keys (kid, alg, private_pkcs8, public_key, created_at, active, activates_at) \
             VALUES ($1, $2, $3, $4, $5, true, $6) ON CONFLICT DO NOTHING",
        )
        .bind(&k.kid)
        .bind(&k.alg)
        .bind(&k.private_pkcs8)
        .bind(&k.public_key)
        .bind(k.created_at.millis())
        .bind(k.activates_at.millis())
        .execute(&self.pool)
        .await
        .map_err(map_pg)?;
        Ok(())
    }

    async fn rotate_signing_key(&self, k: &SigningKeyRecord) -> StoreResult<()> {
        let mut tx = self.pool.begin().await.map_err(map_pg)?;
        sqlx::query("UPDATE signing_keys SET active = false, retired_at = $1 WHERE active")
            .bind(k.activates_at.millis())
            .execute(&mut *tx)
            .await
            .map_err(map_pg)?;
        insert_active_key(&mut tx, k).await?;
        tx.commit().await.map_err(map_pg)
    }

    async fn revoke_signing_key(&self, r: &KeyRevocation) -> StoreResult<bool> {
        let now = r.now.millis();
        let mut tx = self.pool.begin().await.map_err(map_pg)?;
        let revoked = sqlx::query(
            "UPDATE signing_keys SET revoked_at = $2, active = false WHERE kid = $1 AND revoked_at IS NULL",
        )
        .bind(&r.kid)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(map_pg)?
        .rows_affected();
        if revoked == 0 {
            return Ok(false);
        }
        let retire_the_rest = "UPDATE signing_keys SET active = false, retired_at = $2 WHERE kid <> $1 \
                               AND revoked_at IS NULL AND (retired_at IS NULL OR retired_at > $2)";
        match &r.then {
            AfterKeyRevocation::Nothing => {}
            AfterKeyRevocation::Promote(kid) => {
                for sql in [
                    retire_the_rest,
                    "UPDATE signing_keys SET active = true, activates_at = $2 WHERE kid = $1",
                ] {
                    sqlx::query(sql)
                        .bind(kid)
                        .bind(now)
                        .execute(&mut *tx)
                        .await
                        .map_err(map_pg)?;
                }
            }
            AfterKeyRevocation::Restore {
                kid,
                active,
                retired_at,
            } => {
                sqlx::query("UPDATE signing_keys SET active = $2, retired_at = $3 WHERE kid = $1")
                    .bind(kid)
                    .bind(active)
                    .bind(retired_at.map(Timestamp::millis))
                    .execute(&mut *tx)
                    .await
                    .map_err(map_pg)?;
            }
            AfterKeyRevocation::Replace(key) => {
                sqlx::query(retire_the_rest)
                    .bind(&key.kid)
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .map_err(map_pg)?;
                insert_active_key(&mut tx, key).await?;
            }
        }
        tx.commit().await.map_err(map_pg)?;
        Ok(true)
    }

    async fn update_signing_key_private(&self, kid: &str, expected: &[u8], new: &[u8]) -> StoreResult<bool> {
        let updated =
            sqlx::query("UPDATE signing_keys SET private_pkcs8 = $3 WHERE kid = $1 AND private_pkcs8 = $2")
                .bind(kid)
                .bind(expected)
                .bind(new)
                .execute(&self.pool)
                .await
                .map_err(map_pg)?
                .rows_affected();
        Ok(updated == 1)
    }

    async fn database_time(&self) -> StoreResult<Option<Timestamp>> {
        // clock_timestamp(), not now(): the latter is the start of the transaction.
        let millis: i64 = sqlx::query_scalar("SELECT (extract(epoch from clock_timestamp()) * 1000)::bigint")
            .fetch_one(&self.pool)
            .await
            .map_err(map_pg)?;
        Ok(Some(Timestamp(millis)))
    }

    async fn count_live_sessions(&self, now: Timestamp) -> StoreResult<u64> {
        self.count_live(now).await
    }

    fn pool_usage(&self) -> Option<PoolUsage> {
        Some(self.usage())
    }
}

/// Revocation notices from the trigger of migration 0002 (the payload is the session id), and
/// heartbeats.
struct PgRevocationListener(PgListener);

#[async_trait]
impl RevocationListener for PgRevocationListener {
    async fn next(&mut self) -> StoreResult<RevocationNotice> {
        loop {
            // `try_recv` (unlike `recv`) reports a lost connection instead of silently
            // reconnecting, because notices sent meanwhile are gone and the caller must know.
            match self.0.try_recv().await.map_err(map_pg)? {
                Some(notice) if notice.channel() == HEARTBEAT_CHANNEL => {
                    return Ok(RevocationNotice::Heartbeat(notice.payload().to_owned()))
                }
                Some(notice) => match SessionId::parse(notice.payload()) {
                    Some(id) => return Ok(RevocationNotice::Revoked(id)),
                    None => tracing::warn!(payload = notice.payload(), "unexpected revocation notice"),
                },
                None => return Err(StoreError::Unavailable("revocation listener disconnected".into())),
            }
        }
    }
}
