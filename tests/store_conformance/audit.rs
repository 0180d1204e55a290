//! The audit trail: sweeping by age, reading by filter.

use super::*;

/// Audit events are swept by age, a batch at a time.
pub(crate) async fn audit_events_are_swept_by_age(store: Arc<dyn Store>) {
    for at in [T0.0, T0.0 + 1, T0.0 + 2, T0.0 + DAY] {
        let e = AuditEvent {
            id: uuid::Uuid::now_v7(),
            event: AuditKind::LoginFailed,
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

pub(crate) async fn audit_events_and_ping(store: Arc<dyn Store>) {
    store.ping().await.expect("ping");
    let e = AuditEvent {
        id: uuid::Uuid::now_v7(),
        event: AuditKind::RefreshTokenReused,
        at: T0,
        user_id: Some(UserId::new()),
        session_id: Some(SessionId::new()),
        ip: Some("10.0.0.1".into()),
        user_agent: Some("ua".into()),
        detail: None,
    };
    store.insert_audit_event(&e).await.expect("audit");
}

pub(crate) async fn audit_events_are_read_newest_first_by_filter(store: Arc<dyn Store>) {
    let (u, s, _) = seeded(store.as_ref()).await;
    let other = UserId::new();
    let event = |kind: AuditKind, user: UserId, at: i64| AuditEvent {
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
        event(AuditKind::LoginSucceeded, u.id, 1),
        event(AuditKind::LoginFailed, u.id, 2),
        event(AuditKind::LoginSucceeded, other, 3),
        event(AuditKind::LoginSucceeded, u.id, 4),
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
