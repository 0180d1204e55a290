//! [`AccountStore`] on SQLite: writes go through the writer thread like every other write.

use rusqlite::types::Value;

use super::*;
use crate::store::{AccountFilter, AccountStore, AuditFilter, StoredAuditEvent, UserAccount};

fn account_from_row(row: &Row<'_>) -> rusqlite::Result<UserAccount> {
    Ok(UserAccount {
        user: user_from_row(row)?,
        disabled_at: row.get::<_, Option<i64>>("disabled_at")?.map(Timestamp),
    })
}

/// Runs `f` all-or-nothing inside the writer's batch transaction.
fn in_savepoint<T>(
    c: &Connection,
    f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    c.execute_batch("SAVEPOINT accounts")?;
    match f(c) {
        Ok(value) => {
            c.execute_batch("RELEASE accounts")?;
            Ok(value)
        }
        Err(e) => {
            c.execute_batch("ROLLBACK TO accounts; RELEASE accounts")?;
            Err(e)
        }
    }
}

fn optional_uuid(row: &Row<'_>, col: &str) -> rusqlite::Result<Option<uuid::Uuid>> {
    let text: Option<String> = row.get(col)?;
    Ok(text.and_then(|t| uuid::Uuid::parse_str(&t).ok()))
}

#[async_trait]
impl AccountStore for SqliteStore {
    async fn find_account(&self, email: &Email) -> StoreResult<Option<UserAccount>> {
        self.readers.read(|c| {
            c.prepare_cached(concat!(
                "SELECT ",
                user_columns!(),
                ", u.disabled_at FROM users u WHERE u.email = ?1"
            ))?
            .query_row([email.as_str()], account_from_row)
            .optional()
        })
    }

    async fn find_accounts(&self, after: Option<&Email>, limit: u32) -> StoreResult<Vec<UserAccount>> {
        self.readers.read(|c| {
            c.prepare_cached(concat!(
                "SELECT ",
                user_columns!(),
                ", u.disabled_at FROM users u WHERE u.email > ?1 ORDER BY u.email LIMIT ?2"
            ))?
            .query_map(
                params![after.map_or("", Email::as_str), i64::from(limit)],
                account_from_row,
            )?
            .collect()
        })
    }

    async fn disable_user(&self, user: UserId, now: Timestamp) -> StoreResult<u64> {
        self.write(move |c| {
            in_savepoint(c, |c| {
                c.prepare_cached(
                    "UPDATE users SET disabled_at = coalesce(disabled_at, ?2), \
                     credential_epoch = credential_epoch + 1 WHERE id = ?1",
                )?
                .execute(params![user.to_string(), now.millis()])?;
                let revoked = c
                    .prepare_cached(
                        "UPDATE sessions SET revoked_at = ?2, revoked_reason = 'user_disabled', \
                         sealed_current = NULL WHERE user_id = ?1 AND revoked_at IS NULL",
                    )?
                    .execute(params![user.to_string(), now.millis()])?;
                Ok(revoked as u64)
            })
        })
        .await
    }

    async fn enable_user(&self, user: UserId) -> StoreResult<bool> {
        let done = self
            .write(move |c| {
                c.prepare_cached(
                    "UPDATE users SET disabled_at = NULL WHERE id = ?1 AND disabled_at IS NOT NULL",
                )?
                .execute([user.to_string()])
            })
            .await?;
        Ok(done == 1)
    }

    async fn update_user_roles(&self, user: UserId, roles: &[String]) -> StoreResult<bool> {
        let roles = roles_json(roles);
        let done = self
            .write(move |c| {
                c.prepare_cached("UPDATE users SET roles = ?2 WHERE id = ?1")?
                    .execute(params![user.to_string(), roles])
            })
            .await?;
        Ok(done == 1)
    }

