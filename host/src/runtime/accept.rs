//! The accept loop every listener runs (gateway, mesh, admin), and its drain.
//!
//! [`serve`] accepts connections until its [`Shutdown`] is triggered, hands each to the
//! listener's own connection handler in a task of its own, and keeps count of them.
//! Then it stops accepting, tells every connection to finish (each handler gets the
//! same signal; [`graceful`] turns it into hyper's graceful shutdown: in-flight
//! requests complete, idle connections close) and waits for them, at most the grace
//! period.
//!
//! A listener with a connection limit takes a slot *before* accepting: at the limit,
//! new clients wait in the kernel's accept queue instead of being served badly. An
//! accept that fails (typically EMFILE, out of file descriptors) is retried after a
//! short pause instead of spinning.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

use super::shutdown::Shutdown;

/// How long to wait after a failed accept before the next.
const ACCEPT_RETRY: Duration = Duration::from_millis(50);

/// How one listener accepts and drains.
#[derive(Debug, Clone, Copy)]
pub struct Accept {
    /// The listener's name in logs ("gateway", "mesh", "admin").
    pub name: &'static str,
    /// Connections served at once, if limited.
    pub max_connections: Option<usize>,
    /// How long connections may take to finish once shutdown begins.
    pub grace: Duration,
}

/// Accepts connections from `listener` until `shutdown`, serving each with `handle`
/// (given the connection, its peer address and the shutdown signal), then drains them.
pub async fn serve<H, F>(listener: TcpListener, accept: Accept, shutdown: Shutdown, handle: H)
where
    H: Fn(TcpStream, SocketAddr, Shutdown) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    let Accept {
        name,
        max_connections,
        grace,
    } = accept;
    let slots = max_connections.map(|limit| Arc::new(Semaphore::new(limit)));
    let connections = TaskTracker::new();
    loop {
        let slot = match &slots {
            Some(slots) => tokio::select! {
                slot = slots.clone().acquire_owned() => match slot {
                    Ok(slot) => Some(slot),
                    Err(_) => break,
                },
                () = shutdown.triggered() => break,
            },
            None => None,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(listener = name, %error, "accept failed");
                    if !shutdown.sleep(ACCEPT_RETRY).await {
                        break;
                    }
                    continue;
                }
            },
            () = shutdown.triggered() => break,
        };
        let _ = stream.set_nodelay(true);
        let connection = handle(stream, peer, shutdown.clone());
        connections.spawn(async move {
            connection.await;
            drop(slot);
        });
    }

    drop(listener);
    connections.close();
    if connections.is_empty() {
        tracing::info!("{name} stopped: no connections were open");
        return;
    }
    tracing::info!(
        grace = %humantime::format_duration(grace),
        open = connections.len(),
        "{name} draining: no new connections"
    );
    if tokio::time::timeout(grace, connections.wait())
        .await
        .is_ok()
    {
        tracing::info!("{name} drained: all connections closed");
    } else {
        tracing::warn!(
            open = connections.len(),
            "{name}: shutdown grace period over; closing the remaining connections"
        );
    }
}

/// Drives a hyper connection until it ends; once `shutdown` is triggered, asks it to
/// finish gracefully (requests in flight complete, then it closes) and gives it at most
/// `within()` — asked then — to do so before dropping it. (An HTTP/2 client that never
/// reads would otherwise keep a closing connection open: hyper waits for it to
/// acknowledge the shutdown.)
pub async fn graceful<C>(
    connection: C,
    shutdown: &Shutdown,
    within: impl FnOnce() -> Duration,
) -> Result<(), C::Error>
where
    C: hyper_util::server::graceful::GracefulConnection,
{
    let mut connection = pin!(connection);
    tokio::select! {
        result = connection.as_mut() => return result,
        () = shutdown.triggered() => {}
    }
    connection.as_mut().graceful_shutdown();
    match tokio::time::timeout(within(), connection).await {
        Ok(result) => result,
        // Dropping the connection closes it.
        Err(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A listener that echoes one line per connection, for the loop's own tests.
    async fn echo(limit: Option<usize>) -> (SocketAddr, Shutdown, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = Shutdown::new();
        let accept = Accept {
            name: "test",
            max_connections: limit,
            grace: Duration::from_secs(5),
        };
        let task = tokio::spawn(serve(
            listener,
            accept,
            shutdown.clone(),
            |mut stream, _, _| async move {
                let mut buf = [0u8; 16];
                while let Ok(n @ 1..) = stream.read(&mut buf).await {
                    if stream.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            },
        ));
        (addr, shutdown, task)
    }

    #[tokio::test]
    async fn at_the_limit_a_client_waits_until_a_slot_frees() {
        let (addr, shutdown, task) = echo(Some(1)).await;
        let mut first = TcpStream::connect(addr).await.unwrap();
        let mut second = TcpStream::connect(addr).await.unwrap();
        second.write_all(b"two").await.unwrap();
        let mut buf = [0u8; 3];
        // The second is not served while the first holds the only slot.
        let early = tokio::time::timeout(Duration::from_millis(200), second.read(&mut buf)).await;
        assert!(early.is_err(), "served past the limit");
        first.write_all(b"one").await.unwrap();
        first.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"one");
        // Closing the first frees its slot: the second is served.
        drop(first);
        second.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"two");
        shutdown.trigger();
        task.await.unwrap();
    }

    #[tokio::test]
    async fn shutdown_waits_for_open_connections_then_returns() {
        let (addr, shutdown, task) = echo(None).await;
        let mut open = TcpStream::connect(addr).await.unwrap();
        // An answer proves the connection was accepted and is being served.
        let mut buf = [0u8; 3];
        open.write_all(b"hi!").await.unwrap();
        open.read_exact(&mut buf).await.unwrap();
        shutdown.trigger();
        let mut task = task;
        let early = tokio::time::timeout(Duration::from_millis(100), &mut task).await;
        assert!(early.is_err(), "returned with a connection still open");
        // The open connection is still served during the drain.
        open.write_all(b"bye").await.unwrap();
        open.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"bye");
        drop(open);
        task.await.unwrap();
        assert!(TcpStream::connect(addr).await.is_err(), "still accepting");
    }
}
