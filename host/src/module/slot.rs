//! A module's running versions: the one serving, and during a rollout a canary that
//! takes a share of its requests and calls.
//!
//! Every request, call and event delivery asks the slot for a version ([`ModuleSlot::pick`])
//! and holds that version (an `Arc`) until it is done. Swapping is one atomic store of
//! the serving version: work that already picked the old one finishes on it, and the old
//! version is freed when the last of that work lets go — nothing waits, nothing fails.
//!
//! A canary serves `weight` percent of the module's traffic: by a request key when one
//! is given (the same key always lands on the same version), by turns otherwise. Its
//! outcomes are counted; when its error rate passes the deployment's threshold
//! (`[rollout]`) after enough requests, it is rolled back on its own.

use arc_swap::{ArcSwap, ArcSwapOption};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::hold::Hold;
use super::version::ModuleVersion;
use crate::deployment::RolloutSettings;
use crate::telemetry::metrics::metrics;

/// What a slot needs to know of the versions it holds.
pub trait Version: Send + Sync + 'static {
    /// The module's name.
    fn name(&self) -> &str;
    /// The version's short identity.
    fn version(&self) -> &str;
    /// The module's hold, which every version of it shares (none of its own by
    /// default: a version no one moves).
    fn hold(&self) -> Arc<Hold> {
        Arc::default()
    }
}

/// One module's versions.
pub struct ModuleSlot<V: Version = ModuleVersion> {
    /// The module's name.
    pub name: String,
    serving: ArcSwap<V>,
    canary: ArcSwapOption<Canary<V>>,
    /// The version serving before the last swap or promotion, for `rollback`.
    previous: Mutex<Option<Arc<V>>>,
    turn: AtomicU64,
    rollout: RolloutSettings,
    /// Set while the module's new work must wait (it is moving to another node): the
    /// module's own, whichever version serves.
    pub hold: Arc<Hold>,
}

/// A version on trial beside the serving one.
pub struct Canary<V: Version = ModuleVersion> {
    /// The version.
    pub module: Arc<V>,
    /// Percent of the module's traffic it gets, 0-100.
    pub weight: u32,
    requests: AtomicU64,
    errors: AtomicU64,
}

impl<V: Version> Canary<V> {
    /// Requests and calls it has served, and how many failed.
    pub fn outcomes(&self) -> (u64, u64) {
        (
            self.requests.load(Ordering::Relaxed),
            self.errors.load(Ordering::Relaxed),
        )
    }
}

/// Why a slot could not do what it was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SlotError {
    /// `promote` with no canary under way.
    #[error("module {0} has no canary to promote")]
    NoCanary(String),
    /// `rollback` with neither a canary nor a previous version.
    #[error("module {0} has no previous version to roll back to")]
    NoPrevious(String),
}

/// What changed in a slot, for logs and answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The version serving now.
    pub serving: String,
    /// The version that was serving (or was the canary, for a canary's rollback).
    pub replaced: Option<String>,
}

impl<V: Version> ModuleSlot<V> {
    /// A slot serving `module`, with `rollout` deciding when a canary fails.
    pub fn new(module: Arc<V>, rollout: RolloutSettings) -> ModuleSlot<V> {
        ModuleSlot {
            name: module.name().to_string(),
            hold: module.hold(),
            serving: ArcSwap::new(module),
            canary: ArcSwapOption::empty(),
            previous: Mutex::new(None),
            turn: AtomicU64::new(0),
            rollout,
        }
    }

    /// The serving version.
    pub fn serving(&self) -> Arc<V> {
        self.serving.load_full()
    }

    /// The canary, if a rollout is under way.
    pub fn canary(&self) -> Option<Arc<Canary<V>>> {
        self.canary.load_full()
    }

    /// The version before the last swap, if rollback has one to go back to.
    pub fn previous(&self) -> Option<Arc<V>> {
        self.lock_previous().clone()
    }

