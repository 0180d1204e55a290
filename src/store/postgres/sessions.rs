//! Sessions and their refresh-token chains on PostgreSQL: [`SessionStore`].

use async_trait::async_trait;

use super::*;

#[async_trait]
impl SessionStore for PostgresStore {
    async fn insert_session(
        &self,
        s: &SessionRecord,
        first: &RefreshTokenHash,
        credential_epoch: i64,
    ) -> StoreResult<bool> {
        // One statement, so no transaction round trips: the CTE inserts both rows atomically.
        // It share-locks the user row, and only if the user is not disabled and its credential
        // epoch is the one the login read: a `disable_user` or `change_password_hash` holding
        // the row makes it wait and then re-check (and find it changed: nothing is inserted);
        // one arriving after it waits for this commit, and its revocation, a later statement,
        // then sees this session. No session outlives a disable or a password change.
        let inserted = sqlx::query(
            "WITH u AS (SELECT id FROM users WHERE id = $2 AND disabled_at IS NULL \
               AND credential_epoch = $12 FOR SHARE), \
             s AS (INSERT INTO sessions (id, user_id, created_at, last_used_at, absolute_expires_at, \
             refresh_expires_at, user_agent, ip, generation, csrf_token, current_hash, amr, auth_time) \
             SELECT $1, u.id, $3, $4, $5, $6, $7, $8, $9, $10, $11, $13, $14 FROM u RETURNING id) \
             INSERT INTO refresh_tokens (hash, session_id, generation) SELECT $11, id, $9 FROM s",
        )
        .bind(s.id.0)
        .bind(s.user_id.0)
        .bind(s.created_at.millis())
        .bind(s.last_used_at.millis())
        .bind(s.absolute_expires_at.millis())
        .bind(s.refresh_expires_at.millis())
        .bind(&s.user_agent)
        .bind(&s.ip)
        .bind(s.generation)
        .bind(&s.csrf_token)
        .bind(&first.0[..])
        .bind(credential_epoch)
        .bind(roles_json(&s.amr))
        .bind(s.auth_time.millis())
        .execute(&self.pool)
        .await
        .map_err(map_pg)?
        .rows_affected();
        Ok(inserted == 1)
    }

