//! [`AccountStore`] on PostgreSQL.

use sqlx::postgres::PgRow;
use sqlx::{Postgres, QueryBuilder, Row};

use super::{map_pg, user_from_row, PostgresStore, USER_COLUMNS};
use crate::crypto::PasswordHashString;
use crate::domain::{Email, SessionId, Timestamp, UserId};
use crate::store::{
    roles_json, AccountFilter, AccountStore, AuditFilter, StoreResult, StoredAuditEvent, UserAccount,
    UserRecord,
};

fn account_from_row(row: &PgRow) -> Result<UserAccount, sqlx::Error> {
    Ok(UserAccount {
        user: user_from_row(row)?,
        disabled_at: row.try_get::<Option<i64>, _>("disabled_at")?.map(Timestamp),
    })
}

fn audit_from_row(row: &PgRow) -> Result<StoredAuditEvent, sqlx::Error> {
    Ok(StoredAuditEvent {
        id: row.try_get("id")?,
        event: row.try_get("event")?,
        at: Timestamp(row.try_get("at")?),
        user_id: row.try_get::<Option<uuid::Uuid>, _>("user_id")?.map(UserId),
        email: row.try_get("email")?,
        session_id: row.try_get::<Option<uuid::Uuid>, _>("session_id")?.map(SessionId),
        ip: row.try_get("ip")?,
        user_agent: row.try_get("user_agent")?,
        detail: row.try_get("detail")?,
    })
}

