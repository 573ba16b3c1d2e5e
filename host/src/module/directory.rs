//! The directory: what is served where, one snapshot for the whole node.
//!
//! It answers, for every module of the deployment: does it run on this node (its
//! [`ModuleSlot`]), or on which other nodes, within which timeout? Which module exports
//! an interface? Which component does each module serve now — the version every
//! contract check must be made against?
//!
//! The registry owns it and republishes it whole, atomically, whenever something in it
//! changes (a swap here, a new version adopted from another node); the dispatcher, the
//! gateway, the mesh server and the swapper read it. A reader takes one snapshot per
//! call or request and sees one consistent state.

use arc_swap::ArcSwap;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use wasmtime::component::Component;

use super::slot::ModuleSlot;

/// Where every module is served, as of one moment.
#[derive(Clone, Default)]
pub struct Placement {
    /// The modules running on this node.
    pub local: BTreeMap<String, Arc<ModuleSlot>>,
    /// The modules running only on other nodes.
    pub remote: BTreeMap<String, Arc<RemoteModule>>,
    /// Which module exports each interface, by unversioned name (`shop:inventory/api`).
    pub exporters: BTreeMap<String, String>,
    /// The component every module serves now, by module: local modules' serving
    /// versions, and the last versions adopted from the nodes running the others.
    pub components: BTreeMap<String, Component>,
    /// The digest of each of those components (hex SHA-256): which version it is.
    pub digests: BTreeMap<String, String>,
    /// The nodes each module is placed on, as this node applies `[placement]` now
    /// (empty on a single node): whom a call from a peer may come from, where a swap
    /// is made. A reload changes it ([`super::placing`]).
    pub placed: BTreeMap<String, Vec<String>>,
}

/// A module placed on other nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteModule {
    /// The nodes that run it.
    pub nodes: Vec<String>,
    /// Its `limits.timeout`: how long a call into it may take.
    pub timeout: Duration,
}

/// Where a module is served.
pub enum Route {
    /// On this node.
    Local(Arc<ModuleSlot>),
    /// On other nodes.
    Remote(Arc<RemoteModule>),
}

/// The node's directory.
pub struct Directory {
    now: ArcSwap<Placement>,
}

impl Directory {
    /// A directory publishing `placement`.
    pub fn new(placement: Placement) -> Directory {
        Directory {
            now: ArcSwap::from_pointee(placement),
        }
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<Placement> {
        self.now.load_full()
    }

    /// Replaces the snapshot with what `change` makes of a copy of it.
    pub fn republish(&self, change: impl Fn(&mut Placement)) {
        self.now.rcu(|current| {
            let mut next = Placement::clone(current);
            change(&mut next);
            next
        });
    }

    /// Module `name`'s versions, if it runs on this node.
    pub fn local(&self, name: &str) -> Option<Arc<ModuleSlot>> {
        self.now.load().local.get(name).cloned()
    }

    /// Where module `name` is served, if it is deployed.
    pub fn route(&self, name: &str) -> Option<Route> {
        let now = self.now.load();
        if let Some(slot) = now.local.get(name) {
            return Some(Route::Local(slot.clone()));
        }
        now.remote.get(name).cloned().map(Route::Remote)
    }

    /// The placement of module `name`, if it runs on other nodes only.
    pub fn remote(&self, name: &str) -> Option<Arc<RemoteModule>> {
        let now = self.now.load();
        if now.local.contains_key(name) {
            return None;
        }
        now.remote.get(name).cloned()
    }

    /// The nodes module `name` is placed on (none on a single node).
    pub fn nodes_of(&self, name: &str) -> Vec<String> {
        self.now
            .load()
            .placed
            .get(name)
            .cloned()
            .unwrap_or_default()
    }

    /// The module exporting `interface` (unversioned), if any does.
    pub fn exporter(&self, interface: &str) -> Option<String> {
        self.now.load().exporters.get(interface).cloned()
    }

    /// Every module's serving component.
    pub fn components(&self) -> BTreeMap<String, Component> {
        self.now.load().components.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::module::{placing, Registry};

    /// Node `a` of a deployment where `seller` (exporting `test:shop/api`) runs on `a`
    /// and `buyer` on `b`.
    fn node_a(dir: &std::path::Path) -> (Registry, Arc<Directory>) {
        let placement = "seller = [\"a\"]\nbuyer = [\"b\"]";
        placing::tests::load(&placing::tests::deployment(dir, placement, ""))
    }

    #[test]
    fn it_routes_local_modules_here_and_the_others_to_their_nodes() {
        let dir = tempfile::tempdir().unwrap();
        let (_registry, directory) = node_a(dir.path());
        assert!(
            matches!(directory.route("seller"), Some(Route::Local(slot)) if slot.name == "seller")
        );
        match directory.route("buyer") {
            Some(Route::Remote(placed)) => {
                assert_eq!(placed.nodes, ["b"]);
                assert_eq!(placed.timeout, Duration::from_millis(750));
            }
            _ => panic!("buyer is not routed to node b"),
        }
        assert!(directory.route("nobody").is_none());
        assert!(directory.local("buyer").is_none() && directory.remote("seller").is_none());
        assert_eq!(
            directory.exporter("test:shop/api").as_deref(),
            Some("seller")
        );
        // Every module's component is known, wherever it runs: contracts are checked
        // across the whole deployment.
        assert_eq!(
            directory.components().keys().collect::<Vec<_>>(),
            ["buyer", "seller"]
        );
    }

    #[test]
    fn a_republished_directory_is_seen_whole_by_new_readers_only() {
        let dir = tempfile::tempdir().unwrap();
        let (_registry, directory) = node_a(dir.path());
        let before = directory.snapshot();
        let seller = before.components["seller"].clone();
        directory.republish(|placement| {
            placement.components.insert("buyer".into(), seller.clone());
            placement.exporters.clear();
        });
        // A reader holding the old snapshot keeps it, consistent; new readers see the
        // new one.
        assert_eq!(before.exporters.len(), 1);
        assert!(directory.exporter("test:shop/api").is_none());
        assert_eq!(directory.snapshot().components.len(), 2);
    }
}
