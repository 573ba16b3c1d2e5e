//! A module's schema changes: numbered SQL files, applied once each, in order.
//!
//! The migrations directory holds `NNNN_description.sql` files (`0001_create_stock.sql`,
//! …). At start the host applies the ones not yet applied, in version order, each in
//! its own transaction together with its record in the module's `modhost_migrations`
//! table (version, file name, SHA-256 checksum, time). A migration that fails rolls
//! back and stops that module from starting, naming the file and the database's
//! message. A migration that was applied and then edited is refused: its checksum no
//! longer matches the record, and a database cannot be un-migrated to match.

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

use super::{Database, Error, Value};

/// One migration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migration {
    /// Its number, from the file name.
    pub version: i64,
    /// The file.
    pub file: PathBuf,
    /// Its SQL: one or more statements.
    pub sql: String,
    /// Hex SHA-256 of its SQL.
    pub checksum: String,
}

/// The migrations in `dir`, by version. Files that are not `*.sql` are ignored; an
/// `.sql` file without a leading number, or two files with the same number, is an
/// error.
pub fn read(dir: &Path) -> Result<Vec<Migration>> {
    let mut migrations = Vec::new();
    let entries = std::fs::read_dir(dir)
        .with_context(|| format!("reading migrations in {}", dir.display()))?;
    for entry in entries {
        let file = entry?.path();
        if file.extension().and_then(|e| e.to_str()) != Some("sql") {
            continue;
        }
        let name = file
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        let digits: String = name.chars().take_while(char::is_ascii_digit).collect();
        let version = match (digits.parse::<i64>(), name[digits.len()..].starts_with('_')) {
            (Ok(version), true) => version,
            _ => bail!(
                "migration {}: the name must be NNNN_description.sql",
                file.display()
            ),
        };
        let sql = std::fs::read_to_string(&file)
            .with_context(|| format!("reading migration {}", file.display()))?;
        let checksum = Sha256::digest(sql.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        migrations.push(Migration {
            version,
            file,
            sql,
            checksum,
        });
    }
    migrations.sort_by_key(|m| m.version);
    if let Some(pair) = migrations.windows(2).find(|w| w[0].version == w[1].version) {
        bail!(
            "migrations {} and {} have the same number",
            pair[0].file.display(),
            pair[1].file.display()
        );
    }
    Ok(migrations)
}

const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS modhost_migrations (\
     version BIGINT PRIMARY KEY, \
     file TEXT NOT NULL, \
     checksum TEXT NOT NULL, \
     applied_at TEXT NOT NULL)";

/// The host function (Postgres) that records a migration in the module's transaction.
const RECORD_MIGRATION: &str = "modhost_record_migration";

const INSERT_MIGRATION: &str = "INSERT INTO modhost_migrations \
     (version, file, checksum, applied_at) VALUES ($1, $2, $3, $4)";

/// Applies `database`'s pending migrations from `dir`; returns how many it applied.
/// Safe to run from several nodes at once (see [`serialise`]).
pub async fn apply(database: &Database, dir: &Path) -> Result<usize> {
    let migrations = read(dir)?;
    let module = database.module();
    // On Postgres a migration's transaction is the module's, and records the
    // migration through the host's function.
    let mut create = vec![CREATE_TABLE.to_string()];
    create.extend(database.host_function(
        RECORD_MIGRATION,
        "p_version bigint, p_file text, p_checksum text, p_applied_at text",
        "bigint",
        "INSERT INTO modhost_migrations (version, file, checksum, applied_at) \
         VALUES (p_version, p_file, p_checksum, p_applied_at); RETURN 1;",
    ));
    database.host_prepare(&create).await.map_err(|e| {
        anyhow::anyhow!(
            "module {module}: creating modhost_migrations: {}",
            describe(&e)
        )
    })?;
    let applied = database
        .host_query(
            "SELECT version, file, checksum FROM modhost_migrations ORDER BY version",
            Vec::new(),
        )
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "module {module}: reading modhost_migrations: {}",
                describe(&e)
            )
        })?;

    let mut done = std::collections::BTreeMap::new();
    for row in &applied.rows {
        if let [Value::Integer(version), Value::Text(file), Value::Text(checksum)] = row.as_slice()
        {
            done.insert(*version, (file.clone(), checksum.clone()));
        }
    }
    for migration in &migrations {
        if let Some((_, recorded)) = done.get(&migration.version) {
            if *recorded != migration.checksum {
                bail!(
                    "module {module}: migration {} was edited after it was applied \
                     (recorded checksum {}, file now {}); add a new migration instead",
                    migration.file.display(),
                    &recorded[..12.min(recorded.len())],
                    &migration.checksum[..12]
                );
            }
        }
    }

    let mut count = 0;
    // Collected first: an iterator adapter with a closure, held across the awaits
    // below, would keep this future from being `Send` for every caller.
    let pending: Vec<Migration> = migrations
        .into_iter()
        .filter(|m| !done.contains_key(&m.version))
        .collect();
    for migration in &pending {
        let failed = FailedMigration { module, migration };
        let failed = |e: Error| failed.error(e);
        let mut transaction = database.begin().await.map_err(failed)?;
        serialise(database, &mut transaction)
            .await
            .map_err(failed)?;
        // Another node may have applied it while this one waited for the lock (and
        // committed it: the lock is held to the end of its transaction).
        let already = database
            .host_query(
                "SELECT version FROM modhost_migrations WHERE version = $1",
                vec![Value::Integer(migration.version)],
            )
            .await
            .map_err(failed)?;
        if !already.rows.is_empty() {
            transaction.rollback().await.map_err(failed)?;
            // Another node changed the schema under this node's connections.
            database.schema_changed();
            continue;
        }
        transaction
            .execute_script(&migration.sql)
            .await
            .map_err(failed)?;
        let file_name = migration
            .file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let record = vec![
            Value::Integer(migration.version),
            Value::Text(file_name),
            Value::Text(migration.checksum.clone()),
            Value::Text(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        ];
        match database.backend() {
            "postgres" => transaction
                .host_call(RECORD_MIGRATION, record)
                .await
                .map(drop),
            _ => transaction
                .host_execute(INSERT_MIGRATION, record)
                .await
                .map(drop),
        }
        .map_err(failed)?;
        transaction.commit().await.map_err(failed)?;
        // Statements the module's connections keep prepared may read the old shape.
        database.schema_changed();
        count += 1;
    }
    Ok(count)
}

