//! The storage conformance suite: every case is written once, as a function of a `Store`, and
//! runs against SQLite and PostgreSQL (see the `conformance!` list at the bottom).

#[path = "support/postgres.rs"]
mod postgres_support;

use std::sync::Arc;

use ring::rand::SystemRandom;
use tessera::crypto::{PasswordHashString, RefreshToken, RefreshTokenHash, RefreshTokenKey};
use tessera::domain::{Email, SessionId, Timestamp, UserId};
use tessera::store::{
    self, AfterKeyRevocation, AuditEvent, AuditFilter, CurrentRotation, FailureKey, KeyRevocation,
    LoginFailures, NewAlert, Rotation, SessionRecord, SessionStore, Store, StoreError, UserRecord,
};
use tessera::tokens::SigningKeyRecord;

const T0: Timestamp = Timestamp(1_700_000_000_000);
const DAY: i64 = 86_400_000;

fn hash() -> RefreshTokenHash {
    RefreshToken::issue(&SystemRandom::new(), SessionId::new(), 0)
        .expect("rng")
        .hash()
}

/// How the service would find a token of generation `generation` of `session` hashed `hash`.
fn key(session: SessionId, generation: i64, hash: RefreshTokenHash) -> RefreshTokenKey {
    RefreshTokenKey::Chained {
        session_id: session,
        generation,
        hash,
    }
}

/// The key of the token a rotation made the session's current one.
fn rotated_to(r: &Rotation) -> RefreshTokenKey {
    key(r.session_id, r.expected_generation + 1, r.new_hash)
}

/// The key of the token a one-step rotation issues.
fn successor(step: &CurrentRotation) -> RefreshTokenKey {
    key(step.session_id, step.generation + 1, step.new_hash)
}

fn user(email: &str) -> UserRecord {
    UserRecord {
        id: UserId::new(),
        email: Email::parse(email).expect("email"),
        password_hash: PasswordHashString("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into()),
        roles: vec!["reader".into()],
        created_at: T0,
        credential_epoch: 0,
    }
}

fn session(user: &UserRecord, last_used: Timestamp) -> SessionRecord {
    SessionRecord {
        id: SessionId::new(),
        user_id: user.id,
        created_at: last_used,
        last_used_at: last_used,
        absolute_expires_at: Timestamp(T0.0 + 90 * DAY),
        refresh_expires_at: Timestamp(T0.0 + 30 * DAY),
        revoked_at: None,
        revoked_reason: None,
        user_agent: Some("conformance/1.0".into()),
        ip: Some("127.0.0.1".into()),
        generation: 0,
        rotated_at: None,
        sealed_current: None,
        csrf_token: None,
    }
}

/// A user with one session; returns both and the key of the session's first token.
async fn seeded(store: &dyn Store) -> (UserRecord, SessionRecord, RefreshTokenKey) {
    let u = user(&format!("{}@example.com", uuid::Uuid::new_v4().simple()));
    store.insert_user(&u).await.expect("insert user");
    let s = session(&u, T0);
    let h = hash();
    store.insert_session(&s, &h, 0).await.expect("insert session");
    let first = key(s.id, 0, h);
    (u, s, first)
}

/// `n` sessions of `user`, last used at `T0`, each with its first token.
async fn insert_sessions(store: &dyn Store, user: &UserRecord, n: usize) -> Vec<SessionRecord> {
    let mut sessions = Vec::with_capacity(n);
    for _ in 0..n {
        let s = session(user, T0);
        store.insert_session(&s, &hash(), 0).await.expect("session");
        sessions.push(s);
    }
    sessions
}

/// The ids of a user's live sessions, in the store's order (most recently used first).
async fn live_ids(store: &dyn Store, user: UserId, now: Timestamp) -> Vec<SessionId> {
    let live = store.find_live_sessions(user, now).await.expect("list");
    live.iter().map(|s| s.id).collect()
}

fn rotation(s: &SessionRecord, expected: i64, now: Timestamp) -> Rotation {
    Rotation {
        session_id: s.id,
        expected_generation: expected,
        new_hash: hash(),
        sealed_new: Some(vec![7; 60]),
        now,
        refresh_expires_at: Timestamp(now.0 + 30 * DAY),
    }
}

async fn users_are_unique_by_email(store: Arc<dyn Store>) {
    let u = user("Alice@Example.com");
    store.insert_user(&u).await.expect("insert");
    let found = store
        .find_user_by_email(&u.email)
        .await
        .expect("find")
        .expect("present");
    assert_eq!(found.id, u.id);
    assert_eq!(found.email.as_str(), "alice@example.com");
    assert_eq!(found.roles, vec!["reader".to_string()]);
    assert_eq!(found.password_hash, u.password_hash);
    let again = user("alice@example.com");
    assert!(matches!(
        store.insert_user(&again).await,
        Err(StoreError::Conflict(_))
    ));
    let nobody = Email::parse("nobody@example.com").expect("email");
    assert!(store.find_user_by_email(&nobody).await.expect("find").is_none());
}

async fn sessions_round_trip(store: Arc<dyn Store>) {
    let (u, s, h) = seeded(store.as_ref()).await;
    assert_eq!(store.find_session(s.id).await.expect("find").as_ref(), Some(&s));
    let (s2, u2) = store
        .find_session_with_user(s.id)
        .await
        .expect("find")
        .expect("present");
    assert_eq!(s2, s);
    assert_eq!(u2.id, u.id);
    let found = store
        .find_refresh_token(&h)
        .await
        .expect("find")
        .expect("present");
    assert_eq!(found.generation, 0);
    assert_eq!(found.session, s);
    assert_eq!(found.user.id, u.id);
    // Unknown: another session, another generation, or the right place with another hash
    // (a forged token that names a real session).
    for unknown in [
        key(SessionId::new(), 0, hash()),
        key(s.id, 1, hash()),
        key(s.id, 0, hash()),
    ] {
        assert!(store.find_refresh_token(&unknown).await.expect("find").is_none());
    }
    assert!(store
        .find_refresh_token(&RefreshTokenKey::Legacy(hash()))
        .await
        .expect("find")
        .is_none());
    assert!(store
        .find_session(SessionId::new())
        .await
        .expect("find")
        .is_none());
}

async fn rotation_advances_the_chain_once(store: Arc<dyn Store>) {
    let (_, s, first) = seeded(store.as_ref()).await;
    let now = Timestamp(T0.0 + 1000);
    let r = rotation(&s, 0, now);
    assert!(store.rotate(&r).await.expect("rotate"));
    // The same expected generation again loses: the chain moved on.
    assert!(!store.rotate(&rotation(&s, 0, now)).await.expect("rotate"));
    let after = store.find_session(s.id).await.expect("find").expect("present");
    assert_eq!(after.generation, 1);
    assert_eq!(after.rotated_at, Some(now));
    assert_eq!(after.last_used_at, now);
    assert_eq!(after.refresh_expires_at, r.refresh_expires_at);
    assert_eq!(after.sealed_current, r.sealed_new);
    let new = store
        .find_refresh_token(&rotated_to(&r))
        .await
        .expect("find")
        .expect("present");
    assert_eq!(new.generation, 1);
    let old = store
        .find_refresh_token(&first)
        .await
        .expect("find")
        .expect("present");
    assert_eq!(old.generation, 0, "ancestors stay recognisable");
}

async fn concurrent_rotations_have_one_winner(store: Arc<dyn Store>) {
    let (_, s, _) = seeded(store.as_ref()).await;
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let store = Arc::clone(&store);
            let r = rotation(&s, 0, Timestamp(T0.0 + 1000 + i));
            tokio::spawn(async move { store.rotate(&r).await })
        })
        .collect();
    let mut winners = 0;
    for t in tasks {
        if t.await
            .expect("join")
            .expect("rotate must not error under contention")
        {
            winners += 1;
        }
    }
    assert_eq!(winners, 1);
    let after = store.find_session(s.id).await.expect("find").expect("present");
    assert_eq!(after.generation, 1);
}

