//! What this modhost binary was built with.
//!
//! Four parts of modhost are cargo features, on in the default build, so that an edge
//! build (`cargo build --release -p modhost --no-default-features`) can leave out
//! what a small machine does not use: the Wasm compiler, the Kafka client, the
//! Postgres driver and the mesh between nodes. The deployment file's syntax is the
//! same in every build; a deployment that needs a part this binary lacks is refused
//! here, at `check` and before a node serves, naming the key that needs it — never a
//! node that starts and then cannot do what its file says.

use std::collections::BTreeMap;

use super::errors::Problems;
use super::{ComponentSource, DatabaseBackend, EventsBackend, ModuleSpec, NodeSpec};

/// A part of modhost a build may leave out, by the cargo feature that builds it in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// Cranelift: compiling Wasm components (`.wasm`, module sources, hot swap,
    /// `modhost compile`). Without it a node runs precompiled `.cwasm` files only.
    Compiler,
    /// The Kafka client (librdkafka): `[events] backend = "kafka"`.
    Kafka,
    /// The Postgres driver: `database = { postgres = … }`.
    Postgres,
    /// The mutual-TLS mesh: `[nodes]`, `[mesh]`, `modhost certs`.
    Mesh,
}

impl Part {
    /// Every part, in the order `--version` lists them.
    pub const ALL: [Part; 4] = [Part::Compiler, Part::Kafka, Part::Postgres, Part::Mesh];

    /// The cargo feature that builds the part in.
    pub fn feature(self) -> &'static str {
        match self {
            Part::Compiler => "compiler",
            Part::Kafka => "kafka",
            Part::Postgres => "postgres",
            Part::Mesh => "mesh",
        }
    }

    /// Whether this binary has the part.
    pub fn is_built_in(self) -> bool {
        match self {
            Part::Compiler => cfg!(feature = "compiler"),
            Part::Kafka => cfg!(feature = "kafka"),
            Part::Postgres => cfg!(feature = "postgres"),
            Part::Mesh => cfg!(feature = "mesh"),
        }
    }

    /// Why a deployment that needs the part cannot run on this binary: the sentence
    /// its problem (and any other refusal of the part) ends with.
    pub fn missing(self) -> String {
        format!(
            "this modhost was built without the `{}` feature (an edge build); use a \
             default build, or build with `--features {}`",
            self.feature(),
            self.feature()
        )
    }
}

/// The features this binary was built with, as `--version` lists them.
pub fn features() -> Vec<&'static str> {
    let mut features: Vec<&'static str> = Part::ALL
        .iter()
        .filter(|part| part.is_built_in())
        .map(|part| part.feature())
        .collect();
    if cfg!(feature = "cross-compile") {
        features.push("cross-compile");
    }
    features
}

/// Refuses, by key, what the deployment needs of parts this binary was built without.
pub(super) fn check_built_in(
    modules: &BTreeMap<String, ModuleSpec>,
    events: &EventsBackend,
    nodes: &BTreeMap<String, NodeSpec>,
    problems: &mut Problems,
) {
    needs(
        Part::Kafka,
        matches!(events, EventsBackend::Kafka { .. }).then_some("events.backend"),
        "sends events through Kafka",
        problems,
    );
    if !nodes.is_empty() {
        needs(
            Part::Mesh,
            Some("nodes"),
            "splits the modules over nodes, which reach each other over the mesh",
            problems,
        );
    }
    for module in modules.values() {
        let key = format!("modules.{}", module.name);
        if !matches!(module.component, ComponentSource::Precompiled(_)) {
            needs(
                Part::Compiler,
                Some(&format!("{key}.component")),
                "is not precompiled (a .cwasm from `modhost compile`), so it would be compiled here",
                problems,
            );
        }
        let postgres = matches!(
            module.database.as_ref().map(|database| &database.backend),
            Some(DatabaseBackend::Postgres { .. })
        );
        if postgres {
            needs(
                Part::Postgres,
                Some(&format!("{key}.database")),
                "is a Postgres database",
                problems,
            );
        }
    }
}

/// Adds a problem at `key` (when the deployment needs `part` there) if this binary
/// lacks `part`; `what` says what the key asks for.
fn needs(part: Part, key: Option<&str>, what: &str, problems: &mut Problems) {
    if let Some(key) = key.filter(|_| !part.is_built_in()) {
        problems.add(key, &format!("{what}: {}", part.missing()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The test suite runs the default build; an edge build is tested end to end
    // (tests/edge.rs), by what it serves and what it refuses.
    #[cfg(all(
        feature = "cross-compile",
        feature = "kafka",
        feature = "postgres",
        feature = "mesh"
    ))]
    #[test]
    fn the_default_build_has_every_part() {
        for part in Part::ALL {
            assert!(part.is_built_in(), "{part:?}");
        }
        assert_eq!(
            features(),
            ["compiler", "kafka", "postgres", "mesh", "cross-compile"]
        );
    }

    #[test]
    fn a_missing_part_names_its_feature() {
        let missing = Part::Kafka.missing();
        assert!(missing.contains("without the `kafka` feature"), "{missing}");
        assert!(missing.contains("--features kafka"), "{missing}");
    }
}