#[async_trait::async_trait]
impl AccountStore for PostgresStore {
    async fn find_account(&self, email: &Email) -> StoreResult<Option<UserAccount>> {
        let sql = format!("SELECT {USER_COLUMNS}, u.disabled_at FROM users u WHERE u.email = $1");
        let row = sqlx::query(&sql)
            .bind(email.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(map_pg)?;
        row.as_ref().map(account_from_row).transpose().map_err(map_pg)
    }

    async fn find_accounts(&self, after: Option<&Email>, limit: u32) -> StoreResult<Vec<UserAccount>> {
        let sql = format!(
            "SELECT {USER_COLUMNS}, u.disabled_at FROM users u WHERE u.email > $1 ORDER BY u.email LIMIT $2"
        );
        let rows = sqlx::query(&sql)
            .bind(after.map_or("", Email::as_str))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(map_pg)?;
        rows.iter()
            .map(account_from_row)
            .collect::<Result<_, _>>()
            .map_err(map_pg)
    }

    async fn disable_user(&self, user: UserId, now: Timestamp) -> StoreResult<u64> {
        let mut tx = self.pool.begin().await.map_err(map_pg)?;
        // The user row first: from here on, a session insert for this user waits for our
        // commit and then finds the user disabled. Inserts that took the row before us have
        // committed by the time we have it, so the revocation below (a later statement, a
        // newer snapshot) sees their sessions.
        sqlx::query(
            "UPDATE users SET disabled_at = coalesce(disabled_at, $2), \
             credential_epoch = credential_epoch + 1 WHERE id = $1",
        )
        .bind(user.0)
        .bind(now.millis())
        .execute(&mut *tx)
        .await
        .map_err(map_pg)?;
        // Rows locked in id order, as `revoke_user_sessions` and the session cap lock them.
        let revoked = sqlx::query(
            "WITH locked AS (SELECT id FROM sessions WHERE user_id = $1 AND revoked_at IS NULL \
               ORDER BY id FOR UPDATE) \
             UPDATE sessions s SET revoked_at = $2, revoked_reason = 'user_disabled', sealed_current = NULL \
             FROM locked WHERE s.id = locked.id AND s.revoked_at IS NULL",
        )
        .bind(user.0)
        .bind(now.millis())
        .execute(&mut *tx)
        .await
        .map_err(map_pg)?
        .rows_affected();
        tx.commit().await.map_err(map_pg)?;
        Ok(revoked)
    }

    async fn enable_user(&self, user: UserId) -> StoreResult<bool> {
        let done =
            sqlx::query("UPDATE users SET disabled_at = NULL WHERE id = $1 AND disabled_at IS NOT NULL")
                .bind(user.0)
                .execute(&self.pool)
                .await
                .map_err(map_pg)?;
        Ok(done.rows_affected() == 1)
    }

    async fn update_user_roles(&self, user: UserId, roles: &[String]) -> StoreResult<bool> {
        let done = sqlx::query("UPDATE users SET roles = $2 WHERE id = $1")
            .bind(user.0)
            .bind(roles_json(roles))
            .execute(&self.pool)
            .await
            .map_err(map_pg)?;
        Ok(done.rows_affected() == 1)
    }

    async fn upgrade_password_hash(
        &self,
        user: UserId,
        old: &PasswordHashString,
        new: &PasswordHashString,
    ) -> StoreResult<bool> {
        let done = sqlx::query("UPDATE users SET password_hash = $3 WHERE id = $1 AND password_hash = $2")
            .bind(user.0)
            .bind(&old.0)
            .bind(&new.0)
            .execute(&self.pool)
            .await
            .map_err(map_pg)?;
        Ok(done.rows_affected() == 1)
    }

    async fn change_password_hash(
        &self,
        user: UserId,
        old: &PasswordHashString,
        new: &PasswordHashString,
        keep: Option<SessionId>,
        now: Timestamp,
        reason: &str,
    ) -> StoreResult<Option<u64>> {
        let mut tx = self.pool.begin().await.map_err(map_pg)?;
        // As in `disable_user`: once the user row is ours, a login's session insert waits for
        // our commit and then finds the epoch moved; inserts that locked the row before us have
        // committed, and the revocation below (a newer snapshot) sees their sessions.
        let changed = sqlx::query(
            "UPDATE users SET password_hash = $3, credential_epoch = credential_epoch + 1 \
             WHERE id = $1 AND password_hash = $2",
        )
        .bind(user.0)
        .bind(&old.0)
        .bind(&new.0)
        .execute(&mut *tx)
        .await
        .map_err(map_pg)?
        .rows_affected();
        if changed == 0 {
            return Ok(None);
        }
        let revoked = super::sessions::revoke_user_sessions_with(&mut *tx, user, keep, now, reason).await?;
        tx.commit().await.map_err(map_pg)?;
        Ok(Some(revoked))
    }

    async fn insert_users_if_absent(&self, users: &[UserRecord]) -> StoreResult<u64> {
        // One statement over arrays: one round trip and one commit for the whole batch.
        let mut ids = Vec::with_capacity(users.len());
        let mut emails = Vec::with_capacity(users.len());
        let mut hashes = Vec::with_capacity(users.len());
        let mut roles = Vec::with_capacity(users.len());
        let mut created = Vec::with_capacity(users.len());
        for u in users {
            ids.push(u.id.0);
            emails.push(u.email.as_str().to_owned());
            hashes.push(u.password_hash.0.clone());
            roles.push(roles_json(&u.roles));
            created.push(u.created_at.millis());
        }
        let done = sqlx::query(
            "INSERT INTO users (id, email, password_hash, roles, created_at) \
             SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::bigint[]) \
             ON CONFLICT DO NOTHING",
        )
        .bind(ids)
        .bind(emails)
        .bind(hashes)
        .bind(roles)
        .bind(created)
        .execute(&self.pool)
        .await
        .map_err(map_pg)?;
        Ok(done.rows_affected())
    }

    async fn find_audit_events(&self, filter: &AuditFilter) -> StoreResult<Vec<StoredAuditEvent>> {
        // Only the filters given are in the statement, so the planner can pick the index
        // that fits them ((user_id, at), (event, at) or (at)).
        let mut q: QueryBuilder<'_, Postgres> = QueryBuilder::new(
            "SELECT a.id, a.event, a.at, a.user_id, u.email, a.session_id, a.ip, a.user_agent, a.detail \
             FROM audit_events a LEFT JOIN users u ON u.id = a.user_id WHERE true",
        );
        if let Some(user) = filter.user {
            q.push(" AND a.user_id = ").push_bind(user.0);
        }
        if let Some(event) = &filter.event {
            q.push(" AND a.event = ").push_bind(event.clone());
        }
        if let Some(since) = filter.since {
            q.push(" AND a.at >= ").push_bind(since.millis());
        }
        if let Some(until) = filter.until {
            q.push(" AND a.at < ").push_bind(until.millis());
        }
        if let Some((at, id)) = filter.before {
            q.push(" AND (a.at, a.id) < (")
                .push_bind(at.millis())
                .push(", ")
                .push_bind(id)
                .push(")");
        }
        q.push(" ORDER BY a.at DESC, a.id DESC LIMIT ")
            .push_bind(i64::from(filter.limit));
        let rows = q.build().fetch_all(&self.pool).await.map_err(map_pg)?;
        rows.iter()
            .map(audit_from_row)
            .collect::<Result<_, _>>()
            .map_err(map_pg)
    }

