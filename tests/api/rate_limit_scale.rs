//! The rate limiter's cost per request does not grow with the number of clients it tracks.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tessera::startup::Application;

use crate::helpers::*;
use crate::rate_limits::assert_rate_limited;

#[tokio::test]
async fn a_rate_limited_login_stays_fast_with_200_000_clients_tracked() {
    let storage = test_storage().await;
    let mut config = test_config(&storage);
    config.login_rate = 1;
    let app = Application::build(&config).await.expect("build");
    let limiter = app.login_rate_limiter();
    let app = serve(app, config, Arc::new(storage));
    let now = Instant::now();
    for i in 0..200_000u32 {
        let _ = limiter.check(&std::net::Ipv4Addr::from(0x0a00_0000 + i).to_string());
    }
    assert!(now.elapsed() < Duration::from_secs(60));
    let wrong = json!({ "email": EMAIL, "password": "not the password" });
    assert_problem(
        app.post_json("/v1/auth/login", &wrong).await,
        401,
        "invalid_credentials",
    )
    .await;
    let mut took = Vec::new();
    for _ in 0..11 {
        let started = Instant::now();
        let r = app.post_json("/v1/auth/login", &wrong).await;
        took.push(started.elapsed());
        assert_rate_limited(r).await;
    }
    took.sort();
    assert!(took[5] < Duration::from_millis(5), "median login {:?}", took[5]);
}
