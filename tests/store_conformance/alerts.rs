//! The alert outbox: dedup, leases, claims.

use super::*;

pub(crate) fn new_alert(key: &str, at: Timestamp) -> NewAlert {
    let id = uuid::Uuid::now_v7();
    NewAlert {
        id,
        event: "refresh_token_reused".into(),
        dedup_key: key.into(),
        payload: format!(r#"{{"id":"{id}"}}"#),
        created_at: at,
    }
}

pub(crate) async fn alerts_are_queued_once_per_dedup_key(store: Arc<dyn Store>) {
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

pub(crate) async fn claimed_alerts_are_leased_rescheduled_and_delivered(store: Arc<dyn Store>) {
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

pub(crate) async fn concurrent_claimers_never_get_the_same_alert(store: Arc<dyn Store>) {
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
