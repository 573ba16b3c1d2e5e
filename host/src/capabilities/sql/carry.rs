//! A module whose `database` changes from SQLite to Postgres takes its data along.
//!
//! An operator who outgrows a module's SQLite file writes
//! `database = { postgres = "…" }` for it and restarts its node. The node opens the
//! module on Postgres as usual (its role, its schema, its migrations); then, finding
//! the module's SQLite file still in the data dir, it **carries** the file's data over
//! before the module serves — instead of serving an empty schema while the data sits
//! unused beside it:
//!
//! 1. the file is opened as it would be on SQLite (its migrations brought up to the
//!    module's, so both sides have the same tables), and the migrations applied on
//!    both sides must be the same ones;
//! 2. in **one transaction** on Postgres, as the module's role: every table of the
//!    module's, parents before the children whose foreign keys point at them, is
//!    copied row by row — each value cast to its Postgres column's type — and read
//!    back; each table's row count and an order-independent digest of its rows (as
//!    the module would read them) must match the file's, or nothing is kept. Serial
//!    and identity columns' sequences move past the rows carried. Then each
//!    capability carries what it keeps in the file ([`Capability::carry`]: the events
//!    waiting in the outbox, sealed again; the inbox of handled events), and the
//!    carry is recorded in the host's `modhost_carried` table;
//! 3. only once that transaction committed is the file set aside, renamed
//!    `<module>.sqlite.carried-to-postgres` (kept: nothing is deleted).
//!
//! A crash between the commit and the rename is found at the next start by the record
//! (keyed by the file's own secret), and the file is set aside then. A schema that
//! already holds rows of the module's while its SQLite file is still here is refused:
//! two copies of the data, and the node cannot know which one is right — the module
//! does not start, the log says what to remove, and both are left as they are.
//!
//! [`Capability::carry`]: crate::capabilities::Capability::carry

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::{sqlite, Database, Transaction, Value};
use crate::capabilities::{Capabilities, OpenContext, StateMap};
use crate::deployment::{DatabaseBackend, DatabaseSpec};

/// What the record of a carry is keyed with: [`Database::host_key`] of the file.
const CARRIED_PURPOSE: &str = "modhost carried file";

/// The host function (Postgres) that records a carry in the module's transaction.
const RECORD_CARRIED: &str = "modhost_record_carried";

/// The suffix of a SQLite file whose data was carried to Postgres.
pub const CARRIED_SUFFIX: &str = "carried-to-postgres";

/// Rows read or written in one statement, at most.
const PAGE_ROWS: usize = 500;

/// Bytes of values read in one page, about: a page stops growing past it.
const PAGE_BYTES: u64 = 4 * 1024 * 1024;

/// Postgres takes at most this many parameters in one statement (65,535), with room.
const MAX_PARAMETERS: usize = 30_000;

