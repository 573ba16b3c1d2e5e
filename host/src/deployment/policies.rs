//! `[policies.CALLEE]` and `[policies."CALLER->CALLEE"]`: how calls into a module are
//! made — their timeout, retries, circuit breaker and bulkhead. A policy for an edge
//! applies to that caller's calls; one for a module to every caller's that has no
//! edge policy of its own (the more specific wins, whole).
//!
//! The calls layer applies them (its `policy` layers), the same whether the
//! callee runs on this node or another. Which functions are idempotent is checked
//! against the callee's contract at load, not here: the file does not know the WIT.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

use super::errors::Problems;
use super::modules::ModuleSpec;
use super::units::Timeout;

/// One policy as written, and as used: every key optional.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CallPolicy {
    /// How long one attempt may take (default: the callee's `limits.timeout`); never
    /// longer than what the caller has left of its own deadline.
    #[serde(default)]
    pub timeout: Option<Timeout>,
    /// Retries of failed calls, for the functions listed as idempotent.
    #[serde(default)]
    pub retries: Option<RetryPolicy>,
    /// A circuit breaker on the callee (and one per node it runs on).
    #[serde(default)]
    pub breaker: Option<BreakerPolicy>,
    /// A bulkhead for these calls: how many at once, and how many may wait.
    #[serde(default)]
    pub bulkhead: Option<BulkheadPolicy>,
}

/// `retries = { … }`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// Attempts after the first (1–10).
    pub attempts: u32,
    /// The functions that may be retried: `"function"` (in any of the callee's
    /// interfaces) or `"package:name/interface#function"`. Required: only the
    /// contract's owner knows which calls are safe to repeat.
    pub idempotent: Vec<String>,
    /// The first retry waits up to this long (full jitter); each next one up to twice
    /// as long.
    #[serde(default = "RetryPolicy::default_backoff")]
    pub backoff: Timeout,
    /// The longest wait before a retry.
    #[serde(default = "RetryPolicy::default_max_backoff")]
    pub max_backoff: Timeout,
    /// Retries may add at most this share of the calls made (over the last 10 s)…
    #[serde(default = "RetryPolicy::default_budget")]
    pub budget: f64,
    /// …plus this many per second, so a quiet edge can still retry.
    #[serde(default = "RetryPolicy::default_min_per_second")]
    pub min_per_second: u32,
}

impl RetryPolicy {
    fn default_backoff() -> Timeout {
        Timeout(Duration::from_millis(25))
    }
    fn default_max_backoff() -> Timeout {
        Timeout(Duration::from_secs(1))
    }
    fn default_budget() -> f64 {
        0.2
    }
    fn default_min_per_second() -> u32 {
        10
    }
}

/// `breaker = { … }`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BreakerPolicy {
    /// Opens after this many failures in a row.
    #[serde(default = "BreakerPolicy::default_failures")]
    pub failures: u32,
    /// Also opens when this share of the calls in `window` failed (0–1; off when
    /// absent)…
    #[serde(default)]
    pub failure_rate: Option<f64>,
    /// …over this window…
    #[serde(default = "BreakerPolicy::default_window")]
    pub window: Timeout,
    /// …once it holds at least this many calls.
    #[serde(default = "BreakerPolicy::default_min_calls")]
    pub min_calls: u32,
    /// How long it stays open before one probe call may test the callee; doubles
    /// after each failed probe, up to 8 times this.
    #[serde(default = "BreakerPolicy::default_open_for")]
    pub open_for: Timeout,
}

impl BreakerPolicy {
    fn default_failures() -> u32 {
        5
    }
    fn default_window() -> Timeout {
        Timeout(Duration::from_secs(10))
    }
    fn default_min_calls() -> u32 {
        20
    }
    fn default_open_for() -> Timeout {
        Timeout(Duration::from_secs(5))
    }
}

/// `bulkhead = { … }`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BulkheadPolicy {
    /// Calls in flight at once.
    pub concurrency: u32,
    /// Calls that may wait for a place; more fail at once (`overloaded`).
    #[serde(default)]
    pub queue: u32,
    /// How long a call may wait in the queue before it fails (`overloaded`).
    #[serde(default = "BulkheadPolicy::default_queue_timeout")]
    pub queue_timeout: Timeout,
}

impl BulkheadPolicy {
    fn default_queue_timeout() -> Timeout {
        Timeout(Duration::from_millis(100))
    }
}

/// The policies of a deployment, checked: by callee, and by `(caller, callee)` edge.
#[derive(Debug, Clone, Default)]
pub struct Policies {
    by_callee: BTreeMap<String, CallPolicy>,
    by_edge: BTreeMap<(String, String), CallPolicy>,
}

impl Policies {
    /// The policy for `caller`'s calls into `callee`: the edge's, else the callee's.
    pub fn for_edge(&self, caller: &str, callee: &str) -> Option<&CallPolicy> {
        self.by_edge
            .get(&(caller.to_string(), callee.to_string()))
            .or_else(|| self.by_callee.get(callee))
    }

