//! The limits every accepted connection lives under: the caps on open connections (in total
//! and per client network), the deadlines for request heads and writes, and the open-file
//! limit they must stay below.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::domain::ClientNetwork;

/// File descriptors kept free of client connections: the database pool, the listener, log
/// files, the webhook client, DNS.
const RESERVED_FDS: usize = 128;

/// Open connections per client network (an IPv4 address or an IPv6 /64).
type OpenPerIp = Arc<Mutex<HashMap<ClientNetwork, usize>>>;

/// Where a connection is in its request cycle: waiting for a request head since a moment
/// (milliseconds after [`epoch`]), or handling a request. Shared by the connection's I/O
/// ([`ClientDeadlines`]) and the service that receives its requests, which run on one task.
#[derive(Clone)]
pub(super) struct RequestCycle(Arc<AtomicU64>);

/// [`RequestCycle`]'s value while a request is being handled: no head is awaited.
const HANDLING: u64 = u64::MAX;

/// The moment head deadlines are counted from (the first use in this process).
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

impl RequestCycle {
    /// A new connection: its first head is awaited from now.
    pub(super) fn new() -> RequestCycle {
        let cycle = RequestCycle(Arc::new(AtomicU64::new(HANDLING)));
        cycle.await_head();
        cycle
    }

    /// A request head is complete and handed to the service: no head deadline until answered.
    pub(super) fn head_arrived(&self) {
        self.0.store(HANDLING, Ordering::Relaxed);
    }

    /// The next head is awaited from now (an answer went out).
    fn await_head(&self) {
        let since = u64::try_from(epoch().elapsed().as_millis()).unwrap_or(HANDLING - 1);
        self.0.store(since, Ordering::Relaxed);
    }

    /// When the awaited head is due, if one is awaited.
    fn head_due(&self, timeout: Duration) -> Option<Instant> {
        match self.0.load(Ordering::Relaxed) {
            HANDLING => None,
            since => Some(epoch() + Duration::from_millis(since) + timeout),
        }
    }
}

/// A client connection's deadlines, which hyper lacks or charges for per request.
///
/// - The request head: a client has `timeout` from the connection's start, and from each
///   answer, to send a complete request head; one that trickles its head (slowloris) or sits
///   idle is cut off. hyper's own header timer allocates and arms a timer for every request;
///   this one timer per connection is re-armed only when it fires, at most once per `timeout`
///   (6 % of a verify's CPU less; docs/BENCHMARKS.md).
/// - Writes fail once they have made no progress for `timeout`: a client that stops reading
///   its answers (its receive window closed) is cut off instead of holding the connection,
///   its buffers and its task forever.
pub(super) struct ClientDeadlines {
    stream: TcpStream,
    timeout: Duration,
    cycle: RequestCycle,
    /// Fires no later than the awaited head is due; checked only when a read would wait.
    head_timer: Pin<Box<tokio::time::Sleep>>,
    /// Armed while a write or flush is pending; disarmed by any progress.
    stalled_since: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl ClientDeadlines {
    pub(super) fn new(stream: TcpStream, timeout: Duration, cycle: RequestCycle) -> ClientDeadlines {
        ClientDeadlines {
            stream,
            timeout,
            cycle,
            head_timer: Box::pin(tokio::time::sleep(timeout)),
            stalled_since: None,
        }
    }

    /// Fails a read that would wait past the awaited head's deadline, and makes sure the task
    /// is woken by then. Heads are awaited from ever later moments, so the timer may fire
    /// early: then it is moved to the current deadline. (Called after each answer too: hyper
    /// may not read again until the socket wakes it, which an idle client never does.)
    fn head_deadline(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let Some(due) = self.cycle.head_due(self.timeout) else {
            return Poll::Pending;
        };
        while self.head_timer.as_mut().poll(cx).is_ready() {
            if Instant::now() >= due {
                return Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the request head did not arrive in time",
                )));
            }
            self.head_timer.as_mut().reset(due.into());
        }
        Poll::Pending
    }

    /// Passes a write-side poll through, failing it once it has been pending for `timeout`.
    fn write_deadline<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<std::io::Result<T>>,
    ) -> Poll<std::io::Result<T>> {
        if polled.is_ready() {
            self.stalled_since = None;
            return polled;
        }
        let timeout = self.timeout;
        let timer = self
            .stalled_since
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the client stopped reading",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }

    /// An answer (or part of one) went out: the next head is awaited from now.
    fn wrote<T>(&mut self, cx: &mut Context<'_>, polled: &Poll<std::io::Result<T>>) {
        if let Poll::Ready(Ok(_)) = polled {
            self.cycle.await_head();
            // Arms the timer; a head just awaited cannot be overdue yet.
            let _ = self.head_deadline(cx);
        }
    }
}

impl AsyncRead for ClientDeadlines {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match Pin::new(&mut self.stream).poll_read(cx, buf) {
            Poll::Pending => self.head_deadline(cx),
            ready => ready,
        }
    }
}

