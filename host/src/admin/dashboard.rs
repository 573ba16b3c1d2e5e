//! The dashboard: one picture of the whole system for a person who would rather look
//! than read, and the JSON it is drawn from.
//!
//! - `GET /dashboard`: the page, built into the binary (no CDN: it works offline).
//!   It polls `GET /v1/overview` once a second and draws the module graph — modules as
//!   boxes grouped by node, calls and event subscriptions as arrows, each with its
//!   rate, p99 and errors — with versions, canaries, RED sparklines, outboxes, dead
//!   letters and the recent slow or failed requests with their trace ids.
//! - `GET /v1/overview`: the same, as JSON (documented in `docs/operations.md`).
//!
//! Every node keeps a short history of its own metrics
//! ([`crate::telemetry::overview`]); the node asked gathers every node's part over the
//! mesh (the `overview` peer action) and merges them here with the deployment's
//! graph: every module and every declared edge shows, traffic or not.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use crate::deployment::Deployment;
use crate::module::Registry;
use crate::telemetry::overview::{self, NodeOverview, Notable, Red, HISTORY, WINDOW};

/// How long the node asked waits for another node's part.
pub const PEER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// The page, built into the binary.
pub const PAGE: &str = include_str!("dashboard.html");

/// One node's part of the overview: what it saw, and its modules' state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodePart {
    /// Rates, errors and latencies over the last seconds.
    pub overview: NodeOverview,
    /// Each local module's status, version, canary and work in flight.
    pub modules: serde_json::Map<String, serde_json::Value>,
}

/// This node's part.
pub fn local_part(registry: &Registry) -> NodePart {
    NodePart {
        overview: overview::history().overview(),
        modules: registry.status(),
    }
}

/// An edge of the picture: a call (caller → callee) or an event subscription
/// (publisher → subscriber, one per topic).
#[derive(Debug, Clone, Serialize)]
struct Edge {
    kind: &'static str,
    from: String,
    to: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    topic: Option<String>,
    /// Calls: `local` or `remote` as the calls went over the window (as placed, without
    /// traffic), `mixed` when both were seen.
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<String>,
    red: Red,
    #[serde(skip_serializing_if = "Option::is_none")]
    dead_lettered: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    lag: Option<u64>,
}

