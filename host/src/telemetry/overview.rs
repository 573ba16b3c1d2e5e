//! What the dashboard shows of one node: rates, errors and latencies over the last
//! seconds, read from this node's own metrics.
//!
//! The metrics ([`super::metrics`]) are the one record of what happened; this keeps
//! a short history of them. Once a second [`record`] encodes them, as a scrape would,
//! and keeps the counters and histogram buckets the dashboard needs for the last
//! [`HISTORY`] seconds, each point with the instant it was read. From two points of
//! that history come a rate (their difference over the time between them) and a p99 (from the buckets' differences,
//! as Prometheus's `histogram_quantile` computes it). Nothing else counts twice.
//!
//! A node's [`NodeOverview`] covers what it saw: its gateway's routes, the calls its
//! modules made, the work its modules did, the events they handled. The node the
//! operator asks merges every node's ([`Red::merge`]), in the admin API.
//!
//! Beside the history, the node keeps the last [`NOTABLE`] requests that failed (5xx)
//! or were slow (`[telemetry] slow_request`), with their trace ids.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::metrics::metrics;

/// Seconds of history kept: the sparklines' length.
pub const HISTORY: usize = 60;

/// The window the live numbers are taken over, in seconds.
pub const WINDOW: usize = 10;

/// The window each point of a p99 sparkline is taken over, in seconds.
const P99_WINDOW: usize = 5;

/// How many slow or failed requests are kept.
pub const NOTABLE: usize = 50;

/// The metric families the history keeps (counters, and the buckets of histograms).
const KEPT: &[&str] = &[
    "modhost_gateway_requests_total",
    "modhost_gateway_request_duration_seconds_bucket",
    "modhost_calls_total",
    "modhost_call_duration_seconds_bucket",
    "modhost_version_outcomes_total",
    "modhost_http_request_duration_seconds_bucket",
    "modhost_events_delivered_total",
    "modhost_events_retried_total",
    "modhost_events_dead_lettered_total",
];

/// The gauges read from the latest point alone.
const GAUGES: &[&str] = &[
    "modhost_events_outbox_depth",
    "modhost_events_outbox_lag_seconds",
    "modhost_events_consumer_lag",
];

/// One series of the text exposition: its metric name and labels, in order.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Series {
    name: String,
    labels: Vec<(String, String)>,
}

impl Series {
    fn label(&self, name: &str) -> &str {
        self.labels
            .iter()
            .find(|(key, _)| key == name)
            .map_or("", |(_, value)| value.as_str())
    }
}

/// Parses one line of the Prometheus text exposition (`name{a="x",b="y"} 1.5`).
/// Comments and malformed lines give `None`.
fn parse_line(line: &str) -> Option<(Series, f64)> {
    if line.starts_with('#') || line.is_empty() {
        return None;
    }
    let (head, value) = line.rsplit_once(' ')?;
    let value: f64 = value.parse().ok()?;
    let Some((name, rest)) = head.split_once('{') else {
        return Some((
            Series {
                name: head.to_string(),
                labels: Vec::new(),
            },
            value,
        ));
    };
    let mut labels = Vec::new();
    let mut chars = rest.chars().peekable();
    loop {
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            break;
        }
        if chars.next() != Some('"') {
            return None;
        }
        let mut text = String::new();
        loop {
            match chars.next()? {
                '\\' => match chars.next()? {
                    'n' => text.push('\n'),
                    other => text.push(other),
                },
                '"' => break,
                other => text.push(other),
            }
        }
        labels.push((key.trim_start_matches(',').to_string(), text));
        match chars.peek() {
            Some(',') => {
                chars.next();
            }
            _ => break,
        }
    }
    Some((
        Series {
            name: name.to_string(),
            labels,
        },
        value,
    ))
}

/// One second's reading of the kept series.
struct Point {
    /// When it was read: rates divide by the time that really passed between points.
    at: std::time::Instant,
    values: HashMap<Series, f64>,
}

/// The history of this node's metrics, and its notable requests.
pub struct History {
    points: Mutex<VecDeque<Point>>,
    /// The gauges, as last read.
    gauges: Mutex<HashMap<Series, f64>>,
    notable: Mutex<VecDeque<Notable>>,
    slow: OnceLock<Duration>,
}

