//! Wiring: open the store, start the service, bind the socket, serve until told to stop.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder as ConnectionBuilder;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tower::ServiceExt as _;

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
/// How often the rate limiters drop clients idle for a whole window.
const PRUNE_RATE_LIMITS_EVERY: Duration = Duration::from_secs(10);

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
    limiters: Vec<Arc<RateLimiter>>,
    /// How long a client may take to send its request headers.
    client_timeout: Duration,
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
            client_timeout: config.client_timeout,
        };
        let limiters = vec![
            Arc::clone(&state.login_limit),
            Arc::clone(&state.register_limit),
            Arc::clone(&state.refresh_limit),
        ];
        Ok(Application {
            listener,
            addr,
            router: http::router(state, config.body_limit),
            service,
            limiters,
            client_timeout: config.client_timeout,
        })
    }

    /// The login limiter, for tests that need it to track many clients without sending a
    /// request for each.
    #[doc(hidden)]
    pub fn login_rate_limiter(&self) -> Arc<RateLimiter> {
        Arc::clone(&self.limiters[0])
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until `shutdown` completes, then stops accepting and lets requests in flight
    /// finish, for at most [`DRAIN_DEADLINE`]. Every write is one statement (or transaction),
    /// so a request cut off by the deadline never leaves a half-committed rotation.
    ///
    /// The accept loop is ours rather than `axum::serve`'s so that hyper gets a timer: without
    /// one, a client could hold a connection forever by never finishing its headers.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let _maintenance = Maintenance::spawn(Arc::clone(&self.service), self.limiters.clone());
        let mut builder = ConnectionBuilder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.client_timeout);
        let connections = GracefulShutdown::new();
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let (stream, peer) = tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // E.g. out of file descriptors: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            let router = self.router.clone();
            let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                router.clone().oneshot(request.map(axum::body::Body::new))
            });
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            let connection = connections.watch(connection.into_owned());
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
            });
        }
        drop(self.listener);
        tokio::select! {
            () = connections.shutdown() => {}
            () = tokio::time::sleep(DRAIN_DEADLINE) => {
                tracing::warn!("requests still in flight at the shutdown deadline were cut off");
            }
        }
        Ok(())
    }
}

/// Background upkeep: deleting long-ended sessions, reloading signing keys, and dropping
/// idle clients from the rate limiters. The tasks
/// stop when this is dropped.
struct Maintenance(Vec<tokio::task::JoinHandle<()>>);

impl Maintenance {
    fn spawn(service: Arc<AuthService>, limiters: Vec<Arc<RateLimiter>>) -> Maintenance {
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
        let prune = tokio::spawn(async move {
            let mut every = tokio::time::interval(PRUNE_RATE_LIMITS_EVERY);
            loop {
                every.tick().await;
                for limiter in &limiters {
                    limiter.prune();
                }
            }
        });
        Maintenance(vec![sweep, reload, prune])
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