/// Carries module `module`'s data from its SQLite file of before into its database on
/// Postgres (`state`, opened), when the file is still here (see the module docs).
/// Nothing to do for a module on SQLite, or without a file left behind.
pub async fn from_sqlite(
    capabilities: &Capabilities,
    module: OpenContext<'_>,
    state: &StateMap,
) -> Result<()> {
    let Some(to) = state.get::<Database>() else {
        return Ok(());
    };
    let data_dir = &module.deployment.data_dir;
    let name = &module.spec.name;
    let file = sqlite::file_of(data_dir, name);
    if to.backend() == "sqlite" || !file.exists() {
        return Ok(());
    }
    let started = Instant::now();
    let Some(spec) = &module.spec.database else {
        return Ok(());
    };
    let former = DatabaseSpec {
        backend: DatabaseBackend::Sqlite,
        pool: 1,
        // The host reads the file in pages it bounds itself.
        max_result: crate::deployment::ByteSize::mib(1024),
        ..spec.clone()
    };
    let carried = async {
        // What a carry that committed recorded, or why there is to be none, is known
        // before the file is opened (and so changed: its migrations, its journal).
        let known = sqlite::kept_secret(&file).await?.map(|kept| identity(&kept));
        if let Some(counts) = carried_before(to, known.as_deref()).await? {
            tracing::info!(module = %name, file = %file.display(), "database: this SQLite file was carried over before (the node stopped before setting it aside)");
            return Ok(counts);
        }
        if let Some(table) = a_table_with_rows(to).await? {
            bail!(
                "its postgres schema already holds rows in table {table} while its SQLite \
                 file {} is still here: two copies of its data, and which one is right \
                 cannot be told. Remove the file (or rename it), or empty the schema, and \
                 restart",
                file.display()
            );
        }
        let from = Database::open(name, &former, data_dir, module.spec.limits.timeout.duration())
            .await
            .with_context(|| format!("opening {}", file.display()))?;
        // A file without a secret gets one as it opens.
        let identified = match known {
            Some(known) => Ok(known),
            None => sqlite::kept_secret(&file)
                .await
                .and_then(|kept| kept.map(|kept| identity(&kept)).context("the file keeps no secret")),
        };
        let carried = match identified {
            Ok(source) => carry(capabilities, module, state, &from, to, &file, source).await,
            Err(error) => Err(error),
        };
        from.close().await;
        carried
    }
    .await
    .with_context(|| {
        format!(
            "carrying its SQLite file {} into its postgres schema (nothing was kept there)",
            file.display()
        )
    })?;
    let kept = set_aside(&file)
        .with_context(|| format!("setting {} aside after carrying it", file.display()))?;
    tracing::info!(
        module = %name,
        rows = ?carried,
        kept = %kept.display(),
        ms = started.elapsed().as_millis() as u64,
        "database: the module's SQLite data is carried over to postgres, checked; the file is kept aside"
    );
    Ok(())
}

/// The carry itself: nothing committed unless every table matched.
async fn carry(
    capabilities: &Capabilities,
    module: OpenContext<'_>,
    state: &StateMap,
    from: &Database,
    to: &Database,
    file: &Path,
    source: String,
) -> Result<BTreeMap<String, u64>> {
    same_migrations(from, to).await?;
    let tables = module_tables(from).await?;

    let mut tx = to.begin().await.map_err(sql)?;
    // Another node opening the module at the same moment waits, then finds its rows.
    if let Some(key) = to.lock_key("modhost.carry") {
        tx.host_query(
            "SELECT pg_advisory_xact_lock($1)::text",
            vec![Value::Integer(key)],
        )
        .await
        .map_err(sql)?;
    }
    let mut counts = BTreeMap::new();
    for table in &tables {
        let target = target_table(&mut tx, table).await?;
        let held = tx
            .query(
                &format!("SELECT 1 FROM {} LIMIT 1", quote(&target.name)),
                Vec::new(),
            )
            .await
            .map_err(sql)?;
        if !held.rows.is_empty() {
            bail!(
                "its postgres schema already holds rows in table {} while its SQLite file {} \
                 is still here: two copies of its data, and which one is right cannot be told. \
                 Remove the file (or rename it), or empty the schema, and restart",
                target.name,
                file.display()
            );
        }
        let copied = copy_table(from, &mut tx, table, &target).await?;
        let read_back = read_back(&mut tx, &target, copied.widest).await?;
        if read_back != copied.rows {
            bail!(
                "table {}: {} rows with digest {} in the file, {} rows with digest {} read back \
                 from postgres (a value its column's type does not keep as it was?)",
                table.name,
                copied.rows.count,
                copied.rows.digest(),
                read_back.count,
                read_back.digest()
            );
        }
        advance_sequences(&mut tx, &target).await?;
        counts.insert(table.name.clone(), copied.rows.count);
    }
    for capability in capabilities.iter() {
        counts.extend(capability.carry(module, state, from, &mut tx).await?);
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as i64);
    tx.host_call(
        RECORD_CARRIED,
        vec![
            Value::Text(source),
            Value::Text(file.display().to_string()),
            Value::Integer(now),
            Value::Text(serde_json::to_string(&counts).unwrap_or_default()),
        ],
    )
    .await
    .map_err(sql)?;
    tx.commit().await.map_err(sql)?;
    Ok(counts)
}

/// What a file that keeps secret `kept` is recorded as, once carried: a digest of the
/// secret (which itself stays in the file).
fn identity(kept: &str) -> String {
    let digest = Sha256::new()
        .chain_update(CARRIED_PURPOSE.as_bytes())
        .chain_update(kept.as_bytes())
        .finalize();
    hex(&digest[..16])
}

