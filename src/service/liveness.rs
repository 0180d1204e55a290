//! Which sessions are live, answered from memory.
//!
//! Every authenticated request must refuse an access token whose session was revoked. Reading
//! the session row each time made the database the bottleneck of the verify path, so this
//! process keeps what authentication needs about recently seen sessions, and learns of
//! revocations three ways:
//! - its own revocations are applied here before the revoking request is answered, so on one
//!   instance a logout followed by a request with the old access token is always refused;
//! - other instances' revocations arrive as PostgreSQL notices, sent when the revoking
//!   transaction commits;
//! - every revocation is also written to a revocation log (a trigger does it, whoever
//!   revokes: a server or the CLI), which is polled. That covers SQLite, where nothing is
//!   pushed, and catches up an instance whose listening connection dropped.
//!
//! While the feed is down (listener lost and not yet caught up, or the log unreadable), the
//! view is marked out of sync and callers read the database on every request.
//!
//! A revocation is never overwritten by a stale "live": a read that began before a revocation
//! and finishes after its notice cannot resurrect the session, because a revoked entry is
//! only ever replaced by nothing (eviction).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;

use crate::domain::{SessionId, Timestamp, UserId};
use crate::service::UserView;
use crate::store::{SessionRecord, UserRecord};

/// What an authenticated request needs to know about its session and user.
#[derive(Clone, Debug)]
pub struct SessionSnapshot {
    pub id: SessionId,
    pub user: UserView,
    /// Cookie-transport sessions: the CSRF token bound to the session.
    csrf_token: Option<String>,
    /// When the session ends if nothing more happens, as last read; a rotation (on any
    /// instance) only ever moves it later.
    expires_at: Timestamp,
    pub revoked: bool,
    /// The HTTP layer's answer to "who is this" (`GET /v1/auth/me`), rendered on first use
    /// and kept with the snapshot: a snapshot never changes (a change to the session or its
    /// user makes a new one), so neither can its rendering. Rendering it on every request
    /// was a sixth of a verify's user-space instructions.
    rendered: OnceLock<Bytes>,
}

impl SessionSnapshot {
    pub fn new(session: &SessionRecord, user: &UserRecord) -> SessionSnapshot {
        SessionSnapshot {
            id: session.id,
            user: UserView::slim(user),
            csrf_token: session.csrf_token.clone(),
            expires_at: session.expires_at(),
            revoked: session.revoked_at.is_some(),
            rendered: OnceLock::new(),
        }
    }

    /// The rendering kept by [`SessionSnapshot::keep_rendering`], if there is one yet.
    pub fn rendering(&self) -> Option<Bytes> {
        self.rendered.get().cloned()
    }

    /// Keeps a rendering of this snapshot (the first one kept stays).
    pub fn keep_rendering(&self, rendering: Bytes) {
        let _ = self.rendered.set(rendering);
    }

    pub fn user_id(&self) -> UserId {
        self.user.id
    }

    /// When the session ends if nothing more happens (as far as this snapshot knows).
    pub fn expires_at(&self) -> Timestamp {
        self.expires_at
    }

    /// Does `presented` equal the CSRF token bound to this (cookie) session?
    pub fn csrf_matches(&self, presented: &str) -> bool {
        crate::crypto::csrf_matches(self.csrf_token.as_deref(), presented)
    }
}

/// What memory says about one session.
#[derive(Clone, Debug)]
pub enum Known {
    Live(Arc<SessionSnapshot>),
    Revoked,
}

/// Sessions are spread over this many independently locked shards, so concurrent requests
/// rarely meet on a lock, and each lock is held for one hash-map operation.
const SHARDS: usize = 64;

pub struct LiveSessions {
    shards: Box<[Mutex<Shard>]>,
    per_shard: usize,
    /// False while revocations made elsewhere might be missing from memory.
    in_sync: AtomicBool,
}

#[derive(Default)]
struct Shard {
    /// Keyed with foldhash, not SipHash: every authenticated request looks up here, and the
    /// keys are ids we issued (random, inside tokens we signed), not text a client chooses.
    known: HashMap<SessionId, Known, foldhash::fast::RandomState>,
    /// Insertion order, for evicting the oldest entry when the shard is full.
    order: VecDeque<SessionId>,
}

impl Shard {
    fn insert_new(&mut self, id: SessionId, known: Known, capacity: usize) {
        while self.known.len() >= capacity {
            match self.order.pop_front() {
                Some(oldest) => {
                    self.known.remove(&oldest);
                }
                None => break,
            }
        }
        self.known.insert(id, known);
        self.order.push_back(id);
    }
}

