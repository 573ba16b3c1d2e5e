//! The host crate's layers, kept: each top-level module of `host/src` may use only the
//! layers below it (docs/architecture.md, "Layers"), and nothing forms a cycle.
//!
//! This reads the source, not the compiled crate: every `crate::NAME` path in a file
//! of module `M` is a use of `NAME` by `M`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layers, top first. A module may use the modules of the layers after its own.
const LAYERS: &[&[&str]] = &[
    &["node"],
    &["admin", "gateway", "mesh"],
    &["calls"],
    &["module"],
    &["capabilities"],
    &["engine"],
    &["deployment"],
];

/// Beside the layers: any layer may use them, and they use none of the layers.
const BESIDE: &[&str] = &["telemetry", "runtime", "faults"];

/// Uses within one layer that the design allows (the admin API asks other nodes
/// through the mesh's client; the mesh never uses the admin API).
const WITHIN_A_LAYER: &[(&str, &str)] = &[("admin", "mesh")];

fn sources(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read host/src") {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            sources(&path, found);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            found.push(path);
        }
    }
}

/// Every use of one top-level module by another: (user, used) → a file where it happens.
fn uses() -> BTreeMap<(String, String), PathBuf> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("host/src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut uses = BTreeMap::new();
    for file in files {
        let relative = file.strip_prefix(&src).expect("under host/src");
        let first = relative
            .components()
            .next()
            .and_then(|c| c.as_os_str().to_str())
            .expect("a file name");
        let user = first.trim_end_matches(".rs").to_string();
        // The crate root and the command line sit above every layer.
        if user == "lib" || user == "main" {
            continue;
        }
        let text = std::fs::read_to_string(&file).expect("read a source file");
        for (at, _) in text.match_indices("crate::") {
            // `crate::` inside a longer path (`modhost_crate::`) is not ours.
            if text[..at]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_alphanumeric() || c == '_')
            {
                continue;
            }
            let used: String = text[at + "crate::".len()..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !used.is_empty() && used != user {
                uses.entry((user.clone(), used))
                    .or_insert_with(|| file.clone());
            }
        }
    }
    uses
}

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

#[test]
fn every_top_level_module_has_a_place_in_the_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("host/src");
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_str().unwrap().to_string();
        if name == "lib" || name == "main" {
            continue;
        }
        assert!(
            layer_of(&name).is_some() || BESIDE.contains(&name.as_str()),
            "host/src/{} is in no layer: add it to LAYERS or BESIDE here and to docs/architecture.md",
            path.file_name().unwrap().to_str().unwrap()
        );
    }
}

#[test]
fn each_layer_uses_only_the_layers_below_it() {
    let mut wrong = Vec::new();
    for ((user, used), file) in uses() {
        let allowed = if BESIDE.contains(&user.as_str()) {
            BESIDE.contains(&used.as_str())
        } else if BESIDE.contains(&used.as_str()) {
            true
        } else {
            match (layer_of(&user), layer_of(&used)) {
                (Some(a), Some(b)) => {
                    b > a || (a == b && WITHIN_A_LAYER.contains(&(user.as_str(), used.as_str())))
                }
                _ => false,
            }
        };
        if !allowed {
            wrong.push(format!("{user} uses {used} (in {})", file.display()));
        }
    }
    assert!(
        wrong.is_empty(),
        "uses against the layers:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn no_top_level_modules_form_a_cycle() {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (user, used) in uses().into_keys() {
        graph.entry(user).or_default().insert(used);
    }
    // Depth-first search, reporting the first cycle found with its path.
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|n| n == node) {
            let mut cycle = path[start..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        if let Some(cycle) = visit(node, &graph, &mut Vec::new(), &mut done) {
            panic!("the host's modules form a cycle: {}", cycle.join(" -> "));
        }
    }
}
