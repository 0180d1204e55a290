//! The revocation log and the feed on SQLite: [`RevocationStore`].

use async_trait::async_trait;

use super::*;

#[async_trait]
impl RevocationStore for SqliteStore {
    async fn find_revocations_since(&self, since: Timestamp) -> StoreResult<RevocationsSince> {
        self.readers.read(|c| {
            // The clock first: a revocation logged after it is read again next time.
            let asked_at: i64 = c.query_row(concat!("SELECT ", sql_now_millis!()), [], |r| r.get(0))?;
            let sessions = c
                .prepare_cached("SELECT session_id FROM session_revocations WHERE logged_at >= ?1")?
                .query_map([since.millis()], |r| r.get::<_, String>(0))?
                .filter_map(|id| id.map(|id| SessionId::parse(&id)).transpose())
                .collect::<rusqlite::Result<_>>()?;
            Ok(RevocationsSince {
                sessions,
                asked_at: Timestamp(asked_at),
            })
        })
    }

    async fn listen_revocations(&self) -> StoreResult<Option<Box<dyn RevocationListener>>> {
        Ok(None)
    }

    async fn send_revocation_heartbeat(&self, _payload: &str) -> StoreResult<()> {
        Ok(())
    }

    async fn find_revocations_after(&self, after: i64, limit: u32) -> StoreResult<Vec<FeedRevocation>> {
        // One writer commits at a time, so AUTOINCREMENT numbers are already in commit order.
        self.readers.read(|c| {
            c.prepare_cached(
                "SELECT seq, session_id, user_id, logged_at, reason FROM session_revocations \
                 WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            )?
            .query_map(params![after, limit], |r| {
                let session: String = r.get(1)?;
                let user: String = r.get(2)?;
                Ok((r.get(0)?, session, user, r.get(3)?, r.get(4)?))
            })?
            .map(|row| {
                let (seq, session, user, at, reason) = row?;
                Ok(match (SessionId::parse(&session), UserId::parse(&user)) {
                    (Some(session_id), Some(user_id)) => Some(FeedRevocation {
                        seq,
                        session_id,
                        user_id,
                        at: Timestamp(at),
                        reason,
                    }),
                    _ => None,
                })
            })
            .filter_map(Result::transpose)
            .collect()
        })
    }

    async fn delete_revocations_logged_before(&self, before: Timestamp) -> StoreResult<u64> {
        let done = self
            .write(move |c| {
                c.prepare_cached("DELETE FROM session_revocations WHERE logged_at < ?1")?
                    .execute([before.millis()])
            })
            .await?;
        Ok(done as u64)
    }
}
