//! Holding a module's new work for a moment, instead of refusing it.
//!
//! While a module moves to another node with its data, the last changes are copied
//! with nothing writing: its new requests and calls wait at the hold rather than fail
//! (its bulkhead refuses at once when full; a hold is a pause, not an overload). When
//! the hold is released they look again where the module is served — on the new node,
//! once the move is done, or here, if it was called off — and go there.
//!
//! Checking a hold that is not set costs one atomic load on every request and call.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::Notify;

/// A module's hold: set while its work must wait.
#[derive(Debug, Default)]
pub struct Hold {
    held: AtomicBool,
    released: Notify,
}

impl Hold {
    /// Whether new work must wait.
    pub fn is_held(&self) -> bool {
        self.held.load(Ordering::Acquire)
    }

    /// From now on, new work waits ([`Self::released_within`]).
    pub fn hold(&self) {
        self.held.store(true, Ordering::Release);
    }

    /// Lets every waiter go, to look again where the module is served.
    pub fn release(&self) {
        self.held.store(false, Ordering::Release);
        self.released.notify_waiters();
    }

    /// Waits until the hold is released, for at most `limit`: whether it was.
    pub async fn released_within(&self, limit: Duration) -> bool {
        let wait = async {
            loop {
                let released = self.released.notified();
                tokio::pin!(released);
                // Registered before the check: a release in between is not missed.
                released.as_mut().enable();
                if !self.is_held() {
                    return;
                }
                released.await;
            }
        };
        tokio::time::timeout(limit, wait).await.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn waiters_go_on_release_and_give_up_at_their_limit() {
        let hold = Arc::new(Hold::default());
        assert!(hold.released_within(Duration::ZERO).await, "not held");
        hold.hold();
        assert!(!hold.released_within(Duration::from_millis(5)).await);
        let waiting: Vec<_> = (0..3)
            .map(|_| {
                let hold = hold.clone();
                tokio::spawn(async move { hold.released_within(Duration::from_secs(10)).await })
            })
            .collect();
        tokio::task::yield_now().await;
        hold.release();
        for waiter in waiting {
            assert!(waiter.await.unwrap());
        }
        assert!(!hold.is_held());
    }
}
