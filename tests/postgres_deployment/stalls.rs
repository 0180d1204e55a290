//! Stalled links to PostgreSQL: a revocation listener lost, frozen for a moment or for good,
//! and every database link of an instance frozen. Memory is never trusted past a stall.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_revocation_listener_never_leaves_a_revoked_session_usable() {
    let Some(db) = TestDatabase::create("listener_lost").await else {
        return;
    };
    let a = Server::start(&db.url, &[]);
    let b = Server::start(&db.url, &[]);
    let c = client();
    let tokens = login(&c, &a, "lost@example.com").await;
    let access = field(&tokens, "access_token");
    assert_eq!(me(&c, &b, &access).await.status(), StatusCode::OK);

    // Cut every instance's listening connection, and keep cutting it while the session is
    // revoked, so the notice has nobody to reach: b must fall back to the database (and the
    // revocation log when it re-subscribes), never to what it remembered.
    let kill_listeners = format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{}' \
         AND application_name = '{}'",
        db.name,
        tessera::store::postgres::LISTENER_APPLICATION_NAME
    );
    let killed = db.admin_count(&kill_listeners).await;
    assert!(killed >= 2, "found the listeners ({killed})");
    tokio::time::sleep(Duration::from_millis(50)).await;
    let r = c
        .post(a.url("/v1/auth/logout"))
        .bearer_auth(&access)
        .send()
        .await
        .expect("logout");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    db.admin_count(&kill_listeners).await;
    assert_unauthorized(me(&c, &b, &access).await, "session_revoked").await;

    // And once the listeners are back, revocations travel by notice again.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let tokens = login_again(&c, &a, "lost@example.com").await;
    assert!(time_until_refused(&c, &a, &b, &tokens).await < Duration::from_millis(100));
    drop((a, b));
    db.drop_database().await;
}

/// The rotation batches' connections are not checked before each batch (that was a second
/// round trip in every batch's turn); one that sat idle is. Cut while idle, as by a database
/// restart or a proxy's idle timeout, it is replaced before a rotation is sent on it, so no
/// client sees the cut.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_connection_cut_while_idle_is_replaced_before_a_rotation_uses_it() {
    let Some(db) = TestDatabase::create("batch_cut").await else {
        return;
    };
    let server = Server::start(&db.url, &[]);
    let c = client();
    let mut tokens = login(&c, &server, "cut@example.com").await;
    let kill_batches = format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{}' \
         AND application_name = '{}'",
        db.name,
        tessera::store::postgres::BATCH_APPLICATION_NAME
    );
    for round in 0..3 {
        let r = refresh(&c, &server, &field(&tokens, "refresh_token")).await;
        assert_eq!(r.status(), StatusCode::OK, "round {round}, before the cut");
        tokens = r.json().await.expect("tokens");
        // Once sqlx has taken the connection back, it is idle: cut it, and let it sit.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let killed = db.admin_count(&kill_batches).await;
        assert!(killed >= 1, "round {round}: found the batch connection");
        tokio::time::sleep(Duration::from_millis(400)).await;
        let r = refresh(&c, &server, &field(&tokens, "refresh_token")).await;
        assert_eq!(r.status(), StatusCode::OK, "round {round}, after the cut");
        tokens = r.json().await.expect("tokens");
    }
    drop(server);
    db.drop_database().await;
}

/// The local TCP ports of a process's sockets (its connections to PostgreSQL among them),
/// read from /proc: which backends are whose.
fn local_ports(pid: u32) -> HashSet<u16> {
    let inodes: HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("the server's descriptors")
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter_map(|target| {
            let target = target.to_string_lossy().into_owned();
            Some(target.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
        })
        .collect();
    let mut ports = HashSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() > 9 && inodes.contains(fields[9]) {
                if let Some(port) = fields[1]
                    .rsplit(':')
                    .next()
                    .and_then(|p| u16::from_str_radix(p, 16).ok())
                {
                    ports.insert(port);
                }
            }
        }
    }
    ports
}

/// The PostgreSQL backends serving `server` (only its revocation listener with `listener`).
async fn backends_of(db: &TestDatabase, server: &Server, listener: bool) -> Vec<i32> {
    let ports: Vec<String> = local_ports(server.child.id())
        .iter()
        .map(u16::to_string)
        .collect();
    let only_listener = if listener {
        format!(
            "AND application_name = '{}'",
            tessera::store::postgres::LISTENER_APPLICATION_NAME
        )
    } else {
        String::new()
    };
    db.admin_ints(&format!(
        "SELECT pid FROM pg_stat_activity WHERE datname = '{}' AND client_port IN ({}) {only_listener}",
        db.name,
        ports.join(", ")
    ))
    .await
}

/// Backend processes stopped with SIGSTOP until dropped (SIGCONT), as a frozen link or a
/// stalled database host would leave them: no error, no EOF, no answer.
struct Frozen(Vec<i32>);