/// A request that failed (5xx) or took longer than `[telemetry] slow_request`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Notable {
    /// When it was answered, milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// The route it matched ("" for none).
    pub route: String,
    /// The status the gateway answered.
    pub status: u16,
    /// How long it took, in milliseconds.
    pub duration_ms: f64,
    /// Its trace (32 hex digits): where to look for what happened.
    pub trace_id: String,
    /// Its request id (`x-request-id`).
    pub request_id: String,
    /// The node whose gateway answered it (filled in when nodes are merged).
    #[serde(default)]
    pub node: String,
}

/// Rate, errors and duration of one thing (a route, an edge, a module) over the
/// window, and second by second over the history.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Red {
    /// Per second, over the last [`WINDOW`] seconds.
    pub rate: f64,
    /// Failures per second, over the same window.
    pub errors: f64,
    /// The 99th percentile of durations over the window, in milliseconds, when any
    /// were measured.
    pub p99_ms: Option<f64>,
    /// The rate in each of the last seconds, oldest first.
    pub rate_series: Vec<f64>,
    /// The failures in each of the last seconds, oldest first.
    pub error_series: Vec<f64>,
    /// The p99 over the 5 seconds up to each of the last seconds.
    pub p99_series: Vec<Option<f64>>,
}

impl Red {
    /// The share of work that failed over the window (0 when there was none).
    pub fn error_ratio(&self) -> f64 {
        if self.rate > 0.0 {
            self.errors / self.rate
        } else {
            0.0
        }
    }

    /// Adds `other` (the same thing seen on another node): rates add up; the p99 is
    /// the larger of the two (the slowest node's). Series line up at their newest
    /// point: a node with a shorter history (started later) covers the latest seconds.
    pub fn merge(&mut self, other: &Red) {
        self.rate += other.rate;
        self.errors += other.errors;
        self.p99_ms = slower(self.p99_ms, other.p99_ms);
        merge_series(&mut self.rate_series, &other.rate_series, 0.0, |a, b| a + b);
        merge_series(&mut self.error_series, &other.error_series, 0.0, |a, b| {
            a + b
        });
        merge_series(&mut self.p99_series, &other.p99_series, None, slower);
    }
}

/// Combines `theirs` into `mine` point by point, the newest points together; the
/// shorter is taken as `empty` before its start.
fn merge_series<T: Copy>(mine: &mut Vec<T>, theirs: &[T], empty: T, combine: impl Fn(T, T) -> T) {
    if mine.len() < theirs.len() {
        let missing = theirs.len() - mine.len();
        mine.splice(0..0, std::iter::repeat_n(empty, missing));
    }
    let offset = mine.len() - theirs.len();
    for (mine, theirs) in mine[offset..].iter_mut().zip(theirs) {
        *mine = combine(*mine, *theirs);
    }
}

/// The larger of two durations where either may be missing: the slower p99.
pub fn slower(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// Calls along one edge of the call graph, seen from the caller's node.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EdgeOverview {
    /// The calling module.
    pub caller: String,
    /// The called module.
    pub callee: String,
    /// `local` (in-process) or `remote` (over the mesh).
    pub path: String,
    /// Its calls.
    pub red: Red,
}

/// Events of one topic handled by one subscribing module on this node.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct SubscriptionOverview {
    /// The subscribing module.
    pub module: String,
    /// The topic.
    pub topic: String,
    /// Deliveries (handled, or failed and retried) and failures, as for calls.
    pub red: Red,
    /// Events given up on and dead-lettered, since the node started.
    pub dead_lettered: u64,
    /// Events on the bus not handled yet (on Kafka: in this node's partitions).
    pub lag: u64,
}

/// A module's outbox on this node.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct OutboxOverview {
    /// Events waiting for the relay.
    pub depth: u64,
    /// Age of the oldest, in seconds.
    pub lag_seconds: f64,
}

/// What one node saw over the last seconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct NodeOverview {
    /// Seconds of history behind these numbers (less than [`HISTORY`] just after
    /// start).
    pub seconds: usize,
    /// Requests its gateway answered, by route.
    pub routes: BTreeMap<String, Red>,
    /// Calls its modules made.
    pub edges: Vec<EdgeOverview>,
    /// Work its modules did (requests, calls, deliveries), by module; the duration is
    /// that of their HTTP requests and of the calls into them made here.
    pub modules: BTreeMap<String, Red>,
    /// Events its modules handled.
    pub subscriptions: Vec<SubscriptionOverview>,
    /// Its modules' outboxes.
    pub outboxes: BTreeMap<String, OutboxOverview>,
    /// Its recent slow or failed requests, newest first.
    pub notable: Vec<Notable>,
}