fn one_step(presented: RefreshTokenKey, now: Timestamp, csrf: Option<&str>) -> CurrentRotation {
    let RefreshTokenKey::Chained {
        session_id,
        generation,
        hash: presented,
    } = presented
    else {
        panic!("only chained tokens rotate in one step");
    };
    CurrentRotation {
        session_id,
        generation,
        presented,
        new_hash: hash(),
        sealed_new: vec![9; 60],
        now,
        refresh_expires_at: Timestamp(now.0 + 30 * DAY),
        csrf: csrf.map(str::to_owned),
    }
}

async fn the_current_token_rotates_in_one_step(store: Arc<dyn Store>) {
    let (u, s, first) = seeded(store.as_ref()).await;
    let now = Timestamp(T0.0 + 1000);
    let step = one_step(first, now, None);
    let (after, owner) = store
        .rotate_current(&step)
        .await
        .expect("rotate")
        .expect("the current token rotates");
    assert_eq!((after.id, after.generation), (s.id, 1));
    assert_eq!(after.rotated_at, Some(now));
    assert_eq!(after.last_used_at, now);
    assert_eq!(after.sealed_current.as_deref(), Some(&[9u8; 60][..]));
    assert_eq!((owner.id, owner.roles.clone()), (u.id, u.roles.clone()));
    // The sliding expiry never passes the absolute end.
    let late = Timestamp(T0.0 + 89 * DAY);
    let capped = one_step(successor(&step), Timestamp(T0.0 + 2000), None);
    let capped = CurrentRotation {
        refresh_expires_at: Timestamp(late.0 + 30 * DAY),
        ..capped
    };
    let (after, _) = store
        .rotate_current(&capped)
        .await
        .expect("rotate")
        .expect("rotates");
    assert_eq!(after.refresh_expires_at, s.absolute_expires_at);
    // The presented token is now an ancestor: no second rotation from it.
    assert!(store
        .rotate_current(&one_step(first, now, None))
        .await
        .expect("rotate")
        .is_none());
    // Every link of the chain is known, with its generation.
    let found = store
        .find_refresh_token(&successor(&step))
        .await
        .expect("find")
        .expect("recorded");
    assert_eq!(found.generation, 1);
    let found = store
        .find_refresh_token(&successor(&capped))
        .await
        .expect("find")
        .expect("recorded");
    assert_eq!((found.generation, found.session.generation), (2, 2));
}

async fn one_step_rotation_leaves_every_other_case_to_the_slow_path(store: Arc<dyn Store>) {
    // Unknown token; a forged one naming a real session's current generation.
    let (_, real, _) = seeded(store.as_ref()).await;
    for unknown in [key(SessionId::new(), 0, hash()), key(real.id, 0, hash())] {
        assert!(store
            .rotate_current(&one_step(unknown, T0, None))
            .await
            .expect("rotate")
            .is_none());
    }
    let untouched = store.find_session(real.id).await.expect("find").expect("present");
    assert_eq!(untouched.generation, 0);
    // Revoked session.
    let (_, s, h) = seeded(store.as_ref()).await;
    store.revoke_session(s.id, T0, "logout").await.expect("revoke");
    assert!(store
        .rotate_current(&one_step(h, T0, None))
        .await
        .expect("rotate")
        .is_none());
    // Ended session.
    let (_, _, h) = seeded(store.as_ref()).await;
    let late = Timestamp(T0.0 + 31 * DAY);
    assert!(store
        .rotate_current(&one_step(h, late, None))
        .await
        .expect("rotate")
        .is_none());
    // A cookie session presented with the wrong CSRF token, or a bearer session with one.
    let u = user(&format!("{}@example.com", uuid::Uuid::new_v4().simple()));
    store.insert_user(&u).await.expect("user");
    let mut cookie = session(&u, T0);
    cookie.csrf_token = Some("csrf-right".into());
    let h = hash();
    store.insert_session(&cookie, &h, 0).await.expect("session");
    let h = key(cookie.id, 0, h);
    assert!(store
        .rotate_current(&one_step(h, T0, Some("csrf-wrong")))
        .await
        .expect("rotate")
        .is_none());
    let (_, _, bearer) = seeded(store.as_ref()).await;
    assert!(store
        .rotate_current(&one_step(bearer, T0, Some("csrf-right")))
        .await
        .expect("rotate")
        .is_none());
    // None of that wrote anything; the right CSRF token rotates.
    assert!(store
        .rotate_current(&one_step(h, T0, Some("csrf-right")))
        .await
        .expect("rotate")
        .is_some());
    assert!(store
        .rotate_current(&one_step(bearer, T0, None))
        .await
        .expect("rotate")
        .is_some());
}

/// Many one-step rotations of one token at once (on SQLite they land in one batch, on
/// PostgreSQL they race for the row lock): exactly one successor.
async fn concurrent_one_step_rotations_have_one_winner(store: Arc<dyn Store>) {
    let (_, s, h) = seeded(store.as_ref()).await;
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let store = Arc::clone(&store);
            let step = one_step(h, Timestamp(T0.0 + 1000 + i), None);
            tokio::spawn(async move { store.rotate_current(&step).await })
        })
        .collect();
    let mut winners = 0;
    for t in tasks {
        if t.await
            .expect("join")
            .expect("no error under contention")
            .is_some()
        {
            winners += 1;
        }
    }
    assert_eq!(winners, 1);
    let after = store.find_session(s.id).await.expect("find").expect("present");
    assert_eq!(after.generation, 1);
}

/// A rotation racing a revocation of its session either happens before it (and its
/// successor dies with the session) or not at all: nothing outlives the revocation. Every
/// way of revoking races: one session (logout, `DELETE /sessions/{id}`, reuse detection),
/// all of a user's (logout-all) and eviction by the session cap.
async fn a_rotation_racing_a_revocation_never_outlives_it(store: Arc<dyn Store>) {
    let at = Timestamp(T0.0 + 1000);
    let mut races = Vec::new();
    for i in 0..30 {
        let (u, s, h) = seeded(store.as_ref()).await;
        let step = one_step(h, at, None);
        let successor = successor(&step);
        let rotating = {
            let store = Arc::clone(&store);
            tokio::spawn(async move { store.rotate_current(&step).await })
        };
        let revoking = {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                match i % 3 {
                    0 => store.revoke_session(s.id, at, "logout").await.map(u64::from),
                    1 => store.revoke_user_sessions(u.id, None, at, "logout_all").await,
                    _ => store.revoke_sessions_over_limit(u.id, 0, at).await,
                }
            })
        };
        races.push((s, successor, rotating, revoking));
    }
    for (s, successor, rotating, revoking) in races {
        rotating.await.expect("join").expect("rotate");
        assert_eq!(
            revoking.await.expect("join").expect("revoke"),
            1,
            "the revocation applied"
        );
        let after = store.find_session(s.id).await.expect("find").expect("present");
        assert!(after.revoked_at.is_some());
        assert_eq!(after.sealed_current, None, "no successor survives the revocation");
        let next = one_step(successor, Timestamp(T0.0 + 2000), None);
        assert!(store.rotate_current(&next).await.expect("rotate").is_none());
    }
}

/// Every way of revoking reaches the revocation log; rotations do not.
async fn revocations_are_logged_however_they_are_made(store: Arc<dyn Store>) {
    let start = store
        .find_revocations_since(Timestamp(i64::MAX))
        .await
        .expect("log")
        .asked_at;
    let (u, one, h) = seeded(store.as_ref()).await;
    store
        .rotate_current(&one_step(h, T0, None))
        .await
        .expect("rotate");
    assert!(store
        .find_revocations_since(start)
        .await
        .expect("log")
        .sessions
        .is_empty());
    store.revoke_session(one.id, T0, "logout").await.expect("revoke");
    let others: Vec<SessionId> = insert_sessions(store.as_ref(), &u, 3)
        .await
        .iter()
        .map(|s| s.id)
        .collect();
    store
        .revoke_sessions_over_limit(u.id, 2, T0)
        .await
        .expect("evict");
    store
        .revoke_user_sessions(u.id, None, T0, "logout_all")
        .await
        .expect("revoke all");
    let mut logged = store.find_revocations_since(start).await.expect("log").sessions;
    logged.sort();
    let mut expected = vec![one.id];
    expected.extend(others);
    expected.sort();
    assert_eq!(logged, expected, "each revoked session logged once");
    let later = store.find_revocations_since(start).await.expect("log").asked_at;
    assert!(later >= start);
    let pruned = store
        .delete_revocations_logged_before(Timestamp(later.0 + 1))
        .await
        .expect("prune");
    assert_eq!(pruned, 4);
}

