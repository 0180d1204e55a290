//! PostgreSQL's group commit: rotations sent together in one statement are decided exactly
//! as when they go alone.

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
