//! Metrics, in the Prometheus text format on the gateway's `GET /metrics`.
//!
//! One process-wide set, because a process — a node — is what Prometheus scrapes.
//! `docs/operations.md` lists every metric with its labels; in short:
//! - `modhost_node_info{node, app}`: 1, naming the node the series come from;
//! - `modhost_gateway_requests_total{route, status}` and
//!   `modhost_gateway_request_duration_seconds{route}`: every request the gateway
//!   answered, per route, whether a module here served it, another node did, or the
//!   gateway refused it;
//! - `modhost_http_requests_total{module, status}` and
//!   `modhost_http_request_duration_seconds{module}`: requests handed to a module on
//!   this node, and how long the module took;
//! - `modhost_calls_total{caller, callee, function, path, outcome}` and
//!   `modhost_call_duration_seconds{caller, callee, path}`: calls between modules, per
//!   edge of the call graph, `path` being `local` (in-process) or `remote` (over the
//!   mesh), `outcome` `ok` or `error`;
//! - a module's instances on this node: `modhost_instances{module}` (live),
//!   `modhost_instances_idle{module}` (warm, waiting for work),
//!   `modhost_instance_memory_bytes{module}` (their linear memory together),
//!   `modhost_module_in_flight{module}` and `modhost_module_concurrency{module}` (its
//!   bulkhead: work running now, and the most it may run);
//! - its versions: `modhost_module_version{module, version, role}` (1 for the
//!   `serving`, `canary` and `previous` versions), `modhost_canary_weight{module}`;
//! - its database's pool: `modhost_db_connections{module, state}` (`in_use`, `idle`)
//!   and `modhost_db_acquire_seconds{module}` (how long the module waited for a
//!   connection);
//! - `modhost_events_published_total{module, topic}`: events the bus confirmed from a
//!   module's outbox; `modhost_events_delivered_total`, `…_retried_total`,
//!   `…_duplicates_total` and `…_dead_lettered_total{module, topic}`: what happened to
//!   events at a subscribing module (handled, failed and retried, skipped as already
//!   handled, given up on); `modhost_events_outbox_lag_seconds{module}` and
//!   `modhost_events_outbox_depth{module}`: the age of the oldest event still in a
//!   module's outbox (0 when it is empty) and how many wait there;
//!   `modhost_events_consumer_lag{module, topic}`: events on the bus a subscribing
//!   module has not yet handled (on Kafka, in the partitions this node reads);
//! - `modhost_version_outcomes_total{module, version, outcome}`: requests, calls and
//!   deliveries per module version — what a canary is judged by;
//!   `modhost_rollbacks_total{module, reason}`;
//! - `modhost_gateway_refused_total{route, reason}`: requests the gateway answered
//!   itself because a route's rules refused them (`client_rate_limited`,
//!   `route_rate_limited`: 429; `unauthenticated`: 401);
//! - call policies, by `policy` (its `[policies]` key: `payments`,
//!   `orders->payments`): `modhost_call_retries_total`,
//!   `modhost_call_retry_budget_exhausted_total` (failures not retried because the
//!   budget was spent), `modhost_breaker_open` (1 while the circuit is open or
//!   probing), `modhost_bulkhead_in_use` (calls running now),
//!   `modhost_bulkhead_queued` (calls waiting now),
//!   `modhost_bulkhead_wait_seconds` (how long admitted calls waited) and
//!   `modhost_bulkhead_shed_total` (calls refused: queue full or waited too long);
//! - the mesh's balance, by `module` and `node`: `modhost_mesh_ejected` (1 while the
//!   node is out of the module's balance after failing) and
//!   `modhost_mesh_ejections_total`;
//! - spans sent to the `[telemetry] otlp` collector: `modhost_trace_spans_exported_total`,
//!   `modhost_trace_spans_dropped_total` (the export queue was full: the collector is
//!   slow or away) and `modhost_trace_exports_failed_total` (batches the collector did
//!   not take).
//!
//! Durations go into buckets from 10 µs doubling to ~84 s: a warm call lands in the
//! first buckets, a slow request in the last.
//!
//! Most series are counted as things happen. What is a state rather than an event —
//! which versions serve, how many connections a pool holds — is read when the
//! metrics are scraped, from whoever owns it ([`Sampled`]), so it is never stale and
//! never kept twice.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use std::sync::{Mutex, OnceLock, Weak};
use std::time::Duration;

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