async fn revoked_or_ended_sessions_do_not_rotate(store: Arc<dyn Store>) {
    let (_, s, _) = seeded(store.as_ref()).await;
    assert!(store.revoke_session(s.id, T0, "logout").await.expect("revoke"));
    assert!(
        !store.revoke_session(s.id, T0, "logout").await.expect("revoke"),
        "second revoke is a no-op"
    );
    assert!(!store.rotate(&rotation(&s, 0, T0)).await.expect("rotate"));
    let after = store.find_session(s.id).await.expect("find").expect("present");
    assert_eq!(after.revoked_at, Some(T0));
    assert_eq!(after.revoked_reason.as_deref(), Some("logout"));

    let (_, ended, _) = seeded(store.as_ref()).await;
    let late = Timestamp(T0.0 + 31 * DAY);
    assert!(!store.rotate(&rotation(&ended, 0, late)).await.expect("rotate"));
}

async fn revocation_clears_the_sealed_successor(store: Arc<dyn Store>) {
    let (_, s, _) = seeded(store.as_ref()).await;
    assert!(store.rotate(&rotation(&s, 0, T0)).await.expect("rotate"));
    store
        .revoke_session(s.id, T0, "refresh_token_reused")
        .await
        .expect("revoke");
    let after = store.find_session(s.id).await.expect("find").expect("present");
    assert_eq!(after.sealed_current, None);
}

async fn user_sessions_revoke_all_or_others(store: Arc<dyn Store>) {
    let (u, keep, _) = seeded(store.as_ref()).await;
    let other = session(&u, T0);
    store.insert_session(&other, &hash(), 0).await.expect("insert");
    let (_, stranger, _) = seeded(store.as_ref()).await;

    assert_eq!(
        store
            .revoke_user_sessions(u.id, Some(keep.id), T0, "logout_others")
            .await
            .expect("revoke"),
        1
    );
    assert_eq!(live_ids(store.as_ref(), u.id, T0).await, vec![keep.id]);
    assert_eq!(
        store
            .revoke_user_sessions(u.id, None, T0, "logout_all")
            .await
            .expect("revoke"),
        1
    );
    assert!(live_ids(store.as_ref(), u.id, T0).await.is_empty());
    let untouched = store
        .find_session(stranger.id)
        .await
        .expect("find")
        .expect("present");
    assert!(untouched.revoked_at.is_none(), "other users keep their sessions");
}

async fn live_sessions_are_listed_most_recent_first(store: Arc<dyn Store>) {
    let (u, oldest, _) = seeded(store.as_ref()).await;
    let newest = session(&u, Timestamp(T0.0 + 2000));
    let middle = session(&u, Timestamp(T0.0 + 1000));
    let mut ended = session(&u, Timestamp(T0.0 + 3000));
    ended.refresh_expires_at = Timestamp(T0.0 + 5000);
    let revoked = session(&u, Timestamp(T0.0 + 4000));
    for s in [&newest, &middle, &ended, &revoked] {
        store.insert_session(s, &hash(), 0).await.expect("insert");
    }
    store
        .revoke_session(revoked.id, T0, "logout")
        .await
        .expect("revoke");
    let now = Timestamp(T0.0 + 6000);
    let ids = live_ids(store.as_ref(), u.id, now).await;
    assert_eq!(ids, vec![newest.id, middle.id, oldest.id]);
}

async fn sessions_over_the_limit_are_revoked_least_recent_first(store: Arc<dyn Store>) {
    let (u, first, _) = seeded(store.as_ref()).await;
    let mut all = vec![first];
    for i in 1..5 {
        let s = session(&u, Timestamp(T0.0 + i * 1000));
        store.insert_session(&s, &hash(), 0).await.expect("insert");
        all.push(s);
    }
    let now = Timestamp(T0.0 + 10_000);
    assert_eq!(
        store
            .revoke_sessions_over_limit(u.id, 3, now)
            .await
            .expect("evict"),
        2
    );
    let live = live_ids(store.as_ref(), u.id, now).await;
    assert_eq!(live, vec![all[4].id, all[3].id, all[2].id]);
    let evicted = store
        .find_session(all[0].id)
        .await
        .expect("find")
        .expect("present");
    assert_eq!(evicted.revoked_reason.as_deref(), Some("session_limit"));
    assert_eq!(
        store
            .revoke_sessions_over_limit(u.id, 3, now)
            .await
            .expect("evict"),
        0
    );
}

async fn ended_sessions_are_deleted_with_their_tokens(store: Arc<dyn Store>) {
    let (_, revoked, revoked_hash) = seeded(store.as_ref()).await;
    let (_, idle, idle_hash) = seeded(store.as_ref()).await;
    let (u, live, live_hash) = seeded(store.as_ref()).await;
    let mut old = session(&u, T0);
    old.absolute_expires_at = Timestamp(T0.0 + DAY);
    let old_hash = hash();
    store.insert_session(&old, &old_hash, 0).await.expect("insert");
    let old_hash = key(old.id, 0, old_hash);
    store
        .revoke_session(revoked.id, T0, "logout")
        .await
        .expect("revoke");
    // `live` is refreshed; `idle` is not, so its refresh token ends at T0 + 30 d.
    let refreshed = Timestamp(T0.0 + 29 * DAY);
    assert!(store
        .rotate(&rotation(&live, 0, refreshed))
        .await
        .expect("rotate"));

    // In batches: at most `limit` a call.
    let first = store
        .delete_sessions_ended_before(Timestamp(T0.0 + 31 * DAY), 1)
        .await
        .expect("sweep");
    let deleted = store
        .delete_sessions_ended_before(Timestamp(T0.0 + 31 * DAY), 100)
        .await
        .expect("sweep");
    assert_eq!(
        (first, deleted),
        (1, 1),
        "the revoked session and the one past its absolute end, one a batch"
    );
    for gone in [&revoked_hash, &old_hash] {
        assert!(store.find_refresh_token(gone).await.expect("find").is_none());
    }
    assert!(store.find_session(old.id).await.expect("find").is_none());
    // An idle session is swept by its absolute end, not its sliding one.
    assert!(store
        .find_refresh_token(&idle_hash)
        .await
        .expect("find")
        .is_some());
    assert!(store
        .find_refresh_token(&live_hash)
        .await
        .expect("find")
        .is_some());
    let deleted = store
        .delete_sessions_ended_before(Timestamp(T0.0 + 91 * DAY), 100)
        .await
        .expect("sweep");
    assert_eq!(deleted, 2);
    assert!(store.find_session(idle.id).await.expect("find").is_none());
}

async fn idle_sessions_are_deleted_by_walking_every_session(store: Arc<dyn Store>) {
    let mut idle = Vec::new();
    let mut refreshed = Vec::new();
    for i in 0..5 {
        let (_, s, first) = seeded(store.as_ref()).await;
        if i % 2 == 0 {
            // Never refreshed: its refresh token ends at T0 + 30 d.
            idle.push((s, first));
        } else {
            assert!(store
                .rotate(&rotation(&s, 0, Timestamp(T0.0 + 29 * DAY)))
                .await
                .expect("rotate"));
            refreshed.push((s, first));
        }
    }
    let before = Timestamp(T0.0 + 31 * DAY);
    let (mut cursor, mut steps, mut deleted) = (None, 0, 0);
    loop {
        let step = store.delete_idle_sessions(cursor, 2, before).await.expect("step");
        steps += 1;
        deleted += step.deleted;
        assert!(step.deleted <= 2, "a step deletes within its stretch only");
        cursor = step.next;
        if cursor.is_none() {
            break;
        }
        assert!(steps < 10, "the walk ends");
    }
    assert_eq!((steps, deleted), (3, 3), "five sessions, two a step; three idle");
    for (s, first) in &idle {
        assert!(store.find_session(s.id).await.expect("find").is_none());
        assert!(store.find_refresh_token(first).await.expect("find").is_none());
    }
    for (s, first) in &refreshed {
        assert!(store.find_session(s.id).await.expect("find").is_some());
        assert!(store.find_refresh_token(first).await.expect("find").is_some());
    }
    // A new pass finds nothing more to delete.
    let step = store.delete_idle_sessions(None, 100, before).await.expect("step");
    assert_eq!(
        step,
        tessera::store::IdleSweep {
            deleted: 0,
            next: None
        }
    );
}

