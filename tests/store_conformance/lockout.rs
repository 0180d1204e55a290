//! Failed and pending logins: changes applied one after the other, the sweep.

use super::*;

/// Concurrent changes of one key's record are applied one after the other: none is lost.
pub(crate) async fn login_failures_are_counted_atomically(store: Arc<dyn Store>) {
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
