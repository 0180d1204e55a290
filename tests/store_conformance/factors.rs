//! Second factors: a TOTP enrolment counts only once confirmed, a time step is accepted once
//! (one winner among racers), recovery codes are replaced as a set and spent once, login
//! challenges are used once and die after too many wrong codes; sessions keep `amr` and
//! `auth_time`.

use super::*;
use tessera::store::MfaChallengeRecord;

fn codes(prefix: &str) -> Vec<String> {
    (0..10).map(|i| format!("{prefix}{i}")).collect()
}

pub(crate) async fn a_totp_factor_counts_once_confirmed_and_accepts_each_step_once(store: Arc<dyn Store>) {
    let u = user("totp@example.com");
    store.insert_user(&u).await.expect("user");
    assert!(store.find_totp(u.id).await.expect("find").is_none());
    assert!(
        !store.accept_totp_step(u.id, 5).await.expect("accept"),
        "no factor"
    );
    assert!(store.insert_pending_totp(u.id, b"s1", T0).await.expect("pending"));
    // A restart of the enrolment replaces the secret.
    assert!(store.insert_pending_totp(u.id, b"s2", T0).await.expect("pending"));
    let pending = store.find_totp(u.id).await.expect("find").expect("there");
    assert_eq!(pending.secret, b"s2");
    assert_eq!(pending.confirmed_at, None);
    assert!(
        !store.accept_totp_step(u.id, 5).await.expect("accept"),
        "not confirmed"
    );

    assert!(store
        .confirm_totp(u.id, 10, &codes("a"), T0)
        .await
        .expect("confirm"));
    assert!(
        !store
            .confirm_totp(u.id, 11, &codes("b"), T0)
            .await
            .expect("confirm"),
        "once"
    );
    assert_eq!(store.count_recovery_codes(u.id).await.expect("count"), 10);
    assert!(
        !store.insert_pending_totp(u.id, b"s3", T0).await.expect("pending"),
        "a confirmed factor is not replaced"
    );
    let on = store.find_totp(u.id).await.expect("find").expect("there");
    assert_eq!(
        (on.secret.as_slice(), on.confirmed_at, on.last_step),
        (&b"s2"[..], Some(T0), Some(10))
    );

    // The confirming step and older ones are spent; a newer one wins once among racers.
    assert!(!store.accept_totp_step(u.id, 10).await.expect("accept"));
    assert!(!store.accept_totp_step(u.id, 9).await.expect("accept"));
    let racers: Vec<_> = (0..8)
        .map(|_| {
            let store = Arc::clone(&store);
            tokio::spawn(async move { store.accept_totp_step(u.id, 11).await.expect("accept") })
        })
        .collect();
    let mut won = 0;
    for r in racers {
        won += usize::from(r.await.expect("task"));
    }
    assert_eq!(won, 1);

    assert!(store.delete_totp(u.id).await.expect("delete"));
    assert!(store.find_totp(u.id).await.expect("find").is_none());
    assert_eq!(store.count_recovery_codes(u.id).await.expect("count"), 0);
    assert!(!store.delete_totp(u.id).await.expect("delete"));
}

pub(crate) async fn recovery_codes_are_replaced_as_a_set_and_spent_once(store: Arc<dyn Store>) {
    let u = user("codes@example.com");
    let other = user("other-codes@example.com");
    store.insert_user(&u).await.expect("user");
    store.insert_user(&other).await.expect("user");
    store
        .replace_recovery_codes(u.id, &codes("a"), T0)
        .await
        .expect("codes");
    assert!(
        !store.use_recovery_code(other.id, "a1", T0).await.expect("use"),
        "not theirs"
    );
    let racers: Vec<_> = (0..8)
        .map(|_| {
            let store = Arc::clone(&store);
            tokio::spawn(async move { store.use_recovery_code(u.id, "a1", T0).await.expect("use") })
        })
        .collect();
    let mut won = 0;
    for r in racers {
        won += usize::from(r.await.expect("task"));
    }
    assert_eq!(won, 1);
    assert_eq!(store.count_recovery_codes(u.id).await.expect("count"), 9);
    store
        .replace_recovery_codes(u.id, &codes("b"), T0)
        .await
        .expect("codes");
    assert!(
        !store.use_recovery_code(u.id, "a2", T0).await.expect("use"),
        "the old set died"
    );
    assert!(store.use_recovery_code(u.id, "b2", T0).await.expect("use"));
    assert_eq!(store.count_recovery_codes(u.id).await.expect("count"), 9);
}

