//! [`MailStore`] on PostgreSQL: a claim locks due rows with `FOR UPDATE SKIP LOCKED`, so
//! instances claiming at the same moment each take different mails instead of waiting for one
//! another, and the lease it writes keeps them from taking each other's later. [`queue_mail`]
//! is the insert a flow runs inside its own transaction, so its state change and its mail
//! commit together.

use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};

use super::{map_pg, PostgresStore};
use crate::domain::Timestamp;
use crate::store::{MailStore, NewMail, QueuedMail, StoreResult};

const MAIL_COLUMNS: &str = "id, recipient, kind, payload, created_at, expires_at, attempts, \
     next_attempt_at, claimed_until, sent_at, failed_at, last_error";

fn mail_from_row(row: &PgRow) -> Result<QueuedMail, sqlx::Error> {
    Ok(QueuedMail {
        id: row.try_get("id")?,
        recipient: row.try_get("recipient")?,
        kind: row.try_get("kind")?,
        payload: row.try_get("payload")?,
        created_at: Timestamp(row.try_get("created_at")?),
        expires_at: row.try_get::<Option<i64>, _>("expires_at")?.map(Timestamp),
        attempts: u32::try_from(row.try_get::<i64, _>("attempts")?).unwrap_or(u32::MAX),
        next_attempt_at: Timestamp(row.try_get("next_attempt_at")?),
        claimed_until: row.try_get::<Option<i64>, _>("claimed_until")?.map(Timestamp),
        sent_at: row.try_get::<Option<i64>, _>("sent_at")?.map(Timestamp),
        failed_at: row.try_get::<Option<i64>, _>("failed_at")?.map(Timestamp),
        last_error: row.try_get("last_error")?,
    })
}

fn mails_from_rows(rows: &[PgRow]) -> StoreResult<Vec<QueuedMail>> {
    rows.iter()
        .map(mail_from_row)
        .collect::<Result<_, _>>()
        .map_err(map_pg)
}

/// Queues `mail` (due at once) on `conn`: pass the flow's transaction (`&mut *tx`) and commit
/// it afterwards, so that the mail is queued exactly when the state change commits.
pub(in crate::store) async fn queue_mail(conn: &mut PgConnection, mail: &NewMail) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO mail_outbox (id, recipient, kind, payload, created_at, expires_at, next_attempt_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $5)",
    )
    .bind(mail.id)
    .bind(&mail.recipient)
    .bind(&mail.kind)
    .bind(&mail.payload)
    .bind(mail.created_at.millis())
    .bind(mail.expires_at.map(Timestamp::millis))
    .execute(conn)
    .await
    .map(drop)
}

#[async_trait::async_trait]
impl MailStore for PostgresStore {
    async fn insert_mail(&self, mail: &NewMail) -> StoreResult<()> {
        let mut conn = self.pool.acquire().await.map_err(map_pg)?;
        queue_mail(&mut conn, mail).await.map_err(map_pg)
    }

    async fn claim_mails(
        &self,
        claimer: &str,
        now: Timestamp,
        lease_until: Timestamp,
        limit: u32,
    ) -> StoreResult<Vec<QueuedMail>> {
        let sql = format!(
            "UPDATE mail_outbox SET claimed_by = $1, claimed_until = $3, attempts = attempts + 1 \
             WHERE id IN (SELECT id FROM mail_outbox WHERE sent_at IS NULL AND failed_at IS NULL \
               AND next_attempt_at <= $2 AND (claimed_until IS NULL OR claimed_until <= $2) \
               ORDER BY next_attempt_at LIMIT $4 FOR UPDATE SKIP LOCKED) \
             RETURNING {MAIL_COLUMNS}"
        );
        let rows = sqlx::query(&sql)
            .bind(claimer)
            .bind(now.millis())
            .bind(lease_until.millis())
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(map_pg)?;
        let mut claimed = mails_from_rows(&rows)?;
        // RETURNING gives no order.
        claimed.sort_by_key(|m| (m.created_at, m.id));
        Ok(claimed)
    }

