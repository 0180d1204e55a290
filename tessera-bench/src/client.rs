//! A minimal HTTP/1.1 client over one keep-alive connection, the way a load generator
//! wants it: no pool, no redirects, no TLS, nothing between a request and the socket but
//! hyper's HTTP/1 codec. If the server closes the connection, the next request opens a new
//! one (and the request that found it closed counts as an error).

use std::sync::Arc;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::{BenchError, BenchResult};

/// Where requests go: `http://host:port` plus an optional path prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// `host:port`, dialled as is and sent as the `Host` header.
    pub authority: String,
    /// Prepended to every request path; empty or starting with `/`, never ending with `/`.
    pub path_prefix: String,
}

impl Target {
    /// Accepts only plain `http://` URLs: the tool is meant for a server on the same machine
    /// (127.0.0.1), where TLS would only measure itself.
    pub fn parse(url: &str) -> BenchResult<Target> {
        let rest = url.strip_prefix("http://").ok_or_else(|| {
            BenchError::InvalidArgument(format!("{url:?}: only http://host:port URLs are supported"))
        })?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if authority.is_empty() {
            return Err(BenchError::InvalidArgument(format!("{url:?}: no host")));
        }
        let authority = if authority.contains(':') && !authority.ends_with(']') {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        };
        Ok(Target {
            authority,
            path_prefix: path.trim_end_matches('/').to_owned(),
        })
    }
}

/// Why a request got no response; each is counted as its own kind of error.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("connect: {0}")]
    Connect(std::io::Error),
    #[error("I/O: {0}")]
    Io(String),
    #[error("could not build the request: {0}")]
    Build(String),
}

impl RequestError {
    /// The short name under which the error is counted.
    pub fn kind(&self) -> &'static str {
        match self {
            RequestError::Connect(_) => "connect",
            RequestError::Io(_) => "io",
            RequestError::Build(_) => "request",
        }
    }
}

/// A response with its whole body read.
#[derive(Debug)]
pub struct Response {
    pub status: StatusCode,
    pub body: Bytes,
}

impl Response {
    /// The problem document's `code`, if the body is one.
    pub fn problem_code(&self) -> Option<String> {
        let value: serde_json::Value = serde_json::from_slice(&self.body).ok()?;
        value.get("code")?.as_str().map(str::to_owned)
    }
}

/// One keep-alive connection to the target.
pub struct Connection {
    target: Arc<Target>,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Connection {
    /// No socket is opened until the first request.
    pub fn new(target: Arc<Target>) -> Connection {
        Connection { target, sender: None }
    }

    /// Forgets the current connection (after a timeout its state is unknown); the next
    /// request opens a new one.
    pub fn reset(&mut self) {
        self.sender = None;
    }

    pub async fn get(&mut self, path: &str, bearer: Option<&str>) -> Result<Response, RequestError> {
        let mut request = self.request(Method::GET, path);
        if let Some(token) = bearer {
            let value = HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|e| RequestError::Build(e.to_string()))?;
            request = request.header(AUTHORIZATION, value);
        }
        let request = request
            .body(Full::new(Bytes::new()))
            .map_err(|e| RequestError::Build(e.to_string()))?;
        self.send(request).await
    }

    pub async fn post_json(&mut self, path: &str, body: Vec<u8>) -> Result<Response, RequestError> {
        let request = self
            .request(Method::POST, path)
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| RequestError::Build(e.to_string()))?;
        self.send(request).await
    }

    /// A JSON POST on an authenticated endpoint.
    pub async fn post_json_with_bearer(
        &mut self,
        path: &str,
        body: Vec<u8>,
        bearer: &str,
    ) -> Result<Response, RequestError> {
        let authorization = HeaderValue::from_str(&format!("Bearer {bearer}"))
            .map_err(|e| RequestError::Build(e.to_string()))?;
        let request = self
            .request(Method::POST, path)
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header(AUTHORIZATION, authorization)
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| RequestError::Build(e.to_string()))?;
        self.send(request).await
    }

    fn request(&self, method: Method, path: &str) -> hyper::http::request::Builder {
        Request::builder()
            .method(method)
            .uri(format!("{}{}", self.target.path_prefix, path))
            .header(HOST, self.target.authority.as_str())
    }

    async fn send(&mut self, request: Request<Full<Bytes>>) -> Result<Response, RequestError> {
        let result = self.try_send(request).await;
        if result.is_err() {
            self.sender = None;
        }
        result
    }

    async fn try_send(&mut self, request: Request<Full<Bytes>>) -> Result<Response, RequestError> {
        let sender = match &mut self.sender {
            Some(sender) if !sender.is_closed() => sender,
            _ => self.sender.insert(connect(&self.target.authority).await?),
        };
        sender
            .ready()
            .await
            .map_err(|e| RequestError::Io(e.to_string()))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| RequestError::Io(e.to_string()))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| RequestError::Io(e.to_string()))?
            .to_bytes();
        Ok(Response { status, body })
    }
}

async fn connect(authority: &str) -> Result<SendRequest<Full<Bytes>>, RequestError> {
    let stream = TcpStream::connect(authority)
        .await
        .map_err(RequestError::Connect)?;
    // Requests are small and latency is what is measured: never wait for Nagle.
    stream.set_nodelay(true).map_err(RequestError::Connect)?;
    let (sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| RequestError::Io(e.to_string()))?;
    // The connection task ends when the server closes or the sender is dropped; its error,
    // if any, reaches the next request through the sender.
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse() {
        let t = Target::parse("http://127.0.0.1:8080").expect("valid");
        assert_eq!(t.authority, "127.0.0.1:8080");
        assert_eq!(t.path_prefix, "");
        let t = Target::parse("http://localhost/auth/").expect("valid");
        assert_eq!(t.authority, "localhost:80");
        assert_eq!(t.path_prefix, "/auth");
        let t = Target::parse("http://[::1]:9000").expect("valid");
        assert_eq!(t.authority, "[::1]:9000");
        assert!(Target::parse("https://127.0.0.1:8080").is_err());
        assert!(Target::parse("http:///x").is_err());
    }
}