    async fn find_account_by_id(&self, user: UserId) -> StoreResult<Option<UserAccount>> {
        let sql = format!("SELECT {USER_COLUMNS}, u.disabled_at FROM users u WHERE u.id = $1");
        let row = sqlx::query(&sql)
            .bind(user.0)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_pg)?;
        row.as_ref().map(account_from_row).transpose().map_err(map_pg)
    }

    async fn find_accounts_filtered(&self, filter: &AccountFilter) -> StoreResult<Vec<UserAccount>> {
        let mut q: QueryBuilder<'_, Postgres> = QueryBuilder::new(format!(
            "SELECT {USER_COLUMNS}, u.disabled_at FROM users u WHERE true"
        ));
        if let Some(after) = filter.after {
            q.push(" AND u.id > ").push_bind(after.0);
        }
        if let Some(prefix) = &filter.email_prefix {
            q.push(" AND starts_with(u.email, ")
                .push_bind(prefix.clone())
                .push(")");
        }
        match filter.disabled {
            Some(true) => {
                q.push(" AND u.disabled_at IS NOT NULL");
            }
            Some(false) => {
                q.push(" AND u.disabled_at IS NULL");
            }
            None => {}
        }
        if let Some(role) = &filter.role {
            q.push(" AND u.roles::jsonb ? ").push_bind(role.clone());
        }
        if let Some(from) = filter.created_from {
            q.push(" AND u.created_at >= ").push_bind(from.millis());
        }
        if let Some(until) = filter.created_until {
            q.push(" AND u.created_at < ").push_bind(until.millis());
        }
        q.push(" ORDER BY u.id LIMIT ").push_bind(i64::from(filter.limit));
        let rows = q.build().fetch_all(&self.pool).await.map_err(map_pg)?;
        rows.iter()
            .map(account_from_row)
            .collect::<Result<_, _>>()
            .map_err(map_pg)
    }

    async fn update_app_metadata(&self, user: UserId, app_metadata: &str) -> StoreResult<bool> {
        let done = sqlx::query("UPDATE users SET app_metadata = $2 WHERE id = $1")
            .bind(user.0)
            .bind(app_metadata)
            .execute(&self.pool)
            .await
            .map_err(map_pg)?;
        Ok(done.rows_affected() == 1)
    }

    async fn find_last_login(&self, user: UserId) -> StoreResult<Option<Timestamp>> {
        let at: Option<i64> = sqlx::query_scalar(
            "SELECT max(at) FROM audit_events WHERE user_id = $1 AND event = 'login_succeeded'",
        )
        .bind(user.0)
        .fetch_one(&self.pool)
        .await
        .map_err(map_pg)?;
        Ok(at.map(Timestamp))
    }

    async fn delete_user(&self, user: UserId, now: Timestamp) -> StoreResult<Option<u64>> {
        let mut tx = self.pool.begin().await.map_err(map_pg)?;
        // The user row first, as `disable_user` takes it: a session insert racing us waits,
        // then finds no user and inserts nothing.
        let email: Option<String> = sqlx::query_scalar("SELECT email FROM users WHERE id = $1 FOR UPDATE")
            .bind(user.0)
            .fetch_optional(&mut *tx)
            .await
            .map_err(map_pg)?;
        let Some(email) = email else {
            return Ok(None);
        };
        let revoked =
            super::sessions::revoke_user_sessions_with(&mut *tx, user, None, now, "user_deleted").await?;
        sqlx::query(
            "UPDATE audit_events SET detail = replace(detail, $2, '<deleted>') \
             WHERE user_id = $1 AND detail IS NOT NULL",
        )
        .bind(user.0)
        .bind(&email)
        .execute(&mut *tx)
        .await
        .map_err(map_pg)?;
        sqlx::query("DELETE FROM login_failures WHERE email = $1")
            .bind(&email)
            .execute(&mut *tx)
            .await
            .map_err(map_pg)?;
        sqlx::query("DELETE FROM users WHERE id = $1")
            .bind(user.0)
            .execute(&mut *tx)
            .await
            .map_err(map_pg)?;
        tx.commit().await.map_err(map_pg)?;
        Ok(Some(revoked))
    }
}
