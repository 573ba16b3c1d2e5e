//! The shutdown signal.
//!
//! One [`Shutdown`] is made per thing that can be stopped (the process, the mesh, the
//! events service); every task that must stop with it holds a clone. Triggering it is
//! idempotent and wakes every task waiting on it at once. A task checks
//! [`Shutdown::is_triggered`] between units of work, waits on [`Shutdown::triggered`]
//! in a `select!` beside its real work, or sleeps with [`Shutdown::sleep`], which
//! returns early when the signal comes.
//!
//! A [`Shutdown::child`] stops with its parent, but can also be stopped alone: the node
//! stops the gateway first and the mesh only once the gateway has drained.

use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A signal to stop, shared by every task it concerns.
#[derive(Debug, Clone, Default)]
pub struct Shutdown(CancellationToken);

impl Shutdown {
    /// A signal nobody has triggered yet.
    pub fn new() -> Shutdown {
        Shutdown(CancellationToken::new())
    }

    /// A signal that is triggered with this one, and may also be triggered alone.
    pub fn child(&self) -> Shutdown {
        Shutdown(self.0.child_token())
    }

    /// Tells every holder to stop.
    pub fn trigger(&self) {
        self.0.cancel();
    }

    /// Whether it has been triggered.
    pub fn is_triggered(&self) -> bool {
        self.0.is_cancelled()
    }

    /// Resolves once it is triggered (at once if it already was).
    pub async fn triggered(&self) {
        self.0.cancelled().await;
    }

    /// Sleeps for `duration`, or less if the signal comes first. Returns whether it
    /// slept the whole time.
    pub async fn sleep(&self, duration: Duration) -> bool {
        tokio::select! {
            () = tokio::time::sleep(duration) => true,
            () = self.0.cancelled() => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_child_stops_with_its_parent_and_alone() {
        let parent = Shutdown::new();
        let alone = parent.child();
        alone.trigger();
        assert!(alone.is_triggered() && !parent.is_triggered());

        let child = parent.child();
        let waiting = tokio::spawn({
            let child = child.clone();
            async move { child.triggered().await }
        });
        parent.trigger();
        waiting.await.unwrap();
        assert!(child.is_triggered());
    }

    #[tokio::test]
    async fn sleep_returns_early_when_triggered() {
        let shutdown = Shutdown::new();
        assert!(shutdown.sleep(Duration::from_millis(5)).await);
        let trigger = shutdown.clone();
        tokio::spawn(async move { trigger.trigger() });
        assert!(!shutdown.sleep(Duration::from_secs(3600)).await);
    }
}
