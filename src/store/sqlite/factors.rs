//! [`FactorStore`] on SQLite: every decision is one job of the one writer, so each has one
//! winner; a confirmation and its recovery codes commit together (`in_savepoint`).

use super::*;
use crate::store::{FactorStore, MfaChallengeRecord, TotpFactor};

fn insert_codes(c: &Connection, user: &str, hashes: &[String], now: i64) -> rusqlite::Result<()> {
    c.prepare_cached("DELETE FROM recovery_codes WHERE user_id = ?1")?
        .execute([user])?;
    let mut insert =
        c.prepare_cached("INSERT INTO recovery_codes (user_id, hash, created_at) VALUES (?1, ?2, ?3)")?;
    for hash in hashes {
        insert.execute(params![user, hash, now])?;
    }
    Ok(())
}

fn challenge_from_row(row: &Row<'_>) -> rusqlite::Result<MfaChallengeRecord> {
    let amr: String = row.get("amr")?;
    Ok(MfaChallengeRecord {
        hash: row.get("hash")?,
        user_id: UserId(uuid_col(row, "user_id")?),
        credential_epoch: row.get("credential_epoch")?,
        transport: row.get("transport")?,
        browser_hash: row.get("browser_hash")?,
        amr: parse_roles(&amr),
        created_at: Timestamp(row.get("created_at")?),
        expires_at: Timestamp(row.get("expires_at")?),
        failures: row.get("failures")?,
        used_at: row.get::<_, Option<i64>>("used_at")?.map(Timestamp),
    })
}

#[async_trait]
impl FactorStore for SqliteStore {
    async fn insert_pending_totp(&self, user: UserId, secret: &[u8], now: Timestamp) -> StoreResult<bool> {
        let secret = secret.to_vec();
        let done = self
            .write(move |c| {
                c.prepare_cached(
                    "INSERT INTO totp_factors (user_id, secret, created_at) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (user_id) DO UPDATE SET secret = excluded.secret, \
                     created_at = excluded.created_at, last_step = NULL \
                     WHERE totp_factors.confirmed_at IS NULL",
                )?
                .execute(params![user.to_string(), secret, now.millis()])
            })
            .await?;
        Ok(done == 1)
    }

    async fn find_totp(&self, user: UserId) -> StoreResult<Option<TotpFactor>> {
        self.readers.read(|c| {
            c.prepare_cached(
                "SELECT secret, created_at, confirmed_at, last_step FROM totp_factors WHERE user_id = ?1",
            )?
            .query_row([user.to_string()], |r| {
                Ok(TotpFactor {
                    secret: r.get(0)?,
                    created_at: Timestamp(r.get(1)?),
                    confirmed_at: r.get::<_, Option<i64>>(2)?.map(Timestamp),
                    last_step: r.get(3)?,
                })
            })
            .optional()
        })
    }

    async fn confirm_totp(
        &self,
        user: UserId,
        step: i64,
        code_hashes: &[String],
        now: Timestamp,
    ) -> StoreResult<bool> {
        let hashes = code_hashes.to_vec();
        self.write(move |c| {
            in_savepoint(c, "confirm_totp", |c| {
                let user = user.to_string();
                let done = c
                    .prepare_cached(
                        "UPDATE totp_factors SET confirmed_at = ?2, last_step = ?3 \
                         WHERE user_id = ?1 AND confirmed_at IS NULL",
                    )?
                    .execute(params![user, now.millis(), step])?;
                if done == 1 {
                    insert_codes(c, &user, &hashes, now.millis())?;
                }
                Ok(done == 1)
            })
        })
        .await
    }

    async fn accept_totp_step(&self, user: UserId, step: i64) -> StoreResult<bool> {
        let done = self
            .write(move |c| {
                c.prepare_cached(
                    "UPDATE totp_factors SET last_step = ?2 WHERE user_id = ?1 \
                     AND confirmed_at IS NOT NULL AND (last_step IS NULL OR last_step < ?2)",
                )?
                .execute(params![user.to_string(), step])
            })
            .await?;
        Ok(done == 1)
    }

