//! Wiring: open the store, start the service, bind the socket, serve until told to stop.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::alerts::{AlertSink, NoAlerts, WebhookAlerts};
use crate::config::Config;
use crate::domain::{Clock, SystemClock};
use crate::http::metrics::Metrics;
use crate::http::rate_limit::RateLimiter;
use crate::http::{self, AppState};
use crate::service::{AuthError, AuthService, Policy};
use crate::store::{self, StoreError};

/// How long in-flight requests may take to finish after a shutdown signal (the contract
/// promises an exit within 10 s).
const DRAIN_DEADLINE: Duration = Duration::from_secs(9);
const SWEEP_EVERY: Duration = Duration::from_secs(600);
/// How often signing keys are re-read, so a rotation by another process is picked up and
/// retired keys age out of the JWKS.
const RELOAD_KEYS_EVERY: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Service(#[from] AuthError),
    #[error("alert webhook: {0}")]
    Alerts(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
}

/// A server bound to its socket and ready to run.
pub struct Application {
    listener: TcpListener,
    addr: SocketAddr,
    router: axum::Router,
    service: Arc<AuthService>,
}

impl Application {
    pub async fn build(config: &Config) -> Result<Application, StartupError> {
        Self::build_with_clock(config, Arc::new(SystemClock)).await
    }

    pub async fn build_with_clock(
        config: &Config,
        clock: Arc<dyn Clock>,
    ) -> Result<Application, StartupError> {
        let store = store::connect(&config.database_url, config.database_max_connections).await?;
        let alerts: Arc<dyn AlertSink> = match &config.alert_webhook_url {
            Some(url) => Arc::new(
                WebhookAlerts::new(url, config.alert_webhook_secret.as_deref())
                    .map_err(StartupError::Alerts)?,
            ),
            None => Arc::new(NoAlerts),
        };
        let service = Arc::new(
            AuthService::start(
                store,
                clock,
                alerts,
                Policy::from_config(config),
                &config.issuer,
                &config.audience,
            )
            .await?,
        );
        let addr = config.listen_addr();
        let listener = TcpListener::bind(&addr)
            .await
            .map_err(|source| StartupError::Bind {
                addr: addr.clone(),
                source,
            })?;
        let addr = listener
            .local_addr()
            .map_err(|source| StartupError::Bind { addr, source })?;
        let state = AppState {
            service: Arc::clone(&service),
            trust_proxy_headers: config.trust_proxy_headers,
            cookie_secure: config.cookie_secure,
            login_limit: Arc::new(RateLimiter::new(config.login_rate)),
            register_limit: Arc::new(RateLimiter::new(config.login_rate)),
            refresh_limit: Arc::new(RateLimiter::new(config.refresh_rate)),
            metrics: Arc::new(Metrics::new()),
        };
        Ok(Application {
            listener,
            addr,
            router: http::router(state, config.body_limit),
            service,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until `shutdown` completes, then stops accepting and lets requests in flight
    /// finish, for at most [`DRAIN_DEADLINE`]. A rotation is one database transaction, so one
    /// cut off by the deadline is rolled back whole, never half-committed.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let _maintenance = Maintenance::spawn(Arc::clone(&self.service));
        let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
        let server = axum::serve(
            self.listener,
            self.router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            shutdown.await;
            let _ = stopping_tx.send(());
        });
        let deadline = async move {
            if stopping_rx.await.is_ok() {
                tokio::time::sleep(DRAIN_DEADLINE).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            result = server => result,
            () = deadline => {
                tracing::warn!("requests still in flight at the shutdown deadline were cut off");
                Ok(())
            }
        }
    }
}

/// Background upkeep: deleting long-ended sessions and reloading signing keys. The tasks
/// stop when this is dropped.
struct Maintenance(Vec<tokio::task::JoinHandle<()>>);

impl Maintenance {
    fn spawn(service: Arc<AuthService>) -> Maintenance {
        let sweeper = Arc::clone(&service);
        let sweep = tokio::spawn(async move {
            let mut every = tokio::time::interval(SWEEP_EVERY);
            loop {
                every.tick().await;
                match sweeper.sweep().await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(deleted = n, "swept ended sessions"),
                    Err(e) => tracing::warn!(error = %e, "session sweep failed"),
                }
            }
        });
        let reload = tokio::spawn(async move {
            let mut every = tokio::time::interval(RELOAD_KEYS_EVERY);
            every.tick().await; // the first tick is immediate; the keys were just loaded
            loop {
                every.tick().await;
                if let Err(e) = service.reload_keys().await {
                    tracing::warn!(error = %e, "signing key reload failed");
                }
            }
        });
        Maintenance(vec![sweep, reload])
    }
}

impl Drop for Maintenance {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
