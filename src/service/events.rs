//! The audit trail and alerts of the flows: every event is written to the audit log, and a
//! security event is also raised as an alert (the sink decides whether it goes to the
//! webhook). Writing either never fails a request: the action has happened.

use std::sync::Arc;

use super::views::ClientInfo;
use crate::alerts::{Alert, AlertSink};
use crate::domain::{AuditKind, Clock, SessionId, UserId};
use crate::store::{AuditEvent, Store};

/// Where the flows record what happened. Cheap to clone (a task that outlives its request
/// takes a copy).
#[derive(Clone)]
pub struct Events {
    store: Arc<dyn Store>,
    alerts: Arc<dyn AlertSink>,
    clock: Arc<dyn Clock>,
}

impl Events {
    pub fn new(store: Arc<dyn Store>, alerts: Arc<dyn AlertSink>, clock: Arc<dyn Clock>) -> Events {
        Events { store, alerts, clock }
    }

    pub fn alerts(&self) -> &dyn AlertSink {
        self.alerts.as_ref()
    }

    /// The sink, for a service of its own (the admin API's `AdminService`).
    pub fn sink(&self) -> Arc<dyn AlertSink> {
        Arc::clone(&self.alerts)
    }

    /// An event of this request, stamped now (written by [`Events::write`] or
    /// [`Events::record_security`]).
    pub fn event(
        &self,
        kind: AuditKind,
        user_id: Option<UserId>,
        session_id: Option<SessionId>,
        client: &ClientInfo,
        detail: Option<String>,
    ) -> AuditEvent {
        AuditEvent {
            id: uuid::Uuid::now_v7(),
            event: kind,
            at: self.clock.now(),
            user_id,
            session_id,
            ip: client.ip.clone(),
            user_agent: client.user_agent.clone(),
            detail,
        }
    }

    /// Writes an audit event of this request.
    pub async fn audit(
        &self,
        kind: AuditKind,
        user_id: Option<UserId>,
        session_id: Option<SessionId>,
        client: &ClientInfo,
        detail: Option<String>,
    ) {
        self.write(self.event(kind, user_id, session_id, client, detail))
            .await;
    }

    /// Audits a security event of this request and raises its alert.
    pub async fn security(
        &self,
        kind: AuditKind,
        user_id: Option<UserId>,
        session_id: Option<SessionId>,
        client: &ClientInfo,
        detail: Option<String>,
    ) {
        self.record_security(self.event(kind, user_id, session_id, client, detail))
            .await;
    }

    /// A `session_revoked` alert for revocations already audited under their own event
    /// (`logout_others`, `password_changed`, ...): the alert only, no second audit row.
    pub async fn alert_sessions_revoked(
        &self,
        user_id: UserId,
        session_id: Option<SessionId>,
        client: &ClientInfo,
        detail: String,
    ) {
        let e = self.event(
            AuditKind::SessionRevoked,
            Some(user_id),
            session_id,
            client,
            Some(detail),
        );
        self.alerts.raise(Alert::from_audit(&e)).await;
    }

    pub async fn write(&self, e: AuditEvent) {
        write_audit(self.store.as_ref(), e).await;
    }

    pub async fn record_security(&self, e: AuditEvent) {
        record_security_event(self.store.as_ref(), self.alerts.as_ref(), e).await;
    }
}

/// Audits a security event and raises its alert; the alert carries the audit event's id.
pub(crate) async fn record_security_event(store: &dyn Store, alerts: &dyn AlertSink, e: AuditEvent) {
    let alert = Alert::from_audit(&e);
    write_audit(store, e).await;
    alerts.raise(alert).await;
}

/// Audit failures are logged, never turned into request failures.
pub(crate) async fn write_audit(store: &dyn Store, e: AuditEvent) {
    if let Err(err) = store.insert_audit_event(&e).await {
        tracing::error!(event = e.event.as_str(), error = %err, "could not write audit event");
    }
}

/// The `detail` of a `session_revoked` alert: who revoked, and the session's revocation reason.
pub(super) fn revoked_by(by: &str, reason: &str, sessions: u64) -> String {
    serde_json::json!({ "by": by, "reason": reason, "sessions": sessions }).to_string()
}
