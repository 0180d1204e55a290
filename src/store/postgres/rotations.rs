//! Group commit for refresh-token rotations on PostgreSQL.
//!
//! Rotations arriving while a batch is at the database are queued and sent together as the
//! next batch: one statement over arrays, one commit (one WAL flush) for all of them. Nothing
//! waits on a timer: with no batch in flight a rotation goes at once, so batches grow with the
//! load and stay at one when there is none.
//!
//! One batch at a time per instance: measured on 2 cores at 32 concurrent refreshes (same
//! database, interleaved runs), no batching gave ~2,100 rotations/s (p99 24 ms), four batches
//! in flight ~5,300 (p99 11 ms), two ~6,800 (p99 8 ms), one ~7,700 (p99 7 ms): fewer, larger
//! statements cost PostgreSQL less CPU per rotation, and its WAL flushes were already shared.
//!
//! Each rotation is decided exactly as when it goes alone. Two rotations of one session in
//! one batch join the same row: PostgreSQL updates it once, from the first joined row that
//! passes the `WHERE`, and silently skips the others (a row already updated by the same
//! command), so there is still exactly one successor and the losers take the slow path.
//!
//! The `UPDATE` locks its rows in session-id order, the order revocations lock them in, so
//! two batches (of this or another instance), or a batch and a revocation, queue instead of
//! deadlocking. That order is the plan's, so the plan is fixed: the batch's own connections
//! turn off the scans and joins that would visit sessions in another order (a sequential or
//! bitmap scan goes in the heap's order, a hash join in its outer input's). What is left is a
//! B-tree scan of the primary key for `id = ANY(...)`, which returns rows in key order, in a
//! nested loop; the rotations are also sent sorted by session id, so the loop gives that order
//! from either side. This replaced a separate `ORDER BY id FOR UPDATE` pass: PostgreSQL 49 ->
//! 35 µs CPU per rotation, refresh +15 %. Left to statistics, the plan was a sequential scan
//! on a small table (a test run saw two instances deadlock) and stayed cached as the table
//! grew. Should PostgreSQL still pick a batch as a deadlock victim (a lock order elsewhere
//! that this one does not know), the batch, rolled back whole, is sent again.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{Connection, Executor, Row};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

use super::{map_pg, session_from_row, user_from_row, ACQUIRE_TIMEOUT, SESSION_COLUMNS, USER_COLUMNS};
use crate::store::{CurrentRotation, SessionRecord, StoreError, StoreResult, UserRecord};

/// Batches at the database at once; more rotations wait and grow the next batch.
const MAX_IN_FLIGHT: usize = 1;
/// The most rotations one statement carries.
const MAX_BATCH: usize = 256;
/// Sends of one batch that PostgreSQL chose as a deadlock victim.
const DEADLOCK_ATTEMPTS: usize = 3;

type Rotated = Option<(SessionRecord, UserRecord)>;

struct Pending {
    rotation: CurrentRotation,
    answer: oneshot::Sender<StoreResult<Rotated>>,
}

pub(super) struct RotationBatcher {
    queue: mpsc::UnboundedSender<Pending>,
    pool: PgPool,
}

/// `application_name` of the batches' connections.
pub const BATCH_APPLICATION_NAME: &str = "tessera-rotations";

/// The planner settings that leave the batch one plan, whatever the table's size and
/// statistics (see the module's doc). Set by a statement on each new connection rather than
/// in the startup packet's `options`, which connection proxies may refuse or drop.
const PLANNER_SETTINGS: &str = "SET enable_seqscan = off; SET enable_bitmapscan = off; \
     SET enable_hashjoin = off; SET enable_mergejoin = off";

/// A batch connection idle for longer than this is checked (a round trip) before a batch
/// goes on it. One in steady use is not: batches follow each other, so that check was a
/// second round trip inside every batch's turn (refresh 12.6-12.7k -> 15.2-16.1k req/s
/// without it), and sqlx checks a connection anyway when a batch gives it back.
const CHECK_WHEN_IDLE_FOR: Duration = Duration::from_millis(250);

/// The batches' own connections (one batch is in flight at a time; the second is spare).
fn batch_pool(options: PgConnectOptions) -> PgPool {
    PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for > CHECK_WHEN_IDLE_FOR {
                    conn.ping().await?;
                }
                Ok(true)
            })
        })
        .after_connect(|conn, _| Box::pin(async move { conn.execute(PLANNER_SETTINGS).await.map(|_| ()) }))
        .connect_lazy_with(options.application_name(BATCH_APPLICATION_NAME))
}

impl RotationBatcher {
    /// Starts the batching task on the current runtime, with connections of its own to the
    /// database `options` name; it ends when the batcher is dropped.
    pub(super) fn start(options: PgConnectOptions) -> RotationBatcher {
        let pool = batch_pool(options);
        let (queue, pending) = mpsc::unbounded_channel();
        tokio::spawn(run(pool.clone(), pending));
        RotationBatcher { queue, pool }
    }

    pub(super) async fn rotate(&self, rotation: CurrentRotation) -> StoreResult<Rotated> {
        let (answer, answered) = oneshot::channel();
        self.queue
            .send(Pending { rotation, answer })
            .map_err(|_| StoreError::Unavailable("rotation batcher stopped".into()))?;
        answered
            .await
            .map_err(|_| StoreError::Unavailable("rotation batch was lost".into()))?
    }
}

async fn run(pool: PgPool, mut pending: mpsc::UnboundedReceiver<Pending>) {
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    loop {
        let Ok(permit) = Arc::clone(&in_flight).acquire_owned().await else {
            return;
        };
        let Some(first) = pending.recv().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match pending.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let pool = pool.clone();
        tokio::spawn(async move { execute(&pool, batch, permit).await });
    }
}