    async fn mark_mail_sent(&self, id: uuid::Uuid, claimer: &str, now: Timestamp) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE mail_outbox SET sent_at = $3, payload = '', last_error = NULL, \
               claimed_until = NULL, claimed_by = NULL \
             WHERE id = $1 AND sent_at IS NULL AND failed_at IS NULL \
               AND (claimed_by = $2 OR claimed_by IS NULL)",
        )
        .bind(id)
        .bind(claimer)
        .bind(now.millis())
        .execute(&self.pool)
        .await
        .map_err(map_pg)?;
        Ok(done.rows_affected() == 1)
    }

    async fn reschedule_mail(
        &self,
        id: uuid::Uuid,
        claimer: &str,
        next_attempt_at: Timestamp,
        error: &str,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE mail_outbox SET next_attempt_at = $3, last_error = $4, \
               claimed_until = NULL, claimed_by = NULL \
             WHERE id = $1 AND claimed_by = $2 AND sent_at IS NULL AND failed_at IS NULL",
        )
        .bind(id)
        .bind(claimer)
        .bind(next_attempt_at.millis())
        .bind(error)
        .execute(&self.pool)
        .await
        .map_err(map_pg)?;
        Ok(done.rows_affected() == 1)
    }

    async fn release_mail_claims(&self, claimer: &str) -> StoreResult<u64> {
        let done = sqlx::query(
            "UPDATE mail_outbox SET claimed_until = NULL, claimed_by = NULL \
             WHERE claimed_by = $1 AND sent_at IS NULL AND failed_at IS NULL",
        )
        .bind(claimer)
        .execute(&self.pool)
        .await
        .map_err(map_pg)?;
        Ok(done.rows_affected())
    }

    async fn mark_mail_failed(
        &self,
        id: uuid::Uuid,
        claimer: &str,
        now: Timestamp,
        error: &str,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE mail_outbox SET failed_at = $3, last_error = $4, payload = '', \
               claimed_until = NULL, claimed_by = NULL \
             WHERE id = $1 AND claimed_by = $2 AND sent_at IS NULL AND failed_at IS NULL",
        )
        .bind(id)
        .bind(claimer)
        .bind(now.millis())
        .bind(error)
        .execute(&self.pool)
        .await
        .map_err(map_pg)?;
        Ok(done.rows_affected() == 1)
    }

    async fn find_mail(&self, id: uuid::Uuid) -> StoreResult<Option<QueuedMail>> {
        let sql = format!("SELECT {MAIL_COLUMNS} FROM mail_outbox WHERE id = $1");
        let row = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_pg)?;
        row.as_ref().map(mail_from_row).transpose().map_err(map_pg)
    }

    async fn find_mails(&self, pending_only: bool, limit: u32) -> StoreResult<Vec<QueuedMail>> {
        let sql = format!(
            "SELECT {MAIL_COLUMNS} FROM mail_outbox \
             WHERE (NOT $1 OR (sent_at IS NULL AND failed_at IS NULL)) \
             ORDER BY created_at DESC, id DESC LIMIT $2"
        );
        let rows = sqlx::query(&sql)
            .bind(pending_only)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(map_pg)?;
        mails_from_rows(&rows)
    }

    async fn delete_mails_finished_before(&self, before: Timestamp, limit: u32) -> StoreResult<u64> {
        let done = sqlx::query(
            "DELETE FROM mail_outbox WHERE id IN (SELECT id FROM mail_outbox \
             WHERE (sent_at IS NOT NULL OR failed_at IS NOT NULL) AND created_at < $1 LIMIT $2)",
        )
        .bind(before.millis())
        .bind(i64::from(limit))
        .execute(&self.pool)
        .await
        .map_err(map_pg)?;
        Ok(done.rows_affected())
    }
}