    async fn upgrade_password_hash(
        &self,
        user: UserId,
        old: &PasswordHashString,
        new: &PasswordHashString,
    ) -> StoreResult<bool> {
        let (old, new) = (old.0.clone(), new.0.clone());
        let done = self
            .write(move |c| {
                c.prepare_cached("UPDATE users SET password_hash = ?3 WHERE id = ?1 AND password_hash = ?2")?
                    .execute(params![user.to_string(), old, new])
            })
            .await?;
        Ok(done == 1)
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
        let (old, new, reason) = (old.0.clone(), new.0.clone(), reason.to_owned());
        // One writer: a session insert is wholly before this (and revoked by it) or after it
        // (and finds the epoch moved).
        self.write(move |c| {
            in_savepoint(c, |c| {
                let changed = c
                    .prepare_cached(
                        "UPDATE users SET password_hash = ?3, credential_epoch = credential_epoch + 1 \
                         WHERE id = ?1 AND password_hash = ?2",
                    )?
                    .execute(params![user.to_string(), old, new])?;
                if changed == 0 {
                    return Ok(None);
                }
                let revoked = super::sessions::revoke_user_sessions_in(c, user, keep, now, &reason)?;
                Ok(Some(revoked))
            })
        })
        .await
    }

    async fn insert_users_if_absent(&self, users: &[UserRecord]) -> StoreResult<u64> {
        let users = users.to_vec();
        // One job: the whole batch is one transaction and one commit. A taken email (or, by
        // chance, id) is skipped, not an error.
        self.write(move |c| {
            let mut insert = c.prepare_cached(
                "INSERT INTO users (id, email, password_hash, roles, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT DO NOTHING",
            )?;
            let mut inserted = 0u64;
            for u in &users {
                inserted += insert.execute(params![
                    u.id.to_string(),
                    u.email.as_str(),
                    u.password_hash.0,
                    roles_json(&u.roles),
                    u.created_at.millis()
                ])? as u64;
            }
            Ok(inserted)
        })
        .await
    }

    async fn find_audit_events(&self, filter: &AuditFilter) -> StoreResult<Vec<StoredAuditEvent>> {
        // Only the filters given are in the statement, so SQLite's planner can pick the
        // index that fits them ((user_id, at), (event, at) or (at)).
        let mut sql = String::from(
            "SELECT a.id, a.event, a.at, a.user_id, u.email, a.session_id, a.ip, a.user_agent, a.detail \
             FROM audit_events a LEFT JOIN users u ON u.id = a.user_id WHERE 1 = 1",
        );
        let mut args: Vec<Value> = Vec::new();
        if let Some(user) = filter.user {
            args.push(Value::Text(user.to_string()));
            sql += &format!(" AND a.user_id = ?{}", args.len());
        }
        if let Some(event) = &filter.event {
            args.push(Value::Text(event.clone()));
            sql += &format!(" AND a.event = ?{}", args.len());
        }
        if let Some(since) = filter.since {
            args.push(Value::Integer(since.millis()));
            sql += &format!(" AND a.at >= ?{}", args.len());
        }
        if let Some(until) = filter.until {
            args.push(Value::Integer(until.millis()));
            sql += &format!(" AND a.at < ?{}", args.len());
        }
        if let Some((at, id)) = filter.before {
            args.push(Value::Integer(at.millis()));
            let at_arg = args.len();
            args.push(Value::Text(id.to_string()));
            sql += &format!(
                " AND (a.at < ?{at_arg} OR (a.at = ?{at_arg} AND a.id < ?{}))",
                args.len()
            );
        }
        args.push(Value::Integer(i64::from(filter.limit)));
        sql += &format!(" ORDER BY a.at DESC, a.id DESC LIMIT ?{}", args.len());
        self.readers.read(|c| {
            c.prepare(&sql)?
                .query_map(rusqlite::params_from_iter(args), |r| {
                    Ok(StoredAuditEvent {
                        id: uuid_col(r, "id")?,
                        event: r.get("event")?,
                        at: Timestamp(r.get("at")?),
                        user_id: optional_uuid(r, "user_id")?.map(UserId),
                        email: r.get("email")?,
                        session_id: optional_uuid(r, "session_id")?.map(SessionId),
                        ip: r.get("ip")?,
                        user_agent: r.get("user_agent")?,
                        detail: r.get("detail")?,
                    })
                })?
                .collect()
        })
    }

