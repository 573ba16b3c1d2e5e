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

use super::LoadedModule;
use crate::deployment::RolloutSettings;
use crate::telemetry::metrics::metrics;

/// One module's versions.
pub struct ModuleSlot {
    /// The module's name.
    pub name: String,
    serving: ArcSwap<LoadedModule>,
    canary: ArcSwapOption<Canary>,
    /// The version serving before the last swap or promotion, for `rollback`.
    previous: Mutex<Option<Arc<LoadedModule>>>,
    turn: AtomicU64,
    rollout: RolloutSettings,
}

/// A version on trial beside the serving one.
pub struct Canary {
    /// The version.
    pub module: Arc<LoadedModule>,
    /// Percent of the module's traffic it gets, 0-100.
    pub weight: u32,
    requests: AtomicU64,
    errors: AtomicU64,
}

impl Canary {
    /// Requests and calls it has served, and how many failed.
    pub fn outcomes(&self) -> (u64, u64) {
        (
            self.requests.load(Ordering::Relaxed),
            self.errors.load(Ordering::Relaxed),
        )
    }
}

/// What changed in a slot, for logs and answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The version serving now.
    pub serving: String,
    /// The version that was serving (or was the canary, for a canary's rollback).
    pub replaced: Option<String>,
}

impl ModuleSlot {
    /// A slot serving `module`, with `rollout` deciding when a canary fails.
    pub fn new(module: Arc<LoadedModule>, rollout: RolloutSettings) -> ModuleSlot {
        ModuleSlot {
            name: module.name.clone(),
            serving: ArcSwap::new(module),
            canary: ArcSwapOption::empty(),
            previous: Mutex::new(None),
            turn: AtomicU64::new(0),
            rollout,
        }
    }

    /// The serving version.
    pub fn serving(&self) -> Arc<LoadedModule> {
        self.serving.load_full()
    }

    /// The canary, if a rollout is under way.
    pub fn canary(&self) -> Option<Arc<Canary>> {
        self.canary.load_full()
    }

    /// The version before the last swap, if rollback has one to go back to.
    pub fn previous(&self) -> Option<Arc<LoadedModule>> {
        self.lock_previous().clone()
    }

    /// The version that serves the next request or call: the canary for its share
    /// (chosen by `key` when given, by turns otherwise), else the serving one.
    pub fn pick(&self, key: Option<u64>) -> Arc<LoadedModule> {
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
    pub fn record(&self, module: &Arc<LoadedModule>, ok: bool) {
        metrics().version_outcome(&self.name, &module.version, ok);
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
                        canary = %canary.module.version,
                        serving = %self.serving().version,
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
    pub fn swap(&self, module: Arc<LoadedModule>) -> Change {
        release(self.canary.swap(None));
        let old = self.serving.swap(module);
        let change = Change {
            serving: self.serving().version.clone(),
            replaced: Some(old.version.clone()),
        };
        let displaced = self.lock_previous().replace(old);
        release(displaced);
        change
    }

    /// Starts a canary: `module` gets `weight` percent of the traffic. Replaces a
    /// canary under way.
    pub fn start_canary(&self, module: Arc<LoadedModule>, weight: u32) {
        release(self.canary.swap(Some(Arc::new(Canary {
            module,
            weight: weight.min(100),
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
        }))));
    }

    /// Makes the canary the serving version.
    pub fn promote(&self) -> Result<Change, String> {
        let Some(canary) = self.canary.swap(None) else {
            return Err(format!("module {} has no canary to promote", self.name));
        };
        Ok(self.swap(canary.module.clone()))
    }

    /// Undoes the last change: drops a canary under way, or else goes back to the
    /// version that served before the last swap or promotion.
    pub fn rollback(&self) -> Result<Change, String> {
        if let Some(canary) = self.canary.swap(None) {
            let change = Change {
                serving: self.serving().version.clone(),
                replaced: Some(canary.module.version.clone()),
            };
            release(Some(canary));
            return Ok(change);
        }
        let Some(previous) = self.lock_previous().take() else {
            return Err(format!(
                "module {} has no previous version to roll back to",
                self.name
            ));
        };
        let replaced = self.serving.swap(previous);
        let change = Change {
            serving: self.serving().version.clone(),
            replaced: Some(replaced.version.clone()),
        };
        release(Some(replaced));
        Ok(change)
    }

    fn lock_previous(&self) -> std::sync::MutexGuard<'_, Option<Arc<LoadedModule>>> {
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
