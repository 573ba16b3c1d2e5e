//! A module's `database` changed while the nodes run: `modhost extract M --to NODE
//! --to-postgres URL` moves a SQLite module onto a node that keeps its data in
//! Postgres. The new database is read as a start reads it ([`Deployment::with_postgres`]:
//! the same checks, the same problems), every node takes it in place of the one it
//! started with ([`Deployment::amend_database`]: what a later reload compares the file
//! with), and writes it into the file that wrote `[modules]`
//! ([`write_database`]), so a restart or a reload keeps it.

use std::path::Path;
use std::sync::Arc;

use super::database::{check_postgres_names, parse_database};
use super::errors::Problems;
use super::{ConfigErrors, DatabaseBackend, Deployment, ModuleSpec};

/// A module's database as it is to be from now on: its spec, and the value written
/// for it (`database = …`).
#[derive(Debug, Clone)]
pub struct AmendedDatabase {
    /// The module's spec, its `database` the new one.
    pub spec: ModuleSpec,
    /// The `database` value written in the deployment file.
    pub written: toml::Value,
}

impl Deployment {
    /// Module `module`, which keeps its data in SQLite, with `postgres` (a
    /// `postgres://` URL, or `$NAME` of an environment variable that holds one) as
    /// its database instead — the rest of its `database` settings (pool, timeouts)
    /// kept. Checked as a start checks it; the problems name the key.
    pub fn with_postgres(
        &self,
        module: &str,
        postgres: &str,
    ) -> Result<AmendedDatabase, ConfigErrors> {
        let key = format!("modules.{module}");
        let mut problems = Problems::of(self.origins.clone());
        let Some(spec) = self.modules.get(module) else {
            problems.add(&key, "no such module in the deployment");
            return Err(ConfigErrors(problems.into_errors()));
        };
        let Some(database) = spec.database.as_ref() else {
            problems.add(&key, "has no database of its own to move to postgres");
            return Err(ConfigErrors(problems.into_errors()));
        };
        if database.backend != DatabaseBackend::Sqlite {
            problems.add(
                &format!("{key}.database"),
                "is on postgres already: the module moves as it is, without --to-postgres",
            );
            return Err(ConfigErrors(problems.into_errors()));
        }
        let mut table = match self.written_database(module) {
            Some(toml::Value::Table(table)) => table.clone(),
            _ => toml::Table::new(),
        };
        table.remove("sqlite");
        table.insert("postgres".into(), toml::Value::String(postgres.into()));
        let written = toml::Value::Table(table);
        let parsed = parse_database(
            self.origins.dir_of("modules"),
            &key,
            module,
            &written,
            database.migrations.clone(),
            &mut problems,
        );
        let Some(parsed) = parsed else {
            return Err(ConfigErrors(problems.into_errors()));
        };
        let amended = ModuleSpec {
            database: Some(parsed),
            ..spec.clone()
        };
        let mut modules = self.modules.clone();
        modules.insert(module.to_string(), amended.clone());
        check_postgres_names(&modules, &mut problems);
        let problems = problems.into_errors();
        if !problems.is_empty() {
            return Err(ConfigErrors(problems));
        }
        Ok(AmendedDatabase {
            spec: amended,
            written,
        })
    }

    /// Takes `amended` as module `amended.spec.name`'s database, as if the file had
    /// said so when the node started.
    pub fn amend_database(&mut self, amended: &AmendedDatabase) {
        let name = amended.spec.name.clone();
        let mut written = (*self.written).clone();
        if let Some(toml::Value::Table(module)) = written
            .get_mut("modules")
            .and_then(|modules| modules.as_table_mut())
            .and_then(|modules| modules.get_mut(&name))
        {
            module.insert("database".into(), amended.written.clone());
        }
        self.written = Arc::new(written);
        self.modules.insert(name, amended.spec.clone());
    }

    /// Module `module`'s `database` value, as written.
    fn written_database(&self, module: &str) -> Option<&toml::Value> {
        self.written
            .get("modules")?
            .as_table()?
            .get(module)?
            .as_table()?
            .get("database")
    }
}

/// Writes `database = VALUE` in module `module`'s section (`[modules.MODULE]`) of
/// `file`, in place of its `database` line, so that a restart — or a reload — keeps a
/// database changed while the nodes ran. The rest of the file is kept as written; the
/// new text replaces the old in one rename. Refused, with the file untouched, when the
/// module's `database` is not one line of such a section.
pub fn write_database(file: &Path, module: &str, value: &toml::Value) -> std::io::Result<()> {
    let new = with_database(file, module, value)?;
    super::reload::replace_file(file, &new)
}

/// Whether [`write_database`] could write `value` for `module` in `file` now: the
/// line found, and a file made and removed beside it (a read-only mount refuses).
pub fn can_write_database(file: &Path, module: &str, value: &toml::Value) -> std::io::Result<()> {
    with_database(file, module, value)?;
    let probe = file.with_extension(format!("toml.probing.{}", std::process::id()));
    std::fs::write(&probe, b"")?;
    std::fs::remove_file(&probe)
}

