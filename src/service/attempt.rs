//! The per-account lock applied to one password check: an attempt is reserved in the
//! database before its password is hashed and settled once the outcome is known (the pure
//! rules are [`LockoutPolicy`]'s; this is their bookkeeping).

use std::sync::Arc;
use std::time::Duration;

use super::events::record_security_event;
use super::lockout::{Admission, LockoutPolicy, Reservation, BUSY_RETRY};
use super::AuthError;
use crate::alerts::AlertSink;
use crate::domain::{AuditKind, Clock, Timestamp};
use crate::store::{AuditEvent, FailureKey, Store};

/// A password check the lock admitted, until its outcome is recorded. Dropped unsettled (the
/// client left while queued for a hash, or the queue timed out), it hands its reservation
/// back on a task of its own: nothing was checked, so nothing counts.
pub(super) struct Attempt {
    key: FailureKey,
    policy: LockoutPolicy,
    reservation: Reservation,
    /// Counted on the account's email (not on one session's budget): its locks and bursts
    /// are security events.
    on_account: bool,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    settled: bool,
}

impl Attempt {
    /// Reserves an attempt on `key` under `policy`, or says why not: locked (until when), or
    /// every attempt the threshold allows already under way.
    pub(super) async fn reserve(
        store: &Arc<dyn Store>,
        clock: &Arc<dyn Clock>,
        key: FailureKey,
        policy: LockoutPolicy,
        on_account: bool,
    ) -> Result<Attempt, AuthError> {
        let now = clock.now();
        let change = store
            .change_login_failures(&key, Box::new(move |r| policy.reserve(r, now).0))
            .await?;
        // The decision is a pure function of the record the store read: taken again here.
        match policy.reserve(change.before, now).1 {
            Admission::Admitted(reservation) => Ok(Attempt {
                key,
                policy,
                reservation,
                on_account,
                store: Arc::clone(store),
                clock: Arc::clone(clock),
                settled: false,
            }),
            Admission::Locked(until) => Err(AuthError::AccountLocked(Duration::from_millis(
                u64::try_from(until.0 - now.0).unwrap_or(0),
            ))),
            Admission::Busy => Err(AuthError::AccountLocked(BUSY_RETRY)),
        }
    }

    /// The password was right: the reservation ends and earlier failures no longer count.
    pub(super) async fn succeeded(mut self) {
        self.settled = true;
        let (policy, now) = (self.policy, self.clock.now());
        let done = self
            .store
            .change_login_failures(&self.key, Box::new(move |r| policy.after_success(r, now)))
            .await;
        if let Err(e) = done {
            tracing::warn!(error = %e, "could not clear failed logins");
        }
    }

    /// The password was right but is only half a login (the account has a second factor):
    /// the reservation is handed back before the answer, clearing nothing, so the second
    /// step's own attempt finds it gone.
    pub(super) async fn released(mut self) {
        self.settled = true;
        let (policy, now) = (self.policy, self.clock.now());
        let done = self
            .store
            .change_login_failures(&self.key, Box::new(move |r| policy.release(r, now)))
            .await;
        if let Err(e) = done {
            tracing::warn!(error = %e, "could not release a login attempt");
        }
    }

    /// The password was wrong: counts the failure. The failure that locks the account is
    /// audited (and logged, and alerted) as `account_locked`, and the failure that reaches
    /// [`LockoutPolicy::burst`] within a window as `login_failed_burst` (so at most once per
    /// window). Errors are logged: the login has failed either way.
    pub(super) async fn failed(mut self, alerts: &dyn AlertSink, failure: &AuditEvent, at: Timestamp) {
        self.settled = true;
        let (policy, reservation) = (self.policy, self.reservation);
        let change = match self
            .store
            .change_login_failures(
                &self.key,
                Box::new(move |r| policy.after_failure(r, reservation, at)),
            )
            .await
        {
            Ok(change) => change,
            Err(e) => {
                tracing::warn!(error = %e, "could not count a failed login");
                return;
            }
        };
        if !self.on_account {
            return;
        }
        let record = change.after;
        let event = if LockoutPolicy::just_locked(&change) {
            let until = record.locked_until.unwrap_or(at);
            tracing::warn!(user = ?failure.user_id, ip = ?failure.ip, locked_for_ms = until.0 - at.0,
                "too many failed logins; account locked");
            let detail = format!(
                "locked for {} s after {} failed logins",
                (until.0 - at.0 + 999) / 1000,
                policy.threshold
            );
            Some((AuditKind::AccountLocked, detail))
        } else if failure.user_id.is_some()
            && Some(record.failures) == policy.burst()
            && change.before.map(|b| b.failures) != Some(record.failures)
        {
            // Only for an existing account: guesses at unknown emails concern no one to alert.
            let detail = format!(
                "{} failed logins within {} s (the account locks at {})",
                record.failures,
                policy.window.as_secs(),
                policy.threshold
            );
            Some((AuditKind::LoginFailedBurst, detail))
        } else {
            None
        };
        if let Some((event, detail)) = event {
            let e = AuditEvent {
                id: uuid::Uuid::now_v7(),
                event,
                at,
                detail: Some(detail),
                ..failure.clone()
            };
            record_security_event(self.store.as_ref(), alerts, e).await;
        }
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return; // Shutting down: the reservation lapses by itself (`pending_until`).
        };
        let (store, clock, key, policy) = (
            Arc::clone(&self.store),
            Arc::clone(&self.clock),
            self.key.clone(),
            self.policy,
        );
        runtime.spawn(async move {
            let now = clock.now();
            if let Err(e) = store
                .change_login_failures(&key, Box::new(move |r| policy.release(r, now)))
                .await
            {
                tracing::warn!(error = %e, "could not release a login attempt");
            }
        });
    }
}
