//! [`MailStore`] on SQLite: a claim is one `UPDATE ... RETURNING` in the writer's transaction,
//! so claims (of this process, and of another process through SQLite's write lock) run one
//! after the other and never hand out the same mail twice. [`queue_mail`] is the insert a
//! flow runs inside its own write, so its state change and its mail commit together.

use super::*;
use crate::store::{MailStore, NewMail, QueuedMail};

macro_rules! mail_columns {
    () => {
        "id, recipient, kind, payload, created_at, expires_at, attempts, next_attempt_at, \
         claimed_until, sent_at, failed_at, last_error"
    };
}

fn mail_from_row(row: &Row<'_>) -> rusqlite::Result<QueuedMail> {
    Ok(QueuedMail {
        id: uuid_col(row, "id")?,
        recipient: row.get("recipient")?,
        kind: row.get("kind")?,
        payload: row.get("payload")?,
        created_at: Timestamp(row.get("created_at")?),
        expires_at: row.get::<_, Option<i64>>("expires_at")?.map(Timestamp),
        attempts: u32::try_from(row.get::<_, i64>("attempts")?).unwrap_or(u32::MAX),
        next_attempt_at: Timestamp(row.get("next_attempt_at")?),
        claimed_until: row.get::<_, Option<i64>>("claimed_until")?.map(Timestamp),
        sent_at: row.get::<_, Option<i64>>("sent_at")?.map(Timestamp),
        failed_at: row.get::<_, Option<i64>>("failed_at")?.map(Timestamp),
        last_error: row.get("last_error")?,
    })
}

/// Queues `mail` (due at once) on the writer's connection: call it inside a flow's write job,
/// within the `in_savepoint` that holds the flow's other statements, so that the mail is
/// queued exactly when the state change commits.
pub(in crate::store) fn queue_mail(c: &Connection, mail: &NewMail) -> rusqlite::Result<()> {
    c.prepare_cached(
        "INSERT INTO mail_outbox (id, recipient, kind, payload, created_at, expires_at, next_attempt_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?5)",
    )?
    .execute(params![
        mail.id.to_string(),
        mail.recipient,
        mail.kind,
        mail.payload,
        mail.created_at.millis(),
        mail.expires_at.map(Timestamp::millis),
    ])
    .map(drop)
}

#[async_trait]
impl MailStore for SqliteStore {
    async fn insert_mail(&self, mail: &NewMail) -> StoreResult<()> {
        let mail = mail.clone();
        self.write(move |c| queue_mail(c, &mail)).await
    }

    async fn claim_mails(
        &self,
        claimer: &str,
        now: Timestamp,
        lease_until: Timestamp,
        limit: u32,
    ) -> StoreResult<Vec<QueuedMail>> {
        let claimer = claimer.to_owned();
        let mut claimed = self
            .write(move |c| {
                c.prepare_cached(concat!(
                    "UPDATE mail_outbox SET claimed_by = ?1, claimed_until = ?3, attempts = attempts + 1 \
                     WHERE id IN (SELECT id FROM mail_outbox WHERE sent_at IS NULL AND failed_at IS NULL \
                       AND next_attempt_at <= ?2 AND (claimed_until IS NULL OR claimed_until <= ?2) \
                       ORDER BY next_attempt_at LIMIT ?4) RETURNING ",
                    mail_columns!()
                ))?
                .query_map(
                    params![claimer, now.millis(), lease_until.millis(), i64::from(limit)],
                    mail_from_row,
                )?
                .collect::<rusqlite::Result<Vec<_>>>()
            })
            .await?;
        // RETURNING gives no order.
        claimed.sort_by_key(|m| (m.created_at, m.id));
        Ok(claimed)
    }

    async fn mark_mail_sent(&self, id: uuid::Uuid, claimer: &str, now: Timestamp) -> StoreResult<bool> {
        let claimer = claimer.to_owned();
        let done = self
            .write(move |c| {
                c.prepare_cached(
                    "UPDATE mail_outbox SET sent_at = ?3, payload = '', last_error = NULL, \
                       claimed_until = NULL, claimed_by = NULL \
                     WHERE id = ?1 AND sent_at IS NULL AND failed_at IS NULL \
                       AND (claimed_by = ?2 OR claimed_by IS NULL)",
                )?
                .execute(params![id.to_string(), claimer, now.millis()])
            })
            .await?;
        Ok(done == 1)
    }

