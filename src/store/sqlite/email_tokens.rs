//! [`EmailTokenStore`] on SQLite: every write is one job of the writer, so a token's use is
//! decided once, and a token and its mail commit together (`in_savepoint`).

use super::*;
use crate::store::{EmailTokenKind, EmailTokenRecord, EmailTokenStore, NewMail};

fn token_from_row(row: &Row<'_>) -> rusqlite::Result<EmailTokenRecord> {
    let kind: String = row.get("kind")?;
    Ok(EmailTokenRecord {
        hash: row.get("hash")?,
        kind: EmailTokenKind::parse(&kind).ok_or_else(|| {
            rusqlite::Error::FromSqlConversionFailure(
                0,
                rusqlite::types::Type::Text,
                format!("unknown email token kind {kind}").into(),
            )
        })?,
        user_id: UserId(uuid_col(row, "user_id")?),
        new_email: row.get::<_, Option<String>>("new_email")?.map(Email::from_stored),
        credential_epoch: row.get("t_epoch")?,
        created_at: Timestamp(row.get("t_created_at")?),
        expires_at: Timestamp(row.get("expires_at")?),
        used_at: row.get::<_, Option<i64>>("used_at")?.map(Timestamp),
        browser_hash: row.get("browser_hash")?,
    })
}

#[async_trait]
impl EmailTokenStore for SqliteStore {
    async fn insert_email_token(&self, token: &EmailTokenRecord, mail: &NewMail) -> StoreResult<()> {
        let (token, mail) = (token.clone(), mail.clone());
        self.write(move |c| {
            in_savepoint(c, "email_token", |c| {
                c.prepare_cached(
                    "UPDATE email_tokens SET used_at = ?3 WHERE user_id = ?1 AND kind = ?2 AND used_at IS NULL",
                )?
                .execute(params![
                    token.user_id.to_string(),
                    token.kind.as_str(),
                    token.created_at.millis()
                ])?;
                c.prepare_cached(
                    "INSERT INTO email_tokens (hash, kind, user_id, new_email, credential_epoch, created_at, expires_at, browser_hash) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )?
                .execute(params![
                    token.hash,
                    token.kind.as_str(),
                    token.user_id.to_string(),
                    token.new_email.as_ref().map(Email::as_str),
                    token.credential_epoch,
                    token.created_at.millis(),
                    token.expires_at.millis(),
                    token.browser_hash
                ])?;
                super::mail::queue_mail(c, &mail)
            })
        })
        .await
    }

    async fn find_email_token(&self, hash: &str) -> StoreResult<Option<(EmailTokenRecord, UserRecord)>> {
        self.readers.read(|c| {
            c.prepare_cached(concat!(
                "SELECT t.hash, t.kind, t.user_id, t.new_email, t.credential_epoch AS t_epoch, \
                 t.created_at AS t_created_at, t.expires_at, t.used_at, t.browser_hash, ",
                user_columns!(),
                " FROM email_tokens t JOIN users u ON u.id = t.user_id WHERE t.hash = ?1"
            ))?
            .query_row([hash], |r| Ok((token_from_row(r)?, user_from_row(r)?)))
            .optional()
        })
    }

    async fn use_email_token(&self, hash: &str, now: Timestamp) -> StoreResult<bool> {
        let hash = hash.to_owned();
        let done = self
            .write(move |c| {
                c.prepare_cached(
                    "UPDATE email_tokens SET used_at = ?2 WHERE hash = ?1 AND used_at IS NULL AND expires_at > ?2",
                )?
                .execute(params![hash, now.millis()])
            })
            .await?;
        Ok(done == 1)
    }

    async fn void_email_tokens(
        &self,
        user: UserId,
        kind: EmailTokenKind,
        now: Timestamp,
    ) -> StoreResult<u64> {
        let done = self
            .write(move |c| {
                c.prepare_cached(
                    "UPDATE email_tokens SET used_at = ?3 WHERE user_id = ?1 AND kind = ?2 AND used_at IS NULL",
                )?
                .execute(params![user.to_string(), kind.as_str(), now.millis()])
            })
            .await?;
        Ok(done as u64)
    }

    async fn mark_email_verified(&self, user: UserId, now: Timestamp) -> StoreResult<bool> {
        let done = self
            .write(move |c| {
                c.prepare_cached(
                    "UPDATE users SET email_verified_at = coalesce(email_verified_at, ?2) WHERE id = ?1",
                )?
                .execute(params![user.to_string(), now.millis()])
            })
            .await?;
        Ok(done == 1)
    }

    async fn unmark_email_verified(&self, user: UserId) -> StoreResult<bool> {
        let done = self
            .write(move |c| {
                c.prepare_cached("UPDATE users SET email_verified_at = NULL WHERE id = ?1")?
                    .execute(params![user.to_string()])
            })
            .await?;
        Ok(done == 1)
    }

    async fn change_email(&self, user: UserId, new_email: &Email, now: Timestamp) -> StoreResult<bool> {
        let email = new_email.as_str().to_owned();
        let done = self
            .write(move |c| {
                let done = c
                    .prepare_cached("UPDATE users SET email = ?2, email_verified_at = ?3 WHERE id = ?1")?
                    .execute(params![user.to_string(), email, now.millis()]);
                match done {
                    Ok(n) => Ok(Some(n)),
                    Err(e) if is_unique_violation(&e) => Ok(None),
                    Err(e) => Err(e),
                }
            })
            .await?;
        match done {
            Some(n) => Ok(n == 1),
            None => Err(StoreError::Conflict("email")),
        }
    }

    async fn delete_email_tokens_expired_before(&self, before: Timestamp, limit: u32) -> StoreResult<u64> {
        let done = self
            .write(move |c| {
                c.prepare_cached(
                    "DELETE FROM email_tokens WHERE hash IN \
                     (SELECT hash FROM email_tokens WHERE expires_at < ?1 LIMIT ?2)",
                )?
                .execute(params![before.millis(), i64::from(limit)])
            })
            .await?;
        Ok(done as u64)
    }
}
