//! [`EmailTokenStore`] on PostgreSQL: a token's use is one conditional `UPDATE` (one winner),
//! and a token and its mail commit in one transaction.

use super::*;
use crate::store::{EmailTokenKind, EmailTokenRecord, EmailTokenStore, NewMail};

fn token_from_row(row: &PgRow) -> Result<EmailTokenRecord, sqlx::Error> {
    let kind: String = row.try_get("kind")?;
    Ok(EmailTokenRecord {
        hash: row.try_get("hash")?,
        kind: EmailTokenKind::parse(&kind)
            .ok_or_else(|| sqlx::Error::Decode(format!("unknown email token kind {kind}").into()))?,
        user_id: UserId(row.try_get("user_id")?),
        new_email: row
            .try_get::<Option<String>, _>("new_email")?
            .map(Email::from_stored),
        credential_epoch: row.try_get("t_epoch")?,
        created_at: Timestamp(row.try_get("t_created_at")?),
        expires_at: Timestamp(row.try_get("expires_at")?),
        used_at: row.try_get::<Option<i64>, _>("used_at")?.map(Timestamp),
        browser_hash: row.try_get("browser_hash")?,
    })
}

static FIND_TOKEN: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT t.hash, t.kind, t.user_id, t.new_email, t.credential_epoch AS t_epoch, \
         t.created_at AS t_created_at, t.expires_at, t.used_at, t.browser_hash, {USER_COLUMNS} \
         FROM email_tokens t JOIN users u ON u.id = t.user_id WHERE t.hash = $1"
    )
});

#[async_trait]
impl EmailTokenStore for PostgresStore {
    async fn insert_email_token(&self, token: &EmailTokenRecord, mail: &NewMail) -> StoreResult<()> {
        let mut tx = self.pool.begin().await.map_err(map_pg)?;
        sqlx::query(
            "UPDATE email_tokens SET used_at = $3 WHERE user_id = $1 AND kind = $2 AND used_at IS NULL",
        )
        .bind(token.user_id.0)
        .bind(token.kind.as_str())
        .bind(token.created_at.millis())
        .execute(&mut *tx)
        .await
        .map_err(map_pg)?;
        sqlx::query(
            "INSERT INTO email_tokens (hash, kind, user_id, new_email, credential_epoch, created_at, expires_at, browser_hash) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&token.hash)
        .bind(token.kind.as_str())
        .bind(token.user_id.0)
        .bind(token.new_email.as_ref().map(Email::as_str))
        .bind(token.credential_epoch)
        .bind(token.created_at.millis())
        .bind(token.expires_at.millis())
        .bind(token.browser_hash.as_deref())
        .execute(&mut *tx)
        .await
        .map_err(map_pg)?;
        super::mail::queue_mail(&mut tx, mail).await.map_err(map_pg)?;
        tx.commit().await.map_err(map_pg)
    }

    async fn find_email_token(&self, hash: &str) -> StoreResult<Option<(EmailTokenRecord, UserRecord)>> {
        let row = sqlx::query(&FIND_TOKEN)
            .bind(hash)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_pg)?;
        row.as_ref()
            .map(|r| Ok((token_from_row(r)?, user_from_row(r)?)))
            .transpose()
            .map_err(map_pg)
    }

    async fn use_email_token(&self, hash: &str, now: Timestamp) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE email_tokens SET used_at = $2 WHERE hash = $1 AND used_at IS NULL AND expires_at > $2",
        )
        .bind(hash)
        .bind(now.millis())
        .execute(&self.pool)
        .await
        .map_err(map_pg)?;
        Ok(done.rows_affected() == 1)
    }

    async fn void_email_tokens(
        &self,
        user: UserId,
        kind: EmailTokenKind,
        now: Timestamp,
    ) -> StoreResult<u64> {
        let done = sqlx::query(
            "UPDATE email_tokens SET used_at = $3 WHERE user_id = $1 AND kind = $2 AND used_at IS NULL",
        )
        .bind(user.0)
        .bind(kind.as_str())
        .bind(now.millis())
        .execute(&self.pool)
        .await
        .map_err(map_pg)?;
        Ok(done.rows_affected())
    }

    async fn mark_email_verified(&self, user: UserId, now: Timestamp) -> StoreResult<bool> {
        let done =
            sqlx::query("UPDATE users SET email_verified_at = coalesce(email_verified_at, $2) WHERE id = $1")
                .bind(user.0)
                .bind(now.millis())
                .execute(&self.pool)
                .await
                .map_err(map_pg)?;
        Ok(done.rows_affected() == 1)
    }

    async fn unmark_email_verified(&self, user: UserId) -> StoreResult<bool> {
        let done = sqlx::query("UPDATE users SET email_verified_at = NULL WHERE id = $1")
            .bind(user.0)
            .execute(&self.pool)
            .await
            .map_err(map_pg)?;
        Ok(done.rows_affected() == 1)
    }

    async fn change_email(&self, user: UserId, new_email: &Email, now: Timestamp) -> StoreResult<bool> {
        let done = sqlx::query("UPDATE users SET email = $2, email_verified_at = $3 WHERE id = $1")
            .bind(user.0)
            .bind(new_email.as_str())
            .bind(now.millis())
            .execute(&self.pool)
            .await
            .map_err(|e| match &e {
                sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict("email"),
                _ => map_pg(e),
            })?;
        Ok(done.rows_affected() == 1)
    }

    async fn delete_email_tokens_expired_before(&self, before: Timestamp, limit: u32) -> StoreResult<u64> {
        let done = sqlx::query(
            "DELETE FROM email_tokens WHERE hash IN \
             (SELECT hash FROM email_tokens WHERE expires_at < $1 LIMIT $2 FOR UPDATE SKIP LOCKED)",
        )
        .bind(before.millis())
        .bind(i64::from(limit))
        .execute(&self.pool)
        .await
        .map_err(map_pg)?;
        Ok(done.rows_affected())
    }
}
