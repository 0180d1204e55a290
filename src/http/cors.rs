//! CORS for single-page apps served from another origin.
//!
//! Only a request whose `Origin` is listed in `cors_origins` ever gets a CORS header: its
//! preflight is answered here, and every response to it (errors included) names that origin
//! and allows credentials, which the cookie transport needs. Since credentials are allowed,
//! the origin is always named, never `*`. Any other origin's preflight falls through to the
//! router (`405`) and its responses carry nothing a browser would let a script read. With no
//! list the layer is not mounted at all.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

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
    /// `None` when nothing is listed: then there is nothing to mount.
    pub fn new(origins: &[String]) -> Option<Arc<AllowedOrigins>> {
        let origins: Vec<HeaderValue> = origins
            .iter()
            .filter_map(|o| HeaderValue::from_str(o).ok())
            .collect();
        (!origins.is_empty()).then(|| Arc::new(AllowedOrigins(origins)))
    }

    fn find(&self, headers: &HeaderMap) -> Option<HeaderValue> {
        let origin = headers.get(header::ORIGIN)?;
        self.0.iter().find(|allowed| *allowed == origin).cloned()
    }
}

pub async fn layer(State(allowed): State<Arc<AllowedOrigins>>, request: Request, next: Next) -> Response {
    let Some(origin) = allowed.find(request.headers()) else {
        let mut response = next.run(request).await;
        vary_on_origin(response.headers_mut());
        return response;
    };
    let is_preflight = request.method() == Method::OPTIONS
        && request
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    if is_preflight {
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
        return response;
    }
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    allow(headers, origin);
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(EXPOSED_HEADERS),
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
