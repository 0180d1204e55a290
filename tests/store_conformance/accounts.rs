//! Users and accounts: unique emails, paging, roles, disable, import, password changes and the credential epoch.

use super::*;

pub(crate) async fn users_are_unique_by_email(store: Arc<dyn Store>) {
    let u = user("Alice@Example.com");
    store.insert_user(&u).await.expect("insert");
    let found = store
        .find_user_by_email(&u.email)
        .await
        .expect("find")
        .expect("present");
    assert_eq!(found.id, u.id);
    assert_eq!(found.email.as_str(), "alice@example.com");
    assert_eq!(found.roles, vec!["reader".to_string()]);
    assert_eq!(found.password_hash, u.password_hash);
    let again = user("alice@example.com");
    assert!(matches!(
        store.insert_user(&again).await,
        Err(StoreError::Conflict(_))
    ));
    let nobody = Email::parse("nobody@example.com").expect("email");
    assert!(store.find_user_by_email(&nobody).await.expect("find").is_none());
}

pub(crate) async fn accounts_are_found_paged_and_have_their_roles_replaced(store: Arc<dyn Store>) {
    let mut emails = Vec::new();
    for i in 0..5 {
        let u = user(&format!("user{i}@example.com"));
        store.insert_user(&u).await.expect("insert");
        emails.push(u.email.clone());
    }
    let account = store
        .find_account(&emails[2])
        .await
        .expect("find")
        .expect("present");
    assert_eq!(account.user.email, emails[2]);
    assert_eq!(account.disabled_at, None);
    let nobody = Email::parse("nobody@example.com").expect("email");
    assert!(store.find_account(&nobody).await.expect("find").is_none());

    let first = store.find_accounts(None, 2).await.expect("page");
    let firsts: Vec<_> = first.iter().map(|a| a.user.email.clone()).collect();
    assert_eq!(firsts, emails[..2].to_vec());
    let rest = store.find_accounts(Some(&emails[1]), 10).await.expect("page");
    let rests: Vec<_> = rest.iter().map(|a| a.user.email.clone()).collect();
    assert_eq!(rests, emails[2..].to_vec());

    let roles = vec!["admin".to_string(), "ops".to_string()];
    assert!(store
        .update_user_roles(account.user.id, &roles)
        .await
        .expect("roles"));
    let found = store
        .find_user_by_email(&emails[2])
        .await
        .expect("find")
        .expect("present");
    assert_eq!(found.roles, roles);
    assert!(!store
        .update_user_roles(UserId::new(), &roles)
        .await
        .expect("roles"));
}

pub(crate) async fn a_disabled_user_gets_no_session_until_enabled(store: Arc<dyn Store>) {
    let (u, live, live_first) = seeded(store.as_ref()).await;
    assert_eq!(store.disable_user(u.id, T0).await.expect("disable"), 1);
    let after = store.find_session(live.id).await.expect("find").expect("present");
    assert_eq!(after.revoked_at, Some(T0));
    assert_eq!(after.revoked_reason.as_deref(), Some("user_disabled"));
    assert!(store
        .rotate_current(&one_step(live_first, Timestamp(T0.0 + 1), None))
        .await
        .expect("rotate")
        .is_none());
    let account = store
        .find_account(&u.email)
        .await
        .expect("find")
        .expect("present");
    assert_eq!(account.disabled_at, Some(T0));

    let refused = session(&u, T0);
    assert!(!store.insert_session(&refused, &hash(), 0).await.expect("insert"));
    assert!(store.find_session(refused.id).await.expect("find").is_none());
    // Disabling again keeps the first time; enabling lets sessions in again.
    assert_eq!(
        store
            .disable_user(u.id, Timestamp(T0.0 + 5))
            .await
            .expect("disable"),
        0
    );
    let account = store
        .find_account(&u.email)
        .await
        .expect("find")
        .expect("present");
    assert_eq!(account.disabled_at, Some(T0));
    assert!(store.enable_user(u.id).await.expect("enable"));
    assert!(!store.enable_user(u.id).await.expect("enable"));
    // Under the credential epoch as it is now: a login that read the user before the disable
    // does not get in after the enable.
    assert!(!store
        .insert_session(&session(&u, T0), &hash(), 0)
        .await
        .expect("insert"));
    let epoch = epoch_of(store.as_ref(), &u).await;
    assert!(epoch > 0, "a disable moves the credential epoch");
    assert!(store
        .insert_session(&session(&u, T0), &hash(), epoch)
        .await
        .expect("insert"));
}

