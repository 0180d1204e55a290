//! [`PasskeyStore`] on PostgreSQL: a ceremony is taken with one `DELETE ... RETURNING`, so of
//! two instances answering one ceremony, one gets it.

use super::*;
use crate::domain::PasskeyId;
use crate::store::{CeremonyRecord, PasskeyRecord, PasskeyStore};

const PASSKEY_COLUMNS: &str =
    "p.id AS p_id, p.user_id AS p_user_id, p.credential_id, p.name, p.passkey, p.counter, \
     p.created_at AS p_created_at, p.last_used_at";

fn counter_from(value: i64) -> Result<u32, sqlx::Error> {
    u32::try_from(value).map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

fn passkey_from_row(row: &PgRow) -> Result<PasskeyRecord, sqlx::Error> {
    Ok(PasskeyRecord {
        id: PasskeyId(row.try_get("p_id")?),
        user_id: UserId(row.try_get("p_user_id")?),
        credential_id: row.try_get("credential_id")?,
        name: row.try_get("name")?,
        passkey: row.try_get("passkey")?,
        counter: counter_from(row.try_get("counter")?)?,
        created_at: Timestamp(row.try_get("p_created_at")?),
        last_used_at: row.try_get::<Option<i64>, _>("last_used_at")?.map(Timestamp),
    })
}

fn ceremony_from_row(row: &PgRow) -> Result<CeremonyRecord, sqlx::Error> {
    Ok(CeremonyRecord {
        handle: row.try_get("handle")?,
        kind: row.try_get("kind")?,
        user_id: row.try_get::<Option<uuid::Uuid>, _>("user_id")?.map(UserId),
        state: row.try_get("state")?,
        created_at: Timestamp(row.try_get("created_at")?),
        expires_at: Timestamp(row.try_get("expires_at")?),
    })
}

static FIND_BY_CREDENTIAL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {PASSKEY_COLUMNS}, {USER_COLUMNS} FROM passkeys p JOIN users u ON u.id = p.user_id \
         WHERE p.credential_id = $1"
    )
});

static FIND_FOR_USER: LazyLock<String> = LazyLock::new(|| {
    format!("SELECT {PASSKEY_COLUMNS} FROM passkeys p WHERE p.user_id = $1 ORDER BY p.created_at, p.id")
});

#[async_trait]
impl PasskeyStore for PostgresStore {
    async fn insert_passkey_ceremony(&self, c: &CeremonyRecord) -> StoreResult<()> {
        // One statement: the expired ones go, and the new one replaces any of its handle.
        sqlx::query(
            "WITH swept AS (DELETE FROM passkey_ceremonies WHERE expires_at < $5 AND handle <> $1) \
             INSERT INTO passkey_ceremonies (handle, kind, user_id, state, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (handle) DO UPDATE SET kind = EXCLUDED.kind, user_id = EXCLUDED.user_id, \
             state = EXCLUDED.state, created_at = EXCLUDED.created_at, expires_at = EXCLUDED.expires_at",
        )
        .bind(&c.handle)
        .bind(&c.kind)
        .bind(c.user_id.map(|u| u.0))
        .bind(&c.state)
        .bind(c.created_at.millis())
        .bind(c.expires_at.millis())
        .execute(&self.pool)
        .await
        .map_err(map_pg)?;
        Ok(())
    }

    async fn take_passkey_ceremony(&self, handle: &str) -> StoreResult<Option<CeremonyRecord>> {
        let row = sqlx::query(
            "DELETE FROM passkey_ceremonies WHERE handle = $1 \
             RETURNING handle, kind, user_id, state, created_at, expires_at",
        )
        .bind(handle)
        .fetch_optional(&self.pool)
        .await
        .map_err(map_pg)?;
        row.map(|r| ceremony_from_row(&r)).transpose().map_err(map_pg)
    }

    async fn insert_passkey(&self, p: &PasskeyRecord) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO passkeys (id, user_id, credential_id, name, passkey, counter, created_at, last_used_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(p.id.0)
        .bind(p.user_id.0)
        .bind(&p.credential_id)
        .bind(&p.name)
        .bind(&p.passkey)
        .bind(i64::from(p.counter))
        .bind(p.created_at.millis())
        .bind(p.last_used_at.map(Timestamp::millis))
        .execute(&self.pool)
        .await
        .map_err(|e| match &e {
            sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict("credential_id"),
            _ => map_pg(e),
        })?;
        Ok(())
    }

    async fn find_passkeys(&self, user: UserId) -> StoreResult<Vec<PasskeyRecord>> {
        let rows = sqlx::query(&FIND_FOR_USER)
            .bind(user.0)
            .fetch_all(&self.pool)
            .await
            .map_err(map_pg)?;
        rows.iter()
            .map(passkey_from_row)
            .collect::<Result<_, _>>()
            .map_err(map_pg)
    }

    async fn find_passkey_by_credential(
        &self,
        credential_id: &str,
    ) -> StoreResult<Option<(PasskeyRecord, UserRecord)>> {
        let row = sqlx::query(&FIND_BY_CREDENTIAL)
            .bind(credential_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_pg)?;
        row.map(|r| Ok((passkey_from_row(&r)?, user_from_row(&r)?)))
            .transpose()
            .map_err(map_pg)
    }

    async fn rename_passkey(&self, user: UserId, id: PasskeyId, name: &str) -> StoreResult<bool> {
        let done = sqlx::query("UPDATE passkeys SET name = $3 WHERE id = $1 AND user_id = $2")
            .bind(id.0)
            .bind(user.0)
            .bind(name)
            .execute(&self.pool)
            .await
            .map_err(map_pg)?;
        Ok(done.rows_affected() == 1)
    }

    async fn delete_passkey(&self, user: UserId, id: PasskeyId) -> StoreResult<Option<PasskeyRecord>> {
        let row = sqlx::query(
            "DELETE FROM passkeys p WHERE p.id = $1 AND p.user_id = $2 \
             RETURNING p.id AS p_id, p.user_id AS p_user_id, p.credential_id, p.name, p.passkey, \
             p.counter, p.created_at AS p_created_at, p.last_used_at",
        )
        .bind(id.0)
        .bind(user.0)
        .fetch_optional(&self.pool)
        .await
        .map_err(map_pg)?;
        row.map(|r| passkey_from_row(&r)).transpose().map_err(map_pg)
    }

    async fn delete_passkeys(&self, user: UserId) -> StoreResult<u64> {
        let done = sqlx::query("DELETE FROM passkeys WHERE user_id = $1")
            .bind(user.0)
            .execute(&self.pool)
            .await
            .map_err(map_pg)?;
        Ok(done.rows_affected())
    }

    async fn record_passkey_use(
        &self,
        id: PasskeyId,
        passkey: &str,
        counter: u32,
        now: Timestamp,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE passkeys SET passkey = $2, counter = $3, last_used_at = $4 \
             WHERE id = $1 AND ($3 = 0 OR counter < $3)",
        )
        .bind(id.0)
        .bind(passkey)
        .bind(i64::from(counter))
        .bind(now.millis())
        .execute(&self.pool)
        .await
        .map_err(map_pg)?;
        Ok(done.rows_affected() == 1)
    }
}