impl Frozen {
    fn freeze(pids: Vec<i32>) -> Frozen {
        assert!(!pids.is_empty(), "no backend to freeze");
        for pid in &pids {
            let stopped = Command::new("kill").args(["-STOP", &pid.to_string()]).status();
            assert!(stopped.is_ok_and(|s| s.success()), "SIGSTOP {pid}");
        }
        Frozen(pids)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        for pid in &self.0 {
            let _ = Command::new("kill").args(["-CONT", &pid.to_string()]).status();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_revocation_listener_is_noticed_within_100_ms() {
    let Some(db) = TestDatabase::create("listener_frozen").await else {
        return;
    };
    let a = Server::start(&db.url, &[("TESSERA_MAX_SESSIONS", "100")]);
    let b = Server::start(&db.url, &[]);
    let c = client();
    login(&c, &a, "frozen@example.com").await;
    let mut delays = Vec::new();
    for _ in 0..5 {
        let tokens = login_again(&c, &a, "frozen@example.com").await;
        let access = field(&tokens, "access_token");
        assert_eq!(me(&c, &b, &access).await.status(), StatusCode::OK);
        // b's listening backend stops answering: no notice, no error, no EOF.
        let frozen = Frozen::freeze(backends_of(&db, &b, true).await);
        tokio::time::sleep(Duration::from_millis(10)).await;
        delays.push(time_until_refused(&c, &a, &b, &tokens).await);
        drop(frozen);
        // Thawed: b is back in step (the heartbeat returns) before the next trial.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    eprintln!("revoked sessions refused by b with its listener frozen after {delays:?}");
    let worst = delays.iter().max().copied().unwrap_or_default();
    assert!(worst < Duration::from_millis(100), "{delays:?}");
    // Back in step: revocations travel by notice again.
    let tokens = login_again(&c, &a, "frozen@example.com").await;
    assert!(time_until_refused(&c, &a, &b, &tokens).await < Duration::from_millis(100));
    drop((a, b));
    db.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_frozen_for_good_is_replaced_by_a_new_subscription() {
    let Some(db) = TestDatabase::create("listener_replaced").await else {
        return;
    };
    let a = Server::start(&db.url, &[("TESSERA_MAX_SESSIONS", "100")]);
    let b = Server::start(&db.url, &[]);
    let c = client();
    login(&c, &a, "replaced@example.com").await;
    let frozen_pids = backends_of(&db, &b, true).await;
    let frozen = Frozen::freeze(frozen_pids.clone());
    // Given up about a second after its heartbeat was due: b subscribes on a new connection.
    assert!(
        eventually(Duration::from_secs(5), || async {
            backends_of(&db, &b, true)
                .await
                .iter()
                .any(|pid| !frozen_pids.contains(pid))
        })
        .await,
        "b never subscribed again"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    // In step again while the old backend is still frozen: revocations by notice, from memory.
    for _ in 0..3 {
        let tokens = login_again(&c, &a, "replaced@example.com").await;
        assert!(time_until_refused(&c, &a, &b, &tokens).await < Duration::from_millis(100));
    }
    // Thawed before the database is dropped: a stopped backend cannot be terminated.
    drop(frozen);
    drop((a, b));
    db.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_whose_database_links_all_freeze_stops_answering_from_memory() {
    let Some(db) = TestDatabase::create("links_frozen").await else {
        return;
    };
    let a = Server::start(&db.url, &[]);
    let b = Server::start(&db.url, &[]);
    let c = client();
    let tokens = login(&c, &a, "stalled@example.com").await;
    let access = field(&tokens, "access_token");
    assert_eq!(me(&c, &b, &access).await.status(), StatusCode::OK);
    let frozen = Frozen::freeze(backends_of(&db, &b, false).await);
    tokio::time::sleep(Duration::from_millis(10)).await;
    let r = c
        .post(a.url("/v1/auth/logout"))
        .bearer_auth(&access)
        .send()
        .await
        .expect("logout");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let revoked = Instant::now();
    // For the next second b may refuse, or not answer at all (its database reads wait on the
    // frozen links), but from 100 ms after the revocation on it never accepts the token.
    let quick = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .expect("client");
    while revoked.elapsed() < Duration::from_secs(1) {
        let asked = revoked.elapsed();
        let accepted = quick
            .get(b.url("/v1/auth/me"))
            .bearer_auth(&access)
            .send()
            .await
            .is_ok_and(|r| r.status() == StatusCode::OK);
        assert!(
            !accepted || asked < Duration::from_millis(100),
            "b accepted the revoked session's token {asked:?} after the revocation, from memory"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(frozen);
    // Thawed, b answers again, and refuses the token.
    assert!(
        eventually(Duration::from_secs(10), || async {
            me(&c, &b, &access).await.status() == StatusCode::UNAUTHORIZED
        })
        .await,
        "b recovered"
    );
    drop((a, b));
    db.drop_database().await;
}