async fn one_active_signing_key_even_when_racing(store: Arc<dyn Store>) {
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let key = SigningKeyRecord::generate_ed25519(T0).expect("key");
                store.insert_signing_key_if_none_active(&key).await
            })
        })
        .collect();
    for t in tasks {
        t.await
            .expect("join")
            .expect("insert must not error when it loses");
    }
    let keys = store.find_signing_keys().await.expect("keys");
    assert_eq!(keys.iter().filter(|k| k.active).count(), 1);
    assert_eq!(keys.len(), 1);
    let k = &keys[0];
    assert_eq!(k.alg, "EdDSA");
    assert_eq!(k.public_key.len(), 32);
}

async fn rotating_the_signing_key_retires_the_active_one(store: Arc<dyn Store>) {
    let first = SigningKeyRecord::generate_ed25519(T0).expect("key");
    store
        .insert_signing_key_if_none_active(&first)
        .await
        .expect("insert");
    let mut second = SigningKeyRecord::generate_ed25519(Timestamp(T0.0 + 1)).expect("key");
    let at = Timestamp(T0.0 + 5000);
    // A key in the next stage: the active one retires when it activates.
    second.activates_at = at;
    store.rotate_signing_key(&second).await.expect("rotate");
    let keys = store.find_signing_keys().await.expect("keys");
    assert_eq!(keys.len(), 2);
    let old = keys.iter().find(|k| k.kid == first.kid).expect("old key kept");
    assert!(!old.active);
    assert_eq!(old.retired_at, Some(at));
    let new = keys.iter().find(|k| k.kid == second.kid).expect("new key");
    assert!(new.active);
    assert_eq!(new.retired_at, None);
    assert_eq!(new.activates_at, at);
    assert_eq!(old.activates_at, first.created_at);
}

/// The key table as (kid, active, activates_at, retired_at, revoked_at).
async fn key_table(store: &Arc<dyn Store>) -> Vec<(String, bool, i64, Option<i64>, Option<i64>)> {
    store
        .find_signing_keys()
        .await
        .expect("keys")
        .into_iter()
        .map(|k| {
            (
                k.kid,
                k.active,
                k.activates_at.0,
                k.retired_at.map(|t| t.0),
                k.revoked_at.map(|t| t.0),
            )
        })
        .collect()
}

/// A key signing since T0 and one in the next stage from T0 + 10 s.
async fn staged_keys(store: &Arc<dyn Store>) -> (SigningKeyRecord, SigningKeyRecord) {
    let first = SigningKeyRecord::generate_ed25519(T0).expect("key");
    store
        .insert_signing_key_if_none_active(&first)
        .await
        .expect("insert");
    let mut next = SigningKeyRecord::generate_ed25519(Timestamp(T0.0 + 1)).expect("key");
    next.activates_at = Timestamp(T0.0 + 10_000);
    store.rotate_signing_key(&next).await.expect("rotate");
    (first, next)
}

async fn revoking_a_signing_key_applies_its_follow_up_in_one_go(store: Arc<dyn Store>) {
    let (first, next) = staged_keys(&store).await;
    let now = Timestamp(T0.0 + 2_000);
    let promote = KeyRevocation {
        kid: first.kid.clone(),
        now,
        then: AfterKeyRevocation::Promote(next.kid.clone()),
    };
    assert!(store.revoke_signing_key(&promote).await.expect("revoke"));
    assert!(
        !store.revoke_signing_key(&promote).await.expect("revoke"),
        "a second revocation changes nothing"
    );
    assert_eq!(
        key_table(&store).await,
        vec![
            (first.kid.clone(), false, T0.0, Some(T0.0 + 10_000), Some(now.0)),
            (next.kid.clone(), true, now.0, None, None),
        ]
    );
    let mut kids = store.find_signing_kids().await.expect("kids");
    kids.sort();
    let mut expected = vec![(first.kid.clone(), true), (next.kid.clone(), false)];
    expected.sort();
    assert_eq!(kids, expected);

    // The signing key again, with nothing next: a fresh key replaces it, active from now.
    let later = Timestamp(T0.0 + 3_000);
    let mut fresh = SigningKeyRecord::generate_ed25519(later).expect("key");
    fresh.activates_at = later;
    let replace = KeyRevocation {
        kid: next.kid.clone(),
        now: later,
        then: AfterKeyRevocation::Replace(fresh.clone()),
    };
    assert!(store.revoke_signing_key(&replace).await.expect("revoke"));
    let table = key_table(&store).await;
    assert_eq!(table[1], (next.kid.clone(), false, now.0, None, Some(later.0)));
    assert_eq!(table[2], (fresh.kid.clone(), true, later.0, None, None));
    let unknown = KeyRevocation {
        kid: "no-such-kid".into(),
        now: later,
        then: AfterKeyRevocation::Nothing,
    };
    assert!(!store.revoke_signing_key(&unknown).await.expect("revoke"));
}

async fn revoking_a_next_key_restores_the_key_it_was_to_replace(store: Arc<dyn Store>) {
    let (first, next) = staged_keys(&store).await;
    let now = Timestamp(T0.0 + 2_000);
    let restore = KeyRevocation {
        kid: next.kid.clone(),
        now,
        then: AfterKeyRevocation::Restore {
            kid: first.kid.clone(),
            active: true,
            retired_at: None,
        },
    };
    assert!(store.revoke_signing_key(&restore).await.expect("revoke"));
    assert_eq!(
        key_table(&store).await,
        vec![
            (first.kid.clone(), true, T0.0, None, None),
            (next.kid.clone(), false, T0.0 + 10_000, None, Some(now.0)),
        ]
    );
    // The one-active-key rule still holds: a first key cannot be added beside it.
    let another = SigningKeyRecord::generate_ed25519(now).expect("key");
    store
        .insert_signing_key_if_none_active(&another)
        .await
        .expect("insert");
    assert_eq!(key_table(&store).await.len(), 2);
}

async fn a_private_key_is_replaced_only_if_unchanged(store: Arc<dyn Store>) {
    let key = SigningKeyRecord::generate_ed25519(T0).expect("key");
    store
        .insert_signing_key_if_none_active(&key)
        .await
        .expect("insert");
    let sealed = b"TSK\x01 sealed bytes".to_vec();
    assert!(store
        .update_signing_key_private(&key.kid, &key.private_pkcs8, &sealed)
        .await
        .expect("update"));
    assert!(
        !store
            .update_signing_key_private(&key.kid, &key.private_pkcs8, b"other")
            .await
            .expect("update"),
        "compare-and-set: the stored value changed"
    );
    let stored = store.find_signing_keys().await.expect("keys");
    assert_eq!(stored[0].private_pkcs8, sealed);
}

