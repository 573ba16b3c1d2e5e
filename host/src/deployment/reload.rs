//! What a running node may take from its deployment file read again: a new
//! `[placement]`, and nothing else.
//!
//! A node reloads its file on `SIGHUP` or through the admin API (`modhost reload`). The
//! file is read and validated exactly as at start; then [`Deployment::reload_problems`]
//! compares it with the one the node runs. Only `[placement]` may differ: the modules,
//! their grants and limits, the listeners, the nodes and their certificates, the bus —
//! everything else was wired when the node started, and a change there needs a restart
//! (the problem says which section). A module whose data is a SQLite file on its node
//! may not move by placement: its new node would start with an empty database while its
//! data stayed behind (`modhost extract` moves it with its data).

use std::path::Path;

use super::errors::{ConfigError, Problems};
use super::{DatabaseBackend, Deployment};

impl Deployment {
    /// Why `new`, this deployment's file read again, cannot be applied to a node
    /// running this one (empty: it can). Each problem names the file and key.
    pub fn reload_problems(&self, new: &Deployment) -> Vec<ConfigError> {
        let mut problems = Problems::of(new.origins.clone());
        if new.file != self.file {
            problems.add(
                "",
                &format!(
                    "is not the file the node runs ({}): a reload reads the same file again",
                    self.file.display()
                ),
            );
        }
        for key in changed_sections(&self.written, &new.written) {
            problems.add(
                &key,
                "changed since the node started: a reload applies [placement] only; \
                 restart the node to apply the rest",
            );
        }
        for module in new.modules.values() {
            let (before, after) = (self.nodes_of(&module.name), new.nodes_of(&module.name));
            let sqlite = module
                .database
                .as_ref()
                .is_some_and(|db| db.backend == DatabaseBackend::Sqlite);
            if sqlite && before != after {
                problems.add(
                    &format!("placement.{}", module.name),
                    &format!(
                        "module `{}` keeps its data in a SQLite file on node {}: placed on {} \
                         it would start there with an empty database and its data left \
                         behind; move a SQLite module with its data, or give it a postgres \
                         database first",
                        module.name,
                        before.join(", "),
                        after.join(", ")
                    ),
                );
            }
        }
        problems.into_errors()
    }
}

/// Writes `module = [NODES]` in the `[placement]` section of `file` (the file that
/// wrote it: [`Deployment::origins`]), in place of the module's line there, so that a
/// restart, or a reload, keeps a placement changed while the nodes ran. The rest of
/// the file is kept as written; the new text replaces the old in one rename.
pub fn write_placement(file: &Path, module: &str, nodes: &[String]) -> std::io::Result<()> {
    let text = std::fs::read_to_string(file)?;
    let placed: Vec<String> = nodes.iter().map(|node| format!("{node:?}")).collect();
    let line = format!("{module} = [{}]", placed.join(", "));
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let header = lines.iter().position(|l| l.trim() == "[placement]");
    let Some(header) = header else {
        return Err(std::io::Error::other(format!(
            "{} has no [placement] section to write {module}'s in",
            file.display()
        )));
    };
    match key_line(&lines, header, module) {
        // A value written over several lines is not one this edit can keep whole.
        Some(at) if !lines[at].contains(']') => {
            return Err(std::io::Error::other(format!(
                "{}: {module}'s placement spans several lines; write `{line}` there by hand",
                file.display()
            )))
        }
        Some(at) => lines[at] = line,
        None => lines.insert(header + 1, line),
    }
    let mut written = lines.join("\n");
    written.push('\n');
    replace_file(file, &written)
}

/// Where, in the section of `lines` whose header is line `header`, the line
/// `key = …` is, if it has one.
pub(super) fn key_line(lines: &[String], header: usize, key: &str) -> Option<usize> {
    lines[header + 1..]
        .iter()
        .take_while(|l| !l.trim_start().starts_with('['))
        .position(|l| {
            l.trim_start()
                .strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        })
        .map(|i| header + 1 + i)
}

