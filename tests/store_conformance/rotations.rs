//! Refresh-token rotation: one winner, the one-step fast path, races with revocation.

use super::*;

pub(crate) async fn rotation_advances_the_chain_once(store: Arc<dyn Store>) {
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

pub(crate) async fn concurrent_rotations_have_one_winner(store: Arc<dyn Store>) {
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

pub(crate) async fn the_current_token_rotates_in_one_step(store: Arc<dyn Store>) {
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

pub(crate) async fn one_step_rotation_leaves_every_other_case_to_the_slow_path(store: Arc<dyn Store>) {
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
pub(crate) async fn concurrent_one_step_rotations_have_one_winner(store: Arc<dyn Store>) {
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
pub(crate) async fn a_rotation_racing_a_revocation_never_outlives_it(store: Arc<dyn Store>) {
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

pub(crate) async fn revoked_or_ended_sessions_do_not_rotate(store: Arc<dyn Store>) {
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

pub(crate) async fn revocation_clears_the_sealed_successor(store: Arc<dyn Store>) {
    let (_, s, _) = seeded(store.as_ref()).await;
    assert!(store.rotate(&rotation(&s, 0, T0)).await.expect("rotate"));
    store
        .revoke_session(s.id, T0, "refresh_token_reused")
        .await
        .expect("revoke");
    let after = store.find_session(s.id).await.expect("find").expect("present");
    assert_eq!(after.sealed_current, None);
}