/// This node's history.
pub fn history() -> &'static History {
    static HISTORY_OF_THIS_NODE: OnceLock<History> = OnceLock::new();
    HISTORY_OF_THIS_NODE.get_or_init(History::empty)
}

/// Reads this node's metrics once a second into [`history`], until `stopped`.
pub async fn record(stopped: impl std::future::Future<Output = ()>) {
    let mut every = tokio::time::interval(Duration::from_secs(1));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            _ = every.tick() => history().read(&metrics().encode()),
            () = &mut stopped => return,
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every update leaves the data whole: a poisoned lock is still sound.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl History {
    fn empty() -> History {
        History {
            points: Mutex::new(VecDeque::with_capacity(HISTORY + 1)),
            gauges: Mutex::new(HashMap::new()),
            notable: Mutex::new(VecDeque::with_capacity(NOTABLE)),
            slow: OnceLock::new(),
        }
    }

    /// Sets how long a request may take before it is kept as slow.
    pub fn set_slow(&self, slow: Duration) {
        let _ = self.slow.set(slow);
    }

    /// Keeps a request the gateway answered, if it failed or was slow.
    pub fn request(
        &self,
        route: &str,
        status: u16,
        took: Duration,
        trace_id: impl FnOnce() -> String,
        request_id: &str,
    ) {
        let slow = self.slow.get().copied().unwrap_or(DEFAULT_SLOW);
        if status < 500 && took < slow {
            return;
        }
        let at_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| {
                u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
            });
        let mut notable = lock(&self.notable);
        if notable.len() == NOTABLE {
            notable.pop_back();
        }
        notable.push_front(Notable {
            at_ms,
            route: route.to_string(),
            status,
            duration_ms: took.as_secs_f64() * 1000.0,
            trace_id: trace_id(),
            request_id: request_id.to_string(),
            node: String::new(),
        });
    }

    /// Takes one reading of `exposition` (the metrics' text) as the newest point.
    pub fn read(&self, exposition: &str) {
        self.read_at(exposition, std::time::Instant::now());
    }

    /// [`History::read`], for a reading taken at `at`.
    fn read_at(&self, exposition: &str, at: std::time::Instant) {
        let mut values = HashMap::new();
        let mut gauges = HashMap::new();
        for line in exposition.lines() {
            if !line.starts_with("modhost_") {
                continue;
            }
            let Some((series, value)) = parse_line(line) else {
                continue;
            };
            if KEPT.contains(&series.name.as_str()) {
                values.insert(series, value);
            } else if GAUGES.contains(&series.name.as_str()) {
                gauges.insert(series, value);
            }
        }
        *lock(&self.gauges) = gauges;
        let mut points = lock(&self.points);
        if points.len() > HISTORY {
            points.pop_front();
        }
        points.push_back(Point { at, values });
    }

    /// What this node saw over the history kept so far.
    pub fn overview(&self) -> NodeOverview {
        let mut points = lock(&self.points);
        let gauges = lock(&self.gauges);
        let view = View {
            points: points.make_contiguous(),
        };
        let mut overview = NodeOverview {
            seconds: view.points.len().saturating_sub(1),
            notable: lock(&self.notable).iter().cloned().collect(),
            ..NodeOverview::default()
        };
        let Some(latest) = view.points.last() else {
            return overview;
        };

        // Group the latest point's series: what is counted, what failed, buckets.
        let mut routes: BTreeMap<String, Group> = BTreeMap::new();
        let mut edges: BTreeMap<(String, String, String), Group> = BTreeMap::new();
        let mut modules: BTreeMap<String, Group> = BTreeMap::new();
        let mut subscriptions: BTreeMap<(String, String), (Group, u64)> = BTreeMap::new();
        for series in latest.values.keys() {
            let failed = |label: &str| series.label(label) == "error";
            match series.name.as_str() {
                "modhost_gateway_requests_total" => {
                    let group = routes.entry(series.label("route").to_string()).or_default();
                    group.add(series, series.label("status").starts_with('5'));
                }
                "modhost_gateway_request_duration_seconds_bucket" => {
                    let group = routes.entry(series.label("route").to_string()).or_default();
                    group.buckets.push(series.clone());
                }
                "modhost_calls_total" => {
                    let key = edge_key(series);
                    edges.entry(key).or_default().add(series, failed("outcome"));
                }
                "modhost_call_duration_seconds_bucket" => {
                    edges
                        .entry(edge_key(series))
                        .or_default()
                        .buckets
                        .push(series.clone());
                    let callee = series.label("callee").to_string();
                    modules
                        .entry(callee)
                        .or_default()
                        .buckets
                        .push(series.clone());
                }
                "modhost_version_outcomes_total" => {
                    let group = modules
                        .entry(series.label("module").to_string())
                        .or_default();
                    group.add(series, failed("outcome"));
                }
                "modhost_http_request_duration_seconds_bucket" => {
                    let group = modules
                        .entry(series.label("module").to_string())
                        .or_default();
                    group.buckets.push(series.clone());
                }
                "modhost_events_delivered_total" | "modhost_events_retried_total" => {
                    let key = (
                        series.label("module").to_string(),
                        series.label("topic").to_string(),
                    );
                    let retried = series.name == "modhost_events_retried_total";
                    subscriptions.entry(key).or_default().0.add(series, retried);
                }
                "modhost_events_dead_lettered_total" => {
                    let key = (
                        series.label("module").to_string(),
                        series.label("topic").to_string(),
                    );
                    let value = latest.values.get(series).copied().unwrap_or(0.0);
                    let subscription = subscriptions.entry(key).or_default();
                    // The last attempt before a dead letter failed too.
                    subscription.0.add(series, true);
                    subscription.1 = value as u64;
                }
                _ => {}
            }
        }
        // A subscriber stuck from the start has handled nothing, but has a lag.
        for series in gauges.keys() {
            if series.name == "modhost_events_consumer_lag" {
                let key = (
                    series.label("module").to_string(),
                    series.label("topic").to_string(),
                );
                subscriptions.entry(key).or_default();
            }
        }
        overview.routes = routes
            .into_iter()
            .map(|(route, group)| (route, view.red(&group)))
            .collect();
        overview.edges = edges
            .into_iter()
            .map(|((caller, callee, path), group)| EdgeOverview {
                caller,
                callee,
                path,
                red: view.red(&group),
            })
            .collect();
        // A module that only called others here has buckets but no work of its own.
        overview.modules = modules
            .into_iter()
            .filter(|(_, group)| !group.counted.is_empty())
            .map(|(module, group)| (module, view.red(&group)))
            .collect();
        let gauge = |name: &str, module: &str, topic: Option<&str>| {
            gauges
                .iter()
                .find(|(series, _)| {
                    series.name == name
                        && series.label("module") == module
                        && topic.is_none_or(|topic| series.label("topic") == topic)
                })
                .map_or(0.0, |(_, value)| *value)
        };
        overview.subscriptions = subscriptions
            .into_iter()
            .map(
                |((module, topic), (group, dead_lettered))| SubscriptionOverview {
                    red: view.red(&group),
                    dead_lettered,
                    lag: gauge("modhost_events_consumer_lag", &module, Some(&topic)) as u64,
                    module,
                    topic,
                },
            )
            .collect();
        for (series, _) in gauges.iter() {
            if series.name == "modhost_events_outbox_depth" {
                let module = series.label("module");
                overview.outboxes.insert(
                    module.to_string(),
                    OutboxOverview {
                        depth: gauge("modhost_events_outbox_depth", module, None) as u64,
                        lag_seconds: gauge("modhost_events_outbox_lag_seconds", module, None),
                    },
                );
            }
        }
        overview
    }
}

