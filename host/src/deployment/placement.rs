//! `[nodes]`, `[placement]` and `[mesh]`: which processes make up the deployment,
//! which modules each runs, and how nodes prove who they are to each other.
//!
//! Without `[nodes]` a deployment is one node that runs every module (the modular
//! monolith). With it, every node reads the same file and is started with
//! `--node NAME`; modules placed elsewhere are reached over the mesh — the same call
//! sites, the same routes, by configuration alone.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{DatabaseBackend, EventsBackend, ModuleSpec, Problems, Timeout};

/// One node of a split deployment: `[nodes.NAME]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSpec {
    /// The node's name: also the name its mesh certificate must carry.
    pub name: String,
    /// Where its gateway listens for HTTP.
    pub listen: NodeAddress,
    /// Where its mesh listens for other nodes (mutual TLS, HTTP/2).
    pub mesh: NodeAddress,
    /// Where its admin listener is, if it has one (`[admin]` gives the token).
    pub admin: Option<NodeAddress>,
}

/// Where a node is reached: an IP address and port, or a DNS name and port — a
/// Kubernetes Service, say, whose address the node cannot know or bind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeAddress {
    /// `10.0.0.5:7001`: the node binds it, others connect to it.
    Ip(SocketAddr),
    /// `shop-b.shop-mesh:7001`: others resolve the name each time they connect (a
    /// restarted pod's new address is found); the node itself listens on every
    /// interface at the port (on loopback for `localhost`).
    Name {
        /// The DNS name, lower-cased.
        host: String,
        /// The port.
        port: u16,
    },
}

impl NodeAddress {
    /// The port.
    pub fn port(&self) -> u16 {
        match self {
            NodeAddress::Ip(addr) => addr.port(),
            NodeAddress::Name { port, .. } => *port,
        }
    }

    /// What the node binds for this address: the address itself; for `localhost`, the
    /// loopback address; for any other name, every interface at its port.
    pub fn bind(&self) -> SocketAddr {
        match self {
            NodeAddress::Ip(addr) => *addr,
            NodeAddress::Name { host, port } if host == "localhost" => {
                SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, *port))
            }
            NodeAddress::Name { port, .. } => {
                SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, *port))
            }
        }
    }

    /// The DNS name, when the address is one.
    pub fn name(&self) -> Option<&str> {
        match self {
            NodeAddress::Ip(_) => None,
            NodeAddress::Name { host, .. } => Some(host),
        }
    }

    /// Reads `host:port`: an IP address (`[v6]:port` too), or a DNS name of letters,
    /// digits, `-` and `.`.
    pub fn parse(written: &str) -> Result<NodeAddress, String> {
        if let Ok(addr) = written.parse::<SocketAddr>() {
            return Ok(NodeAddress::Ip(addr));
        }
        let problem = || format!("{written:?} is not host:port (an IP address or a DNS name)");
        let (host, port) = written.rsplit_once(':').ok_or_else(problem)?;
        let port = port.parse::<u16>().map_err(|_| problem())?;
        let is_label = |label: &str| {
            (1..=63).contains(&label.len())
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        };
        // A name whose last label is all digits is an address mistyped (`127.1`,
        // `10.0.0.256`): taken as a name it would bind every interface.
        let numeric = host
            .rsplit('.')
            .next()
            .is_some_and(|last| last.chars().all(|c| c.is_ascii_digit()));
        if host.len() > 253 || !host.split('.').all(is_label) || numeric {
            return Err(problem());
        }
        Ok(NodeAddress::Name {
            host: host.to_ascii_lowercase(),
            port,
        })
    }
}

impl std::fmt::Display for NodeAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NodeAddress::Ip(addr) => write!(f, "{addr}"),
            NodeAddress::Name { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

impl<'de> Deserialize<'de> for NodeAddress {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let written = String::deserialize(deserializer)?;
        NodeAddress::parse(&written).map_err(serde::de::Error::custom)
    }
}

