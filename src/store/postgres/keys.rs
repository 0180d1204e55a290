//! Signing keys on PostgreSQL: [`KeyStore`].

use async_trait::async_trait;

use super::*;

#[async_trait]
impl KeyStore for PostgresStore {
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
        // As on SQLite: every key still to sign after the new one activates retires then.
        sqlx::query(
            "UPDATE signing_keys SET active = false, retired_at = $1, activates_at = LEAST(activates_at, $1) \
             WHERE revoked_at IS NULL AND (retired_at IS NULL OR retired_at > $1)",
        )
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
}