/// Every metric the host keeps.
pub struct Metrics {
    registry: Registry,
    /// What is read at each scrape (see [`Sampled`]); held while encoding, so that two
    /// scrapes never interleave their samples.
    sampled: Mutex<Vec<Weak<dyn Sampled>>>,
    node_info: Family<NodeLabels, Gauge>,
    gateway_requests: Family<RouteStatusLabels, Counter>,
    gateway_seconds: Family<RouteLabels, Histogram, DurationBuckets>,
    requests: Family<RequestLabels, Counter>,
    request_seconds: Family<ModuleLabels, Histogram, DurationBuckets>,
    calls: Family<CallLabels, Counter>,
    call_seconds: Family<EdgeLabels, Histogram, DurationBuckets>,
    events: [Family<TopicLabels, Counter>; 6],
    outbox_lag: Family<ModuleLabels, Gauge<f64, AtomicU64>>,
    outbox_depth: Family<ModuleLabels, Gauge>,
    consumer_lag: Family<TopicLabels, Gauge>,
    /// A module's instances: live, idle, their memory, in flight, concurrency.
    module_gauges: [Family<ModuleLabels, Gauge>; 5],
    module_version: Family<ModuleVersionLabels, Gauge>,
    canary_weight: Family<ModuleLabels, Gauge>,
    db_connections: Family<PoolLabels, Gauge>,
    db_acquire: Family<ModuleLabels, Histogram, DurationBuckets>,
    versions: Family<VersionLabels, Counter>,
    rollbacks: Family<RollbackLabels, Counter>,
    gateway_refused: Family<RefusalLabels, Counter>,
    /// Call policies: retries, budget exhausted, shed (counters).
    policy_counts: [Family<PolicyLabels, Counter>; 3],
    breaker_open: Family<PolicyLabels, Gauge>,
    bulkhead_in_use: Family<PolicyLabels, Gauge>,
    bulkhead_queued: Family<PolicyLabels, Gauge>,
    bulkhead_wait: Family<PolicyLabels, Histogram, DurationBuckets>,
    /// The mesh's balance: nodes ejected now (gauge), ejections (counter).
    mesh_ejected: Family<EndpointLabels, Gauge>,
    mesh_ejections: Family<EndpointLabels, Counter>,
    /// Spans exported over OTLP: sent, dropped, batches failed.
    pub trace_export: TraceExportMetrics,
}

/// State that is read when the metrics are scraped rather than counted as it changes:
/// whoever owns it registers itself ([`Metrics::sample_from`]) and sets its gauges
/// here, just before they are encoded.
pub trait Sampled: Send + Sync {
    /// Sets this source's gauges in `metrics` to what they are now.
    fn sample(&self, metrics: &Metrics);
}

/// The gauges of one module's instances on this node, looked up once: every store
/// made for the module counts itself in them while it lives (its memory limiter
/// does, in the engine), and its warm pool its idle ones.
#[derive(Clone, Debug, Default)]
pub struct InstanceGauges {
    /// Instances alive now (running work, or idle in the warm pool).
    pub live: Gauge,
    /// Warm instances waiting for work.
    pub idle: Gauge,
    /// Bytes of linear memory the live instances hold together.
    pub memory: Gauge,
}

/// A module's role in its slot, for `modhost_module_version`.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum VersionRole {
    /// Serves the module's traffic (all of it, or all but the canary's share).
    Serving,
    /// On trial, with its share of the traffic.
    Canary,
    /// Served before the last swap: what a rollback goes back to.
    Previous,
}