/// Ten times on a fresh user: eight session inserts under the credential epoch read before
/// (0) race `change`, which revokes and moves the epoch. Each insert either lands first and is
/// revoked by it, or finds the user changed and writes nothing: no session outlives it.
async fn no_session_insert_outlives<F, Fut>(store: &Arc<dyn Store>, what: &str, change: F)
where
    F: Fn(Arc<dyn Store>, UserRecord) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    for _ in 0..10 {
        let u = user(&format!("{}@example.com", uuid::Uuid::new_v4().simple()));
        store.insert_user(&u).await.expect("insert user");
        let inserting: Vec<_> = (0..8)
            .map(|_| {
                let (store, s) = (Arc::clone(store), session(&u, T0));
                tokio::spawn(async move {
                    let inserted = store.insert_session(&s, &hash(), 0).await.expect("insert");
                    (s.id, inserted)
                })
            })
            .collect();
        tokio::spawn(change(Arc::clone(store), u.clone()))
            .await
            .expect("join");
        for task in inserting {
            let (id, inserted) = task.await.expect("join");
            match store.find_session(id).await.expect("find") {
                Some(s) => {
                    assert!(inserted);
                    assert!(s.revoked_at.is_some(), "a session outlived the {what}");
                }
                None => assert!(!inserted),
            }
        }
        assert!(live_ids(store.as_ref(), u.id, T0).await.is_empty());
    }
}

pub(crate) async fn a_session_insert_racing_a_disable_never_outlives_it(store: Arc<dyn Store>) {
    no_session_insert_outlives(&store, "disable", |store, u| async move {
        store
            .disable_user(u.id, Timestamp(T0.0 + 1))
            .await
            .expect("disable");
    })
    .await;
}

pub(crate) async fn imported_users_are_inserted_once(store: Arc<dyn Store>) {
    let taken = user("taken@example.com");
    store.insert_user(&taken).await.expect("insert");
    let batch: Vec<_> = [
        "a@example.com",
        "taken@example.com",
        "b@example.com",
        "a@example.com",
    ]
    .iter()
    .map(|e| user(e))
    .collect();
    assert_eq!(store.insert_users_if_absent(&batch).await.expect("import"), 2);
    assert_eq!(store.insert_users_if_absent(&batch).await.expect("import"), 0);
    assert_eq!(store.insert_users_if_absent(&[]).await.expect("import"), 0);
    let kept = store
        .find_user_by_email(&taken.email)
        .await
        .expect("find")
        .expect("present");
    assert_eq!(kept.id, taken.id, "a present user is left as it was");
    let a = store
        .find_user_by_email(&batch[0].email)
        .await
        .expect("find")
        .expect("present");
    assert_eq!(
        (a.id, a.roles, a.created_at),
        (batch[0].id, batch[0].roles.clone(), T0)
    );
}

pub(crate) async fn a_password_hash_is_upgraded_only_if_unchanged(store: Arc<dyn Store>) {
    let u = user("upgrade@example.com");
    store.insert_user(&u).await.expect("insert");
    let new = PasswordHashString("$argon2id$v=19$m=19456,t=2,p=1$bmV3$bmV3".into());
    let other = PasswordHashString("$argon2id$v=19$m=19456,t=2,p=1$b3RoZXI$b3RoZXI".into());
    assert!(store
        .upgrade_password_hash(u.id, &u.password_hash, &new)
        .await
        .expect("upgrade"));
    // A second upgrade from the old hash (a racing login) changes nothing.
    assert!(!store
        .upgrade_password_hash(u.id, &u.password_hash, &other)
        .await
        .expect("upgrade"));
    let found = store
        .find_user_by_email(&u.email)
        .await
        .expect("find")
        .expect("present");
    assert_eq!(found.password_hash, new);
}