pub(crate) async fn a_login_challenge_is_used_once_and_dies_after_wrong_codes(store: Arc<dyn Store>) {
    let u = user("challenge@example.com");
    store.insert_user(&u).await.expect("user");
    let challenge = |hash: &str| MfaChallengeRecord {
        hash: hash.into(),
        user_id: u.id,
        credential_epoch: u.credential_epoch,
        transport: "cookie".into(),
        browser_hash: Some("b".into()),
        amr: vec!["pwd".into()],
        created_at: T0,
        expires_at: Timestamp(T0.0 + 300_000),
        failures: 0,
        used_at: None,
    };
    store
        .insert_mfa_challenge(&challenge("c1"))
        .await
        .expect("insert");
    assert_eq!(
        store.find_mfa_challenge("c1").await.expect("find"),
        Some(challenge("c1"))
    );
    assert!(store.find_mfa_challenge("nope").await.expect("find").is_none());
    assert!(
        !store
            .use_mfa_challenge("c1", Timestamp(T0.0 + 300_000))
            .await
            .expect("use"),
        "expired"
    );
    assert!(store.use_mfa_challenge("c1", T0).await.expect("use"));
    assert!(!store.use_mfa_challenge("c1", T0).await.expect("use"), "once");

    store
        .insert_mfa_challenge(&challenge("c2"))
        .await
        .expect("insert");
    for _ in 0..4 {
        store.fail_mfa_challenge("c2", 5, T0).await.expect("fail");
    }
    let c2 = store
        .find_mfa_challenge("c2")
        .await
        .expect("find")
        .expect("there");
    assert_eq!((c2.failures, c2.used_at), (4, None));
    store.fail_mfa_challenge("c2", 5, T0).await.expect("fail");
    assert_eq!(
        store
            .find_mfa_challenge("c2")
            .await
            .expect("find")
            .expect("there")
            .used_at,
        Some(T0)
    );
    assert!(!store.use_mfa_challenge("c2", T0).await.expect("use"), "used up");

    let swept = store
        .delete_mfa_challenges_expired_before(Timestamp(T0.0 + 300_001), 100)
        .await
        .expect("sweep");
    assert_eq!(swept, 2);
}

pub(crate) async fn sessions_keep_how_and_when_their_holder_signed_in(store: Arc<dyn Store>) {
    let u = user("amr@example.com");
    store.insert_user(&u).await.expect("user");
    let s = SessionRecord {
        amr: vec!["pwd".into(), "otp".into(), "mfa".into()],
        auth_time: Timestamp(T0.0 - 5),
        ..session(&u, T0)
    };
    store.insert_session(&s, &hash(), 0).await.expect("insert");
    let found = store.find_session(s.id).await.expect("find").expect("there");
    assert_eq!(found.amr, s.amr);
    assert_eq!(found.auth_time, s.auth_time);

    let again = vec!["pwd".to_owned(), "otp".to_owned(), "mfa".to_owned()];
    let at = Timestamp(T0.0 + 60_000);
    assert!(store
        .reauthenticate_session(s.id, &again, at)
        .await
        .expect("reauthenticate"));
    let found = store.find_session(s.id).await.expect("find").expect("there");
    assert_eq!((found.amr, found.auth_time), (again.clone(), at));
    store.revoke_session(s.id, at, "logout").await.expect("revoke");
    assert!(
        !store
            .reauthenticate_session(s.id, &again, at)
            .await
            .expect("reauthenticate"),
        "not revoked ones"
    );
}
