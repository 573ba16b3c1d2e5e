//! The dispatcher: calls to other modules as a capability of the host.
//!
//! Its lifecycle is every capability's ([`Calls`]): it **checks** the deployment's
//! contracts ([`super::check`]) at load and on every swap, and **links** every function
//! of every exported interface into the shared linker as a host function
//! ([`super::link`]). Calling one routes the call at call time, through the node's
//! [`Directory`]: to the callee's serving version here, or over the [`Transport`] to a
//! node that runs it. That node serves it through [`Dispatcher::inbound`], the same
//! local path.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use wasmtime::component::{Linker, Type, Val};

use super::check::{check, exports};
use super::link::link_interface;
use super::local::call_local;
use super::policy::PolicyState;
use super::transport::Transport;
use crate::capabilities::{Capability, Components, Hop, InstanceState, ModuleProblem};
use crate::deployment::Deployment;
use crate::module::directory::Directory;
use crate::module::interface::{key, Export, InterfaceName};
use crate::module::{CallFailed, CallFailure, ModuleSlot, ModuleVersion};

/// Routes calls between modules: the node's directory, and the transport to other
/// nodes once the node has connected one.
pub struct Dispatcher {
    directory: Arc<Directory>,
    transport: OnceLock<Arc<dyn Transport>>,
    /// Who is placed where and may call whom, for calls arriving from other nodes.
    deployment: Deployment,
    /// The state of each call policy, by (caller, callee) for edge policies and by
    /// (`None`, callee) for a callee's: a callee's breaker and bulkhead are shared by
    /// all the calls its policy covers.
    policies: HashMap<(Option<String>, String), Arc<PolicyState>>,
}

/// Why a call from another node was not run here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InboundRefused {
    /// No module of this node exports the function.
    #[error("this node runs no module exporting {0}")]
    NotServed(String),
    /// The calling module is not placed on the node that sent the call.
    #[error("module `{caller}` does not run on node {peer}: a node calls only for the modules placed on it")]
    NotPlaced {
        /// The module the call claims to come from.
        caller: String,
        /// The node that sent it.
        peer: String,
    },
    /// The calling module may not call the callee.
    #[error("module `{caller}` may not call `{callee}`: it is not in modules.{caller}.calls")]
    NotGranted {
        /// The calling module.
        caller: String,
        /// The module it called.
        callee: String,
    },
}

impl Dispatcher {
    /// A dispatcher routing by `directory`, under `deployment`'s placement and grants.
    pub fn new(directory: Arc<Directory>, deployment: Deployment) -> Dispatcher {
        let policies = deployment
            .policies
            .all()
            .map(|entry| {
                let at = (entry.caller.map(str::to_string), entry.callee.to_string());
                (
                    at,
                    Arc::new(PolicyState::new(entry.key, entry.policy.clone())),
                )
            })
            .collect();
        Dispatcher {
            directory,
            transport: OnceLock::new(),
            deployment,
            policies,
        }
    }

    /// The policy for `caller`'s calls into `callee`: the edge's, else the callee's.
    pub fn policy(&self, caller: &str, callee: &str) -> Option<Arc<PolicyState>> {
        self.policies
            .get(&(Some(caller.to_string()), callee.to_string()))
            .or_else(|| self.policies.get(&(None, callee.to_string())))
            .cloned()
    }

    /// The policy for requests forwarded to `callee` on another node: the callee's
    /// (no module calls them, so no edge's applies).
    pub fn callee_policy(&self, callee: &str) -> Option<Arc<PolicyState>> {
        self.policies.get(&(None, callee.to_string())).cloned()
    }

    /// Connects the transport to other nodes (a split deployment's mesh).
    pub fn connect(&self, transport: Arc<dyn Transport>) {
        let _ = self.transport.set(transport);
    }

    /// The node's directory.
    pub fn directory(&self) -> &Arc<Directory> {
        &self.directory
    }

    /// The transport to other nodes, if there is one.
    pub fn transport(&self) -> Option<&Arc<dyn Transport>> {
        self.transport.get()
    }

    /// Waits, at most `limit`, while the module exporting `interface` here is on hold
    /// (moving to another node): a call from a peer then finds where it is served.
    pub async fn wait_while_held(&self, interface: &str, limit: Duration) {
        let Some(wanted) = InterfaceName::parse(interface) else {
            return;
        };
        let slot = self
            .directory
            .exporter(&wanted.unversioned())
            .and_then(|exporter| self.directory.local(&exporter));
        if let Some(slot) = slot.filter(|slot| slot.hold.is_held()) {
            slot.hold.released_within(limit).await;
        }
    }

