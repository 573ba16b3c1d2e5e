//! The deployment file as written: the sections serde reads before validation.
//!
//! The two tables that may hold capability settings — the file's top level and each
//! `[modules.NAME]` — are read by hand: a key the host knows is deserialised into its
//! type (so a bad value still fails with its line and key path), and any other key is
//! kept with its line, for the capabilities to claim or for validation to refuse.

use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::PathBuf;

use super::gateway::GatewaySettings;
use super::modules::{Instances, ModuleLimits};
use super::policies::CallPolicy;
use super::{events, placement, rollout, telemetry};

/// A key the host does not know, kept with its value and where it was.
pub(super) type Unknown = BTreeMap<String, toml::Spanned<toml::Value>>;

/// The top-level sections the host owns.
pub(super) const SECTIONS: &[&str] = &[
    "extends",
    "app",
    "gateway",
    "modules",
    "events",
    "nodes",
    "placement",
    "mesh",
    "rollout",
    "admin",
    "policies",
    "telemetry",
];

/// The keys of a `[modules.NAME]` section the host owns.
pub(super) const MODULE_KEYS: &[&str] = &[
    "component",
    "routes",
    "calls",
    "limits",
    "instances",
    "database",
    "migrations",
    "publishes",
    "subscribes",
];

/// The whole file.
pub(super) struct DeploymentFile {
    /// `extends = "FILE"`: the file this one places and adjusts (`overlay`).
    pub(super) extends: Option<toml::Spanned<String>>,
    /// Required, of the deployment as a whole (an overlay may leave it to its base).
    pub(super) app: Option<AppSection>,
    pub(super) gateway: GatewaySettings,
    pub(super) modules: BTreeMap<String, ModuleSection>,
    pub(super) events: events::EventsSection,
    pub(super) nodes: BTreeMap<String, placement::NodeSection>,
    pub(super) placement: BTreeMap<String, Vec<String>>,
    pub(super) mesh: Option<placement::MeshSection>,
    pub(super) rollout: rollout::RolloutSection,
    pub(super) admin: Option<rollout::AdminSection>,
    pub(super) policies: BTreeMap<String, CallPolicy>,
    pub(super) telemetry: telemetry::TelemetrySection,
    /// Sections the host does not know.
    pub(super) unknown: Unknown,
    /// Every top-level key the file writes, known or not.
    pub(super) written: BTreeSet<String>,
}

/// `[app]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AppSection {
    pub(super) name: String,
    pub(super) data_dir: Option<PathBuf>,
}

/// `[modules.NAME]`.
pub(super) struct ModuleSection {
    /// Required: when it is missing, validation says so (unless an unknown key in the
    /// section is likely the misspelt `component`).
    pub(super) component: Option<String>,
    pub(super) routes: Vec<String>,
    pub(super) calls: Vec<String>,
    pub(super) limits: ModuleLimits,
    pub(super) instances: Instances,
    pub(super) database: Option<toml::Value>,
    pub(super) migrations: Option<String>,
    pub(super) publishes: Vec<String>,
    pub(super) subscribes: Vec<String>,
    /// Keys the host does not know.
    pub(super) unknown: Unknown,
}

impl<'de> Deserialize<'de> for DeploymentFile {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct File;
        impl<'de> Visitor<'de> for File {
            type Value = DeploymentFile;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a deployment file")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<DeploymentFile, A::Error> {
                let mut file = DeploymentFile {
                    extends: None,
                    app: None,
                    gateway: GatewaySettings::default(),
                    modules: BTreeMap::new(),
                    events: events::EventsSection::default(),
                    nodes: BTreeMap::new(),
                    placement: BTreeMap::new(),
                    mesh: None,
                    rollout: rollout::RolloutSection::default(),
                    admin: None,
                    policies: BTreeMap::new(),
                    telemetry: telemetry::TelemetrySection::default(),
                    unknown: BTreeMap::new(),
                    written: BTreeSet::new(),
                };
                while let Some(key) = map.next_key::<String>()? {
                    file.written.insert(key.clone());
                    match key.as_str() {
                        "extends" => file.extends = Some(map.next_value()?),
                        "app" => file.app = Some(map.next_value()?),
                        "gateway" => file.gateway = map.next_value()?,
                        "modules" => file.modules = map.next_value()?,
                        "events" => file.events = map.next_value()?,
                        "nodes" => file.nodes = map.next_value()?,
                        "placement" => file.placement = map.next_value()?,
                        "mesh" => file.mesh = Some(map.next_value()?),
                        "rollout" => file.rollout = map.next_value()?,
                        "admin" => file.admin = Some(map.next_value()?),
                        "policies" => file.policies = map.next_value()?,
                        "telemetry" => file.telemetry = map.next_value()?,
                        _ => {
                            let value = map.next_value()?;
                            file.unknown.insert(key, value);
                        }
                    }
                }
                Ok(file)
            }
        }
        deserializer.deserialize_map(File)
    }
}

impl<'de> Deserialize<'de> for ModuleSection {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Section;
        impl<'de> Visitor<'de> for Section {
            type Value = ModuleSection;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a module section")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ModuleSection, A::Error> {
                let mut section = ModuleSection {
                    component: None,
                    routes: Vec::new(),
                    calls: Vec::new(),
                    limits: ModuleLimits::default(),
                    instances: Instances::default(),
                    database: None,
                    migrations: None,
                    publishes: Vec::new(),
                    subscribes: Vec::new(),
                    unknown: BTreeMap::new(),
                };
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "component" => section.component = Some(map.next_value()?),
                        "routes" => section.routes = map.next_value()?,
                        "calls" => section.calls = map.next_value()?,
                        "limits" => section.limits = map.next_value()?,
                        "instances" => section.instances = map.next_value()?,
                        "database" => section.database = Some(map.next_value()?),
                        "migrations" => section.migrations = Some(map.next_value()?),
                        "publishes" => section.publishes = map.next_value()?,
                        "subscribes" => section.subscribes = map.next_value()?,
                        _ => {
                            let value = map.next_value()?;
                            section.unknown.insert(key, value);
                        }
                    }
                }
                Ok(section)
            }
        }
        deserializer.deserialize_map(Section)
    }
}