/// The error of a migration that failed, naming module, file and the database's message.
struct FailedMigration<'a> {
    module: &'a str,
    migration: &'a Migration,
}

impl FailedMigration<'_> {
    fn error(&self, error: Error) -> anyhow::Error {
        anyhow::anyhow!(
            "module {}: migration {} failed: {}",
            self.module,
            self.migration.file.display(),
            describe(&error)
        )
    }
}

/// On Postgres, waits for the module's migration lock (held until `transaction` ends),
/// so nodes starting together apply each migration once, one after the other. SQLite
/// needs none: its file has one writer at a time.
async fn serialise(database: &Database, transaction: &mut super::Transaction) -> Result<(), Error> {
    if let Some(key) = database.lock_key(&format!("modhost_migrations.{}", database.module())) {
        transaction
            .host_execute(
                "SELECT pg_advisory_xact_lock($1)",
                vec![Value::Integer(key)],
            )
            .await?;
    }
    Ok(())
}

/// A database error as one line of text.
pub fn describe(error: &Error) -> String {
    match error {
        Error::ConstraintViolation(failure) => match &failure.constraint {
            Some(name) => format!("constraint {name}: {}", failure.message),
            None => failure.message.clone(),
        },
        Error::Syntax(message)
        | Error::Denied(message)
        | Error::Unavailable(message)
        | Error::Other(message) => message.clone(),
        Error::Timeout => "timed out".to_string(),
        Error::TooLarge(limit) => format!("a result larger than {limit} bytes"),
    }
}
