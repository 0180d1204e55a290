//! A panic in a handler is a bug, but the client still gets a problem document (500), not a
//! dropped connection, and the request is logged and counted with that status.

use std::convert::Infallible;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use super::error::ApiError;

/// Turns a panic while handling a request into [`ApiError::Panic`]'s answer.
#[derive(Clone, Copy)]
pub struct CatchPanicLayer;

impl<S> Layer<S> for CatchPanicLayer {
    type Service = CatchPanic<S>;

    fn layer(&self, inner: S) -> CatchPanic<S> {
        CatchPanic { inner }
    }
}

/// See [`CatchPanicLayer`].
#[derive(Clone)]
pub struct CatchPanic<S> {
    inner: S,
}

impl<S> Service<Request> for CatchPanic<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = CatchPanicFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        match std::panic::catch_unwind(AssertUnwindSafe(|| self.inner.call(request))) {
            Ok(inner) => CatchPanicFuture::Running { inner },
            Err(_) => CatchPanicFuture::Panicked,
        }
    }
}

pin_project! {
    /// The inner answer, or the 500 of a panic while making it.
    #[project = CatchPanicProjection]
    pub enum CatchPanicFuture<F> {
        Running { #[pin] inner: F },
        Panicked,
    }
}

impl<F> Future for CatchPanicFuture<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let CatchPanicProjection::Running { inner } = self.as_mut().project() {
            match std::panic::catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
                Ok(poll) => return poll,
                // A future that panicked is not polled again.
                Err(_) => self.set(CatchPanicFuture::Panicked),
            }
        }
        Poll::Ready(Ok(ApiError::Panic.into_response()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::{header, StatusCode};
    use axum::routing::get;
    use axum::Router;
    use tower::ServiceExt;

    async fn a_bug() -> &'static str {
        panic!("a bug in a handler")
    }

    #[tokio::test]
    async fn a_panicking_handler_answers_a_500_problem() {
        let app = Router::new().route("/", get(a_bug)).layer(CatchPanicLayer);
        let request = Request::builder().uri("/").body(Body::empty()).unwrap();
        let response = app.oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
    }
}
