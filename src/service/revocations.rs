//! Following revocations made by other instances and processes, so that session liveness
//! can be answered from memory (see `liveness`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use tokio::sync::{Mutex, Notify};

use super::error::AuthError;
use super::liveness::LiveSessions;
use crate::domain::{SessionId, Timestamp};
use crate::store::{RevocationListener, RevocationNotice, Store, StoreResult};

/// How many sessions each instance remembers for the liveness check (about 250 bytes each).
pub const REMEMBERED_SESSIONS: usize = 100_000;

/// Revocation-log entries are kept this long; an instance whose feed was down for longer
/// forgets every session it remembered rather than trust them.
pub const REVOCATION_LOG_RETENTION: Duration = Duration::from_secs(86_400);

/// Catching up re-reads this much of the log before the previous question: a revocation
/// logged just before it but committed just after is not missed.
const REVOCATION_LOG_OVERLAP: Duration = Duration::from_secs(2);

/// How often the revocation log is polled (the only feed on SQLite; a safety net beside
/// PostgreSQL's notices).
pub const REVOCATION_POLL_EVERY: Duration = Duration::from_millis(500);

/// A poll of the revocation log that takes longer than this means the database link is
/// stalled: memory is not trusted until one completes in time.
pub const REVOCATION_POLL_DEADLINE: Duration = Duration::from_millis(500);

/// How often a heartbeat goes through the revocation subscription (PostgreSQL), and how soon
/// it must come back. Their sum bounds how long a stalled subscription or database link can
/// go unnoticed: within the 100 ms in which revocations reach other instances.
pub const HEARTBEAT_EVERY: Duration = Duration::from_millis(50);
pub const HEARTBEAT_DEADLINE: Duration = Duration::from_millis(50);
/// A heartbeat this much later than its deadline gives the subscription up for a new one.
const HEARTBEAT_GIVE_UP: Duration = Duration::from_secs(1);

/// What woke the follower.
enum Event {
    Notice(StoreResult<RevocationNotice>),
    Sent(StoreResult<()>),
    Overdue,
    Beat,
    Poll,
}

/// Keeps this instance's memory of sessions ([`LiveSessions`]) in step with revocations
/// made anywhere, and wakes revocation-feed readers when one is learnt.
pub struct RevocationFollower {
    store: Arc<dyn Store>,
    live: LiveSessions,
    /// The database time the revocation log was last read up to. The lock also keeps two
    /// catch-ups from interleaving.
    read_at: Mutex<Timestamp>,
    /// Woken whenever this instance learns of a revocation: revocation-feed readers waiting
    /// for news.
    learnt: Notify,
}

impl RevocationFollower {
    /// Notes where the revocation log stands before any session is remembered: the first
    /// catch-up reads from there, so nothing revoked after a remembered read is missed.
    pub async fn start(store: Arc<dyn Store>) -> Result<RevocationFollower, AuthError> {
        let read_at = store.find_revocations_since(Timestamp(i64::MAX)).await?.asked_at;
        Ok(RevocationFollower {
            store,
            live: LiveSessions::new(REMEMBERED_SESSIONS),
            read_at: Mutex::new(read_at),
            learnt: Notify::new(),
        })
    }

    /// The sessions remembered, and whether memory can be trusted now.
    pub fn live(&self) -> &LiveSessions {
        &self.live
    }

