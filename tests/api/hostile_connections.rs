//! Connections that send nothing, stall an HTTP/2 preface, sit idle, or come by the thousand:
//! each is bounded in time from its first byte, and none of them stops the server answering
//! everyone else.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::*;

const TIMEOUT: Duration = Duration::from_secs(1);

async fn spawn_with_client_timeout() -> TestApp {
    spawn_app_with(|c| c.client_timeout = TIMEOUT).await
}

/// Connects, sends `bytes` (maybe none), and waits for the server to close the connection;
/// returns how long that took from the connect.
async fn closed_after(app: &TestApp, bytes: &[u8]) -> Duration {
    let started = Instant::now();
    let mut stream = TcpStream::connect(app.addr).await.expect("connect");
    if !bytes.is_empty() {
        // A refused connection may already be closed: a failed write is fine.
        let _ = stream.write_all(bytes).await;
    }
    let mut sink = Vec::new();
    tokio::time::timeout(Duration::from_secs(8), stream.read_to_end(&mut sink))
        .await
        .unwrap_or_else(|_| panic!("still open after 8 s (sent {} bytes)", bytes.len()))
        .ok();
    started.elapsed()
}

/// Sends `GET /healthz` on a keep-alive connection and returns the start of its answer.
async fn get_healthz(stream: &mut TcpStream) -> String {
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut buf = vec![0u8; 4096];
    let n = stream.read(&mut buf).await.expect("read");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

fn assert_within_the_timeout(took: Duration) {
    assert!(took < TIMEOUT * 3, "closed after {took:?}, timeout {TIMEOUT:?}");
}

#[tokio::test]
async fn a_socket_that_sends_nothing_is_closed() {
    let app = spawn_with_client_timeout().await;
    assert_within_the_timeout(closed_after(&app, b"").await);
}

#[tokio::test]
async fn a_stalled_http2_preface_is_closed() {
    let app = spawn_with_client_timeout().await;
    assert_within_the_timeout(closed_after(&app, b"PRI * HTTP/2.0\r\n").await);
}

#[tokio::test]
async fn a_full_http2_preface_and_settings_then_nothing_is_closed() {
    let app = spawn_with_client_timeout().await;
    let mut preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    // An empty SETTINGS frame: length 0, type 4, flags 0, stream 0.
    preface.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    assert_within_the_timeout(closed_after(&app, &preface).await);
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed() {
    let app = spawn_with_client_timeout().await;
    let mut stream = TcpStream::connect(app.addr).await.expect("connect");
    let answer = get_healthz(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let idle_from = Instant::now();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(8), stream.read_to_end(&mut rest))
        .await
        .expect("an idle keep-alive connection is closed")
        .ok();
    assert_within_the_timeout(idle_from.elapsed());
}

#[tokio::test]
async fn a_head_trickled_a_byte_at_a_time_is_cut_off() {
    let app = spawn_with_client_timeout().await;
    let started = Instant::now();
    let mut stream = TcpStream::connect(app.addr).await.expect("connect");
    // A byte every 100 ms never lets the connection go quiet, but the head is never complete.
    let head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Padding: "
        .iter()
        .chain(std::iter::repeat(&b'a'));
    for byte in head {
        if stream.write_all(&[*byte]).await.is_err() {
            break;
        }
        let mut probe = [0u8; 1];
        match tokio::time::timeout(Duration::from_millis(100), stream.read(&mut probe)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(_)) => panic!("an answer to an unfinished head"),
            Err(_) => {}
        }
        assert!(started.elapsed() < Duration::from_secs(8), "still open after 8 s");
    }
    assert_within_the_timeout(started.elapsed());
}

#[tokio::test]
async fn a_keep_alive_connection_in_steady_use_outlives_the_timeout() {
    let app = spawn_with_client_timeout().await;
    let mut stream = TcpStream::connect(app.addr).await.expect("connect");
    let started = Instant::now();
    // Requests for three timeouts, each head complete well within one: never cut off.
    let mut answered = 0;
    while started.elapsed() < TIMEOUT * 3 {
        let answer = get_healthz(&mut stream).await;
        assert!(
            answer.starts_with("HTTP/1.1 200"),
            "request {answered} after {:?}: {answer}",
            started.elapsed()
        );
        answered += 1;
        tokio::time::sleep(TIMEOUT / 4).await;
    }
    assert!(answered >= 8, "{answered}");
}

/// Holds `n` connected sockets that send nothing.
async fn idle_sockets(app: &TestApp, n: usize) -> Vec<TcpStream> {
    let mut sockets = Vec::with_capacity(n);
    for _ in 0..n {
        sockets.push(TcpStream::connect(app.addr).await.expect("connect"));
    }
    sockets
}

#[tokio::test]
async fn healthz_answers_while_1000_idle_sockets_are_open() {
    // The test process holds both ends of every socket.
    tessera::startup::raise_open_file_limit();
    let app = spawn_app_with(|c| {
        c.client_timeout = Duration::from_secs(20);
        c.max_connections = 1_100;
        c.max_connections_per_ip = 0;
    })
    .await;
    let sockets = idle_sockets(&app, 1_000).await;
    let started = Instant::now();
    let health = tokio::time::timeout(Duration::from_secs(5), app.get("/healthz"))
        .await
        .expect("/healthz answers within 5 s");
    assert_status(health, 200).await;
    assert!(started.elapsed() < Duration::from_secs(5));
    // The idle sockets really were being held (not refused): the first is still open.
    let mut first = sockets.into_iter().next().expect("a socket");
    let mut byte = [0u8; 1];
    let still_open = tokio::time::timeout(Duration::from_millis(200), first.read(&mut byte)).await;
    assert!(still_open.is_err(), "the idle socket was held open, not refused");
}

#[tokio::test]
async fn connections_over_the_per_address_cap_are_refused_at_once() {
    let app = spawn_app_with(|c| {
        c.client_timeout = Duration::from_secs(20);
        c.max_connections_per_ip = 3;
    })
    .await;
    // The fourth from the same address is refused.
    assert_refused_beyond(&app, 3).await;
}

/// With `cap` idle connections open, the next one is closed without an answer, at once;
/// closing them makes room again.
async fn assert_refused_beyond(app: &TestApp, cap: usize) {
    let held = idle_sockets(app, cap).await;
    let took = closed_after(app, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(took < Duration::from_secs(1), "refused after {took:?}");
    drop(held);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_status(app.get("/healthz").await, 200).await;
}

#[tokio::test]
async fn connections_over_the_total_cap_are_refused_at_once() {
    let app = spawn_app_with(|c| {
        c.client_timeout = Duration::from_secs(20);
        c.max_connections = 2;
        c.max_connections_per_ip = 0;
    })
    .await;
    assert_refused_beyond(&app, 2).await;
}

#[tokio::test]
async fn a_body_nobody_reads_does_not_hold_the_connection() {
    let app = spawn_with_client_timeout().await;
    // /healthz reads no body; the client promises one and sends a byte of it.
    let took = closed_after(
        &app,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nx",
    )
    .await;
    assert_within_the_timeout(took);
}

#[tokio::test]
async fn a_client_that_never_reads_its_answers_is_cut_off() {
    let app = spawn_with_client_timeout().await;
    // A fixed, small receive buffer: left to autotuning, loopback buffers may grow to tens of
    // MiB (`tcp_rmem`), enough to hold every answer, and the test would pass or fail with the
    // machine's load instead of with the server.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(64 * 1024).expect("SO_RCVBUF");
    let stream = socket.connect(app.addr).await.expect("connect");
    let (mut reader, mut writer) = stream.into_split();
    // Far more pipelined requests than socket buffers hold answers for; nothing is read.
    const REQUESTS: usize = 100_000;
    let request = b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n";
    let sending = tokio::spawn(async move {
        let all: Vec<u8> = request
            .iter()
            .copied()
            .cycle()
            .take(request.len() * REQUESTS)
            .collect();
        let _ = writer.write_all(&all).await;
        writer
    });
    // Long enough for the server to fill the buffers and stall, then for its timeout.
    tokio::time::sleep(TIMEOUT * 6).await;
    let mut answers = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), reader.read_to_end(&mut answers)).await;
    sending.abort();
    let received = answers.windows(12).filter(|w| w == b"HTTP/1.1 404").count();
    assert!(read.is_ok(), "the connection was closed");
    assert!(
        received < REQUESTS,
        "the server waited for a client that would not read ({received} answers)"
    );
}

/// A request head that never ends is not buffered past 64 KiB: the server answers `431` as
/// soon as the buffer is full, instead of holding hundreds of KiB per connection until the
/// client timeout.
#[tokio::test]
async fn an_endless_request_head_is_refused_at_64_kib() {
    let app = spawn_app_with(|c| c.client_timeout = Duration::from_secs(30)).await;
    let mut stream = TcpStream::connect(app.addr).await.expect("connect");
    let started = Instant::now();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write");
    let line = format!("X-Filler: {}\r\n", "a".repeat(1000));
    // 100 KiB of header lines, no blank line: the head is never finished. A write may fail
    // once the server has answered and closed; that is the point.
    for _ in 0..100 {
        if stream.write_all(line.as_bytes()).await.is_err() {
            break;
        }
    }
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer))
        .await
        .expect("an answer well before the 30 s client timeout")
        .ok();
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 431"),
        "answered {:?} after {:?}",
        answer.lines().next(),
        started.elapsed()
    );
}
