//! Per-account limits on failed logins, counted in the database so they hold across every
//! instance: after `threshold` failures within `window`, the account refuses logins for a
//! cool-down that doubles with each lock in a row (at most 64 times the first).
//!
//! Each attempt is reserved before its password is hashed: it counts as pending until its
//! outcome, and none is admitted once failures and pending attempts reach the threshold, so
//! at most `threshold` passwords are checked per lock, however many guesses arrive at once
//! and on however many instances. Failures of attempts admitted before a lock end their
//! reservation without counting, so one burst locks once, for one cool-down.
//!
//! Failures are counted by normalised email, whether or not an account has it, so a lock
//! says nothing about which emails exist. The owner is never locked out by someone else's
//! guesses: a login that proves it holds a live session of the account (the session's
//! current refresh token, in the body or the refresh cookie: something resource servers
//! never see) is counted on that session instead, with a small budget of its own, and
//! sessions already signed in keep working throughout.

use std::time::Duration;

use crate::domain::Timestamp;
use crate::store::{LoginFailures, LoginFailuresChange};

/// The most a lock grows: 2^6 = 64 times the first cool-down.
const MAX_DOUBLINGS: u32 = 6;

/// How long an admitted attempt counts as pending at most: an instance that dies while
/// hashing must not hold the account's attempts for longer.
const PENDING_FOR: Duration = Duration::from_secs(60);

/// Failures a session's holder may make within a window while signing in through the
/// account's lock (or any time it proves its session) before that session is locked too.
pub const SESSION_BUDGET: u32 = 3;

/// How long to come back after when every admitted attempt is still pending: about one hash.
pub const BUSY_RETRY: Duration = Duration::from_secs(1);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LockoutPolicy {
    /// Failures within `window` that lock the account; `0` turns locking off.
    pub threshold: u32,
    pub window: Duration,
    /// The first lock's length.
    pub cooldown: Duration,
}

/// The answer to a request for an attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Go ahead and check the password; report the outcome with this reservation.
    Admitted(Reservation),
    /// Locked until then.
    Locked(Timestamp),
    /// Admitted attempts already fill the threshold: try again in a moment.
    Busy,
}

