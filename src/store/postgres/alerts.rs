//! [`AlertStore`] on PostgreSQL: a claim locks due rows with `FOR UPDATE SKIP LOCKED`, so
//! instances claiming at the same moment each take different alerts instead of waiting for
//! one another, and the lease it writes keeps them from taking each other's later.

use sqlx::postgres::PgRow;
use sqlx::Row;

use super::{map_pg, PostgresStore};
use crate::domain::{Timestamp, UserId};
use crate::store::{AlertStore, NewAlert, StoreResult, StoredAlert};

const ALERT_COLUMNS: &str =
    "id, event, payload, created_at, attempts, next_attempt_at, claimed_until, delivered_at";

fn alert_from_row(row: &PgRow) -> Result<StoredAlert, sqlx::Error> {
    Ok(StoredAlert {
        id: row.try_get("id")?,
        event: row.try_get("event")?,
        payload: row.try_get("payload")?,
        created_at: Timestamp(row.try_get("created_at")?),
        attempts: u32::try_from(row.try_get::<i64, _>("attempts")?).unwrap_or(u32::MAX),
        next_attempt_at: Timestamp(row.try_get("next_attempt_at")?),
        claimed_until: row.try_get::<Option<i64>, _>("claimed_until")?.map(Timestamp),
        delivered_at: row.try_get::<Option<i64>, _>("delivered_at")?.map(Timestamp),
    })
}

fn alerts_from_rows(rows: &[PgRow]) -> StoreResult<Vec<StoredAlert>> {
    rows.iter()
        .map(alert_from_row)
        .collect::<Result<_, _>>()
        .map_err(map_pg)
}

#[async_trait::async_trait]
impl AlertStore for PostgresStore {
    async fn insert_alert(&self, alert: &NewAlert) -> StoreResult<bool> {
        let done = sqlx::query(
            "INSERT INTO alert_outbox (id, event, dedup_key, payload, created_at, next_attempt_at) \
             VALUES ($1, $2, $3, $4, $5, $5) ON CONFLICT (dedup_key) DO NOTHING",
        )
        .bind(alert.id)
        .bind(&alert.event)
        .bind(&alert.dedup_key)
        .bind(&alert.payload)
        .bind(alert.created_at.millis())
        .execute(&self.pool)
        .await
        .map_err(map_pg)?;
        Ok(done.rows_affected() == 1)
    }

    async fn claim_alerts(
        &self,
        claimer: &str,
        now: Timestamp,
        lease_until: Timestamp,
        limit: u32,
    ) -> StoreResult<Vec<StoredAlert>> {
        let sql = format!(
            "UPDATE alert_outbox SET claimed_by = $1, claimed_until = $3, attempts = attempts + 1 \
             WHERE id IN (SELECT id FROM alert_outbox WHERE delivered_at IS NULL \
               AND next_attempt_at <= $2 AND (claimed_until IS NULL OR claimed_until <= $2) \
               ORDER BY next_attempt_at LIMIT $4 FOR UPDATE SKIP LOCKED) \
             RETURNING {ALERT_COLUMNS}"
        );
        let rows = sqlx::query(&sql)
            .bind(claimer)
            .bind(now.millis())
            .bind(lease_until.millis())
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(map_pg)?;
        let mut claimed = alerts_from_rows(&rows)?;
        // RETURNING gives no order.
        claimed.sort_by_key(|a| (a.created_at, a.id));
        Ok(claimed)
    }

    async fn mark_alert_delivered(&self, id: uuid::Uuid, claimer: &str, now: Timestamp) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE alert_outbox SET delivered_at = $3, claimed_until = NULL, claimed_by = NULL \
             WHERE id = $1 AND delivered_at IS NULL AND (claimed_by = $2 OR claimed_by IS NULL)",
        )
        .bind(id)
        .bind(claimer)
        .bind(now.millis())
        .execute(&self.pool)
        .await
        .map_err(map_pg)?;
        Ok(done.rows_affected() == 1)
    }

    async fn reschedule_alert(
        &self,
        id: uuid::Uuid,
        claimer: &str,
        next_attempt_at: Timestamp,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE alert_outbox SET next_attempt_at = $3, claimed_until = NULL, claimed_by = NULL \
             WHERE id = $1 AND claimed_by = $2 AND delivered_at IS NULL",
        )
        .bind(id)
        .bind(claimer)
        .bind(next_attempt_at.millis())
        .execute(&self.pool)
        .await
        .map_err(map_pg)?;
        Ok(done.rows_affected() == 1)
    }

    async fn find_alerts(&self, pending_only: bool, limit: u32) -> StoreResult<Vec<StoredAlert>> {
        let sql = format!(
            "SELECT {ALERT_COLUMNS} FROM alert_outbox WHERE (NOT $1 OR delivered_at IS NULL) \
             ORDER BY created_at DESC, id DESC LIMIT $2"
        );
        let rows = sqlx::query(&sql)
            .bind(pending_only)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(map_pg)?;
        alerts_from_rows(&rows)
    }

    async fn find_known_devices(
        &self,
        user: UserId,
        limit: u32,
    ) -> StoreResult<Vec<(Option<String>, Option<String>)>> {
        let rows = sqlx::query(
            "SELECT user_agent, ip FROM sessions WHERE user_id = $1 \
             UNION SELECT user_agent, ip FROM audit_events \
               WHERE user_id = $1 AND event = 'login_succeeded' LIMIT $2",
        )
        .bind(user.0)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(map_pg)?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(map_pg)
    }

    async fn delete_alerts_delivered_before(&self, before: Timestamp, limit: u32) -> StoreResult<u64> {
        let done = sqlx::query(
            "DELETE FROM alert_outbox WHERE id IN (SELECT id FROM alert_outbox \
             WHERE delivered_at IS NOT NULL AND delivered_at < $1 LIMIT $2)",
        )
        .bind(before.millis())
        .bind(i64::from(limit))
        .execute(&self.pool)
        .await
        .map_err(map_pg)?;
        Ok(done.rows_affected())
    }
}
