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
/// not be asked, and why), as `GET /v1/overview` answers; `placed` is where each
/// module is placed now (the directory's, which a reload changes).
pub fn merge(
    deployment: &Deployment,
    placed: &BTreeMap<String, Vec<String>>,
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
                    path: Some(declared_path(deployment, placed, name, callee).to_string()),
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
    // A module only called (no HTTP of its own) has its duration where its callers
    // measured it: the slowest p99 of the calls into it, over every node.
    let mut called: BTreeMap<&str, Option<f64>> = BTreeMap::new();
    for edge in calls.values() {
        let slowest = called.entry(edge.to.as_str()).or_default();
        *slowest = overview::slower(*slowest, edge.red.p99_ms);
    }
    for node in &mut nodes {
        let Some(modules) = node["modules"].as_array_mut() else {
            continue;
        };
        for module in modules {
            let name = module["name"].as_str().unwrap_or_default().to_string();
            if module["red"]["p99_ms"].is_null() {
                if let Some(Some(p99)) = called.get(name.as_str()) {
                    module["red"]["p99_ms"] = (*p99).into();
                }
            }
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
fn declared_path(
    deployment: &Deployment,
    placed: &BTreeMap<String, Vec<String>>,
    caller: &str,
    callee: &str,
) -> &'static str {
    let on = |module: &str| placed.get(module).cloned().unwrap_or_default();
    let (callers, callees) = (on(caller), on(callee));
    if deployment.nodes.is_empty() || callers.iter().any(|node| callees.contains(node)) {
        "local"
    } else {
        "remote"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::overview::{EdgeOverview, SubscriptionOverview};

    fn deployment() -> Deployment {
        let dir = tempfile::tempdir().unwrap();
        for name in ["orders", "inventory", "payments"] {
            std::fs::write(dir.path().join(format!("{name}.wasm")), b"\0asm").unwrap();
        }
        let text = r#"
[app]
name = "shop"
[modules.orders]
component = "orders.wasm"
routes = ["/orders"]
calls = ["inventory", "payments"]
subscribes = ["payments.charged"]
database = "sqlite"
[modules.inventory]
component = "inventory.wasm"
[modules.payments]
component = "payments.wasm"
publishes = ["payments.charged"]
database = "sqlite"
[events]
backend = "kafka"
brokers = "127.0.0.1:9092"
[nodes.a]
listen = "127.0.0.1:8080"
mesh = "127.0.0.1:7000"
[nodes.b]
listen = "127.0.0.1:8081"
mesh = "127.0.0.1:7001"
[placement]
orders = ["a"]
inventory = ["a"]
payments = ["b"]
[mesh]
ca = "ca.pem"
cert = "{node}.pem"
key = "{node}.key"
"#;
        Deployment::parse(&dir.path().join("deploy.toml"), text).unwrap()
    }

    fn red(rate: f64, p99: Option<f64>) -> Red {
        Red {
            rate,
            p99_ms: p99,
            rate_series: vec![rate],
            ..Red::default()
        }
    }

    fn part(modules: &[&str], overview: NodeOverview) -> NodePart {
        NodePart {
            overview,
            modules: modules
                .iter()
                .map(|m| (m.to_string(), serde_json::json!({ "status": "serving" })))
                .collect(),
        }
    }

    #[test]
    fn every_declared_edge_shows_and_nodes_merge_into_one_picture() {
        let deployment = deployment();
        let a = NodeOverview {
            routes: [("/orders".to_string(), red(4.0, Some(12.0)))].into(),
            edges: vec![EdgeOverview {
                caller: "orders".into(),
                callee: "payments".into(),
                path: "remote".into(),
                red: red(4.0, Some(9.0)),
            }],
            subscriptions: vec![SubscriptionOverview {
                module: "orders".into(),
                topic: "payments.charged".into(),
                red: red(4.0, None),
                dead_lettered: 2,
                lag: 5,
            }],
            ..NodeOverview::default()
        };
        let parts = vec![
            ("a".to_string(), Ok(part(&["orders", "inventory"], a))),
            ("b".to_string(), Err("did not answer within 2s".to_string())),
        ];
        let merged = merge(&deployment, &deployment.placement, "a", parts);
        let edges = merged["edges"].as_array().unwrap();
        let edge = |from: &str, to: &str| {
            edges
                .iter()
                .find(|e| e["from"] == from && e["to"] == to)
                .unwrap_or_else(|| panic!("no {from}->{to} in {edges:#?}"))
        };
        // Declared, with no traffic: as placed (inventory shares orders' node).
        assert_eq!(edge("orders", "inventory")["path"], "local");
        assert_eq!(edge("orders", "inventory")["red"]["rate"], 0.0);
        assert_eq!(edge("orders", "payments")["path"], "remote");
        assert_eq!(edge("orders", "payments")["red"]["rate"], 4.0);
        let event = edge("payments", "orders");
        assert_eq!(
            (event["kind"].as_str(), event["topic"].as_str()),
            (Some("event"), Some("payments.charged"))
        );
        assert_eq!(
            (event["lag"].as_u64(), event["dead_lettered"].as_u64()),
            (Some(5), Some(2))
        );
        // A node that could not be asked is there, with why.
        let b = &merged["nodes"][1];
        assert_eq!(
            (b["name"].as_str(), b["error"].as_str()),
            (Some("b"), Some("did not answer within 2s"))
        );
        assert_eq!(merged["routes"][0]["module"], "orders");
        // payments was only called: no node of its own answered, so no box; the
        // called module on a: inventory had no calls, so no duration either.
        let modules = merged["nodes"][0]["modules"].as_array().unwrap();
        let inventory = modules.iter().find(|m| m["name"] == "inventory").unwrap();
        assert!(inventory["red"]["p99_ms"].is_null());
    }

    #[test]
    fn a_module_only_called_gets_the_duration_its_callers_measured() {
        let deployment = deployment();
        let a = NodeOverview {
            edges: vec![EdgeOverview {
                caller: "orders".into(),
                callee: "payments".into(),
                path: "remote".into(),
                red: red(3.0, Some(7.5)),
            }],
            ..NodeOverview::default()
        };
        let b = NodeOverview {
            modules: [("payments".to_string(), red(3.0, None))].into(),
            ..NodeOverview::default()
        };
        let parts = vec![
            ("a".to_string(), Ok(part(&["orders"], a))),
            ("b".to_string(), Ok(part(&["payments"], b))),
        ];
        let merged = merge(&deployment, &deployment.placement, "a", parts);
        let payments = &merged["nodes"][1]["modules"][0];
        assert_eq!(payments["name"], "payments");
        assert_eq!(payments["red"]["rate"], 3.0);
        assert_eq!(payments["red"]["p99_ms"], 7.5);
    }
}
