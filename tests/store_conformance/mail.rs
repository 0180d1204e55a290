//! The mail outbox: queuing, leases, claims, the outcomes of an attempt, pruning.

use super::*;

pub(crate) fn new_mail(to: &str, at: Timestamp, expires_at: Option<Timestamp>) -> NewMail {
    NewMail {
        id: uuid::Uuid::now_v7(),
        recipient: to.into(),
        kind: "password_reset".into(),
        payload: r#"{"kind":"password_reset","token":"tok","expires_in_minutes":30}"#.into(),
        created_at: at,
        expires_at,
    }
}

pub(crate) async fn mails_are_queued_claimed_rescheduled_and_sent(store: Arc<dyn Store>) {
    let m = new_mail("a@example.com", T0, Some(Timestamp(T0.0 + 60_000)));
    store.insert_mail(&m).await.expect("insert");
    let found = store.find_mail(m.id).await.expect("find").expect("queued");
    assert_eq!(found.recipient, m.recipient);
    assert_eq!(found.kind, m.kind);
    assert_eq!(found.payload, m.payload);
    assert_eq!(found.expires_at, m.expires_at);
    assert_eq!((found.attempts, found.next_attempt_at), (0, T0));
    assert!(found.is_pending());
    // Not due before its time.
    assert!(store
        .claim_mails("x", Timestamp(T0.0 - 1), T0, 10)
        .await
        .expect("claim")
        .is_empty());
    let now = Timestamp(T0.0 + 1000);
    let lease = Timestamp(now.0 + 60_000);
    let claimed = store.claim_mails("x", now, lease, 10).await.expect("claim");
    assert_eq!(claimed.len(), 1);
    assert_eq!((claimed[0].id, claimed[0].attempts), (m.id, 1));
    assert_eq!(claimed[0].claimed_until, Some(lease));
    // Leased: nobody else gets it until the lease ends.
    assert!(store
        .claim_mails("y", now, lease, 10)
        .await
        .expect("claim")
        .is_empty());
    // Only its claimer reschedules it, with the error.
    let later = Timestamp(now.0 + 2000);
    assert!(!store
        .reschedule_mail(m.id, "y", later, "nope")
        .await
        .expect("reschedule"));
    assert!(store
        .reschedule_mail(m.id, "x", later, "421 try again later")
        .await
        .expect("reschedule"));
    let waiting = store.find_mail(m.id).await.expect("find").expect("still queued");
    assert_eq!(waiting.next_attempt_at, later);
    assert_eq!(waiting.claimed_until, None);
    assert_eq!(waiting.last_error.as_deref(), Some("421 try again later"));
    assert!(store
        .claim_mails("y", now, lease, 10)
        .await
        .expect("claim")
        .is_empty());
    // Due again: anyone claims it, and a second attempt is counted.
    let again = store
        .claim_mails("y", later, Timestamp(later.0 + 60_000), 10)
        .await
        .expect("claim");
    assert_eq!((again.len(), again[0].attempts), (1, 2));
    // The old claimer's word no longer counts; the new one's does, and erases the payload.
    assert!(!store.mark_mail_failed(m.id, "x", later, "x").await.expect("fail"));
    assert!(store.mark_mail_sent(m.id, "y", later).await.expect("sent"));
    let sent = store.find_mail(m.id).await.expect("find").expect("kept");
    assert_eq!(sent.sent_at, Some(later));
    assert_eq!(sent.payload, "", "a sent mail's token is erased");
    assert_eq!(sent.last_error, None);
    assert!(!sent.is_pending());
    // Sent is final.
    assert!(store
        .claim_mails("z", Timestamp(later.0 + DAY), Timestamp(later.0 + DAY + 1), 10)
        .await
        .expect("claim")
        .is_empty());
    assert!(!store.mark_mail_sent(m.id, "y", later).await.expect("sent"));
}