impl LiveSessions {
    /// Remembers up to about `capacity` sessions (the oldest are forgotten first and read
    /// again when next used). Starts out of sync: nothing is trusted until the first catch-up.
    pub fn new(capacity: usize) -> LiveSessions {
        let per_shard = capacity.div_ceil(SHARDS).max(1);
        LiveSessions {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            per_shard,
            in_sync: AtomicBool::new(false),
        }
    }

    fn shard(&self, id: SessionId) -> std::sync::MutexGuard<'_, Shard> {
        // The low bits of a v7 UUID are random.
        let index = (id.0.as_u128() as usize) % SHARDS;
        // A poisoned shard only means a panic mid-insert; the map itself is intact.
        self.shards[index].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether answers from memory can be trusted right now.
    pub fn in_sync(&self) -> bool {
        self.in_sync.load(Ordering::Acquire)
    }

    pub fn set_in_sync(&self, in_sync: bool) {
        let was = self.in_sync.swap(in_sync, Ordering::AcqRel);
        if was != in_sync {
            if in_sync {
                tracing::info!("session revocation feed in sync: liveness answered from memory");
            } else {
                tracing::warn!("session revocation feed lost: reading the database on every request");
            }
        }
    }

    pub fn get(&self, id: SessionId) -> Option<Known> {
        self.shard(id).known.get(&id).cloned()
    }

    /// Records a session as read from the database, unless it is known to be revoked.
    pub fn remember(&self, snapshot: Arc<SessionSnapshot>) {
        let id = snapshot.id;
        let known = if snapshot.revoked {
            Known::Revoked
        } else {
            Known::Live(snapshot)
        };
        let mut shard = self.shard(id);
        match (shard.known.get_mut(&id), known) {
            (Some(Known::Revoked), _) => {}
            (Some(slot), known) => *slot = known,
            (None, known) => shard.insert_new(id, known, self.per_shard),
        }
    }

    /// Records a revocation, whether or not the session was in memory.
    pub fn revoked(&self, id: SessionId) {
        let mut shard = self.shard(id);
        match shard.known.get_mut(&id) {
            Some(slot) => *slot = Known::Revoked,
            None => shard.insert_new(id, Known::Revoked, self.per_shard),
        }
    }

    /// Forgets everything (after a gap in the feed too long for the log to cover).
    pub fn clear(&self) {
        for shard in self.shards.iter() {
            let mut shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            shard.known.clear();
            shard.order.clear();
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).known.len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::PasswordHashString;
    use crate::domain::Email;

    fn snapshot(revoked: bool) -> Arc<SessionSnapshot> {
        let user = UserRecord::new(
            Email::from_stored("a@example.com".into()),
            PasswordHashString(String::new()),
            Timestamp(0),
        );
        let session = SessionRecord {
            revoked_at: revoked.then_some(Timestamp(1)),
            ..SessionRecord::opened(
                user.id,
                Timestamp(0),
                Timestamp(1_000),
                Timestamp(500),
                vec!["pwd".into()],
                Timestamp(0),
            )
        };
        Arc::new(SessionSnapshot::new(&session, &user))
    }

    #[test]
    fn a_stale_read_never_resurrects_a_revoked_session() {
        let live = LiveSessions::new(100);
        let s = snapshot(false);
        live.revoked(s.id);
        live.remember(Arc::clone(&s));
        assert!(matches!(live.get(s.id), Some(Known::Revoked)));
    }

    #[test]
    fn a_revocation_replaces_a_live_entry() {
        let live = LiveSessions::new(100);
        let s = snapshot(false);
        live.remember(Arc::clone(&s));
        assert!(matches!(live.get(s.id), Some(Known::Live(_))));
        live.revoked(s.id);
        assert!(matches!(live.get(s.id), Some(Known::Revoked)));
    }

    #[test]
    fn a_revoked_row_is_remembered_as_revoked() {
        let live = LiveSessions::new(100);
        let s = snapshot(true);
        live.remember(Arc::clone(&s));
        assert!(matches!(live.get(s.id), Some(Known::Revoked)));
    }

    #[test]
    fn memory_is_bounded_and_forgets_the_oldest_first() {
        let live = LiveSessions::new(SHARDS * 2);
        let all: Vec<_> = (0..SHARDS * 20).map(|_| snapshot(false)).collect();
        for s in &all {
            live.remember(Arc::clone(s));
        }
        assert!(live.len() <= SHARDS * 2);
        // The newest entry of each shard survived.
        assert!(live.get(all[all.len() - 1].id).is_some());
    }

    #[test]
    fn it_starts_out_of_sync() {
        let live = LiveSessions::new(10);
        assert!(!live.in_sync());
        live.set_in_sync(true);
        assert!(live.in_sync());
    }
}