/// The counts a carry of the file `identity` recorded in `to`, if one did. Makes the
/// record table (and on Postgres the function that writes it) if missing.
async fn carried_before(
    to: &Database,
    identity: Option<&str>,
) -> Result<Option<BTreeMap<String, u64>>> {
    let mut record = vec![
        "CREATE TABLE IF NOT EXISTS modhost_carried (source TEXT PRIMARY KEY, \
         file TEXT NOT NULL, carried_at BIGINT NOT NULL, counts TEXT NOT NULL)"
            .to_string(),
    ];
    record.extend(to.host_function(
        RECORD_CARRIED,
        "p_source text, p_file text, p_at bigint, p_counts text",
        "bigint",
        "INSERT INTO modhost_carried (source, file, carried_at, counts) \
         VALUES (p_source, p_file, p_at, p_counts); RETURN 1;",
    ));
    to.host_prepare(&record).await.map_err(sql)?;
    let Some(identity) = identity else {
        return Ok(None);
    };
    let before = to
        .host_query(
            "SELECT counts FROM modhost_carried WHERE source = $1",
            vec![Value::Text(identity.to_string())],
        )
        .await
        .map_err(sql)?;
    Ok(match before.rows.first().map(Vec::as_slice) {
        Some([Value::Text(counts)]) => Some(serde_json::from_str(counts).unwrap_or_default()),
        _ => None,
    })
}

/// A table of the module's schema in `to` that holds a row, if one does.
async fn a_table_with_rows(to: &Database) -> Result<Option<String>> {
    let tables = to
        .query(
            "SELECT table_name::text FROM information_schema.tables \
             WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' \
             ORDER BY table_name",
            Vec::new(),
        )
        .await
        .map_err(sql)?;
    for row in tables.rows {
        let [Value::Text(table)] = row.as_slice() else {
            continue;
        };
        let held = to
            .query(
                &format!("SELECT 1 FROM {} LIMIT 1", quote(table)),
                Vec::new(),
            )
            .await
            .map_err(sql)?;
        if !held.rows.is_empty() {
            return Ok(Some(table.clone()));
        }
    }
    Ok(None)
}

/// A SQL error as the cause of a failed carry.
fn sql(error: super::Error) -> anyhow::Error {
    anyhow::anyhow!("{error:?}")
}

/// Refuses a carry between databases whose migrations differ: their tables would too.
async fn same_migrations(from: &Database, to: &Database) -> Result<()> {
    const APPLIED: &str = "SELECT version, checksum FROM modhost_migrations ORDER BY version";
    let has_table = from
        .query(
            "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = 'modhost_migrations'",
            Vec::new(),
        )
        .await
        .map_err(sql)?;
    let from_applied = if has_table.rows == [vec![Value::Integer(1)]] {
        from.host_query(APPLIED, Vec::new())
            .await
            .map_err(sql)?
            .rows
    } else {
        Vec::new()
    };
    // On Postgres the table is made with the database, migrations or not.
    let to_applied = to.host_query(APPLIED, Vec::new()).await.map_err(sql)?.rows;
    if from_applied != to_applied {
        bail!(
            "the SQLite file has migrations {:?} applied, the postgres schema {:?}: \
             they must be the same to carry the tables",
            versions(&from_applied),
            versions(&to_applied)
        );
    }
    Ok(())
}

/// The versions in rows of `(version, checksum)`.
fn versions(rows: &[Vec<Value>]) -> Vec<i64> {
    rows.iter()
        .filter_map(|row| match row.first() {
            Some(Value::Integer(version)) => Some(*version),
            _ => None,
        })
        .collect()
}

/// One of the module's tables in its SQLite file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Table {
    name: String,
    columns: Vec<String>,
    /// Whether rows have a `rowid` to page by (not a `WITHOUT ROWID` table).
    rowid: bool,
    /// The columns of its primary key, to page a `WITHOUT ROWID` table by.
    key: Vec<String>,
}

