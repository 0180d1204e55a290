//! The revocation log and the feed on PostgreSQL: [`RevocationStore`].

use async_trait::async_trait;

use super::*;

#[async_trait]
impl RevocationStore for PostgresStore {
    async fn find_revocations_since(&self, since: Timestamp) -> StoreResult<RevocationsSince> {
        // The database's clock, read in the same statement: the caller's next `since`.
        let rows = sqlx::query(
            "WITH clock AS (SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint AS now) \
             SELECT clock.now, r.session_id FROM clock \
             LEFT JOIN session_revocations r ON r.logged_at >= $1",
        )
        .bind(since.millis())
        .fetch_all(&self.pool)
        .await
        .map_err(map_pg)?;
        let mut found = RevocationsSince::default();
        for row in &rows {
            found.asked_at = Timestamp(row.try_get("now").map_err(map_pg)?);
            if let Some(id) = row
                .try_get::<Option<uuid::Uuid>, _>("session_id")
                .map_err(map_pg)?
            {
                found.sessions.push(SessionId(id));
            }
        }
        Ok(found)
    }

    async fn listen_revocations(&self) -> StoreResult<Option<Box<dyn RevocationListener>>> {
        let mut listener = PgListener::connect_with(
            &PgPoolOptions::new()
                .max_connections(1)
                .acquire_timeout(ACQUIRE_TIMEOUT)
                .connect_lazy_with(self.listener_options.clone()),
        )
        .await
        .map_err(map_pg)?;
        listener
            .listen_all([REVOCATION_CHANNEL, HEARTBEAT_CHANNEL])
            .await
            .map_err(map_pg)?;
        Ok(Some(Box::new(PgRevocationListener(listener))))
    }

    async fn send_revocation_heartbeat(&self, payload: &str) -> StoreResult<()> {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(HEARTBEAT_CHANNEL)
            .bind(payload)
            .execute(&self.pool)
            .await
            .map_err(map_pg)?;
        Ok(())
    }

    async fn find_revocations_after(&self, after: i64, limit: u32) -> StoreResult<Vec<FeedRevocation>> {
        // Entries are numbered after they commit (migration 0008): number what has committed
        // since the last reader did, in a transaction of its own, then read.
        sqlx::query("SELECT tessera_publish_session_revocations()")
            .execute(&self.pool)
            .await
            .map_err(map_pg)?;
        let rows = sqlx::query(
            "SELECT seq, session_id, user_id, logged_at, reason FROM session_revocations \
             WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(map_pg)?;
        rows.iter()
            .map(|row| {
                Ok(FeedRevocation {
                    seq: row.try_get("seq")?,
                    session_id: SessionId(row.try_get("session_id")?),
                    user_id: UserId(row.try_get("user_id")?),
                    at: Timestamp(row.try_get("logged_at")?),
                    reason: row.try_get("reason")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(map_pg)
    }

    async fn delete_revocations_logged_before(&self, before: Timestamp) -> StoreResult<u64> {
        let done = sqlx::query("DELETE FROM session_revocations WHERE logged_at < $1")
            .bind(before.millis())
            .execute(&self.pool)
            .await
            .map_err(map_pg)?;
        Ok(done.rows_affected())
    }
}
