//! Sessions and their refresh-token chains on SQLite: [`SessionStore`].

use async_trait::async_trait;

use super::*;

#[async_trait]
impl SessionStore for SqliteStore {
    async fn insert_session(
        &self,
        s: &SessionRecord,
        first: &RefreshTokenHash,
        credential_epoch: i64,
    ) -> StoreResult<bool> {
        let s = s.clone();
        let first = *first;
        // The trigger `sessions_record_first_token` records `first` in refresh_tokens. The
        // user's disabled mark and credential epoch are checked by the insert itself: with one
        // writer (and SQLite's lock for other processes) a disable or password change is
        // wholly before or after it.
        self.write(move |c| {
            c.prepare_cached(
                "INSERT INTO sessions (id, user_id, created_at, last_used_at, absolute_expires_at, \
                 refresh_expires_at, user_agent, ip, generation, csrf_token, current_hash, amr, auth_time) \
                 SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?13, ?14 \
                 WHERE EXISTS (SELECT 1 FROM users WHERE id = ?2 AND disabled_at IS NULL \
                   AND credential_epoch = ?12)",
            )?
            .execute(params![
                s.id.to_string(),
                s.user_id.to_string(),
                s.created_at.millis(),
                s.last_used_at.millis(),
                s.absolute_expires_at.millis(),
                s.refresh_expires_at.millis(),
                s.user_agent,
                s.ip,
                s.generation,
                s.csrf_token,
                &first.0[..],
                credential_epoch,
                roles_json(&s.amr),
                s.auth_time.millis(),
            ])
            .map(|inserted| inserted == 1)
        })
        .await
    }

    async fn find_session(&self, id: SessionId) -> StoreResult<Option<SessionRecord>> {
        self.readers.read(|c| {
            c.prepare_cached(concat!(
                "SELECT ",
                session_columns!(),
                " FROM sessions s WHERE s.id = ?1"
            ))?
            .query_row([id.to_string()], session_from_row)
            .optional()
        })
    }

    async fn find_session_with_user(
        &self,
        id: SessionId,
    ) -> StoreResult<Option<(SessionRecord, UserRecord)>> {
        self.readers.read(|c| {
            c.prepare_cached(concat!(
                "SELECT ",
                session_columns!(),
                ", ",
                user_columns!(),
                " FROM sessions s JOIN users u ON u.id = s.user_id \
                 WHERE s.id = ?1"
            ))?
            .query_row([id.to_string()], |r| {
                Ok((session_from_row(r)?, user_from_row(r)?))
            })
            .optional()
        })
    }

    async fn find_live_sessions(&self, user: UserId, now: Timestamp) -> StoreResult<Vec<SessionRecord>> {
        self.readers.read(|c| {
            c.prepare_cached(concat!(
                "SELECT ",
                session_columns!(),
                " FROM sessions s WHERE s.user_id = ?1 AND s.revoked_at IS NULL \
                 AND s.absolute_expires_at > ?2 AND s.refresh_expires_at > ?2 \
                 ORDER BY s.last_used_at DESC, s.id DESC"
            ))?
            .query_map(params![user.to_string(), now.millis()], session_from_row)?
            .collect()
        })
    }

    async fn find_refresh_token(&self, key: &RefreshTokenKey) -> StoreResult<Option<FoundRefreshToken>> {
        fn found(r: &Row<'_>) -> rusqlite::Result<FoundRefreshToken> {
            Ok(FoundRefreshToken {
                generation: r.get("token_generation")?,
                session: session_from_row(r)?,
                user: user_from_row(r)?,
            })
        }
        self.readers.read(|c| match key {
            RefreshTokenKey::Chained {
                session_id,
                generation,
                hash,
            } => c
                .prepare_cached(concat!(
                    "SELECT t.generation AS token_generation, ",
                    session_columns!(),
                    ", ",
                    user_columns!(),
                    " FROM refresh_tokens t \
                     JOIN sessions s ON s.id = t.session_id JOIN users u ON u.id = s.user_id \
                     WHERE t.session_id = ?1 AND t.generation = ?2 AND t.hash = ?3"
                ))?
                .query_row(params![session_id.to_string(), generation, &hash.0[..]], found)
                .optional(),
            RefreshTokenKey::Legacy(hash) => c
                .prepare_cached(concat!(
                    "SELECT t.generation AS token_generation, ",
                    session_columns!(),
                    ", ",
                    user_columns!(),
                    " FROM legacy_refresh_tokens t \
                     JOIN sessions s ON s.id = t.session_id JOIN users u ON u.id = s.user_id WHERE t.hash = ?1"
                ))?
                .query_row([&hash.0[..]], found)
                .optional(),
        })
    }

