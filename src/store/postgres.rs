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
mod email_tokens;
mod factors;
pub(super) mod mail;
mod operator;
mod passkeys;
mod rotations;
pub use operator::inspect;
pub use rotations::BATCH_APPLICATION_NAME;

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

/// How long any of an instance's pools waits for a connection: a database that went away must
/// surface as 503 quickly, not hang requests.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

const SESSION_COLUMNS: &str = "s.id, s.user_id, s.created_at, s.last_used_at, s.absolute_expires_at, \
     s.refresh_expires_at, s.revoked_at, s.revoked_reason, s.user_agent, s.ip, s.generation, \
     s.rotated_at, s.sealed_current, s.csrf_token, s.amr, s.auth_time";
const USER_COLUMNS: &str =
    "u.id AS u_id, u.email, u.password_hash, u.roles, u.created_at AS u_created_at, u.credential_epoch, \
     u.user_metadata, u.app_metadata, u.email_verified_at";

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
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options.clone())
            .await
            .map_err(map_pg)?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| StoreError::Migration(e.to_string()))?;
        let listener_options = options.clone().application_name(LISTENER_APPLICATION_NAME);
        Ok(PostgresStore {
            rotations: rotations::RotationBatcher::start(options),
            pool,
            listener_options,
        })
    }
}

impl PostgresStore {
    /// Rotates several tokens in one statement and one commit, each decided exactly as by
    /// [`SessionStore::rotate_current`](crate::store::SessionStore::rotate_current) (which batches concurrent calls through this). Answers in
    /// order; when two rotate the same session, at most one wins.
    pub async fn rotate_together(
        &self,
        rotations: &[CurrentRotation],
    ) -> StoreResult<Vec<Option<(SessionRecord, UserRecord)>>> {
        self.rotations.rotate_together(rotations).await
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
        amr: row
            .try_get::<Option<String>, _>("amr")?
            .map_or_else(Vec::new, |a| parse_roles(&a)),
        auth_time: Timestamp(
            row.try_get::<Option<i64>, _>("auth_time")?
                .map_or_else(|| row.try_get("created_at"), Ok)?,
        ),
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
        user_metadata: row.try_get("user_metadata")?,
        app_metadata: row.try_get("app_metadata")?,
        email_verified_at: row.try_get::<Option<i64>, _>("email_verified_at")?.map(Timestamp),
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

    async fn database_time(&self) -> StoreResult<Option<Timestamp>> {
        // clock_timestamp(), not now(): the latter is the start of the transaction.
        let millis: i64 = sqlx::query_scalar("SELECT (extract(epoch from clock_timestamp()) * 1000)::bigint")
            .fetch_one(&self.pool)
            .await
            .map_err(map_pg)?;
        Ok(Some(Timestamp(millis)))
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

// One file per aggregate (after the macros above, which they use).
mod audit;
mod keys;
mod lockout;
mod revocations;
mod sessions;
mod users;
