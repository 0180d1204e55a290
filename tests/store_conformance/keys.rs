//! Signing keys: one active, rotation, revocation and its follow-up, re-sealing.

use super::*;

pub(crate) async fn one_active_signing_key_even_when_racing(store: Arc<dyn Store>) {
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let key = SigningKeyRecord::generate_ed25519(T0).expect("key");
                store.insert_signing_key_if_none_active(&key).await
            })
        })
        .collect();
    for t in tasks {
        t.await
            .expect("join")
            .expect("insert must not error when it loses");
    }
    let keys = store.find_signing_keys().await.expect("keys");
    assert_eq!(keys.iter().filter(|k| k.active).count(), 1);
    assert_eq!(keys.len(), 1);
    let k = &keys[0];
    assert_eq!(k.alg, "EdDSA");
    assert_eq!(k.public_key.len(), 32);
}

pub(crate) async fn rotating_the_signing_key_retires_the_active_one(store: Arc<dyn Store>) {
    let first = SigningKeyRecord::generate_ed25519(T0).expect("key");
    store
        .insert_signing_key_if_none_active(&first)
        .await
        .expect("insert");
    let mut second = SigningKeyRecord::generate_ed25519(Timestamp(T0.0 + 1)).expect("key");
    let at = Timestamp(T0.0 + 5000);
    // A key in the next stage: the active one retires when it activates.
    second.activates_at = at;
    store.rotate_signing_key(&second).await.expect("rotate");
    let keys = store.find_signing_keys().await.expect("keys");
    assert_eq!(keys.len(), 2);
    let old = keys.iter().find(|k| k.kid == first.kid).expect("old key kept");
    assert!(!old.active);
    assert_eq!(old.retired_at, Some(at));
    let new = keys.iter().find(|k| k.kid == second.kid).expect("new key");
    assert!(new.active);
    assert_eq!(new.retired_at, None);
    assert_eq!(new.activates_at, at);
    assert_eq!(old.activates_at, first.created_at);
}

/// `keys rotate` then `keys rotate --now`: the key that was signing and the one waiting in
/// the next stage both retire now (neither is left "retired" in the future, nor "activating"
/// after its retirement), and the newest signs.
pub(crate) async fn rotating_at_once_over_a_next_key_retires_both_now(store: Arc<dyn Store>) {
    let (first, next) = staged_keys(&store).await;
    let now = Timestamp(T0.0 + 2_000);
    let mut third = SigningKeyRecord::generate_ed25519(now).expect("key");
    third.activates_at = now;
    store.rotate_signing_key(&third).await.expect("rotate");
    let keys = store.find_signing_keys().await.expect("keys");
    let of = |kid: &str| keys.iter().find(|k| k.kid == kid).expect("key").clone();
    let (first, next, third) = (of(&first.kid), of(&next.kid), of(&third.kid));
    assert_eq!(first.retired_at, Some(now));
    assert_eq!(first.activates_at, T0);
    assert_eq!((next.activates_at, next.retired_at), (now, Some(now)));
    assert!(!first.active && !next.active && third.active);
    assert_eq!(third.retired_at, None);
    let later = Timestamp(T0.0 + 20_000);
    assert_eq!(
        tessera::tokens::signing_key_at(&keys, later).map(|k| k.kid.clone()),
        Some(third.kid.clone())
    );
}

/// The key table as (kid, active, activates_at, retired_at, revoked_at).
pub(crate) async fn key_table(store: &Arc<dyn Store>) -> Vec<(String, bool, i64, Option<i64>, Option<i64>)> {
    store
        .find_signing_keys()
        .await
        .expect("keys")
        .into_iter()
        .map(|k| {
            (
                k.kid,
                k.active,
                k.activates_at.0,
                k.retired_at.map(|t| t.0),
                k.revoked_at.map(|t| t.0),
            )
        })
        .collect()
}

/// A key signing since T0 and one in the next stage from T0 + 10 s.
pub(crate) async fn staged_keys(store: &Arc<dyn Store>) -> (SigningKeyRecord, SigningKeyRecord) {
    let first = SigningKeyRecord::generate_ed25519(T0).expect("key");
    store
        .insert_signing_key_if_none_active(&first)
        .await
        .expect("insert");
    let mut next = SigningKeyRecord::generate_ed25519(Timestamp(T0.0 + 1)).expect("key");
    next.activates_at = Timestamp(T0.0 + 10_000);
    store.rotate_signing_key(&next).await.expect("rotate");
    (first, next)
}