pub(crate) async fn a_mail_given_up_is_final_and_finished_mails_are_pruned(store: Arc<dyn Store>) {
    let failed = new_mail("a@example.com", T0, None);
    let sent = new_mail("b@example.com", Timestamp(T0.0 + 1), None);
    let pending = new_mail("c@example.com", Timestamp(T0.0 + 2), None);
    for m in [&failed, &sent, &pending] {
        store.insert_mail(m).await.expect("insert");
    }
    let claimed = store
        .claim_mails("x", Timestamp(T0.0 + 10), Timestamp(T0.0 + 60_000), 2)
        .await
        .expect("claim");
    // Oldest due first, at most the limit.
    assert_eq!(
        claimed.iter().map(|m| m.id).collect::<Vec<_>>(),
        vec![failed.id, sent.id]
    );
    assert!(store
        .mark_mail_failed(failed.id, "x", Timestamp(T0.0 + 20), "550 no such user")
        .await
        .expect("fail"));
    assert!(store
        .mark_mail_sent(sent.id, "x", Timestamp(T0.0 + 20))
        .await
        .expect("sent"));
    let gone = store.find_mail(failed.id).await.expect("find").expect("kept");
    assert_eq!(gone.failed_at, Some(Timestamp(T0.0 + 20)));
    assert_eq!(gone.last_error.as_deref(), Some("550 no such user"));
    assert_eq!(gone.payload, "");
    // Given up is final.
    assert!(!store
        .mark_mail_sent(failed.id, "x", Timestamp(T0.0 + 30))
        .await
        .expect("sent"));
    let all = store.find_mails(false, 10).await.expect("list");
    assert_eq!(
        all.iter().map(|m| m.id).collect::<Vec<_>>(),
        vec![pending.id, sent.id, failed.id],
        "newest first"
    );
    let open = store.find_mails(true, 10).await.expect("list");
    assert_eq!(open.iter().map(|m| m.id).collect::<Vec<_>>(), vec![pending.id]);
    // Pruning takes finished mails queued before the bound, never a pending one.
    assert_eq!(
        store
            .delete_mails_finished_before(Timestamp(T0.0 + DAY), 1)
            .await
            .expect("prune"),
        1
    );
    assert_eq!(
        store
            .delete_mails_finished_before(Timestamp(T0.0 + DAY), 10)
            .await
            .expect("prune"),
        1
    );
    let left = store.find_mails(false, 10).await.expect("list");
    assert_eq!(left.iter().map(|m| m.id).collect::<Vec<_>>(), vec![pending.id]);
}

pub(crate) async fn concurrent_mail_claimers_never_get_the_same_mail(store: Arc<dyn Store>) {
    let mut ids = Vec::new();
    for i in 0..40 {
        let m = new_mail(&format!("u{i}@example.com"), T0, None);
        ids.push(m.id);
        store.insert_mail(&m).await.expect("insert");
    }
    let now = Timestamp(T0.0 + 1);
    let claimers: Vec<_> = (0..8)
        .map(|i| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let got = store
                        .claim_mails(&format!("c{i}"), now, Timestamp(now.0 + 60_000), 3)
                        .await
                        .expect("claim");
                    if got.is_empty() {
                        return mine;
                    }
                    mine.extend(got.into_iter().map(|m| m.id));
                }
            })
        })
        .collect();
    let mut claimed = Vec::new();
    for c in claimers {
        claimed.extend(c.await.expect("claimer"));
    }
    claimed.sort();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(claimed, expected, "each mail claimed exactly once");
}

/// A deliverer stopping hands back what it holds: another claims it at once, not after the
/// lease; the mails of other claimers stay theirs.
pub(crate) async fn released_claims_are_claimable_at_once(store: Arc<dyn Store>) {
    let (mine, theirs) = (
        new_mail("mine@example.com", T0, None),
        new_mail("theirs@example.com", T0, None),
    );
    store.insert_mail(&mine).await.expect("insert");
    let now = Timestamp(T0.0 + 1000);
    let lease = Timestamp(now.0 + 60_000);
    assert_eq!(
        store
            .claim_mails("stopping", now, lease, 10)
            .await
            .expect("claim")
            .len(),
        1
    );
    store.insert_mail(&theirs).await.expect("insert");
    assert_eq!(
        store
            .claim_mails("other", now, lease, 10)
            .await
            .expect("claim")
            .len(),
        1
    );
    assert_eq!(store.release_mail_claims("stopping").await.expect("release"), 1);
    let next = store.claim_mails("next", now, lease, 10).await.expect("claim");
    assert_eq!(next.iter().map(|m| m.id).collect::<Vec<_>>(), vec![mine.id]);
}
