//! CORS for single-page apps served from another origin.
//!
//! Only a request whose `Origin` is listed in `cors_origins` ever gets a CORS header: its
//! preflight is answered here, and every response to it (errors included) names that origin
//! and allows credentials, which the cookie transport needs. Since credentials are allowed,
//! the origin is always named, never `*`. Any other origin's preflight falls through to the
//! router (`405`) and its responses carry nothing a browser would let a script read. With no
//! list the layer passes every request through untouched.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

/// How long (seconds) a browser may cache a preflight answer.
const PREFLIGHT_MAX_AGE: &str = "600";
const ALLOWED_METHODS: &str = "GET, POST, DELETE";
/// What the clients send: a bearer token, JSON bodies, the CSRF header of the cookie transport.
const ALLOWED_HEADERS: &str = "authorization, content-type, x-csrf-token";
/// A script may read only safelisted response headers unless told otherwise; a rate-limited
/// app needs `Retry-After` to know how long to wait.
const EXPOSED_HEADERS: &str = "retry-after";

/// The listed origins, exactly as browsers send them (the config lower-cases and validates).
pub struct AllowedOrigins(Vec<HeaderValue>);

impl AllowedOrigins {
    fn find(&self, headers: &HeaderMap) -> Option<HeaderValue> {
        let origin = headers.get(header::ORIGIN)?;
        self.0.iter().find(|allowed| *allowed == origin).cloned()
    }
}

/// The CORS layer for the listed origins (none listed: a pass-through).
#[derive(Clone)]
pub struct CorsLayer {
    allowed: Option<Arc<AllowedOrigins>>,
}

impl CorsLayer {
    pub fn new(origins: &[String]) -> CorsLayer {
        let origins: Vec<HeaderValue> = origins
            .iter()
            .filter_map(|o| HeaderValue::from_str(o).ok())
            .collect();
        CorsLayer {
            allowed: (!origins.is_empty()).then(|| Arc::new(AllowedOrigins(origins))),
        }
    }
}

impl<S> Layer<S> for CorsLayer {
    type Service = Cors<S>;

    fn layer(&self, inner: S) -> Cors<S> {
        Cors {
            inner,
            allowed: self.allowed.clone(),
        }
    }
}

/// See [`CorsLayer`].
#[derive(Clone)]
pub struct Cors<S> {
    inner: S,
    allowed: Option<Arc<AllowedOrigins>>,
}

impl<S> Service<Request> for Cors<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = CorsFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let Some(allowed) = &self.allowed else {
            return CorsFuture::Unlisted {
                inner: self.inner.call(request),
                vary: false,
            };
        };
        let Some(origin) = allowed.find(request.headers()) else {
            return CorsFuture::Unlisted {
                inner: self.inner.call(request),
                vary: true,
            };
        };
        let is_preflight = request.method() == Method::OPTIONS
            && request
                .headers()
                .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
        if is_preflight {
            return CorsFuture::Preflight {
                answer: Some(preflight(origin)),
            };
        }
        CorsFuture::Listed {
            inner: self.inner.call(request),
            origin: Some(origin),
        }
    }
}

pin_project! {
    /// The answer of [`Cors`]: the inner one with the headers its origin gets, or a preflight's.
    #[project = CorsProjection]
    pub enum CorsFuture<F> {
        Unlisted { #[pin] inner: F, vary: bool },
        Listed { #[pin] inner: F, origin: Option<HeaderValue> },
        Preflight { answer: Option<Response> },
    }
}

impl<F> Future for CorsFuture<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            CorsProjection::Unlisted { inner, vary } => {
                let Ok(mut response) = ready!(inner.poll(cx));
                if *vary {
                    vary_on_origin(response.headers_mut());
                }
                Poll::Ready(Ok(response))
            }
            CorsProjection::Listed { inner, origin } => {
                let Ok(mut response) = ready!(inner.poll(cx));
                let headers = response.headers_mut();
                if let Some(origin) = origin.take() {
                    allow(headers, origin);
                }
                headers.insert(
                    header::ACCESS_CONTROL_EXPOSE_HEADERS,
                    HeaderValue::from_static(EXPOSED_HEADERS),
                );
                Poll::Ready(Ok(response))
            }
            CorsProjection::Preflight { answer } => Poll::Ready(Ok(answer
                .take()
                .unwrap_or_else(|| StatusCode::NO_CONTENT.into_response()))),
        }
    }
}

fn preflight(origin: HeaderValue) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    let headers = response.headers_mut();
    allow(headers, origin);
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(ALLOWED_METHODS),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static(ALLOWED_HEADERS),
    );
    headers.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static(PREFLIGHT_MAX_AGE),
    );
    response
}

fn allow(headers: &mut HeaderMap, origin: HeaderValue) {
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
        HeaderValue::from_static("true"),
    );
    vary_on_origin(headers);
}

/// Answers differ by `Origin`, so a shared cache must not hand one origin's answer to another.
fn vary_on_origin(headers: &mut HeaderMap) {
    headers.append(header::VARY, HeaderValue::from_static("origin"));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::cookies::CSRF_HEADER;

    #[test]
    fn the_csrf_header_may_be_sent() {
        assert!(ALLOWED_HEADERS.split(", ").any(|h| h == CSRF_HEADER));
    }
}