    async fn rotate(&self, r: &Rotation) -> StoreResult<bool> {
        let r = r.clone();
        // One conditional UPDATE; the trigger `sessions_record_rotated_token` records the new
        // hash in refresh_tokens within the same statement. The affected-row count (which
        // does not include the trigger's insert) says whether we won.
        let updated = self
            .write(move |c| {
                c.prepare_cached(
                    "UPDATE sessions SET generation = generation + 1, current_hash = ?2, rotated_at = ?1, \
                     last_used_at = ?1, sealed_current = ?3, refresh_expires_at = ?4 \
                     WHERE id = ?5 AND generation = ?6 AND revoked_at IS NULL \
                     AND absolute_expires_at > ?1 AND refresh_expires_at > ?1",
                )?
                .execute(params![
                    r.now.millis(),
                    &r.new_hash.0[..],
                    r.sealed_new,
                    r.refresh_expires_at.millis(),
                    r.session_id.to_string(),
                    r.expected_generation,
                ])
            })
            .await?;
        Ok(updated == 1)
    }

    async fn rotate_current(&self, r: &CurrentRotation) -> StoreResult<Option<(SessionRecord, UserRecord)>> {
        let r = r.clone();
        // The token names its session and generation; its hash must be the session's
        // current one. Check and advance in one statement, so nothing can move between.
        self.write(move |c| {
            let session = c
                .prepare_cached(concat!("UPDATE sessions SET generation = generation + 1, current_hash = ?2, rotated_at = ?1, \
                     last_used_at = ?1, sealed_current = ?3, refresh_expires_at = min(?4, absolute_expires_at) \
                     WHERE id = ?5 AND generation = ?6 AND current_hash = ?8 AND revoked_at IS NULL \
                     AND absolute_expires_at > ?1 AND refresh_expires_at > ?1 \
                     AND (?7 IS NULL OR csrf_token = ?7) \
                     RETURNING ", returned_session_columns!()))?
                .query_row(
                    params![
                        r.now.millis(),
                        &r.new_hash.0[..],
                        r.sealed_new,
                        r.refresh_expires_at.millis(),
                        r.session_id.to_string(),
                        r.generation,
                        r.csrf,
                        &r.presented.0[..],
                    ],
                    session_from_row,
                )
                .optional()?;
            let Some(session) = session else {
                return Ok(None);
            };
            let user = find_user_by_id(c, &session.user_id.to_string())?;
            Ok(Some((session, user)))
        })
        .await
    }

    async fn reauthenticate_session(
        &self,
        id: SessionId,
        amr: &[String],
        auth_time: Timestamp,
    ) -> StoreResult<bool> {
        let amr = roles_json(amr);
        let done = self
            .write(move |c| {
                c.prepare_cached(
                    "UPDATE sessions SET amr = ?2, auth_time = ?3 WHERE id = ?1 AND revoked_at IS NULL",
                )?
                .execute(params![id.to_string(), amr, auth_time.millis()])
            })
            .await?;
        Ok(done == 1)
    }

    async fn revoke_session(&self, id: SessionId, now: Timestamp, reason: &str) -> StoreResult<bool> {
        let reason = reason.to_owned();
        let done = self
            .write(move |c| {
                c.prepare_cached(
                    "UPDATE sessions SET revoked_at = ?1, revoked_reason = ?2, sealed_current = NULL \
                     WHERE id = ?3 AND revoked_at IS NULL",
                )?
                .execute(params![now.millis(), reason, id.to_string()])
            })
            .await?;
        Ok(done == 1)
    }