    async fn reschedule_mail(
        &self,
        id: uuid::Uuid,
        claimer: &str,
        next_attempt_at: Timestamp,
        error: &str,
    ) -> StoreResult<bool> {
        let (claimer, error) = (claimer.to_owned(), error.to_owned());
        let done = self
            .write(move |c| {
                c.prepare_cached(
                    "UPDATE mail_outbox SET next_attempt_at = ?3, last_error = ?4, \
                       claimed_until = NULL, claimed_by = NULL \
                     WHERE id = ?1 AND claimed_by = ?2 AND sent_at IS NULL AND failed_at IS NULL",
                )?
                .execute(params![id.to_string(), claimer, next_attempt_at.millis(), error])
            })
            .await?;
        Ok(done == 1)
    }

    async fn release_mail_claims(&self, claimer: &str) -> StoreResult<u64> {
        let claimer = claimer.to_owned();
        let done = self
            .write(move |c| {
                c.prepare_cached(
                    "UPDATE mail_outbox SET claimed_until = NULL, claimed_by = NULL \
                     WHERE claimed_by = ?1 AND sent_at IS NULL AND failed_at IS NULL",
                )?
                .execute(params![claimer])
            })
            .await?;
        Ok(done as u64)
    }

    async fn mark_mail_failed(
        &self,
        id: uuid::Uuid,
        claimer: &str,
        now: Timestamp,
        error: &str,
    ) -> StoreResult<bool> {
        let (claimer, error) = (claimer.to_owned(), error.to_owned());
        let done = self
            .write(move |c| {
                c.prepare_cached(
                    "UPDATE mail_outbox SET failed_at = ?3, last_error = ?4, payload = '', \
                       claimed_until = NULL, claimed_by = NULL \
                     WHERE id = ?1 AND claimed_by = ?2 AND sent_at IS NULL AND failed_at IS NULL",
                )?
                .execute(params![id.to_string(), claimer, now.millis(), error])
            })
            .await?;
        Ok(done == 1)
    }

    async fn find_mail(&self, id: uuid::Uuid) -> StoreResult<Option<QueuedMail>> {
        self.readers.read(|c| {
            c.prepare_cached(concat!(
                "SELECT ",
                mail_columns!(),
                " FROM mail_outbox WHERE id = ?1"
            ))?
            .query_row([id.to_string()], mail_from_row)
            .optional()
        })
    }

    async fn find_mails(&self, pending_only: bool, limit: u32) -> StoreResult<Vec<QueuedMail>> {
        self.readers.read(|c| {
            c.prepare_cached(concat!(
                "SELECT ",
                mail_columns!(),
                " FROM mail_outbox WHERE (?1 = 0 OR (sent_at IS NULL AND failed_at IS NULL)) \
                 ORDER BY created_at DESC, id DESC LIMIT ?2"
            ))?
            .query_map(params![pending_only, i64::from(limit)], mail_from_row)?
            .collect()
        })
    }

    async fn delete_mails_finished_before(&self, before: Timestamp, limit: u32) -> StoreResult<u64> {
        let deleted = self
            .write(move |c| {
                c.prepare_cached(
                    "DELETE FROM mail_outbox WHERE id IN (SELECT id FROM mail_outbox \
                     WHERE (sent_at IS NOT NULL OR failed_at IS NOT NULL) AND created_at < ?1 LIMIT ?2)",
                )?
                .execute(params![before.millis(), i64::from(limit)])
            })
            .await?;
        Ok(deleted as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mail() -> NewMail {
        NewMail {
            id: uuid::Uuid::now_v7(),
            recipient: "a@example.com".into(),
            kind: "test".into(),
            payload: r#"{"kind":"test"}"#.into(),
            created_at: Timestamp(1),
            expires_at: None,
        }
    }

    /// The pattern a flow follows: its statements and `queue_mail` in one savepoint of the
    /// writer's batch; a failure of either leaves neither behind, even though the batch's
    /// transaction goes on for the writes queued with it.
    #[tokio::test]
    async fn a_mail_is_queued_exactly_when_the_write_it_goes_with_commits() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = SqliteStore::connect(&url, 2).await.unwrap();
        let failed = mail();
        let queued = failed.clone();
        let result = store
            .write(move |c| {
                in_savepoint(c, "flow", |c| {
                    queue_mail(c, &queued)?;
                    c.execute("UPDATE no_such_table SET x = 1", [])
                })
            })
            .await;
        assert!(result.is_err());
        assert_eq!(store.find_mail(failed.id).await.unwrap(), None);

        let kept = mail();
        let queued = kept.clone();
        store
            .write(move |c| {
                in_savepoint(c, "flow", |c| {
                    c.execute("UPDATE users SET roles = roles WHERE 0", [])?;
                    queue_mail(c, &queued)
                })
            })
            .await
            .unwrap();
        let found = store.find_mail(kept.id).await.unwrap().expect("queued");
        assert!(found.is_pending());
    }
}
