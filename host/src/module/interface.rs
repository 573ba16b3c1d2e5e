//! A module version's interfaces: how they are named, and where calls into them land.
//!
//! Modules export WIT interfaces to each other (`shop:inventory/api@1.0.0`). A call
//! names the interface as its importer does — with the importer's version — and lands
//! in whichever version of the exporter serves, by the interface's *unversioned* name
//! and a semver check ([`InterfaceName::serves`]). Each loaded version keeps its own
//! table of exported functions ([`Exports`]): their indices in its component and their
//! parameter and result types, which the mesh decodes remote calls with.

use std::collections::HashMap;
use std::fmt;
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, ComponentExportIndex, Type};

/// Namespaces of interfaces the host itself provides (capabilities), not modules.
pub const HOST_NAMESPACES: &[&str] = &["wasi", "modhost"];

/// An interface name split into its parts: `shop:inventory/api@1.0.0`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct InterfaceName {
    /// `shop:inventory`
    pub package: String,
    /// `api`
    pub interface: String,
    /// `1.0.0`, when versioned.
    pub version: Option<semver::Version>,
}

impl InterfaceName {
    /// Parses `namespace:package/interface[@version]`; `None` for anything else (a
    /// plain name such as a world's own function export).
    pub fn parse(name: &str) -> Option<InterfaceName> {
        let (path, version) = match name.split_once('@') {
            Some((path, version)) => (path, Some(semver::Version::parse(version).ok()?)),
            None => (name, None),
        };
        let (package, interface) = path.split_once('/')?;
        if !package.contains(':') || interface.is_empty() {
            return None;
        }
        Some(InterfaceName {
            package: package.to_string(),
            interface: interface.to_string(),
            version,
        })
    }

    /// `shop:inventory/api`, without the version.
    pub fn unversioned(&self) -> String {
        format!("{}/{}", self.package, self.interface)
    }

    /// Whether an exporter of version `self` can serve an importer of `wanted`: the
    /// same major version (for 0.x, the same minor), and not older.
    pub fn serves(&self, wanted: &InterfaceName) -> bool {
        if self.package != wanted.package || self.interface != wanted.interface {
            return false;
        }
        match (&self.version, &wanted.version) {
            (None, None) => true,
            (Some(have), Some(want)) => {
                let same_line = if want.major == 0 {
                    have.major == 0 && have.minor == want.minor
                } else {
                    have.major == want.major
                };
                same_line && have >= want
            }
            _ => false,
        }
    }
}

impl fmt::Display for InterfaceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.unversioned())?;
        if let Some(version) = &self.version {
            write!(f, "@{version}")?;
        }
        Ok(())
    }
}

impl InterfaceName {
    /// Whether this names an interface of the host (a capability) rather than one a
    /// module exports to others.
    pub fn is_host(&self) -> bool {
        let namespace = self.package.split(':').next().unwrap_or_default();
        HOST_NAMESPACES.contains(&namespace)
    }
}

/// One exported function of a module version.
#[derive(Debug, Clone)]
pub struct Export {
    /// Where it is in the version's component.
    pub index: ComponentExportIndex,
    /// The interface as this version exports it (with its version).
    pub interface: InterfaceName,
    /// Its parameter types, in order.
    pub params: Vec<Type>,
    /// Its result types, in order.
    pub results: Vec<Type>,
}

/// A version's exports of module interfaces, by `interface-without-version#function`.
#[derive(Debug, Clone, Default)]
pub struct Exports(HashMap<String, Export>);

impl Exports {
    /// The exports of module interfaces (not the host's) of `component`.
    pub fn of(engine: &wasmtime::Engine, component: &Component) -> Exports {
        let mut exports = HashMap::new();
        let ty = component.component_type();
        for (name, item) in ty.exports(engine) {
            let (Some(parsed), ComponentItem::ComponentInstance(instance)) =
                (InterfaceName::parse(name), &item.ty)
            else {
                continue;
            };
            if parsed.is_host() {
                continue;
            }
            let Some(interface) = component.get_export_index(None, name) else {
                continue;
            };
            for (function, item) in instance.exports(engine) {
                let ComponentItem::ComponentFunc(func) = item.ty else {
                    continue;
                };
                let Some(index) = component.get_export_index(Some(&interface), function) else {
                    continue;
                };
                exports.insert(
                    key(&parsed, function),
                    Export {
                        index,
                        interface: parsed.clone(),
                        params: func.params().map(|(_, ty)| ty).collect(),
                        results: func.results().collect(),
                    },
                );
            }
        }
        Exports(exports)
    }

    /// The export `key` (`interface-without-version#function`).
    pub fn get(&self, key: &str) -> Option<&Export> {
        self.0.get(key)
    }

    /// The export serving `function` of `interface` as an importer names it (with its
    /// version), if this version has a semver-compatible one.
    pub fn serving(&self, interface: &InterfaceName, function: &str) -> Option<&Export> {
        self.0
            .get(&key(interface, function))
            .filter(|export| export.interface.serves(interface))
    }

    /// Every exported function's key (`interface-without-version#function`).
    pub fn keys(&self) -> impl Iterator<Item = &str> + '_ {
        self.0.keys().map(String::as_str)
    }

    /// The unversioned names of the interfaces exported.
    pub fn interfaces(&self) -> impl Iterator<Item = String> + '_ {
        self.0.values().map(|export| export.interface.unversioned())
    }
}

/// `interface-without-version#function`: the key of a function in [`Exports`].
pub fn key(interface: &InterfaceName, function: &str) -> String {
    format!("{}#{function}", interface.unversioned())
}

impl fmt::Display for Export {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.interface)
    }
}