/// Concurrent changes of one key's record are applied one after the other: none is lost.
async fn login_failures_are_counted_atomically(store: Arc<dyn Store>) {
    let email = Email::parse("counted@example.com").expect("email");
    let key = FailureKey::account(&email);
    let count = |previous: Option<LoginFailures>| LoginFailures {
        failures: previous.map_or(0, |p| p.failures) + 1,
        window_started_at: T0,
        locked_until: previous.and_then(|p| p.locked_until),
        locks: 0,
        pending: previous.map_or(0, |p| p.pending) + 2,
        pending_until: Some(Timestamp(T0.0 + 1_000)),
    };
    assert!(store.find_login_failures(&key).await.expect("find").is_none());
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let (store, key) = (Arc::clone(&store), key.clone());
            tokio::spawn(async move { store.change_login_failures(&key, Box::new(count)).await })
        })
        .collect();
    let mut firsts = 0;
    for t in tasks {
        let change = t.await.expect("join").expect("record");
        firsts += usize::from(change.before.is_none());
        assert_eq!(change.after.failures, change.before.map_or(0, |b| b.failures) + 1);
    }
    assert_eq!(firsts, 1, "exactly one change found nothing recorded");
    let record = store
        .find_login_failures(&key)
        .await
        .expect("find")
        .expect("recorded");
    assert_eq!((record.failures, record.pending), (20, 40));
    assert_eq!(record.pending_until, Some(Timestamp(T0.0 + 1_000)));
    // A session's key is a record of its own.
    let session_key = FailureKey::session(SessionId::new());
    assert_ne!(session_key.as_str(), key.as_str());
    assert!(store
        .find_login_failures(&session_key)
        .await
        .expect("find")
        .is_none());
    let locked = LoginFailures {
        failures: 0,
        window_started_at: T0,
        locked_until: Some(Timestamp(T0.0 + 5_000)),
        locks: 1,
        pending: 0,
        pending_until: Some(Timestamp(T0.0 + 4_000)),
    };
    let change = store
        .change_login_failures(&key, Box::new(move |_| locked))
        .await
        .expect("record");
    assert_eq!(change.before, Some(record));
    assert_eq!(change.after, locked);
    assert_eq!(store.find_login_failures(&key).await.expect("find"), Some(locked));
    // Swept only once the window, the lock and the pending attempts all ended before the
    // cut-off.
    assert_eq!(
        store
            .delete_login_failures_ended_before(Timestamp(T0.0 + 5_000))
            .await
            .expect("sweep"),
        0
    );
    let pending_later = LoginFailures {
        pending: 1,
        pending_until: Some(Timestamp(T0.0 + 9_000)),
        ..locked
    };
    store
        .change_login_failures(&key, Box::new(move |_| pending_later))
        .await
        .expect("record");
    assert_eq!(
        store
            .delete_login_failures_ended_before(Timestamp(T0.0 + 5_001))
            .await
            .expect("sweep"),
        0,
        "an attempt still pending keeps its record"
    );
    assert_eq!(
        store
            .delete_login_failures_ended_before(Timestamp(T0.0 + 9_001))
            .await
            .expect("sweep"),
        1
    );
    assert!(store.find_login_failures(&key).await.expect("find").is_none());
}

/// The sweep goes in batches while sessions keep rotating: every rotation succeeds, every
/// ended session goes, no live one does.
async fn sweeping_in_batches_leaves_rotations_alone(store: Arc<dyn Store>) {
    let u = user("sweep@example.com");
    store.insert_user(&u).await.expect("user");
    let ended: Vec<SessionId> = insert_sessions(store.as_ref(), &u, 250)
        .await
        .iter()
        .map(|s| s.id)
        .collect();
    // Revoked long ago (the sweep's cut-off is after it), in one statement.
    store
        .revoke_user_sessions(u.id, None, T0, "logout_all")
        .await
        .expect("revoke");
    let other = user("live@example.com");
    store.insert_user(&other).await.expect("user");
    let live = insert_sessions(store.as_ref(), &other, 4).await;
    let rotating: Vec<_> = live
        .iter()
        .map(|s| {
            let (store, s) = (Arc::clone(&store), s.clone());
            tokio::spawn(async move {
                for generation in 0..25 {
                    let r = rotation(&s, generation, Timestamp(T0.0 + 1000 + generation));
                    assert!(
                        store.rotate(&r).await.expect("rotate"),
                        "rotation {generation} lost"
                    );
                }
            })
        })
        .collect();
    let mut swept = 0;
    loop {
        let n = store
            .delete_sessions_ended_before(Timestamp(T0.0 + 1), 100)
            .await
            .expect("sweep");
        swept += n;
        if n < 100 {
            break;
        }
    }
    for r in rotating {
        r.await.expect("every rotation succeeded");
    }
    assert_eq!(swept, 250);
    for id in ended.iter().step_by(50) {
        assert!(store.find_session(*id).await.expect("find").is_none());
    }
    for s in &live {
        let after = store
            .find_session(s.id)
            .await
            .expect("find")
            .expect("live session kept");
        assert_eq!(after.generation, 25);
    }
}

/// Audit events are swept by age, a batch at a time.
async fn audit_events_are_swept_by_age(store: Arc<dyn Store>) {
    for at in [T0.0, T0.0 + 1, T0.0 + 2, T0.0 + DAY] {
        let e = AuditEvent {
            id: uuid::Uuid::now_v7(),
            event: "login_failed",
            at: Timestamp(at),
            user_id: None,
            session_id: None,
            ip: None,
            user_agent: None,
            detail: None,
        };
        store.insert_audit_event(&e).await.expect("audit");
    }
    let before = Timestamp(T0.0 + 3);
    assert_eq!(
        store.delete_audit_events_before(before, 2).await.expect("sweep"),
        2
    );
    assert_eq!(
        store.delete_audit_events_before(before, 2).await.expect("sweep"),
        1
    );
    assert_eq!(
        store.delete_audit_events_before(before, 2).await.expect("sweep"),
        0
    );
    assert_eq!(
        store
            .delete_audit_events_before(Timestamp(T0.0 + DAY + 1), 2)
            .await
            .expect("sweep"),
        1,
        "the newer event was kept until it aged too"
    );
}

async fn audit_events_and_ping(store: Arc<dyn Store>) {
    store.ping().await.expect("ping");
    let e = AuditEvent {
        id: uuid::Uuid::now_v7(),
        event: "refresh_token_reused",
        at: T0,
        user_id: Some(UserId::new()),
        session_id: Some(SessionId::new()),
        ip: Some("10.0.0.1".into()),
        user_agent: Some("ua".into()),
        detail: None,
    };
    store.insert_audit_event(&e).await.expect("audit");
}

async fn accounts_are_found_paged_and_have_their_roles_replaced(store: Arc<dyn Store>) {
    let mut emails = Vec::new();
    for i in 0..5 {
        let u = user(&format!("user{i}@example.com"));
        store.insert_user(&u).await.expect("insert");
        emails.push(u.email.clone());
    }
    let account = store
        .find_account(&emails[2])
        .await
        .expect("find")
        .expect("present");
    assert_eq!(account.user.email, emails[2]);
    assert_eq!(account.disabled_at, None);
    let nobody = Email::parse("nobody@example.com").expect("email");
    assert!(store.find_account(&nobody).await.expect("find").is_none());

    let first = store.find_accounts(None, 2).await.expect("page");
    let firsts: Vec<_> = first.iter().map(|a| a.user.email.clone()).collect();
    assert_eq!(firsts, emails[..2].to_vec());
    let rest = store.find_accounts(Some(&emails[1]), 10).await.expect("page");
    let rests: Vec<_> = rest.iter().map(|a| a.user.email.clone()).collect();
    assert_eq!(rests, emails[2..].to_vec());

    let roles = vec!["admin".to_string(), "ops".to_string()];
    assert!(store
        .update_user_roles(account.user.id, &roles)
        .await
        .expect("roles"));
    let found = store
        .find_user_by_email(&emails[2])
        .await
        .expect("find")
        .expect("present");
    assert_eq!(found.roles, roles);
    assert!(!store
        .update_user_roles(UserId::new(), &roles)
        .await
        .expect("roles"));
}