    async fn find_account_by_id(&self, user: UserId) -> StoreResult<Option<UserAccount>> {
        self.readers.read(|c| {
            c.prepare_cached(concat!(
                "SELECT ",
                user_columns!(),
                ", u.disabled_at FROM users u WHERE u.id = ?1"
            ))?
            .query_row([user.to_string()], account_from_row)
            .optional()
        })
    }

    async fn find_accounts_filtered(&self, filter: &AccountFilter) -> StoreResult<Vec<UserAccount>> {
        let mut sql = String::from(concat!(
            "SELECT ",
            user_columns!(),
            ", u.disabled_at FROM users u WHERE 1 = 1"
        ));
        let mut args: Vec<Value> = Vec::new();
        if let Some(after) = filter.after {
            args.push(Value::Text(after.to_string()));
            sql += &format!(" AND u.id > ?{}", args.len());
        }
        if let Some(prefix) = &filter.email_prefix {
            args.push(Value::Text(prefix.clone()));
            let n = args.len();
            sql += &format!(" AND substr(u.email, 1, length(?{n})) = ?{n}");
        }
        match filter.disabled {
            Some(true) => sql += " AND u.disabled_at IS NOT NULL",
            Some(false) => sql += " AND u.disabled_at IS NULL",
            None => {}
        }
        if let Some(role) = &filter.role {
            args.push(Value::Text(role.clone()));
            sql += &format!(
                " AND EXISTS (SELECT 1 FROM json_each(u.roles) r WHERE r.value = ?{})",
                args.len()
            );
        }
        if let Some(from) = filter.created_from {
            args.push(Value::Integer(from.millis()));
            sql += &format!(" AND u.created_at >= ?{}", args.len());
        }
        if let Some(until) = filter.created_until {
            args.push(Value::Integer(until.millis()));
            sql += &format!(" AND u.created_at < ?{}", args.len());
        }
        args.push(Value::Integer(i64::from(filter.limit)));
        sql += &format!(" ORDER BY u.id LIMIT ?{}", args.len());
        self.readers.read(|c| {
            c.prepare(&sql)?
                .query_map(rusqlite::params_from_iter(args), account_from_row)?
                .collect()
        })
    }

    async fn update_app_metadata(&self, user: UserId, app_metadata: &str) -> StoreResult<bool> {
        let app_metadata = app_metadata.to_owned();
        let done = self
            .write(move |c| {
                c.prepare_cached("UPDATE users SET app_metadata = ?2 WHERE id = ?1")?
                    .execute(params![user.to_string(), app_metadata])
            })
            .await?;
        Ok(done == 1)
    }

    async fn find_last_login(&self, user: UserId) -> StoreResult<Option<Timestamp>> {
        self.readers.read(|c| {
            c.prepare_cached(
                "SELECT max(at) FROM audit_events WHERE user_id = ?1 AND event = 'login_succeeded'",
            )?
            .query_row([user.to_string()], |r| r.get::<_, Option<i64>>(0))
            .map(|at| at.map(Timestamp))
        })
    }

    async fn delete_user(&self, user: UserId, now: Timestamp) -> StoreResult<Option<u64>> {
        self.write(move |c| {
            in_savepoint(c, |c| {
                let email: Option<String> = c
                    .prepare_cached("SELECT email FROM users WHERE id = ?1")?
                    .query_row([user.to_string()], |r| r.get(0))
                    .optional()?;
                let Some(email) = email else {
                    return Ok(None);
                };
                let revoked = super::sessions::revoke_user_sessions_in(c, user, None, now, "user_deleted")?;
                c.prepare_cached(
                    "UPDATE audit_events SET detail = replace(detail, ?2, '<deleted>') \
                     WHERE user_id = ?1 AND detail IS NOT NULL",
                )?
                .execute(params![user.to_string(), email])?;
                c.prepare_cached("DELETE FROM login_failures WHERE email = ?1")?
                    .execute([&email])?;
                c.prepare_cached("DELETE FROM users WHERE id = ?1")?
                    .execute([user.to_string()])?;
                Ok(Some(revoked))
            })
        })
        .await
    }
}
