//! `/metrics`: Prometheus counters and latency histograms, recorded at the HTTP edge so the
//! service stays free of telemetry plumbing.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, State};
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use super::AppState;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: RouteName,
    method: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: RouteName,
    method: &'static str,
}

/// A route's template as a label: the matched path itself (a shared string), so counting a
/// request copies no text; `unmatched` for requests no route took.
#[derive(Clone, Debug)]
struct RouteName(Option<MatchedPath>);

impl RouteName {
    fn as_str(&self) -> &str {
        route_name(self.0.as_ref())
    }
}

/// What a request's route is called in metrics and in its log line: its template, or
/// `unmatched` for a request no route took.
pub(super) fn route_name(route: Option<&MatchedPath>) -> &str {
    route.map_or("unmatched", MatchedPath::as_str)
}

impl PartialEq for RouteName {
    fn eq(&self, other: &RouteName) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for RouteName {}

impl std::hash::Hash for RouteName {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl EncodeLabelValue for RouteName {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&self.as_str(), encoder)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    endpoint: &'static str,
}

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram>,
    /// Each route, method and status's counter and histogram (shared with the two families
    /// above), found with one lookup per request instead of one per family, each with SipHash.
    request_handles: RwLock<HashMap<RequestLabels, (Counter, Histogram), foldhash::fast::RandomState>>,
    logins: Family<OutcomeLabels, Counter>,
    refreshes: Family<OutcomeLabels, Counter>,
    reuse_detections: Counter,
    rate_limited: Family<EndpointLabels, Counter>,
    hashes_in_progress: Gauge,
    hashes_peak: Gauge,
    hash_permits: Gauge,
    hashes_finished: Gauge,
    mails: Family<OutcomeLabels, Gauge>,
    live_sessions: Gauge,
    /// When the live sessions were last counted. Held across the count, so concurrent scrapes
    /// wait for one count instead of each starting one.
    live_sessions_counted: tokio::sync::Mutex<Option<Instant>>,
    pool: Option<PoolGauges>,
}

/// The database pool's gauges, registered only for backends that have a pool.
struct PoolGauges {
    open: Gauge,
    in_use: Gauge,
    max: Gauge,
}