impl AsyncWrite for ClientDeadlines {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.wrote(cx, &polled);
        self.write_deadline(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.wrote(cx, &polled);
        self.write_deadline(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let polled = Pin::new(&mut self.stream).poll_flush(cx);
        self.write_deadline(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let polled = Pin::new(&mut self.stream).poll_shutdown(cx);
        self.write_deadline(cx, polled)
    }
}

/// The caps on open connections: in total, and per client address.
pub(super) struct ConnectionLimits {
    max_total: usize,
    total: Arc<Semaphore>,
    /// `0`: no per-address cap.
    max_per_ip: usize,
    per_ip: OpenPerIp,
}

/// One admitted connection; dropping it frees its place under both caps.
pub(super) struct ConnectionSlot {
    _total: OwnedSemaphorePermit,
    per_ip: Option<(ClientNetwork, OpenPerIp)>,
}

impl ConnectionLimits {
    pub(super) fn new(max_total: usize, max_per_ip: usize) -> ConnectionLimits {
        ConnectionLimits {
            max_total,
            total: Arc::new(Semaphore::new(max_total.min(Semaphore::MAX_PERMITS))),
            max_per_ip,
            per_ip: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// The total cap in force.
    pub(super) fn max_total(&self) -> usize {
        self.max_total
    }

    /// A place for a new connection from `ip`, or `None` when a cap is reached.
    pub(super) fn admit(&self, ip: IpAddr) -> Option<ConnectionSlot> {
        let total = Arc::clone(&self.total).try_acquire_owned().ok()?;
        if self.max_per_ip == 0 {
            return Some(ConnectionSlot {
                _total: total,
                per_ip: None,
            });
        }
        let ip = ClientNetwork::of(ip);
        {
            // Held for one hash-map operation; a poisoned lock still holds consistent counts.
            let mut open = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
            let n = open.entry(ip).or_insert(0);
            if *n >= self.max_per_ip {
                return None;
            }
            *n += 1;
        }
        Some(ConnectionSlot {
            _total: total,
            per_ip: Some((ip, Arc::clone(&self.per_ip))),
        })
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        if let Some((ip, per_ip)) = self.per_ip.take() {
            let mut open = per_ip.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(n) = open.get_mut(&ip) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    open.remove(&ip);
                }
            }
        }
    }
}

/// The connection cap in force: the configured one, lowered if need be so that connections
/// can never take the file descriptors the database pool and the rest of the process need.
pub(super) fn effective_connection_cap(configured: usize, fd_limit: Option<u64>, db_pool: usize) -> usize {
    match fd_limit.and_then(|l| usize::try_from(l).ok()) {
        Some(limit) => configured
            .min(limit.saturating_sub(RESERVED_FDS + db_pool))
            .max(1),
        None => configured,
    }
}

/// Raises the soft open-file limit to the hard limit (a server holding a connection per
/// client needs more than the common default of 1024) and returns the limit now in force.
#[cfg(unix)]
pub fn raise_open_file_limit() -> Option<u64> {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current.is_some() && limit.current != limit.maximum {
        let raised = Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        if let Err(e) = setrlimit(Resource::Nofile, raised) {
            tracing::warn!(error = %e, "could not raise the open-file limit");
        }
    }
    getrlimit(Resource::Nofile).current
}

#[cfg(not(unix))]
pub fn raise_open_file_limit() -> Option<u64> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connection_cap_stays_below_the_open_file_limit() {
        assert_eq!(effective_connection_cap(10_000, Some(1024), 16), 1024 - 128 - 16);
        assert_eq!(effective_connection_cap(500, Some(1024), 16), 500);
        assert_eq!(effective_connection_cap(500, None, 16), 500);
        assert_eq!(effective_connection_cap(500, Some(10), 16), 1);
    }

    #[test]
    fn per_address_cap_counts_open_connections() {
        let limits = ConnectionLimits::new(10, 2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let first = limits.admit(a).unwrap();
        let _second = limits.admit(mapped).unwrap();
        assert!(limits.admit(a).is_none(), "third from one address");
        let _other = limits.admit(b).unwrap();
        drop(first);
        assert!(limits.admit(a).is_some(), "a closed connection frees its place");
        let total = ConnectionLimits::new(1, 0);
        let _only = total.admit(a).unwrap();
        assert!(total.admit(b).is_none(), "total cap");
    }

    #[test]
    fn per_address_cap_counts_an_ipv6_slash_64_as_one_client() {
        let limits = ConnectionLimits::new(10, 2);
        let in_one_64: Vec<IpAddr> = [
            "2001:db8:1:2::1",
            "2001:db8:1:2:aaaa::9",
            "2001:db8:1:2:ffff:ffff:ffff:ffff",
        ]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
        let _first = limits.admit(in_one_64[0]).unwrap();
        let _second = limits.admit(in_one_64[1]).unwrap();
        assert!(limits.admit(in_one_64[2]).is_none(), "a third from the same /64");
        let next_64: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert!(limits.admit(next_64).is_some(), "another /64 is another client");
    }
}