/// `file`'s text with module `module`'s `database` line in its section replaced by
/// `database = VALUE` (what [`write_database`] writes); why not, if it cannot be.
fn with_database(file: &Path, module: &str, value: &toml::Value) -> std::io::Result<String> {
    let text = std::fs::read_to_string(file)?;
    let line = format!("database = {value}");
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let header = format!("[modules.{module}]");
    // The value is not in the message: it may hold a password.
    let by_hand = |why: &str| {
        std::io::Error::other(format!(
            "{}: {why}; write the module's new `database` there by hand",
            file.display()
        ))
    };
    let start = lines
        .iter()
        .position(|l| l.split('#').next().unwrap_or_default().trim() == header)
        .ok_or_else(|| by_hand("the module has no section of its own"))?;
    let at = super::reload::key_line(&lines, start, "database")
        .ok_or_else(|| by_hand("the module's section has no `database =` line"))?;
    // A value written over several lines is not one this edit can keep whole.
    let written = lines[at].split('#').next().unwrap_or_default();
    if written.matches('{').count() != written.matches('}').count() {
        return Err(by_hand("the module's database spans several lines"));
    }
    lines[at] = line;
    let mut new = lines.join("\n");
    new.push('\n');
    Ok(new)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deployment of two modules in `dir`, `ledger` on SQLite with `database`.
    fn deployment(dir: &Path, database: &str) -> Deployment {
        std::fs::write(dir.join("a.wasm"), b"").unwrap();
        let text = format!(
            "[app]\nname = \"t\"\n[modules.ledger]\ncomponent = \"a.wasm\"\n\
             database = {database}\n[modules.other]\ncomponent = \"a.wasm\"\n\
             database = {{ postgres = \"postgres://h/db\", schema = \"books\" }}\n"
        );
        std::fs::write(dir.join("d.toml"), &text).unwrap();
        Deployment::parse(&dir.join("d.toml"), &text).unwrap()
    }

    #[test]
    fn a_sqlite_module_takes_postgres_with_its_other_settings_kept() {
        let dir = tempfile::tempdir().unwrap();
        let running = deployment(dir.path(), "{ sqlite = true, pool = 3 }");
        let amended = running
            .with_postgres("ledger", "postgres://u:p@h/db")
            .unwrap();
        let database = amended.spec.database.as_ref().unwrap();
        assert_eq!(database.pool, 3);
        assert!(matches!(
            &database.backend,
            DatabaseBackend::Postgres { url, schema, .. }
                if url == "postgres://u:p@h/db" && schema == "ledger"
        ));
        assert_eq!(
            amended.written.to_string(),
            "{ pool = 3, postgres = \"postgres://u:p@h/db\" }"
        );

        // The amended deployment reads like the file written with it.
        let file = dir.path().join("d.toml");
        write_database(&file, "ledger", &amended.written).unwrap();
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(text.contains("[modules.ledger]\ncomponent = \"a.wasm\"\ndatabase = { pool = 3, postgres = \"postgres://u:p@h/db\" }\n[modules.other]"), "{text}");
        let reread = Deployment::parse(&file, &text).unwrap();
        let mut running = running;
        assert!(!running.reload_problems(&reread).is_empty());
        running.amend_database(&amended);
        assert_eq!(running.reload_problems(&reread), []);
        assert_eq!(
            running.modules["ledger"].database,
            reread.modules["ledger"].database
        );
    }

    #[test]
    fn a_database_that_would_not_start_is_refused_by_key() {
        let dir = tempfile::tempdir().unwrap();
        let running = deployment(dir.path(), "\"sqlite\"");
        let problems = |module: &str, url: &str| -> Vec<String> {
            match running.with_postgres(module, url) {
                Ok(_) => Vec::new(),
                Err(errors) => errors
                    .0
                    .into_iter()
                    .map(|e| format!("{}: {}", e.key, e.problem))
                    .collect(),
            }
        };
        assert_eq!(
            problems("ledger", "mysql://h/db"),
            ["modules.ledger.database.postgres: must be a postgres:// connection URL"]
        );
        assert_eq!(problems("other", "postgres://h/db").len(), 1);
        assert!(problems("other", "postgres://h/db")[0].contains("on postgres already"));
        assert!(problems("nobody", "postgres://h/db")[0].contains("no such module"));
        assert!(problems("ledger", "$MODHOST_TEST_UNSET_URL")[0].contains("is not set"));
        assert_eq!(problems("ledger", "postgres://h/db"), Vec::<String>::new());
    }

    #[test]
    fn a_database_written_over_several_lines_or_without_a_section_is_left_to_the_operator() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("d.toml");
        let value: toml::Value = toml::Value::String("x".into());
        for text in [
            "[modules.ledger]\ndatabase = { sqlite = true,\n pool = 3 }\n",
            "[modules]\nledger = { database = \"sqlite\" }\n",
            "[modules.ledger]\ncomponent = \"a\"\n[modules.other]\ndatabase = \"sqlite\"\n",
        ] {
            std::fs::write(&file, text).unwrap();
            assert!(write_database(&file, "ledger", &value).is_err(), "{text}");
            assert_eq!(std::fs::read_to_string(&file).unwrap(), text);
        }
    }
}
