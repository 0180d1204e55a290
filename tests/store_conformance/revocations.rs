//! The revocation log, whoever revokes.

use super::*;

/// Every way of revoking reaches the revocation log; rotations do not.
pub(crate) async fn revocations_are_logged_however_they_are_made(store: Arc<dyn Store>) {
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
