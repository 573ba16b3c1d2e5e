//! Which node serves a call or a forwarded request when its module runs on several:
//! the less loaded of two picked at random, among the nodes not ejected.
//!
//! Each module on each node is an [`Endpoint`] with its requests in flight and a
//! [`Breaker`] of its own (`mesh.breaker`). After `consecutive_failures` failures of
//! that node in a row — it could not be reached, did not answer in time, refused the
//! request, or answered that the module there is overloaded or timed out — the node
//! is *ejected* from the module's balance for `open_for`. Then the mesh pings it in
//! the background (the balance's `on_eject`, [`Endpoint::probe`]): an answer puts it
//! back, silence ejects it again for twice as long, up to [`MAX_EJECTION_FACTOR`]
//! times. No client request is ever risked on a node that was failing. When every
//! node of a module is ejected, its requests fail at once until a ping finds one
//! back.
//!
//! A node ejected for one module still serves its others: what it failed at was that
//! module. What does not count against a node is the module's own answer: a crash
//! (a trap would happen on any node) or `unavailable` (most often a call further on
//! that failed, which would eject every node of a healthy module).
//!
//! "Power of two choices": comparing the in-flight counts of two nodes picked at
//! random sends load away from a slow node — a frozen one collects requests that never
//! finish — almost as well as comparing them all, and callers do not all rush to the
//! same least-loaded node at once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::time::Instant;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;

use crate::calls::policy::breaker::{Attempt, Breaker, BreakerRules};
use crate::telemetry::metrics::metrics;

/// How many times longer than `open_for` an ejection can grow, doubling with each
/// probe that fails.
pub const MAX_EJECTION_FACTOR: u32 = 8;

/// What to do with an endpoint just ejected: have its node pinged until it is back.
pub type OnEject = Arc<dyn Fn(Arc<Endpoint>) + Send + Sync>;

/// The endpoints of every module placed on other nodes, as this node sees them.
pub struct Balance {
    rules: BreakerRules,
    on_eject: OnEject,
    /// Module → node → endpoint; made on first use (placements change with adoption).
    endpoints: RwLock<HashMap<String, HashMap<String, Arc<Endpoint>>>>,
}

/// One module on one node.
pub struct Endpoint {
    module: String,
    node: String,
    /// Requests sent and not yet answered.
    in_flight: AtomicUsize,
    /// Open while the node is ejected from the module's balance.
    breaker: Arc<Breaker>,
    /// 1 while ejected.
    ejected: Gauge,
    /// Times ejected.
    ejections: Counter,
    on_eject: OnEject,
}

impl Endpoint {
    /// The node.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Requests to it now in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// While the node is ejected, when its next ping is due; `None` once it is back.
    pub fn ejected_until(&self) -> Option<Instant> {
        self.breaker.reopens_at()
    }

    /// The ping due now, if one is: record whether the node answered.
    pub fn probe(self: &Arc<Self>) -> Option<Pick> {
        let attempt = Breaker::admit_shared(&self.breaker)?;
        Some(Pick::new(self.clone(), attempt))
    }

    /// The breaker turned: the node left the balance or came back.
    fn turned(self: &Arc<Self>) {
        let ejected = self.breaker.is_open();
        self.ejected.set(i64::from(ejected));
        let (module, node) = (&self.module, &self.node);
        if ejected {
            self.ejections.inc();
            tracing::warn!(%module, %node, "mesh: node ejected from the module's balance after failing");
            (self.on_eject)(self.clone());
        } else {
            tracing::info!(%module, %node, "mesh: node back in the module's balance");
        }
    }
}

/// A request going to one endpoint: counted in its in-flight while held. Say how it
/// ended with [`Pick::record`]; dropped unrecorded (the caller gave up first), it
/// counts as a failure of the node, which did not answer in time.
pub struct Pick {
    endpoint: Arc<Endpoint>,
    attempt: Option<Attempt<Arc<Breaker>>>,
}

impl Pick {
    fn new(endpoint: Arc<Endpoint>, attempt: Attempt<Arc<Breaker>>) -> Pick {
        endpoint.in_flight.fetch_add(1, Ordering::Relaxed);
        Pick {
            endpoint,
            attempt: Some(attempt),
        }
    }