impl prometheus_client::encoding::EncodeLabelValue for VersionRole {
    fn encode(
        &self,
        encoder: &mut prometheus_client::encoding::LabelValueEncoder,
    ) -> Result<(), std::fmt::Error> {
        use std::fmt::Write;
        encoder.write_str(match self {
            VersionRole::Serving => "serving",
            VersionRole::Canary => "canary",
            VersionRole::Previous => "previous",
        })
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabels {
    node: String,
    app: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteStatusLabels {
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModuleVersionLabels {
    module: String,
    version: String,
    role: VersionRole,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabels {
    module: String,
    state: &'static str,
}

/// What became of the spans this node records for export.
#[derive(Clone, Debug, Default)]
pub struct TraceExportMetrics {
    /// Spans the collector took.
    pub exported: Counter,
    /// Spans dropped because the export queue was full.
    pub dropped: Counter,
    /// Batches the collector refused or did not answer.
    pub failed: Counter,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    module: String,
    node: String,
}

/// The metrics of one module on one node in this node's mesh balance, looked up once.
pub struct EndpointMetrics {
    /// 1 while the node is ejected from the module's balance.
    pub ejected: Gauge,
    /// Times the node was ejected.
    pub ejections: Counter,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PolicyLabels {
    policy: String,
}

/// One call policy's metrics (its `[policies]` key), looked up once and then updated
/// without a lookup.
#[derive(Clone)]
pub struct PolicyMetrics {
    /// Calls made again.
    pub retried: Counter,
    /// Failed calls not retried: the budget was spent.
    pub budget_exhausted: Counter,
    /// Calls the bulkhead refused.
    pub shed: Counter,
    /// 1 while the circuit is open or probing.
    pub breaker_open: Gauge,
    /// Calls the bulkhead admitted that are running now.
    pub in_use: Gauge,
    /// Calls waiting in the bulkhead's queue.
    pub queued: Gauge,
    /// How long admitted calls waited in the queue.
    pub waited: Histogram,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalLabels {
    route: String,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabels {
    module: String,
    version: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RollbackLabels {
    module: String,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TopicLabels {
    module: String,
    topic: String,
}

/// What happened to an event, for the events counters.
#[derive(Debug, Clone, Copy)]
enum EventStep {
    Published = 0,
    Delivered = 1,
    Retried = 2,
    Duplicate = 3,
    DeadLettered = 4,
    Refused = 5,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    module: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModuleLabels {
    module: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    caller: String,
    callee: String,
    function: String,
    path: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EdgeLabels {
    caller: String,
    callee: String,
    path: &'static str,
}

/// Which way a call between modules went: the `path` label of the call metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallPath {
    /// In-process: the callee runs on this node.
    Local,
    /// Over the mesh, to a node that runs the callee.
    Remote,
}

impl CallPath {
    fn label(self) -> &'static str {
        match self {
            CallPath::Local => "local",
            CallPath::Remote => "remote",
        }
    }
}

/// How many duration buckets: from 10 µs doubling to ~84 s, past the longest timeout
/// a deployment sets (a 60 s request lands in a bucket of its own, not in +Inf).
const DURATION_BUCKETS: u16 = 24;

/// Makes each new histogram with the host's duration buckets.
#[derive(Clone, Copy)]
struct DurationBuckets;

impl MetricConstructor<Histogram> for DurationBuckets {
    fn new_metric(&self) -> Histogram {
        Histogram::new(exponential_buckets(10e-6, 2.0, DURATION_BUCKETS))
    }
}

/// One edge of the call graph (`caller` calling `callee`'s `function`): its
/// counters and histogram, looked up once and then updated without a lookup.
#[derive(Clone)]
pub struct EdgeMetrics {
    ok: Counter,
    failed: Counter,
    seconds: Histogram,
}

impl EdgeMetrics {
    /// Records one call along this edge.
    pub fn record(&self, ok: bool, took: Duration) {
        if ok { &self.ok } else { &self.failed }.inc();
        self.seconds.observe(took.as_secs_f64());
    }
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("modhost");
        let node_info = Family::<NodeLabels, Gauge>::default();
        registry.register(
            "node_info",
            "1, naming the node (its [nodes] key, empty on a single node) and the application these series come from",
            node_info.clone(),
        );
        let gateway_requests = Family::<RouteStatusLabels, Counter>::default();
        registry.register(
            "gateway_requests",
            "Requests the gateway answered, by route (empty: no route matched) and status, whoever served them",
            gateway_requests.clone(),
        );
        let gateway_seconds = Family::new_with_constructor(DurationBuckets);
        registry.register(
            "gateway_request_duration_seconds",
            "How long the gateway took to answer a request, by route",
            gateway_seconds.clone(),
        );
        let requests = Family::<RequestLabels, Counter>::default();
        let request_seconds = Family::new_with_constructor(DurationBuckets);
        let calls = Family::<CallLabels, Counter>::default();
        let call_seconds = Family::new_with_constructor(DurationBuckets);
        registry.register(
            "http_requests",
            "HTTP requests handed to a module, by module and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "How long a module took to answer an HTTP request",
            request_seconds.clone(),
        );
        registry.register(
            "calls",
            "Calls between modules, by caller, callee, function, path (local or remote) and outcome",
            calls.clone(),
        );
        registry.register(
            "call_duration_seconds",
            "How long a call between modules took, by caller, callee and path (local or remote)",
            call_seconds.clone(),
        );
        let events: [Family<TopicLabels, Counter>; 6] = Default::default();
        for (family, (name, help)) in events.iter().zip([
            ("events_published", "Events the bus confirmed from a module's outbox, by module and topic"),
            ("events_delivered", "Events a subscribing module handled, by module and topic"),
            ("events_retried", "Failed deliveries of an event that will be retried, by subscribing module and topic"),
            ("events_duplicates", "Redelivered events skipped because the module had handled them, by module and topic"),
            ("events_dead_lettered", "Events moved to a module's dead-letter topic after its last attempt, by module and topic"),
            ("events_refused", "Outbox rows the relay refused to send (not written by the host's publish, or malformed), by module and topic"),
        ]) {
            registry.register(name, help, family.clone());
        }
        let outbox_lag = Family::<ModuleLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "events_outbox_lag_seconds",
            "Age of the oldest event still in a module's outbox (0 when empty)",
            outbox_lag.clone(),
        );
        let outbox_depth = Family::<ModuleLabels, Gauge>::default();
        registry.register(
            "events_outbox_depth",
            "Events waiting in a module's outbox for the relay",
            outbox_depth.clone(),
        );
        let consumer_lag = Family::<TopicLabels, Gauge>::default();
        registry.register(
            "events_consumer_lag",
            "Events on the bus a subscribing module has not handled yet, by module and topic (Kafka: in the partitions this node reads)",
            consumer_lag.clone(),
        );
        let module_gauges: [Family<ModuleLabels, Gauge>; 5] = Default::default();
        for (family, (name, help)) in module_gauges.iter().zip([
            (
                "instances",
                "A module's instances alive on this node (running work or idle)",
            ),
            (
                "instances_idle",
                "A module's warm instances waiting for work",
            ),
            (
                "instance_memory_bytes",
                "Linear memory a module's live instances hold together, in bytes",
            ),
            (
                "module_in_flight",
                "Requests, calls and deliveries a module runs now (its bulkhead in use)",
            ),
            (
                "module_concurrency",
                "The most a module may run at once (its bulkhead's size)",
            ),
        ]) {
            registry.register(name, help, family.clone());
        }
        let module_version = Family::<ModuleVersionLabels, Gauge>::default();
        registry.register(
            "module_version",
            "1 for each version a module holds on this node, by role: serving, canary, previous",
            module_version.clone(),
        );
        let canary_weight = Family::<ModuleLabels, Gauge>::default();
        registry.register(
            "canary_weight",
            "Percent of a module's traffic its canary gets (0: no canary)",
            canary_weight.clone(),
        );
        let db_connections = Family::<PoolLabels, Gauge>::default();
        registry.register(
            "db_connections",
            "Connections of a module's database pool, by state (in_use, idle)",
            db_connections.clone(),
        );
        let db_acquire = Family::new_with_constructor(DurationBuckets);
        registry.register(
            "db_acquire_seconds",
            "How long a module's statements and transactions waited for a connection of its pool",
            db_acquire.clone(),
        );
        let versions = Family::<VersionLabels, Counter>::default();
        registry.register(
            "version_outcomes",
            "Requests, calls and event deliveries per module version, by outcome (ok or error)",
            versions.clone(),
        );
        let rollbacks = Family::<RollbackLabels, Counter>::default();
        registry.register(
            "rollbacks",
            "Versions rolled back, by module and reason (operator, canary_errors)",
            rollbacks.clone(),
        );
        let gateway_refused = Family::<RefusalLabels, Counter>::default();
        registry.register(
            "gateway_refused",
            "Requests the gateway refused by a route's rules, by route and reason (client_rate_limited, route_rate_limited, unauthenticated)",
            gateway_refused.clone(),
        );
        let policy_counts: [Family<PolicyLabels, Counter>; 3] = Default::default();
        for (family, (name, help)) in policy_counts.iter().zip([
            ("call_retries", "Calls made again by a retry policy, by policy"),
            ("call_retry_budget_exhausted", "Failed calls not retried because the policy's retry budget was spent, by policy"),
            ("bulkhead_shed", "Calls a policy's bulkhead refused (queue full, or waited past the queue timeout), by policy"),
        ]) {
            registry.register(name, help, family.clone());
        }
        let breaker_open = Family::<PolicyLabels, Gauge>::default();
        registry.register(
            "breaker_open",
            "1 while a policy's circuit breaker is open or probing, 0 while closed, by policy",
            breaker_open.clone(),
        );
        let bulkhead_in_use = Family::<PolicyLabels, Gauge>::default();
        registry.register(
            "bulkhead_in_use",
            "Calls a policy's bulkhead admitted that are running now, by policy",
            bulkhead_in_use.clone(),
        );
        let bulkhead_queued = Family::<PolicyLabels, Gauge>::default();
        registry.register(
            "bulkhead_queued",
            "Calls waiting in a policy's bulkhead queue, by policy",
            bulkhead_queued.clone(),
        );
        let bulkhead_wait = Family::new_with_constructor(DurationBuckets);
        registry.register(
            "bulkhead_wait_seconds",
            "How long calls waited in a policy's bulkhead queue before running, by policy",
            bulkhead_wait.clone(),
        );
        let mesh_ejected = Family::<EndpointLabels, Gauge>::default();
        registry.register(
            "mesh_ejected",
            "1 while a node is ejected from a module's balance after failing, by module and node",
            mesh_ejected.clone(),
        );
        let mesh_ejections = Family::<EndpointLabels, Counter>::default();
        registry.register(
            "mesh_ejections",
            "Times a node was ejected from a module's balance, by module and node",
            mesh_ejections.clone(),
        );
        let trace_export = TraceExportMetrics::default();
        registry.register(
            "trace_spans_exported",
            "Spans sent to the OTLP collector",
            trace_export.exported.clone(),
        );
        registry.register(
            "trace_spans_dropped",
            "Spans dropped because the export queue was full (the collector is slow or away)",
            trace_export.dropped.clone(),
        );
        registry.register(
            "trace_exports_failed",
            "Batches of spans the OTLP collector refused or did not answer",
            trace_export.failed.clone(),
        );
        Metrics {
            trace_export,
            registry,
            sampled: Mutex::new(Vec::new()),
            node_info,
            gateway_requests,
            gateway_seconds,
            outbox_depth,
            consumer_lag,
            module_gauges,
            module_version,
            canary_weight,
            db_connections,
            db_acquire,
            bulkhead_in_use,
            requests,
            request_seconds,
            calls,
            call_seconds,
            events,
            outbox_lag,
            versions,
            rollbacks,
            gateway_refused,
            policy_counts,
            breaker_open,
            bulkhead_queued,
            bulkhead_wait,
            mesh_ejected,
            mesh_ejections,
        }
    }

    /// The metrics of `module` on `node` in the mesh's balance, looked up once.
    pub fn mesh_endpoint(&self, module: &str, node: &str) -> EndpointMetrics {
        let labels = EndpointLabels {
            module: module.to_string(),
            node: node.to_string(),
        };
        EndpointMetrics {
            ejected: self.mesh_ejected.get_or_create_owned(&labels),
            ejections: self.mesh_ejections.get_or_create_owned(&labels),
        }
    }

    /// The metrics of call policy `policy`, looked up once.
    pub fn policy(&self, policy: &str) -> PolicyMetrics {
        let labels = PolicyLabels {
            policy: policy.to_string(),
        };
        let [retried, exhausted, shed] = &self.policy_counts;
        PolicyMetrics {
            retried: retried.get_or_create_owned(&labels),
            budget_exhausted: exhausted.get_or_create_owned(&labels),
            shed: shed.get_or_create_owned(&labels),
            breaker_open: self.breaker_open.get_or_create_owned(&labels),
            in_use: self.bulkhead_in_use.get_or_create_owned(&labels),
            queued: self.bulkhead_queued.get_or_create_owned(&labels),
            waited: self.bulkhead_wait.get_or_create_owned(&labels),
        }
    }

    /// The gateway refused a request for `route` by the route's rules, for `reason`.
    pub fn gateway_refused(&self, route: &str, reason: &'static str) {
        self.gateway_refused
            .get_or_create(&RefusalLabels {
                route: route.to_string(),
                reason,
            })
            .inc();
    }

    fn event(&self, step: EventStep, module: &str, topic: &str) {
        self.events[step as usize]
            .get_or_create(&TopicLabels {
                module: module.to_string(),
                topic: topic.to_string(),
            })
            .inc();
    }

    /// The bus confirmed an event of `module` on `topic`.
    pub fn published(&self, module: &str, topic: &str) {
        self.event(EventStep::Published, module, topic);
    }

    /// `module` handled an event of `topic`.
    pub fn delivered(&self, module: &str, topic: &str) {
        self.event(EventStep::Delivered, module, topic);
    }

    /// `module`'s handler failed on an event of `topic`, which will be retried.
    pub fn retried(&self, module: &str, topic: &str) {
        self.event(EventStep::Retried, module, topic);
    }

    /// `module` skipped an event of `topic` it had handled before.
    pub fn duplicate(&self, module: &str, topic: &str) {
        self.event(EventStep::Duplicate, module, topic);
    }

    /// `module` gave up on an event of `topic`; it went to the dead-letter topic.
    pub fn dead_lettered(&self, module: &str, topic: &str) {
        self.event(EventStep::DeadLettered, module, topic);
    }

    /// The relay refused a row of `module`'s outbox claiming `topic`: the host did not
    /// write it, or it is malformed. It was set aside, not sent.
    pub fn refused(&self, module: &str, topic: &str) {
        self.event(EventStep::Refused, module, topic);
    }

    /// Work that version `version` of `module` did ended `ok` or not.
    pub fn version_outcome(&self, module: &str, version: &str, ok: bool) {
        self.versions
            .get_or_create(&VersionLabels {
                module: module.to_string(),
                version: version.to_string(),
                outcome: if ok { "ok" } else { "error" },
            })
            .inc();
    }

    /// A version of `module` was rolled back, for `reason`.
    pub fn rollback(&self, module: &str, reason: &'static str) {
        self.rollbacks
            .get_or_create(&RollbackLabels {
                module: module.to_string(),
                reason,
            })
            .inc();
    }

    /// The oldest event in `module`'s outbox is `seconds` old.
    pub fn outbox_lag(&self, module: &str, seconds: f64) {
        self.outbox_lag
            .get_or_create(&ModuleLabels {
                module: module.to_string(),
            })
            .set(seconds);
    }

    /// Records one HTTP request `module` answered with `status` in `took`.
    pub fn record_request(&self, module: &str, status: u16, took: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                module: module.to_string(),
                status,
            })
            .inc();
        self.request_seconds
            .get_or_create(&ModuleLabels {
                module: module.to_string(),
            })
            .observe(took.as_secs_f64());
    }

    /// The metrics of the edge `caller` → `callee`'s `function`, along `path`.
    pub fn edge(&self, caller: &str, callee: &str, function: &str, path: CallPath) -> EdgeMetrics {
        let path = path.label();
        let labels = |outcome| CallLabels {
            caller: caller.to_string(),
            callee: callee.to_string(),
            function: function.to_string(),
            path,
            outcome,
        };
        EdgeMetrics {
            ok: self.calls.get_or_create_owned(&labels("ok")),
            failed: self.calls.get_or_create_owned(&labels("error")),
            seconds: self.call_seconds.get_or_create_owned(&EdgeLabels {
                caller: caller.to_string(),
                callee: callee.to_string(),
                path,
            }),
        }
    }

    /// Names the node these metrics come from (`modhost_node_info`).
    pub fn node_info(&self, node: &str, app: &str) {
        self.node_info
            .get_or_create(&NodeLabels {
                node: node.to_string(),
                app: app.to_string(),
            })
            .set(1);
    }

    /// Records one request the gateway answered for `route` (empty when none matched)
    /// with `status`, in `took`.
    pub fn record_gateway_request(&self, route: &str, status: u16, took: Duration) {
        self.gateway_requests
            .get_or_create(&RouteStatusLabels {
                route: route.to_string(),
                status,
            })
            .inc();
        self.gateway_seconds
            .get_or_create(&RouteLabels {
                route: route.to_string(),
            })
            .observe(took.as_secs_f64());
    }

    /// The gauges `module`'s instances count themselves in, looked up once.
    pub fn instances(&self, module: &str) -> InstanceGauges {
        let labels = ModuleLabels {
            module: module.to_string(),
        };
        let [live, idle, memory, ..] = &self.module_gauges;
        InstanceGauges {
            live: live.get_or_create_owned(&labels),
            idle: idle.get_or_create_owned(&labels),
            memory: memory.get_or_create_owned(&labels),
        }
    }

    /// `module` runs `in_flight` pieces of work now, of at most `concurrency`.
    pub fn module_load(&self, module: &str, in_flight: usize, concurrency: usize) {
        let labels = ModuleLabels {
            module: module.to_string(),
        };
        let [.., running, size] = &self.module_gauges;
        running
            .get_or_create(&labels)
            .set(i64::try_from(in_flight).unwrap_or(i64::MAX));
        size.get_or_create(&labels)
            .set(i64::try_from(concurrency).unwrap_or(i64::MAX));
    }

    /// The versions every module of this node holds now, each with its role, and each
    /// module's canary weight: replaces what was set before (a version swapped out
    /// leaves no series behind).
    pub fn module_versions<'a>(
        &self,
        versions: impl IntoIterator<Item = (&'a str, &'a str, VersionRole)>,
        weights: impl IntoIterator<Item = (&'a str, u32)>,
    ) {
        self.module_version.clear();
        for (module, version, role) in versions {
            self.module_version
                .get_or_create(&ModuleVersionLabels {
                    module: module.to_string(),
                    version: version.to_string(),
                    role,
                })
                .set(1);
        }
        for (module, weight) in weights {
            self.canary_weight
                .get_or_create(&ModuleLabels {
                    module: module.to_string(),
                })
                .set(i64::from(weight));
        }
    }

    /// `module`'s database pool holds `in_use` connections lent out and `idle` ones.
    pub fn db_pool(&self, module: &str, in_use: u32, idle: u32) {
        for (state, count) in [("in_use", in_use), ("idle", idle)] {
            self.db_connections
                .get_or_create(&PoolLabels {
                    module: module.to_string(),
                    state,
                })
                .set(i64::from(count));
        }
    }

    /// The histogram of how long `module` waits for its database's connections.
    pub fn db_acquire(&self, module: &str) -> Histogram {
        self.db_acquire.get_or_create_owned(&ModuleLabels {
            module: module.to_string(),
        })
    }

    /// `depth` events wait in `module`'s outbox.
    pub fn outbox_depth(&self, module: &str, depth: u64) {
        self.outbox_depth
            .get_or_create(&ModuleLabels {
                module: module.to_string(),
            })
            .set(i64::try_from(depth).unwrap_or(i64::MAX));
    }

    /// `module` has `lag` events of `topic` on the bus still to handle.
    pub fn consumer_lag(&self, module: &str, topic: &str, lag: u64) {
        self.consumer_lag
            .get_or_create(&TopicLabels {
                module: module.to_string(),
                topic: topic.to_string(),
            })
            .set(i64::try_from(lag).unwrap_or(i64::MAX));
    }

    /// Drops what this node reports of `module`'s current state — its instances, load,
    /// canary weight, database pool, outbox and its lag on each of `topics` — once it
    /// no longer runs here (it moved to another node): a dashboard summing the nodes
    /// would count the last values twice. Its counters stay: they only ever grow.
    pub fn forget_module(&self, module: &str, topics: &[String]) {
        let labels = ModuleLabels {
            module: module.to_string(),
        };
        for family in &self.module_gauges {
            family.remove(&labels);
        }
        self.canary_weight.remove(&labels);
        self.outbox_depth.remove(&labels);
        self.outbox_lag.remove(&labels);
        for state in ["in_use", "idle"] {
            self.db_connections.remove(&PoolLabels {
                module: module.to_string(),
                state,
            });
        }
        for topic in topics {
            self.consumer_lag.remove(&TopicLabels {
                module: module.to_string(),
                topic: topic.to_string(),
            });
        }
    }

    /// Reads `source` at every scrape from now on, for as long as it lives.
    pub fn sample_from(&self, source: Weak<dyn Sampled>) {
        self.lock_sampled().push(source);
    }

    fn lock_sampled(&self) -> std::sync::MutexGuard<'_, Vec<Weak<dyn Sampled>>> {
        // A panic in a sampler leaves the list whole: a poisoned lock is sound to use.
        self.sampled
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Every metric in the Prometheus text exposition format, the sampled ones read
    /// now.
    pub fn encode(&self) -> String {
        let mut sampled = self.lock_sampled();
        sampled.retain(|source| match source.upgrade() {
            Some(source) => {
                source.sample(self);
                true
            }
            None => false,
        });
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_edge_counts_outcomes_and_durations_under_its_labels() {
        let metrics = Metrics::new();
        let function = "shop:inventory/api@1.0.0#reserve";
        let edge = metrics.edge("orders", "inventory", function, CallPath::Remote);
        edge.record(true, Duration::from_micros(12));
        edge.record(true, Duration::from_micros(40));
        edge.record(false, Duration::from_millis(3));
        // Looking the edge up again finds the same series.
        metrics
            .edge("orders", "inventory", function, CallPath::Remote)
            .record(true, Duration::from_micros(7));
        // The same edge in-process is a series of its own.
        metrics
            .edge("orders", "inventory", function, CallPath::Local)
            .record(true, Duration::from_micros(3));
        let text = metrics.encode();
        let series = r#"caller="orders",callee="inventory",function="shop:inventory/api@1.0.0#reserve",path="remote""#;
        assert!(
            text.contains(&format!("modhost_calls_total{{{series},outcome=\"ok\"}} 3")),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "modhost_calls_total{{{series},outcome=\"error\"}} 1"
            )),
            "{text}"
        );
        assert!(
            text.contains(
                r#"modhost_call_duration_seconds_count{caller="orders",callee="inventory",path="remote"} 4"#
            ),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "modhost_calls_total{{{}path=\"local\",outcome=\"ok\"}} 1",
                series.trim_end_matches(r#"path="remote""#)
            )),
            "{text}"
        );
        // 7 µs and 12 µs are below the 20 µs bucket bound; 40 µs is not.
        assert!(
            text.contains(r#"modhost_call_duration_seconds_bucket{le="0.00002",caller="orders",callee="inventory",path="remote"} 2"#),
            "{text}"
        );
    }

    #[test]
    fn events_count_per_module_and_topic_and_lag_is_a_gauge() {
        let metrics = Metrics::new();
        metrics.published("payments", "payments.charged");
        metrics.delivered("orders", "payments.charged");
        metrics.delivered("orders", "payments.charged");
        metrics.dead_lettered("notifications", "payments.charged");
        metrics.outbox_lag("payments", 1.5);
        metrics.outbox_lag("payments", 0.0);
        let text = metrics.encode();
        for line in [
            r#"modhost_events_published_total{module="payments",topic="payments.charged"} 1"#,
            r#"modhost_events_delivered_total{module="orders",topic="payments.charged"} 2"#,
            r#"modhost_events_dead_lettered_total{module="notifications",topic="payments.charged"} 1"#,
            r#"modhost_events_outbox_lag_seconds{module="payments"} 0.0"#,
        ] {
            assert!(text.contains(line), "{line} not in\n{text}");
        }
    }

    #[test]
    fn buckets_run_from_10_microseconds_past_a_minute() {
        let metrics = Metrics::new();
        metrics.record_request("slow", 200, Duration::from_secs(61));
        metrics.record_request("slow", 200, Duration::from_micros(9));
        let text = metrics.encode();
        let bucket = |le: &str| {
            format!(r#"modhost_http_request_duration_seconds_bucket{{le="{le}",module="slow"}}"#)
        };
        // 9 µs in the first bucket; the 61 s request below the last finite bound.
        assert!(text.contains(&format!("{} 1", bucket("0.00001"))), "{text}");
        assert!(
            text.contains(&format!("{} 1", bucket("41.94304"))),
            "{text}"
        );
        assert!(
            text.contains(&format!("{} 2", bucket("83.88608"))),
            "{text}"
        );
    }

    #[test]
    fn requests_count_per_module_and_status() {
        let metrics = Metrics::new();
        metrics.record_request("users", 200, Duration::from_micros(30));
        metrics.record_request("users", 200, Duration::from_micros(30));
        metrics.record_request("users", 404, Duration::from_micros(30));
        let text = metrics.encode();
        assert!(
            text.contains(r#"modhost_http_requests_total{module="users",status="200"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"modhost_http_requests_total{module="users",status="404"} 1"#),
            "{text}"
        );
    }

    /// A source of state, as the registry and the databases are.
    struct Versions(Mutex<Vec<(&'static str, &'static str, VersionRole)>>);

    impl Sampled for Versions {
        fn sample(&self, metrics: &Metrics) {
            let held = self.0.lock().unwrap().clone();
            let weights = held
                .iter()
                .filter(|(_, _, role)| *role == VersionRole::Canary)
                .map(|(module, _, _)| (*module, 10));
            metrics.module_versions(held.clone(), weights.collect::<Vec<_>>());
        }
    }

    #[test]
    fn a_module_gone_from_the_node_leaves_no_gauge_but_its_counters() {
        let metrics = Metrics::new();
        metrics.module_load("users", 3, 8);
        metrics.db_pool("users", 1, 4);
        metrics.outbox_depth("users", 5);
        metrics.outbox_lag("users", 1.5);
        metrics.consumer_lag("users", "orders.placed", 7);
        metrics.record_request("users", 200, Duration::from_millis(2));
        metrics.module_load("orders", 1, 8);
        metrics.forget_module("users", &["orders.placed".to_string()]);
        let text = metrics.encode();
        let users: Vec<&str> = text
            .lines()
            .filter(|line| line.contains(r#"module="users""#) && !line.starts_with('#'))
            .collect();
        assert!(
            users
                .iter()
                .all(|line| line.starts_with("modhost_http_request")),
            "{users:#?}"
        );
        assert!(!users.is_empty(), "its counters stay");
        assert!(
            text.contains(r#"modhost_module_in_flight{module="orders"} 1"#),
            "{text}"
        );
    }

    #[test]
    fn state_is_read_at_each_scrape_and_a_version_gone_leaves_no_series() {
        let metrics = Metrics::new();
        let versions = std::sync::Arc::new(Versions(Mutex::new(vec![
            ("users", "aaaa", VersionRole::Serving),
            ("users", "bbbb", VersionRole::Canary),
        ])));
        let source: std::sync::Arc<dyn Sampled> = versions.clone();
        metrics.sample_from(std::sync::Arc::downgrade(&source));
        let text = metrics.encode();
        for line in [
            r#"modhost_module_version{module="users",version="aaaa",role="serving"} 1"#,
            r#"modhost_module_version{module="users",version="bbbb",role="canary"} 1"#,
            r#"modhost_canary_weight{module="users"} 10"#,
        ] {
            assert!(text.contains(line), "{line} not in\n{text}");
        }
        // Promoted: the canary serves, the old version is the previous one.
        *versions.0.lock().unwrap() = vec![
            ("users", "bbbb", VersionRole::Serving),
            ("users", "aaaa", VersionRole::Previous),
        ];
        let text = metrics.encode();
        assert!(!text.contains(r#"role="canary""#), "{text}");
        assert!(
            text.contains(
                r#"modhost_module_version{module="users",version="aaaa",role="previous"} 1"#
            ),
            "{text}"
        );
        // A source that is gone is not read again; what it set last stays.
        drop((source, versions));
        assert!(metrics.encode().contains(r#"role="previous""#));
        assert!(metrics.lock_sampled().is_empty());
    }

    #[test]
    fn the_gateway_counts_per_route_and_status() {
        let metrics = Metrics::new();
        metrics.record_gateway_request("/orders", 201, Duration::from_millis(3));
        metrics.record_gateway_request("/orders", 503, Duration::from_millis(1));
        metrics.record_gateway_request("", 404, Duration::from_micros(20));
        let text = metrics.encode();
        for line in [
            r#"modhost_gateway_requests_total{route="/orders",status="201"} 1"#,
            r#"modhost_gateway_requests_total{route="/orders",status="503"} 1"#,
            r#"modhost_gateway_requests_total{route="",status="404"} 1"#,
            r#"modhost_gateway_request_duration_seconds_count{route="/orders"} 2"#,
        ] {
            assert!(text.contains(line), "{line} not in\n{text}");
        }
    }
}
