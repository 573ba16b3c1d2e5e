//! What the gateway keeps about its open connections, so that no client holds more
//! than its share and no connection stays open doing nothing.
//!
//! - [`Clients`] counts connections per client address: past
//!   `max_connections_per_client`, a new connection is answered 503 and closed.
//! - [`Activity`] watches one connection: it must start its first request within
//!   `header_read_timeout` (a client that sends an HTTP/2 preface and then nothing does
//!   not), and may then sit with no request in flight for at most `idle_timeout`. A
//!   connection past either is shut down gracefully — whatever is in flight finishes.
//!   The same holds for HTTP/1 and HTTP/2: hyper's own head timeout covers only the
//!   HTTP/1 request head.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

use crate::runtime::shutdown::Shutdown;

/// Open connections per client address.
#[derive(Default)]
pub struct Clients {
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One open connection of a client, counted while it lives.
pub struct ClientConnection {
    clients: Arc<Clients>,
    address: IpAddr,
    /// Whether the client already held as many as it may.
    pub over_limit: bool,
}

impl Clients {
    /// Counts a new connection from `address`, which may hold `limit` at once.
    pub fn open(self: &Arc<Self>, address: IpAddr, limit: usize) -> ClientConnection {
        let mut open = self.lock();
        let count = open.entry(address).or_insert(0);
        *count += 1;
        ClientConnection {
            clients: self.clone(),
            address,
            over_limit: *count > limit,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        // Counts are changed by one under the lock; a panic cannot tear them.
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for ClientConnection {
    fn drop(&mut self) {
        let mut open = self.clients.lock();
        if let Some(count) = open.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.address);
            }
        }
    }
}

/// Requests on one connection, for its watchdog.
pub struct Activity {
    opened: Instant,
    in_flight: AtomicUsize,
    started: AtomicU64,
    /// Milliseconds after `opened` when the last request in flight finished.
    quiet_since_ms: AtomicU64,
}

/// A request counted in flight while this lives.
pub struct InFlight(Arc<Activity>);

impl Activity {
    /// A connection opened now.
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity {
            opened: Instant::now(),
            in_flight: AtomicUsize::new(0),
            started: AtomicU64::new(0),
            quiet_since_ms: AtomicU64::new(0),
        })
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// A request starts.
    pub fn start(self: &Arc<Self>) -> InFlight {
        self.started.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(self.clone())
    }

    /// Watches the connection until it must close, then triggers `close`: no first
    /// request within `first`, or no request in flight for `idle`.
    pub async fn watch(self: Arc<Self>, first: Duration, idle: Duration, close: Shutdown) {
        loop {
            let deadline = if self.started.load(Ordering::Relaxed) == 0 {
                self.opened + first
            } else if self.in_flight.load(Ordering::SeqCst) > 0 {
                // Busy: look again one idle period from now.
                Instant::now() + idle
            } else {
                let quiet = Duration::from_millis(self.quiet_since_ms.load(Ordering::SeqCst));
                self.opened + quiet + idle
            };
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => {}
                () = close.triggered() => return,
            }
            let now = Instant::now();
            let first_late =
                self.started.load(Ordering::Relaxed) == 0 && now >= self.opened + first;
            let quiet = Duration::from_millis(self.quiet_since_ms.load(Ordering::SeqCst));
            let idle_late = self.started.load(Ordering::Relaxed) > 0
                && self.in_flight.load(Ordering::SeqCst) == 0
                && now >= self.opened + quiet + idle;
            if first_late || idle_late {
                tracing::debug!(
                    reason = if first_late {
                        "no request in time"
                    } else {
                        "idle"
                    },
                    "gateway: closing a connection"
                );
                close.trigger();
                return;
            }
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let activity = &self.0;
        let since = u64::try_from(activity.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        activity.quiet_since_ms.store(since, Ordering::SeqCst);
        activity.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_past_its_share_is_marked_and_closing_frees_its_place() {
        let clients = Arc::new(Clients::default());
        let address: IpAddr = [10, 0, 0, 1].into();
        let first = clients.open(address, 2);
        let second = clients.open(address, 2);
        let third = clients.open(address, 2);
        assert!(!first.over_limit && !second.over_limit && third.over_limit);
        assert!(
            !clients.open([10, 0, 0, 2].into(), 2).over_limit,
            "per address"
        );
        drop((first, third));
        assert!(!clients.open(address, 2).over_limit);
    }

    #[tokio::test]
    async fn a_silent_connection_closes_after_the_first_request_timeout() {
        let activity = Activity::new();
        let close = Shutdown::new();
        let watching = tokio::spawn(activity.clone().watch(
            Duration::from_millis(300),
            Duration::from_secs(60),
            close.clone(),
        ));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!close.is_triggered(), "closed before its time");
        watching.await.unwrap();
        assert!(close.is_triggered());
        assert!(activity.opened.elapsed() >= Duration::from_millis(300));
    }

    #[tokio::test]
    async fn a_connection_with_a_request_in_flight_is_never_idle() {
        let activity = Activity::new();
        let close = Shutdown::new();
        let request = activity.start();
        let watching = tokio::spawn(activity.clone().watch(
            Duration::from_millis(50),
            Duration::from_millis(50),
            close.clone(),
        ));
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(!close.is_triggered(), "closed with a request in flight");
        let finished = std::time::Instant::now();
        drop(request);
        watching.await.unwrap();
        assert!(close.is_triggered(), "idle for longer than idle_timeout");
        // (Times are kept in whole milliseconds.)
        assert!(finished.elapsed() >= Duration::from_millis(45));
    }
}
