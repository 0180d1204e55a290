//! Wiring: open the store, start the service, bind the socket, serve until told to stop.
//! The limits each connection lives under are in `connections`, the background upkeep in
//! `maintenance`, the stop signals in `signals`.

mod connections;
pub mod mail;
mod maintenance;
mod signals;

pub use connections::raise_open_file_limit;
pub use signals::shutdown_signal;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tower::ServiceExt as _;

use crate::alerts::{AlertSink, Deliverer, DeliverySettings, NoAlerts, OutboxAlerts, Webhook};
use crate::config::{Config, Passkeys};
use crate::domain::{Clock, SystemClock};
use crate::http::metrics::Metrics;
use crate::http::rate_limit::RateLimiter;
use crate::http::{self, AppState};
use crate::service::aligned_clock::DatabaseAlignedClock;
use crate::service::feed::FeedCredentials;
use crate::service::lockout::LockoutPolicy;
use crate::service::AdminAccess;
use crate::service::{AuthError, AuthService, EmailPolicy, KeyPolicy, PasskeyPolicy, Policy};
use crate::store::{self, Store, StoreError};

/// How long in-flight requests may take to finish after a shutdown signal (the contract
/// promises an exit within 10 s).
const DRAIN_DEADLINE: Duration = Duration::from_secs(9);
/// What a connection may buffer of a request's head (hyper's default is ~400 KiB). The
/// contract refuses Authorization headers over 8 KiB; a bigger head is answered `431` and the
/// connection closed, so a slow client cannot park that much memory per connection.
const MAX_HEADER_BUFFER: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Service(#[from] AuthError),
    #[error("alert webhook: {0}")]
    Alerts(String),
    #[error(transparent)]
    Mail(#[from] crate::mail::MailError),
    #[error("cannot measure the database's clock (instances align their clocks to it): {0}")]
    Clock(StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
}

/// A server bound to its socket and ready to run.
pub struct Application {
    listener: TcpListener,
    addr: SocketAddr,
    router: axum::Router,
    service: Arc<AuthService>,
    store: Arc<dyn Store>,
    /// Set when "now" is the database's clock, measured through ours; re-measured every minute.
    aligned_clock: Option<Arc<DatabaseAlignedClock>>,
    /// Delivers queued alerts while the server runs (set when a webhook is configured).
    deliverer: Option<Arc<Deliverer>>,
    /// Delivers queued mail while the server runs (to the log when no SMTP server is set).
    mailer: Arc<crate::mail::Deliverer>,
    /// Wakes `mailer` when a mail is queued here.
    outbox: crate::mail::Outbox,
    limiters: Vec<Arc<RateLimiter>>,
    /// How long a client may take to send its request headers (and how long a keep-alive
    /// connection may sit idle).
    client_timeout: Duration,
    connections: ConnectionLimits,
}

impl Application {
    /// The server on the system clock, aligned to the database's clock when the database has
    /// one of its own (PostgreSQL).
    pub async fn build(config: &Config) -> Result<Application, StartupError> {
        Self::build_with_base_clock(config, Arc::new(SystemClock)).await
    }

    /// The server on `clock`, exactly as given (tests that move time themselves).
    pub async fn build_with_clock(
        config: &Config,
        clock: Arc<dyn Clock>,
    ) -> Result<Application, StartupError> {
        let store = store::connect(&config.database_url, config.database_max_connections).await?;
        Self::assemble(config, store, clock, None).await
    }

    /// The server on `base` aligned to the database's clock (PostgreSQL), as [`build`] does
    /// with the system clock; refuses to start if the offset cannot be measured. Tests pass
    /// a skewed base to play an instance whose clock is wrong.
    ///
    /// [`build`]: Application::build
    pub async fn build_with_base_clock(
        config: &Config,
        base: Arc<dyn Clock>,
    ) -> Result<Application, StartupError> {
        let store = store::connect(&config.database_url, config.database_max_connections).await?;
        let aligned = DatabaseAlignedClock::measure(Arc::clone(&base), store.as_ref())
            .await
            .map_err(StartupError::Clock)?;
        let clock: Arc<dyn Clock> = match &aligned {
            Some(aligned) => {
                tracing::info!(offset_ms = aligned.offset(), "clock aligned to the database's");
                Arc::clone(aligned) as Arc<dyn Clock>
            }
            None => base,
        };
        Self::assemble(config, store, clock, aligned).await
    }

    async fn assemble(
        config: &Config,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        aligned_clock: Option<Arc<DatabaseAlignedClock>>,
    ) -> Result<Application, StartupError> {
        // Bound first: a listen address that cannot be had stops the start before anything
        // is written (a key rotated for a new algorithm, say).
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
        if let Some(problem) = config.issuer_mismatch(addr) {
            tracing::warn!("{problem}");
        }
        match config.passkeys() {
            Ok(Passkeys::On(party)) => {
                tracing::info!(rp_id = %party.id, origins = %party.origins.join(","), "passkeys on")
            }
            Ok(Passkeys::Off(reason)) => tracing::warn!("passkeys are off: {reason}"),
            Err(e) => tracing::warn!("passkeys are off: {e}"),
        }
        // With a webhook, alerts go to the outbox and this instance runs a deliverer (every
        // instance does: whichever claims an alert first delivers it).
        let (alerts, deliverer): (Arc<dyn AlertSink>, Option<Arc<Deliverer>>) =
            match &config.alert_webhook_url {
                Some(url) => {
                    let webhook = Webhook::new(url, config.alert_webhook_secret.as_deref())
                        .map_err(StartupError::Alerts)?;
                    let wake = Arc::new(tokio::sync::Notify::new());
                    let settings = DeliverySettings {
                        retry_min: config.alert_retry_min,
                        retry_max: config.alert_retry_max,
                        retention: config.alert_retention,
                    };
                    let deliverer = Deliverer::new(
                        Arc::clone(&store),
                        Arc::clone(&clock),
                        webhook,
                        settings,
                        Arc::clone(&wake),
                    )
                    .map_err(StartupError::Alerts)?;
                    (
                        Arc::new(OutboxAlerts::new(
                            Arc::clone(&store),
                            wake,
                            config.alert_events.clone(),
                        )),
                        Some(Arc::new(deliverer)),
                    )
                }
                None => (Arc::new(NoAlerts), None),
            };
        let outbox = crate::mail::Outbox::new();
        let mailer = Arc::new(mail::deliverer(
            config,
            Arc::clone(&store),
            Arc::clone(&clock),
            &outbox,
        )?);
        let service = Arc::new(
            AuthService::start(
                Arc::clone(&store),
                clock,
                alerts,
                policy(config),
                &config.issuer,
                &config.audience,
                outbox.clone(),
            )
            .await?,
        );
        let state = AppState::new(http::Shared {
            service: Arc::clone(&service),
            trust_proxy_headers: config.trust_proxy_headers,
            cookie_secure: config.cookie_secure,
            login_limit: Arc::new(RateLimiter::new(config.login_rate)),
            register_limit: Arc::new(RateLimiter::new(config.login_rate)),
            refresh_limit: Arc::new(RateLimiter::new(config.refresh_rate)),
            admin_limit: Arc::new(RateLimiter::new(config.admin_rate)),
            email_limit: Arc::new(RateLimiter::new(config.login_rate)),
            email_address_limit: Arc::new(RateLimiter::new(http::email::PER_ADDRESS_PER_MINUTE)),
            metrics: Arc::new(match service.pool_usage() {
                Some(_) => Metrics::new().with_pool_gauges(),
                None => Metrics::new(),
            }),
            client_timeout: config.client_timeout,
            discovery: Arc::new(http::discovery::Discovery::new(
                &config.issuer,
                &config.audience,
                !config.revocation_feed_credentials.is_empty(),
            )),
        });
        let limiters = vec![
            Arc::clone(&state.login_limit),
            Arc::clone(&state.register_limit),
            Arc::clone(&state.refresh_limit),
            Arc::clone(&state.admin_limit),
            Arc::clone(&state.email_limit),
            Arc::clone(&state.email_address_limit),
        ];
        let fd_limit = raise_open_file_limit();
        let max_connections = effective_connection_cap(
            config.max_connections,
            fd_limit,
            config.database_max_connections as usize,
        );
        if max_connections < config.max_connections {
            tracing::warn!(
                configured = config.max_connections,
                effective = max_connections,
                open_file_limit = ?fd_limit,
                "connection cap lowered to stay below the open-file limit"
            );
        }
        Ok(Application {
            listener,
            addr,
            router: http::router(state, config),
            service,
            store,
            aligned_clock,
            deliverer,
            mailer,
            outbox,
            limiters,
            client_timeout: config.client_timeout,
            connections: ConnectionLimits::new(max_connections, config.max_connections_per_ip),
        })
    }

    /// The cap on open connections actually in force (the configured one, or less to stay
    /// below the open-file limit).
    pub fn max_connections(&self) -> usize {
        self.connections.max_total()
    }

    /// The login limiter, for tests that need it to track many clients without sending a
    /// request for each.
    #[doc(hidden)]
    pub fn login_rate_limiter(&self) -> Arc<RateLimiter> {
        Arc::clone(&self.limiters[0])
    }

    /// Wakes this instance's mail deliverer: for the flows that queue mail.
    pub fn mail_outbox(&self) -> crate::mail::Outbox {
        self.outbox.clone()
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until `shutdown` completes, then stops accepting and lets requests in flight
    /// finish, for at most [`DRAIN_DEADLINE`]. Every write is one statement (or transaction),
    /// so a request cut off by the deadline never leaves a half-committed rotation.
    ///
    /// The accept loop is ours rather than `axum::serve`'s so that every connection is bounded:
    /// it speaks HTTP/1 only (docs/ARCHITECTURE.md says why), a request head is due within
    /// `client_timeout` of the connection's start and of each answer (`ClientDeadlines`), and
    /// the connection caps refuse sockets beyond them before any work is spent.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let maintenance = Maintenance::spawn(
            Arc::clone(&self.service),
            self.limiters.clone(),
            self.deliverer.clone(),
            Arc::clone(&self.mailer),
            self.aligned_clock
                .clone()
                .map(|clock| (clock, Arc::clone(&self.store))),
        );
        let mut builder = http1::Builder::new();
        // No hyper timer: the request-head deadline is `ClientDeadlines`' (hyper would arm a
        // timer for every request).
        builder.max_buf_size(MAX_HEADER_BUFFER).keep_alive(true);
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
            // Over a cap: close at once (no task, no buffers, nothing read).
            let Some(slot) = self.connections.admit(peer.ip()) else {
                drop(stream);
                continue;
            };
            let _ = stream.set_nodelay(true);
            let router = self.router.clone();
            let cycle = RequestCycle::new();
            let stream = ClientDeadlines::new(stream, self.client_timeout, cycle.clone());
            let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
                cycle.head_arrived();
                request.extensions_mut().insert(ConnectInfo(peer));
                router.clone().oneshot(request.map(axum::body::Body::new))
            });
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            let connection = connections.watch(connection);
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                drop(slot);
            });
        }
        drop(self.listener);
        tokio::select! {
            () = connections.shutdown() => {}
            () = tokio::time::sleep(DRAIN_DEADLINE) => {
                tracing::warn!("requests still in flight at the shutdown deadline were cut off");
            }
        }
        // The background tasks stop here; what the mail deliverer held goes back at once.
        drop(maintenance);
        self.mailer.release_claims().await;
        Ok(())
    }
}