async fn a_disabled_user_gets_no_session_until_enabled(store: Arc<dyn Store>) {
    let (u, live, live_first) = seeded(store.as_ref()).await;
    assert_eq!(store.disable_user(u.id, T0).await.expect("disable"), 1);
    let after = store.find_session(live.id).await.expect("find").expect("present");
    assert_eq!(after.revoked_at, Some(T0));
    assert_eq!(after.revoked_reason.as_deref(), Some("user_disabled"));
    assert!(store
        .rotate_current(&one_step(live_first, Timestamp(T0.0 + 1), None))
        .await
        .expect("rotate")
        .is_none());
    let account = store
        .find_account(&u.email)
        .await
        .expect("find")
        .expect("present");
    assert_eq!(account.disabled_at, Some(T0));

    let refused = session(&u, T0);
    assert!(!store.insert_session(&refused, &hash(), 0).await.expect("insert"));
    assert!(store.find_session(refused.id).await.expect("find").is_none());
    // Disabling again keeps the first time; enabling lets sessions in again.
    assert_eq!(
        store
            .disable_user(u.id, Timestamp(T0.0 + 5))
            .await
            .expect("disable"),
        0
    );
    let account = store
        .find_account(&u.email)
        .await
        .expect("find")
        .expect("present");
    assert_eq!(account.disabled_at, Some(T0));
    assert!(store.enable_user(u.id).await.expect("enable"));
    assert!(!store.enable_user(u.id).await.expect("enable"));
    // Under the credential epoch as it is now: a login that read the user before the disable
    // does not get in after the enable.
    assert!(!store
        .insert_session(&session(&u, T0), &hash(), 0)
        .await
        .expect("insert"));
    let epoch = epoch_of(store.as_ref(), &u).await;
    assert!(epoch > 0, "a disable moves the credential epoch");
    assert!(store
        .insert_session(&session(&u, T0), &hash(), epoch)
        .await
        .expect("insert"));
}

async fn a_session_insert_racing_a_disable_never_outlives_it(store: Arc<dyn Store>) {
    for _ in 0..10 {
        let u = user(&format!("{}@example.com", uuid::Uuid::new_v4().simple()));
        store.insert_user(&u).await.expect("insert user");
        let inserting: Vec<_> = (0..8)
            .map(|_| {
                let (store, s) = (Arc::clone(&store), session(&u, T0));
                tokio::spawn(async move {
                    let inserted = store.insert_session(&s, &hash(), 0).await.expect("insert");
                    (s.id, inserted)
                })
            })
            .collect();
        let disabling = {
            let store = Arc::clone(&store);
            tokio::spawn(async move { store.disable_user(u.id, Timestamp(T0.0 + 1)).await })
        };
        disabling.await.expect("join").expect("disable");
        for task in inserting {
            let (id, inserted) = task.await.expect("join");
            let found = store.find_session(id).await.expect("find");
            match found {
                Some(s) => {
                    assert!(inserted);
                    assert!(s.revoked_at.is_some(), "a session outlived the disable");
                }
                None => assert!(!inserted),
            }
        }
        assert!(live_ids(store.as_ref(), u.id, T0).await.is_empty());
    }
}

async fn imported_users_are_inserted_once(store: Arc<dyn Store>) {
    let taken = user("taken@example.com");
    store.insert_user(&taken).await.expect("insert");
    let batch: Vec<_> = [
        "a@example.com",
        "taken@example.com",
        "b@example.com",
        "a@example.com",
    ]
    .iter()
    .map(|e| user(e))
    .collect();
    assert_eq!(store.insert_users_if_absent(&batch).await.expect("import"), 2);
    assert_eq!(store.insert_users_if_absent(&batch).await.expect("import"), 0);
    assert_eq!(store.insert_users_if_absent(&[]).await.expect("import"), 0);
    let kept = store
        .find_user_by_email(&taken.email)
        .await
        .expect("find")
        .expect("present");
    assert_eq!(kept.id, taken.id, "a present user is left as it was");
    let a = store
        .find_user_by_email(&batch[0].email)
        .await
        .expect("find")
        .expect("present");
    assert_eq!(
        (a.id, a.roles, a.created_at),
        (batch[0].id, batch[0].roles.clone(), T0)
    );
}

async fn a_password_hash_is_upgraded_only_if_unchanged(store: Arc<dyn Store>) {
    let u = user("upgrade@example.com");
    store.insert_user(&u).await.expect("insert");
    let new = PasswordHashString("$argon2id$v=19$m=19456,t=2,p=1$bmV3$bmV3".into());
    let other = PasswordHashString("$argon2id$v=19$m=19456,t=2,p=1$b3RoZXI$b3RoZXI".into());
    assert!(store
        .upgrade_password_hash(u.id, &u.password_hash, &new)
        .await
        .expect("upgrade"));
    // A second upgrade from the old hash (a racing login) changes nothing.
    assert!(!store
        .upgrade_password_hash(u.id, &u.password_hash, &other)
        .await
        .expect("upgrade"));
    let found = store
        .find_user_by_email(&u.email)
        .await
        .expect("find")
        .expect("present");
    assert_eq!(found.password_hash, new);
}

async fn epoch_of(store: &dyn Store, u: &UserRecord) -> i64 {
    store
        .find_user_by_email(&u.email)
        .await
        .expect("find")
        .expect("present")
        .credential_epoch
}

async fn a_password_change_moves_the_epoch_and_ends_the_other_sessions(store: Arc<dyn Store>) {
    let u = user("change@example.com");
    store.insert_user(&u).await.expect("insert");
    let sessions = insert_sessions(store.as_ref(), &u, 3).await;
    let new = PasswordHashString("$argon2id$v=19$m=19456,t=2,p=1$bmV3$bmV3".into());
    // An upgrade of an imported hash keeps the password, and the epoch.
    let upgraded = PasswordHashString("$argon2id$v=19$m=19456,t=2,p=1$dXA$dXA".into());
    assert!(store
        .upgrade_password_hash(u.id, &u.password_hash, &upgraded)
        .await
        .expect("upgrade"));
    assert_eq!(epoch_of(store.as_ref(), &u).await, 0);
    // From a hash that is no longer the user's: nothing changes.
    assert_eq!(
        store
            .change_password_hash(u.id, &u.password_hash, &new, None, T0, "password_changed")
            .await
            .expect("change"),
        None
    );
    assert_eq!(epoch_of(store.as_ref(), &u).await, 0);
    assert_eq!(
        store
            .change_password_hash(
                u.id,
                &upgraded,
                &new,
                Some(sessions[0].id),
                Timestamp(T0.0 + 1),
                "password_changed"
            )
            .await
            .expect("change"),
        Some(2)
    );
    assert_eq!(epoch_of(store.as_ref(), &u).await, 1);
    assert_eq!(live_ids(store.as_ref(), u.id, T0).await, vec![sessions[0].id]);
    let ended = store
        .find_session(sessions[1].id)
        .await
        .expect("find")
        .expect("kept");
    assert_eq!(ended.revoked_reason.as_deref(), Some("password_changed"));
    // A login that read the user before the change writes no session after it.
    assert!(!store
        .insert_session(&session(&u, T0), &hash(), 0)
        .await
        .expect("insert"));
    assert!(store
        .insert_session(&session(&u, T0), &hash(), 1)
        .await
        .expect("insert"));
}

async fn a_session_insert_racing_a_password_change_never_outlives_it(store: Arc<dyn Store>) {
    let new = PasswordHashString("$argon2id$v=19$m=19456,t=2,p=1$bmV3$bmV3".into());
    for _ in 0..10 {
        let u = user(&format!("{}@example.com", uuid::Uuid::new_v4().simple()));
        store.insert_user(&u).await.expect("insert user");
        // Logins that verified the old password (epoch 0) write their sessions while the
        // password changes.
        let inserting: Vec<_> = (0..8)
            .map(|_| {
                let (store, s) = (Arc::clone(&store), session(&u, T0));
                tokio::spawn(async move {
                    let inserted = store.insert_session(&s, &hash(), 0).await.expect("insert");
                    (s.id, inserted)
                })
            })
            .collect();
        let changing = {
            let (store, old, new) = (Arc::clone(&store), u.password_hash.clone(), new.clone());
            tokio::spawn(async move {
                store
                    .change_password_hash(u.id, &old, &new, None, Timestamp(T0.0 + 1), "password_changed")
                    .await
            })
        };
        assert!(changing.await.expect("join").expect("change").is_some());
        for task in inserting {
            let (id, inserted) = task.await.expect("join");
            match store.find_session(id).await.expect("find") {
                Some(s) => {
                    assert!(inserted);
                    assert!(s.revoked_at.is_some(), "a session outlived the password change");
                }
                None => assert!(!inserted),
            }
        }
        assert!(live_ids(store.as_ref(), u.id, T0).await.is_empty());
    }
}

