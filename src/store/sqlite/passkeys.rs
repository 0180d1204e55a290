//! [`PasskeyStore`] on SQLite: writes are jobs of the writer, and a ceremony is taken with
//! one `DELETE ... RETURNING`, so it is used once.

use super::*;
use crate::domain::PasskeyId;
use crate::store::{CeremonyRecord, PasskeyRecord, PasskeyStore};

const PASSKEY_COLUMNS: &str =
    "p.id AS p_id, p.user_id AS p_user_id, p.credential_id, p.name, p.passkey, p.counter, \
     p.created_at AS p_created_at, p.last_used_at";

fn passkey_from_row(row: &Row<'_>) -> rusqlite::Result<PasskeyRecord> {
    Ok(PasskeyRecord {
        id: PasskeyId(uuid_col(row, "p_id")?),
        user_id: UserId(uuid_col(row, "p_user_id")?),
        credential_id: row.get("credential_id")?,
        name: row.get("name")?,
        passkey: row.get("passkey")?,
        counter: row.get("counter")?,
        created_at: Timestamp(row.get("p_created_at")?),
        last_used_at: row.get::<_, Option<i64>>("last_used_at")?.map(Timestamp),
    })
}

fn ceremony_from_row(row: &Row<'_>) -> rusqlite::Result<CeremonyRecord> {
    let user: Option<String> = row.get("user_id")?;
    Ok(CeremonyRecord {
        handle: row.get("handle")?,
        kind: row.get("kind")?,
        user_id: user.as_deref().and_then(UserId::parse),
        state: row.get("state")?,
        created_at: Timestamp(row.get("created_at")?),
        expires_at: Timestamp(row.get("expires_at")?),
    })
}

#[async_trait]
impl PasskeyStore for SqliteStore {
    async fn insert_passkey_ceremony(&self, ceremony: &CeremonyRecord) -> StoreResult<()> {
        let c = ceremony.clone();
        self.write(move |conn| {
            conn.prepare_cached("DELETE FROM passkey_ceremonies WHERE expires_at < ?1")?
                .execute([c.created_at.millis()])?;
            conn.prepare_cached(
                "INSERT OR REPLACE INTO passkey_ceremonies (handle, kind, user_id, state, created_at, expires_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                c.handle,
                c.kind,
                c.user_id.map(|u| u.to_string()),
                c.state,
                c.created_at.millis(),
                c.expires_at.millis()
            ])?;
            Ok(())
        })
        .await
    }

    async fn take_passkey_ceremony(&self, handle: &str) -> StoreResult<Option<CeremonyRecord>> {
        let handle = handle.to_owned();
        self.write(move |conn| {
            conn.prepare_cached(
                "DELETE FROM passkey_ceremonies WHERE handle = ?1 \
                 RETURNING handle, kind, user_id, state, created_at, expires_at",
            )?
            .query_row([handle], ceremony_from_row)
            .optional()
        })
        .await
    }

    async fn insert_passkey(&self, p: &PasskeyRecord) -> StoreResult<()> {
        let p = p.clone();
        let inserted = self
            .write(move |conn| {
                let done = conn
                    .prepare_cached(
                        "INSERT INTO passkeys (id, user_id, credential_id, name, passkey, counter, created_at, last_used_at) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                    )?
                    .execute(params![
                        p.id.to_string(),
                        p.user_id.to_string(),
                        p.credential_id,
                        p.name,
                        p.passkey,
                        p.counter,
                        p.created_at.millis(),
                        p.last_used_at.map(Timestamp::millis)
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
            Err(StoreError::Conflict("credential_id"))
        }
    }

    async fn find_passkeys(&self, user: UserId) -> StoreResult<Vec<PasskeyRecord>> {
        self.readers.read(|c| {
            c.prepare_cached(&format!(
                "SELECT {PASSKEY_COLUMNS} FROM passkeys p WHERE p.user_id = ?1 ORDER BY p.created_at, p.id"
            ))?
            .query_map([user.to_string()], passkey_from_row)?
            .collect()
        })
    }

    async fn find_passkey_by_credential(
        &self,
        credential_id: &str,
    ) -> StoreResult<Option<(PasskeyRecord, UserRecord)>> {
        self.readers.read(|c| {
            c.prepare_cached(&format!(
                concat!(
                    "SELECT {}, ",
                    user_columns!(),
                    " FROM passkeys p JOIN users u ON u.id = p.user_id WHERE p.credential_id = ?1"
                ),
                PASSKEY_COLUMNS
            ))?
            .query_row([credential_id], |r| Ok((passkey_from_row(r)?, user_from_row(r)?)))
            .optional()
        })
    }

    async fn rename_passkey(&self, user: UserId, id: PasskeyId, name: &str) -> StoreResult<bool> {
        let name = name.to_owned();
        let done = self
            .write(move |c| {
                c.prepare_cached("UPDATE passkeys SET name = ?3 WHERE id = ?1 AND user_id = ?2")?
                    .execute(params![id.to_string(), user.to_string(), name])
            })
            .await?;
        Ok(done == 1)
    }

    async fn delete_passkey(&self, user: UserId, id: PasskeyId) -> StoreResult<Option<PasskeyRecord>> {
        self.write(move |c| {
            c.prepare_cached(
                "DELETE FROM passkeys WHERE id = ?1 AND user_id = ?2 \
                 RETURNING id AS p_id, user_id AS p_user_id, credential_id, name, passkey, counter, \
                 created_at AS p_created_at, last_used_at",
            )?
            .query_row(params![id.to_string(), user.to_string()], passkey_from_row)
            .optional()
        })
        .await
    }

    async fn delete_passkeys(&self, user: UserId) -> StoreResult<u64> {
        let done = self
            .write(move |c| {
                c.prepare_cached("DELETE FROM passkeys WHERE user_id = ?1")?
                    .execute(params![user.to_string()])
            })
            .await?;
        Ok(done as u64)
    }

    async fn record_passkey_use(
        &self,
        id: PasskeyId,
        passkey: &str,
        counter: u32,
        now: Timestamp,
    ) -> StoreResult<bool> {
        let passkey = passkey.to_owned();
        let done = self
            .write(move |c| {
                c.prepare_cached(
                    "UPDATE passkeys SET passkey = ?2, counter = ?3, last_used_at = ?4 \
                     WHERE id = ?1 AND (?3 = 0 OR counter < ?3)",
                )?
                .execute(params![id.to_string(), passkey, counter, now.millis()])
            })
            .await?;
        Ok(done == 1)
    }
}
