//! Failed and pending logins on PostgreSQL: [`LockoutStore`].

use async_trait::async_trait;

use super::*;

#[async_trait]
impl LockoutStore for PostgresStore {
    async fn find_login_failures(&self, key: &FailureKey) -> StoreResult<Option<LoginFailures>> {
        sqlx::query(
            "SELECT failures, window_started_at, locked_until, locks, pending, pending_until \
             FROM login_failures WHERE email = $1",
        )
        .bind(key.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(map_pg)?
        .as_ref()
        .map(login_failures_from_row)
        .transpose()
        .map_err(map_pg)
    }

    async fn change_login_failures(
        &self,
        key: &FailureKey,
        next: NextLoginFailures,
    ) -> StoreResult<LoginFailuresChange> {
        // The row is locked from read to write, so concurrent changes on any instance are
        // applied one after the other. A first change inserts an empty row to lock (`next`
        // sees nothing recorded either way).
        let mut tx = self.pool.begin().await.map_err(map_pg)?;
        let fresh = sqlx::query(
            "INSERT INTO login_failures (email, failures, window_started_at, locks) VALUES ($1, 0, 0, 0) \
             ON CONFLICT (email) DO NOTHING",
        )
        .bind(key.as_str())
        .execute(&mut *tx)
        .await
        .map_err(map_pg)?
        .rows_affected()
            == 1;
        let current = sqlx::query(
            "SELECT failures, window_started_at, locked_until, locks, pending, pending_until \
             FROM login_failures WHERE email = $1 FOR UPDATE",
        )
        .bind(key.as_str())
        .fetch_one(&mut *tx)
        .await
        .map_err(map_pg)?;
        let before = (!fresh)
            .then(|| login_failures_from_row(&current))
            .transpose()
            .map_err(map_pg)?;
        let after = next(before);
        let count = |n: u32| i32::try_from(n).unwrap_or(i32::MAX);
        sqlx::query(
            "UPDATE login_failures SET failures = $2, window_started_at = $3, locked_until = $4, locks = $5, \
             pending = $6, pending_until = $7 WHERE email = $1",
        )
        .bind(key.as_str())
        .bind(count(after.failures))
        .bind(after.window_started_at.millis())
        .bind(after.locked_until.map(Timestamp::millis))
        .bind(count(after.locks))
        .bind(count(after.pending))
        .bind(after.pending_until.map(Timestamp::millis))
        .execute(&mut *tx)
        .await
        .map_err(map_pg)?;
        tx.commit().await.map_err(map_pg)?;
        Ok(LoginFailuresChange { before, after })
    }

    async fn delete_login_failures_ended_before(&self, before: Timestamp) -> StoreResult<u64> {
        let done = sqlx::query(
            "DELETE FROM login_failures WHERE window_started_at < $1 \
             AND (locked_until IS NULL OR locked_until < $1) \
             AND (pending_until IS NULL OR pending_until < $1)",
        )
        .bind(before.millis())
        .execute(&self.pool)
        .await
        .map_err(map_pg)?;
        Ok(done.rows_affected())
    }
}