/// How long a request may take before it is kept as slow, unless the deployment says.
pub const DEFAULT_SLOW: Duration = Duration::from_secs(1);

fn edge_key(series: &Series) -> (String, String, String) {
    (
        series.label("caller").to_string(),
        series.label("callee").to_string(),
        series.label("path").to_string(),
    )
}

/// The series of one thing: its counters (each marked failed or not) and its
/// histogram buckets.
#[derive(Default)]
struct Group {
    counted: Vec<(Series, bool)>,
    buckets: Vec<Series>,
}

impl Group {
    fn add(&mut self, series: &Series, failed: bool) {
        self.counted.push((series.clone(), failed));
    }
}

/// The points of the history, oldest first.
struct View<'a> {
    points: &'a [Point],
}

impl View<'_> {
    /// The increase of `series` from point `from` to point `to` (a series not there
    /// yet had not counted anything).
    fn increase(&self, series: &Series, from: usize, to: usize) -> f64 {
        let at = |index: usize| {
            self.points
                .get(index)
                .and_then(|point| point.values.get(series))
                .copied()
                .unwrap_or(0.0)
        };
        // A counter never goes down; a restart of the node starts a new history.
        (at(to) - at(from)).max(0.0)
    }

    fn red(&self, group: &Group) -> Red {
        let last = self.points.len().saturating_sub(1);
        let sum = |failed_only: bool, from: usize, to: usize| {
            group
                .counted
                .iter()
                .filter(|(_, failed)| !failed_only || *failed)
                .map(|(series, _)| self.increase(series, from, to))
                .sum::<f64>()
        };
        let from = last - WINDOW.min(last);
        // Per second of the time that passed between two points (a tick may be late).
        let per_second = |value: f64, from: usize, to: usize| {
            let seconds = self.points[to]
                .at
                .saturating_duration_since(self.points[from].at)
                .as_secs_f64();
            if seconds > 0.0 {
                value / seconds
            } else {
                0.0
            }
        };
        let steps = (last - HISTORY.min(last))..last;
        Red {
            rate: per_second(sum(false, from, last), from, last),
            errors: per_second(sum(true, from, last), from, last),
            p99_ms: self.p99(&group.buckets, from, last),
            rate_series: steps
                .clone()
                .map(|at| per_second(sum(false, at, at + 1), at, at + 1))
                .collect(),
            error_series: steps
                .clone()
                .map(|at| per_second(sum(true, at, at + 1), at, at + 1))
                .collect(),
            p99_series: steps
                .map(|at| self.p99(&group.buckets, (at + 1).saturating_sub(P99_WINDOW), at + 1))
                .collect(),
        }
    }

    /// The 99th percentile of what `buckets` counted between two points, in ms.
    fn p99(&self, buckets: &[Series], from: usize, to: usize) -> Option<f64> {
        // The buckets of every series in the group, summed bound by bound.
        let mut by_bound: BTreeMap<OrderedBound, f64> = BTreeMap::new();
        for series in buckets {
            let bound = match series.label("le") {
                "+Inf" => f64::INFINITY,
                text => match text.parse::<f64>() {
                    Ok(bound) => bound,
                    Err(_) => continue,
                },
            };
            *by_bound.entry(OrderedBound(bound)).or_default() += self.increase(series, from, to);
        }
        quantile(0.99, &by_bound).map(|seconds| seconds * 1000.0)
    }
}

