//! Signing keys on SQLite: [`KeyStore`].

use async_trait::async_trait;

use super::*;

#[async_trait]
impl KeyStore for SqliteStore {
    async fn find_signing_keys(&self) -> StoreResult<Vec<SigningKeyRecord>> {
        self.readers.read(|c| {
            c.prepare_cached(&format!(
                "SELECT {KEY_COLUMNS} FROM signing_keys ORDER BY created_at"
            ))?
            .query_map([], key_from_row)?
            .collect()
        })
    }

    async fn find_signing_kids(&self) -> StoreResult<Vec<(String, bool)>> {
        self.readers.read(|c| {
            c.prepare_cached("SELECT kid, revoked_at IS NOT NULL FROM signing_keys")?
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect()
        })
    }

    async fn insert_signing_key_if_none_active(&self, k: &SigningKeyRecord) -> StoreResult<()> {
        let k = k.clone();
        self.write(move |c| insert_active_key(c, &k, true)).await
    }

    async fn rotate_signing_key(&self, k: &SigningKeyRecord) -> StoreResult<()> {
        let k = k.clone();
        self.write(move |c| {
            in_savepoint(c, "rotate_signing_key", |c| {
                // Every key still to sign after the new one activates retires then: the one
                // signing, and a key in the next stage that it overtakes (which never signs:
                // its activation moves back to its retirement).
                c.execute(
                    "UPDATE signing_keys SET active = 0, retired_at = ?1, activates_at = MIN(activates_at, ?1) \
                     WHERE revoked_at IS NULL AND (retired_at IS NULL OR retired_at > ?1)",
                    [k.activates_at.millis()],
                )?;
                insert_active_key(c, &k, false)
            })
        })
        .await
    }

    async fn revoke_signing_key(&self, revocation: &KeyRevocation) -> StoreResult<bool> {
        let r = revocation.clone();
        self.write(move |c| {
            in_savepoint(c, "revoke_signing_key", |c| {
                let now = r.now.millis();
                let revoked = c.execute(
                    "UPDATE signing_keys SET revoked_at = ?2, active = 0 WHERE kid = ?1 AND revoked_at IS NULL",
                    params![r.kid, now],
                )?;
                if revoked == 0 {
                    return Ok(false);
                }
                let retire_the_rest = |c: &Connection, except: &str| {
                    c.execute(
                        "UPDATE signing_keys SET active = 0, retired_at = ?2 WHERE kid <> ?1 \
                         AND revoked_at IS NULL AND (retired_at IS NULL OR retired_at > ?2)",
                        params![except, now],
                    )
                };
                match &r.then {
                    AfterKeyRevocation::Nothing => {}
                    AfterKeyRevocation::Promote(kid) => {
                        retire_the_rest(c, kid)?;
                        c.execute(
                            "UPDATE signing_keys SET active = 1, activates_at = ?2 WHERE kid = ?1",
                            params![kid, now],
                        )?;
                    }
                    AfterKeyRevocation::Restore {
                        kid,
                        active,
                        retired_at,
                    } => {
                        c.execute(
                            "UPDATE signing_keys SET active = ?2, retired_at = ?3 WHERE kid = ?1",
                            params![kid, active, retired_at.map(Timestamp::millis)],
                        )?;
                    }
                    AfterKeyRevocation::Replace(key) => {
                        retire_the_rest(c, &key.kid)?;
                        insert_active_key(c, key, false)?;
                    }
                }
                Ok(true)
            })
        })
        .await
    }

    async fn update_signing_key_private(&self, kid: &str, expected: &[u8], new: &[u8]) -> StoreResult<bool> {
        let (kid, expected, new) = (kid.to_owned(), expected.to_vec(), new.to_vec());
        self.write(move |c| {
            c.execute(
                "UPDATE signing_keys SET private_pkcs8 = ?3 WHERE kid = ?1 AND private_pkcs8 = ?2",
                params![kid, expected, new],
            )
            .map(|n| n == 1)
        })
        .await
    }
}
