//! The two-phase rollout of a new module version across the nodes that run it.
//!
//! First every node **stages** the version — compiles, contract-checks, links and
//! migrates it without serving it. Only when every one of them has staged it is it
//! **committed** on each. A refusal anywhere **unstages** it everywhere it was staged,
//! and the version serving before keeps serving on all of them: a rollout never leaves
//! some nodes on the new version because another refused it.
//!
//! The coordinator knows the nodes only through [`Nodes`]: the admin API implements it
//! with this node's swapper and, for the others, the mesh.

use std::time::Instant;

use super::NodeFailed;
use crate::runtime::BoxFuture;

/// The nodes a rollout acts on, and what each can do with the staged version.
pub trait Nodes: Sync {
    /// Stages the version on `node`; its version, or why the node refused.
    fn stage<'a>(&'a self, node: &'a str) -> BoxFuture<'a, Result<String, NodeFailed>>;
    /// Drops the version staged on `node` (another node refused its own).
    fn unstage<'a>(&'a self, node: &'a str) -> BoxFuture<'a, ()>;
    /// Switches `node` to the staged version; the version it serves (or its canary),
    /// or why it could not.
    fn commit<'a>(&'a self, node: &'a str) -> BoxFuture<'a, Result<String, NodeFailed>>;
}

/// How a rollout ended on one node.
#[derive(Debug)]
pub enum NodeOutcome {
    /// The version serves there (or is its canary).
    Committed {
        /// The version.
        version: String,
        /// Time to stage it, as seen from the coordinator (for a remote node it
        /// includes the upload).
        staged_ms: f64,
        /// Time to commit it, as seen from the coordinator (the switch, then durably
        /// recording the version; for a remote node, the round trip too).
        committed_us: f64,
    },
    /// The node staged it but its commit failed.
    Failed(NodeFailed),
}

/// Rolls the staged version out on every node in `on`: all commit, or — if any
/// refuses to stage — none does, and the refusals are returned by node.
pub async fn roll_out(
    nodes: &dyn Nodes,
    on: &[String],
) -> Result<Vec<(String, NodeOutcome)>, Vec<(String, NodeFailed)>> {
    let mut staged = Vec::new();
    let mut refusals = Vec::new();
    for node in on {
        let started = Instant::now();
        match nodes.stage(node).await {
            Ok(version) => staged.push((node, version, started.elapsed().as_secs_f64() * 1000.0)),
            Err(why) => refusals.push((node.clone(), why)),
        }
    }
    if !refusals.is_empty() {
        for (node, _, _) in staged {
            nodes.unstage(node).await;
        }
        return Err(refusals);
    }
    let mut done = Vec::new();
    for (node, version, staged_ms) in staged {
        let started = Instant::now();
        let outcome = match nodes.commit(node).await {
            Ok(_) => NodeOutcome::Committed {
                version,
                staged_ms,
                committed_us: started.elapsed().as_secs_f64() * 1e6,
            },
            Err(why) => NodeOutcome::Failed(why),
        };
        done.push((node.clone(), outcome));
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Nodes that refuse to stage when told to, and write down what was asked of them.
    struct Recording {
        refuse: Vec<&'static str>,
        failing_commit: Vec<&'static str>,
        log: Mutex<Vec<String>>,
    }

    impl Recording {
        fn new(refuse: &[&'static str], failing_commit: &[&'static str]) -> Recording {
            Recording {
                refuse: refuse.to_vec(),
                failing_commit: failing_commit.to_vec(),
                log: Mutex::new(Vec::new()),
            }
        }

        fn log(&self) -> Vec<String> {
            self.log.lock().unwrap().clone()
        }
    }

    impl Nodes for Recording {
        fn stage<'a>(&'a self, node: &'a str) -> BoxFuture<'a, Result<String, NodeFailed>> {
            Box::pin(async move {
                self.log.lock().unwrap().push(format!("stage {node}"));
                if self.refuse.contains(&node) {
                    Err(NodeFailed::There(format!("{node} says no")))
                } else {
                    Ok("v2".to_string())
                }
            })
        }

        fn unstage<'a>(&'a self, node: &'a str) -> BoxFuture<'a, ()> {
            Box::pin(async move { self.log.lock().unwrap().push(format!("unstage {node}")) })
        }

        fn commit<'a>(&'a self, node: &'a str) -> BoxFuture<'a, Result<String, NodeFailed>> {
            Box::pin(async move {
                self.log.lock().unwrap().push(format!("commit {node}"));
                if self.failing_commit.contains(&node) {
                    Err(NodeFailed::There("disk full".into()))
                } else {
                    Ok("v2".into())
                }
            })
        }
    }

    fn on(nodes: &[&str]) -> Vec<String> {
        nodes.iter().map(|n| n.to_string()).collect()
    }

    #[tokio::test]
    async fn every_node_stages_before_any_commits() {
        let nodes = Recording::new(&[], &[]);
        let done = roll_out(&nodes, &on(&["a", "b", "c"])).await.unwrap();
        assert_eq!(
            nodes.log(),
            ["stage a", "stage b", "stage c", "commit a", "commit b", "commit c"]
        );
        assert!(done
            .iter()
            .all(|(_, outcome)| matches!(outcome, NodeOutcome::Committed { version, .. } if version == "v2")));
    }

    #[tokio::test]
    async fn one_refusal_unstages_everywhere_and_nothing_commits() {
        let nodes = Recording::new(&["b"], &[]);
        let refused = roll_out(&nodes, &on(&["a", "b", "c"])).await.unwrap_err();
        let refused: Vec<(String, String)> = refused
            .into_iter()
            .map(|(node, why)| (node, why.to_string()))
            .collect();
        assert_eq!(refused, vec![("b".to_string(), "b says no".to_string())]);
        assert_eq!(
            nodes.log(),
            ["stage a", "stage b", "stage c", "unstage a", "unstage c"]
        );
    }

    #[tokio::test]
    async fn a_failed_commit_is_reported_for_its_node_only() {
        let nodes = Recording::new(&[], &["b"]);
        let done = roll_out(&nodes, &on(&["a", "b"])).await.unwrap();
        assert!(matches!(done[0].1, NodeOutcome::Committed { .. }));
        assert!(
            matches!(&done[1], (node, NodeOutcome::Failed(why)) if node == "b" && why.to_string() == "disk full"),
            "{done:?}"
        );
    }
}
