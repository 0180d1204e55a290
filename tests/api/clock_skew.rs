//! Instances on PostgreSQL read "now" as the database's clock measured through their own, so
//! an instance whose system clock is wrong by more than the grace window still agrees with the
//! others about grace and expiry.

use std::sync::Arc;

use tessera::domain::{Clock, SystemClock, Timestamp};
use tessera::startup::Application;

use crate::helpers::*;

/// The system clock, off by `skew_ms`.
struct SkewedClock(i64);

impl Clock for SkewedClock {
    fn now(&self) -> Timestamp {
        Timestamp(SystemClock.now().millis() + self.0)
    }
}

#[tokio::test]
async fn a_second_instance_whose_clock_is_ahead_still_forgives_an_honest_replay() {
    if std::env::var("TESSERA_TEST_BACKEND").as_deref() != Ok("postgres") {
        eprintln!(
            "SKIPPED: instances align their clocks to PostgreSQL's; run with TESSERA_TEST_BACKEND=postgres"
        );
        return;
    }
    let storage = Arc::new(test_storage().await);
    let config = test_config(&storage); // grace 10 s
    let honest = Application::build(&config).await.expect("build");
    let honest = serve(honest, config.clone(), Arc::clone(&storage));
    // Its system clock is 30 s fast: three grace windows.
    let fast = Application::build_with_base_clock(&config, Arc::new(SkewedClock(30_000)))
        .await
        .expect("build");
    let fast = serve(fast, config, Arc::clone(&storage));

    let t = honest.signup_and_login(EMAIL).await;
    let first = honest.refresh_ok(&s(&t, "refresh_token")).await;
    // The response was lost; the client retries at once, and the balancer picks the other.
    let retried = fast.refresh_ok(&s(&t, "refresh_token")).await;
    assert_eq!(s(&retried, "refresh_token"), s(&first, "refresh_token"));
    // And it signs tokens the honest instance accepts.
    json_ok(honest.me(&s(&retried, "access_token")).await).await;
}