/// A scrape recounts the live sessions only when the last count is older than this: the count
/// scans the sessions table, and neither a scrape interval nor many scrapers may set its pace.
const LIVE_SESSIONS_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(60);

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        // 0.25 ms .. ~8 s
        let latency = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.00025, 2.0, 16))
        });
        let logins = Family::<OutcomeLabels, Counter>::default();
        let refreshes = Family::<OutcomeLabels, Counter>::default();
        let reuse_detections = Counter::default();
        let rate_limited = Family::<EndpointLabels, Counter>::default();
        registry.register(
            "tessera_http_requests",
            "HTTP requests by route, method and status",
            requests.clone(),
        );
        registry.register(
            "tessera_http_request_duration_seconds",
            "HTTP request latency by route and method",
            latency.clone(),
        );
        registry.register("tessera_logins", "Login attempts by outcome", logins.clone());
        registry.register(
            "tessera_refreshes",
            "Refresh attempts by outcome",
            refreshes.clone(),
        );
        registry.register(
            "tessera_refresh_token_reuse_detections",
            "Rotated-out refresh tokens presented outside the grace window (sessions revoked)",
            reuse_detections.clone(),
        );
        registry.register(
            "tessera_rate_limited",
            "Requests refused by a rate limit",
            rate_limited.clone(),
        );
        let hashes_in_progress = Gauge::default();
        let hashes_peak = Gauge::default();
        let hash_permits = Gauge::default();
        let hashes_finished = Gauge::default();
        registry.register(
            "tessera_password_hashes_in_progress",
            "Password hashes running now",
            hashes_in_progress.clone(),
        );
        registry.register(
            "tessera_password_hashes_peak",
            "The most password hashes that ran at once since start",
            hashes_peak.clone(),
        );
        registry.register(
            "tessera_password_hash_permits",
            "The bound on password hashes running at once",
            hash_permits.clone(),
        );
        registry.register(
            "tessera_password_hashes_finished",
            "Password hashes finished since start (a running total)",
            hashes_finished.clone(),
        );
        let mails = Family::<OutcomeLabels, Gauge>::default();
        registry.register(
            "tessera_mails",
            "Mails since start, a running total by outcome: queued (by this instance's flows), sent, failed_attempt (retried or given up), given_up",
            mails.clone(),
        );
        let live_sessions = Gauge::default();
        registry.register(
            "tessera_live_sessions",
            "Sessions neither revoked nor ended, all instances' (counted at most once a minute)",
            live_sessions.clone(),
        );
        Metrics {
            live_sessions,
            live_sessions_counted: tokio::sync::Mutex::new(None),
            pool: None,
            registry,
            hashes_in_progress,
            hashes_peak,
            hash_permits,
            hashes_finished,
            mails,
            requests,
            latency,
            request_handles: RwLock::default(),
            logins,
            refreshes,
            reuse_detections,
            rate_limited,
        }
    }

    /// Adds the database pool's gauges (for a backend that has a pool).
    pub fn with_pool_gauges(mut self) -> Metrics {
        let gauges = PoolGauges {
            open: Gauge::default(),
            in_use: Gauge::default(),
            max: Gauge::default(),
        };
        self.registry.register(
            "tessera_database_pool_connections_open",
            "Database connections open now, idle or not",
            gauges.open.clone(),
        );
        self.registry.register(
            "tessera_database_pool_connections_in_use",
            "Database connections running a query now",
            gauges.in_use.clone(),
        );
        self.registry.register(
            "tessera_database_pool_connections_max",
            "The most database connections the pool opens",
            gauges.max.clone(),
        );
        self.pool = Some(gauges);
        self
    }

    pub fn login(&self, outcome: &'static str) {
        self.logins.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    pub fn refresh(&self, outcome: &'static str) {
        self.refreshes.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    /// Counts and times one request, labelled by its route template (never the raw path,
    /// whose ids would explode the label space).
    pub fn record_request(
        &self,
        route: Option<&MatchedPath>,
        method: &Method,
        status: u16,
        latency: Duration,
    ) {
        let labels = RequestLabels {
            route: RouteName(route.cloned()),
            method: method_label(method),
            status,
        };
        let handles = self.request_handles.read().unwrap_or_else(|p| p.into_inner());
        if let Some((count, duration)) = handles.get(&labels) {
            count.inc();
            duration.observe(latency.as_secs_f64());
            return;
        }
        drop(handles);
        let duration = self
            .latency
            .get_or_create(&RouteLabels {
                route: labels.route.clone(),
                method: labels.method,
            })
            .clone();
        let count = self.requests.get_or_create(&labels).clone();
        count.inc();
        duration.observe(latency.as_secs_f64());
        self.request_handles
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(labels, (count, duration));
    }

    pub fn reuse_detected(&self) {
        self.reuse_detections.inc();
    }

    pub fn rate_limited(&self, endpoint: &'static str) {
        self.rate_limited
            .get_or_create(&EndpointLabels { endpoint })
            .inc();
    }

    /// Copies the service's hashing figures into their gauges (read when scraped).
    fn set_hashing(&self, stats: &crate::service::HashingStats) {
        let gauge = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.hashes_in_progress.set(gauge(stats.in_progress() as u64));
        self.hashes_peak.set(gauge(stats.peak() as u64));
        self.hash_permits.set(gauge(stats.permits() as u64));
        self.hashes_finished.set(gauge(stats.finished()));
    }

    /// Copies the mail outbox's counts into their gauges (read when scraped).
    fn set_mail(&self, stats: &crate::mail::MailStats) {
        let gauge = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        for (outcome, value) in [
            ("queued", stats.queued()),
            ("sent", stats.sent()),
            ("failed_attempt", stats.failed_attempts()),
            ("given_up", stats.given_up()),
        ] {
            self.mails
                .get_or_create(&OutcomeLabels { outcome })
                .set(gauge(value));
        }
    }

    /// Recounts the live sessions if the last count is stale. A failed count keeps the last
    /// value and is not retried before the next period either (a database that is down must
    /// not be asked again by every scrape).
    async fn refresh_live_sessions(&self, service: &crate::service::AuthService) {
        let mut counted = self.live_sessions_counted.lock().await;
        if counted.is_some_and(|at| at.elapsed() < LIVE_SESSIONS_MAX_AGE) {
            return;
        }
        match service.count_live_sessions().await {
            Ok(n) => {
                self.live_sessions.set(i64::try_from(n).unwrap_or(i64::MAX));
            }
            Err(e) => tracing::warn!(error = %e, "could not count live sessions"),
        }
        *counted = Some(Instant::now());
    }

    fn set_pool(&self, usage: Option<crate::service::PoolUsage>) {
        if let (Some(gauges), Some(usage)) = (&self.pool, usage) {
            gauges.open.set(i64::from(usage.open));
            gauges.in_use.set(i64::from(usage.in_use));
            gauges.max.set(i64::from(usage.max));
        }
    }

    fn render(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// The standard methods by name, anything else as `OTHER`: a client may send any token as a
/// method, and each distinct label would be a new series kept forever.
fn method_label(method: &Method) -> &'static str {
    const KNOWN: [Method; 9] = [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::PATCH,
        Method::OPTIONS,
        Method::CONNECT,
        Method::TRACE,
    ];
    KNOWN
        .iter()
        .find(|m| *m == method)
        .map_or("OTHER", |m| m.as_str())
}

#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    summary = "Prometheus metrics (unauthenticated: expose to monitoring only)",
    responses((status = 200, description = "Prometheus metrics (OpenMetrics text): requests and latency per route, logins, refreshes, reuse detections, rate-limit rejections.",
        body = String, content_type = "application/openmetrics-text"))
)]
pub async fn render(State(state): State<AppState>) -> Response {
    state.metrics.set_hashing(state.service.hashing().stats());
    state.metrics.set_mail(&state.service.mail_stats());
    state.metrics.set_pool(state.service.pool_usage());
    state.metrics.refresh_live_sessions(&state.service).await;
    match state.metrics.render() {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}
