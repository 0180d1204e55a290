//! Background upkeep of a running server, as tasks that stop when it is dropped.

use std::sync::Arc;
use std::time::Duration;

use crate::alerts::Deliverer;
use crate::http::rate_limit::RateLimiter;
use crate::service::aligned_clock::DatabaseAlignedClock;
use crate::service::AuthService;
use crate::store::Store;

const SWEEP_EVERY: Duration = Duration::from_secs(600);
/// How often signing keys are re-read, so a rotation by another process is picked up and
/// retired keys age out of the JWKS.
const RELOAD_KEYS_EVERY: Duration = crate::service::KEY_RELOAD_EVERY;
/// How often the offset to the database's clock is measured again.
const RESYNC_CLOCK_EVERY: Duration = Duration::from_secs(60);
/// How often the rate limiters drop clients idle for a whole window.
const PRUNE_RATE_LIMITS_EVERY: Duration = Duration::from_secs(10);

/// Background upkeep: deleting long-ended sessions, reloading signing keys, dropping idle
/// clients from the rate limiters, delivering alerts and mail, and re-measuring the database's clock. The tasks
/// stop when this is dropped.
pub(super) struct Maintenance(Vec<tokio::task::JoinHandle<()>>);

impl Maintenance {
    pub(super) fn spawn(
        service: Arc<AuthService>,
        limiters: Vec<Arc<RateLimiter>>,
        deliverer: Option<Arc<Deliverer>>,
        mailer: Arc<crate::mail::Deliverer>,
        aligned_clock: Option<(Arc<DatabaseAlignedClock>, Arc<dyn Store>)>,
    ) -> Maintenance {
        let sweeper = Arc::clone(&service);
        let sweep = tokio::spawn(async move {
            let mut every = tokio::time::interval(SWEEP_EVERY);
            loop {
                every.tick().await;
                match sweeper.sweeper().run().await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(deleted = n, "swept ended sessions"),
                    Err(e) => tracing::warn!(error = %e, "session sweep failed"),
                }
            }
        });
        let reloader = Arc::clone(&service);
        let reload = tokio::spawn(async move {
            let mut every = tokio::time::interval(RELOAD_KEYS_EVERY);
            every.tick().await; // the first tick is immediate; the keys were just loaded
            loop {
                every.tick().await;
                if let Err(e) = reloader.keys().reload().await {
                    tracing::warn!(error = %e, "signing key reload failed");
                }
            }
        });
        let prune = tokio::spawn(async move {
            let mut every = tokio::time::interval(PRUNE_RATE_LIMITS_EVERY);
            loop {
                every.tick().await;
                for limiter in &limiters {
                    limiter.prune();
                }
            }
        });
        let revocations = Arc::clone(&service);
        let follow = tokio::spawn(async move { revocations.revocations().follow().await });
        let key_watcher = Arc::clone(&service);
        let watch_keys = tokio::spawn(async move { key_watcher.keys().watch().await });
        let mut tasks = vec![sweep, reload, prune, follow, watch_keys];
        if let Some(deliverer) = deliverer {
            tasks.push(tokio::spawn(deliverer.run()));
        }
        tasks.push(tokio::spawn(mailer.run()));
        if let Some((clock, store)) = aligned_clock {
            tasks.push(tokio::spawn(async move {
                let mut every = tokio::time::interval(RESYNC_CLOCK_EVERY);
                every.tick().await; // just measured
                loop {
                    every.tick().await;
                    match clock.resync(store.as_ref()).await {
                        Ok(offset_ms) => tracing::debug!(offset_ms, "clock re-aligned to the database's"),
                        // The last offset stays in force: clocks drift by milliseconds a minute.
                        Err(e) => tracing::warn!(error = %e, "could not re-measure the database's clock"),
                    }
                }
            }));
        }
        Maintenance(tasks)
    }
}

impl Drop for Maintenance {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}