    async fn revoke_user_sessions(
        &self,
        user: UserId,
        keep: Option<SessionId>,
        now: Timestamp,
        reason: &str,
    ) -> StoreResult<u64> {
        let reason = reason.to_owned();
        self.write(move |c| revoke_user_sessions_in(c, user, keep, now, &reason))
            .await
    }

    async fn revoke_sessions_over_limit(
        &self,
        user: UserId,
        max_live: u32,
        now: Timestamp,
    ) -> StoreResult<u64> {
        let done = self
            .write(move |c| {
                c.prepare_cached(
                    "UPDATE sessions SET revoked_at = ?1, revoked_reason = 'session_limit', sealed_current = NULL \
                     WHERE revoked_at IS NULL AND id IN (SELECT id FROM sessions WHERE user_id = ?2 \
                       AND revoked_at IS NULL AND absolute_expires_at > ?1 AND refresh_expires_at > ?1 \
                       ORDER BY last_used_at DESC, id DESC LIMIT -1 OFFSET ?3)",
                )?
                .execute(params![now.millis(), user.to_string(), i64::from(max_live)])
            })
            .await?;
        Ok(done as u64)
    }

    async fn delete_sessions_ended_before(&self, before: Timestamp, limit: u32) -> StoreResult<u64> {
        let done = self
            .write(move |c| {
                c.prepare_cached(
                    "DELETE FROM sessions WHERE id IN (SELECT id FROM sessions \
                     WHERE absolute_expires_at < ?1 OR revoked_at < ?1 LIMIT ?2)",
                )?
                .execute(params![before.millis(), limit])
            })
            .await?;
        Ok(done as u64)
    }

    async fn delete_idle_sessions(
        &self,
        after: Option<SessionId>,
        scan: u32,
        before: Timestamp,
    ) -> StoreResult<IdleSweep> {
        // Every UUID's text sorts after the empty string.
        let after = after.map(|id| id.to_string()).unwrap_or_default();
        self.write(move |c| {
            // Both statements walk the primary key's index over `scan` entries at most.
            let end: Option<String> = c
                .prepare_cached("SELECT id FROM sessions WHERE id > ?1 ORDER BY id LIMIT 1 OFFSET ?2")?
                .query_row(params![after, scan.saturating_sub(1)], |r| r.get(0))
                .optional()?;
            let deleted = match &end {
                Some(end) => c
                    .prepare_cached(
                        "DELETE FROM sessions WHERE id > ?1 AND id <= ?2 AND refresh_expires_at < ?3",
                    )?
                    .execute(params![after, end, before.millis()])?,
                None => c
                    .prepare_cached("DELETE FROM sessions WHERE id > ?1 AND refresh_expires_at < ?2")?
                    .execute(params![after, before.millis()])?,
            };
            Ok(IdleSweep {
                deleted: deleted as u64,
                next: end.as_deref().and_then(SessionId::parse),
            })
        })
        .await
    }

    async fn count_live_sessions(&self, now: Timestamp) -> StoreResult<u64> {
        self.count_live(now).await
    }
}

/// Revokes every live session of `user` but `keep`, on the writer's connection (also inside a
/// password change's transaction); returns how many.
pub(super) fn revoke_user_sessions_in(
    c: &Connection,
    user: UserId,
    keep: Option<SessionId>,
    now: Timestamp,
    reason: &str,
) -> rusqlite::Result<u64> {
    c.prepare_cached(
        "UPDATE sessions SET revoked_at = ?1, revoked_reason = ?2, sealed_current = NULL \
         WHERE user_id = ?3 AND revoked_at IS NULL AND id IS NOT ?4",
    )?
    .execute(params![
        now.millis(),
        reason,
        user.to_string(),
        keep.map(|k| k.to_string())
    ])
    .map(|n| n as u64)
}
