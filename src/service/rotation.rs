//! The refresh-token state machine, as a pure function of the session's state, the
//! generation of the presented token, and the time.
//!
//! A session's chain is `t0 -> t1 -> ... -> tN`, where `tN` (generation `N`) is current.
//! Presenting:
//! - `tN`: rotate to `tN+1` (one conditional write picks a single winner among racers);
//! - `tN-1` less than `grace` after it was rotated out: answer with `tN` again, so a lost
//!   response or two racing tabs never log anyone out and the chain never forks;
//! - anything older, or `tN-1` after the window, or with `grace = 0`: reuse, theft suspected,
//!   the session is revoked.
//!
//! A revoked session answers "revoked" and an ended one "expired" before any of that.

use std::time::Duration;

use crate::domain::Timestamp;
use crate::store::SessionRecord;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefreshDecision {
    /// The presented token is current: rotate it.
    Rotate,
    /// The immediate predecessor within the grace window: hand out the current token again.
    ReplayCurrent,
    /// A rotated-out token outside the forgiveness rule: revoke the session.
    Reuse,
    /// The session was revoked or logged out.
    Revoked,
    /// The session or its current refresh token is past its lifetime.
    Expired,
}

pub fn decide(
    session: &SessionRecord,
    presented_generation: i64,
    now: Timestamp,
    grace: Duration,
) -> RefreshDecision {
    if session.revoked_at.is_some() {
        return RefreshDecision::Revoked;
    }
    if now >= session.expires_at() {
        return RefreshDecision::Expired;
    }
    if presented_generation == session.generation {
        return RefreshDecision::Rotate;
    }
    let is_immediate_predecessor = presented_generation + 1 == session.generation;
    let within_grace = !grace.is_zero()
        && session
            .rotated_at
            .is_some_and(|rotated| now < rotated.plus(grace));
    if is_immediate_predecessor && within_grace && session.sealed_current.is_some() {
        RefreshDecision::ReplayCurrent
    } else {
        RefreshDecision::Reuse
    }
}

#[cfg(test)]
mod tests {
    use super::RefreshDecision::*;
    use super::*;
    use crate::domain::UserId;

    const GRACE: Duration = Duration::from_secs(10);

    fn session(generation: i64, rotated_at: Option<i64>) -> SessionRecord {
        SessionRecord {
            generation,
            rotated_at: rotated_at.map(Timestamp),
            sealed_current: rotated_at.map(|_| vec![1, 2, 3]),
            ..SessionRecord::opened(
                UserId::new(),
                Timestamp(0),
                Timestamp(1_000_000),
                Timestamp(500_000),
                vec!["pwd".into()],
                Timestamp(0),
            )
        }
    }

    #[test]
    fn the_current_token_rotates() {
        assert_eq!(decide(&session(0, None), 0, Timestamp(1), GRACE), Rotate);
        assert_eq!(decide(&session(5, Some(100)), 5, Timestamp(200), GRACE), Rotate);
    }

    #[test]
    fn the_immediate_predecessor_is_forgiven_only_inside_the_window() {
        let s = session(3, Some(1_000));
        assert_eq!(decide(&s, 2, Timestamp(1_000), GRACE), ReplayCurrent);
        assert_eq!(decide(&s, 2, Timestamp(10_999), GRACE), ReplayCurrent);
        assert_eq!(decide(&s, 2, Timestamp(11_000), GRACE), Reuse);
        assert_eq!(decide(&s, 2, Timestamp(400_000), GRACE), Reuse);
    }

    #[test]
    fn older_ancestors_are_reuse_even_inside_the_window() {
        // A -> B -> C: replaying A is reuse at once, B is forgiven.
        let s = session(2, Some(1_000));
        assert_eq!(decide(&s, 0, Timestamp(1_001), GRACE), Reuse);
        assert_eq!(decide(&s, 1, Timestamp(1_001), GRACE), ReplayCurrent);
    }

    #[test]
    fn grace_zero_forgives_nothing() {
        let s = session(1, Some(1_000));
        assert_eq!(decide(&s, 0, Timestamp(1_000), Duration::ZERO), Reuse);
    }

    #[test]
    fn revocation_wins_over_everything() {
        let mut s = session(1, Some(1_000));
        s.revoked_at = Some(Timestamp(1_001));
        for generation in [0, 1] {
            assert_eq!(decide(&s, generation, Timestamp(1_002), GRACE), Revoked);
        }
    }

    #[test]
    fn expiry_is_the_earlier_of_sliding_and_absolute() {
        let s = session(0, None);
        assert_eq!(decide(&s, 0, Timestamp(499_999), GRACE), Rotate);
        assert_eq!(decide(&s, 0, Timestamp(500_000), GRACE), Expired);
        let mut capped = session(0, None);
        capped.absolute_expires_at = Timestamp(100);
        assert_eq!(decide(&capped, 0, Timestamp(100), GRACE), Expired);
    }

    #[test]
    fn a_replay_needs_the_sealed_successor() {
        let mut s = session(1, Some(1_000));
        s.sealed_current = None;
        assert_eq!(decide(&s, 0, Timestamp(1_001), GRACE), Reuse);
    }
}
