//! Password hashing off the async runtime, bounded: argon2id takes 19 MiB and tens of
//! milliseconds per hash, so how many run at once is capped whatever clients do.
//!
//! Hashes run on threads of their own, as many as the permits, at a lower CPU priority than
//! the runtime: when logins keep every core busy, a token verification or refresh still gets
//! a core as soon as it is ready instead of waiting out a hash's time slice (while 32 clients
//! logged in, verify's p99 went from 5.8 to 4.0 ms and its rate up 1.5×; docs/BENCHMARKS.md).
//! Idle cores still go to hashing, so logins alone run as fast as before.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

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
    threads: HashThreads,
}

impl Hashing {
    /// At most `concurrency` hashes at once (at least one); computes the dummy hash.
    pub async fn start(concurrency: usize) -> Result<Hashing, AuthError> {
        let permits = concurrency.max(1);
        // One working buffer per hash that may run at once, never more.
        let hasher = Arc::new(PasswordHasher::with_pool_limit(permits));
        let threads = HashThreads::start(permits)?;
        let for_dummy = Arc::clone(&hasher);
        let dummy = threads.run(move || for_dummy.dummy_hash()).await??;
        Ok(Hashing {
            hasher,
            dummy,
            permits: Arc::new(Semaphore::new(permits)),
            stats: Arc::new(HashingStats::new(permits)),
            threads,
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

    /// Waits for a turn worth `units`, runs `work` on a hashing thread and waits for it: the
    /// whole of a hash for a request that has nothing else to do meanwhile (login, which must
    /// outlive a hang-up, uses [`Self::spawn`] itself).
    async fn in_turn<T: Send + 'static>(
        &self,
        units: u32,
        work: impl FnOnce(&PasswordHasher) -> T + Send + 'static,
    ) -> Result<T, AuthError> {
        let permit = self.permit(units).await?;
        self.spawn(permit, work).await
    }

    /// Runs password hashing on the hashing threads. The permit moves into the job and is
    /// released only when the hash is done, so the number of hashes running (threads busy,
    /// buffers in use) never exceeds the permits whatever the clients do. The hash runs to
    /// the end even if the returned future is dropped.
    pub fn spawn<T: Send + 'static>(
        &self,
        permit: OwnedSemaphorePermit,
        work: impl FnOnce(&PasswordHasher) -> T + Send + 'static,
    ) -> impl Future<Output = Result<T, AuthError>> + Send + 'static {
        let hasher = Arc::clone(&self.hasher);
        let stats = Arc::clone(&self.stats);
        self.threads.run(move || {
            let _permit = permit;
            let _running = stats.running();
            work(&hasher)
        })
    }
}

/// How much lower than the runtime's the hashing threads' CPU priority is (a nice value:
/// a thread at 10 weighs about a tenth of one at 0 when both want a core).
const HASH_THREAD_NICENESS: i32 = 10;

type Job = Box<dyn FnOnce() + Send>;

/// The threads that run hashes: one per permit, so a job with a permit never waits for a
/// thread, at [`HASH_THREAD_NICENESS`]. They end when the [`Hashing`] that owns them is
/// dropped.
struct HashThreads {
    jobs: mpsc::Sender<Job>,
}

impl HashThreads {
    fn start(count: usize) -> Result<HashThreads, AuthError> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for n in 0..count {
            let queue = Arc::clone(&queue);
            std::thread::Builder::new()
                .name(format!("tessera-hash-{n}"))
                .spawn(move || {
                    lower_this_threads_priority();
                    loop {
                        // The lock is held only while waiting for the next job.
                        let job = match queue.lock() {
                            Ok(queue) => queue.recv(),
                            Err(_) => return,
                        };
                        match job {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    }
                })
                .map_err(|e| AuthError::Internal(format!("cannot start a hashing thread: {e}")))?;
        }
        Ok(HashThreads { jobs })
    }

    /// Runs `work` on a hashing thread; a panic in it is an internal error, and the thread
    /// lives on.
    fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> impl Future<Output = Result<T, AuthError>> + Send + 'static {
        let (done, result) = oneshot::channel();
        let sent = self.jobs.send(Box::new(move || {
            if let Ok(value) = std::panic::catch_unwind(AssertUnwindSafe(work)) {
                let _ = done.send(value);
            }
        }));
        async move {
            sent.map_err(|_| AuthError::Internal("the hashing threads have stopped".into()))?;
            result
                .await
                .map_err(|_| AuthError::Internal("a password hash did not finish".into()))
        }
    }
}

/// Linux gives each thread its own nice value; elsewhere hashing runs at the usual priority.
fn lower_this_threads_priority() {
    #[cfg(target_os = "linux")]
    if let Err(e) = rustix::process::setpriority_process(None, HASH_THREAD_NICENESS) {
        tracing::debug!(error = %e, "could not lower the hashing threads' priority");
    }
}

/// This thread's nice value, for tests.
#[cfg(all(test, target_os = "linux"))]
fn this_threads_niceness() -> i32 {
    rustix::process::getpriority_process(None).unwrap_or(i32::MIN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_run_at_a_lower_priority_than_the_runtime() {
        let hashing = Hashing::start(2).await.unwrap();
        let permit = hashing.permit(1).await.unwrap();
        #[cfg(target_os = "linux")]
        {
            let runtime = this_threads_niceness();
            let hashing_thread = hashing.spawn(permit, |_| this_threads_niceness()).await.unwrap();
            assert_eq!(hashing_thread, runtime + HASH_THREAD_NICENESS);
        }
        #[cfg(not(target_os = "linux"))]
        drop(permit);
    }

    #[tokio::test]
    async fn a_panicking_hash_is_an_error_and_the_threads_live_on() {
        let hashing = Hashing::start(1).await.unwrap();
        let permit = hashing.permit(1).await.unwrap();
        let panicked = hashing.spawn(permit, |_| -> u32 { panic!("boom") }).await;
        assert!(matches!(panicked, Err(AuthError::Internal(_))), "{panicked:?}");
        assert_eq!(hashing.stats().in_progress(), 0);
        // The one thread and the one permit are both back.
        let permit = hashing.permit(1).await.unwrap();
        assert_eq!(hashing.spawn(permit, |_| 7).await.unwrap(), 7);
    }
}