    /// The local export that serves a call node `peer` sent, from module `caller` to
    /// `function` of `interface` (as the caller names it, with its version): the
    /// version it runs in, picked now, and its types to decode the call with. The
    /// receiving node holds the same lines as the sending one: the caller must be
    /// placed on `peer`, and granted the callee.
    pub fn inbound(
        &self,
        peer: &str,
        caller: &str,
        interface: &str,
        function: &str,
    ) -> Result<Inbound, InboundRefused> {
        let not_served = || InboundRefused::NotServed(format!("{interface}#{function}"));
        let wanted = InterfaceName::parse(interface).ok_or_else(not_served)?;
        let exporter = self
            .directory
            .exporter(&wanted.unversioned())
            .ok_or_else(not_served)?;
        let slot = self.directory.local(&exporter).ok_or_else(not_served)?;
        if !self
            .directory
            .nodes_of(caller)
            .iter()
            .any(|node| node == peer)
        {
            return Err(InboundRefused::NotPlaced {
                caller: caller.to_string(),
                peer: peer.to_string(),
            });
        }
        let granted = self
            .deployment
            .modules
            .get(caller)
            .is_some_and(|spec| spec.calls.contains(&exporter));
        if !granted {
            return Err(InboundRefused::NotGranted {
                caller: caller.to_string(),
                callee: exporter,
            });
        }
        let version = slot.pick(None);
        let export = version
            .exports
            .serving(&wanted, function)
            .ok_or_else(not_served)?
            .clone();
        Ok(Inbound {
            key: key(&wanted, function),
            function: function.to_string(),
            slot,
            version,
            export,
        })
    }
}

/// A call from another node, about to run here.
pub struct Inbound {
    slot: Arc<ModuleSlot>,
    version: Arc<ModuleVersion>,
    export: Export,
    key: String,
    function: String,
}

impl Inbound {
    /// The function's parameter types, to decode the call's values with.
    pub fn params(&self) -> &[Type] {
        &self.export.params
    }

    /// Its result types.
    pub fn results(&self) -> &[Type] {
        &self.export.results
    }

    /// The module that serves the call.
    pub fn callee(&self) -> &str {
        &self.slot.name
    }

    /// Runs the call for `caller` at `hop` with `params`, within `deadline` (the
    /// caller's), filling `results`.
    pub async fn call(
        &self,
        caller: &str,
        hop: Hop,
        deadline: Duration,
        params: &[Val],
        results: &mut [Val],
    ) -> Result<(), CallFailed> {
        let route = || {
            format!(
                "{caller} → {}.{}#{}",
                self.slot.name, self.export.interface, self.function
            )
        };
        let outcome = tokio::time::timeout(
            deadline,
            call_local(&self.version, &self.key, &route, hop, params, results),
        )
        .await
        .unwrap_or_else(|_| {
            Err(CallFailed::new(
                CallFailure::TimedOut,
                format!(
                    "{}: the callee did not return within the caller's deadline of {deadline:?}",
                    route()
                ),
            ))
        });
        self.slot.record(&self.version, outcome.is_ok());
        outcome
    }
}

/// Calls to other modules, as a capability.
pub struct Calls {
    dispatcher: Arc<Dispatcher>,
}

impl Calls {
    /// The capability, routing through `dispatcher`.
    pub fn new(dispatcher: Arc<Dispatcher>) -> Calls {
        Calls { dispatcher }
    }
}

impl Capability for Calls {
    fn name(&self) -> &'static str {
        "calls"
    }

    /// Every import of another module's interface is granted (`calls`), exported by
    /// exactly one module, at a compatible version, with the same signatures.
    fn check(&self, components: &Components<'_>) -> Vec<ModuleProblem> {
        match check(
            components.engine,
            components.deployment,
            components.components,
        ) {
            Ok(_) => Vec::new(),
            Err(errors) => errors
                .into_iter()
                .map(|error| ModuleProblem {
                    module: error.module,
                    problem: error.problem,
                })
                .collect(),
        }
    }

    /// Links every function of every exported interface to the dispatcher.
    fn link(
        &self,
        linker: &mut Linker<InstanceState>,
        components: &Components<'_>,
    ) -> anyhow::Result<()> {
        let exports = exports(components.engine, components.components);
        for (exporter, interface) in exports.values() {
            let Some(component) = components.components.get(exporter) else {
                continue;
            };
            link_interface(linker, &self.dispatcher, exporter, component, interface)
                .map_err(|error| error.context(format!("module `{exporter}`")))?;
        }
        Ok(())
    }
}
