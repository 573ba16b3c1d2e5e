//! A new placement, applied while the node serves: modules start or stop serving on
//! this node without it, or any other node, restarting.
//!
//! The node reads its deployment file again (on `SIGHUP`, or `modhost reload` through
//! the admin API) and hands it to [`Registry::reload`], which:
//! 1. refuses it unless only `[placement]` changed, and no module with a SQLite file
//!    moved ([`Deployment::reload_problems`]) — nothing changes then;
//! 2. links and opens each module the new placement brings here, with the version the
//!    deployment serves now; if one cannot start (its database is out of reach, say),
//!    nothing changes;
//! 3. republishes the directory in one step: the new modules local, the ones placed
//!    elsewhere routed to their nodes, the new `[placement]` for the mesh's checks;
//! 4. starts the new modules' background work (event relays and consumers), and stops
//!    that of the modules that left; the work they had in flight finishes here, for at
//!    most the gateway's `shutdown_grace`.
//!
//! Each node applies its own part. Moving a module from node `a` to node `b` without a
//! failed request is two steps: place it on both (reload `b`, then `a`), then on `b`
//! alone (reload `a`, then `b`) — the node that takes a module over reloads first, the
//! one that gives it up last (docs/scale-out.md, "Changing the placement").

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::registry::remote_modules;
use super::slot::ModuleSlot;
use super::Registry;
use crate::deployment::{ConfigErrors, Deployment};

/// What a new placement changed on this node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Placed {
    /// The modules that now serve here.
    pub started: Vec<String>,
    /// The modules that no longer serve here.
    pub stopped: Vec<String>,
}

/// Why a new placement was not applied; the node serves as it did.
#[derive(Debug, thiserror::Error)]
pub enum PlaceRefused {
    /// The file does not validate, or changes more than `[placement]`.
    #[error("{0}")]
    Invalid(ConfigErrors),
    /// A module the placement brings here cannot start on this node.
    #[error("module `{module}` cannot start on this node: {reason}")]
    CannotStart {
        /// The module.
        module: String,
        /// Why (linking or opening it failed).
        reason: String,
    },
    /// A module the placement brings here is arriving already: an extraction moves it
    /// here, with its data.
    #[error("module `{0}` is arriving on this node (an extraction moves it here): reload once it is done")]
    Arriving(String),
}

/// How often the node looks whether the work in flight on a module that left is done.
const DRAIN_POLL: Duration = Duration::from_millis(10);

impl Registry {
    /// Applies `new`, the node's deployment file read again: the modules its
    /// `[placement]` brings to this node start serving here, the ones it moves away
    /// stop. Refused, with nothing changed, when more than the placement changed or a
    /// module cannot start (see the module's docs).
    pub async fn reload(&self, new: &Deployment) -> Result<Placed, PlaceRefused> {
        let _one = self.swapper().one_change_at_a_time().await;
        let mut running = self.deployment_now();
        running.placement = self.directory().snapshot().placed.clone();
        let problems = running.reload_problems(new);
        if !problems.is_empty() {
            return Err(PlaceRefused::Invalid(ConfigErrors(problems)));
        }

        let now = self.directory().snapshot();
        let wanted: BTreeSet<&str> = new.local_modules().map(|m| m.name.as_str()).collect();
        let stopping: Vec<String> = now
            .local
            .keys()
            .filter(|name| !wanted.contains(name.as_str()))
            .cloned()
            .collect();
        let mut starting = Vec::new();
        for spec in new.local_modules() {
            if now.local.contains_key(&spec.name) {
                continue;
            }
            if self.is_arriving(&spec.name) {
                return Err(PlaceRefused::Arriving(spec.name.clone()));
            }
            let refused = |reason: String| PlaceRefused::CannotStart {
                module: spec.name.clone(),
                reason,
            };
            let version = self
                .swapper()
                .link_placed(spec)
                .map_err(|error| refused(format!("{error:#}")))?;
            self.open_module(&version.module).await.map_err(refused)?;
            let slot = ModuleSlot::new(Arc::new(version), self.deployment().rollout.clone());
            starting.push(Arc::new(slot));
        }
        let leaving: Vec<Arc<ModuleSlot>> = stopping
            .iter()
            .filter_map(|name| now.local.get(name).cloned())
            .collect();
        drop(now);

        let remote = remote_modules(new);
        self.directory().republish(|placement| {
            for slot in &starting {
                placement.local.insert(slot.name.clone(), slot.clone());
            }
            for name in &stopping {
                placement.local.remove(name);
            }
            placement.remote = remote.clone();
            placement.placed = new.placement.clone();
        });
        self.start_modules(&starting);
        for slot in &starting {
            tracing::info!(module = %slot.name, version = %slot.serving().version, "placement: the module serves on this node now");
        }
        let grace = self.deployment().gateway.shutdown_grace.duration();
        for slot in &leaving {
            self.stop_module(&slot.name, grace).await;
            drain(slot, grace).await;
            self.forget_metrics(&slot.name);
        }
        Ok(Placed {
            started: starting.iter().map(|slot| slot.name.clone()).collect(),
            stopped: stopping,
        })
    }
}

