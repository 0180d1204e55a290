//! One load worker: a keep-alive connection, the session it owns, and the requests of its
//! scenario, each timed and tallied.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::time::Instant;

use super::{send_with_timeout, setup_failure, Scenario};
use crate::client::{Connection, Response};
use crate::report::{Operation, Tally};
use crate::seed::SeededToken;
use crate::{BenchError, BenchResult, BENCH_PASSWORD};

/// How long a worker waits after a failed connect before its next request.
const CONNECT_RETRY_PAUSE: Duration = Duration::from_millis(50);

#[derive(Clone, Debug)]
pub(super) struct Credentials {
    pub(super) email: String,
    pub(super) password: String,
}

pub(super) enum SessionSource {
    Login(Credentials),
    Seeded(SeededToken),
}

/// A worker's current tokens.
pub(super) struct SessionTokens {
    pub(super) session_id: String,
    pub(super) access_token: String,
    pub(super) refresh_token: String,
    /// When to refresh before the next verify, a minute ahead of the access token's expiry,
    /// so runs longer than the access-token lifetime do not turn into `token_expired`.
    pub(super) renew_at: Instant,
}

#[derive(Deserialize)]
pub(super) struct TokenResponse {
    pub(super) access_token: String,
    pub(super) refresh_token: String,
    pub(super) expires_in: u64,
    pub(super) session_id: String,
}

impl SessionTokens {
    pub(super) fn from_response(body: &[u8]) -> Option<SessionTokens> {
        let tokens: TokenResponse = serde_json::from_slice(body).ok()?;
        let lifetime = Duration::from_secs(tokens.expires_in);
        let margin = Duration::from_secs(60).min(lifetime / 2);
        Some(SessionTokens {
            session_id: tokens.session_id,
            access_token: tokens.access_token,
            refresh_token: tokens.refresh_token,
            renew_at: Instant::now() + (lifetime - margin),
        })
    }
}

pub(super) struct Worker {
    pub(super) index: usize,
    pub(super) concurrency: usize,
    pub(super) connection: Connection,
    pub(super) session: Option<SessionTokens>,
    /// Who to log in as again if the worker's session is lost to an error.
    pub(super) credentials: Option<Credentials>,
    pub(super) login_emails: Arc<Vec<String>>,
    pub(super) logins_sent: usize,
    pub(super) request_timeout: Duration,
    pub(super) tally: Tally,
}

impl Worker {
    pub(super) async fn open_session(&mut self, source: SessionSource) -> BenchResult<()> {
        match source {
            SessionSource::Login(credentials) => {
                let response = self.login(&credentials.email, &credentials.password).await?;
                self.session = SessionTokens::from_response(&response.body);
                self.credentials = Some(credentials);
            }
            SessionSource::Seeded(seeded) => {
                let body = serde_json::json!({ "refresh_token": seeded.refresh_token }).to_string();
                let response = send_with_timeout(
                    self.request_timeout,
                    self.connection.post_json("/v1/auth/refresh", body.into_bytes()),
                )
                .await
                .map_err(|kind| {
                    BenchError::Setup(format!("refresh seeded session {}: {kind}", seeded.session_id))
                })?;
                if response.status.as_u16() != 200 {
                    return Err(setup_failure(
                        &format!("refresh seeded session {}", seeded.session_id),
                        &response,
                    ));
                }
                self.session = SessionTokens::from_response(&response.body);
                self.credentials = Some(Credentials {
                    email: seeded.email,
                    password: seeded.password,
                });
            }
        }
        if self.session.is_none() {
            return Err(BenchError::Setup(format!(
                "worker {}: the token response could not be read",
                self.index
            )));
        }
        Ok(())
    }

    pub(super) async fn login(&mut self, email: &str, password: &str) -> BenchResult<Response> {
        let body = serde_json::json!({ "email": email, "password": password }).to_string();
        let response = send_with_timeout(
            self.request_timeout,
            self.connection.post_json("/v1/auth/login", body.into_bytes()),
        )
        .await
        .map_err(|kind| BenchError::Setup(format!("log in {email}: {kind}")))?;
        if response.status.as_u16() != 200 {
            return Err(setup_failure(&format!("log in {email}"), &response));
        }
        Ok(response)
    }