/// The module's tables in `from` (not the host's), each after the tables its foreign
/// keys point to.
async fn module_tables(from: &Database) -> Result<Vec<Table>> {
    let names = from
        .query(
            "SELECT t.name, t.wr FROM pragma_table_list AS t WHERE t.schema = 'main' \
             AND t.type = 'table' AND t.name NOT LIKE 'sqlite%' \
             AND substr(t.name, 1, 8) <> 'modhost_' ORDER BY t.name",
            Vec::new(),
        )
        .await
        .map_err(sql)?;
    let mut tables = Vec::new();
    let mut parents: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for row in names.rows {
        let [Value::Text(name), Value::Integer(without_rowid)] = row.as_slice() else {
            continue;
        };
        let columns = from
            .query(
                "SELECT name, pk FROM pragma_table_info($1) ORDER BY cid",
                vec![Value::Text(name.clone())],
            )
            .await
            .map_err(sql)?;
        let mut key: Vec<(i64, String)> = Vec::new();
        let mut names = Vec::new();
        for column in columns.rows {
            if let [Value::Text(column), Value::Integer(pk)] = column.as_slice() {
                names.push(column.clone());
                if *pk > 0 {
                    key.push((*pk, column.clone()));
                }
            }
        }
        key.sort();
        let referenced = from
            .query(
                "SELECT DISTINCT \"table\" FROM pragma_foreign_key_list($1)",
                vec![Value::Text(name.clone())],
            )
            .await
            .map_err(sql)?;
        parents.insert(
            name.clone(),
            referenced
                .rows
                .into_iter()
                .filter_map(|row| match row.into_iter().next() {
                    Some(Value::Text(parent)) if parent != *name => Some(parent),
                    _ => None,
                })
                .collect(),
        );
        tables.push(Table {
            name: name.clone(),
            columns: names,
            rowid: *without_rowid == 0,
            key: key.into_iter().map(|(_, column)| column).collect(),
        });
    }
    in_dependency_order(tables, &parents)
}

/// `tables` with every table after those it references (`parents`).
fn in_dependency_order(
    mut tables: Vec<Table>,
    parents: &BTreeMap<String, Vec<String>>,
) -> Result<Vec<Table>> {
    let mut ordered: Vec<Table> = Vec::new();
    while !tables.is_empty() {
        let placed = |name: &String| ordered.iter().any(|table| table.name == *name);
        let ready = tables.iter().position(|table| {
            parents.get(&table.name).is_none_or(|of| {
                of.iter()
                    .all(|parent| placed(parent) || !exists(&tables, parent, &ordered))
            })
        });
        match ready {
            Some(index) => ordered.push(tables.remove(index)),
            None => bail!(
                "the foreign keys of tables {:?} point at each other in a circle: they cannot \
                 be carried one after the other",
                tables.iter().map(|t| &t.name).collect::<Vec<_>>()
            ),
        }
    }
    Ok(ordered)
}

/// Whether `name` is one of the tables to carry (a foreign key may name a missing one).
fn exists(waiting: &[Table], name: &str, placed: &[Table]) -> bool {
    waiting.iter().chain(placed).any(|table| table.name == name)
}

/// A table of the module's Postgres schema, as the carry writes it.
struct Target {
    name: String,
    /// For each column of the SQLite table, in its order: the Postgres column's name
    /// and type.
    columns: Vec<(String, String)>,
}

/// The Postgres table that `table` is carried into: the same name as written, or
/// folded to lower case as Postgres folds a name written without quotes.
async fn target_table(tx: &mut Transaction, table: &Table) -> Result<Target> {
    const COLUMNS: &str = "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod) \
         FROM pg_attribute AS a \
         WHERE a.attrelid = to_regclass(format('%I.%I', current_schema(), $1::text)) \
         AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum";
    for name in [table.name.clone(), table.name.to_lowercase()] {
        let found = tx
            .query(COLUMNS, vec![Value::Text(name.clone())])
            .await
            .map_err(sql)?;
        if found.rows.is_empty() {
            continue;
        }
        let there: Vec<(String, String)> = found
            .rows
            .into_iter()
            .filter_map(|row| match <[Value; 2]>::try_from(row).ok()? {
                [Value::Text(column), Value::Text(kind)] => Some((column, kind)),
                _ => None,
            })
            .collect();
        let mut columns = Vec::new();
        for column in &table.columns {
            let matching = there.iter().find(|(name, _)| name == column).or_else(|| {
                there
                    .iter()
                    .find(|(name, _)| *name == column.to_lowercase())
            });
            match matching {
                Some(found) => columns.push(found.clone()),
                None => bail!(
                    "table {name} has no column {column} in the postgres schema (it has {:?})",
                    there.iter().map(|(name, _)| name).collect::<Vec<_>>()
                ),
            }
        }
        return Ok(Target { name, columns });
    }
    bail!(
        "table {} of the SQLite file has no table in the postgres schema: its migrations \
         did not make one",
        table.name
    )
}

