//! Users as the auth flows read and create them on PostgreSQL: [`UserStore`].

use async_trait::async_trait;

use super::*;

#[async_trait]
impl UserStore for PostgresStore {
    async fn insert_user(&self, user: &UserRecord) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO users (id, email, password_hash, roles, created_at, user_metadata, app_metadata, \
             email_verified_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(user.id.0)
        .bind(user.email.as_str())
        .bind(&user.password_hash.0)
        .bind(roles_json(&user.roles))
        .bind(user.created_at.millis())
        .bind(&user.user_metadata)
        .bind(&user.app_metadata)
        .bind(user.email_verified_at.map(Timestamp::millis))
        .execute(&self.pool)
        .await
        .map_err(|e| match &e {
            sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict("email"),
            _ => map_pg(e),
        })?;
        Ok(())
    }

    async fn find_user_by_email(&self, email: &Email) -> StoreResult<Option<UserRecord>> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users u WHERE u.email = $1");
        let row = sqlx::query(&sql)
            .bind(email.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(map_pg)?;
        row.as_ref().map(user_from_row).transpose().map_err(map_pg)
    }

    async fn find_user_by_id(&self, user: UserId) -> StoreResult<Option<UserRecord>> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users u WHERE u.id = $1");
        let row = sqlx::query(&sql)
            .bind(user.0)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_pg)?;
        row.as_ref().map(user_from_row).transpose().map_err(map_pg)
    }

    async fn update_user_metadata(
        &self,
        user: UserId,
        user_metadata: &str,
    ) -> StoreResult<Option<UserRecord>> {
        let sql = format!("UPDATE users u SET user_metadata = $2 WHERE u.id = $1 RETURNING {USER_COLUMNS}");
        let row = sqlx::query(&sql)
            .bind(user.0)
            .bind(user_metadata)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_pg)?;
        row.as_ref().map(user_from_row).transpose().map_err(map_pg)
    }
}
