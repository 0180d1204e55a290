//! [`AlertStore`] on SQLite: a claim is one `UPDATE ... RETURNING` in the writer's
//! transaction, so claims (of this process, and of another process through SQLite's write
//! lock) run one after the other and never hand out the same alert twice.

use super::*;
use crate::store::{AlertStore, NewAlert, StoredAlert};

macro_rules! alert_columns {
    () => {
        "id, event, payload, created_at, attempts, next_attempt_at, claimed_until, delivered_at"
    };
}

fn alert_from_row(row: &Row<'_>) -> rusqlite::Result<StoredAlert> {
    Ok(StoredAlert {
        id: uuid_col(row, "id")?,
        event: row.get("event")?,
        payload: row.get("payload")?,
        created_at: Timestamp(row.get("created_at")?),
        attempts: u32::try_from(row.get::<_, i64>("attempts")?).unwrap_or(u32::MAX),
        next_attempt_at: Timestamp(row.get("next_attempt_at")?),
        claimed_until: row.get::<_, Option<i64>>("claimed_until")?.map(Timestamp),
        delivered_at: row.get::<_, Option<i64>>("delivered_at")?.map(Timestamp),
    })
}

#[async_trait]
impl AlertStore for SqliteStore {
    async fn insert_alert(&self, alert: &NewAlert) -> StoreResult<bool> {
        let a = alert.clone();
        let inserted = self
            .write(move |c| {
                c.prepare_cached(
                    "INSERT INTO alert_outbox (id, event, dedup_key, payload, created_at, next_attempt_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?5) ON CONFLICT (dedup_key) DO NOTHING",
                )?
                .execute(params![
                    a.id.to_string(),
                    a.event,
                    a.dedup_key,
                    a.payload,
                    a.created_at.millis()
                ])
            })
            .await?;
        Ok(inserted == 1)
    }

    async fn claim_alerts(
        &self,
        claimer: &str,
        now: Timestamp,
        lease_until: Timestamp,
        limit: u32,
    ) -> StoreResult<Vec<StoredAlert>> {
        let claimer = claimer.to_owned();
        let mut claimed = self
            .write(move |c| {
                c.prepare_cached(concat!(
                    "UPDATE alert_outbox SET claimed_by = ?1, claimed_until = ?3, attempts = attempts + 1 \
                     WHERE id IN (SELECT id FROM alert_outbox WHERE delivered_at IS NULL \
                       AND next_attempt_at <= ?2 AND (claimed_until IS NULL OR claimed_until <= ?2) \
                       ORDER BY next_attempt_at LIMIT ?4) RETURNING ",
                    alert_columns!()
                ))?
                .query_map(
                    params![claimer, now.millis(), lease_until.millis(), i64::from(limit)],
                    alert_from_row,
                )?
                .collect::<rusqlite::Result<Vec<_>>>()
            })
            .await?;
        // RETURNING gives no order.
        claimed.sort_by_key(|a| (a.created_at, a.id));
        Ok(claimed)
    }

    async fn mark_alert_delivered(&self, id: uuid::Uuid, claimer: &str, now: Timestamp) -> StoreResult<bool> {
        let claimer = claimer.to_owned();
        let done = self
            .write(move |c| {
                c.prepare_cached(
                    "UPDATE alert_outbox SET delivered_at = ?3, claimed_until = NULL, claimed_by = NULL \
                     WHERE id = ?1 AND delivered_at IS NULL AND (claimed_by = ?2 OR claimed_by IS NULL)",
                )?
                .execute(params![id.to_string(), claimer, now.millis()])
            })
            .await?;
        Ok(done == 1)
    }

    async fn reschedule_alert(
        &self,
        id: uuid::Uuid,
        claimer: &str,
        next_attempt_at: Timestamp,
    ) -> StoreResult<bool> {
        let claimer = claimer.to_owned();
        let done = self
            .write(move |c| {
                c.prepare_cached(
                    "UPDATE alert_outbox SET next_attempt_at = ?3, claimed_until = NULL, claimed_by = NULL \
                     WHERE id = ?1 AND claimed_by = ?2 AND delivered_at IS NULL",
                )?
                .execute(params![id.to_string(), claimer, next_attempt_at.millis()])
            })
            .await?;
        Ok(done == 1)
    }

    async fn find_alerts(&self, pending_only: bool, limit: u32) -> StoreResult<Vec<StoredAlert>> {
        self.readers.read(|c| {
            c.prepare_cached(concat!(
                "SELECT ",
                alert_columns!(),
                " FROM alert_outbox WHERE (?1 = 0 OR delivered_at IS NULL) \
                 ORDER BY created_at DESC, id DESC LIMIT ?2"
            ))?
            .query_map(params![pending_only, i64::from(limit)], alert_from_row)?
            .collect()
        })
    }

    async fn find_known_devices(
        &self,
        user: UserId,
        limit: u32,
    ) -> StoreResult<Vec<(Option<String>, Option<String>)>> {
        self.readers.read(|c| {
            c.prepare_cached(
                "SELECT user_agent, ip FROM sessions WHERE user_id = ?1 \
                 UNION SELECT user_agent, ip FROM audit_events \
                   WHERE user_id = ?1 AND event = 'login_succeeded' LIMIT ?2",
            )?
            .query_map(params![user.to_string(), i64::from(limit)], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })?
            .collect()
        })
    }

    async fn delete_alerts_delivered_before(&self, before: Timestamp, limit: u32) -> StoreResult<u64> {
        let deleted = self
            .write(move |c| {
                c.prepare_cached(
                    "DELETE FROM alert_outbox WHERE id IN (SELECT id FROM alert_outbox \
                     WHERE delivered_at IS NOT NULL AND delivered_at < ?1 LIMIT ?2)",
                )?
                .execute(params![before.millis(), i64::from(limit)])
            })
            .await?;
        Ok(deleted as u64)
    }
}