/// An order-independent digest of rows, and their count: the same rows give the same
/// digest whichever order they are read in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct RowDigest {
    count: u64,
    sum: u128,
}

impl RowDigest {
    /// Adds one row, its values as the module reads them.
    fn add(&mut self, values: &[Value]) {
        let mut hasher = Sha256::new();
        for value in values {
            match value {
                Value::Null => hasher.update([0]),
                Value::Integer(n) => {
                    hasher.update([1]);
                    hasher.update(n.to_be_bytes());
                }
                // SQLite keeps a boolean as an integer.
                Value::Boolean(b) => {
                    hasher.update([1]);
                    hasher.update(i64::from(*b).to_be_bytes());
                }
                Value::Real(x) => {
                    hasher.update([2]);
                    hasher.update(x.to_bits().to_be_bytes());
                }
                Value::Text(text) => {
                    hasher.update([3]);
                    hasher.update((text.len() as u64).to_be_bytes());
                    hasher.update(text.as_bytes());
                }
                Value::Blob(bytes) => {
                    hasher.update([4]);
                    hasher.update((bytes.len() as u64).to_be_bytes());
                    hasher.update(bytes);
                }
            }
        }
        let hash = hasher.finalize();
        let mut first = [0u8; 16];
        first.copy_from_slice(&hash[..16]);
        self.sum = self.sum.wrapping_add(u128::from_be_bytes(first));
        self.count += 1;
    }

    /// The digest, written for a person.
    fn digest(&self) -> String {
        format!("{:032x}", self.sum)
    }
}

/// What was copied of a table: its rows' digest, and its widest row's weight.
struct Copied {
    rows: RowDigest,
    widest: u64,
}

