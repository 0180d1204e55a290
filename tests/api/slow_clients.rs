//! Clients that never finish sending: they must not hold a connection (and a task) forever.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::*;

async fn spawn_with_one_second_client_timeout() -> TestApp {
    spawn_app_with(|c| c.client_timeout = Duration::from_secs(1)).await
}

/// Sends `partial` and returns what the server answers before closing, with how long it took.
async fn send_and_read_until_closed(app: &TestApp, partial: &[u8]) -> (String, Duration) {
    let mut stream = TcpStream::connect(app.addr).await.expect("connect");
    stream.write_all(partial).await.expect("write");
    let started = Instant::now();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer))
        .await
        .expect("the server closes the connection within 5 s")
        .expect("read");
    (String::from_utf8_lossy(&answer).into_owned(), started.elapsed())
}

#[tokio::test]
async fn unfinished_headers_are_cut_off() {
    let app = spawn_with_one_second_client_timeout().await;
    let (_, took) = send_and_read_until_closed(&app, b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await;
    assert!(took < Duration::from_secs(3), "closed after {took:?}");
}

#[tokio::test]
async fn an_unfinished_body_is_408_request_timeout() {
    let app = spawn_with_one_second_client_timeout().await;
    let partial = b"POST /v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
                    Content-Length: 100\r\nConnection: close\r\n\r\n{\"email\":";
    let (answer, took) = send_and_read_until_closed(&app, partial).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"code\":\"request_timeout\""), "{answer}");
    assert!(took < Duration::from_secs(3), "answered after {took:?}");
}

#[tokio::test]
async fn prompt_clients_are_unaffected() {
    let app = spawn_with_one_second_client_timeout().await;
    let tokens = app.signup_and_login(EMAIL).await;
    // Two requests on one keep-alive connection, with a pause shorter than the timeout.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_status(app.me(&s(&tokens, "access_token")).await, 200).await;
}