    /// Every policy, with where it applies.
    pub fn all(&self) -> impl Iterator<Item = PolicyEntry<'_>> {
        let callees = self.by_callee.iter().map(|(callee, policy)| PolicyEntry {
            key: callee.clone(),
            caller: None,
            callee,
            policy,
        });
        let edges = self
            .by_edge
            .iter()
            .map(|((caller, callee), policy)| PolicyEntry {
                key: format!("{caller}->{callee}"),
                caller: Some(caller),
                callee,
                policy,
            });
        callees.chain(edges)
    }
}

/// One policy and where it applies.
#[derive(Debug, Clone)]
pub struct PolicyEntry<'a> {
    /// The key it was written under: `payments`, `orders->payments`.
    pub key: String,
    /// The caller it is for (an edge policy), or `None` (every caller).
    pub caller: Option<&'a str>,
    /// The callee.
    pub callee: &'a str,
    /// The policy.
    pub policy: &'a CallPolicy,
}

impl RetryPolicy {
    /// Whether `function` of `interface` (unversioned: `shop:payments/api`) is listed
    /// as idempotent: by its name alone, or as `interface#function`.
    pub fn covers(&self, interface: &str, function: &str) -> bool {
        self.idempotent
            .iter()
            .any(|listed| names_function(listed, interface, function))
    }
}

/// Whether an `idempotent` entry names `function` of `interface` (unversioned): as
/// `function`, or as `interface#function`.
pub fn names_function(listed: &str, interface: &str, function: &str) -> bool {
    match listed.split_once('#') {
        Some((listed_interface, listed_function)) => {
            listed_interface == interface && listed_function == function
        }
        None => listed == function,
    }
}

/// Checks `[policies]`: each key names a deployed module, or an edge a grant allows;
/// each value is in range.
pub(super) fn check_policies(
    written: BTreeMap<String, CallPolicy>,
    modules: &BTreeMap<String, ModuleSpec>,
    problems: &mut Problems,
) -> Policies {
    let mut policies = Policies::default();
    for (key, policy) in written {
        let at = format!("policies.\"{key}\"");
        let before = problems.errors.len();
        check_values(&at, &policy, problems);
        match key.split_once("->") {
            None => {
                if modules.contains_key(&key) {
                    if problems.errors.len() == before {
                        policies.by_callee.insert(key, policy);
                    }
                } else {
                    problems.add(&at, &format!("no module `{key}` is deployed"));
                }
            }
            Some((caller, callee)) => {
                let (caller, callee) = (caller.trim(), callee.trim());
                match modules.get(caller) {
                    None => problems.add(&at, &format!("no module `{caller}` is deployed")),
                    Some(_) if !modules.contains_key(callee) => {
                        problems.add(&at, &format!("no module `{callee}` is deployed"))
                    }
                    Some(spec) if !spec.calls.iter().any(|granted| granted == callee) => problems
                        .add(
                            &at,
                            &format!(
                                "`{caller}` may not call `{callee}` (it is not in modules.{caller}.calls)"
                            ),
                        ),
                    Some(_) if problems.errors.len() == before => {
                        policies
                            .by_edge
                            .insert((caller.to_string(), callee.to_string()), policy);
                    }
                    Some(_) => {}
                }
            }
        }
    }
    policies
}

fn check_values(at: &str, policy: &CallPolicy, problems: &mut Problems) {
    if let Some(timeout) = policy.timeout {
        if timeout.duration().is_zero() {
            problems.add(&format!("{at}.timeout"), "must be longer than 0s");
        }
    }
    if let Some(retries) = &policy.retries {
        let key = format!("{at}.retries");
        if !(1..=10).contains(&retries.attempts) {
            problems.add(&format!("{key}.attempts"), "must be from 1 to 10");
        }
        if retries.idempotent.is_empty() {
            problems.add(
                &format!("{key}.idempotent"),
                "name the functions that are safe to call twice; only those are retried",
            );
        }
        if retries.backoff.duration().is_zero() || retries.backoff > retries.max_backoff {
            problems.add(
                &format!("{key}.backoff"),
                "must be longer than 0s and at most max_backoff",
            );
        }
        if !(0.0..=1.0).contains(&retries.budget) {
            problems.add(&format!("{key}.budget"), "must be from 0 to 1");
        }
    }
    if let Some(breaker) = &policy.breaker {
        let key = format!("{at}.breaker");
        if breaker.failures == 0 {
            problems.add(&format!("{key}.failures"), "must be at least 1");
        }
        if let Some(rate) = breaker.failure_rate {
            if !(rate > 0.0 && rate <= 1.0) {
                problems.add(
                    &format!("{key}.failure_rate"),
                    "must be above 0 and at most 1",
                );
            }
        }
        if breaker.window.duration() < Duration::from_secs(1) {
            problems.add(&format!("{key}.window"), "must be at least 1s");
        }
        if breaker.min_calls == 0 {
            problems.add(&format!("{key}.min_calls"), "must be at least 1");
        }
        if breaker.open_for.duration().is_zero() {
            problems.add(&format!("{key}.open_for"), "must be longer than 0s");
        }
    }
    if let Some(bulkhead) = &policy.bulkhead {
        let key = format!("{at}.bulkhead");
        if !(1..=10_000).contains(&bulkhead.concurrency) {
            problems.add(&format!("{key}.concurrency"), "must be from 1 to 10000");
        }
        if bulkhead.queue > 100_000 {
            problems.add(&format!("{key}.queue"), "must be at most 100000");
        }
    }
}
