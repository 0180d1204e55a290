//! PostgreSQL's group commit: rotations sent together in one statement are decided exactly
//! as when they go alone.

use super::*;
use sqlx::Connection;
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

/// Two instances' batches over the same sessions, sent in opposite orders at once: each
/// session rotates once per round, and PostgreSQL never has a lock cycle to break (each batch
/// locks its rows in session-id order, whatever order its rotations arrived in).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batches_of_two_instances_in_opposite_orders_never_deadlock() {
    let Some((first, db)) = store("batch_opposite_orders").await else {
        return;
    };
    let second = Arc::new(PostgresStore::connect(&db.url, 8).await.expect("second instance"));
    let mut current = Vec::new();
    for _ in 0..40 {
        current.push(seeded(first.as_ref()).await.2);
    }
    for round in 1..=25 {
        let now = Timestamp(T0.0 + round * 1000);
        let forward: Vec<_> = current.iter().map(|&k| one_step(k, now, None)).collect();
        let backward: Vec<_> = current.iter().rev().map(|&k| one_step(k, now, None)).collect();
        let (a, b) = {
            let (first, second) = (Arc::clone(&first), Arc::clone(&second));
            let (forward, backward) = (forward.clone(), backward.clone());
            tokio::join!(
                tokio::spawn(async move { first.rotate_together(&forward).await }),
                tokio::spawn(async move { second.rotate_together(&backward).await }),
            )
        };
        let a = a.expect("join").expect("first instance's batch");
        let b = b.expect("join").expect("second instance's batch");
        let n = current.len();
        for i in 0..n {
            let (won_a, won_b) = (a[i].is_some(), b[n - 1 - i].is_some());
            assert!(
                won_a != won_b,
                "round {round}, session {i}: exactly one instance rotates it"
            );
            current[i] = successor(if won_a { &forward[i] } else { &backward[n - 1 - i] });
        }
    }
    // Statistics reach pg_stat_database when a backend ends: close both instances first.
    drop((first, second));
    wait_for_no_connections(&db).await;
    let deadlocks = db
        .admin_ints(&format!(
            "SELECT deadlocks::int4 FROM pg_stat_database WHERE datname = '{}'",
            db.name
        ))
        .await;
    assert_eq!(deadlocks, vec![0], "no lock cycle for PostgreSQL to break");
    db.drop_database().await;
}

/// Waits (up to 5 s) until no backend is connected to the test database, so that every
/// backend has written its statistics.
async fn wait_for_no_connections(db: &postgres_support::TestDatabase) {
    for _ in 0..50 {
        let connected = db
            .admin_count(&format!(
                "SELECT 1 FROM pg_stat_activity WHERE datname = '{}'",
                db.name
            ))
            .await;
        if connected == 0 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// How often `sessions` was read by a sequential scan and through an index, so far.
async fn session_scans(db: &postgres_support::TestDatabase) -> (i64, i64) {
    let mut conn = sqlx::PgConnection::connect(&db.url).await.expect("connect");
    let scans = sqlx::query_as(
        "SELECT seq_scan, coalesce(idx_scan, 0) FROM pg_stat_user_tables WHERE relname = 'sessions'",
    )
    .fetch_one(&mut conn)
    .await
    .expect("statistics");
    let _ = conn.close().await;
    scans
}

/// A batch reaches its sessions through the primary key whatever the table's size and
/// statistics: a sequential scan would cost every batch the whole table (a plan cached
/// while the table was small made refresh fall by a third within one benchmark run) and
/// would lock rows in the heap's order, which is what keeps batches from deadlocking.
#[tokio::test]
async fn batches_read_sessions_by_primary_key_at_any_table_size() {
    let Some((store, db)) = store("batch_plan").await else {
        return;
    };
    let (user, _, _) = seeded(store.as_ref()).await;
    let mut current = Vec::new();
    for _ in 0..16 {
        current.push(seeded(store.as_ref()).await.2);
    }
    drop(store);
    // Thousands of other sessions, with no statistics gathered on them yet.
    let mut conn = sqlx::PgConnection::connect(&db.url).await.expect("connect");
    sqlx::query(
        "INSERT INTO sessions (id, user_id, created_at, last_used_at, absolute_expires_at, \
         refresh_expires_at) SELECT gen_random_uuid(), $1, 0, 0, 0, 0 FROM generate_series(1, 3000)",
    )
    .bind(user.id.0)
    .execute(&mut conn)
    .await
    .expect("other sessions");
    let _ = conn.close().await;
    wait_for_no_connections(&db).await;
    let (seq_before, idx_before) = session_scans(&db).await;

    let store = PostgresStore::connect(&db.url, 8).await.expect("store");
    // More statements than PostgreSQL plans for their parameters before it caches a plan.
    for round in 1..=12 {
        let now = Timestamp(T0.0 + round * 1000);
        let batch: Vec<_> = current.iter().map(|&k| one_step(k, now, None)).collect();
        let results = store.rotate_together(&batch).await.expect("batch");
        assert!(
            results.iter().all(Option::is_some),
            "round {round}: every rotation won"
        );
        current = batch.iter().map(successor).collect();
    }
    drop(store);
    wait_for_no_connections(&db).await;
    let (seq_after, idx_after) = session_scans(&db).await;
    assert_eq!(seq_after - seq_before, 0, "no sequential scan of sessions");
    assert!(idx_after > idx_before, "sessions read through an index");
    db.drop_database().await;
}