pub(crate) async fn revoking_a_signing_key_applies_its_follow_up_in_one_go(store: Arc<dyn Store>) {
    let (first, next) = staged_keys(&store).await;
    let now = Timestamp(T0.0 + 2_000);
    let promote = KeyRevocation {
        kid: first.kid.clone(),
        now,
        then: AfterKeyRevocation::Promote(next.kid.clone()),
    };
    assert!(store.revoke_signing_key(&promote).await.expect("revoke"));
    assert!(
        !store.revoke_signing_key(&promote).await.expect("revoke"),
        "a second revocation changes nothing"
    );
    assert_eq!(
        key_table(&store).await,
        vec![
            (first.kid.clone(), false, T0.0, Some(T0.0 + 10_000), Some(now.0)),
            (next.kid.clone(), true, now.0, None, None),
        ]
    );
    let mut kids = store.find_signing_kids().await.expect("kids");
    kids.sort();
    let mut expected = vec![(first.kid.clone(), true), (next.kid.clone(), false)];
    expected.sort();
    assert_eq!(kids, expected);

    // The signing key again, with nothing next: a fresh key replaces it, active from now.
    let later = Timestamp(T0.0 + 3_000);
    let mut fresh = SigningKeyRecord::generate_ed25519(later).expect("key");
    fresh.activates_at = later;
    let replace = KeyRevocation {
        kid: next.kid.clone(),
        now: later,
        then: AfterKeyRevocation::Replace(fresh.clone()),
    };
    assert!(store.revoke_signing_key(&replace).await.expect("revoke"));
    let table = key_table(&store).await;
    assert_eq!(table[1], (next.kid.clone(), false, now.0, None, Some(later.0)));
    assert_eq!(table[2], (fresh.kid.clone(), true, later.0, None, None));
    let unknown = KeyRevocation {
        kid: "no-such-kid".into(),
        now: later,
        then: AfterKeyRevocation::Nothing,
    };
    assert!(!store.revoke_signing_key(&unknown).await.expect("revoke"));
}

pub(crate) async fn revoking_a_next_key_restores_the_key_it_was_to_replace(store: Arc<dyn Store>) {
    let (first, next) = staged_keys(&store).await;
    let now = Timestamp(T0.0 + 2_000);
    let restore = KeyRevocation {
        kid: next.kid.clone(),
        now,
        then: AfterKeyRevocation::Restore {
            kid: first.kid.clone(),
            active: true,
            retired_at: None,
        },
    };
    assert!(store.revoke_signing_key(&restore).await.expect("revoke"));
    assert_eq!(
        key_table(&store).await,
        vec![
            (first.kid.clone(), true, T0.0, None, None),
            (next.kid.clone(), false, T0.0 + 10_000, None, Some(now.0)),
        ]
    );
    // The one-active-key rule still holds: a first key cannot be added beside it.
    let another = SigningKeyRecord::generate_ed25519(now).expect("key");
    store
        .insert_signing_key_if_none_active(&another)
        .await
        .expect("insert");
    assert_eq!(key_table(&store).await.len(), 2);
}

pub(crate) async fn a_private_key_is_replaced_only_if_unchanged(store: Arc<dyn Store>) {
    let key = SigningKeyRecord::generate_ed25519(T0).expect("key");
    store
        .insert_signing_key_if_none_active(&key)
        .await
        .expect("insert");
    let sealed = b"TSK\x01 sealed bytes".to_vec();
    assert!(store
        .update_signing_key_private(&key.kid, &key.private_pkcs8, &sealed)
        .await
        .expect("update"));
    assert!(
        !store
            .update_signing_key_private(&key.kid, &key.private_pkcs8, b"other")
            .await
            .expect("update"),
        "compare-and-set: the stored value changed"
    );
    let stored = store.find_signing_keys().await.expect("keys");
    assert_eq!(stored[0].private_pkcs8, sealed);
}