    async fn find_session(&self, id: SessionId) -> StoreResult<Option<SessionRecord>> {
        let sql = format!("SELECT {SESSION_COLUMNS} FROM sessions s WHERE s.id = $1");
        let row = sqlx::query(&sql)
            .bind(id.0)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_pg)?;
        row.as_ref().map(session_from_row).transpose().map_err(map_pg)
    }

    async fn find_session_with_user(
        &self,
        id: SessionId,
    ) -> StoreResult<Option<(SessionRecord, UserRecord)>> {
        let sql = format!(
            "SELECT {SESSION_COLUMNS}, {USER_COLUMNS} FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.id = $1"
        );
        let row = sqlx::query(&sql)
            .bind(id.0)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_pg)?;
        row.as_ref()
            .map(|r| Ok((session_from_row(r)?, user_from_row(r)?)))
            .transpose()
            .map_err(map_pg)
    }

    async fn find_live_sessions(&self, user: UserId, now: Timestamp) -> StoreResult<Vec<SessionRecord>> {
        let sql = format!(
            "SELECT {SESSION_COLUMNS} FROM sessions s WHERE s.user_id = $1 AND s.revoked_at IS NULL \
             AND s.absolute_expires_at > $2 AND s.refresh_expires_at > $2 \
             ORDER BY s.last_used_at DESC, s.id DESC"
        );
        let rows = sqlx::query(&sql)
            .bind(user.0)
            .bind(now.millis())
            .fetch_all(&self.pool)
            .await
            .map_err(map_pg)?;
        rows.iter()
            .map(session_from_row)
            .collect::<Result<_, _>>()
            .map_err(map_pg)
    }

    async fn find_refresh_token(&self, key: &RefreshTokenKey) -> StoreResult<Option<FoundRefreshToken>> {
        let query = match key {
            RefreshTokenKey::Chained {
                session_id,
                generation,
                hash,
            } => sqlx::query(FIND_CHAINED_TOKEN.as_str())
                .bind(session_id.0)
                .bind(generation)
                .bind(&hash.0[..]),
            RefreshTokenKey::Legacy(hash) => sqlx::query(FIND_LEGACY_TOKEN.as_str()).bind(&hash.0[..]),
        };
        let row = query.fetch_optional(&self.pool).await.map_err(map_pg)?;
        row.as_ref()
            .map(|r| {
                Ok(FoundRefreshToken {
                    generation: r.try_get("token_generation")?,
                    session: session_from_row(r)?,
                    user: user_from_row(r)?,
                })
            })
            .transpose()
            .map_err(map_pg)
    }

    async fn rotate(&self, r: &Rotation) -> StoreResult<bool> {
        // The UPDATE and the INSERT of the new hash are one statement: the INSERT only sees a
        // row from the CTE when the conditional UPDATE won.
        let inserted = sqlx::query(
            "WITH won AS (UPDATE sessions SET generation = generation + 1, rotated_at = $1, last_used_at = $1, \
             sealed_current = $2, refresh_expires_at = $3, current_hash = $6 \
             WHERE id = $4 AND generation = $5 AND revoked_at IS NULL \
             AND absolute_expires_at > $1 AND refresh_expires_at > $1 RETURNING id, generation) \
             INSERT INTO refresh_tokens (hash, session_id, generation) SELECT $6, id, generation FROM won",
        )
        .bind(r.now.millis())
        .bind(&r.sealed_new)
        .bind(r.refresh_expires_at.millis())
        .bind(r.session_id.0)
        .bind(r.expected_generation)
        .bind(&r.new_hash.0[..])
        .execute(&self.pool)
        .await
        .map_err(map_pg)?
        .rows_affected();
        Ok(inserted == 1)
    }

    async fn rotate_current(&self, r: &CurrentRotation) -> StoreResult<Option<(SessionRecord, UserRecord)>> {
        // Find, check and advance in one statement, batched with whatever other rotations
        // are waiting (see `rotations`). A concurrent rotation of the same session holds the
        // row lock; when it commits, the UPDATE re-checks its WHERE against the new row
        // version, finds the generation moved, and returns nothing for this one.
        self.rotations.rotate(r.clone()).await
    }

    async fn reauthenticate_session(
        &self,
        id: SessionId,
        amr: &[String],
        auth_time: Timestamp,
    ) -> StoreResult<bool> {
        let done =
            sqlx::query("UPDATE sessions SET amr = $2, auth_time = $3 WHERE id = $1 AND revoked_at IS NULL")
                .bind(id.0)
                .bind(roles_json(amr))
                .bind(auth_time.millis())
                .execute(&self.pool)
                .await
                .map_err(map_pg)?;
        Ok(done.rows_affected() == 1)
    }

    async fn revoke_session(&self, id: SessionId, now: Timestamp, reason: &str) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE sessions SET revoked_at = $1, revoked_reason = $2, sealed_current = NULL \
             WHERE id = $3 AND revoked_at IS NULL",
        )
        .bind(now.millis())
        .bind(reason)
        .bind(id.0)
        .execute(&self.pool)
        .await
        .map_err(map_pg)?;
        Ok(done.rows_affected() == 1)
    }

    async fn revoke_user_sessions(
        &self,
        user: UserId,
        keep: Option<SessionId>,
        now: Timestamp,
        reason: &str,
    ) -> StoreResult<u64> {
        revoke_user_sessions_with(&self.pool, user, keep, now, reason).await
    }

    async fn revoke_sessions_over_limit(
        &self,
        user: UserId,
        max_live: u32,
        now: Timestamp,
    ) -> StoreResult<u64> {
        // The outer `revoked_at IS NULL` is re-checked on the row as it is once its lock is
        // ours: a revocation committed meanwhile (reuse, logout) keeps its time and reason.
        // Rows are locked in id order, as `revoke_user_sessions` locks them.
        let done = sqlx::query(
            "WITH over AS (SELECT id FROM sessions WHERE user_id = $2 AND revoked_at IS NULL \
               AND absolute_expires_at > $1 AND refresh_expires_at > $1 \
               ORDER BY last_used_at DESC, id DESC OFFSET $3), \
             locked AS (SELECT id FROM sessions WHERE id IN (SELECT id FROM over) AND revoked_at IS NULL \
               ORDER BY id FOR UPDATE) \
             UPDATE sessions s SET revoked_at = $1, revoked_reason = 'session_limit', sealed_current = NULL \
             FROM locked WHERE s.id = locked.id AND s.revoked_at IS NULL",
        )
        .bind(now.millis())
        .bind(user.0)
        .bind(i64::from(max_live))
        .execute(&self.pool)
        .await
        .map_err(map_pg)?;
        Ok(done.rows_affected())
    }

    async fn delete_sessions_ended_before(&self, before: Timestamp, limit: u32) -> StoreResult<u64> {
        // SKIP LOCKED: a row some request is rotating or revoking right now is left for the
        // next batch rather than waited for.
        let done = sqlx::query(
            "DELETE FROM sessions WHERE id IN (SELECT id FROM sessions \
             WHERE absolute_expires_at < $1 OR revoked_at < $1 LIMIT $2 FOR UPDATE SKIP LOCKED)",
        )
        .bind(before.millis())
        .bind(i64::from(limit))
        .execute(&self.pool)
        .await
        .map_err(map_pg)?;
        Ok(done.rows_affected())
    }

    async fn delete_idle_sessions(
        &self,
        after: Option<SessionId>,
        scan: u32,
        before: Timestamp,
    ) -> StoreResult<IdleSweep> {
        // One statement: the end of this step's stretch of the primary key, then the idle
        // sessions in it. SKIP LOCKED as in the batches above: a row being written is left
        // for the next pass.
        let row = sqlx::query(
            "WITH stretch_end AS (                  SELECT id FROM sessions WHERE id > $1 ORDER BY id OFFSET $2 LIMIT 1),              idle AS (                  SELECT id FROM sessions WHERE id > $1                  AND id <= COALESCE((SELECT id FROM stretch_end), 'ffffffff-ffff-ffff-ffff-ffffffffffff')                  AND refresh_expires_at < $3 FOR UPDATE SKIP LOCKED),              gone AS (DELETE FROM sessions WHERE id IN (SELECT id FROM idle) RETURNING 1)              SELECT (SELECT id FROM stretch_end) AS stretch_end, (SELECT count(*) FROM gone) AS deleted",
        )
        .bind(after.map_or(uuid::Uuid::nil(), |id| id.0))
        .bind(i64::from(scan.saturating_sub(1)))
        .bind(before.millis())
        .fetch_one(&self.pool)
        .await
        .map_err(map_pg)?;
        Ok(IdleSweep {
            deleted: row.try_get::<i64, _>("deleted").map_err(map_pg)? as u64,
            next: row
                .try_get::<Option<uuid::Uuid>, _>("stretch_end")
                .map_err(map_pg)?
                .map(SessionId),
        })
    }

    async fn count_live_sessions(&self, now: Timestamp) -> StoreResult<u64> {
        self.count_live(now).await
    }
}

/// Revokes every live session of `user` but `keep` (also inside a password change's
/// transaction); returns how many. Rows are locked in id order, as
/// `revoke_sessions_over_limit` and `disable_user` lock them, so they queue for one user
/// instead of deadlocking.
pub(super) async fn revoke_user_sessions_with<'e>(
    executor: impl sqlx::PgExecutor<'e>,
    user: UserId,
    keep: Option<SessionId>,
    now: Timestamp,
    reason: &str,
) -> StoreResult<u64> {
    let done = sqlx::query(
        "WITH locked AS (SELECT id FROM sessions WHERE user_id = $3 AND revoked_at IS NULL \
           AND id IS DISTINCT FROM $4 ORDER BY id FOR UPDATE) \
         UPDATE sessions s SET revoked_at = $1, revoked_reason = $2, sealed_current = NULL \
         FROM locked WHERE s.id = locked.id AND s.revoked_at IS NULL",
    )
    .bind(now.millis())
    .bind(reason)
    .bind(user.0)
    .bind(keep.map(|k| k.0))
    .execute(executor)
    .await
    .map_err(map_pg)?;
    Ok(done.rows_affected())
}