/// Waits, at most `grace`, until no request, call or delivery runs on the module of
/// `slot` any more (it no longer serves here: nothing new reaches it).
async fn drain(slot: &ModuleSlot, grace: Duration) {
    let started = Instant::now();
    let module = slot.serving().module.clone();
    while module.in_flight() > 0 && started.elapsed() < grace {
        tokio::time::sleep(DRAIN_POLL).await;
    }
    let left = module.in_flight();
    if left > 0 {
        tracing::warn!(module = %slot.name, in_flight = left, "placement: work still in flight after the grace period; it finishes on its own");
    } else {
        tracing::info!(
            module = %slot.name,
            drained_ms = started.elapsed().as_secs_f64() * 1000.0,
            "placement: the module no longer serves on this node"
        );
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::capabilities::Capabilities;
    use crate::engine::{Engine, EngineSettings};
    use crate::module::directory::{Directory, Placement, Route};

    /// The deployment in `dir` where `seller` (exporting `test:shop/api`) and `buyer`
    /// are placed as `placement` says, read as node `a`; `extra` is added to `buyer`.
    pub(in crate::module) fn deployment(
        dir: &std::path::Path,
        placement: &str,
        extra: &str,
    ) -> Deployment {
        let seller = wat::parse_str(
            r#"(component
                (core module $m (func (export "f") (result i32) i32.const 1))
                (core instance $i (instantiate $m))
                (func $f (result u32) (canon lift (core func $i "f")))
                (instance $api (export "price" (func $f)))
                (export "test:shop/api@1.0.0" (instance $api)))"#,
        )
        .unwrap();
        std::fs::write(dir.join("seller.wasm"), seller).unwrap();
        std::fs::write(
            dir.join("buyer.wasm"),
            wat::parse_str("(component)").unwrap(),
        )
        .unwrap();
        let text = format!(
            r#"
            [app]
            name = "t"
            [modules.seller]
            component = "seller.wasm"
            [modules.buyer]
            component = "buyer.wasm"
            limits = {{ timeout = "750ms" }}
            {extra}
            [nodes.a]
            listen = "127.0.0.1:1001"
            mesh = "127.0.0.1:1002"
            [nodes.b]
            listen = "127.0.0.1:1003"
            mesh = "127.0.0.1:1004"
            [placement]
            {placement}
            [mesh]
            ca = "ca.pem"
            cert = "{{node}}.pem"
            key = "{{node}}.key"
            "#
        );
        let mut deployment = Deployment::parse(&dir.join("d.toml"), &text).unwrap();
        deployment.select_node(Some("a")).unwrap();
        deployment
    }

    /// `deployment`'s node, loaded with no capabilities but the components' own.
    pub(in crate::module) fn load(deployment: &Deployment) -> (Registry, Arc<Directory>) {
        let engine = Engine::new(EngineSettings::default(), None).unwrap();
        let directory = Arc::new(Directory::new(Placement::default()));
        let registry = Registry::load(
            &engine,
            deployment,
            Capabilities::new(Vec::new()),
            directory.clone(),
        )
        .unwrap();
        (registry, directory)
    }

    #[tokio::test]
    async fn a_new_placement_starts_and_stops_modules_here_and_reroutes_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let start = deployment(dir.path(), "seller = [\"a\"]\nbuyer = [\"b\"]", "");
        let (registry, directory) = load(&start);
        assert!(matches!(directory.route("buyer"), Some(Route::Remote(_))));

        // buyer comes here too; seller stays.
        let both = deployment(dir.path(), "seller = [\"a\"]\nbuyer = [\"a\", \"b\"]", "");
        let placed = registry.reload(&both).await.unwrap();
        assert_eq!(placed.started, ["buyer"]);
        assert!(placed.stopped.is_empty());
        assert!(
            matches!(directory.route("buyer"), Some(Route::Local(slot)) if slot.name == "buyer")
        );
        assert_eq!(directory.nodes_of("buyer"), ["a", "b"]);

        // seller leaves for b: routed there, with its own timeout.
        let moved = deployment(dir.path(), "seller = [\"b\"]\nbuyer = [\"a\", \"b\"]", "");
        let placed = registry.reload(&moved).await.unwrap();
        assert_eq!(placed.stopped, ["seller"]);
        assert!(placed.started.is_empty());
        match directory.route("seller") {
            Some(Route::Remote(remote)) => assert_eq!(remote.nodes, ["b"]),
            _ => panic!("seller is not routed to b"),
        }
        // Every module's component is still known here, for the contract checks.
        assert!(directory.snapshot().components.contains_key("seller"));
        assert_eq!(
            directory.exporter("test:shop/api").as_deref(),
            Some("seller")
        );

        // The same file again changes nothing.
        assert_eq!(registry.reload(&moved).await.unwrap(), Placed::default());
    }

    #[tokio::test]
    async fn a_file_changing_more_than_the_placement_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let start = deployment(dir.path(), "seller = [\"a\"]\nbuyer = [\"b\"]", "");
        let (registry, directory) = load(&start);
        let changed = deployment(
            dir.path(),
            "seller = [\"a\"]\nbuyer = [\"a\"]",
            "routes = [\"/buyer\"]",
        );
        match registry.reload(&changed).await {
            Err(PlaceRefused::Invalid(errors)) => {
                let keys: Vec<&str> = errors.0.iter().map(|e| e.key.as_str()).collect();
                assert_eq!(keys, ["modules.buyer"]);
            }
            other => panic!("not refused: {other:?}"),
        }
        assert!(matches!(directory.route("buyer"), Some(Route::Remote(_))));
        assert_eq!(directory.nodes_of("buyer"), ["b"]);
    }
}