/// A bucket's upper bound, ordered (bounds are never NaN).
#[derive(Debug, Clone, Copy, PartialEq)]
struct OrderedBound(f64);

impl Eq for OrderedBound {}

impl PartialOrd for OrderedBound {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for OrderedBound {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// The `q` quantile of cumulative bucket counts, interpolated linearly within the
/// bucket it falls in (as Prometheus does); the highest finite bound when it falls in
/// `+Inf`. `None` when nothing was counted.
fn quantile(q: f64, buckets: &BTreeMap<OrderedBound, f64>) -> Option<f64> {
    let total = buckets.iter().next_back().map(|(_, count)| *count)?;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut lower = (0.0, 0.0);
    for (OrderedBound(bound), count) in buckets {
        if *count >= rank {
            if bound.is_infinite() {
                return Some(lower.0);
            }
            let within = count - lower.1;
            let share = if within > 0.0 {
                (rank - lower.1) / within
            } else {
                1.0
            };
            return Some(lower.0 + (bound - lower.0) * share);
        }
        lower = (*bound, *count);
    }
    Some(lower.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_lines_parse_with_escaped_labels() {
        let (series, value) =
            parse_line(r#"modhost_calls_total{caller="a",callee="b\"q",path="local"} 3"#).unwrap();
        assert_eq!(series.name, "modhost_calls_total");
        assert_eq!(series.label("callee"), "b\"q");
        assert_eq!(series.label("path"), "local");
        assert_eq!(value, 3.0);
        let (bare, value) = parse_line("modhost_trace_spans_exported_total 12").unwrap();
        assert!(bare.labels.is_empty());
        assert_eq!(value, 12.0);
        assert!(parse_line("# HELP modhost_calls Calls").is_none());
    }

    #[test]
    fn the_quantile_interpolates_within_its_bucket() {
        let buckets: BTreeMap<OrderedBound, f64> = [
            (OrderedBound(0.001), 50.0),
            (OrderedBound(0.002), 100.0),
            (OrderedBound(f64::INFINITY), 100.0),
        ]
        .into_iter()
        .collect();
        // Rank 99 of 100 lies 49/50 of the way through (0.001, 0.002].
        let p99 = quantile(0.99, &buckets).unwrap();
        assert!((p99 - 0.00198).abs() < 1e-9, "{p99}");
        assert_eq!(quantile(0.99, &BTreeMap::new()), None);
    }

    fn exposition(requests: u64, errors: u64, fast: u64, slow: u64) -> String {
        format!(
            "modhost_gateway_requests_total{{route=\"/orders\",status=\"201\"}} {requests}\n\
             modhost_gateway_requests_total{{route=\"/orders\",status=\"503\"}} {errors}\n\
             modhost_gateway_request_duration_seconds_bucket{{le=\"0.001\",route=\"/orders\"}} {fast}\n\
             modhost_gateway_request_duration_seconds_bucket{{le=\"0.1\",route=\"/orders\"}} {}\n\
             modhost_gateway_request_duration_seconds_bucket{{le=\"+Inf\",route=\"/orders\"}} {}\n\
             modhost_calls_total{{caller=\"orders\",callee=\"payments\",function=\"f\",path=\"remote\",outcome=\"ok\"}} {requests}\n\
             modhost_events_outbox_depth{{module=\"payments\"}} 4\n\
             modhost_events_outbox_lag_seconds{{module=\"payments\"}} 2.5\n",
            fast + slow,
            fast + slow
        )
    }

    #[test]
    fn rates_and_percentiles_come_from_the_differences_between_readings() {
        let history = History::empty();
        // 20 seconds of 10 requests a second, one of them failing, every request
        // fast but one a second slow.
        let start = std::time::Instant::now();
        for second in 0..=20u64 {
            let at = start + Duration::from_secs(second);
            history.read_at(&exposition(9 * second, second, 9 * second, second), at);
        }
        let overview = history.overview();
        assert_eq!(overview.seconds, 20);
        let orders = &overview.routes["/orders"];
        assert!((orders.rate - 10.0).abs() < 1e-9, "{orders:?}");
        assert!((orders.errors - 1.0).abs() < 1e-9, "{orders:?}");
        assert!((orders.error_ratio() - 0.1).abs() < 1e-9);
        // One in ten is slow (in (1ms, 100ms]): the p99 is in that bucket.
        let p99 = orders.p99_ms.unwrap();
        assert!(p99 > 1.0 && p99 <= 100.0, "{p99}");
        assert_eq!(orders.rate_series.len(), 20);
        assert!(orders.rate_series.iter().all(|rate| *rate == 10.0));
        assert_eq!(overview.edges.len(), 1);
        assert_eq!(overview.edges[0].path, "remote");
        assert!((overview.edges[0].red.rate - 9.0).abs() < 1e-9);
        assert_eq!(
            overview.outboxes["payments"],
            OutboxOverview {
                depth: 4,
                lag_seconds: 2.5
            }
        );
    }

    #[test]
    fn nodes_merge_by_adding_rates_and_taking_the_slower_p99() {
        let mut a = Red {
            rate: 2.0,
            errors: 1.0,
            p99_ms: Some(3.0),
            rate_series: vec![1.0, 2.0],
            error_series: vec![0.0, 1.0],
            p99_series: vec![Some(3.0), None],
        };
        let b = Red {
            rate: 3.0,
            errors: 0.0,
            p99_ms: Some(9.0),
            rate_series: vec![4.0, 5.0, 6.0],
            error_series: vec![0.0, 0.0, 0.0],
            p99_series: vec![None, Some(1.0), Some(2.0)],
        };
        a.merge(&b);
        assert_eq!((a.rate, a.errors, a.p99_ms), (5.0, 1.0, Some(9.0)));
        // `a` started a second later: its two seconds are the latest two of `b`'s.
        assert_eq!(a.rate_series, [4.0, 6.0, 8.0]);
        assert_eq!(a.error_series, [0.0, 0.0, 1.0]);
        assert_eq!(a.p99_series, [None, Some(3.0), Some(2.0)]);
    }

    #[test]
    fn only_failed_or_slow_requests_are_kept_newest_first_and_bounded() {
        let history = History::empty();
        history.set_slow(Duration::from_millis(100));
        let trace = || "4bf92f3577b34da6a3ce929d0e0e4736".to_string();
        history.request("/users", 200, Duration::from_millis(5), trace, "r1");
        history.request("/users", 503, Duration::from_millis(5), trace, "r2");
        history.request("/users", 200, Duration::from_millis(150), trace, "r3");
        let kept: Vec<String> = history
            .overview()
            .notable
            .iter()
            .map(|n| n.request_id.clone())
            .collect();
        assert_eq!(kept, ["r3", "r2"]);
        for _ in 0..NOTABLE * 2 {
            history.request("/users", 500, Duration::ZERO, trace, "r");
        }
        assert_eq!(history.overview().notable.len(), NOTABLE);
    }
}
