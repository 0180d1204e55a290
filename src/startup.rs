//! Wiring: open the store, start the service, bind the socket, serve until told to stop.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::ServiceExt as _;

use crate::alerts::{AlertSink, Deliverer, DeliverySettings, NoAlerts, OutboxAlerts, Webhook};
use crate::config::Config;
use crate::domain::{ClientNetwork, Clock, SystemClock};
use crate::http::metrics::Metrics;
use crate::http::rate_limit::RateLimiter;
use crate::http::{self, AppState};
use crate::service::aligned_clock::DatabaseAlignedClock;
use crate::service::{AuthError, AuthService, Policy};
use crate::store::{self, Store, StoreError};

/// How long in-flight requests may take to finish after a shutdown signal (the contract
/// promises an exit within 10 s).
const DRAIN_DEADLINE: Duration = Duration::from_secs(9);
/// What a connection may buffer of a request's head (hyper's default is ~400 KiB). The
/// contract refuses Authorization headers over 8 KiB; a bigger head is answered `431` and the
/// connection closed, so a slow client cannot park that much memory per connection.
const MAX_HEADER_BUFFER: usize = 64 * 1024;
const SWEEP_EVERY: Duration = Duration::from_secs(600);
/// How often signing keys are re-read, so a rotation by another process is picked up and
/// retired keys age out of the JWKS.
const RELOAD_KEYS_EVERY: Duration = crate::service::KEY_RELOAD_EVERY;
/// How often the offset to the database's clock is measured again.
const RESYNC_CLOCK_EVERY: Duration = Duration::from_secs(60);
/// How often the rate limiters drop clients idle for a whole window.
const PRUNE_RATE_LIMITS_EVERY: Duration = Duration::from_secs(10);
/// File descriptors kept free of client connections: the database pool, the listener, log
/// files, the webhook client, DNS.
const RESERVED_FDS: usize = 128;

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Service(#[from] AuthError),
    #[error("alert webhook: {0}")]
    Alerts(String),
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
        let service = Arc::new(
            AuthService::start(
                Arc::clone(&store),
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
            metrics: Arc::new(match service.pool_usage() {
                Some(_) => Metrics::new().with_pool_gauges(),
                None => Metrics::new(),
            }),
            client_timeout: config.client_timeout,
            discovery: Arc::new(http::discovery::Discovery::new(
                &config.issuer,
                !config.revocation_feed_credentials.is_empty(),
            )),
        };
        let limiters = vec![
            Arc::clone(&state.login_limit),
            Arc::clone(&state.register_limit),
            Arc::clone(&state.refresh_limit),
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
            limiters,
            client_timeout: config.client_timeout,
            connections: ConnectionLimits::new(max_connections, config.max_connections_per_ip),
        })
    }

    /// The cap on open connections actually in force (the configured one, or less to stay
    /// below the open-file limit).
    pub fn max_connections(&self) -> usize {
        self.connections.max_total
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
    /// The accept loop is ours rather than `axum::serve`'s so that every connection is bounded:
    /// it speaks HTTP/1 only (docs/ARCHITECTURE.md says why), hyper's header timer runs from
    /// the moment the connection is accepted and again whenever a keep-alive connection goes
    /// idle, and the connection caps refuse sockets beyond them before any work is spent.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let _maintenance = Maintenance::spawn(
            Arc::clone(&self.service),
            self.limiters.clone(),
            self.deliverer.clone(),
            self.aligned_clock
                .clone()
                .map(|clock| (clock, Arc::clone(&self.store))),
        );
        let mut builder = http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(self.client_timeout)
            .max_buf_size(MAX_HEADER_BUFFER)
            .keep_alive(true);
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
            let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                router.clone().oneshot(request.map(axum::body::Body::new))
            });
            let stream = WriteDeadline::new(stream, self.client_timeout);
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
        Ok(())
    }
}

