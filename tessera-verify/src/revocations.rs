//! Following Tessera's revocation feed (`GET /v1/revocations`), opt-in: with it, a revoked
//! session's access tokens are refused here within about a second of the revocation, instead
//! of verifying until they expire.
//!
//! A background task long-polls the feed from where it last stopped and remembers each
//! revoked session for as long as a token issued before the revocation could still be
//! valid. It starts with the first verification (or `prefetch`) and ends once every clone of
//! the `Verifier` is dropped. What the follower knows is current as of the send of the last
//! request whose answer found it caught up; an unreadable feed and a stalled one (no answer,
//! no error) both let that age. By default a verifier refuses every token once it is older
//! than its bound (`revocation_feed_max_lag`, 10 s), and long-polls for at most half the
//! bound so that a healthy feed never comes near it; failing open, tokens are judged by the
//! revocations already known. `Verifier::revocations_in_sync` tells a health check.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, Weak};
use std::time::{Duration, Instant};

use serde::Deserialize;

/// How long one long-poll waits at Tessera for news (its ceiling is 30 s).
const POLL_WAIT_SECS: u64 = 25;
/// Entries asked for at once; a full answer is followed by the next request at once.
const PAGE: usize = 1000;
/// Retries of an unreadable feed back off up to this.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Where the feed is and how to read it.
#[derive(Clone)]
pub(crate) struct FeedConfig {
    pub url: String,
    pub credential: String,
    /// How long a revoked session is remembered: at least Tessera's access-token lifetime.
    pub memory: Duration,
    /// Refuse every token (503) once the feed has been out of step this long, and wait at
    /// most this long from the start for the first catch-up; `None` (fail open): go on with
    /// the revocations already known.
    pub max_lag: Option<Duration>,
}

/// The sessions revoked at Tessera that a token may still name.
#[derive(Default)]
pub(crate) struct RevokedSessions {
    /// Session id → when to forget it.
    sessions: Mutex<HashMap<String, Instant>>,
    /// The last read of the feed succeeded.
    in_sync: AtomicBool,
    started: AtomicBool,
    /// When the follower started: before the first catch-up, revocations are known as of then
    /// (that is, not at all).
    started_at: Mutex<Option<Instant>>,
    /// When the last request was sent whose answer found the follower caught up: every
    /// revocation before that instant is known. A stalled feed (no answer, no error) leaves it
    /// where it was, so staleness grows as it does when reads fail.
    current_as_of: Mutex<Option<Instant>>,
    /// Becomes true at the first catch-up: before it, no revocation is known at all.
    caught_up: tokio::sync::watch::Sender<bool>,
    /// Why the feed could not be read last time. The crate logs nothing itself (it imposes
    /// no logging framework); `Verifier::revocation_feed_error` shows this instead.
    last_error: Mutex<Option<String>>,
}

impl RevokedSessions {
    pub fn contains(&self, session_id: &str) -> bool {
        let sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        sessions
            .get(session_id)
            .is_some_and(|forget_at| Instant::now() < *forget_at)
    }

    pub fn in_sync(&self) -> bool {
        self.in_sync.load(Ordering::Acquire)
    }

    /// How old the knowledge of revocations is: since the send of the last answer that found
    /// the follower caught up (since the start, before the first).
    pub fn staleness(&self) -> Duration {
        let current = *self.current_as_of.lock().unwrap_or_else(|p| p.into_inner());
        let since = current.or(*self.started_at.lock().unwrap_or_else(|p| p.into_inner()));
        since.map_or(Duration::ZERO, |since| since.elapsed())
    }

    fn set_in_sync(&self, in_sync: bool) {
        self.in_sync.store(in_sync, Ordering::Release);
    }