use connections::{effective_connection_cap, ClientDeadlines, ConnectionLimits, RequestCycle};
use maintenance::Maintenance;

/// The service's policy from the configuration: the service defines what it needs, and this
/// is the one place a setting becomes part of it.
pub fn policy(c: &Config) -> Policy {
    Policy {
        access_ttl: c.access_ttl,
        refresh_ttl: c.refresh_ttl,
        session_ttl: c.session_ttl,
        reuse_grace: c.reuse_grace,
        max_sessions: c.max_sessions,
        session_check: c.session_check,
        hash_concurrency: c.hash_concurrency,
        lockout: LockoutPolicy {
            threshold: c.lockout_threshold,
            window: c.lockout_window,
            cooldown: c.lockout_cooldown,
        },
        audit_retention: c.audit_retention,
        feed_credentials: FeedCredentials::new(&c.revocation_feed_credentials),
        admin: AdminAccess::new(&c.admin_role, &c.admin_credentials),
        custom_claims: c.custom_claims.clone(),
        keys: KeyPolicy::new(c.signing_alg, c.master_keys(), c.key_publish_ahead, c.access_ttl),
        email: EmailPolicy {
            require_verified: c.require_verified_email,
            verify_ttl: c.email_verify_ttl,
            reset_ttl: c.password_reset_ttl,
            link_signin: c.email_link_signin,
            link_ttl: c.email_link_ttl,
        },
        passkeys: match c.passkeys() {
            Ok(Passkeys::On(party)) => PasskeyPolicy::new(
                &party.id,
                &party.origins,
                c.product_name.as_deref().unwrap_or("Tessera"),
            ),
            Ok(Passkeys::Off(reason)) => PasskeyPolicy::off(reason),
            Err(e) => PasskeyPolicy::off(e.to_string()),
        },
        reauthentication_max_age: c.reauthentication_max_age,
        mfa_required_roles: c.mfa_required_roles.clone(),
    }
}
