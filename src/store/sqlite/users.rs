//! Users as the auth flows read and create them on SQLite: [`UserStore`].

use async_trait::async_trait;

use super::*;

#[async_trait]
impl UserStore for SqliteStore {
    async fn insert_user(&self, user: &UserRecord) -> StoreResult<()> {
        let user = user.clone();
        let inserted = self
            .write(move |c| {
                let done = c
                    .prepare_cached(
                        "INSERT INTO users (id, email, password_hash, roles, created_at, user_metadata, app_metadata, \
                         email_verified_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                    )?
                    .execute(params![
                        user.id.to_string(),
                        user.email.as_str(),
                        user.password_hash.0,
                        roles_json(&user.roles),
                        user.created_at.millis(),
                        user.user_metadata,
                        user.app_metadata,
                        user.email_verified_at.map(Timestamp::millis)
                    ]);
                match done {
                    Ok(_) => Ok(true),
                    Err(e) if is_unique_violation(&e) => Ok(false),
                    Err(e) => Err(e),
                }
            })
            .await?;
        if inserted {
            Ok(())
        } else {
            Err(StoreError::Conflict("email"))
        }
    }

    async fn find_user_by_email(&self, email: &Email) -> StoreResult<Option<UserRecord>> {
        self.readers.read(|c| {
            c.prepare_cached(concat!(
                "SELECT ",
                user_columns!(),
                " FROM users u WHERE u.email = ?1"
            ))?
            .query_row([email.as_str()], user_from_row)
            .optional()
        })
    }

    async fn find_user_by_id(&self, user: UserId) -> StoreResult<Option<UserRecord>> {
        self.readers.read(|c| {
            c.prepare_cached(concat!(
                "SELECT ",
                user_columns!(),
                " FROM users u WHERE u.id = ?1"
            ))?
            .query_row([user.to_string()], user_from_row)
            .optional()
        })
    }

    async fn update_user_metadata(
        &self,
        user: UserId,
        user_metadata: &str,
    ) -> StoreResult<Option<UserRecord>> {
        let user_metadata = user_metadata.to_owned();
        // SQLite's RETURNING takes no qualified names: the row is read back in the same job.
        self.write(move |c| {
            c.prepare_cached("UPDATE users SET user_metadata = ?2 WHERE id = ?1")?
                .execute(params![user.to_string(), user_metadata])?;
            c.prepare_cached(concat!(
                "SELECT ",
                user_columns!(),
                " FROM users u WHERE u.id = ?1"
            ))?
            .query_row([user.to_string()], user_from_row)
            .optional()
        })
        .await
    }
}