    /// An answer to a request sent at `sent_at` found the follower caught up.
    fn caught_up_at(&self, sent_at: Instant) {
        let mut current = self.current_as_of.lock().unwrap_or_else(|p| p.into_inner());
        if current.is_none_or(|c| c < sent_at) {
            *current = Some(sent_at);
        }
        drop(current);
        self.set_in_sync(true);
        self.caught_up.send_replace(true);
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// True the first time only: the caller starts the follower. Staleness counts from here
    /// until the first catch-up.
    pub fn start_once(&self) -> bool {
        let first = !self.started.swap(true, Ordering::AcqRel);
        if first {
            *self.started_at.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        }
        first
    }

    /// Has the follower ever caught up with the feed?
    pub fn caught_up_once(&self) -> bool {
        *self.caught_up.borrow()
    }

    /// Waits for the first catch-up, at most `limit`; returns whether it has happened.
    pub async fn wait_caught_up(&self, limit: Duration) -> bool {
        let mut caught_up = self.caught_up.subscribe();
        tokio::time::timeout(limit, caught_up.wait_for(|done| *done))
            .await
            .is_ok_and(|done| done.is_ok())
    }

    fn remember(&self, entries: &[Entry], memory: Duration) {
        let now = Instant::now();
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        // Forgetting happens here, where the map grows, so its size stays bounded by the
        // revocations of one memory period.
        sessions.retain(|_, forget_at| now < *forget_at);
        for entry in entries {
            sessions.insert(entry.session_id.clone(), now + memory);
        }
    }
}

#[derive(Deserialize)]
struct Entry {
    session_id: String,
}

#[derive(Deserialize)]
struct Page {
    revocations: Vec<Entry>,
    next: i64,
}

/// Runs until every `Verifier` sharing `revoked` is gone (they hold the only strong
/// references).
pub(crate) async fn follow(revoked: Weak<RevokedSessions>, client: reqwest::Client, feed: FeedConfig) {
    let mut after = 0;
    let mut backoff = Duration::from_millis(100);
    // A long poll waits at most half the staleness bound, so an answer (and with it fresh
    // knowledge) comes well within it; under 2 s, `wait` (whole seconds) is 0 and the pace is
    // set by sleeping half the bound between polls.
    let (poll_wait, pace) = match feed.max_lag {
        None => (POLL_WAIT_SECS, Duration::ZERO),
        Some(max) => {
            let wait = (max / 2).as_secs().min(POLL_WAIT_SECS);
            (wait, if wait == 0 { max / 2 } else { Duration::ZERO })
        }
    };
    // The first answer reads the whole retained feed without waiting: catching up.
    let mut wait = 0;
    loop {
        let Some(strong) = revoked.upgrade() else {
            return;
        };
        let sent_at = Instant::now();
        let result = read_page(&client, &feed, after, wait).await;
        match result {
            Ok(page) => {
                strong.remember(&page.revocations, feed.memory);
                let full = page.revocations.len() >= PAGE;
                after = page.next;
                backoff = Duration::from_millis(100);
                wait = poll_wait;
                if !full {
                    // Caught up: revocations are known as of when this request was sent.
                    strong.caught_up_at(sent_at);
                    // An answer far later than asked for (a stalled link, a frozen server):
                    // ask again at once rather than wait, to be current again sooner.
                    if sent_at.elapsed() > Duration::from_secs(wait + 1) {
                        wait = 0;
                    } else if !pace.is_zero() {
                        drop(strong);
                        tokio::time::sleep(pace).await;
                    }
                } else {
                    wait = 0;
                }
            }
            Err(why) => {
                strong.set_in_sync(false);
                *strong.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
                drop(strong);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

async fn read_page(
    client: &reqwest::Client,
    feed: &FeedConfig,
    after: i64,
    wait: u64,
) -> Result<Page, String> {
    let response = client
        .get(&feed.url)
        .query(&[
            ("after", after.to_string()),
            ("limit", PAGE.to_string()),
            ("wait", wait.to_string()),
        ])
        .bearer_auth(&feed.credential)
        .header(http::header::ACCEPT, "application/json")
        // The client's own timeout is for short fetches; a long poll needs its wait on top.
        .timeout(Duration::from_secs(wait + 10))
        .send()
        .await
        .map_err(|e| format!("GET {}: {e}", feed.url))?;
    if !response.status().is_success() {
        return Err(format!("GET {}: status {}", feed.url, response.status()));
    }
    response
        .json::<Page>()
        .await
        .map_err(|e| format!("GET {}: not a revocation page: {e}", feed.url))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revoked_sessions_are_remembered_for_the_memory_period_only() {
        let revoked = RevokedSessions::default();
        let entry = |id: &str| Entry {
            session_id: id.into(),
        };
        revoked.remember(&[entry("a")], Duration::from_secs(60));
        revoked.remember(&[entry("b")], Duration::ZERO);
        assert!(revoked.contains("a"));
        assert!(!revoked.contains("b"), "past its memory period");
        assert!(!revoked.contains("c"));
        // The expired entry is dropped when the map next grows.
        revoked.remember(&[entry("c")], Duration::from_secs(60));
        let sessions = revoked.sessions.lock().unwrap();
        assert!(sessions.contains_key("a") && sessions.contains_key("c") && !sessions.contains_key("b"));
    }

    #[test]
    fn staleness_counts_from_the_last_request_answered_caught_up() {
        let revoked = RevokedSessions::default();
        assert_eq!(revoked.staleness(), Duration::ZERO, "not started");
        assert!(revoked.start_once());
        std::thread::sleep(Duration::from_millis(20));
        assert!(
            revoked.staleness() >= Duration::from_millis(20),
            "since the start"
        );
        let sent = Instant::now();
        std::thread::sleep(Duration::from_millis(20));
        revoked.caught_up_at(sent);
        assert!(
            revoked.staleness() >= Duration::from_millis(20),
            "since the send, not the answer"
        );
        assert!(revoked.in_sync() && revoked.caught_up_once());
        // An older answer arriving late does not move knowledge back.
        revoked.caught_up_at(sent - Duration::from_secs(5));
        assert!(revoked.staleness() < Duration::from_secs(1));
        // A failed read says so, and staleness goes on growing from the last answer.
        revoked.set_in_sync(false);
        assert!(!revoked.in_sync());
        assert!(revoked.staleness() >= Duration::from_millis(20));
    }

    #[test]
    fn the_follower_starts_once() {
        let revoked = RevokedSessions::default();
        assert!(revoked.start_once());
        assert!(!revoked.start_once());
        assert!(!revoked.caught_up_once());
    }

    #[tokio::test]
    async fn waiting_for_the_first_catch_up_ends_with_it_or_at_the_limit() {
        let revoked = std::sync::Arc::new(RevokedSessions::default());
        assert!(!revoked.wait_caught_up(Duration::from_millis(20)).await);
        let waiter = {
            let revoked = std::sync::Arc::clone(&revoked);
            tokio::spawn(async move { revoked.wait_caught_up(Duration::from_secs(5)).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        revoked.caught_up.send_replace(true);
        assert!(waiter.await.unwrap());
        assert!(revoked.caught_up_once());
    }
}
