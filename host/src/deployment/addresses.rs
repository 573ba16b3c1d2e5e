//! Addresses a deployment cannot have all at once: two of its listeners on one
//! address, or a listener where it says its Kafka broker is. `check` refuses them by
//! key, before a node fails to bind (or connects its event bus to its own admin API).
//! This is the one place listening addresses are compared.
//!
//! Two listeners collide when their ports match and their addresses are the same,
//! whichever nodes they belong to; within one node, a wildcard (`0.0.0.0`) overlaps
//! every address of its port too. Across nodes a wildcard is compared as written only:
//! nodes are separate hosts as far as the file can tell. A node address written as a
//! DNS name is compared by its name across nodes, and within its node as what the node
//! binds for it: every interface at its port. A broker at a loopback address
//! is on the machine of every node that uses it; one elsewhere collides with a listener
//! on its very address.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use super::events::EventsBackend;
use super::placement::{NodeAddress, NodeSpec};

/// One listening address, and the key that gives it.
struct Listener {
    key: String,
    node: Option<String>,
    addr: NodeAddress,
}

/// Every address conflict, as (key, problem).
pub(super) fn conflicts(
    gateway: SocketAddr,
    admin: Option<SocketAddr>,
    nodes: &BTreeMap<String, NodeSpec>,
    events: &EventsBackend,
) -> Vec<(String, String)> {
    let mut listeners = Vec::new();
    if nodes.is_empty() {
        listeners.push(Listener {
            key: "gateway.listen".into(),
            node: None,
            addr: NodeAddress::Ip(gateway),
        });
        if let Some(admin) = admin {
            listeners.push(Listener {
                key: "admin.listen".into(),
                node: None,
                addr: NodeAddress::Ip(admin),
            });
        }
    }
    for (name, node) in nodes {
        let at = |what: &str, addr| Listener {
            key: format!("nodes.{name}.{what}"),
            node: Some(name.clone()),
            addr,
        };
        listeners.push(at("listen", node.listen.clone()));
        listeners.push(at("mesh", node.mesh.clone()));
        if let Some(admin) = &node.admin {
            listeners.push(at("admin", admin.clone()));
        }
    }

    let mut problems = Vec::new();
    for (i, first) in listeners.iter().enumerate() {
        for second in &listeners[i + 1..] {
            if collide(first, second) {
                problems.push((
                    second.key.clone(),
                    format!(
                        "{} is also {} ({}): two listeners cannot share an address",
                        second.addr, first.key, first.addr
                    ),
                ));
            }
        }
    }
    if let EventsBackend::Kafka { brokers, .. } = events {
        for broker in brokers
            .split(',')
            .filter_map(|written| broker_address(written.trim()))
        {
            for listener in &listeners {
                if is_broker(broker, listener.addr.bind()) {
                    problems.push((
                        listener.key.clone(),
                        format!(
                            "{} is where events.brokers says the Kafka broker listens ({broker}): \
                             the node would take the broker's port, or talk to itself",
                            listener.addr
                        ),
                    ));
                }
            }
        }
    }
    problems
}

fn collide(first: &Listener, second: &Listener) -> bool {
    if first.addr.port() != second.addr.port() || first.addr.port() == 0 {
        return false;
    }
    if first.node != second.node {
        // Separate hosts as far as the file can tell: only the same address collides.
        return first.addr == second.addr;
    }
    // One process: what it binds (a DNS name binds every interface at its port).
    let (a, b) = (first.addr.bind(), second.addr.bind());
    a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified()
}

/// A broker's address when the file names one the host can compare: an IP address, or
/// `localhost`; a DNS name (or `$VAR`) is not compared.
fn broker_address(written: &str) -> Option<SocketAddr> {
    if let Ok(addr) = written.parse::<SocketAddr>() {
        return Some(addr);
    }
    let (host, port) = written.rsplit_once(':')?;
    let port = port.parse().ok()?;
    host.eq_ignore_ascii_case("localhost")
        .then(|| SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port))
}