    async fn delete_totp(&self, user: UserId) -> StoreResult<bool> {
        self.write(move |c| {
            let user = user.to_string();
            c.prepare_cached("DELETE FROM recovery_codes WHERE user_id = ?1")?
                .execute([&user])?;
            let done = c
                .prepare_cached("DELETE FROM totp_factors WHERE user_id = ?1")?
                .execute([&user])?;
            Ok(done == 1)
        })
        .await
    }

    async fn replace_recovery_codes(
        &self,
        user: UserId,
        code_hashes: &[String],
        now: Timestamp,
    ) -> StoreResult<()> {
        let hashes = code_hashes.to_vec();
        self.write(move |c| {
            in_savepoint(c, "recovery_codes", |c| {
                insert_codes(c, &user.to_string(), &hashes, now.millis())
            })
        })
        .await
    }

    async fn use_recovery_code(&self, user: UserId, hash: &str, now: Timestamp) -> StoreResult<bool> {
        let hash = hash.to_owned();
        let done = self
            .write(move |c| {
                c.prepare_cached(
                    "UPDATE recovery_codes SET used_at = ?3 WHERE user_id = ?1 AND hash = ?2 AND used_at IS NULL",
                )?
                .execute(params![user.to_string(), hash, now.millis()])
            })
            .await?;
        Ok(done == 1)
    }

    async fn count_recovery_codes(&self, user: UserId) -> StoreResult<u32> {
        self.readers.read(|c| {
            c.prepare_cached("SELECT count(*) FROM recovery_codes WHERE user_id = ?1 AND used_at IS NULL")?
                .query_row([user.to_string()], |r| r.get(0))
        })
    }

    async fn insert_mfa_challenge(&self, ch: &MfaChallengeRecord) -> StoreResult<()> {
        let ch = ch.clone();
        self.write(move |c| {
            c.prepare_cached(
                "INSERT INTO mfa_challenges (hash, user_id, credential_epoch, transport, browser_hash, amr, \
                 created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?
            .execute(params![
                ch.hash,
                ch.user_id.to_string(),
                ch.credential_epoch,
                ch.transport,
                ch.browser_hash,
                roles_json(&ch.amr),
                ch.created_at.millis(),
                ch.expires_at.millis()
            ])?;
            Ok(())
        })
        .await
    }

    async fn find_mfa_challenge(&self, hash: &str) -> StoreResult<Option<MfaChallengeRecord>> {
        self.readers.read(|c| {
            c.prepare_cached(
                "SELECT hash, user_id, credential_epoch, transport, browser_hash, amr, created_at, \
                 expires_at, failures, used_at FROM mfa_challenges WHERE hash = ?1",
            )?
            .query_row([hash], challenge_from_row)
            .optional()
        })
    }

    async fn use_mfa_challenge(&self, hash: &str, now: Timestamp) -> StoreResult<bool> {
        let hash = hash.to_owned();
        let done = self
            .write(move |c| {
                c.prepare_cached(
                    "UPDATE mfa_challenges SET used_at = ?2 WHERE hash = ?1 AND used_at IS NULL AND expires_at > ?2",
                )?
                .execute(params![hash, now.millis()])
            })
            .await?;
        Ok(done == 1)
    }

    async fn fail_mfa_challenge(&self, hash: &str, max_failures: i64, now: Timestamp) -> StoreResult<()> {
        let hash = hash.to_owned();
        self.write(move |c| {
            c.prepare_cached(
                "UPDATE mfa_challenges SET failures = failures + 1, \
                 used_at = CASE WHEN failures + 1 >= ?2 THEN coalesce(used_at, ?3) ELSE used_at END \
                 WHERE hash = ?1",
            )?
            .execute(params![hash, max_failures, now.millis()])?;
            Ok(())
        })
        .await
    }

    async fn delete_mfa_challenges_expired_before(&self, before: Timestamp, limit: u32) -> StoreResult<u64> {
        let done = self
            .write(move |c| {
                c.prepare_cached(
                    "DELETE FROM mfa_challenges WHERE hash IN \
                     (SELECT hash FROM mfa_challenges WHERE expires_at < ?1 LIMIT ?2)",
                )?
                .execute(params![before.millis(), limit])
            })
            .await?;
        Ok(done as u64)
    }
}
