//! Per-account limits on failed logins, counted in the database so they hold across every
//! instance: after `threshold` failures within `window`, the account refuses logins for a
//! cool-down that doubles with each lock in a row (at most 64 times the first).
//!
//! Failures are counted by normalised email, whether or not an account has it, so a lock
//! says nothing about which emails exist. The owner is never locked out by someone else's
//! guesses: a login from a device that holds a live session of the account (its access
//! token, even expired, sent as a bearer header or the access cookie) is not refused, and
//! sessions already signed in keep working throughout.

use std::time::Duration;

use crate::config::Config;
use crate::domain::Timestamp;
use crate::store::LoginFailures;

/// The most a lock grows: 2^6 = 64 times the first cool-down.
const MAX_DOUBLINGS: u32 = 6;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LockoutPolicy {
    /// Failures within `window` that lock the account; `0` turns locking off.
    pub threshold: u32,
    pub window: Duration,
    /// The first lock's length.
    pub cooldown: Duration,
}

impl LockoutPolicy {
    /// The failures within one window that make a `login_failed_burst` alert: half the lock
    /// threshold (rounded up, at least 2), so the owner hears of a guessing run before the
    /// lock. `None` when that would not come before the lock (thresholds under 3) or
    /// locking is off.
    pub fn burst(&self) -> Option<u32> {
        let burst = self.threshold.div_ceil(2).max(2);
        (burst < self.threshold).then_some(burst)
    }

    pub fn from_config(c: &Config) -> LockoutPolicy {
        LockoutPolicy {
            threshold: c.lockout_threshold,
            window: c.lockout_window,
            cooldown: c.lockout_cooldown,
        }
    }

    pub fn enabled(&self) -> bool {
        self.threshold > 0
    }

    /// Until when an account with this record refuses logins, if it does at `now`.
    pub fn locked_until(&self, record: &LoginFailures, now: Timestamp) -> Option<Timestamp> {
        record.locked_until.filter(|until| now < *until)
    }

    /// The record after one more failed login at `now`. A failure that locks the account
    /// leaves `failures` at 0 (the count starts over once the lock ends); every other failure
    /// leaves it at 1 or more, which is how [`LoginFailures::just_locked`] tells them apart.
    pub fn after_failure(&self, previous: Option<LoginFailures>, now: Timestamp) -> LoginFailures {
        let previous = previous.unwrap_or(LoginFailures {
            failures: 0,
            window_started_at: now,
            locked_until: None,
            locks: 0,
        });
        // Locks "in a row": the previous one ended less than a window ago.
        let locks = match previous.locked_until {
            Some(until) if now < until.plus(self.window) => previous.locks,
            _ => 0,
        };
        let (failures, window_started_at) = if now < previous.window_started_at.plus(self.window) {
            (previous.failures.saturating_add(1), previous.window_started_at)
        } else {
            (1, now)
        };
        if failures >= self.threshold {
            let length = self.cooldown.saturating_mul(1 << locks.min(MAX_DOUBLINGS));
            LoginFailures {
                failures: 0,
                window_started_at: now,
                locked_until: Some(now.plus(length)),
                locks: locks.saturating_add(1),
            }
        } else {
            LoginFailures {
                failures,
                window_started_at,
                locked_until: previous.locked_until,
                locks,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_half_the_threshold_and_comes_before_the_lock() {
        let policy = |threshold| LockoutPolicy {
            threshold,
            window: Duration::from_secs(60),
            cooldown: Duration::from_secs(60),
        };
        assert_eq!(policy(10).burst(), Some(5));
        assert_eq!(policy(5).burst(), Some(3));
        assert_eq!(policy(4).burst(), Some(2));
        assert_eq!(policy(3).burst(), Some(2));
        assert_eq!(policy(2).burst(), None);
        assert_eq!(policy(0).burst(), None);
    }

    const POLICY: LockoutPolicy = LockoutPolicy {
        threshold: 3,
        window: Duration::from_secs(60),
        cooldown: Duration::from_secs(10),
    };

    fn fail_times(mut record: Option<LoginFailures>, at: &[i64]) -> LoginFailures {
        for &t in at {
            record = Some(POLICY.after_failure(record, Timestamp(t)));
        }
        record.expect("at least one failure")
    }

    #[test]
    fn the_threshold_within_the_window_locks_for_the_cooldown() {
        let r = fail_times(None, &[0, 1_000]);
        assert_eq!(r.failures, 2);
        assert!(!r.just_locked());
        assert_eq!(POLICY.locked_until(&r, Timestamp(1_000)), None);
        let r = fail_times(Some(r), &[2_000]);
        assert!(r.just_locked());
        assert_eq!(POLICY.locked_until(&r, Timestamp(2_000)), Some(Timestamp(12_000)));
        assert_eq!(
            POLICY.locked_until(&r, Timestamp(11_999)),
            Some(Timestamp(12_000))
        );
        assert_eq!(POLICY.locked_until(&r, Timestamp(12_000)), None);
    }

    #[test]
    fn failures_outside_the_window_start_a_new_count() {
        let r = fail_times(None, &[0, 1_000, 61_000, 62_000]);
        assert_eq!(r.failures, 2);
        assert_eq!(r.locked_until, None);
    }

    #[test]
    fn locks_in_a_row_double_up_to_64_times() {
        let mut r = None;
        let mut now = 0;
        let mut lengths = Vec::new();
        for _ in 0..9 {
            let locked = fail_times(r, &[now, now + 1, now + 2]);
            let until = locked.locked_until.expect("locked");
            lengths.push((until.0 - (now + 2)) / 1_000);
            // The next burst comes as soon as the lock ends: still "in a row".
            now = until.0;
            r = Some(locked);
        }
        assert_eq!(lengths, vec![10, 20, 40, 80, 160, 320, 640, 640, 640]);
    }

    #[test]
    fn a_quiet_window_after_a_lock_forgets_it() {
        let locked = fail_times(None, &[0, 1, 2]);
        let until = locked.locked_until.expect("locked").0;
        let again = fail_times(Some(locked), &[until + 60_000, until + 60_001, until + 60_002]);
        let length = again.locked_until.expect("locked").0 - (until + 60_002);
        assert_eq!(length, 10_000, "back to the first cool-down");
    }
}