async fn execute(pool: &PgPool, batch: Vec<Pending>, in_flight: OwnedSemaphorePermit) {
    let (rotations, answers): (Vec<_>, Vec<_>) = batch.into_iter().map(|p| (p.rotation, p.answer)).unzip();
    let rows = send(pool, &rotations).await;
    // The batch is committed: the next one may go while these rows are read (measured
    // interleaved: 12,206-12,340 -> 12,910-13,067 rotations/s).
    drop(in_flight);
    match rows.and_then(|rows| read_answers(&rows, rotations.len())) {
        Ok(results) => {
            for (answer, result) in answers.into_iter().zip(results) {
                let _ = answer.send(Ok(result));
            }
        }
        Err(e) => {
            for answer in answers {
                let _ = answer.send(Err(e.clone()));
            }
        }
    }
}

/// The batch's statement: see the module's doc for how it decides. `id = ANY($8)` gives the
/// planner the primary-key scan; joined to the batch alone, the plan a connection cached while
/// the table was small scanned every session for each batch, and PostgreSQL's CPU per rotation
/// rose from 41 to 66 µs over six 10-second runs as logins added sessions.
static ROTATE_BATCH: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH batch AS (SELECT * FROM unnest($1::int4[], $2::bytea[], $3::bytea[], $4::bytea[], $5::text[], \
           $6::int8[], $7::int8[], $8::uuid[], $9::int8[]) \
           AS b(slot, presented, new_hash, sealed, csrf, now, expires, session_id, generation)), \
         won AS (UPDATE sessions s SET generation = s.generation + 1, rotated_at = p.now, \
           last_used_at = p.now, sealed_current = p.sealed, current_hash = p.new_hash, \
           refresh_expires_at = LEAST(p.expires, s.absolute_expires_at) \
           FROM batch p WHERE s.id = ANY($8::uuid[]) AND s.id = p.session_id \
           AND s.generation = p.generation AND s.current_hash = p.presented AND s.revoked_at IS NULL \
           AND s.absolute_expires_at > p.now AND s.refresh_expires_at > p.now \
           AND (p.csrf IS NULL OR s.csrf_token = p.csrf) \
           RETURNING p.slot, p.new_hash, s.*), \
         recorded AS (INSERT INTO refresh_tokens (hash, session_id, generation) \
           SELECT new_hash, id, generation FROM won) \
         SELECT s.slot, {SESSION_COLUMNS}, {USER_COLUMNS} FROM won s JOIN users u ON u.id = s.user_id"
    )
});

impl RotationBatcher {
    /// Runs `rotations` as one statement; the answer for each, in order (`None`: it did not
    /// rotate, and the caller takes the slow path).
    pub(super) async fn rotate_together(&self, rotations: &[CurrentRotation]) -> StoreResult<Vec<Rotated>> {
        let rows = send(&self.pool, rotations).await?;
        read_answers(&rows, rotations.len())
    }
}

/// Sends the batch's statement (again, if PostgreSQL picked it as a deadlock victim); the
/// rows of the rotations that won.
async fn send(pool: &PgPool, rotations: &[CurrentRotation]) -> StoreResult<Vec<PgRow>> {
    let n = rotations.len();
    let mut slots = Vec::with_capacity(n);
    let mut sessions = Vec::with_capacity(n);
    let mut generations = Vec::with_capacity(n);
    let mut presented = Vec::with_capacity(n);
    let mut new_hashes = Vec::with_capacity(n);
    let mut sealed = Vec::with_capacity(n);
    let mut csrf = Vec::with_capacity(n);
    let mut now = Vec::with_capacity(n);
    let mut expires = Vec::with_capacity(n);
    // Sent in session-id order; `slot` keeps each rotation's place for its answer.
    let mut order: Vec<(i32, &CurrentRotation)> = (0i32..).zip(rotations).collect();
    order.sort_by_key(|(_, r)| r.session_id.0);
    for (slot, r) in order {
        slots.push(slot);
        sessions.push(r.session_id.0);
        generations.push(r.generation);
        presented.push(r.presented.0.to_vec());
        new_hashes.push(r.new_hash.0.to_vec());
        sealed.push(r.sealed_new.clone());
        csrf.push(r.csrf.clone());
        now.push(r.now.millis());
        expires.push(r.refresh_expires_at.millis());
    }
    let mut attempt = 1;
    loop {
        let sent = sqlx::query(ROTATE_BATCH.as_str())
            .bind(&slots)
            .bind(&presented)
            .bind(&new_hashes)
            .bind(&sealed)
            .bind(&csrf)
            .bind(&now)
            .bind(&expires)
            .bind(&sessions)
            .bind(&generations)
            .fetch_all(pool)
            .await;
        match sent {
            Err(e) if attempt < DEADLOCK_ATTEMPTS && is_deadlock(&e) => attempt += 1,
            sent => return sent.map_err(map_pg),
        }
    }
}

/// Each rotation's answer, in the batch's order, from the rows of those that won.
fn read_answers(rows: &[PgRow], n: usize) -> StoreResult<Vec<Rotated>> {
    let mut results: Vec<Rotated> = vec![None; n];
    for row in rows {
        let slot: i32 = row.try_get("slot").map_err(map_pg)?;
        let won = (
            session_from_row(row).map_err(map_pg)?,
            user_from_row(row).map_err(map_pg)?,
        );
        if let Some(result) = usize::try_from(slot).ok().and_then(|i| results.get_mut(i)) {
            *result = Some(won);
        }
    }
    Ok(results)
}

/// PostgreSQL broke a lock cycle by rolling this statement back (SQLSTATE 40P01).
fn is_deadlock(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.code().as_deref() == Some("40P01"))
}
