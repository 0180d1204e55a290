//! Password hashing off the async runtime, bounded: argon2id takes 19 MiB and tens of
//! milliseconds per hash, so how many run at once is capped whatever clients do.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::error::AuthError;
use crate::crypto::{PasswordHashString, PasswordHasher};

/// The longest a login or registration waits for a turn at password hashing before it is
/// answered 503: a flood of hashing requests then costs its senders, not every other user.
const HASH_QUEUE_TIMEOUT: Duration = Duration::from_secs(5);

/// Password hashing as it happens: for `/metrics` and tests.
#[derive(Debug, Default)]
pub struct HashingStats {
    in_progress: AtomicUsize,
    peak: AtomicUsize,
    finished: AtomicU64,
    permits: usize,
}

impl HashingStats {
    fn new(permits: usize) -> HashingStats {
        HashingStats {
            permits,
            ..HashingStats::default()
        }
    }

    /// Hashes running right now.
    pub fn in_progress(&self) -> usize {
        self.in_progress.load(Ordering::Relaxed)
    }

    /// The most hashes that ever ran at once.
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }

    /// Hashes finished since start.
    pub fn finished(&self) -> u64 {
        self.finished.load(Ordering::Relaxed)
    }

    /// The bound on hashes running at once.
    pub fn permits(&self) -> usize {
        self.permits
    }

    /// Counts a hash as running until the guard is dropped (even by a panic).
    fn running(&self) -> RunningHash<'_> {
        let now = self.in_progress.fetch_add(1, Ordering::Relaxed) + 1;
        self.peak.fetch_max(now, Ordering::Relaxed);
        RunningHash(self)
    }
}

struct RunningHash<'a>(&'a HashingStats);

impl Drop for RunningHash<'_> {
    fn drop(&mut self) {
        self.0.in_progress.fetch_sub(1, Ordering::Relaxed);
        self.0.finished.fetch_add(1, Ordering::Relaxed);
    }
}

/// Password hashing as a shared resource: the hasher with its working buffers, the permits
/// that bound how many hashes run at once, and the dummy hash that unknown emails are
/// checked against (so they cost what a wrong password costs).
pub struct Hashing {
    hasher: Arc<PasswordHasher>,
    dummy: PasswordHashString,
    /// argon2 takes 19 MiB and tens of milliseconds per hash: bound how many run at once. A
    /// permit is owned by the blocking work itself, so a client hanging up cannot free it
    /// while its hash still runs.
    permits: Arc<Semaphore>,
    stats: Arc<HashingStats>,
}

impl Hashing {
    /// At most `concurrency` hashes at once (at least one); computes the dummy hash.
    pub async fn start(concurrency: usize) -> Result<Hashing, AuthError> {
        let permits = concurrency.max(1);
        // One working buffer per hash that may run at once, never more.
        let hasher = Arc::new(PasswordHasher::with_pool_limit(permits));
        let for_dummy = Arc::clone(&hasher);
        let dummy = tokio::task::spawn_blocking(move || for_dummy.dummy_hash())
            .await
            .map_err(|e| AuthError::Internal(e.to_string()))??;
        Ok(Hashing {
            hasher,
            dummy,
            permits: Arc::new(Semaphore::new(permits)),
            stats: Arc::new(HashingStats::new(permits)),
        })
    }

    pub fn stats(&self) -> &HashingStats {
        &self.stats
    }

    /// The hash an unknown email is checked against.
    pub fn dummy_hash(&self) -> &PasswordHashString {
        &self.dummy
    }

    /// What checking `stored` costs of the memory budget (see `PasswordHasher::memory_units`).
    pub fn memory_units(&self, stored: &PasswordHashString) -> u32 {
        self.hasher.memory_units(stored)
    }

    /// A turn at password hashing worth `units` of the memory budget (1 for our own hashes;
    /// more for an imported hash with more memory; at most the whole budget), waited for at
    /// most [`HASH_QUEUE_TIMEOUT`].
    pub async fn permit(&self, units: u32) -> Result<OwnedSemaphorePermit, AuthError> {
        let units = units.clamp(1, u32::try_from(self.stats.permits()).unwrap_or(u32::MAX).max(1));
        tokio::time::timeout(
            HASH_QUEUE_TIMEOUT,
            Arc::clone(&self.permits).acquire_many_owned(units),
        )
        .await
        .map_err(|_| AuthError::Overloaded)?
        .map_err(|e| AuthError::Internal(e.to_string()))
    }

    /// Verifies `password` against `stored` in turn, charged for `stored`'s memory.
    pub async fn verify_in_turn(
        &self,
        password: String,
        stored: PasswordHashString,
    ) -> Result<bool, AuthError> {
        let units = self.memory_units(&stored);
        self.in_turn(units, move |hasher| hasher.verify(&password, &stored))
            .await
    }

    /// Hashes with our own parameters (one unit of the budget) in turn.
    pub async fn hash_in_turn<T: Send + 'static>(
        &self,
        work: impl FnOnce(&PasswordHasher) -> T + Send + 'static,
    ) -> Result<T, AuthError> {
        self.in_turn(1, work).await
    }

    /// Waits for a turn worth `units`, runs `work` on the blocking pool and waits for it: the
    /// whole of a hash for a request that has nothing else to do meanwhile (login, which must
    /// outlive a hang-up, uses [`Self::spawn`] itself).
    async fn in_turn<T: Send + 'static>(
        &self,
        units: u32,
        work: impl FnOnce(&PasswordHasher) -> T + Send + 'static,
    ) -> Result<T, AuthError> {
        let permit = self.permit(units).await?;
        self.spawn(permit, work)
            .await
            .map_err(|e| AuthError::Internal(e.to_string()))
    }

    /// Runs password hashing on the blocking pool. The permit moves into the blocking closure
    /// and is released only when the hash is done, so the number of hashes running (threads
    /// busy, buffers in use) never exceeds the permits whatever the clients do.
    pub fn spawn<T: Send + 'static>(
        &self,
        permit: OwnedSemaphorePermit,
        work: impl FnOnce(&PasswordHasher) -> T + Send + 'static,
    ) -> tokio::task::JoinHandle<T> {
        let hasher = Arc::clone(&self.hasher);
        let stats = Arc::clone(&self.stats);
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let _running = stats.running();
            work(&hasher)
        })
    }
}