/// `[mesh]`: the nodes' identities and how calls between nodes fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshSettings {
    /// The deployment's CA certificate (PEM): peers must present a certificate it signed.
    pub ca: PathBuf,
    /// Each node's certificate chain (PEM); `{node}` stands for the node's name.
    pub cert: String,
    /// Each node's private key (PEM); `{node}` stands for the node's name.
    pub key: String,
    /// How long connecting to a peer (TCP and TLS) may take.
    pub connect_timeout: Duration,
    /// Consecutive failed calls to a peer that open its circuit breaker.
    pub breaker_failures: u32,
    /// How long an open breaker fails calls at once before letting one probe through.
    pub breaker_open_for: Duration,
}

impl MeshSettings {
    /// The certificate file of node `node`.
    pub fn cert_of(&self, node: &str) -> PathBuf {
        PathBuf::from(self.cert.replace("{node}", node))
    }

    /// The private key file of node `node`.
    pub fn key_of(&self, node: &str) -> PathBuf {
        PathBuf::from(self.key.replace("{node}", node))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NodeSection {
    listen: NodeAddress,
    mesh: NodeAddress,
    admin: Option<NodeAddress>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct MeshSection {
    ca: String,
    cert: String,
    key: String,
    connect_timeout: Option<Timeout>,
    breaker: Option<BreakerSection>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BreakerSection {
    consecutive_failures: Option<u32>,
    open_for: Option<Timeout>,
}

/// The validated `[nodes]`, `[placement]` and `[mesh]`.
pub(super) struct Topology {
    pub nodes: BTreeMap<String, NodeSpec>,
    pub placement: BTreeMap<String, Vec<String>>,
    pub mesh: Option<MeshSettings>,
}

/// Validates the three sections against the modules (already parsed) and `[events]`.
pub(super) fn topology(
    base: &Path,
    nodes: BTreeMap<String, NodeSection>,
    placement: BTreeMap<String, Vec<String>>,
    mesh: Option<MeshSection>,
    modules: &BTreeMap<String, ModuleSpec>,
    events: &EventsBackend,
    problems: &mut Problems,
) -> Topology {
    let mut specs = BTreeMap::new();
    for (name, section) in nodes {
        let key = format!("nodes.{name}");
        if !is_valid_node_name(&name) {
            problems.add(
                &key,
                "a node name is 1-63 lower-case letters, digits or '-', starting with a letter \
                 (it is the DNS name in the node's certificate)",
            );
        }
        let admin = section.admin.as_ref().map(|addr| ("admin", addr));
        for (field, addr) in [("listen", &section.listen), ("mesh", &section.mesh)]
            .into_iter()
            .chain(admin)
        {
            // Two listeners on one address: `addresses::conflicts`, for every listener.
            if addr.port() == 0 {
                problems.add(
                    &format!("{key}.{field}"),
                    "needs a port other nodes can reach",
                );
            }
        }
        specs.insert(
            name.clone(),
            NodeSpec {
                name,
                listen: section.listen,
                mesh: section.mesh,
                admin: section.admin,
            },
        );
    }

    // Nodes know each other by the name in their certificates, and `modhost certs`
    // writes a node's address names into its certificate too: an address named like
    // another node would let this one pass for it.
    for spec in specs.values() {
        let addresses = [
            ("listen", Some(&spec.listen)),
            ("mesh", Some(&spec.mesh)),
            ("admin", spec.admin.as_ref()),
        ];
        for (field, address) in addresses {
            let Some(host) = address.and_then(NodeAddress::name) else {
                continue;
            };
            if host != spec.name && specs.contains_key(host) {
                problems.add(
                    &format!("nodes.{}.{field}", spec.name),
                    &format!(
                        "`{host}` is node {host}'s name: node {} reached by it would carry it in its \
                         certificate and could pass for node {host}",
                        spec.name
                    ),
                );
            }
        }
    }

    if specs.is_empty() {
        if !placement.is_empty() {
            problems.add(
                "placement",
                "needs [nodes.NAME] sections to place modules on",
            );
        }
        if mesh.is_some() {
            problems.add(
                "mesh",
                "needs [nodes.NAME] sections (a single node has no mesh)",
            );
        }
        return Topology {
            nodes: specs,
            placement: BTreeMap::new(),
            mesh: None,
        };
    }

    for (module, on) in &placement {
        let key = format!("placement.{module}");
        if !modules.contains_key(module) {
            problems.add(&key, &format!("no module `{module}` is deployed"));
        }
        if on.is_empty() {
            problems.add(&key, "names no node");
        }
        for (i, node) in on.iter().enumerate() {
            if !specs.contains_key(node) {
                problems.add(
                    &format!("{key}[{i}]"),
                    &format!("no node `{node}` in [nodes]"),
                );
            } else if on[..i].contains(node) {
                problems.add(&format!("{key}[{i}]"), &format!("`{node}` is listed twice"));
            }
        }
    }
    for module in modules.values() {
        let on = placement.get(&module.name).map_or(&[][..], Vec::as_slice);
        if on.is_empty() {
            problems.add(
                &format!("placement.{}", module.name),
                &format!(
                    "module `{}` is not placed on any node: add `{} = [\"NODE\"]` under [placement]",
                    module.name, module.name
                ),
            );
        }
        if on.len() > 1
            && module
                .database
                .as_ref()
                .is_some_and(|db| db.backend == DatabaseBackend::Sqlite)
        {
            problems.add(
                &format!("placement.{}", module.name),
                "a module with a SQLite database runs on one node (each node would keep its \
                 own file); give it a postgres database to run it on several",
            );
        }
    }

    let multi_node = specs.len() > 1;
    let uses_events = modules
        .values()
        .any(|m| !m.publishes.is_empty() || !m.subscribes.is_empty());
    if multi_node && uses_events && *events == EventsBackend::Embedded {
        problems.add(
            "events.backend",
            "events between nodes need backend = \"kafka\": the embedded bus lives in one node",
        );
    }

    let mesh = match mesh {
        Some(section) => Some(mesh_settings(base, section, &specs, problems)),
        None if multi_node => {
            problems.add(
                "mesh",
                "a deployment of several nodes needs [mesh] with ca, cert and key \
                 (`modhost certs FILE` makes a development set)",
            );
            None
        }
        None => None,
    };
    Topology {
        nodes: specs,
        placement,
        mesh,
    }
}

fn mesh_settings(
    base: &Path,
    section: MeshSection,
    nodes: &BTreeMap<String, NodeSpec>,
    problems: &mut Problems,
) -> MeshSettings {
    let resolve = |written: &str| base.join(written).display().to_string();
    let breaker = section.breaker.unwrap_or(BreakerSection {
        consecutive_failures: None,
        open_for: None,
    });
    let settings = MeshSettings {
        ca: base.join(&section.ca),
        cert: resolve(&section.cert),
        key: resolve(&section.key),
        connect_timeout: section
            .connect_timeout
            .map_or(Duration::from_secs(1), Timeout::duration),
        breaker_failures: breaker.consecutive_failures.unwrap_or(5),
        breaker_open_for: breaker
            .open_for
            .map_or(Duration::from_secs(10), Timeout::duration),
    };
    if settings.connect_timeout.is_zero() {
        problems.add("mesh.connect_timeout", "must be longer than 0s");
    }
    if settings.breaker_failures == 0 {
        problems.add("mesh.breaker.consecutive_failures", "must be at least 1");
    }
    if settings.breaker_open_for.is_zero() {
        problems.add("mesh.breaker.open_for", "must be longer than 0s");
    }
    if nodes.len() > 1 {
        for (key, written) in [("mesh.cert", &section.cert), ("mesh.key", &section.key)] {
            if !written.contains("{node}") {
                problems.add(
                    key,
                    "must contain {node}, which stands for each node's name (every node has its own)",
                );
            }
        }
    }
    settings
}

fn is_valid_node_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 63
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-')
}