/// Replaces `file`'s text with `text` in one rename: written under a name of this
/// process's own (nodes sharing a file each write theirs), the file's permissions
/// kept, flushed before it replaces the file.
pub(super) fn replace_file(file: &Path, text: &str) -> std::io::Result<()> {
    let temporary = file.with_extension(format!("toml.placing.{}", std::process::id()));
    std::fs::write(&temporary, text)?;
    if let Ok(metadata) = std::fs::metadata(file) {
        std::fs::set_permissions(&temporary, metadata.permissions())?;
    }
    std::fs::File::open(&temporary)?.sync_all()?;
    std::fs::rename(&temporary, file)
}

/// The sections written differently in `before` and `after`, `[placement]` left out;
/// a module is named alone (`modules.users`) rather than all of `[modules]`.
fn changed_sections(before: &toml::Table, after: &toml::Table) -> Vec<String> {
    let mut changed = Vec::new();
    let keys: std::collections::BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    for key in keys {
        if key == "placement" {
            continue;
        }
        let (old, new) = (before.get(key.as_str()), after.get(key.as_str()));
        if old == new {
            continue;
        }
        match (key.as_str(), old, new) {
            ("modules", Some(toml::Value::Table(old)), Some(toml::Value::Table(new))) => {
                for module in changed_sections(old, new) {
                    changed.push(format!("modules.{module}"));
                }
            }
            _ => changed.push(key.clone()),
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A split deployment in `dir`, the placement as `placement` says.
    fn split(dir: &std::path::Path, placement: &str, extra: &str) -> Deployment {
        for file in ["a.wasm", "b.wasm"] {
            std::fs::write(dir.join(file), b"").unwrap();
        }
        let text = format!(
            r#"
            [app]
            name = "t"
            [modules.stateless]
            component = "a.wasm"
            [modules.ledger]
            component = "b.wasm"
            database = "sqlite"
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
        Deployment::parse(&dir.join("d.toml"), &text).unwrap()
    }

    #[test]
    fn a_placement_written_back_changes_that_module_s_line_alone() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("d.toml");
        let text = "[app]\nname = \"t\"\n[placement]\nstateless = [\"a\"] # comment\n\
                    ledger = [\"b\"]\n\n[mesh]\nledger = 1\n";
        std::fs::write(&file, text).unwrap();
        write_placement(&file, "ledger", &["a".to_string()]).unwrap();
        let written = std::fs::read_to_string(&file).unwrap();
        assert_eq!(
            written,
            text.replace("ledger = [\"b\"]", "ledger = [\"a\"]")
        );
        write_placement(&file, "newcomer", &["b".to_string(), "a".to_string()]).unwrap();
        assert!(std::fs::read_to_string(&file)
            .unwrap()
            .contains("[placement]\nnewcomer = [\"b\", \"a\"]\nstateless"));
        std::fs::write(&file, "[app]\n").unwrap();
        assert!(write_placement(&file, "ledger", &[]).is_err());
    }

    #[test]
    fn a_new_placement_of_a_module_without_a_sqlite_file_may_be_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let running = split(dir.path(), "stateless = [\"a\"]\nledger = [\"b\"]", "");
        let moved = split(
            dir.path(),
            "stateless = [\"a\", \"b\"]\nledger = [\"b\"]",
            "",
        );
        assert_eq!(running.reload_problems(&moved), []);
        assert_eq!(running.reload_problems(&running), []);
    }

    #[test]
    fn a_sqlite_module_moved_or_any_other_section_changed_is_refused_by_key() {
        let dir = tempfile::tempdir().unwrap();
        let running = split(dir.path(), "stateless = [\"a\"]\nledger = [\"b\"]", "");
        let moved = split(dir.path(), "stateless = [\"a\"]\nledger = [\"a\"]", "");
        let problems = running.reload_problems(&moved);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].key, "placement.ledger");
        assert!(problems[0].problem.contains("SQLite file on node b"));
        assert_eq!(problems[0].file, dir.path().join("d.toml"));

        let limits = split(
            dir.path(),
            "stateless = [\"a\"]\nledger = [\"b\"]",
            "limits = { timeout = \"9s\" }\n[gateway]\nmax_body = \"2MiB\"",
        );
        let keys: Vec<String> = running
            .reload_problems(&limits)
            .into_iter()
            .map(|problem| problem.key)
            .collect();
        assert_eq!(keys, ["gateway", "modules.ledger"]);
    }
}
