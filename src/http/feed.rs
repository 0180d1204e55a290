//! `GET /v1/revocations`: the revocation feed for resource servers (see `service::feed`).
//! Authenticated by a resource-server credential (`TESSERA_REVOCATION_FEED_CREDENTIALS`) as
//! a bearer token; off, and answering 404, when none is configured.

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde::Serialize;
use utoipa::ToSchema;

use super::answer::no_store;
use super::error::ApiError;
use super::extract::bearer;
use super::AppState;
use crate::domain::{FieldError, SessionId, Timestamp, UserId};
use crate::service::feed::{FeedQuery, FEED_MAX_PAGE, FEED_MAX_WAIT};

/// Entries per answer when the reader does not say.
const DEFAULT_LIMIT: u32 = 100;

/// One revoked session.
#[derive(Serialize, ToSchema)]
#[schema(as = Revocation)]
pub(super) struct Entry<'a> {
    /// Increases in the order entries appear: resume after the last one seen.
    #[schema(minimum = 1)]
    seq: i64,
    #[schema(value_type = String, format = Uuid)]
    session_id: SessionId,
    #[schema(value_type = String, format = Uuid)]
    user_id: UserId,
    /// When it was revoked.
    #[schema(value_type = String, format = DateTime)]
    at: Timestamp,
    /// Why: `logout`, `refresh_token_reused`, `revoked_by_user`, `logout_all`, `admin`...
    #[schema(value_type = Option<String>)]
    reason: Option<&'a str>,
}

/// Revocations after `after`, oldest first.
#[derive(Serialize, ToSchema)]
#[schema(as = RevocationPage)]
pub(super) struct Page<'a> {
    revocations: Vec<Entry<'a>>,
    /// The `after` of the next request: the last entry's `seq`, or the `after` asked.
    #[schema(minimum = 0)]
    next: i64,
}

/// `?after=SEQ&limit=N&wait=SECONDS`, all optional: from the start, 100 entries, no wait.
#[utoipa::path(
    get,
    path = "/v1/revocations",
    tag = "discovery",
    summary = "Sessions revoked, in order, for resource servers (long-poll)",
    params(
        ("after" = Option<i64>, Query, minimum = 0, description = "List entries after this `seq` (default 0: from the oldest kept, a day's worth)."),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "Entries at most (default 100)."),
        ("wait" = Option<u32>, Query, minimum = 0, maximum = 30, description = "Seconds to wait for an entry when there is none after `after` yet (default 0)."),
    ),
    responses(
        (status = 200, description = "Entries after `after` (empty if none came within `wait`).", body = Page),
        (status = 400, description = "`malformed_request`: the query string cannot be read"),
        (status = 401, description = "`invalid_token`: no or a wrong resource-server credential"),
        (status = 404, description = "`not_found`: no credential is configured, so the feed is off"),
        (status = 422, description = "`validation_failed`: `after`, `limit` or `wait` out of range"),
        (status = 503, description = "`service_unavailable`"),
    ),
    security(("resource_server_credential" = []))
)]
pub async fn revocations(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<HashMap<String, String>>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(params) = query.map_err(|_| ApiError::Malformed("The query string is malformed."))?;
    let query = parse_query(&params)?;
    let page = state
        .service
        .revocations_after(bearer(&headers).token(), query)
        .await?;
    let body = Page {
        revocations: page
            .revocations
            .iter()
            .map(|r| Entry {
                seq: r.seq,
                session_id: r.session_id,
                user_id: r.user_id,
                at: r.at,
                reason: r.reason.as_deref(),
            })
            .collect(),
        next: page.next,
    };
    // Each answer is for one reader at one moment.
    Ok(no_store(body))
}

fn parse_query(params: &HashMap<String, String>) -> Result<FeedQuery, ApiError> {
    let mut errors = Vec::new();
    let mut number = |name: &str, max: u64, message: &str| -> Option<u64> {
        let raw = params.get(name)?;
        match raw.parse::<u64>() {
            Ok(n) if n <= max => Some(n),
            _ => {
                errors.push(FieldError::new(name, message));
                None
            }
        }
    };
    let after = number("after", i64::MAX as u64, "must be a sequence number (0 or more)");
    let limit = number(
        "limit",
        u64::from(FEED_MAX_PAGE),
        &format!("must be from 1 to {FEED_MAX_PAGE}"),
    );
    let wait = number(
        "wait",
        FEED_MAX_WAIT.as_secs(),
        &format!("must be from 0 to {} seconds", FEED_MAX_WAIT.as_secs()),
    );
    if limit == Some(0) {
        errors.push(FieldError::new(
            "limit",
            format!("must be from 1 to {FEED_MAX_PAGE}"),
        ));
    }
    if !errors.is_empty() {
        return Err(errors.into());
    }
    Ok(FeedQuery {
        after: after.map_or(0, |n| n as i64),
        limit: limit.map_or(DEFAULT_LIMIT, |n| n as u32),
        wait: Duration::from_secs(wait.unwrap_or(0)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_bounds_and_refusals() {
        let q = parse_query(&params(&[])).unwrap();
        assert_eq!((q.after, q.limit, q.wait), (0, DEFAULT_LIMIT, Duration::ZERO));
        let q = parse_query(&params(&[("after", "41"), ("limit", "1000"), ("wait", "30")])).unwrap();
        assert_eq!((q.after, q.limit, q.wait), (41, 1000, Duration::from_secs(30)));
        for bad in [
            ("after", "-1"),
            ("after", "x"),
            ("limit", "0"),
            ("limit", "1001"),
            ("wait", "31"),
            ("wait", "1.5"),
        ] {
            assert!(parse_query(&params(&[bad])).is_err(), "{bad:?}");
        }
    }
}