    /// The node it goes to.
    pub fn node(&self) -> &str {
        &self.endpoint.node
    }

    /// Records whether the node did its part (see the module's doc for what counts).
    pub fn record(mut self, healthy: bool) {
        self.finish(healthy);
    }

    fn finish(&mut self, healthy: bool) {
        if let Some(attempt) = self.attempt.take() {
            if attempt.record(healthy) {
                self.endpoint.turned();
            }
        }
    }
}

impl Drop for Pick {
    fn drop(&mut self) {
        self.finish(false);
        self.endpoint.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Balance {
    /// A balance that ejects a node after `failures` failures in a row, for `open_for`
    /// and then up to [`MAX_EJECTION_FACTOR`] times that, handing each endpoint it
    /// ejects to `on_eject`.
    pub fn new(failures: u32, open_for: Duration, on_eject: OnEject) -> Balance {
        Balance {
            on_eject,
            rules: BreakerRules {
                failures,
                failure_rate: None,
                open_for,
                max_open_for: open_for * MAX_EJECTION_FACTOR,
            },
            endpoints: RwLock::new(HashMap::new()),
        }
    }

    /// `module` on `node`.
    pub fn endpoint(&self, module: &str, node: &str) -> Arc<Endpoint> {
        let known = self
            .endpoints
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(module)
            .and_then(|nodes| nodes.get(node))
            .cloned();
        if let Some(endpoint) = known {
            return endpoint;
        }
        let mut endpoints = self.endpoints.write().unwrap_or_else(|e| e.into_inner());
        endpoints
            .entry(module.to_string())
            .or_default()
            .entry(node.to_string())
            .or_insert_with(|| {
                let metrics = metrics().mesh_endpoint(module, node);
                Arc::new(Endpoint {
                    module: module.to_string(),
                    node: node.to_string(),
                    in_flight: AtomicUsize::new(0),
                    breaker: Arc::new(Breaker::with_rules(self.rules)),
                    ejected: metrics.ejected,
                    ejections: metrics.ejections,
                    on_eject: self.on_eject.clone(),
                })
            })
            .clone()
    }

    /// Where the next request for `module` goes, among `nodes`: of those not
    /// ejected, the less loaded of two picked at random; `None` if every one is.
    pub fn pick(&self, module: &str, nodes: &[&str]) -> Option<Pick> {
        let serving: Vec<Arc<Endpoint>> = nodes
            .iter()
            .map(|node| self.endpoint(module, node))
            .filter(|endpoint| !endpoint.breaker.is_open())
            .collect();
        let chosen = less_loaded_of_two(&serving)?;
        // The chosen one may have been ejected since it was looked at: then any other.
        std::iter::once(chosen)
            .chain(&serving)
            .find_map(|endpoint| {
                let attempt = Breaker::admit_shared(&endpoint.breaker)?;
                Some(Pick::new(endpoint.clone(), attempt))
            })
    }
}

/// Of `endpoints`, the one with fewer requests in flight of two picked at random
/// (ties to the first picked); the only one, if one.
fn less_loaded_of_two(endpoints: &[Arc<Endpoint>]) -> Option<&Arc<Endpoint>> {
    match endpoints.len() {
        0 => None,
        1 => endpoints.first(),
        n => {
            let first = fastrand::usize(0..n);
            // A second, different one: any of the others.
            let second = (first + 1 + fastrand::usize(0..n - 1)) % n;
            let (a, b) = (&endpoints[first], &endpoints[second]);
            Some(if b.in_flight() < a.in_flight() { b } else { a })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A balance, and the endpoints it handed to `on_eject`.
    fn balance() -> (Balance, Arc<Mutex<Vec<String>>>) {
        let ejected = Arc::new(Mutex::new(Vec::new()));
        let seen = ejected.clone();
        let on_eject: OnEject = Arc::new(move |endpoint: Arc<Endpoint>| {
            seen.lock().unwrap().push(endpoint.node().to_string());
        });
        (Balance::new(3, Duration::from_secs(1), on_eject), ejected)
    }

    /// Fails `times` requests to `node` of `module`.
    fn fail(balance: &Balance, module: &str, node: &str, times: usize) {
        for _ in 0..times {
            balance
                .pick(module, &[node])
                .expect("admitted")
                .record(false);
        }
    }

    #[test]
    fn the_less_loaded_node_takes_the_request() {
        let (balance, _) = balance();
        // b holds two requests in flight; a and c none. With two nodes, p2c always
        // compares both.
        let held: Vec<Pick> = (0..2).map(|_| balance.pick("m", &["b"]).unwrap()).collect();
        for _ in 0..50 {
            let pick = balance.pick("m", &["a", "b"]).unwrap();
            assert_eq!(pick.node(), "a");
            pick.record(true);
        }
        // With three, the busy one may be compared but never wins.
        for _ in 0..50 {
            let pick = balance.pick("m", &["a", "b", "c"]).unwrap();
            assert_ne!(pick.node(), "b");
            pick.record(true);
        }
        assert_eq!(balance.endpoint("m", "b").in_flight(), 2);
        for pick in held {
            pick.record(true);
        }
        assert_eq!(balance.endpoint("m", "b").in_flight(), 0);
    }

    #[test]
    fn idle_nodes_share_the_load() {
        let (balance, _) = balance();
        let mut on_a = 0;
        for _ in 0..1000 {
            let pick = balance.pick("m", &["a", "b"]).unwrap();
            on_a += usize::from(pick.node() == "a");
            pick.record(true);
        }
        assert!((350..=650).contains(&on_a), "{on_a} of 1000 on a");
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_node_is_ejected_then_pinged_back_in() {
        let (balance, ejected) = balance();
        fail(&balance, "m", "b", 2);
        assert!(ejected.lock().unwrap().is_empty());
        fail(&balance, "m", "b", 1);
        assert_eq!(*ejected.lock().unwrap(), ["b"], "handed over to be pinged");
        let b = balance.endpoint("m", "b");
        // Ejected: every request goes to a, and no ping is due before `open_for`.
        for _ in 0..20 {
            let pick = balance.pick("m", &["a", "b"]).unwrap();
            assert_eq!(pick.node(), "a");
            pick.record(true);
        }
        let due = b.ejected_until().expect("ejected");
        assert!(b.probe().is_none());
        tokio::time::advance(due - Instant::now()).await;
        // The ping is the only probe; requests still go to a meanwhile.
        let ping = b.probe().expect("due");
        assert!(b.probe().is_none(), "one ping at a time");
        assert_eq!(balance.pick("m", &["a", "b"]).unwrap().node(), "a");
        // Unanswered, it ejects b for twice as long (not a second ejection).
        drop(ping);
        let again = b.ejected_until().expect("still ejected");
        assert_eq!(again - Instant::now(), Duration::from_secs(2));
        assert_eq!(ejected.lock().unwrap().len(), 1);
        tokio::time::advance(Duration::from_secs(2)).await;
        b.probe().expect("due").record(true);
        // Back in the balance.
        assert!(b.ejected_until().is_none());
        let mut seen_b = false;
        for _ in 0..50 {
            let pick = balance.pick("m", &["a", "b"]).unwrap();
            seen_b |= pick.node() == "b";
            pick.record(true);
        }
        assert!(seen_b);
    }

    #[test]
    fn with_every_node_ejected_requests_fail_at_once() {
        let (balance, ejected) = balance();
        fail(&balance, "m", "a", 3);
        fail(&balance, "m", "b", 3);
        assert!(balance.pick("m", &["a", "b"]).is_none());
        assert_eq!(*ejected.lock().unwrap(), ["a", "b"]);
    }

    #[test]
    fn a_node_is_ejected_for_one_module_only() {
        let (balance, _) = balance();
        fail(&balance, "m", "b", 3);
        assert!(balance.pick("m", &["b"]).is_none());
        let pick = balance.pick("other", &["b"]).expect("b serves other");
        assert_eq!(pick.node(), "b");
    }

    #[test]
    fn a_request_given_up_on_counts_against_its_node_and_leaves_its_count() {
        let (balance, _) = balance();
        for _ in 0..3 {
            drop(balance.pick("m", &["b"]).unwrap());
        }
        let b = balance.endpoint("m", "b");
        assert!(b.ejected_until().is_some());
        assert_eq!(b.in_flight(), 0);
    }
}