    /// The version that serves the next request or call: the canary for its share
    /// (chosen by `key` when given, by turns otherwise), else the serving one.
    pub fn pick(&self, key: Option<u64>) -> Arc<V> {
        if let Some(canary) = &*self.canary.load() {
            let share = key.unwrap_or_else(|| self.turn.fetch_add(1, Ordering::Relaxed)) % 100;
            if share < u64::from(canary.weight) {
                return canary.module.clone();
            }
        }
        self.serving.load_full()
    }

    /// Records how work that `module` (picked from this slot) did ended. A canary whose
    /// error rate passes the deployment's threshold is rolled back here.
    pub fn record(&self, module: &Arc<V>, ok: bool) {
        metrics().version_outcome(&self.name, module.version(), ok);
        let guard = self.canary.load();
        let Some(canary) = &*guard else { return };
        if !Arc::ptr_eq(&canary.module, module) {
            return;
        }
        let requests = canary.requests.fetch_add(1, Ordering::Relaxed) + 1;
        let errors = if ok {
            canary.errors.load(Ordering::Relaxed)
        } else {
            canary.errors.fetch_add(1, Ordering::Relaxed) + 1
        };
        if requests >= self.rollout.min_requests
            && errors as f64 / requests as f64 > self.rollout.max_error_rate
        {
            // Only the first to see it rolls back (a swap may have replaced it since).
            let current = self.canary.load_full();
            if current.as_ref().is_some_and(|c| Arc::ptr_eq(c, canary)) {
                let prev = self.canary.compare_and_swap(&current, None);
                if prev.as_ref().is_some_and(|c| Arc::ptr_eq(c, canary)) {
                    metrics().rollback(&self.name, "canary_errors");
                    tracing::error!(
                        module = %self.name,
                        canary = %canary.module.version(),
                        serving = %self.serving().version(),
                        requests,
                        errors,
                        max_error_rate = self.rollout.max_error_rate,
                        "canary rolled back: its error rate passed the threshold"
                    );
                }
            }
        }
    }

    /// Makes `module` the serving version at once (a swap); the one it replaces is kept
    /// for `rollback`. A canary under way is dropped.
    pub fn swap(&self, module: Arc<V>) -> Change {
        release(self.canary.swap(None));
        let old = self.serving.swap(module);
        let change = Change {
            serving: self.serving().version().to_string(),
            replaced: Some(old.version().to_string()),
        };
        let displaced = self.lock_previous().replace(old);
        release(displaced);
        change
    }

    /// Starts a canary: `module` gets `weight` percent of the traffic. Replaces a
    /// canary under way.
    pub fn start_canary(&self, module: Arc<V>, weight: u32) {
        release(self.canary.swap(Some(Arc::new(Canary {
            module,
            weight: weight.min(100),
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
        }))));
    }

    /// Makes the canary the serving version.
    pub fn promote(&self) -> Result<Change, SlotError> {
        let Some(canary) = self.canary.swap(None) else {
            return Err(SlotError::NoCanary(self.name.clone()));
        };
        Ok(self.swap(canary.module.clone()))
    }

    /// Undoes the last change: drops a canary under way, or else goes back to the
    /// version that served before the last swap or promotion.
    pub fn rollback(&self) -> Result<Change, SlotError> {
        if let Some(canary) = self.canary.swap(None) {
            let change = Change {
                serving: self.serving().version().to_string(),
                replaced: Some(canary.module.version().to_string()),
            };
            release(Some(canary));
            return Ok(change);
        }
        let Some(previous) = self.lock_previous().take() else {
            return Err(SlotError::NoPrevious(self.name.clone()));
        };
        let replaced = self.serving.swap(previous);
        let change = Change {
            serving: self.serving().version().to_string(),
            replaced: Some(replaced.version().to_string()),
        };
        release(Some(replaced));
        Ok(change)
    }