pub(crate) async fn epoch_of(store: &dyn Store, u: &UserRecord) -> i64 {
    store
        .find_user_by_email(&u.email)
        .await
        .expect("find")
        .expect("present")
        .credential_epoch
}

pub(crate) async fn a_password_change_moves_the_epoch_and_ends_the_other_sessions(store: Arc<dyn Store>) {
    let u = user("change@example.com");
    store.insert_user(&u).await.expect("insert");
    let sessions = insert_sessions(store.as_ref(), &u, 3).await;
    let new = PasswordHashString("$argon2id$v=19$m=19456,t=2,p=1$bmV3$bmV3".into());
    // An upgrade of an imported hash keeps the password, and the epoch.
    let upgraded = PasswordHashString("$argon2id$v=19$m=19456,t=2,p=1$dXA$dXA".into());
    assert!(store
        .upgrade_password_hash(u.id, &u.password_hash, &upgraded)
        .await
        .expect("upgrade"));
    assert_eq!(epoch_of(store.as_ref(), &u).await, 0);
    // From a hash that is no longer the user's: nothing changes.
    assert_eq!(
        store
            .change_password_hash(u.id, &u.password_hash, &new, None, T0, "password_changed")
            .await
            .expect("change"),
        None
    );
    assert_eq!(epoch_of(store.as_ref(), &u).await, 0);
    assert_eq!(
        store
            .change_password_hash(
                u.id,
                &upgraded,
                &new,
                Some(sessions[0].id),
                Timestamp(T0.0 + 1),
                "password_changed"
            )
            .await
            .expect("change"),
        Some(2)
    );
    assert_eq!(epoch_of(store.as_ref(), &u).await, 1);
    assert_eq!(live_ids(store.as_ref(), u.id, T0).await, vec![sessions[0].id]);
    let ended = store
        .find_session(sessions[1].id)
        .await
        .expect("find")
        .expect("kept");
    assert_eq!(ended.revoked_reason.as_deref(), Some("password_changed"));
    // A login that read the user before the change writes no session after it.
    assert!(!store
        .insert_session(&session(&u, T0), &hash(), 0)
        .await
        .expect("insert"));
    assert!(store
        .insert_session(&session(&u, T0), &hash(), 1)
        .await
        .expect("insert"));
}

pub(crate) async fn a_session_insert_racing_a_password_change_never_outlives_it(store: Arc<dyn Store>) {
    // Logins that verified the old password write their sessions while the password changes.
    no_session_insert_outlives(&store, "password change", |store, u| async move {
        let new = PasswordHashString("$argon2id$v=19$m=19456,t=2,p=1$bmV3$bmV3".into());
        let changed = store
            .change_password_hash(
                u.id,
                &u.password_hash,
                &new,
                None,
                Timestamp(T0.0 + 1),
                "password_changed",
            )
            .await
            .expect("change");
        assert!(changed.is_some());
    })
    .await;
}

