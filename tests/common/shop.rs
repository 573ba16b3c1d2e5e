//! The example shop as a test runs it: on one node, or split over three nodes (separate
//! processes, mutual TLS, events over a Kafka-protocol broker) — one suite of tests
//! runs unchanged against either, through the entry node's gateway.
//!
//! The split places `users`, `catalog`, `orders` and `notifications` on node `a` (the
//! entry), `inventory` and `payments` on `b`, and `fraud` (the Python module) alone on
//! `c`: orders' calls cross the mesh, and so does fraud's call back to `users`; routes
//! of `b` and `c` are forwarded from `a`, and `payments`' events travel from `b` to `a`
//! and `c` through the broker. The split's deployment file extends the one-node file
//! (`extends`), as `config/three-node.toml` extends `config/single-node.toml`.

use super::cluster::Cluster;
use super::kafka::Broker;
use super::{Modhost, TestDeployment, SHOP};

/// The shop, running.
pub enum Shop {
    /// Every module in one process.
    One {
        host: Modhost,
        _deployment: TestDeployment,
    },
    /// Three nodes and a broker.
    Split { cluster: Cluster, _broker: Broker },
}

/// Where the split shop's modules run.
pub const PLACEMENT: &[(&str, &[&str])] = &[
    ("users", &["a"]),
    ("catalog", &["a"]),
    ("orders", &["a"]),
    ("notifications", &["a"]),
    ("inventory", &["b"]),
    ("payments", &["b"]),
    ("fraud", &["c"]),
];

impl Shop {
    /// The shop on one node.
    pub fn one() -> Shop {
        let deployment = TestDeployment::new(SHOP);
        Shop::One {
            host: Modhost::start(&deployment),
            _deployment: deployment,
        }
    }

    /// The shop over three nodes, or `None` (after saying why) when no broker is
    /// installed and this is not CI.
    pub fn split() -> Option<Shop> {
        let broker = Broker::start()?;
        // Split as a user splits it: the one-node file, extended by the nodes, the
        // placement and a broker. The overlay's [events] replaces SHOP's whole.
        let overlay = format!(
            "extends = \"base.toml\"\n\n[events]\nbackend = \"kafka\"\nbrokers = \"{}\"\n\
             partitions = 3\nbackoff = \"50ms\"\nmax_backoff = \"500ms\"\n",
            broker.address()
        );
        let cluster = Cluster::start_extending(SHOP, &overlay, &["a", "b", "c"], PLACEMENT);
        Some(Shop::Split {
            cluster,
            _broker: broker,
        })
    }

    /// The node clients talk to.
    pub fn entry(&self) -> &Modhost {
        match self {
            Shop::One { host, .. } => host,
            Shop::Split { cluster, .. } => cluster.node("a"),
        }
    }

    /// `http://ENTRY` + `path`.
    pub fn url(&self, path: &str) -> String {
        self.entry().url(path)
    }

    /// Every node's log lines.
    pub fn logs(&self) -> Vec<String> {
        match self {
            Shop::One { host, .. } => host.logs(),
            Shop::Split { cluster, .. } => cluster.logs(),
        }
    }
}
