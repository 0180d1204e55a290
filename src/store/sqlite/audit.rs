//! The audit trail on SQLite: [`AuditStore`].

use async_trait::async_trait;

use super::*;

#[async_trait]
impl AuditStore for SqliteStore {
    async fn insert_audit_event(&self, e: &AuditEvent) -> StoreResult<()> {
        let e = e.clone();
        self.write(move |c| {
            c.prepare_cached(
                "INSERT INTO audit_events (id, event, at, user_id, session_id, ip, user_agent, detail) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?
            .execute(params![
                e.id.to_string(),
                e.event.as_str(),
                e.at.millis(),
                e.user_id.map(|u| u.to_string()),
                e.session_id.map(|s| s.to_string()),
                e.ip,
                e.user_agent,
                e.detail,
            ])
            .map(drop)
        })
        .await
    }

    async fn delete_audit_events_before(&self, before: Timestamp, limit: u32) -> StoreResult<u64> {
        let done = self
            .write(move |c| {
                c.prepare_cached(
                    "DELETE FROM audit_events WHERE id IN (SELECT id FROM audit_events WHERE at < ?1 LIMIT ?2)",
                )?
                .execute(params![before.millis(), limit])
            })
            .await?;
        Ok(done as u64)
    }
}
