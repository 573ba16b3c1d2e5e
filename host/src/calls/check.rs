//! The contract check: at load and on every swap, every interface a module imports
//! must be exported by a deployed module it is granted to call, at a semver-compatible
//! version, with identical function signatures; an interface has one owner.

use std::collections::BTreeMap;
use wasmtime::component::types::ComponentItem;
use wasmtime::component::Component;
use wasmtime::Engine;

use super::contract::{mismatches, Interface, Mismatch};
use crate::deployment::policies::names_function;
use crate::deployment::Deployment;
use crate::module::interface::InterfaceName;

/// The interfaces modules export to each other, by unversioned name
/// (`shop:inventory/api`), with the exporting module.
pub type Exports = BTreeMap<String, (String, Interface)>;

/// A module's problem with its contracts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContractError {
    /// The module whose import or export is wrong.
    pub module: String,
    /// What is wrong, naming importer, exporter, interface and function.
    pub problem: String,
}

/// Checks every module-to-module import in `components` (by module name) against the
/// exports and the deployment's grants. Returns the exported interfaces to link.
pub fn check(
    engine: &Engine,
    deployment: &Deployment,
    components: &BTreeMap<String, Component>,
) -> Result<Exports, Vec<ContractError>> {
    let mut errors = Vec::new();
    let mut exports: Exports = BTreeMap::new();
    let mut imports: Vec<(String, Interface)> = Vec::new();

    for (module, component) in components {
        let ty = component.component_type();
        let mut fail = |problem: String| {
            errors.push(ContractError {
                module: module.clone(),
                problem,
            })
        };
        for (name, item) in ty.exports(engine) {
            let Some(interface) = module_interface(engine, name, &item.ty, &mut fail) else {
                continue;
            };
            let key = interface.name.unversioned();
            if let Some((other, _)) = exports.get(&key) {
                fail(format!(
                    "exports {name}, which module `{other}` exports too; an interface has one owner"
                ));
                continue;
            }
            exports.insert(key, (module.clone(), interface));
        }
        for (name, item) in ty.imports(engine) {
            if let Some(interface) = module_interface(engine, name, &item.ty, &mut fail) {
                imports.push((module.clone(), interface));
            }
        }
    }

    for (importer, wanted) in &imports {
        let fail = |problem: String| ContractError {
            module: importer.clone(),
            problem,
        };
        let Some((exporter, offered)) = exports.get(&wanted.name.unversioned()) else {
            errors.push(fail(format!(
                "imports {}, which no deployed module exports",
                wanted.name
            )));
            continue;
        };
        let granted = deployment
            .modules
            .get(importer)
            .is_some_and(|spec| spec.calls.contains(exporter));
        if !granted {
            errors.push(fail(format!(
                "imports {} from module `{exporter}` without a grant: add \"{exporter}\" to modules.{importer}.calls",
                wanted.name
            )));
            continue;
        }
        if !offered.name.serves(&wanted.name) {
            errors.push(fail(format!(
                "imports {} but module `{exporter}` exports {}, which is not semver-compatible",
                wanted.name, offered.name
            )));
            continue;
        }
        for mismatch in mismatches(wanted, offered) {
            errors.push(fail(match mismatch {
                Mismatch::Missing { function, expected } => format!(
                    "imports {}#{function} but module `{exporter}` does not export it\n  \
                     {importer} expects: {expected}",
                    wanted.name
                ),
                Mismatch::Signature {
                    function,
                    expected,
                    found,
                } => format!(
                    "imports {}#{function} with a signature module `{exporter}` does not have\n  \
                     {importer} expects: {expected}\n  {exporter} exports: {found}",
                    wanted.name
                ),
            }));
        }
    }

    errors.extend(check_idempotent(deployment, &exports));
    if errors.is_empty() {
        Ok(exports)
    } else {
        Err(errors)
    }
}

/// Every function a retry policy lists as idempotent is one its callee exports: a
/// misspelt name would silently never be retried.
fn check_idempotent(deployment: &Deployment, exports: &Exports) -> Vec<ContractError> {
    let mut errors = Vec::new();
    for entry in deployment.policies.all() {
        let Some(retries) = &entry.policy.retries else {
            continue;
        };
        let functions: Vec<(&str, &str)> = exports
            .iter()
            .filter(|(_, (exporter, _))| exporter == entry.callee)
            .flat_map(|(interface, (_, offered))| {
                offered
                    .functions
                    .keys()
                    .map(move |function| (interface.as_str(), function.as_str()))
            })
            .collect();
        for listed in &retries.idempotent {
            let named =
                |(interface, function): &(&str, &str)| names_function(listed, interface, function);
            if !functions.iter().any(named) {
                let offered: Vec<String> = functions
                    .iter()
                    .map(|(interface, function)| format!("{interface}#{function}"))
                    .collect();
                errors.push(ContractError {
                    module: entry.callee.to_string(),
                    problem: format!(
                        "policies.\"{}\".retries.idempotent names `{listed}`, which module `{}` does not export (it exports: {})",
                        entry.key,
                        entry.callee,
                        if offered.is_empty() { "nothing".to_string() } else { offered.join(", ") }
                    ),
                });
            }
        }
    }
    errors
}

/// The contract of a component import or export named `name`, if it is a
/// module-to-module interface (not a host capability); a malformed one is reported.
fn module_interface(
    engine: &Engine,
    name: &str,
    item: &ComponentItem,
    fail: &mut impl FnMut(String),
) -> Option<Interface> {
    let ComponentItem::ComponentInstance(instance) = item else {
        return None;
    };
    let parsed = InterfaceName::parse(name)?;
    if parsed.is_host() {
        return None;
    }
    match Interface::of(engine, parsed, instance) {
        Ok(interface) => Some(interface),
        Err(problem) => {
            fail(problem);
            None
        }
    }
}

/// The interfaces `components` export to each other, with their exporters, whatever
/// the state of the imports (the first exporter of an interface owns it).
pub fn exports(engine: &Engine, components: &BTreeMap<String, Component>) -> Exports {
    let mut exports: Exports = BTreeMap::new();
    for (module, component) in components {
        let ty = component.component_type();
        for (name, item) in ty.exports(engine) {
            if let Some(interface) = module_interface(engine, name, &item.ty, &mut |_| {}) {
                exports
                    .entry(interface.name.unversioned())
                    .or_insert_with(|| (module.clone(), interface));
            }
        }
    }
    exports
}