async fn audit_events_are_read_newest_first_by_filter(store: Arc<dyn Store>) {
    let (u, s, _) = seeded(store.as_ref()).await;
    let other = UserId::new();
    let event = |kind: &'static str, user: UserId, at: i64| AuditEvent {
        id: uuid::Uuid::now_v7(),
        event: kind,
        at: Timestamp(T0.0 + at),
        user_id: Some(user),
        session_id: Some(s.id),
        ip: Some("10.0.0.1".into()),
        user_agent: Some("ua".into()),
        detail: Some("d".into()),
    };
    for e in [
        event("login_succeeded", u.id, 1),
        event("login_failed", u.id, 2),
        event("login_succeeded", other, 3),
        event("login_succeeded", u.id, 4),
    ] {
        store.insert_audit_event(&e).await.expect("audit");
    }
    let read = |filter: AuditFilter| {
        let store = Arc::clone(&store);
        async move {
            store
                .find_audit_events(&filter)
                .await
                .expect("read")
                .iter()
                .map(|e| (e.event.clone(), e.at.0 - T0.0))
                .collect::<Vec<_>>()
        }
    };
    let all = AuditFilter {
        limit: 10,
        ..AuditFilter::default()
    };
    assert_eq!(
        read(all.clone()).await.iter().map(|e| e.1).collect::<Vec<_>>(),
        [4, 3, 2, 1]
    );
    let mine = AuditFilter {
        user: Some(u.id),
        ..all.clone()
    };
    assert_eq!(
        read(mine.clone()).await.iter().map(|e| e.1).collect::<Vec<_>>(),
        [4, 2, 1]
    );
    let logins = AuditFilter {
        event: Some("login_succeeded".into()),
        since: Some(Timestamp(T0.0 + 2)),
        ..mine.clone()
    };
    assert_eq!(read(logins).await, [("login_succeeded".to_string(), 4)]);
    assert_eq!(read(AuditFilter { limit: 1, ..mine }).await.len(), 1);
    let found = store.find_audit_events(&all).await.expect("read");
    assert_eq!(
        found[0].email.as_deref(),
        Some(u.email.as_str()),
        "joined to its user"
    );
    assert_eq!(found[1].email, None, "a user that does not exist");
    assert_eq!(found[0].session_id, Some(s.id));
}

fn new_alert(key: &str, at: Timestamp) -> NewAlert {
    let id = uuid::Uuid::now_v7();
    NewAlert {
        id,
        event: "refresh_token_reused".into(),
        dedup_key: key.into(),
        payload: format!(r#"{{"id":"{id}"}}"#),
        created_at: at,
    }
}

async fn alerts_are_queued_once_per_dedup_key(store: Arc<dyn Store>) {
    let first = new_alert("k1", T0);
    assert!(store.insert_alert(&first).await.expect("insert"));
    // Same key: coalesced into the first, whatever its id.
    assert!(!store.insert_alert(&new_alert("k1", T0)).await.expect("insert"));
    assert!(store.insert_alert(&new_alert("k2", T0)).await.expect("insert"));
    let all = store.find_alerts(false, 10).await.expect("find");
    assert_eq!(all.len(), 2);
    let found = all.iter().find(|a| a.id == first.id).expect("first kept");
    assert_eq!(found.payload, first.payload);
    assert_eq!(found.attempts, 0);
    assert_eq!(found.next_attempt_at, T0);
    assert_eq!(found.delivered_at, None);
}

async fn claimed_alerts_are_leased_rescheduled_and_delivered(store: Arc<dyn Store>) {
    let a = new_alert("a", T0);
    store.insert_alert(&a).await.expect("insert");
    // Not due before its time.
    let early = store
        .claim_alerts("x", Timestamp(T0.0 - 1), T0, 10)
        .await
        .expect("claim");
    assert!(early.is_empty());
    let now = Timestamp(T0.0 + 1000);
    let lease = Timestamp(now.0 + 30_000);
    let claimed = store.claim_alerts("x", now, lease, 10).await.expect("claim");
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].id, a.id);
    assert_eq!(claimed[0].attempts, 1);
    assert_eq!(claimed[0].claimed_until, Some(lease));
    // Leased: nobody else gets it until the lease ends.
    assert!(store
        .claim_alerts("y", now, lease, 10)
        .await
        .expect("claim")
        .is_empty());
    // Only its claimer reschedules it.
    let later = Timestamp(now.0 + 5000);
    assert!(!store
        .reschedule_alert(a.id, "y", later)
        .await
        .expect("reschedule"));
    assert!(store
        .reschedule_alert(a.id, "x", later)
        .await
        .expect("reschedule"));
    assert!(store
        .claim_alerts("y", now, lease, 10)
        .await
        .expect("claim")
        .is_empty());
    let again = store
        .claim_alerts("y", later, Timestamp(later.0 + 30_000), 10)
        .await
        .expect("claim");
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].attempts, 2);
    // A claim whose lease ran out is anyone's (the claimer crashed).
    let expired = Timestamp(later.0 + 30_000);
    let taken = store
        .claim_alerts("z", expired, Timestamp(expired.0 + 30_000), 10)
        .await
        .expect("claim");
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].attempts, 3);
    // The old claimer's answer no longer counts; the current one's does.
    assert!(!store
        .mark_alert_delivered(a.id, "y", expired)
        .await
        .expect("mark"));
    assert!(store
        .mark_alert_delivered(a.id, "z", expired)
        .await
        .expect("mark"));
    assert!(!store
        .mark_alert_delivered(a.id, "z", expired)
        .await
        .expect("mark twice"));
    assert!(store.find_alerts(true, 10).await.expect("find").is_empty());
    let delivered = store.find_alerts(false, 10).await.expect("find");
    assert_eq!(delivered[0].delivered_at, Some(expired));
    // Delivered: never claimed again, and pruned after its retention.
    let far = Timestamp(expired.0 + DAY);
    assert!(store
        .claim_alerts("z", far, Timestamp(far.0 + 1), 10)
        .await
        .expect("claim")
        .is_empty());
    assert_eq!(
        store
            .delete_alerts_delivered_before(expired, 10)
            .await
            .expect("prune"),
        0
    );
    assert_eq!(
        store
            .delete_alerts_delivered_before(far, 10)
            .await
            .expect("prune"),
        1
    );
    assert!(store.find_alerts(false, 10).await.expect("find").is_empty());
}

async fn concurrent_claimers_never_get_the_same_alert(store: Arc<dyn Store>) {
    for i in 0..40 {
        store
            .insert_alert(&new_alert(&format!("c{i}"), T0))
            .await
            .expect("insert");
    }
    let now = Timestamp(T0.0 + 1000);
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let claimer = format!("claimer-{i}");
                let mut mine = Vec::new();
                loop {
                    let got = store
                        .claim_alerts(&claimer, now, Timestamp(now.0 + 30_000), 3)
                        .await
                        .expect("claim must not error under contention");
                    if got.is_empty() {
                        return mine;
                    }
                    mine.extend(got.into_iter().map(|a| a.id));
                }
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("join"));
    }
    let claimed = all.len();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), claimed, "an alert was claimed twice");
    assert_eq!(claimed, 40);
}

