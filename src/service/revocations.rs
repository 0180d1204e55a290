//! Following revocations made by other instances and processes, so that session liveness
//! can be answered from memory (see `liveness`).

use std::time::Duration;

use super::{AuthError, AuthService};
use crate::domain::SessionId;
use crate::store::RevocationListener;

/// Revocation-log entries are kept this long; an instance whose feed was down for longer
/// forgets every session it remembered rather than trust them.
pub const REVOCATION_LOG_RETENTION: Duration = Duration::from_secs(86_400);

/// Catching up re-reads this much of the log before the previous question: a revocation
/// logged just before it but committed just after is not missed.
const REVOCATION_LOG_OVERLAP: Duration = Duration::from_secs(2);

/// How often the revocation log is polled (the only feed on SQLite; a safety net beside
/// PostgreSQL's notices).
pub const REVOCATION_POLL_EVERY: Duration = Duration::from_millis(500);

impl AuthService {
    /// Follows revocations made elsewhere for as long as the process runs: subscribes where
    /// the database pushes them, catches up from the revocation log, then applies notices
    /// and polls the log. Memory is trusted only while this is in step.
    pub async fn follow_revocations(&self) {
        let mut backoff = Duration::from_millis(100);
        loop {
            let listener = match self.subscribe_and_catch_up().await {
                Ok(listener) => listener,
                Err(e) => {
                    self.live.set_in_sync(false);
                    tracing::warn!(error = %e, "cannot follow session revocations");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            backoff = Duration::from_millis(100);
            self.live.set_in_sync(true);
            let lost = self.apply_revocations(listener).await;
            self.live.set_in_sync(false);
            tracing::warn!(error = %lost, "session revocation feed lost");
        }
    }

    /// Subscribed first, then caught up: nothing falls between the two.
    pub(super) async fn subscribe_and_catch_up(
        &self,
    ) -> Result<Option<Box<dyn RevocationListener>>, AuthError> {
        let listener = self.store.listen_revocations().await?;
        self.catch_up_revocations().await?;
        Ok(listener)
    }

    /// Applies notices as they come and polls the log, until either fails.
    pub(super) async fn apply_revocations(
        &self,
        mut listener: Option<Box<dyn RevocationListener>>,
    ) -> AuthError {
        let mut poll = tokio::time::interval(REVOCATION_POLL_EVERY);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let notice = async {
                match listener.as_mut() {
                    Some(listener) => listener.next().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                notice = notice => match notice {
                    Ok(id) => self.learnt_revocation(id),
                    Err(e) => return e.into(),
                },
                _ = poll.tick() => {
                    if let Err(e) = self.catch_up_revocations().await {
                        return e;
                    }
                }
            }
        }
    }

    /// Applies every revocation logged since the last read (with some overlap).
    pub(super) async fn catch_up_revocations(&self) -> Result<(), AuthError> {
        let mut read_at = self.revocations_read_at.lock().await;
        let since = *read_at;
        let found = self
            .store
            .find_revocations_since(since.minus(REVOCATION_LOG_OVERLAP))
            .await?;
        if found.asked_at.minus(REVOCATION_LOG_RETENTION) > since {
            // The log no longer reaches back to our last read: trust nothing remembered.
            self.live.clear();
        }
        for id in found.sessions {
            self.learnt_revocation(id);
        }
        *read_at = found.asked_at;
        Ok(())
    }

    /// A session was revoked (here or elsewhere): refuse it from memory, and wake the
    /// revocation-feed readers waiting for news.
    pub(super) fn learnt_revocation(&self, id: SessionId) {
        self.live.revoked(id);
        self.revocations_learnt.notify_waiters();
    }

    /// After revoking sessions by a rule (all of a user's, those over the limit), learn which
    /// from the log, so this instance refuses them before the request is answered.
    pub(super) async fn learn_own_revocations(&self) {
        if let Err(e) = self.catch_up_revocations().await {
            self.live.set_in_sync(false);
            tracing::warn!(error = %e, "cannot read the revocation log");
        }
    }
}