    /// A wait for the next revocation learnt (enable it before reading, so none is missed).
    pub fn next_learnt(&self) -> tokio::sync::futures::Notified<'_> {
        self.learnt.notified()
    }

    /// Follows revocations made elsewhere for as long as the process runs: subscribes where
    /// the database pushes them, catches up from the revocation log, then applies notices
    /// and polls the log. Memory is trusted only while this is in step.
    pub async fn follow(&self) {
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
        self.catch_up_in_time().await?;
        Ok(listener)
    }

    /// Applies notices as they come and polls the log, until either fails. Where there is a
    /// subscription, a heartbeat goes round it every [`HEARTBEAT_EVERY`]: one not back within
    /// [`HEARTBEAT_DEADLINE`] (a frozen listener, a stalled database link) stops memory being
    /// trusted until it is back, and the log has been read again. A poll that does not
    /// complete within [`REVOCATION_POLL_DEADLINE`] does the same.
    pub(super) async fn apply_revocations(
        &self,
        mut listener: Option<Box<dyn RevocationListener>>,
    ) -> AuthError {
        let mut poll = tokio::time::interval(REVOCATION_POLL_EVERY);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut beat = tokio::time::interval(HEARTBEAT_EVERY);
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let instance = uuid::Uuid::new_v4().simple().to_string();
        let subscribed = listener.is_some();
        let mut sent = 0u64;
        // The heartbeat awaited (payload, due back by), and its send while in progress.
        let mut awaited: Option<(String, Instant)> = None;
        let mut sending: Option<Pin<Box<dyn Future<Output = StoreResult<()>> + Send>>> = None;
        loop {
            // In step: the heartbeat is due back by its deadline. Out of step already: by the
            // time after which this subscription is given up for a fresh one.
            let due = awaited.as_ref().map(|(_, due)| match self.live.in_sync() {
                true => *due,
                false => *due + HEARTBEAT_GIVE_UP,
            });
            let event = tokio::select! {
                // Whatever has arrived is taken before a deadline is judged.
                biased;
                notice = async {
                    match listener.as_mut() {
                        Some(listener) => listener.next().await,
                        None => std::future::pending().await,
                    }
                } => Event::Notice(notice),
                done = async {
                    match sending.as_mut() {
                        Some(sending) => sending.await,
                        None => std::future::pending().await,
                    }
                } => Event::Sent(done),
                () = async {
                    match due {
                        Some(due) => tokio::time::sleep_until(due).await,
                        None => std::future::pending().await,
                    }
                } => Event::Overdue,
                _ = beat.tick(), if subscribed && awaited.is_none() => Event::Beat,
                _ = poll.tick() => Event::Poll,
            };
            match event {
                Event::Notice(Ok(RevocationNotice::Revoked(id))) => self.learnt(id),
                Event::Notice(Ok(RevocationNotice::Heartbeat(payload))) => {
                    if awaited.as_ref().is_some_and(|(ours, _)| *ours == payload) {
                        awaited = None;
                        if !self.live.in_sync() {
                            // Back: what was delivered late is applied; read the log for the
                            // rest before trusting memory again.
                            if let Err(e) = self.catch_up_in_time().await {
                                return e;
                            }
                            self.live.set_in_sync(true);
                        }
                    }
                }
                Event::Notice(Err(e)) => return e.into(),
                Event::Sent(done) => {
                    sending = None;
                    if let Err(e) = done {
                        return e.into();
                    }
                }
                Event::Overdue if self.live.in_sync() => {
                    tracing::warn!(
                        "a revocation heartbeat is late: the subscription or the database link is stalled"
                    );
                    self.live.set_in_sync(false);
                }
                // Still not back: a subscription stalled for good would keep every request on
                // the database forever. Subscribe afresh (the caller does, from the log).
                Event::Overdue => {
                    return AuthError::Store(crate::store::StoreError::Unavailable(
                        "a revocation heartbeat did not come back: subscribing again".into(),
                    ))
                }
                Event::Beat => {
                    sent += 1;
                    let payload = format!("{instance}:{sent}");
                    let (store, body) = (Arc::clone(&self.store), payload.clone());
                    sending = Some(Box::pin(
                        async move { store.send_revocation_heartbeat(&body).await },
                    ));
                    awaited = Some((payload, Instant::now() + HEARTBEAT_DEADLINE));
                }
                Event::Poll => {
                    if let Err(e) = self.catch_up_in_time().await {
                        return e;
                    }
                }
            }
        }
    }

    /// Reads the log within [`REVOCATION_POLL_DEADLINE`], or says the link is stalled.
    async fn catch_up_in_time(&self) -> Result<(), AuthError> {
        let started = Instant::now();
        let read = tokio::time::timeout(REVOCATION_POLL_DEADLINE, self.catch_up_revocations()).await;
        // A read that blocked its thread (SQLite) cannot be cut short; judge it afterwards.
        match read {
            Ok(Ok(())) if started.elapsed() <= REVOCATION_POLL_DEADLINE => Ok(()),
            Ok(Err(e)) => Err(e),
            _ => Err(AuthError::Store(crate::store::StoreError::Unavailable(
                "the revocation log did not answer in time".into(),
            ))),
        }
    }

    /// Applies every revocation logged since the last read (with some overlap).
    pub(super) async fn catch_up_revocations(&self) -> Result<(), AuthError> {
        let mut read_at = self.read_at.lock().await;
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
            self.learnt(id);
        }
        *read_at = found.asked_at;
        Ok(())
    }

    /// A session was revoked (here or elsewhere): refuse it from memory, and wake the
    /// revocation-feed readers waiting for news.
    pub(super) fn learnt(&self, id: SessionId) {
        self.live.revoked(id);
        self.learnt.notify_waiters();
    }

    /// After revoking sessions by a rule (all of a user's, those over the limit), learn which
    /// from the log, so this instance refuses them before the request is answered.
    pub(super) async fn learn_own(&self) {
        if let Err(e) = self.catch_up_revocations().await {
            self.live.set_in_sync(false);
            tracing::warn!(error = %e, "cannot read the revocation log");
        }
    }
}