/// Copies every row of `table` from `from` into `target` inside `tx`.
async fn copy_table(
    from: &Database,
    tx: &mut Transaction,
    table: &Table,
    target: &Target,
) -> Result<Copied> {
    let columns: Vec<String> = table.columns.iter().map(|c| quote(c)).collect();
    let listed = columns.join(", ");
    // Pages by rowid, or by primary key for a table without one.
    let (select, order) = if table.rowid {
        (format!("rowid, {listed}"), "rowid".to_string())
    } else {
        let key: Vec<String> = table.key.iter().map(|c| quote(c)).collect();
        (listed.clone(), key.join(", "))
    };
    let per_statement = (MAX_PARAMETERS / columns.len().max(1)).clamp(1, PAGE_ROWS);
    let insert_head = format!(
        "INSERT INTO {} ({}) VALUES ",
        quote(&target.name),
        target
            .columns
            .iter()
            .map(|(name, _)| quote(name))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut copied = Copied {
        rows: RowDigest::default(),
        widest: 0,
    };
    let mut after: Option<i64> = None;
    let mut offset: i64 = 0;
    // Fewer rows a page once rows are seen to be wide: a page weighs about PAGE_BYTES.
    let mut limit = PAGE_ROWS as u64;
    loop {
        let page = if table.rowid {
            from.query(
                &format!(
                    "SELECT {select} FROM {} WHERE rowid > $1 ORDER BY rowid LIMIT {limit}",
                    quote(&table.name)
                ),
                vec![Value::Integer(after.unwrap_or(i64::MIN))],
            )
            .await
        } else {
            from.query(
                &format!(
                    "SELECT {select} FROM {} ORDER BY {order} LIMIT {limit} OFFSET $1",
                    quote(&table.name)
                ),
                vec![Value::Integer(offset)],
            )
            .await
        }
        .map_err(sql)?;
        if page.rows.is_empty() {
            break;
        }
        offset += page.rows.len() as i64;
        let mut rows = Vec::with_capacity(page.rows.len());
        for mut row in page.rows {
            if table.rowid {
                if let Value::Integer(rowid) = row.remove(0) {
                    after = Some(rowid);
                }
            }
            let weight = super::ResultBudget::weigh(&row);
            copied.widest = copied.widest.max(weight);
            copied.rows.add(&row);
            rows.push(row);
        }
        limit = (PAGE_BYTES / copied.widest.max(1)).clamp(1, PAGE_ROWS as u64);
        for chunk in rows.chunks(per_statement) {
            let mut statement = insert_head.clone();
            let mut params = Vec::with_capacity(chunk.len() * columns.len());
            for (r, row) in chunk.iter().enumerate() {
                statement.push_str(if r == 0 { "(" } else { ", (" });
                for (c, value) in row.iter().enumerate() {
                    if c > 0 {
                        statement.push_str(", ");
                    }
                    params.push(as_parameter(value));
                    let kind = target.columns.get(c).map_or("text", |(_, kind)| kind);
                    statement.push_str(&format!("CAST(${} AS {kind})", params.len()));
                }
                statement.push(')');
            }
            tx.execute(&statement, params)
                .await
                .map_err(sql)
                .with_context(|| format!("writing rows of table {}", table.name))?;
        }
    }
    Ok(copied)
}

/// A SQLite value as the carry binds it: numbers as their text, which Postgres casts
/// to any column type that can hold them (a 0/1 to a boolean too).
fn as_parameter(value: &Value) -> Value {
    match value {
        Value::Integer(n) => Value::Text(n.to_string()),
        Value::Real(x) => Value::Text(format!("{x:?}")),
        other => other.clone(),
    }
}

/// The rows of `target` as the module reads them from Postgres now (inside `tx`), as
/// a digest; `widest` bounds a page to what one result may weigh.
async fn read_back(tx: &mut Transaction, target: &Target, widest: u64) -> Result<RowDigest> {
    let listed: Vec<String> = target.columns.iter().map(|(name, _)| quote(name)).collect();
    let page = (PAGE_BYTES / widest.max(1)).clamp(1, PAGE_ROWS as u64);
    let statement = format!(
        // Named apart from `ctid`, which ORDER BY would otherwise take as this text.
        "SELECT ctid::text AS position, {} FROM {} WHERE ctid > CAST($1 AS tid) \
         ORDER BY ctid LIMIT {page}",
        listed.join(", "),
        quote(&target.name)
    );
    let mut digest = RowDigest::default();
    let mut after = "(0,0)".to_string();
    loop {
        let rows = tx
            .query(&statement, vec![Value::Text(after.clone())])
            .await
            .map_err(sql)?;
        if rows.rows.is_empty() {
            return Ok(digest);
        }
        for mut row in rows.rows {
            if let Value::Text(ctid) = row.remove(0) {
                after = ctid;
            }
            digest.add(&row);
        }
    }
}

/// Moves each serial or identity column's sequence of `target` past its largest value.
async fn advance_sequences(tx: &mut Transaction, target: &Target) -> Result<()> {
    for (column, _) in &target.columns {
        let sequence = tx
            .query(
                "SELECT pg_get_serial_sequence(format('%I.%I', current_schema(), $1::text), $2::text)",
                vec![Value::Text(target.name.clone()), Value::Text(column.clone())],
            )
            .await
            .map_err(sql)?;
        let Some([Value::Text(sequence)]) = sequence.rows.first().map(Vec::as_slice) else {
            continue;
        };
        tx.query(
            &format!(
                "SELECT setval(CAST($1 AS regclass), m) FROM (SELECT max({}) AS m FROM {}) AS x \
                 WHERE m IS NOT NULL",
                quote(column),
                quote(&target.name)
            ),
            vec![Value::Text(sequence.clone())],
        )
        .await
        .map_err(sql)?;
    }
    Ok(())
}

/// `name` as a quoted SQL identifier (both SQLite and Postgres).
fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `bytes` in hex.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Renames `file` (and its journal, if one is left) aside, to a name no start opens,
/// never over an earlier one; returns the new name.
fn set_aside(file: &Path) -> std::io::Result<PathBuf> {
    let mut kept = PathBuf::from(format!("{}.{CARRIED_SUFFIX}", file.display()));
    let mut n = 1;
    while kept.exists() {
        n += 1;
        kept = PathBuf::from(format!("{}.{CARRIED_SUFFIX}.{n}", file.display()));
    }
    for journal in ["-wal", "-shm"] {
        let beside = PathBuf::from(format!("{}{journal}", file.display()));
        if beside.exists() {
            std::fs::rename(&beside, format!("{}{journal}", kept.display()))?;
        }
    }
    std::fs::rename(file, &kept)?;
    Ok(kept)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(name: &str) -> Table {
        Table {
            name: name.into(),
            columns: vec!["id".into()],
            rowid: true,
            key: Vec::new(),
        }
    }

    #[test]
    fn parents_come_before_the_tables_that_reference_them() {
        let parents = BTreeMap::from([
            ("lines".to_string(), vec!["orders".to_string()]),
            ("orders".to_string(), vec!["customers".to_string()]),
            ("customers".to_string(), vec!["gone".to_string()]),
        ]);
        let ordered = in_dependency_order(
            vec![table("lines"), table("orders"), table("customers")],
            &parents,
        )
        .unwrap();
        let names: Vec<&str> = ordered.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["customers", "orders", "lines"]);

        let circle = BTreeMap::from([
            ("a".to_string(), vec!["b".to_string()]),
            ("b".to_string(), vec!["a".to_string()]),
        ]);
        let refused = in_dependency_order(vec![table("a"), table("b")], &circle).unwrap_err();
        assert!(refused.to_string().contains("in a circle"), "{refused}");
    }

    #[test]
    fn a_digest_of_rows_does_not_depend_on_their_order_but_on_every_value() {
        let rows = [
            vec![Value::Integer(1), Value::Text("a".into())],
            vec![Value::Integer(2), Value::Null],
            vec![Value::Real(0.5), Value::Blob(vec![1, 2])],
        ];
        let (mut forward, mut backward) = (RowDigest::default(), RowDigest::default());
        rows.iter().for_each(|row| forward.add(row));
        rows.iter().rev().for_each(|row| backward.add(row));
        assert_eq!(forward, backward);
        assert_eq!(forward.count, 3);

        let mut changed = RowDigest::default();
        changed.add(&rows[0]);
        changed.add(&[Value::Integer(2), Value::Text(String::new())]);
        changed.add(&rows[2]);
        assert_ne!(forward, changed, "a NULL is not an empty text");
        // A boolean reads back as the integer SQLite kept.
        let (mut integer, mut boolean) = (RowDigest::default(), RowDigest::default());
        integer.add(&[Value::Integer(1)]);
        boolean.add(&[Value::Boolean(true)]);
        assert_eq!(integer, boolean);
    }

    #[test]
    fn numbers_are_bound_as_text_that_reads_back_the_same() {
        assert_eq!(as_parameter(&Value::Integer(-7)), Value::Text("-7".into()));
        for x in [0.1, 1e300, -2.5e-7, 3.0] {
            let Value::Text(text) = as_parameter(&Value::Real(x)) else {
                panic!()
            };
            assert_eq!(text.parse::<f64>().unwrap(), x, "{text}");
        }
    }

    #[test]
    fn a_file_set_aside_never_replaces_an_earlier_one() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("m.sqlite");
        std::fs::write(&file, b"first").unwrap();
        std::fs::write(dir.path().join("m.sqlite-wal"), b"journal").unwrap();
        let kept = set_aside(&file).unwrap();
        assert_eq!(kept, dir.path().join("m.sqlite.carried-to-postgres"));
        assert!(!file.exists());
        assert_eq!(
            std::fs::read(dir.path().join("m.sqlite.carried-to-postgres-wal")).unwrap(),
            b"journal"
        );
        std::fs::write(&file, b"second").unwrap();
        let again = set_aside(&file).unwrap();
        assert_eq!(again, dir.path().join("m.sqlite.carried-to-postgres.2"));
        assert_eq!(std::fs::read(&kept).unwrap(), b"first");
    }
}
