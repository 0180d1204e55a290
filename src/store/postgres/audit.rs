//! The audit trail on PostgreSQL: [`AuditStore`].

use async_trait::async_trait;

use super::*;

#[async_trait]
impl AuditStore for PostgresStore {
    async fn insert_audit_event(&self, e: &AuditEvent) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO audit_events (id, event, at, user_id, session_id, ip, user_agent, detail) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(e.id)
        .bind(e.event.as_str())
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
}
