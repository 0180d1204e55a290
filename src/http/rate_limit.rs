//! Per-client-IP request limits over a sliding minute: every attempt counts, whatever its
//! outcome; a refused attempt does not. Exact (a log of recent attempts per IP) rather than a
//! token bucket, because the contract promises "N per sliding minute", not "N per minute on
//! average".

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const WINDOW: Duration = Duration::from_secs(60);
/// Past this many tracked clients, idle ones are dropped on the next check.
const PRUNE_ABOVE: usize = 10_000;

pub struct RateLimiter {
    per_window: usize,
    hits: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl RateLimiter {
    /// `per_minute = 0` means unlimited.
    pub fn new(per_minute: u32) -> RateLimiter {
        RateLimiter {
            per_window: usize::try_from(per_minute).unwrap_or(usize::MAX),
            hits: Mutex::new(HashMap::new()),
        }
    }

    /// Records an attempt by `client`, or refuses it with the whole seconds to wait (≥ 1).
    pub fn check(&self, client: &str) -> Result<(), u64> {
        self.check_at(client, Instant::now())
    }

    fn check_at(&self, client: &str, now: Instant) -> Result<(), u64> {
        if self.per_window == 0 {
            return Ok(());
        }
        // A poisoned lock only means another request panicked mid-update; the map is still usable.
        let mut hits = self.hits.lock().unwrap_or_else(|p| p.into_inner());
        if hits.len() > PRUNE_ABOVE {
            hits.retain(|_, q| q.back().is_some_and(|last| now.duration_since(*last) < WINDOW));
        }
        let q = hits.entry(client.to_owned()).or_default();
        while q.front().is_some_and(|t| now.duration_since(*t) >= WINDOW) {
            q.pop_front();
        }
        if q.len() >= self.per_window {
            let oldest = q.front().copied().unwrap_or(now);
            let wait = (oldest + WINDOW).saturating_duration_since(now);
            return Err(wait.as_secs_f64().ceil().max(1.0) as u64);
        }
        q.push_back(now);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_n_per_sliding_minute_per_client() {
        let l = RateLimiter::new(3);
        let t0 = Instant::now();
        for i in 0..3 {
            assert_eq!(l.check_at("a", t0 + Duration::from_secs(i)), Ok(()));
        }
        assert_eq!(l.check_at("a", t0 + Duration::from_secs(10)), Err(50));
        assert_eq!(l.check_at("b", t0 + Duration::from_secs(10)), Ok(()));
        // The first attempt leaves the window at t0+60.
        assert_eq!(l.check_at("a", t0 + Duration::from_millis(59_500)), Err(1));
        assert_eq!(l.check_at("a", t0 + Duration::from_secs(60)), Ok(()));
        assert!(l.check_at("a", t0 + Duration::from_secs(60)).is_err());
    }

    #[test]
    fn zero_is_unlimited() {
        let l = RateLimiter::new(0);
        for _ in 0..1000 {
            assert_eq!(l.check("a"), Ok(()));
        }
    }
}
