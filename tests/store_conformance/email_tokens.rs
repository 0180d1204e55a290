//! Single-use mailed tokens: stored with their mail in one transaction, superseded by a newer
//! one of their kind, used once (one winner among racers), swept after expiry; the account
//! changes they lead to (verified address, changed address).

use super::mail::new_mail;
use super::*;
use tessera::store::{EmailTokenKind, EmailTokenRecord};

fn token(user: &UserRecord, kind: EmailTokenKind, hash: &str, at: Timestamp) -> EmailTokenRecord {
    EmailTokenRecord {
        hash: hash.into(),
        kind,
        user_id: user.id,
        new_email: None,
        credential_epoch: user.credential_epoch,
        created_at: at,
        expires_at: Timestamp(at.0 + 60_000),
        used_at: None,
        browser_hash: None,
    }
}

pub(crate) async fn an_email_token_is_stored_with_its_mail_and_superseded_by_a_newer_one(
    store: Arc<dyn Store>,
) {
    let u = user("tok@example.com");
    store.insert_user(&u).await.expect("user");
    let first = token(&u, EmailTokenKind::PasswordReset, "h1", T0);
    let mail = new_mail("tok@example.com", T0, Some(first.expires_at));
    store.insert_email_token(&first, &mail).await.expect("insert");
    assert!(
        store.find_mail(mail.id).await.expect("find").is_some(),
        "queued with it"
    );
    let (found, owner) = store.find_email_token("h1").await.expect("find").expect("stored");
    assert_eq!(found, first);
    assert_eq!(owner.id, u.id);
    assert!(store.find_email_token("nope").await.expect("find").is_none());

    // A newer one of the same kind marks the older used; another kind is left alone.
    let verify = token(&u, EmailTokenKind::VerifyEmail, "v1", T0);
    store
        .insert_email_token(&verify, &new_mail("tok@example.com", T0, None))
        .await
        .expect("insert");
    let later = Timestamp(T0.0 + 1000);
    let second = token(&u, EmailTokenKind::PasswordReset, "h2", later);
    store
        .insert_email_token(&second, &new_mail("tok@example.com", later, None))
        .await
        .expect("insert");
    let (old, _) = store.find_email_token("h1").await.expect("find").expect("kept");
    assert_eq!(old.used_at, Some(later));
    assert!(!store.use_email_token("h1", later).await.expect("use"));
    let (v, _) = store.find_email_token("v1").await.expect("find").expect("kept");
    assert_eq!(v.used_at, None);

    // Used once; not after its expiry.
    assert!(store.use_email_token("h2", later).await.expect("use"));
    assert!(!store.use_email_token("h2", later).await.expect("use again"));
    assert!(!store
        .use_email_token("v1", Timestamp(T0.0 + 60_000))
        .await
        .expect("expired"));
    // Voided by kind.
    assert_eq!(
        store
            .void_email_tokens(u.id, EmailTokenKind::VerifyEmail, later)
            .await
            .expect("void"),
        1
    );
    // Swept once expired.
    let swept = store
        .delete_email_tokens_expired_before(Timestamp(T0.0 + 120_000), 100)
        .await
        .expect("sweep");
    assert_eq!(swept, 3);
    assert!(store.find_email_token("h2").await.expect("find").is_none());
}

pub(crate) async fn concurrent_uses_of_an_email_token_have_one_winner(store: Arc<dyn Store>) {
    let u = user("race@example.com");
    store.insert_user(&u).await.expect("user");
    let t = token(&u, EmailTokenKind::SignInLink, "race", T0);
    store
        .insert_email_token(&t, &new_mail("race@example.com", T0, None))
        .await
        .expect("insert");
    let uses: Vec<_> = (0..8)
        .map(|_| {
            let store = Arc::clone(&store);
            tokio::spawn(async move { store.use_email_token("race", T0).await.expect("use") })
        })
        .collect();
    let mut won = 0;
    for u in uses {
        won += u32::from(u.await.expect("task"));
    }
    assert_eq!(won, 1);
}

pub(crate) async fn an_address_is_verified_and_changed_unless_taken(store: Arc<dyn Store>) {
    let a = user("a@example.com");
    let b = user("b@example.com");
    store.insert_user(&a).await.expect("a");
    store.insert_user(&b).await.expect("b");
    let found = |email: &'static str| {
        let store = Arc::clone(&store);
        async move {
            store
                .find_user_by_email(&Email::parse(email).expect("email"))
                .await
                .expect("find")
        }
    };
    assert_eq!(found("a@example.com").await.expect("a").email_verified_at, None);
    assert!(store.mark_email_verified(a.id, T0).await.expect("verify"));
    // The first time is kept.
    assert!(store
        .mark_email_verified(a.id, Timestamp(T0.0 + 5))
        .await
        .expect("verify"));
    assert_eq!(
        found("a@example.com").await.expect("a").email_verified_at,
        Some(T0)
    );
    assert!(!store
        .mark_email_verified(UserId::new(), T0)
        .await
        .expect("nobody"));

    let taken = store
        .change_email(a.id, &Email::parse("b@example.com").expect("email"), T0)
        .await;
    assert!(matches!(taken, Err(StoreError::Conflict(_))), "{taken:?}");
    let later = Timestamp(T0.0 + 9);
    assert!(store
        .change_email(b.id, &Email::parse("c@example.com").expect("email"), later)
        .await
        .expect("change"));
    assert!(found("b@example.com").await.is_none());
    let c = found("c@example.com").await.expect("moved");
    assert_eq!((c.id, c.email_verified_at), (b.id, Some(later)));
}

/// A sign-in link asked for in a browser keeps the hash of what that browser holds.
pub(crate) async fn a_sign_in_links_browser_binding_is_kept(store: Arc<dyn Store>) {
    let u = user("bound@example.com");
    store.insert_user(&u).await.expect("user");
    let bound = EmailTokenRecord {
        browser_hash: Some("b".repeat(64)),
        ..token(&u, EmailTokenKind::SignInLink, "h-bound", T0)
    };
    store
        .insert_email_token(&bound, &new_mail("bound@example.com", T0, None))
        .await
        .expect("insert");
    let (found, _) = store
        .find_email_token("h-bound")
        .await
        .expect("find")
        .expect("stored");
    assert_eq!(found, bound);
}