    fn lock_previous(&self) -> std::sync::MutexGuard<'_, Option<Arc<V>>> {
        // Replaced whole under the lock; a panic elsewhere cannot leave it torn.
        self.previous.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Lets go of a version (or a canary holding one) that the slot no longer keeps.
/// Freeing a module's compiled code and pools takes a while (hundreds of µs): on a
/// runtime it happens on a blocking thread, not on the one serving requests. (Work that
/// still holds the version frees it when it ends, wherever that is.)
fn release<T: Send + Sync + 'static>(version: Option<Arc<T>>) {
    let Some(version) = version else { return };
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => drop(runtime.spawn_blocking(move || drop(version))),
        Err(_) => drop(version),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A version as the slot sees it.
    struct Fake(&'static str);

    impl Version for Fake {
        fn name(&self) -> &str {
            "m"
        }
        fn version(&self) -> &str {
            self.0
        }
    }

    fn slot(rollout: RolloutSettings) -> ModuleSlot<Fake> {
        ModuleSlot::new(Arc::new(Fake("v1")), rollout)
    }

    #[test]
    fn a_canary_gets_its_share_by_turns_and_the_same_key_always_the_same_version() {
        let slot = slot(RolloutSettings::default());
        assert_eq!(slot.pick(None).version(), "v1");
        slot.start_canary(Arc::new(Fake("v2")), 25);
        let canary = (0..1000)
            .filter(|_| slot.pick(None).version() == "v2")
            .count();
        assert_eq!(canary, 250, "by turns, exactly its share");
        for key in [0u64, 7, 24, 25, 99, 12345] {
            let first = slot.pick(Some(key)).version().to_string();
            assert!((0..10).all(|_| slot.pick(Some(key)).version() == first));
            assert_eq!(first == "v2", key % 100 < 25, "key {key}");
        }
    }

    #[test]
    fn an_erroring_canary_rolls_itself_back_after_enough_requests() {
        let slot = slot(RolloutSettings {
            max_error_rate: 0.2,
            min_requests: 10,
            ..RolloutSettings::default()
        });
        slot.start_canary(Arc::new(Fake("v2")), 50);
        let canary = slot.canary().unwrap().module.clone();
        // 3 failures in 9: over the rate, but not yet enough requests to judge.
        for i in 0..9 {
            slot.record(&canary, i % 3 != 0);
        }
        assert!(slot.canary().is_some(), "judged before min_requests");
        slot.record(&canary, false);
        assert!(slot.canary().is_none(), "4 failures in 10 passes 20%");
        assert_eq!(slot.serving().version(), "v1");
        // Outcomes of the serving version never roll anything back.
        let serving = slot.serving();
        for _ in 0..50 {
            slot.record(&serving, false);
        }
        assert_eq!(slot.serving().version(), "v1");
    }

    #[test]
    fn a_healthy_canary_stays_and_promote_and_rollback_say_what_changed() {
        let slot = slot(RolloutSettings::default());
        assert_eq!(slot.promote(), Err(SlotError::NoCanary("m".into())));
        assert_eq!(slot.rollback(), Err(SlotError::NoPrevious("m".into())));
        slot.start_canary(Arc::new(Fake("v2")), 10);
        let canary = slot.canary().unwrap().module.clone();
        for _ in 0..100 {
            slot.record(&canary, true);
        }
        assert_eq!(slot.canary().unwrap().outcomes(), (100, 0));
        let promoted = slot.promote().unwrap();
        assert_eq!(
            (promoted.serving.as_str(), promoted.replaced.as_deref()),
            ("v2", Some("v1"))
        );
        assert_eq!(slot.previous().unwrap().version(), "v1");
        // Rollback drops a canary first, then goes back to the previous version.
        slot.start_canary(Arc::new(Fake("v3")), 10);
        let dropped = slot.rollback().unwrap();
        assert_eq!(
            (dropped.serving.as_str(), dropped.replaced.as_deref()),
            ("v2", Some("v3"))
        );
        let back = slot.rollback().unwrap();
        assert_eq!(
            (back.serving.as_str(), back.replaced.as_deref()),
            ("v1", Some("v2"))
        );
        assert!(slot.previous().is_none());
    }
}
