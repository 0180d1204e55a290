//! Sessions: round trip, listing, revocation by rule, the session cap, the sweeps, known devices.

use super::*;

pub(crate) async fn sessions_round_trip(store: Arc<dyn Store>) {
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

pub(crate) async fn user_sessions_revoke_all_or_others(store: Arc<dyn Store>) {
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

pub(crate) async fn live_sessions_are_listed_most_recent_first(store: Arc<dyn Store>) {
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

pub(crate) async fn sessions_over_the_limit_are_revoked_least_recent_first(store: Arc<dyn Store>) {
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

pub(crate) async fn ended_sessions_are_deleted_with_their_tokens(store: Arc<dyn Store>) {
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

pub(crate) async fn idle_sessions_are_deleted_by_walking_every_session(store: Arc<dyn Store>) {
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

/// The sweep goes in batches while sessions keep rotating: every rotation succeeds, every
/// ended session goes, no live one does.
pub(crate) async fn sweeping_in_batches_leaves_rotations_alone(store: Arc<dyn Store>) {
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

pub(crate) async fn known_devices_come_from_sessions_and_successful_logins(store: Arc<dyn Store>) {
    let (u, s, _) = seeded(store.as_ref()).await;
    let (other, _, _) = seeded(store.as_ref()).await;
    let event = |name: AuditKind, user: UserId, agent: &str, ip: &str| AuditEvent {
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
        event(AuditKind::LoginSucceeded, u.id, "laptop/1", "198.51.100.4"),
        event(AuditKind::LoginSucceeded, u.id, "laptop/1", "198.51.100.4"),
        // Not a successful login of this user: not a known device.
        event(AuditKind::LoginFailed, u.id, "thief/1", "203.0.113.9"),
        event(AuditKind::LoginSucceeded, other.id, "theirs/1", "192.0.2.1"),
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