/// The overview of the whole deployment from every node's part (`Err`: the node could
/// not be asked, and why), as `GET /v1/overview` answers.
pub fn merge(
    deployment: &Deployment,
    asked: &str,
    parts: Vec<(String, Result<NodePart, String>)>,
) -> serde_json::Value {
    // Declared edges first, so that every one shows, traffic or not.
    let mut calls: BTreeMap<(String, String), Edge> = BTreeMap::new();
    let mut events: BTreeMap<(String, String, String), Edge> = BTreeMap::new();
    for (name, module) in &deployment.modules {
        for callee in &module.calls {
            calls.insert(
                (name.clone(), callee.clone()),
                Edge {
                    kind: "call",
                    from: name.clone(),
                    to: callee.clone(),
                    topic: None,
                    path: Some(declared_path(deployment, name, callee).to_string()),
                    red: Red::default(),
                    dead_lettered: None,
                    lag: None,
                },
            );
        }
        for topic in &module.subscribes {
            for (publisher, spec) in &deployment.modules {
                if spec.publishes.contains(topic) {
                    events.insert(
                        (publisher.clone(), name.clone(), topic.clone()),
                        Edge {
                            kind: "event",
                            from: publisher.clone(),
                            to: name.clone(),
                            topic: Some(topic.clone()),
                            path: None,
                            red: Red::default(),
                            dead_lettered: Some(0),
                            lag: Some(0),
                        },
                    );
                }
            }
        }
    }
    let mut routes: BTreeMap<String, Red> = BTreeMap::new();
    // The paths calls along each edge took over the window, where there was traffic.
    let mut traffic: BTreeMap<(String, String), std::collections::BTreeSet<String>> =
        BTreeMap::new();
    let mut nodes = Vec::new();
    let mut outboxes = Vec::new();
    let mut notable: Vec<Notable> = Vec::new();
    for (node, part) in parts {
        let part = match part {
            Ok(part) => part,
            Err(why) => {
                nodes.push(serde_json::json!({ "name": node, "error": why, "modules": [] }));
                continue;
            }
        };
        let seen = part.overview;
        for (route, red) in &seen.routes {
            routes.entry(route.clone()).or_default().merge(red);
        }
        for edge in &seen.edges {
            let key = (edge.caller.clone(), edge.callee.clone());
            let entry = calls.entry(key).or_insert_with(|| Edge {
                kind: "call",
                from: edge.caller.clone(),
                to: edge.callee.clone(),
                topic: None,
                path: Some(edge.path.clone()),
                red: Red::default(),
                dead_lettered: None,
                lag: None,
            });
            if edge.red.rate > 0.0 {
                traffic
                    .entry((edge.caller.clone(), edge.callee.clone()))
                    .or_default()
                    .insert(edge.path.clone());
            }
            entry.red.merge(&edge.red);
        }
        for subscription in &seen.subscriptions {
            for ((_, subscriber, topic), edge) in events.iter_mut() {
                if *subscriber == subscription.module && *topic == subscription.topic {
                    edge.red.merge(&subscription.red);
                    edge.dead_lettered =
                        Some(edge.dead_lettered.unwrap_or(0) + subscription.dead_lettered);
                    edge.lag = Some(edge.lag.unwrap_or(0) + subscription.lag);
                }
            }
        }
        for (module, outbox) in &seen.outboxes {
            outboxes.push(serde_json::json!({
                "node": node, "module": module, "depth": outbox.depth, "lag_seconds": outbox.lag_seconds,
            }));
        }
        notable.extend(seen.notable.into_iter().map(|request| Notable {
            node: node.clone(),
            ..request
        }));
        let modules: Vec<serde_json::Value> = part
            .modules
            .into_iter()
            .map(|(name, mut state)| {
                let red = seen.modules.get(&name).cloned().unwrap_or_default();
                if let Some(state) = state.as_object_mut() {
                    state.insert("name".into(), name.into());
                    state.insert("red".into(), serde_json::to_value(red).unwrap_or_default());
                }
                state
            })
            .collect();
        nodes.push(serde_json::json!({ "name": node, "modules": modules }));
    }
    for (key, paths) in traffic {
        if let Some(edge) = calls.get_mut(&key) {
            edge.path = Some(match paths.len() {
                1 => paths.into_iter().next().unwrap_or_default(),
                _ => "mixed".to_string(),
            });
        }
    }
    notable.sort_by_key(|request| std::cmp::Reverse(request.at_ms));
    notable.truncate(overview::NOTABLE);
    let route_owner = |route: &str| {
        deployment
            .modules
            .values()
            .find(|module| module.routes.iter().any(|r| r == route))
            .map(|module| module.name.clone())
    };
    let routes: Vec<serde_json::Value> = routes
        .into_iter()
        .map(|(route, red)| serde_json::json!({ "module": route_owner(&route), "route": route, "red": red }))
        .collect();
    let edges: Vec<Edge> = calls.into_values().chain(events.into_values()).collect();
    serde_json::json!({
        "app": deployment.app_name,
        "asked": asked,
        "window_seconds": WINDOW,
        "history_seconds": HISTORY,
        "trace_url": deployment.telemetry.trace_url,
        "nodes": nodes,
        "routes": routes,
        "edges": edges,
        "outboxes": outboxes,
        "notable": notable,
    })
}

/// Whether calls from `caller` to `callee` stay in-process (they share a node, or
/// the deployment is a single node) or cross the mesh, as placed.
fn declared_path(deployment: &Deployment, caller: &str, callee: &str) -> &'static str {
    let on = |module: &str| {
        deployment
            .placement
            .get(module)
            .cloned()
            .unwrap_or_default()
    };
    let (callers, callees) = (on(caller), on(callee));
    if deployment.nodes.is_empty() || callers.iter().any(|node| callees.contains(node)) {
        "local"
    } else {
        "remote"
    }
}