fn is_broker(broker: SocketAddr, listener: SocketAddr) -> bool {
    if broker.port() != listener.port() || broker.port() == 0 {
        return false;
    }
    if broker.ip().is_loopback() {
        listener.ip().is_loopback() || listener.ip().is_unspecified()
    } else {
        listener.ip() == broker.ip()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(listen: &str, mesh: &str, admin: Option<&str>) -> NodeSpec {
        NodeSpec {
            name: String::new(),
            listen: NodeAddress::parse(listen).unwrap(),
            mesh: NodeAddress::parse(mesh).unwrap(),
            admin: admin.map(|a| NodeAddress::parse(a).unwrap()),
        }
    }

    fn kafka(brokers: &str) -> EventsBackend {
        EventsBackend::Kafka {
            brokers: brokers.into(),
            partitions: 1,
            replication: 1,
            security: Default::default(),
        }
    }

    const GATEWAY: &str = "127.0.0.1:8080";

    #[test]
    fn one_node_s_listeners_may_not_share_an_address() {
        let gateway = GATEWAY.parse().unwrap();
        let same = conflicts(
            gateway,
            Some(gateway),
            &BTreeMap::new(),
            &EventsBackend::Embedded,
        );
        assert_eq!(same.len(), 1, "{same:?}");
        assert_eq!(same[0].0, "admin.listen");
        assert!(same[0].1.contains("is also gateway.listen"), "{same:?}");
        let wildcard = conflicts(
            gateway,
            Some("0.0.0.0:8080".parse().unwrap()),
            &BTreeMap::new(),
            &EventsBackend::Embedded,
        );
        assert_eq!(wildcard.len(), 1, "a wildcard overlaps: {wildcard:?}");
        let apart = conflicts(
            gateway,
            Some("127.0.0.1:9090".parse().unwrap()),
            &BTreeMap::new(),
            &EventsBackend::Embedded,
        );
        assert!(apart.is_empty(), "{apart:?}");
    }

    #[test]
    fn nodes_collide_on_the_same_address_and_a_wildcard_only_within_its_node() {
        let gateway = GATEWAY.parse().unwrap();
        let mut nodes = BTreeMap::new();
        nodes.insert("a".to_string(), node("0.0.0.0:8080", "10.0.0.1:7000", None));
        nodes.insert(
            "b".to_string(),
            node("10.0.0.2:8080", "10.0.0.2:7000", None),
        );
        assert!(conflicts(gateway, None, &nodes, &EventsBackend::Embedded).is_empty());
        nodes.insert("c".to_string(), node("0.0.0.0:8080", "10.0.0.2:7000", None));
        let found = conflicts(gateway, None, &nodes, &EventsBackend::Embedded);
        let keys: Vec<&str> = found.iter().map(|(key, _)| key.as_str()).collect();
        assert_eq!(keys, ["nodes.c.listen", "nodes.c.mesh"], "{found:?}");
        assert!(found[0].1.contains("is also nodes.a.listen"), "{found:?}");
        // Port 0 is any free port: never a conflict here (placement wants real ports).
        let mut ephemeral = BTreeMap::new();
        ephemeral.insert(
            "a".to_string(),
            node("127.0.0.1:0", "127.0.0.1:0", Some("127.0.0.1:0")),
        );
        assert!(conflicts(gateway, None, &ephemeral, &EventsBackend::Embedded).is_empty());
    }

    #[test]
    fn a_node_named_by_dns_binds_every_interface_at_its_port() {
        let gateway = GATEWAY.parse().unwrap();
        let mut nodes = BTreeMap::new();
        // Each node its own Service name, the same ports: no conflict.
        nodes.insert(
            "a".to_string(),
            node("shop-a.shop:8080", "shop-a.shop-mesh:7001", None),
        );
        nodes.insert(
            "b".to_string(),
            node("shop-b.shop:8080", "shop-b.shop-mesh:7001", None),
        );
        assert!(conflicts(gateway, None, &nodes, &EventsBackend::Embedded).is_empty());
        // One node's two names on one port: both bind every interface at it.
        nodes.insert(
            "c".to_string(),
            node("shop-c.shop:7001", "SHOP-c.shop-mesh:7001", None),
        );
        let found = conflicts(gateway, None, &nodes, &EventsBackend::Embedded);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].0, "nodes.c.mesh");
        // Two nodes given one name: one Service cannot be both.
        nodes.insert(
            "c".to_string(),
            node("shop-c.shop:8080", "shop-b.shop-mesh:7001", None),
        );
        let found = conflicts(gateway, None, &nodes, &EventsBackend::Embedded);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].1.contains("is also nodes.b.mesh"), "{found:?}");
    }

    #[test]
    fn a_node_address_is_an_ip_or_a_dns_name_with_a_port() {
        assert_eq!(
            NodeAddress::parse("Shop-A.Mesh.svc:7001"),
            Ok(NodeAddress::Name {
                host: "shop-a.mesh.svc".into(),
                port: 7001
            })
        );
        assert_eq!(
            NodeAddress::parse("[::1]:7001").map(|a| a.bind()),
            Ok("[::1]:7001".parse().unwrap())
        );
        assert_eq!(
            NodeAddress::parse("shop-a:7001").map(|a| a.bind()),
            Ok("0.0.0.0:7001".parse().unwrap())
        );
        for bad in [
            "shop-a",
            "shop-a:",
            "shop a:7001",
            "-a:1",
            "a:70000",
            ":7001",
        ] {
            assert!(NodeAddress::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_listener_may_not_take_the_broker_s_address() {
        let gateway = GATEWAY.parse().unwrap();
        let mut nodes = BTreeMap::new();
        nodes.insert(
            "b".to_string(),
            node("127.0.0.1:8081", "127.0.0.1:7002", Some("127.0.0.1:9092")),
        );
        let found = conflicts(gateway, None, &nodes, &kafka("127.0.0.1:9092"));
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].0, "nodes.b.admin");
        assert!(found[0].1.contains("Kafka broker"), "{found:?}");
        assert_eq!(
            conflicts(gateway, None, &nodes, &kafka("localhost:9092")).len(),
            1
        );
        // A broker elsewhere, or named by DNS or the environment, is no conflict.
        for elsewhere in ["10.0.0.9:9092", "kafka.internal:9092", "$BROKERS"] {
            assert!(
                conflicts(gateway, None, &nodes, &kafka(elsewhere)).is_empty(),
                "{elsewhere}"
            );
        }
    }
}
