//! The sweeper: what the database no longer needs is deleted in small batches, so no
//! statement holds the SQLite writer or many PostgreSQL row locks for long.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;

use super::error::AuthError;
use super::revocations::REVOCATION_LOG_RETENTION;
use crate::domain::{Clock, SessionId, Timestamp};
use crate::store::{Store, StoreError};

/// Revoked and ended sessions are kept this long (so their tokens answer `session_revoked`)
/// before the sweeper deletes them.
pub const ENDED_SESSION_RETENTION: Duration = Duration::from_secs(7 * 86_400);

pub struct Sweeper {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    /// Audit events older than this are swept (`ZERO`: kept forever).
    audit_retention: Duration,
    /// Failed-login records are kept a lockout window after their window and lock ended.
    lockout_window: Duration,
    /// Where the walk that deletes idle sessions resumes ([`Sweeper::idle_sessions`]).
    idle_cursor: Mutex<Option<SessionId>>,
}

impl Sweeper {
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        audit_retention: Duration,
        lockout_window: Duration,
    ) -> Sweeper {
        Sweeper {
            store,
            clock,
            audit_retention,
            lockout_window,
            idle_cursor: Mutex::new(None),
        }
    }

    /// Deletes sessions that ended more than [`ENDED_SESSION_RETENTION`] ago (with their
    /// tokens) and audit events older than the configured retention, both in batches of
    /// [`SWEEP_BATCH`] with a pause between (requests write between the batches), plus
    /// revocation-log entries older than [`REVOCATION_LOG_RETENTION`] and failed-login records
    /// whose window and lock ended a window ago (a lock is remembered that long, so the next
    /// one in a row lasts longer). Returns how many sessions were deleted.
    pub async fn run(&self) -> Result<u64, AuthError> {
        let now = self.clock.now();
        self.store
            .delete_revocations_logged_before(now.minus(REVOCATION_LOG_RETENTION))
            .await?;
        self.store
            .delete_login_failures_ended_before(now.minus(self.lockout_window))
            .await?;
        if !self.audit_retention.is_zero() {
            let before = now.minus(self.audit_retention);
            let deleted =
                sweep_in_batches(|| self.store.delete_audit_events_before(before, SWEEP_BATCH)).await?;
            if deleted > 0 {
                tracing::info!(deleted, "swept audit events past their retention");
            }
        }
        // Mailed tokens a day past their expiry (until then a late click is told "expired").
        let tokens_before = now.minus(std::time::Duration::from_secs(86_400));
        sweep_in_batches(|| {
            self.store
                .delete_email_tokens_expired_before(tokens_before, SWEEP_BATCH)
        })
        .await?;
        // A second step's challenges, likewise a day past their five minutes.
        sweep_in_batches(|| {
            self.store
                .delete_mfa_challenges_expired_before(tokens_before, SWEEP_BATCH)
        })
        .await?;
        let before = now.minus(ENDED_SESSION_RETENTION);
        let ended = sweep_in_batches(|| self.store.delete_sessions_ended_before(before, SWEEP_BATCH)).await?;
        Ok(ended + self.idle_sessions(before).await?)
    }

    /// Deletes sessions whose sliding expiry passed before `before` (they went idle: refused
    /// since then, and past the retention now). No index finds them, since every rotation
    /// moves the sliding expiry, so the sweep walks all sessions by primary key instead, up
    /// to [`IDLE_SCAN_PER_SWEEP`] per sweep, resuming where the last sweep stopped: a pass
    /// over 10 million sessions takes ten sweeps (under two hours), costs the hot paths
    /// nothing, and each step holds the writer or its rows only briefly.
    async fn idle_sessions(&self, before: Timestamp) -> Result<u64, AuthError> {
        let mut cursor = self.idle_cursor.lock().await;
        let mut deleted = 0;
        let mut scanned = 0;
        while scanned < IDLE_SCAN_PER_SWEEP {
            let step = self
                .store
                .delete_idle_sessions(*cursor, IDLE_SCAN_STEP, before)
                .await?;
            deleted += step.deleted;
            scanned += IDLE_SCAN_STEP;
            *cursor = step.next;
            if step.next.is_none() {
                // The pass reached the last session; the next sweep starts a new one.
                break;
            }
            tokio::time::sleep(SWEEP_PAUSE).await;
        }
        Ok(deleted)
    }
}

/// Sessions one step of the idle-session walk scans (and so deletes at most).
const IDLE_SCAN_STEP: u32 = 500;
/// Sessions one sweep scans for idle ones at most.
pub const IDLE_SCAN_PER_SWEEP: u32 = 1_000_000;

/// Rows one sweep statement deletes at most. A session takes its refresh tokens with it (one
/// row per rotation, thousands for a long-lived session), so batches are small.
pub const SWEEP_BATCH: u32 = 100;
/// The pause between two batches: the writer (SQLite) or the rows (PostgreSQL) are free for
/// requests meanwhile.
const SWEEP_PAUSE: Duration = Duration::from_millis(10);

/// Runs `batch` until it deletes fewer than a full batch; returns the total.
async fn sweep_in_batches<F, Fut>(mut batch: F) -> Result<u64, AuthError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<u64, StoreError>>,
{
    let mut total = 0;
    loop {
        let deleted = batch().await?;
        total += deleted;
        if deleted < u64::from(SWEEP_BATCH) {
            return Ok(total);
        }
        tokio::time::sleep(SWEEP_PAUSE).await;
    }
}