/// An admitted attempt: which lock was in force (or last ended) when it was admitted, so
/// that its failure does not count toward another lock if one came meanwhile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reservation {
    lock_seen: Option<Timestamp>,
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

    /// The policy of one session's own budget: the account's, with a smaller threshold.
    pub fn for_session(&self) -> LockoutPolicy {
        LockoutPolicy {
            threshold: self.threshold.min(SESSION_BUDGET),
            ..*self
        }
    }

    pub fn enabled(&self) -> bool {
        self.threshold > 0
    }

    /// Until when an account with this record refuses logins, if it does at `now`.
    pub fn locked_until(&self, record: &LoginFailures, now: Timestamp) -> Option<Timestamp> {
        record.locked_until.filter(|until| now < *until)
    }

    /// The record as it stands at `now`: pending attempts past their time dropped, and a
    /// count whose window has ended started over.
    fn current(&self, record: Option<LoginFailures>, now: Timestamp) -> LoginFailures {
        let mut r = record.unwrap_or(LoginFailures {
            failures: 0,
            window_started_at: now,
            locked_until: None,
            locks: 0,
            pending: 0,
            pending_until: None,
        });
        if r.pending_until.is_none_or(|until| now >= until) {
            r.pending = 0;
            r.pending_until = None;
        }
        if now >= r.window_started_at.plus(self.window) {
            r.failures = 0;
            r.window_started_at = now;
        }
        r
    }

    /// Asks for one attempt at `now`: the record to store, and the answer. A refused attempt
    /// leaves the record as it stands.
    pub fn reserve(&self, record: Option<LoginFailures>, now: Timestamp) -> (LoginFailures, Admission) {
        let mut r = self.current(record, now);
        if let Some(until) = self.locked_until(&r, now) {
            return (r, Admission::Locked(until));
        }
        if r.failures.saturating_add(r.pending) >= self.threshold {
            return (r, Admission::Busy);
        }
        r.pending += 1;
        r.pending_until = Some(now.plus(PENDING_FOR));
        let reservation = Reservation {
            lock_seen: r.locked_until,
        };
        (r, Admission::Admitted(reservation))
    }

    /// The record after an admitted attempt failed at `now`. A failure that locks the account
    /// leaves `failures` at 0 (the count starts over once the lock ends). An attempt admitted
    /// before a lock that came meanwhile only ends its reservation.
    pub fn after_failure(
        &self,
        record: Option<LoginFailures>,
        reservation: Reservation,
        now: Timestamp,
    ) -> LoginFailures {
        let mut r = self.current(record, now);
        r.pending = r.pending.saturating_sub(1);
        if r.locked_until != reservation.lock_seen {
            return r;
        }
        // Locks "in a row": the previous one ended less than a window ago.
        let locks = match r.locked_until {
            Some(until) if now < until.plus(self.window) => r.locks,
            _ => 0,
        };
        r.failures = r.failures.saturating_add(1);
        r.locks = locks;
        if r.failures >= self.threshold {
            let length = self.cooldown.saturating_mul(1 << locks.min(MAX_DOUBLINGS));
            r.failures = 0;
            r.window_started_at = now;
            r.locked_until = Some(now.plus(length));
            r.locks = locks.saturating_add(1);
        }
        r
    }

    /// The record after an admitted attempt succeeded at `now`: its reservation ends and the
    /// failures before it no longer count. A lock in force (one that came while it was
    /// being checked) stays: it was earned by others' guesses; an ended one no longer counts
    /// toward doubling the next.
    pub fn after_success(&self, record: Option<LoginFailures>, now: Timestamp) -> LoginFailures {
        let mut r = self.current(record, now);
        r.pending = r.pending.saturating_sub(1);
        r.failures = 0;
        r.window_started_at = now;
        if self.locked_until(&r, now).is_none() {
            // The last lock's end is kept: it tells attempts admitted before it from later ones.
            r.locks = 0;
        }
        r
    }

    /// The record after an admitted attempt ended with no password checked (the client left,
    /// or the hashing queue was full): only its reservation ends.
    pub fn release(&self, record: Option<LoginFailures>, now: Timestamp) -> LoginFailures {
        let mut r = self.current(record, now);
        r.pending = r.pending.saturating_sub(1);
        r
    }

    /// Did this change (a failure) lock the account?
    pub fn just_locked(change: &LoginFailuresChange) -> bool {
        change.after.locked_until.is_some()
            && change.after.locked_until != change.before.and_then(|b| b.locked_until)
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

    /// Admits an attempt at `now`, which must be admitted.
    fn admit(policy: LockoutPolicy, record: Option<LoginFailures>, now: i64) -> (LoginFailures, Reservation) {
        match policy.reserve(record, Timestamp(now)) {
            (r, Admission::Admitted(reservation)) => (r, reservation),
            (_, refused) => panic!("refused at {now}: {refused:?}"),
        }
    }

    /// Attempts that fail one after the other.
    fn fail_times(mut record: Option<LoginFailures>, at: &[i64]) -> LoginFailures {
        for &t in at {
            let (r, reservation) = admit(POLICY, record, t);
            record = Some(POLICY.after_failure(Some(r), reservation, Timestamp(t)));
        }
        record.expect("at least one failure")
    }

    fn just_locked(r: &LoginFailures) -> bool {
        r.failures == 0 && r.locked_until.is_some()
    }

    #[test]
    fn the_threshold_within_the_window_locks_for_the_cooldown() {
        let r = fail_times(None, &[0, 1_000]);
        assert_eq!(r.failures, 2);
        assert!(!just_locked(&r));
        assert_eq!(POLICY.locked_until(&r, Timestamp(1_000)), None);
        let r = fail_times(Some(r), &[2_000]);
        assert!(just_locked(&r));
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

    #[test]
    fn concurrent_attempts_beyond_the_threshold_are_not_admitted() {
        let mut record = None;
        let mut admitted = Vec::new();
        let mut busy = 0;
        for _ in 0..59 {
            match POLICY.reserve(record, Timestamp(0)) {
                (r, Admission::Admitted(reservation)) => {
                    record = Some(r);
                    admitted.push(reservation);
                }
                (_, Admission::Busy) => busy += 1,
                (_, other) => panic!("{other:?}"),
            }
        }
        assert_eq!(admitted.len(), 3, "at most the threshold is checked at once");
        assert_eq!(busy, 56);
        for reservation in admitted {
            record = Some(POLICY.after_failure(record, reservation, Timestamp(5)));
        }
        let r = record.expect("record");
        assert_eq!(r.pending, 0);
        assert_eq!(r.locked_until, Some(Timestamp(10_005)), "one lock, one cool-down");
        assert_eq!(r.locks, 1);
    }

    #[test]
    fn failures_admitted_before_a_lock_do_not_lock_again() {
        let policy = LockoutPolicy {
            threshold: 3,
            ..POLICY
        };
        // Three admitted together; a fourth waits. Two fail and the third, slower, fails
        // after the lock another record change made meanwhile (e.g. a second instance).
        let (r, a) = admit(policy, None, 0);
        let (r, b) = admit(policy, Some(r), 0);
        let (r, c) = admit(policy, Some(r), 0);
        let r = policy.after_failure(Some(r), a, Timestamp(1));
        let r = policy.after_failure(Some(r), b, Timestamp(2));
        assert_eq!(r.failures, 2);
        assert_eq!(r.locked_until, None);
        let r = policy.after_failure(Some(r), c, Timestamp(3));
        assert_eq!(r.locked_until, Some(Timestamp(10_003)));
        // An attempt admitted before that lock fails after it: no further failure counted.
        let (early, reservation) = admit(policy, None, 0);
        assert_eq!(early.locked_until, None);
        let after = policy.after_failure(Some(r), reservation, Timestamp(4));
        assert_eq!(after.failures, 0);
        assert_eq!(after.locked_until, Some(Timestamp(10_003)));
        assert_eq!(after.locks, 1);
    }

    #[test]
    fn a_success_refunds_its_reservation_and_clears_the_count() {
        let r = fail_times(None, &[0, 1]);
        let (r, _) = admit(POLICY, Some(r), 2);
        assert_eq!((r.failures, r.pending), (2, 1));
        let r = POLICY.after_success(Some(r), Timestamp(3));
        assert_eq!((r.failures, r.pending), (0, 0));
        let r = fail_times(Some(r), &[4, 5]);
        assert_eq!(r.locked_until, None, "two failures after a success do not lock");
    }

    #[test]
    fn a_success_keeps_a_lock_in_force() {
        let locked = fail_times(None, &[0, 1, 2]);
        let r = POLICY.after_success(Some(locked), Timestamp(3));
        assert_eq!(POLICY.locked_until(&r, Timestamp(3)), Some(Timestamp(10_002)));
        assert!(matches!(
            POLICY.reserve(Some(r), Timestamp(4)).1,
            Admission::Locked(_)
        ));
    }

    #[test]
    fn a_locked_account_admits_nothing_and_pending_attempts_expire() {
        let locked = fail_times(None, &[0, 1, 2]);
        assert_eq!(
            POLICY.reserve(Some(locked), Timestamp(5_000)).1,
            Admission::Locked(Timestamp(10_002))
        );
        // Attempts of an instance that died mid-hash stop counting after a minute.
        let (r, _) = admit(POLICY, None, 0);
        let (r, _) = admit(POLICY, Some(r), 0);
        let (r, _) = admit(POLICY, Some(r), 0);
        assert_eq!(POLICY.reserve(Some(r), Timestamp(59_999)).1, Admission::Busy);
        assert!(matches!(
            POLICY.reserve(Some(r), Timestamp(60_000)).1,
            Admission::Admitted(_)
        ));
    }

    #[test]
    fn a_session_budget_is_the_smaller_of_three_and_the_threshold() {
        assert_eq!(POLICY.for_session().threshold, 3);
        let big = LockoutPolicy {
            threshold: 10,
            ..POLICY
        };
        assert_eq!(big.for_session().threshold, SESSION_BUDGET);
        let small = LockoutPolicy {
            threshold: 2,
            ..POLICY
        };
        assert_eq!(small.for_session().threshold, 2);
    }
}