pub(crate) async fn accounts_are_listed_by_id_with_filters_and_carry_metadata(store: Arc<dyn Store>) {
    let mut ids = Vec::new();
    for (i, email) in ["bea@example.com", "ann@example.com", "bob@example.com"]
        .iter()
        .enumerate()
    {
        let u = UserRecord {
            roles: if i == 1 { vec!["ops".into()] } else { vec![] },
            created_at: Timestamp(T0.0 + i as i64 * 1000),
            user_metadata: r#"{"name":"x"}"#.into(),
            ..user(email)
        };
        store.insert_user(&u).await.expect("insert");
        ids.push(u.id);
    }
    let list = |filter: AccountFilter| {
        let store = Arc::clone(&store);
        async move {
            let page = store.find_accounts_filtered(&filter).await.expect("page");
            page.into_iter().map(|a| a.user.id).collect::<Vec<_>>()
        }
    };
    let all = AccountFilter {
        limit: 10,
        ..AccountFilter::default()
    };
    assert_eq!(list(all.clone()).await, ids, "creation (id) order");
    assert_eq!(
        list(AccountFilter {
            after: Some(ids[0]),
            limit: 1,
            ..all.clone()
        })
        .await,
        ids[1..2]
    );
    assert_eq!(
        list(AccountFilter {
            email_prefix: Some("b".into()),
            ..all.clone()
        })
        .await,
        [ids[0], ids[2]]
    );
    assert_eq!(
        list(AccountFilter {
            email_prefix: Some("b%".into()),
            ..all.clone()
        })
        .await,
        []
    );
    assert_eq!(
        list(AccountFilter {
            role: Some("ops".into()),
            ..all.clone()
        })
        .await,
        ids[1..2]
    );
    assert_eq!(
        list(AccountFilter {
            created_from: Some(Timestamp(T0.0 + 1000)),
            created_until: Some(Timestamp(T0.0 + 2000)),
            ..all.clone()
        })
        .await,
        ids[1..2]
    );
    store.disable_user(ids[2], T0).await.expect("disable");
    assert_eq!(
        list(AccountFilter {
            disabled: Some(true),
            ..all.clone()
        })
        .await,
        ids[2..]
    );
    assert_eq!(
        list(AccountFilter {
            disabled: Some(false),
            ..all.clone()
        })
        .await,
        ids[..2]
    );

    assert!(store
        .update_app_metadata(ids[0], r#"{"tenant":"t1"}"#)
        .await
        .expect("update"));
    let account = store
        .find_account_by_id(ids[0])
        .await
        .expect("find")
        .expect("present");
    assert_eq!(account.user.app_metadata, r#"{"tenant":"t1"}"#);
    assert_eq!(account.user.user_metadata, r#"{"name":"x"}"#);
    assert!(store
        .find_account_by_id(UserId::new())
        .await
        .expect("find")
        .is_none());
    assert!(!store
        .update_app_metadata(UserId::new(), "{}")
        .await
        .expect("update"));
}

pub(crate) async fn a_deleted_user_leaves_no_session_and_pseudonymous_audit_events(store: Arc<dyn Store>) {
    let (u, s, _) = seeded(store.as_ref()).await;
    let login = AuditEvent {
        id: uuid::Uuid::now_v7(),
        event: AuditKind::LoginSucceeded,
        at: Timestamp(T0.0 + 5),
        user_id: Some(u.id),
        session_id: Some(s.id),
        ip: None,
        user_agent: None,
        detail: Some(format!(r#"{{"email":"{}"}}"#, u.email.as_str())),
    };
    store.insert_audit_event(&login).await.expect("audit");
    assert_eq!(
        store.find_last_login(u.id).await.expect("last"),
        Some(Timestamp(T0.0 + 5))
    );

    assert_eq!(store.delete_user(u.id, T0).await.expect("delete"), Some(1));
    assert!(store.find_session(s.id).await.expect("find").is_none());
    assert!(store.find_account_by_id(u.id).await.expect("find").is_none());
    let revoked = store.find_revocations_after(0, 100).await.expect("log");
    assert!(
        revoked.iter().any(|r| r.session_id == s.id),
        "the revocation is logged"
    );
    let filter = AuditFilter {
        user: Some(u.id),
        limit: 10,
        ..AuditFilter::default()
    };
    let events = store.find_audit_events(&filter).await.expect("audit");
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].email, None);
    assert_eq!(events[0].detail.as_deref(), Some(r#"{"email":"<deleted>"}"#));
    assert_eq!(store.delete_user(u.id, T0).await.expect("delete"), None);
}
