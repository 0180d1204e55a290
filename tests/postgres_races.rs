//! PostgreSQL: the session-cap eviction racing a revocation, and racing logout-all, for the
//! same user. Each race is made deterministic by holding a row lock from a connection of the
//! test's own, so the statements under test queue behind it in a known order.

#[path = "support/postgres.rs"]
mod postgres_support;

use std::sync::Arc;
use std::time::Duration;

use sqlx::{Connection, Executor, PgConnection};
use tessera::crypto::{PasswordHashString, RefreshToken};
use tessera::domain::{Email, SessionId, Timestamp};
use tessera::store::{self, SessionRecord, Store, UserRecord};

use postgres_support::TestDatabase;

const T0: Timestamp = Timestamp(1_700_000_000_000);
const DAY: i64 = 86_400_000;
/// Long enough for a statement to reach the lock it will wait for.
const SETTLE: Duration = Duration::from_millis(300);

async fn store_and_user(db: &TestDatabase) -> (Arc<dyn Store>, UserRecord) {
    let store = store::connect(&db.url, 4).await.expect("connect");
    let user = UserRecord::new(
        Email::parse("race@example.com").expect("email"),
        PasswordHashString("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into()),
        T0,
    );
    store.insert_user(&user).await.expect("user");
    (store, user)
}

/// `n` live sessions of `user`, each used a second after the one before (ids ascending too).
async fn sessions(store: &dyn Store, user: &UserRecord, n: i64) -> Vec<SessionId> {
    let mut ids = Vec::new();
    for i in 0..n {
        let at = Timestamp(T0.0 + i * 1000);
        let s = SessionRecord::opened(
            user.id,
            at,
            Timestamp(T0.0 + 90 * DAY),
            Timestamp(T0.0 + 30 * DAY),
            vec!["pwd".into()],
            at,
        );
        let hash = RefreshToken::issue(&ring::rand::SystemRandom::new(), s.id, 0)
            .expect("rng")
            .hash();
        store.insert_session(&s, &hash, 0).await.expect("session");
        ids.push(s.id);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    ids
}

async fn lock_row(url: &str, id: SessionId) -> PgConnection {
    let mut conn = PgConnection::connect(url).await.expect("connect");
    conn.execute("BEGIN").await.expect("begin");
    sqlx::query("SELECT id FROM sessions WHERE id = $1 FOR UPDATE")
        .bind(id.0)
        .execute(&mut conn)
        .await
        .expect("lock");
    conn
}

#[tokio::test]
async fn eviction_racing_a_revocation_keeps_the_revocations_reason() {
    let Some(db) = TestDatabase::create("eviction_vs_revocation").await else {
        return;
    };
    let (store, user) = store_and_user(&db).await;
    let ids = sessions(store.as_ref(), &user, 2).await;
    let (oldest, now) = (ids[0], Timestamp(T0.0 + 10_000));

    // A reuse revocation of the oldest session, committed while the eviction waits for it.
    let mut revoker = lock_row(&db.url, oldest).await;
    sqlx::query("UPDATE sessions SET revoked_at = $1, revoked_reason = 'refresh_token_reused' WHERE id = $2")
        .bind(now.millis())
        .bind(oldest.0)
        .execute(&mut revoker)
        .await
        .expect("revoke");
    let evicting = {
        let store = Arc::clone(&store);
        tokio::spawn(async move { store.revoke_sessions_over_limit(user.id, 1, now).await })
    };
    tokio::time::sleep(SETTLE).await;
    revoker.execute("COMMIT").await.expect("commit");
    tokio::time::timeout(Duration::from_secs(10), evicting)
        .await
        .expect("eviction finishes")
        .unwrap()
        .expect("eviction succeeds");

    let s = store.find_session(oldest).await.unwrap().expect("session");
    assert_eq!(s.revoked_reason.as_deref(), Some("refresh_token_reused"));
    db.drop_database().await;
}

#[tokio::test]
async fn logout_all_racing_eviction_does_not_deadlock() {
    let Some(db) = TestDatabase::create("logout_all_vs_eviction").await else {
        return;
    };
    let (store, user) = store_and_user(&db).await;
    let ids = sessions(store.as_ref(), &user, 3).await;
    let now = Timestamp(T0.0 + 10_000);

    // Both statements queue behind a lock on the oldest session: logout-all first, then the
    // eviction of all but the newest. Released, each goes on to the rows the other holds,
    // unless both lock in one order.
    let mut holder = lock_row(&db.url, ids[0]).await;
    let logout_all = {
        let store = Arc::clone(&store);
        tokio::spawn(async move { store.revoke_user_sessions(user.id, None, now, "logout_all").await })
    };
    tokio::time::sleep(SETTLE).await;
    let evicting = {
        let store = Arc::clone(&store);
        tokio::spawn(async move { store.revoke_sessions_over_limit(user.id, 1, now).await })
    };
    tokio::time::sleep(SETTLE).await;
    holder.execute("COMMIT").await.expect("commit");

    let (a, b) = tokio::join!(logout_all, evicting);
    let revoked_by_logout = a.unwrap().expect("logout-all succeeds");
    let evicted = b.unwrap().expect("eviction succeeds");
    assert_eq!(revoked_by_logout + evicted, 3, "every session revoked once");
    for id in ids {
        let s = store.find_session(id).await.unwrap().expect("session");
        assert!(s.revoked_at.is_some());
    }
    db.drop_database().await;
}
