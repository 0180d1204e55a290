//! A clock that agrees with the database's.
//!
//! Reuse grace and expiry compare times written by one instance (`rotated_at`, expiries) with
//! "now" on another. With PostgreSQL the instances run on different machines, and two wall
//! clocks that differ by more than the grace window would turn an honest retry into a
//! detected reuse. So each instance measures the offset between its clock and the database
//! server's (correcting for half the round trip, best of a few samples) at start and every
//! minute, and reads "now" as its own clock plus that offset: every instance then agrees with
//! the database, and so with every other instance, to within a few milliseconds.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use crate::domain::{Clock, Timestamp};
use crate::store::{Store, StoreResult};

/// Samples per measurement; the one with the shortest round trip is used.
const SAMPLES: usize = 3;

pub struct DatabaseAlignedClock {
    base: Arc<dyn Clock>,
    offset_ms: AtomicI64,
}

impl DatabaseAlignedClock {
    /// Measures the offset to the database's clock. `Ok(None)` when the database has no clock
    /// of its own to align to (SQLite, on this machine): use `base` as it is.
    pub async fn measure(base: Arc<dyn Clock>, store: &dyn Store) -> StoreResult<Option<Arc<Self>>> {
        let Some(offset) = best_offset(base.as_ref(), store).await? else {
            return Ok(None);
        };
        Ok(Some(Arc::new(DatabaseAlignedClock {
            base,
            offset_ms: AtomicI64::new(offset),
        })))
    }

    /// Measures again (the clocks drift, or one was stepped); returns the new offset.
    pub async fn resync(&self, store: &dyn Store) -> StoreResult<i64> {
        if let Some(offset) = best_offset(self.base.as_ref(), store).await? {
            self.offset_ms.store(offset, Ordering::Relaxed);
        }
        Ok(self.offset())
    }

    /// Milliseconds to add to the base clock to read the database's.
    pub fn offset(&self) -> i64 {
        self.offset_ms.load(Ordering::Relaxed)
    }
}

impl Clock for DatabaseAlignedClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.base.now().millis().saturating_add(self.offset()))
    }
}

async fn best_offset(base: &dyn Clock, store: &dyn Store) -> StoreResult<Option<i64>> {
    let mut best: Option<(i64, i64)> = None; // (round trip, offset)
    for _ in 0..SAMPLES {
        let sent = base.now().millis();
        let Some(database) = store.database_time().await? else {
            return Ok(None);
        };
        let received = base.now().millis();
        let round_trip = received - sent;
        let offset = database.millis() - (sent + round_trip / 2);
        if best.is_none_or(|(rt, _)| round_trip < rt) {
            best = Some((round_trip, offset));
        }
    }
    Ok(best.map(|(_, offset)| offset))
}
