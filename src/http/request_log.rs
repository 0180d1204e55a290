//! The access line of a request, and the request id that ties it to everything else logged
//! while the request ran; the same layer counts and times every request for `/metrics`.
//!
//! By default only requests answered 4xx or 5xx get a line (`access_log = "failures"`; `all`
//! gives every request one). The line is written when the response is ready: method, route
//! template (never the raw path, which carries ids), status, latency and request id, at `info`
//! on the target `tessera::access` (so `RUST_LOG=info,tessera::access=off` silences it alone).
//! It carries no header or body: tokens, passwords and cookies travel in those, and a log is
//! not a place for them.
//!
//! The id is the client's `X-Request-Id` when it looks like an id (a proxy or a caller that
//! correlates its own logs), else one we make; either way it is echoed on the response.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{ready, Context, Poll};
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue, Method};
use axum::response::Response;
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use super::metrics::{route_name, Metrics};
use crate::config::AccessLog;
use crate::telemetry;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// A client's id longer than this is replaced: logs are not a free store for clients.
const MAX_REQUEST_ID_LEN: usize = 128;

/// The layer every route passes through once: the request id, the access line and the
/// request metrics (`/metrics`). One hand-written layer rather than two `from_fn` ones: each
/// `from_fn` level clones and boxes the service under it on every request, which showed as
/// a tenth of a verify's CPU (docs/BENCHMARKS.md, "Changes measured along the way").
#[derive(Clone)]
pub struct RequestLogLayer {
    metrics: Arc<Metrics>,
    access_log: AccessLog,
}

impl RequestLogLayer {
    pub fn new(metrics: Arc<Metrics>, access_log: AccessLog) -> RequestLogLayer {
        RequestLogLayer { metrics, access_log }
    }
}

impl<S> Layer<S> for RequestLogLayer {
    type Service = RequestLog<S>;

    fn layer(&self, inner: S) -> RequestLog<S> {
        RequestLog {
            inner,
            metrics: Arc::clone(&self.metrics),
            access_log: self.access_log,
        }
    }
}

/// See [`RequestLogLayer`].
#[derive(Clone)]
pub struct RequestLog<S> {
    inner: S,
    metrics: Arc<Metrics>,
    access_log: AccessLog,
}

impl<S> Service<Request> for RequestLog<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = RequestLogFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        let started = Instant::now();
        // Taken out of the request rather than copied (nothing further in reads it): the id
        // moves on to the response at the end, so it costs no allocation unless we make one up.
        let request_id = match request.headers_mut().remove(&REQUEST_ID) {
            Some(given) if is_sane(given.as_bytes()) => given,
            _ => generate(),
        };
        // Cheap clones: a standard method is an enum, a matched path a shared string.
        let method = request.method().clone();
        let route = request.extensions().get::<MatchedPath>().cloned();
        // Events logged while the request runs (a database error, say) carry its id.
        let inner =
            telemetry::with_request_id(request_id.to_str().unwrap_or_default(), self.inner.call(request));
        RequestLogFuture {
            inner,
            started,
            request_id: Some(request_id),
            method,
            route,
            metrics: Arc::clone(&self.metrics),
            access_log: self.access_log,
        }
    }
}

pin_project! {
    /// The inner answer, then its line, its metrics and its request id. (A future of our own
    /// rather than a boxed `async` block: no allocation per request.)
    pub struct RequestLogFuture<F> {
        #[pin]
        inner: telemetry::WithRequestId<F>,
        started: Instant,
        request_id: Option<HeaderValue>,
        method: Method,
        route: Option<MatchedPath>,
        metrics: Arc<Metrics>,
        access_log: AccessLog,
    }
}