    /// Sends requests until the window ends; returns what it counted and the worker's
    /// session as it is now.
    pub(super) async fn run(
        mut self,
        scenario: Scenario,
        window_start: Instant,
        window_end: Instant,
    ) -> (Tally, Option<SessionTokens>) {
        // Workers start at different points of the mixed blend, so their logins and
        // refreshes do not all fall on the same moments.
        let mut n = (self.index as u64).wrapping_mul(37);
        while Instant::now() < window_end {
            let mut operation = scenario.operation(n);
            n = n.wrapping_add(1);
            if operation == Operation::Verify
                && self
                    .session
                    .as_ref()
                    .is_some_and(|s| Instant::now() >= s.renew_at)
            {
                operation = Operation::Refresh;
            }
            let started = Instant::now();
            let outcome = self.perform(operation).await;
            let finished = Instant::now();
            match outcome {
                Ok(()) => {
                    if started >= window_start && finished <= window_end {
                        self.tally.record_ok(operation, finished - started);
                    }
                }
                Err(kind) => {
                    self.tally.record_error(format!("{} {kind}", operation.name()));
                    if kind == "connect" {
                        // Nothing is listening: do not spin on connect() (every attempt is
                        // counted anyway, and one is enough to fail the run).
                        tokio::time::sleep(CONNECT_RETRY_PAUSE).await;
                    } else if operation != Operation::Login && kind.starts_with("401") {
                        self.recover_session().await;
                    }
                }
            }
        }
        // Close the connection now rather than when the runtime goes away.
        self.connection.reset();
        (self.tally, self.session)
    }

    /// One request; `Err` is the kind it is counted under (`"401 session_revoked"`, ...).
    pub(super) async fn perform(&mut self, operation: Operation) -> Result<(), String> {
        let request_timeout = self.request_timeout;
        let response = match operation {
            Operation::Verify => {
                let token = self.session.as_ref().map(|s| s.access_token.as_str());
                let Some(token) = token else {
                    return Err("no session".into());
                };
                send_with_timeout(request_timeout, self.connection.get("/v1/auth/me", Some(token))).await
            }
            Operation::Refresh => {
                let Some(session) = &self.session else {
                    return Err("no session".into());
                };
                let body = serde_json::json!({ "refresh_token": session.refresh_token }).to_string();
                send_with_timeout(
                    request_timeout,
                    self.connection.post_json("/v1/auth/refresh", body.into_bytes()),
                )
                .await
            }
            Operation::Login => {
                // Round-robin over the login users, each worker from its own offset.
                let user = (self.index + self.logins_sent * self.concurrency) % self.login_emails.len();
                self.logins_sent = self.logins_sent.wrapping_add(1);
                let body =
                    serde_json::json!({ "email": self.login_emails[user], "password": BENCH_PASSWORD })
                        .to_string();
                send_with_timeout(
                    request_timeout,
                    self.connection.post_json("/v1/auth/login", body.into_bytes()),
                )
                .await
            }
        };
        let response = match response {
            Ok(r) => r,
            Err(kind) => {
                if kind == "timeout" {
                    // The connection may still carry the late answer: never reuse it.
                    self.connection.reset();
                }
                return Err(kind);
            }
        };
        if response.status.as_u16() != 200 {
            return Err(match response.problem_code() {
                Some(code) => format!("{} {code}", response.status.as_u16()),
                None => response.status.as_u16().to_string(),
            });
        }
        if operation == Operation::Refresh {
            match SessionTokens::from_response(&response.body) {
                Some(tokens) => self.session = Some(tokens),
                None => return Err("200 unreadable token response".into()),
            }
        }
        Ok(())
    }

    /// After a 401 the worker's session is gone (or its token is): log in again so the rest
    /// of the run still measures something. That login is not counted as an operation, but
    /// its failure is counted as an error.
    pub(super) async fn recover_session(&mut self) {
        let Some(credentials) = self.credentials.clone() else {
            return;
        };
        match self.login(&credentials.email, &credentials.password).await {
            Ok(response) => self.session = SessionTokens::from_response(&response.body),
            Err(e) => {
                self.tally.record_error(format!("recovery login: {e}"));
                // Do not spin against a server that refuses everything.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
