//! The audit trail: written by the flows, swept by age (read by `AccountStore::find_audit_events`).

use async_trait::async_trait;

use super::StoreResult;
use crate::domain::{AuditKind, SessionId, Timestamp, UserId};

#[derive(Clone, Debug)]
pub struct AuditEvent {
    pub id: uuid::Uuid,
    pub event: AuditKind,
    pub at: Timestamp,
    pub user_id: Option<UserId>,
    pub session_id: Option<SessionId>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub detail: Option<String>,
}

#[async_trait]
pub trait AuditStore: Send + Sync {
    async fn insert_audit_event(&self, event: &AuditEvent) -> StoreResult<()>;
    /// Deletes at most `limit` audit events older than `before`; returns how many.
    async fn delete_audit_events_before(&self, before: Timestamp, limit: u32) -> StoreResult<u64>;
}