/// Open connections per client network (an IPv4 address or an IPv6 /64).
type OpenPerIp = Arc<Mutex<HashMap<ClientNetwork, usize>>>;

/// A connection whose writes fail once they have made no progress for `timeout`: a client
/// that stops reading its answers (its receive window closed) is cut off instead of holding
/// the connection, its buffers and its task forever. hyper has no write timeout of its own.
struct WriteDeadline {
    stream: TcpStream,
    timeout: Duration,
    /// Armed while a write or flush is pending; disarmed by any progress.
    stalled_since: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl WriteDeadline {
    fn new(stream: TcpStream, timeout: Duration) -> WriteDeadline {
        WriteDeadline {
            stream,
            timeout,
            stalled_since: None,
        }
    }

    /// Passes a write-side poll through, failing it once it has been pending for `timeout`.
    fn deadline<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<std::io::Result<T>>,
    ) -> Poll<std::io::Result<T>> {
        if polled.is_ready() {
            self.stalled_since = None;
            return polled;
        }
        let timeout = self.timeout;
        let timer = self
            .stalled_since
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the client stopped reading",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for WriteDeadline {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for WriteDeadline {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.deadline(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.deadline(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let polled = Pin::new(&mut self.stream).poll_flush(cx);
        self.deadline(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let polled = Pin::new(&mut self.stream).poll_shutdown(cx);
        self.deadline(cx, polled)
    }
}

/// The caps on open connections: in total, and per client address.
struct ConnectionLimits {
    max_total: usize,
    total: Arc<Semaphore>,
    /// `0`: no per-address cap.
    max_per_ip: usize,
    per_ip: OpenPerIp,
}

/// One admitted connection; dropping it frees its place under both caps.
struct ConnectionSlot {
    _total: OwnedSemaphorePermit,
    per_ip: Option<(ClientNetwork, OpenPerIp)>,
}

impl ConnectionLimits {
    fn new(max_total: usize, max_per_ip: usize) -> ConnectionLimits {
        ConnectionLimits {
            max_total,
            total: Arc::new(Semaphore::new(max_total.min(Semaphore::MAX_PERMITS))),
            max_per_ip,
            per_ip: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// A place for a new connection from `ip`, or `None` when a cap is reached.
    fn admit(&self, ip: IpAddr) -> Option<ConnectionSlot> {
        let total = Arc::clone(&self.total).try_acquire_owned().ok()?;
        if self.max_per_ip == 0 {
            return Some(ConnectionSlot {
                _total: total,
                per_ip: None,
            });
        }
        let ip = ClientNetwork::of(ip);
        {
            // Held for one hash-map operation; a poisoned lock still holds consistent counts.
            let mut open = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
            let n = open.entry(ip).or_insert(0);
            if *n >= self.max_per_ip {
                return None;
            }
            *n += 1;
        }
        Some(ConnectionSlot {
            _total: total,
            per_ip: Some((ip, Arc::clone(&self.per_ip))),
        })
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        if let Some((ip, per_ip)) = self.per_ip.take() {
            let mut open = per_ip.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(n) = open.get_mut(&ip) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    open.remove(&ip);
                }
            }
        }
    }
}

/// The connection cap in force: the configured one, lowered if need be so that connections
/// can never take the file descriptors the database pool and the rest of the process need.
fn effective_connection_cap(configured: usize, fd_limit: Option<u64>, db_pool: usize) -> usize {
    match fd_limit.and_then(|l| usize::try_from(l).ok()) {
        Some(limit) => configured
            .min(limit.saturating_sub(RESERVED_FDS + db_pool))
            .max(1),
        None => configured,
    }
}

/// Raises the soft open-file limit to the hard limit (a server holding a connection per
/// client needs more than the common default of 1024) and returns the limit now in force.
#[cfg(unix)]
pub fn raise_open_file_limit() -> Option<u64> {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current.is_some() && limit.current != limit.maximum {
        let raised = Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        if let Err(e) = setrlimit(Resource::Nofile, raised) {
            tracing::warn!(error = %e, "could not raise the open-file limit");
        }
    }
    getrlimit(Resource::Nofile).current
}

#[cfg(not(unix))]
pub fn raise_open_file_limit() -> Option<u64> {
    None
}

/// Background upkeep: deleting long-ended sessions, reloading signing keys, dropping idle
/// clients from the rate limiters, delivering alerts and re-measuring the database's clock. The tasks
/// stop when this is dropped.
struct Maintenance(Vec<tokio::task::JoinHandle<()>>);

impl Maintenance {
    fn spawn(
        service: Arc<AuthService>,
        limiters: Vec<Arc<RateLimiter>>,
        deliverer: Option<Arc<Deliverer>>,
        aligned_clock: Option<(Arc<DatabaseAlignedClock>, Arc<dyn Store>)>,
    ) -> Maintenance {
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
        let reloader = Arc::clone(&service);
        let reload = tokio::spawn(async move {
            let mut every = tokio::time::interval(RELOAD_KEYS_EVERY);
            every.tick().await; // the first tick is immediate; the keys were just loaded
            loop {
                every.tick().await;
                if let Err(e) = reloader.reload_keys().await {
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
        let follow = tokio::spawn(async move { revocations.follow_revocations().await });
        let key_watcher = Arc::clone(&service);
        let watch_keys = tokio::spawn(async move { key_watcher.watch_signing_keys().await });
        let mut tasks = vec![sweep, reload, prune, follow, watch_keys];
        if let Some(deliverer) = deliverer {
            tasks.push(tokio::spawn(deliverer.run()));
        }
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

/// Installs the SIGINT (Ctrl-C) and SIGTERM handlers now, and returns what completes on
/// either. Installed before the server says it is listening: a handler installed only when
/// the future is first polled left a moment after "listening on" in which SIGTERM still had
/// its default effect, killing the process on the spot instead of draining it.
#[cfg(unix)]
pub fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {},
            _ = terminate.recv() => {},
        }
    })
}

/// Completes on Ctrl-C (there is no SIGTERM here).
#[cfg(not(unix))]
pub fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    Ok(async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connection_cap_stays_below_the_open_file_limit() {
        assert_eq!(effective_connection_cap(10_000, Some(1024), 16), 1024 - 128 - 16);
        assert_eq!(effective_connection_cap(500, Some(1024), 16), 500);
        assert_eq!(effective_connection_cap(500, None, 16), 500);
        assert_eq!(effective_connection_cap(500, Some(10), 16), 1);
    }

    #[test]
    fn per_address_cap_counts_open_connections() {
        let limits = ConnectionLimits::new(10, 2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let first = limits.admit(a).unwrap();
        let _second = limits.admit(mapped).unwrap();
        assert!(limits.admit(a).is_none(), "third from one address");
        let _other = limits.admit(b).unwrap();
        drop(first);
        assert!(limits.admit(a).is_some(), "a closed connection frees its place");
        let total = ConnectionLimits::new(1, 0);
        let _only = total.admit(a).unwrap();
        assert!(total.admit(b).is_none(), "total cap");
    }

    #[test]
    fn per_address_cap_counts_an_ipv6_slash_64_as_one_client() {
        let limits = ConnectionLimits::new(10, 2);
        let in_one_64: Vec<IpAddr> = [
            "2001:db8:1:2::1",
            "2001:db8:1:2:aaaa::9",
            "2001:db8:1:2:ffff:ffff:ffff:ffff",
        ]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
        let _first = limits.admit(in_one_64[0]).unwrap();
        let _second = limits.admit(in_one_64[1]).unwrap();
        assert!(limits.admit(in_one_64[2]).is_none(), "a third from the same /64");
        let next_64: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert!(limits.admit(next_64).is_some(), "another /64 is another client");
    }
}
