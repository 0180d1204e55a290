//! Clients that send a login and hang up at once cannot multiply password hashing: the
//! permit travels with the hash, so the number running stays at its bound, memory stays
//! bounded, and each hash that ran still leaves its `login_failed` audit record. Runs the real
//! binary so its memory is measured alone.

use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::binary::Served;

const PERMITS: usize = 4;
const CLIENTS: usize = 400;
const MAX_RSS_KIB: u64 = 150 * 1024;

/// A gauge's value from `/metrics`.
fn gauge(served: &Served, name: &str) -> u64 {
    let (status, text) = served.request("GET", "/metrics", None);
    assert_eq!(status, 200, "{text}");
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
        .unwrap_or_else(|| panic!("{name} missing from /metrics:\n{text}"))
}

/// The peak resident set size of process `pid`, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_that_hang_up_leave_hashing_bounded_and_audited() {
    let dir = tempfile::tempdir().unwrap();
    let served = Served::start_with(
        dir.path(),
        &[],
        &[
            ("TESSERA_HASH_CONCURRENCY", PERMITS.to_string()),
            ("TESSERA_MAX_CONNECTIONS_PER_IP", "0".into()),
        ],
    );
    assert_eq!(gauge(&served, "tessera_password_hash_permits"), PERMITS as u64);
    // Unknown emails, one per client: the dummy hash, a failed login. (One email for all
    // would be held to its lock's threshold of attempts at once, before any hashing.)
    let request = |i: usize| {
        let body =
            serde_json::json!({ "email": format!("hangup{i}@example.com"), "password": "pw" }).to_string();
        format!(
            "POST /v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    let addr = served.addr();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let request = request(i);
            tokio::spawn(async move {
                let Ok(mut stream) = TcpStream::connect(addr).await else {
                    return;
                };
                let _ = stream.write_all(request.as_bytes()).await;
                tokio::time::sleep(Duration::from_millis(3)).await;
                // Hang up without reading the answer.
            })
        })
        .collect();
    for client in clients {
        client.await.unwrap();
    }

    // Let every hash that started finish.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut finished = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now_finished = gauge(&served, "tessera_password_hashes_finished");
        if gauge(&served, "tessera_password_hashes_in_progress") == 0 && now_finished == finished {
            break;
        }
        finished = now_finished;
        assert!(Instant::now() < deadline, "hashing did not settle");
    }
    let peak = gauge(&served, "tessera_password_hashes_peak");
    assert!(finished > 0, "some hashes ran");
    // At most the permits; fewer is possible on a slow machine, where the clients' hang-ups
    // can outrun the hashing that would have overlapped.
    assert!(
        (1..=PERMITS as u64).contains(&peak),
        "hashes at once never beyond the permits: {peak}"
    );
    let rss = peak_rss_kib(served.pid());
    eprintln!(
        "{finished} hashes ran, at most {peak} at once; peak RSS {} MiB",
        rss / 1024
    );
    assert!(rss < MAX_RSS_KIB, "peak RSS {} MiB", rss / 1024);

    // Every hash that ran was a failed login, and each is on record.
    let db = rusqlite::Connection::open(dir.path().join("tessera.db")).expect("open the database");
    let audited: i64 = db
        .query_row(
            "SELECT count(*) FROM audit_events WHERE event = 'login_failed'",
            [],
            |r| r.get(0),
        )
        .expect("count");
    assert_eq!(
        audited as u64, finished,
        "one login_failed record per hash that ran"
    );
}
