//! Failed and pending logins on SQLite: [`LockoutStore`].

use async_trait::async_trait;

use super::*;

#[async_trait]
impl LockoutStore for SqliteStore {
    async fn find_login_failures(&self, key: &FailureKey) -> StoreResult<Option<LoginFailures>> {
        self.readers.read(|c| find_login_failures(c, key.as_str()))
    }

    async fn change_login_failures(
        &self,
        key: &FailureKey,
        next: NextLoginFailures,
    ) -> StoreResult<LoginFailuresChange> {
        let key = key.as_str().to_owned();
        // Read and write in the writer's transaction: SQLite has one writer, so nothing
        // (no other instance either) changes the row in between.
        self.write(move |c| {
            let before = find_login_failures(c, &key)?;
            let after = next(before);
            c.prepare_cached(
                "INSERT INTO login_failures (email, failures, window_started_at, locked_until, locks, \
                 pending, pending_until) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (email) DO UPDATE \
                 SET failures = ?2, window_started_at = ?3, locked_until = ?4, locks = ?5, pending = ?6, \
                 pending_until = ?7",
            )?
            .execute(params![
                key,
                after.failures,
                after.window_started_at.millis(),
                after.locked_until.map(Timestamp::millis),
                after.locks,
                after.pending,
                after.pending_until.map(Timestamp::millis),
            ])?;
            Ok(LoginFailuresChange { before, after })
        })
        .await
    }

    async fn delete_login_failures_ended_before(&self, before: Timestamp) -> StoreResult<u64> {
        let deleted = self
            .write(move |c| {
                c.prepare_cached(
                    "DELETE FROM login_failures WHERE window_started_at < ?1 \
                     AND (locked_until IS NULL OR locked_until < ?1) \
                     AND (pending_until IS NULL OR pending_until < ?1)",
                )?
                .execute([before.millis()])
            })
            .await?;
        Ok(deleted as u64)
    }
}
