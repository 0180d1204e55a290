//! Access tokens end at `exp` on the service's own clock, and an instance that cannot reload
//! its signing keys stops issuing tokens rather than sign with a key it may no longer own.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tessera::domain::{Clock, SystemClock, Timestamp};
use tessera::startup::Application;

use crate::helpers::*;

/// A clock the test sets.
pub struct ManualClock(AtomicI64);

impl ManualClock {
    fn at(t: Timestamp) -> Arc<ManualClock> {
        Arc::new(ManualClock(AtomicI64::new(t.millis())))
    }

    fn set(&self, t: Timestamp) {
        self.0.store(t.millis(), Ordering::SeqCst);
    }

    fn advance(&self, d: Duration) {
        self.0.fetch_add(d.as_millis() as i64, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.0.load(Ordering::SeqCst))
    }
}

async fn spawn_with_clock(
    clock: Arc<dyn Clock>,
    tweak: impl FnOnce(&mut tessera::config::Config),
) -> TestApp {
    let storage = test_storage().await;
    let mut config = test_config(&storage);
    tweak(&mut config);
    let app = Application::build_with_clock(&config, clock)
        .await
        .expect("build");
    serve(app, config, Arc::new(storage))
}

#[tokio::test]
async fn an_access_token_is_refused_from_the_second_of_its_exp() {
    // A whole second, so `exp` (in seconds) is exactly login time + the lifetime.
    let start = Timestamp((SystemClock.now().seconds() + 1) * 1000);
    let clock = ManualClock::at(start);
    let app = spawn_with_clock(clock.clone(), |c| c.access_ttl = Duration::from_secs(60)).await;
    let t = app.signup_and_login(EMAIL).await;
    let access = s(&t, "access_token");
    clock.set(start.plus(Duration::from_millis(59_999)));
    json_ok(app.me(&access).await).await;
    clock.set(start.plus(Duration::from_secs(60)));
    assert_problem(app.me(&access).await, 401, "token_expired").await;
}

/// Runs one statement on the test's database, beside the server's own connections.
async fn execute(app: &TestApp, sql: &str) {
    let url = &app.config.database_url;
    if let Some(path) = url.strip_prefix("sqlite://") {
        let conn = rusqlite::Connection::open(path).expect("sqlite");
        conn.busy_timeout(Duration::from_secs(10)).expect("busy timeout");
        conn.execute_batch(sql).expect(sql);
    } else {
        let pool = sqlx::PgPool::connect(url).await.expect("postgres");
        sqlx::query(sql).execute(&pool).await.expect(sql);
        pool.close().await;
    }
}

#[tokio::test]
async fn an_instance_that_cannot_reload_its_keys_stops_issuing_tokens() {
    let clock = ManualClock::at(SystemClock.now());
    let app = spawn_with_clock(clock.clone(), |_| {}).await;
    let t = app.signup_and_login(EMAIL).await;
    // The keys can no longer be read, and the last successful read grows old: another
    // process may have retired the key this instance holds.
    execute(&app, "ALTER TABLE signing_keys RENAME TO signing_keys_away").await;
    clock.advance(Duration::from_secs(4 * 60));
    let sessions_before = app.session_ids(&s(&t, "access_token")).await;
    assert_problem(app.login(EMAIL).await, 503, "service_unavailable").await;
    // Refused before anything was written: no session without tokens.
    assert_eq!(app.session_ids(&s(&t, "access_token")).await, sessions_before);
    assert_problem(
        app.refresh(&s(&t, "refresh_token")).await,
        503,
        "service_unavailable",
    )
    .await;
    // Once the keys can be read again, tokens are issued again.
    execute(&app, "ALTER TABLE signing_keys_away RENAME TO signing_keys").await;
    clock.advance(Duration::from_secs(2));
    app.login_ok(EMAIL).await;
}

/// Idle sessions end at their sliding expiry: refused from then on, and deleted, with their
/// tokens, by the sweeper once past the ended-session retention, long before their absolute
/// end. A session in use stays.
#[tokio::test]
async fn the_sweeper_deletes_sessions_that_went_idle() {
    let start = SystemClock.now();
    let clock = ManualClock::at(start);
    let tweak = |c: &mut tessera::config::Config| {
        c.refresh_ttl = Duration::from_secs(86_400);
        c.session_ttl = Duration::from_secs(365 * 86_400);
        // The JWT must outlive the clock jump, so the me calls below test the session.
        c.access_ttl = Duration::from_secs(30 * 86_400);
    };
    let app = spawn_with_clock(clock.clone(), tweak).await;
    let idle = app.signup_and_login(EMAIL).await;
    let mut used = app.login_ok(EMAIL).await;
    // The used session is refreshed every 20 hours; the idle one never. Past its sliding
    // expiry the idle session is refused, then, past the 7-day retention of ended
    // sessions, swept.
    let step = Duration::from_secs(20 * 3600);
    for i in 0..11 {
        clock.advance(step);
        used = app.refresh_ok(&s(&used, "refresh_token")).await;
        if i == 1 {
            let r = app.refresh(&s(&idle, "refresh_token")).await;
            assert_problem(r, 401, "refresh_token_expired").await;
        }
    }
    // The sweeper's first run is when a server starts.
    let (config, storage) = app.stop().await;
    let app = Application::build_with_clock(&config, clock.clone())
        .await
        .expect("build");
    let app = serve(app, config.clone(), Arc::clone(&storage));
    let gone = SessionIdCheck::new(&app).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while gone.exists(&s(&idle, "session_id")).await {
        assert!(
            std::time::Instant::now() < deadline,
            "the idle session was not swept"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        gone.exists(&s(&used, "session_id")).await,
        "a session in use stays"
    );
    json_ok(app.me(&s(&used, "access_token")).await).await;
}

/// Whether a session row exists, read beside the server.
struct SessionIdCheck(Arc<dyn tessera::store::Store>);

impl SessionIdCheck {
    async fn new(app: &TestApp) -> SessionIdCheck {
        SessionIdCheck(
            tessera::store::connect(&app.config.database_url, 1)
                .await
                .expect("open the store"),
        )
    }

    async fn exists(&self, id: &str) -> bool {
        let id = tessera::domain::SessionId::parse(id).expect("session id");
        self.0.find_session(id).await.expect("find").is_some()
    }
}