async fn known_devices_come_from_sessions_and_successful_logins(store: Arc<dyn Store>) {
    let (u, s, _) = seeded(store.as_ref()).await;
    let (other, _, _) = seeded(store.as_ref()).await;
    let event = |name: &'static str, user: UserId, agent: &str, ip: &str| AuditEvent {
        id: uuid::Uuid::now_v7(),
        event: name,
        at: T0,
        user_id: Some(user),
        session_id: None,
        ip: Some(ip.into()),
        user_agent: Some(agent.into()),
        detail: None,
    };
    for e in [
        event("login_succeeded", u.id, "laptop/1", "198.51.100.4"),
        event("login_succeeded", u.id, "laptop/1", "198.51.100.4"),
        // Not a successful login of this user: not a known device.
        event("login_failed", u.id, "thief/1", "203.0.113.9"),
        event("login_succeeded", other.id, "theirs/1", "192.0.2.1"),
    ] {
        store.insert_audit_event(&e).await.expect("audit");
    }
    store.revoke_session(s.id, T0, "logout").await.expect("revoke");
    let mut known = store.find_known_devices(u.id, 100).await.expect("known devices");
    known.sort();
    assert_eq!(
        known,
        [
            (Some("conformance/1.0".to_owned()), Some("127.0.0.1".to_owned())),
            (Some("laptop/1".to_owned()), Some("198.51.100.4".to_owned())),
        ]
    );
    assert_eq!(store.find_known_devices(u.id, 1).await.expect("limited").len(), 1);
}

async fn sqlite_store() -> (Arc<dyn Store>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    (store::connect(&url, 8).await.expect("sqlite store"), dir)
}

/// Declares every case once; each becomes a test per backend.
macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    let (store, _dir) = super::sqlite_store().await;
                    super::$case(store).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    let Some(db) = super::postgres_support::TestDatabase::create(stringify!($case)).await else {
                        return;
                    };
                    let store = tessera::store::connect(&db.url, 8).await.expect("postgres store");
                    super::$case(store).await;
                    db.drop_database().await;
                }
            )*
        }
    };
}

conformance!(
    users_are_unique_by_email,
    sessions_round_trip,
    rotation_advances_the_chain_once,
    concurrent_rotations_have_one_winner,
    the_current_token_rotates_in_one_step,
    one_step_rotation_leaves_every_other_case_to_the_slow_path,
    concurrent_one_step_rotations_have_one_winner,
    a_rotation_racing_a_revocation_never_outlives_it,
    revocations_are_logged_however_they_are_made,
    revoked_or_ended_sessions_do_not_rotate,
    revocation_clears_the_sealed_successor,
    user_sessions_revoke_all_or_others,
    live_sessions_are_listed_most_recent_first,
    sessions_over_the_limit_are_revoked_least_recent_first,
    ended_sessions_are_deleted_with_their_tokens,
    idle_sessions_are_deleted_by_walking_every_session,
    one_active_signing_key_even_when_racing,
    rotating_the_signing_key_retires_the_active_one,
    revoking_a_signing_key_applies_its_follow_up_in_one_go,
    revoking_a_next_key_restores_the_key_it_was_to_replace,
    a_private_key_is_replaced_only_if_unchanged,
    login_failures_are_counted_atomically,
    a_password_change_moves_the_epoch_and_ends_the_other_sessions,
    a_session_insert_racing_a_password_change_never_outlives_it,
    audit_events_are_swept_by_age,
    sweeping_in_batches_leaves_rotations_alone,
    audit_events_and_ping,
    accounts_are_found_paged_and_have_their_roles_replaced,
    a_disabled_user_gets_no_session_until_enabled,
    a_session_insert_racing_a_disable_never_outlives_it,
    imported_users_are_inserted_once,
    a_password_hash_is_upgraded_only_if_unchanged,
    audit_events_are_read_newest_first_by_filter,
    alerts_are_queued_once_per_dedup_key,
    claimed_alerts_are_leased_rescheduled_and_delivered,
    concurrent_claimers_never_get_the_same_alert,
    known_devices_come_from_sessions_and_successful_logins,
);

/// PostgreSQL's group commit: rotations sent together in one statement are decided exactly
/// as when they go alone.
mod postgres_batches {
    use super::*;
    use tessera::store::postgres::PostgresStore;

    async fn store(test: &str) -> Option<(Arc<PostgresStore>, postgres_support::TestDatabase)> {
        let db = postgres_support::TestDatabase::create(test).await?;
        let store = PostgresStore::connect(&db.url, 8).await.expect("postgres store");
        Some((Arc::new(store), db))
    }

    #[tokio::test]
    async fn two_rotations_of_one_session_in_one_batch_yield_one_successor() {
        let Some((store, db)) = store("batch_same_session").await else {
            return;
        };
        let (_, s, h) = seeded(store.as_ref()).await;
        let (_, other, other_h) = seeded(store.as_ref()).await;
        let now = Timestamp(T0.0 + 1000);
        let batch = [
            one_step(h, now, None),
            one_step(other_h, now, None),
            one_step(h, now, None),
        ];
        let results = store.rotate_together(&batch).await.expect("batch");
        let winners: Vec<_> = [0, 2].iter().filter(|&&i| results[i].is_some()).collect();
        assert_eq!(winners.len(), 1, "one successor for the session rotated twice");
        assert_eq!(results[1].as_ref().map(|(s, _)| s.id), Some(other.id));
        let after = store.find_session(s.id).await.expect("find").expect("present");
        assert_eq!(after.generation, 1);
        // The winner's successor is the one recorded, and it rotates next.
        let winner = successor(&batch[*winners[0]]);
        assert_eq!(
            store
                .find_refresh_token(&winner)
                .await
                .expect("find")
                .map(|f| f.generation),
            Some(1)
        );
        let loser = successor(&batch[if *winners[0] == 0 { 2 } else { 0 }]);
        assert!(store.find_refresh_token(&loser).await.expect("find").is_none());
        assert!(store
            .rotate_current(&one_step(winner, now, None))
            .await
            .expect("rotate")
            .is_some());
        db.drop_database().await;
    }

    #[tokio::test]
    async fn an_ancestor_beside_the_current_token_in_one_batch_does_not_rotate() {
        let Some((store, db)) = store("batch_ancestor").await else {
            return;
        };
        let (_, s, first) = seeded(store.as_ref()).await;
        let now = Timestamp(T0.0 + 1000);
        let step = one_step(first, now, None);
        store
            .rotate_current(&step)
            .await
            .expect("rotate")
            .expect("rotated");
        // The old token first, the current one second: only the current one rotates.
        let results = store
            .rotate_together(&[one_step(first, now, None), one_step(successor(&step), now, None)])
            .await
            .expect("batch");
        assert!(results[0].is_none());
        assert_eq!(results[1].as_ref().map(|(s, _)| s.generation), Some(2));
        assert_eq!(
            store
                .find_session(s.id)
                .await
                .expect("find")
                .map(|s| s.generation),
            Some(2)
        );
        db.drop_database().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_batch_racing_revocations_never_outlives_them() {
        let Some((store, db)) = store("batch_revocation").await else {
            return;
        };
        let mut sessions = Vec::new();
        let mut batch = Vec::new();
        for _ in 0..40 {
            let (_, s, h) = seeded(store.as_ref()).await;
            batch.push(one_step(h, Timestamp(T0.0 + 1000), None));
            sessions.push(s.id);
        }
        let rotating = {
            let (store, batch) = (Arc::clone(&store), batch.clone());
            tokio::spawn(async move { store.rotate_together(&batch).await })
        };
        let revoking: Vec<_> = sessions
            .iter()
            .map(|&id| {
                let store = Arc::clone(&store);
                tokio::spawn(async move { store.revoke_session(id, Timestamp(T0.0 + 1000), "logout").await })
            })
            .collect();
        rotating.await.expect("join").expect("batch");
        for r in revoking {
            assert!(
                r.await.expect("join").expect("revoke"),
                "every revocation applied"
            );
        }
        for (id, step) in sessions.iter().zip(&batch) {
            let after = store.find_session(*id).await.expect("find").expect("present");
            assert!(after.revoked_at.is_some());
            let next = one_step(successor(step), Timestamp(T0.0 + 2000), None);
            assert!(store.rotate_current(&next).await.expect("rotate").is_none());
        }
        db.drop_database().await;
    }
}