impl<F> Future for RequestLogFuture<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Ok(mut response) = ready!(this.inner.poll(cx));
        let latency = this.started.elapsed();
        let status = response.status().as_u16();
        this.metrics
            .record_request(this.route.as_ref(), this.method, status, latency);
        let Some(request_id) = this.request_id.take() else {
            return Poll::Ready(Ok(response));
        };
        if this.access_log.logs(status) {
            tracing::info!(
                target: telemetry::ACCESS_TARGET,
                method = this.method.as_str(),
                route = route_name(this.route.as_ref()),
                status,
                latency_ms = latency.as_secs_f64() * 1000.0,
                request_id = request_id.to_str().unwrap_or_default(),
                "request"
            );
        }
        response.headers_mut().insert(REQUEST_ID, request_id);
        Poll::Ready(Ok(response))
    }
}

/// An id we can log and echo as it is: 1 to 128 characters of letters, digits and `-_.:/+=@`
/// (UUIDs, ULIDs, trace ids, base64). Anything else (spaces, quotes, control characters) could
/// forge or break log lines, so it is replaced rather than escaped.
fn is_sane(id: &[u8]) -> bool {
    !id.is_empty()
        && id.len() <= MAX_REQUEST_ID_LEN
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:/+=@".contains(b))
}

/// A fresh id: a random 64-bit prefix chosen once per process, then a counter. Unique across
/// instances and restarts without a system call per request (a random UUID per request would
/// read the OS's random source each time).
fn generate() -> HeaderValue {
    static PREFIX: OnceLock<String> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = PREFIX.get_or_init(|| format!("{:016x}-", uuid::Uuid::new_v4().as_u64_pair().0));
    let id = numbered_id(prefix, COUNTER.fetch_add(1, Ordering::Relaxed));
    // Hex digits and a dash are always a valid header value.
    HeaderValue::try_from(id).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// `prefix` then `n` in lower-case hex, at least 8 digits: `format!("{prefix}{n:08x}")`,
/// with the digits written by hand (through `fmt` they were a hundredth of a verify's CPU),
/// into a buffer sized for the usual 25 characters, which becomes the header's bytes as it is.
fn numbered_id(prefix: &str, n: u64) -> String {
    let mut id = String::with_capacity(prefix.len() + 8);
    id.push_str(prefix);
    let digits = (64 - (n | 0xffff_ffff).leading_zeros()).div_ceil(4);
    for shift in (0..digits).rev() {
        id.push(char::from(HEX[((n >> (shift * 4)) & 0xf) as usize]));
    }
    id
}

const HEX: &[u8; 16] = b"0123456789abcdef";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_ids_are_kept() {
        assert!(is_sane(b"0190f1e2-7c4b-7a3e-9f0e-3b1c2d4e5f60"));
        assert!(is_sane(b"01ARZ3NDEKTSV4RRFFQ69G5FAV"));
        assert!(is_sane(b"a/b+c=="));
        assert!(!is_sane(b""));
        assert!(!is_sane(b"two words"));
        assert!(!is_sane(b"line\nbreak"));
        assert!(!is_sane(b"\"quoted\""));
        assert!(!is_sane("caf\u{e9}".as_bytes()));
        assert!(!is_sane(&[b'a'; MAX_REQUEST_ID_LEN + 1]));
        assert!(is_sane(&[b'a'; MAX_REQUEST_ID_LEN]));
    }

    #[test]
    fn numbered_ids_are_the_prefix_and_at_least_eight_hex_digits() {
        for n in [0, 1, 0xa, 0xffff_ffff, 0x1_0000_0000, 0xdead_beef_cafe, u64::MAX] {
            assert_eq!(
                numbered_id("0123456789abcdef-", n),
                format!("0123456789abcdef-{n:08x}")
            );
        }
    }

    #[test]
    fn generated_ids_are_sane_and_distinct() {
        let a = generate();
        let b = generate();
        assert_ne!(a, b);
        assert!(is_sane(a.as_bytes()), "{a:?}");
        let (prefix_a, _) = a.to_str().unwrap().split_once('-').unwrap();
        let (prefix_b, _) = b.to_str().unwrap().split_once('-').unwrap();
        assert_eq!(prefix_a, prefix_b, "one prefix per process");
    }
}
