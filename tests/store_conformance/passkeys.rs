//! Passkeys and their ceremonies: a credential id belongs to one account, an account sees and
//! changes only its own passkeys, a use is recorded only over a lower stored counter (so one
//! counter passes once), and a ceremony is taken once (one winner among racers), expired ones
//! swept.

use super::*;
use tessera::domain::PasskeyId;
use tessera::store::{CeremonyRecord, PasskeyRecord};

fn passkey(user: &UserRecord, credential: &str, at: Timestamp) -> PasskeyRecord {
    PasskeyRecord {
        id: PasskeyId::new(),
        user_id: user.id,
        credential_id: credential.into(),
        name: "Laptop".into(),
        passkey: format!("{{\"cred\":\"{credential}\"}}"),
        counter: 0,
        created_at: at,
        last_used_at: None,
    }
}

fn ceremony(handle: &str, user: Option<UserId>, at: Timestamp) -> CeremonyRecord {
    CeremonyRecord {
        handle: handle.into(),
        kind: "authenticate".into(),
        user_id: user,
        state: format!("state of {handle}"),
        created_at: at,
        expires_at: Timestamp(at.0 + 300_000),
    }
}

pub(crate) async fn passkeys_are_per_account_and_unique_by_credential(store: Arc<dyn Store>) {
    let (alice, bob) = (user("alice@example.com"), user("bob@example.com"));
    store.insert_user(&alice).await.expect("alice");
    store.insert_user(&bob).await.expect("bob");
    let first = passkey(&alice, "cred-1", T0);
    let second = passkey(&alice, "cred-2", Timestamp(T0.0 + 1));
    store.insert_passkey(&first).await.expect("first");
    store.insert_passkey(&second).await.expect("second");
    assert!(matches!(
        store.insert_passkey(&passkey(&bob, "cred-1", T0)).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        store.find_passkeys(alice.id).await.expect("list"),
        vec![first.clone(), second.clone()]
    );
    assert!(store.find_passkeys(bob.id).await.expect("list").is_empty());
    let (found, owner) = store
        .find_passkey_by_credential("cred-2")
        .await
        .expect("find")
        .expect("found");
    assert_eq!((found, owner.id), (second.clone(), alice.id));
    assert!(store
        .find_passkey_by_credential("nope")
        .await
        .expect("find")
        .is_none());

    // Bob can neither rename nor remove Alice's.
    assert!(!store
        .rename_passkey(bob.id, first.id, "mine")
        .await
        .expect("rename"));
    assert!(store
        .delete_passkey(bob.id, first.id)
        .await
        .expect("delete")
        .is_none());
    assert!(store
        .rename_passkey(alice.id, first.id, "Phone")
        .await
        .expect("rename"));
    let removed = store
        .delete_passkey(alice.id, first.id)
        .await
        .expect("delete")
        .expect("removed");
    assert_eq!(removed.name, "Phone");
    assert_eq!(
        store.find_passkeys(alice.id).await.expect("list"),
        vec![second.clone()]
    );

    // A use is recorded over the counter it was checked against, once.
    let at = Timestamp(T0.0 + 5);
    assert!(store
        .record_passkey_use(second.id, "{\"v\":2}", 3, at)
        .await
        .expect("use"));
    // The same counter again (a clone racing), or an older one: refused.
    assert!(!store
        .record_passkey_use(second.id, "{\"v\":3}", 3, at)
        .await
        .expect("use"));
    assert!(!store
        .record_passkey_use(second.id, "{\"v\":3}", 2, at)
        .await
        .expect("use"));
    let now = store.find_passkeys(alice.id).await.expect("list");
    assert_eq!(
        (now[0].counter, now[0].last_used_at, now[0].passkey.as_str()),
        (3, Some(at), "{\"v\":2}")
    );
    // An authenticator without a counter (0) is recorded every time.
    let third = passkey(&alice, "cred-3", T0);
    store.insert_passkey(&third).await.expect("third");
    for _ in 0..2 {
        assert!(store
            .record_passkey_use(third.id, "{}", 0, at)
            .await
            .expect("use"));
    }
    // An account deleted takes its passkeys along.
    store.delete_user(alice.id, T0).await.expect("delete user");
    assert!(store
        .find_passkey_by_credential("cred-2")
        .await
        .expect("find")
        .is_none());
}

/// An operator's factor reset deletes all of an account's passkeys at once, and only them.
pub(crate) async fn all_of_an_accounts_passkeys_are_deleted_at_once(store: Arc<dyn Store>) {
    let (alice, bob) = (user("alice@example.com"), user("bob@example.com"));
    store.insert_user(&alice).await.expect("alice");
    store.insert_user(&bob).await.expect("bob");
    for credential in ["cred-1", "cred-2"] {
        store
            .insert_passkey(&passkey(&alice, credential, T0))
            .await
            .expect("alice's");
    }
    let bobs = passkey(&bob, "cred-3", T0);
    store.insert_passkey(&bobs).await.expect("bob's");
    assert_eq!(store.delete_passkeys(alice.id).await.expect("delete all"), 2);
    assert!(store.find_passkeys(alice.id).await.expect("list").is_empty());
    assert_eq!(store.find_passkeys(bob.id).await.expect("list"), vec![bobs]);
    assert_eq!(store.delete_passkeys(alice.id).await.expect("delete all"), 0);
}

pub(crate) async fn a_ceremony_is_taken_once_and_replaced_by_its_handle(store: Arc<dyn Store>) {
    let u = user("ceremony@example.com");
    store.insert_user(&u).await.expect("user");
    store
        .insert_passkey_ceremony(&ceremony("c1", None, T0))
        .await
        .expect("c1");
    let takes: Vec<_> = (0..8)
        .map(|_| {
            let store = Arc::clone(&store);
            tokio::spawn(async move { store.take_passkey_ceremony("c1").await.expect("take") })
        })
        .collect();
    let mut won = Vec::new();
    for t in takes {
        won.extend(t.await.expect("task"));
    }
    assert_eq!(won, vec![ceremony("c1", None, T0)]);

    // The same handle again replaces the ceremony (a registration started anew).
    let handle = format!("register:{}", u.id);
    store
        .insert_passkey_ceremony(&ceremony(&handle, Some(u.id), T0))
        .await
        .expect("old");
    let newer = CeremonyRecord {
        state: "newer".into(),
        ..ceremony(&handle, Some(u.id), Timestamp(T0.0 + 10))
    };
    store.insert_passkey_ceremony(&newer).await.expect("newer");
    assert_eq!(
        store.take_passkey_ceremony(&handle).await.expect("take"),
        Some(newer)
    );

    // An expired ceremony is still taken (so the service can say "expired") until a later
    // insert sweeps it.
    store
        .insert_passkey_ceremony(&ceremony("old", None, T0))
        .await
        .expect("old");
    store
        .insert_passkey_ceremony(&ceremony("kept", None, T0))
        .await
        .expect("kept");
    assert!(store.take_passkey_ceremony("kept").await.expect("take").is_some());
    store
        .insert_passkey_ceremony(&ceremony("later", None, Timestamp(T0.0 + 300_001)))
        .await
        .expect("later");
    assert!(store.take_passkey_ceremony("old").await.expect("take").is_none());
    assert!(store
        .take_passkey_ceremony("later")
        .await
        .expect("take")
        .is_some());
}
