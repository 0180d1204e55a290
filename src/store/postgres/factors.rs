//! [`FactorStore`] on PostgreSQL: each decision is one conditional statement (one winner
//! among instances); a confirmation and its recovery codes commit in one transaction.

use super::*;
use crate::store::{FactorStore, MfaChallengeRecord, TotpFactor};

async fn insert_codes(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    user: UserId,
    hashes: &[String],
    now: Timestamp,
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM recovery_codes WHERE user_id = $1")
        .bind(user.0)
        .execute(&mut **tx)
        .await?;
    sqlx::query(
        "INSERT INTO recovery_codes (user_id, hash, created_at) SELECT $1, h, $3 FROM unnest($2::text[]) AS h",
    )
    .bind(user.0)
    .bind(hashes)
    .bind(now.millis())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

fn challenge_from_row(row: &PgRow) -> Result<MfaChallengeRecord, sqlx::Error> {
    let amr: String = row.try_get("amr")?;
    Ok(MfaChallengeRecord {
        hash: row.try_get("hash")?,
        user_id: UserId(row.try_get("user_id")?),
        credential_epoch: row.try_get("credential_epoch")?,
        transport: row.try_get("transport")?,
        browser_hash: row.try_get("browser_hash")?,
        amr: parse_roles(&amr),
        created_at: Timestamp(row.try_get("created_at")?),
        expires_at: Timestamp(row.try_get("expires_at")?),
        failures: row.try_get("failures")?,
        used_at: row.try_get::<Option<i64>, _>("used_at")?.map(Timestamp),
    })
}

#[async_trait]
impl FactorStore for PostgresStore {
    async fn insert_pending_totp(&self, user: UserId, secret: &[u8], now: Timestamp) -> StoreResult<bool> {
        let done = sqlx::query(
            "INSERT INTO totp_factors (user_id, secret, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (user_id) DO UPDATE SET secret = excluded.secret, \
             created_at = excluded.created_at, last_step = NULL \
             WHERE totp_factors.confirmed_at IS NULL",
        )
        .bind(user.0)
        .bind(secret)
        .bind(now.millis())
        .execute(&self.pool)
        .await
        .map_err(map_pg)?;
        Ok(done.rows_affected() == 1)
    }

    async fn find_totp(&self, user: UserId) -> StoreResult<Option<TotpFactor>> {
        let row = sqlx::query(
            "SELECT secret, created_at, confirmed_at, last_step FROM totp_factors WHERE user_id = $1",
        )
        .bind(user.0)
        .fetch_optional(&self.pool)
        .await
        .map_err(map_pg)?;
        row.map(|r| {
            Ok(TotpFactor {
                secret: r.try_get("secret")?,
                created_at: Timestamp(r.try_get("created_at")?),
                confirmed_at: r.try_get::<Option<i64>, _>("confirmed_at")?.map(Timestamp),
                last_step: r.try_get("last_step")?,
            })
        })
        .transpose()
        .map_err(map_pg)
    }

    async fn confirm_totp(
        &self,
        user: UserId,
        step: i64,
        code_hashes: &[String],
        now: Timestamp,
    ) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await.map_err(map_pg)?;
        let done = sqlx::query(
            "UPDATE totp_factors SET confirmed_at = $2, last_step = $3 \
             WHERE user_id = $1 AND confirmed_at IS NULL",
        )
        .bind(user.0)
        .bind(now.millis())
        .bind(step)
        .execute(&mut *tx)
        .await
        .map_err(map_pg)?;
        if done.rows_affected() != 1 {
            return Ok(false);
        }
        insert_codes(&mut tx, user, code_hashes, now)
            .await
            .map_err(map_pg)?;
        tx.commit().await.map_err(map_pg)?;
        Ok(true)
    }

    async fn accept_totp_step(&self, user: UserId, step: i64) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE totp_factors SET last_step = $2 WHERE user_id = $1 \
             AND confirmed_at IS NOT NULL AND (last_step IS NULL OR last_step < $2)",
        )
        .bind(user.0)
        .bind(step)
        .execute(&self.pool)
        .await
        .map_err(map_pg)?;
        Ok(done.rows_affected() == 1)
    }

    async fn delete_totp(&self, user: UserId) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await.map_err(map_pg)?;
        sqlx::query("DELETE FROM recovery_codes WHERE user_id = $1")
            .bind(user.0)
            .execute(&mut *tx)
            .await
            .map_err(map_pg)?;
        let done = sqlx::query("DELETE FROM totp_factors WHERE user_id = $1")
            .bind(user.0)
            .execute(&mut *tx)
            .await
            .map_err(map_pg)?;
        tx.commit().await.map_err(map_pg)?;
        Ok(done.rows_affected() == 1)
    }

    async fn replace_recovery_codes(
        &self,
        user: UserId,
        code_hashes: &[String],
        now: Timestamp,
    ) -> StoreResult<()> {
        let mut tx = self.pool.begin().await.map_err(map_pg)?;
        insert_codes(&mut tx, user, code_hashes, now)
            .await
            .map_err(map_pg)?;
        tx.commit().await.map_err(map_pg)
    }

    async fn use_recovery_code(&self, user: UserId, hash: &str, now: Timestamp) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE recovery_codes SET used_at = $3 WHERE user_id = $1 AND hash = $2 AND used_at IS NULL",
        )
        .bind(user.0)
        .bind(hash)
        .bind(now.millis())
        .execute(&self.pool)
        .await
        .map_err(map_pg)?;
        Ok(done.rows_affected() == 1)
    }

    async fn count_recovery_codes(&self, user: UserId) -> StoreResult<u32> {
        let n: i64 =
            sqlx::query_scalar("SELECT count(*) FROM recovery_codes WHERE user_id = $1 AND used_at IS NULL")
                .bind(user.0)
                .fetch_one(&self.pool)
                .await
                .map_err(map_pg)?;
        Ok(u32::try_from(n).unwrap_or(u32::MAX))
    }

    async fn insert_mfa_challenge(&self, ch: &MfaChallengeRecord) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO mfa_challenges (hash, user_id, credential_epoch, transport, browser_hash, amr, \
             created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&ch.hash)
        .bind(ch.user_id.0)
        .bind(ch.credential_epoch)
        .bind(&ch.transport)
        .bind(ch.browser_hash.as_deref())
        .bind(roles_json(&ch.amr))
        .bind(ch.created_at.millis())
        .bind(ch.expires_at.millis())
        .execute(&self.pool)
        .await
        .map_err(map_pg)?;
        Ok(())
    }

    async fn find_mfa_challenge(&self, hash: &str) -> StoreResult<Option<MfaChallengeRecord>> {
        let row = sqlx::query(
            "SELECT hash, user_id, credential_epoch, transport, browser_hash, amr, created_at, \
             expires_at, failures, used_at FROM mfa_challenges WHERE hash = $1",
        )
        .bind(hash)
        .fetch_optional(&self.pool)
        .await
        .map_err(map_pg)?;
        row.as_ref().map(challenge_from_row).transpose().map_err(map_pg)
    }

    async fn use_mfa_challenge(&self, hash: &str, now: Timestamp) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE mfa_challenges SET used_at = $2 WHERE hash = $1 AND used_at IS NULL AND expires_at > $2",
        )
        .bind(hash)
        .bind(now.millis())
        .execute(&self.pool)
        .await
        .map_err(map_pg)?;
        Ok(done.rows_affected() == 1)
    }

    async fn fail_mfa_challenge(&self, hash: &str, max_failures: i64, now: Timestamp) -> StoreResult<()> {
        sqlx::query(
            "UPDATE mfa_challenges SET failures = failures + 1, \
             used_at = CASE WHEN failures + 1 >= $2 THEN coalesce(used_at, $3) ELSE used_at END \
             WHERE hash = $1",
        )
        .bind(hash)
        .bind(max_failures)
        .bind(now.millis())
        .execute(&self.pool)
        .await
        .map_err(map_pg)?;
        Ok(())
    }

    async fn delete_mfa_challenges_expired_before(&self, before: Timestamp, limit: u32) -> StoreResult<u64> {
        let done = sqlx::query(
            "DELETE FROM mfa_challenges WHERE hash IN \
             (SELECT hash FROM mfa_challenges WHERE expires_at < $1 LIMIT $2)",
        )
        .bind(before.millis())
        .bind(i64::from(limit))
        .execute(&self.pool)
        .await
        .map_err(map_pg)?;
        Ok(done.rows_affected())
    }
}
