//! A module whose `database` changes from SQLite to Postgres takes its data along.
//!
//! An operator who outgrows a module's SQLite file writes
//! `database = { postgres = "…" }` for it and restarts its node. The node opens the
//! module on Postgres as usual (its role, its schema, its migrations); then, finding
//! the module's SQLite file still in the data dir, it **carries** the file's data over
//! before the module serves — instead of serving an empty schema while the data sits
//! unused beside it:
//!
//! 1. a schema that has no tables yet when the module opens beside its file **awaits
//!    the file** ([`before_migrations`], recorded before its migrations run, keyed by
//!    the schema, naming the file by its own secret; nodes look and migrate one at a
//!    time, under the host's lock [`lock_name`]). While it does, the module serves
//!    nowhere until the file is carried — no node of a split deployment without that
//!    file opens it, and the node with it refuses to serve it uncarried — so nothing
//!    but the module's migrations writes there;
//! 2. the file is opened as it would be on SQLite (its migrations brought up to the
//!    module's), and the migrations applied on both sides must be the same ones;
//! 3. in **one transaction** on Postgres, as the module's role: the record that the
//!    schema awaits the file is claimed (another node that carried it first leaves
//!    nothing to claim, and this one leaves its file alone); the module's tables are
//!    locked against writers, and the rows its migrations made (seed rows) give way;
//!    then every table of the file, parents before the children whose foreign keys
//!    point at them, is copied row by row — each value cast to its Postgres column's
//!    type — and read back; each table's row count (against a count of its own in the
//!    file) and an order-independent digest of its rows must match, or nothing is
//!    kept. Serial and identity columns' sequences move past the rows carried. Then
//!    each capability carries what it keeps in the file ([`Capability::carry`]: the
//!    events waiting in the outbox, sealed again; the inbox of handled events), and
//!    the carry is recorded in the host's `modhost_carried` table;
//! 4. only once that transaction committed is the file set aside, renamed
//!    `<module>.sqlite.carried-to-postgres` (kept: nothing is deleted).
//!
//! A crash between the commit and the rename is found at the next start by the record
//! (with the rows it carried), and the file is set aside then, if it still holds those
//! rows. A schema that had tables before the file was seen beside it — the module
//! served on Postgres already — is the module's data: a SQLite file there (a backup
//! kept by hand, say) is left as it was, unused, and the log says so. A carry that
//! fails keeps the schema awaiting the file, and is tried again at the next start.
//!
//! The module does not serve while its data is carried: at a node's start, the node
//! opens its modules before it listens; a module a reload or a move starts on a
//! running node carries before it serves there.
//!
//! [`Capability::carry`]: crate::capabilities::Capability::carry

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::{sqlite, Database, Error, Transaction, Value};
use crate::capabilities::{Capabilities, OpenContext, StateMap};
use crate::deployment::{ByteSize, DatabaseBackend, DatabaseSpec};

/// What the record of a carry is keyed with: a digest of the file's secret.
const CARRIED_PURPOSE: &str = "modhost carried file";

/// The record of a schema awaiting a file: this, a space and the schema's name (the
/// file's identity in its `file`).
const PENDING: &str = "pending";

/// The host function (Postgres) that records a carry in the module's transaction.
const RECORD_CARRIED: &str = "modhost_record_carried";

/// The host function (Postgres) that claims, in the module's transaction, the record
/// that the schema awaits a file: one carry of it, whichever node gets there first.
const CLAIM_CARRY: &str = "modhost_claim_carry";

/// The suffix of a SQLite file whose data was carried to Postgres.
pub const CARRIED_SUFFIX: &str = "carried-to-postgres";

/// Rows read or written in one statement, at most.
const PAGE_ROWS: u64 = 500;

/// Rows of a table's first page in the file: later pages are sized by the widest row
/// seen.
const FIRST_PAGE_ROWS: u64 = 32;

/// Bytes of values read in one page, about.
const PAGE_BYTES: u64 = 4 * 1024 * 1024;

/// The most one page of the file may weigh before it is read again in smaller pages.
const FILE_PAGE_LIMIT: ByteSize = ByteSize::mib(256);

/// Postgres takes at most this many parameters in one statement (65,535), with room.
const MAX_PARAMETERS: usize = 30_000;

/// Before the module's migrations run on Postgres (`to`, just opened): a schema
/// that has no tables yet while the module's SQLite file is here **awaits the file**
/// from now on (recorded before the migrations make anything, so a start that fails
/// half-way tries again). A schema that awaits a file opens only beside that file: a
/// node of a split deployment without it (or with another) refuses the module, which
/// would write rows there that the carry replaces. A `single_node` deployment has no
/// other node the file could be on: there, a file gone or replaced is the operator's
/// say. `former` is how the file opens ([`former_spec`]).
pub async fn before_migrations(
    to: &Database,
    data_dir: &Path,
    module: &str,
    former: &DatabaseSpec,
    single_node: bool,
) -> Result<()> {
    if to.backend() == "sqlite" {
        return Ok(());
    }
    let schema = schema_of(to).await?;
    let pending = pending_key(&schema);
    let awaited = if records_exist(to).await? {
        record_file(to, &pending).await?
    } else {
        None
    };
    let file = sqlite::file_of(data_dir, module);
    let exists = file.exists();
    let here = if exists {
        file_identity(&file, &schema, module, None).await
    } else {
        None
    };
    let give = Some((former, data_dir));
    match awaited {
        Some(awaited) => {
            // A file here that keeps no secret is given one where one is awaited.
            let here = match here {
                None if exists => file_identity(&file, &schema, module, give).await,
                here => here,
            };
            match here {
                Some(here) if here == awaited => Ok(()),
                // One node: the file awaited was this node's, and the module never
                // served since (nothing but its migrations wrote there). Gone, the
                // schema's rows are the module's from now on; replaced, the new file
                // is awaited instead.
                _ if single_node && (here.is_some() || !exists) => {
                    match here {
                        Some(here) => to.host_execute(
                            "UPDATE modhost_carried SET file = $2 WHERE source = $1",
                            vec![Value::Text(pending), Value::Text(here)],
                        ),
                        None => to.host_execute(
                            "DELETE FROM modhost_carried WHERE source = $1",
                            vec![Value::Text(pending)],
                        ),
                    }
                    .await
                    .map_err(sql)?;
                    tracing::info!(module, "database: the SQLite file its postgres schema awaited is gone or replaced; the schema awaits no other");
                    Ok(())
                }
                None if exists => bail!(
                    "its postgres schema awaits its SQLite file {}, which cannot be read \
                     here: the module does not start beside a schema that awaits it",
                    file.display()
                ),
                _ => bail!(
                    "its postgres schema awaits the SQLite file of another node (or another \
                     file), to be carried into it: serving the module here would write rows \
                     that carry replaces. Start it on the node that has its file first (to \
                     give that carry up instead: DELETE FROM modhost_carried WHERE source = \
                     '{PENDING} {schema}' in the module's host schema)"
                ),
            }
        }
        None if exists && module_schema_tables(to).await?.is_empty() => {
            // The first start on Postgres beside the file: it is awaited. (A file made
            // before files kept a secret gets one, as opening it on SQLite would: the
            // carry's records name the file by it.)
            let here = match here {
                Some(here) => here,
                None => file_identity(&file, &schema, module, give)
                    .await
                    .with_context(|| {
                        format!(
                            "its SQLite file {} cannot be read: it is not carried, and the \
                         module does not start on an empty schema beside it",
                            file.display()
                        )
                    })?,
            };
            prepare_records(to).await?;
            to.host_execute(
                "INSERT INTO modhost_carried (source, file, carried_at, counts) \
                 VALUES ($1, $2, $3, '{}')",
                vec![
                    Value::Text(pending),
                    Value::Text(here),
                    Value::Integer(now_ms()),
                ],
            )
            .await
            .map_err(sql)?;
            Ok(())
        }
        None => Ok(()),
    }
}

/// How the host opens a module's SQLite file of before, whose database is now `spec`:
/// one connection, and results as large as the pages it reads.
pub fn former_spec(spec: &DatabaseSpec) -> DatabaseSpec {
    DatabaseSpec {
        backend: DatabaseBackend::Sqlite,
        pool: 1,
        max_result: FILE_PAGE_LIMIT.max(spec.max_result),
        ..spec.clone()
    }
}

/// The record of schema `schema` awaiting a file (the file's identity in `file`).
fn pending_key(schema: &str) -> String {
    format!("{PENDING} {schema}")
}

/// The identity of the SQLite file `file` for a carry into `schema` ([`identity`]),
/// read without changing the file; `None` if it keeps no secret — unless `give` (the
/// module's database settings and the data dir): then a file made before files kept
/// a secret gets one, as opening it on SQLite would. `None`, with a warning, if the
/// file cannot be read.
async fn file_identity(
    file: &Path,
    schema: &str,
    module: &str,
    give: Option<(&DatabaseSpec, &Path)>,
) -> Option<String> {
    let read = async {
        if let Some(kept) = sqlite::kept_secret(file).await? {
            return Ok(Some(kept));
        }
        let Some((former, data_dir)) = give else {
            return Ok(None);
        };
        let unmigrated = DatabaseSpec {
            migrations: None,
            ..former.clone()
        };
        let opened = Database::open_unmigrated(
            module,
            &unmigrated,
            data_dir,
            std::time::Duration::from_secs(30),
        )
        .await?;
        opened.close().await;
        sqlite::kept_secret(file).await
    };
    match read.await {
        Ok(kept) => kept.map(|kept| identity(schema, &kept)),
        Err(error) => {
            tracing::warn!(module, file = %file.display(), error = %format!("{error:#}"), "database: its SQLite file cannot be read; it is not carried to postgres, and left as it is");
            None
        }
    }
}

/// What became of a module's SQLite file found beside its Postgres schema.
enum Outcome {
    /// Its rows were carried now (by table).
    Carried(BTreeMap<String, u64>),
    /// They were carried before; the file had not been set aside.
    CarriedBefore,
    /// The file is not carried, and left alone: why.
    Left(&'static str),
}

/// Carries module `module`'s data from its SQLite file of before into its database on
/// Postgres (`state`, opened), when the file is still here and the schema awaits it
/// (see the module docs). Nothing to do for a module on SQLite, or without a file.
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
    let former = former_spec(spec);
    let outcome: Result<Outcome> = async {
        let schema = schema_of(to).await?;
        if !records_exist(to).await? {
            return Ok(Outcome::Left(
                "the module's postgres schema had tables before the file was seen here: \
                 its rows are the module's data",
            ));
        }
        // While the schema awaits a file, the module serves only once it is carried.
        let pending = pending_key(&schema);
        let awaited = record_file(to, &pending).await?;
        let left = |why: &'static str| match awaited {
            Some(_) => Err(anyhow::anyhow!(
                "{why}; its postgres schema awaits a SQLite file all the same, and the \
                 module does not start beside it"
            )),
            None => Ok(Outcome::Left(why)),
        };
        let Some(identity) = file_identity(&file, &schema, name, None).await else {
            return left("the file cannot be read, or keeps no secret of the host's");
        };
        if let Some(recorded) = recorded_counts(to, &identity).await? {
            let held = sqlite::count_rows(&file).await?;
            let same = recorded
                .iter()
                .filter(|(table, _)| !table.starts_with("modhost_"))
                .all(|(table, rows)| held.get(table) == Some(rows));
            return if same {
                Ok(Outcome::CarriedBefore)
            } else {
                left(
                    "a copy of a file carried before, holding other rows now (a backup?): \
                     the module's data is its postgres schema",
                )
            };
        }
        if awaited.as_deref() != Some(identity.as_str()) {
            return left(
                "the module's postgres schema had tables before the file was seen here: \
                 its rows are the module's data",
            );
        }
        let from = Database::open(
            name,
            &former,
            data_dir,
            module.spec.limits.timeout.duration(),
        )
        .await
        .with_context(|| format!("opening {}", file.display()))?;
        let carrying = Carrying {
            capabilities,
            module,
            state,
            from: &from,
            to,
            file: &file,
            pending,
        };
        let carried = carrying.carry(identity).await;
        from.close().await;
        Ok(match carried? {
            Some(counts) => Outcome::Carried(counts),
            None => Outcome::Left("another node carried it first"),
        })
    }
    .await;
    let outcome = outcome.with_context(|| {
        format!(
            "carrying its SQLite file {} into its postgres schema (the file's rows are \
             where they were)",
            file.display()
        )
    })?;
    let carried = match outcome {
        Outcome::Left(why) => {
            tracing::warn!(module = %name, file = %file.display(), why, "database: its SQLite file is left as it was, unused (remove it, or move it away, once it is not needed)");
            return Ok(());
        }
        Outcome::CarriedBefore => {
            tracing::info!(module = %name, file = %file.display(), "database: this SQLite file holds the rows carried over before (from it, or from a copy of it on another node); it is set aside");
            None
        }
        Outcome::Carried(counts) => Some(counts),
    };
    let kept = set_aside(&file)
        .with_context(|| format!("setting {} aside after carrying it", file.display()))?;
    if let Some(carried) = carried {
        tracing::info!(
            module = %name,
            rows = ?carried,
            kept = %kept.display(),
            ms = started.elapsed().as_millis() as u64,
            "database: the module's SQLite data is carried over to postgres, checked; the file is kept aside"
        );
    }
    Ok(())
}

/// One carry's parts: what it reads, where it writes, what else carries.
struct Carrying<'a> {
    capabilities: &'a Capabilities,
    module: OpenContext<'a>,
    state: &'a StateMap,
    from: &'a Database,
    to: &'a Database,
    file: &'a Path,
    /// The record of the schema awaiting the file: the carry claims it.
    pending: String,
}

/// How long one statement of the carry may take, and its transaction sit between
/// two — the host's own work, longer than a module's statement; and so how long a
/// node waits for [`lock_name`] at a module's start, while another node carries.
pub const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(15 * 60);

/// The host's lock that orders, between nodes, looking whether a module's schema
/// awaits a file, migrating it, and carrying a file into it.
pub fn lock_name(module: &str) -> String {
    format!("modhost.carry.{module}")
}

/// How long the carry waits for the module's tables' locks.
const CARRY_LOCK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

impl Carrying<'_> {
    /// The carry itself, recorded under `source`: nothing committed unless every
    /// table matched. `None` if another node carried the file first (the schema no
    /// longer awaits it): nothing is carried.
    async fn carry(&self, source: String) -> Result<Option<BTreeMap<String, u64>>> {
        let (from, to) = (self.from, self.to);
        same_migrations(from, to).await?;
        let tables = module_tables(from).await?;
        let mut in_file = BTreeMap::new();
        for table in &tables {
            in_file.insert(table.name.clone(), count(from, &table.name).await?);
        }

        let mut tx = to.begin().await.map_err(sql)?;
        // The host's own work: results as large as its pages, statements as long as
        // the data needs.
        tx.max_result = FILE_PAGE_LIMIT.bytes();
        for (setting, value) in [
            ("statement_timeout", LOCK_WAIT),
            ("idle_in_transaction_session_timeout", LOCK_WAIT),
            ("lock_timeout", CARRY_LOCK_TIMEOUT),
        ] {
            let ms = value.as_millis();
            tx.execute(&format!("SET LOCAL {setting} = '{ms}ms'"), Vec::new())
                .await
                .map_err(sql)?;
        }
        // Another node carrying the same file at the same moment waits here; then
        // finds nothing to claim, and leaves its file alone.
        if let Some(key) = to.lock_key(&lock_name(&self.module.spec.name)) {
            tx.host_query(
                "SELECT pg_advisory_xact_lock($1)::text",
                vec![Value::Integer(key)],
            )
            .await
            .map_err(sql)?;
        }
        let claimed = tx
            .host_call(
                CLAIM_CARRY,
                vec![
                    Value::Text(self.pending.clone()),
                    Value::Text(source.clone()),
                ],
            )
            .await
            .map_err(sql)?;
        if claimed.rows != [vec![Value::Integer(1)]] {
            tx.rollback().await.map_err(sql)?;
            return Ok(None);
        }
        // No node serves the module while its schema awaits the file (each refuses
        // to open it), so what the schema holds was made by its migrations: seed
        // rows, which give way. Its tables are locked all the same.
        let in_schema = module_schema_tables_in(&mut tx).await?;
        if !in_schema.is_empty() {
            let listed: Vec<String> = in_schema.iter().map(|t| quote(t)).collect();
            tx.execute(
                &format!("LOCK TABLE {} IN EXCLUSIVE MODE", listed.join(", ")),
                Vec::new(),
            )
            .await
            .map_err(sql)?;
        }
        let mut targets = Vec::new();
        for table in &tables {
            targets.push(target_table(&mut tx, table).await?);
        }
        // Children before the parents their foreign keys point at.
        for target in targets.iter().rev() {
            tx.execute(&format!("DELETE FROM {}", quote(&target.name)), Vec::new())
                .await
                .map_err(sql)?;
        }
        let mut counts = BTreeMap::new();
        for (table, target) in tables.iter().zip(&targets) {
            let copied = copy_table(from, &mut tx, table, target).await?;
            let read_back = read_back(&mut tx, target, copied.rows.count).await?;
            let counted = in_file.get(&table.name).copied().unwrap_or_default();
            if read_back != copied.rows || copied.rows.count != counted {
                bail!(
                    "table {}: {counted} rows in the file, {} read with digest {}, {} read back \
                     from postgres with digest {} (a value its column's type does not keep as \
                     it was?)",
                    table.name,
                    copied.rows.count,
                    copied.rows.digest(),
                    read_back.count,
                    read_back.digest()
                );
            }
            advance_sequences(&mut tx, target).await?;
            counts.insert(table.name.clone(), copied.rows.count);
        }
        for capability in self.capabilities.iter() {
            counts.extend(
                capability
                    .carry(self.module, self.state, from, &mut tx)
                    .await?,
            );
        }
        tx.host_call(
            RECORD_CARRIED,
            vec![
                Value::Text(source),
                Value::Text(self.file.display().to_string()),
                Value::Integer(now_ms()),
                Value::Text(serde_json::to_string(&counts).unwrap_or_default()),
            ],
        )
        .await
        .map_err(sql)?;
        tx.commit().await.map_err(sql)?;
        Ok(Some(counts))
    }
}

/// Milliseconds since the Unix epoch.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as i64)
}

/// The rows of `table` in `from`, counted on their own.
async fn count(from: &Database, table: &str) -> Result<u64> {
    let counted = from
        .query(
            &format!("SELECT count(*) FROM {}", quote(table)),
            Vec::new(),
        )
        .await
        .map_err(sql)?;
    match counted.rows.first().map(Vec::as_slice) {
        Some([Value::Integer(n)]) => Ok(u64::try_from(*n).unwrap_or_default()),
        _ => bail!("counting the rows of table {table} gave no number"),
    }
}

/// The statement that lists the tables of the module's own schema.
const SCHEMA_TABLES: &str = "SELECT table_name::text FROM information_schema.tables \
     WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' ORDER BY table_name";

/// The names in the first column of `rows`.
fn names(rows: super::Rows) -> Vec<String> {
    rows.rows
        .into_iter()
        .filter_map(|row| match row.into_iter().next() {
            Some(Value::Text(name)) => Some(name),
            _ => None,
        })
        .collect()
}

/// The tables of the module's own schema in `to`.
async fn module_schema_tables(to: &Database) -> Result<Vec<String>> {
    Ok(names(
        to.query(SCHEMA_TABLES, Vec::new()).await.map_err(sql)?,
    ))
}

/// The tables of the module's own schema, inside `tx`.
async fn module_schema_tables_in(tx: &mut Transaction) -> Result<Vec<String>> {
    Ok(names(
        tx.query(SCHEMA_TABLES, Vec::new()).await.map_err(sql)?,
    ))
}

/// What a file that keeps secret `kept` is recorded as, once carried into `schema`:
/// the schema's name and a digest of the secret (which itself stays in the file).
fn identity(schema: &str, kept: &str) -> String {
    let digest = Sha256::new()
        .chain_update(CARRIED_PURPOSE.as_bytes())
        .chain_update(kept.as_bytes())
        .finalize();
    format!("{schema} {}", hex(&digest[..16]))
}

/// The module's own schema on Postgres.
async fn schema_of(to: &Database) -> Result<String> {
    let schema = to
        .query("SELECT current_schema()::text", Vec::new())
        .await
        .map_err(sql)?;
    match schema.rows.first().map(Vec::as_slice) {
        Some([Value::Text(schema)]) => Ok(schema.clone()),
        _ => bail!("the module's postgres schema could not be read"),
    }
}

/// Makes the record table, and on Postgres the functions that claim (in the module's
/// transaction) the record that a schema awaits a file and write the record of a
/// carry, if missing.
async fn prepare_records(to: &Database) -> Result<()> {
    let mut record = vec![
        "CREATE TABLE IF NOT EXISTS modhost_carried (source TEXT PRIMARY KEY, \
         file TEXT NOT NULL, carried_at BIGINT NOT NULL, counts TEXT NOT NULL)"
            .to_string(),
    ];
    record.extend(to.host_function(
        CLAIM_CARRY,
        "p_pending text, p_file text",
        "bigint",
        "DELETE FROM modhost_carried WHERE source = p_pending AND file = p_file; \
         IF FOUND THEN RETURN 1; END IF; RETURN 0;",
    ));
    record.extend(to.host_function(
        RECORD_CARRIED,
        "p_source text, p_file text, p_at bigint, p_counts text",
        "bigint",
        "INSERT INTO modhost_carried (source, file, carried_at, counts) \
         VALUES (p_source, p_file, p_at, p_counts) ON CONFLICT (source) DO UPDATE \
         SET file = excluded.file, carried_at = excluded.carried_at, counts = excluded.counts; \
         RETURN 1;",
    ));
    to.host_prepare(&record).await.map_err(sql)
}

/// Whether the record table exists (made when a schema first awaited a file).
async fn records_exist(to: &Database) -> Result<bool> {
    let found = to
        .host_query(
            "SELECT count(*) FROM pg_tables WHERE schemaname = current_schema() \
             AND tablename = 'modhost_carried'",
            Vec::new(),
        )
        .await
        .map_err(sql)?;
    Ok(found.rows == [vec![Value::Integer(1)]])
}

/// Record `source`: the file it names (its identity) and its `counts`, if there is
/// such a record.
async fn record(to: &Database, source: &str) -> Result<Option<(String, String)>> {
    let found = to
        .host_query(
            "SELECT file, counts FROM modhost_carried WHERE source = $1",
            vec![Value::Text(source.to_string())],
        )
        .await
        .map_err(sql)?;
    Ok(match found.rows.first().map(Vec::as_slice) {
        Some([Value::Text(file), Value::Text(counts)]) => Some((file.clone(), counts.clone())),
        _ => None,
    })
}

/// The rows by table that a carry recorded as `source` carried, if one did.
async fn recorded_counts(to: &Database, source: &str) -> Result<Option<BTreeMap<String, u64>>> {
    Ok(record(to, source)
        .await?
        .map(|(_, counts)| serde_json::from_str(&counts).unwrap_or_default()))
}

/// The file (its identity) that record `source` names, if there is such a record.
async fn record_file(to: &Database, source: &str) -> Result<Option<String>> {
    Ok(record(to, source).await?.map(|(file, _)| file))
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
    /// How its rows' `rowid` is named in a query — one of SQLite's three names that
    /// no column of the table hides — or `None` for a `WITHOUT ROWID` table (or one
    /// whose columns hide all three), paged by its primary key instead.
    rowid: Option<&'static str>,
    /// The positions in `columns` of its primary key's columns, in the key's order.
    key: Vec<usize>,
}

/// The module's tables in `from` (not the host's), each after the tables its foreign
/// keys point to.
async fn module_tables(from: &Database) -> Result<Vec<Table>> {
    let names = from
        .query(
            "SELECT t.name, t.wr FROM pragma_table_list AS t WHERE t.schema = 'main' \
             AND t.type = 'table' AND substr(t.name, 1, 7) <> 'sqlite_' \
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
        let mut key: Vec<(i64, usize)> = Vec::new();
        let mut names = Vec::new();
        for column in columns.rows {
            if let [Value::Text(column), Value::Integer(pk)] = column.as_slice() {
                if *pk > 0 {
                    key.push((*pk, names.len()));
                }
                names.push(column.clone());
            }
        }
        key.sort();
        let rowid = if *without_rowid == 0 {
            ["rowid", "_rowid_", "oid"].into_iter().find(|alias| {
                !names
                    .iter()
                    .any(|column| column.eq_ignore_ascii_case(alias))
            })
        } else {
            None
        };
        if rowid.is_none() && key.is_empty() {
            bail!(
                "table {name} has columns named rowid, _rowid_ and oid and no primary key: \
                 its rows cannot be read in order"
            );
        }
        let referenced = from
            .query(
                "SELECT DISTINCT \"table\" FROM pragma_foreign_key_list($1)",
                vec![Value::Text(name.clone())],
            )
            .await
            .map_err(sql)?;
        parents.insert(
            name.to_lowercase(),
            referenced
                .rows
                .into_iter()
                .filter_map(|row| match row.into_iter().next() {
                    // SQLite's names are not case-sensitive.
                    Some(Value::Text(parent)) if !parent.eq_ignore_ascii_case(name) => {
                        Some(parent.to_lowercase())
                    }
                    _ => None,
                })
                .collect(),
        );
        tables.push(Table {
            name: name.clone(),
            columns: names,
            rowid,
            key: key.into_iter().map(|(_, position)| position).collect(),
        });
    }
    in_dependency_order(tables, &parents)
}

/// `tables` with every table after those it references (`parents`, by lower-case
/// name).
fn in_dependency_order(
    mut tables: Vec<Table>,
    parents: &BTreeMap<String, Vec<String>>,
) -> Result<Vec<Table>> {
    let mut ordered: Vec<Table> = Vec::new();
    while !tables.is_empty() {
        let placed = |name: &String| {
            ordered
                .iter()
                .any(|table| table.name.eq_ignore_ascii_case(name))
        };
        let ready = tables.iter().position(|table| {
            parents.get(&table.name.to_lowercase()).is_none_or(|of| {
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
    waiting
        .iter()
        .chain(placed)
        .any(|table| table.name.eq_ignore_ascii_case(name))
}

/// A table of the module's Postgres schema, as the carry writes it.
struct Target {
    name: String,
    /// For each column of the SQLite table, in its order: the Postgres column's name
    /// and type.
    columns: Vec<(String, String)>,
    /// For each column, whether the module reads back from Postgres exactly the value
    /// it read from SQLite (numbers, text, bytes, booleans). Other types (timestamps,
    /// numeric, JSON…) are written as Postgres casts the text and read back in its
    /// own form: the comparison sees only whether such a value is NULL.
    exact: Vec<bool>,
}

/// Whether a value of Postgres type `kind` (as `format_type` writes it) reads back as
/// the SQLite value it was cast from.
fn kept_exactly(kind: &str) -> bool {
    matches!(
        kind,
        "bigint"
            | "integer"
            | "smallint"
            | "text"
            | "bytea"
            | "double precision"
            | "real"
            | "boolean"
    ) || kind.starts_with("character varying")
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
        let exact = columns.iter().map(|(_, kind)| kept_exactly(kind)).collect();
        return Ok(Target {
            name,
            columns,
            exact,
        });
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
    /// Adds one row, its values as the module reads them; of a value not `exact`
    /// (by position; every one when `exact` is shorter), only whether it is NULL.
    fn add(&mut self, values: &[Value], exact: &[bool]) {
        let mut hasher = Sha256::new();
        for (position, value) in values.iter().enumerate() {
            if !exact.get(position).copied().unwrap_or(true) {
                hasher.update([u8::from(matches!(value, Value::Null)) + 8]);
                continue;
            }
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

/// Copies every row of `table` from `from` into `target` inside `tx`, page by page in
/// the order of its rowid (or primary key).
async fn copy_table(
    from: &Database,
    tx: &mut Transaction,
    table: &Table,
    target: &Target,
) -> Result<Copied> {
    let listed: Vec<String> = table.columns.iter().map(|c| quote(c)).collect();
    let listed = listed.join(", ");
    // What orders the pages, as selected first, and how a page starts after the last.
    let (order, after): (Vec<String>, String) = match table.rowid {
        Some(alias) => (vec![alias.to_string()], format!("{alias} > $1")),
        None => {
            let key: Vec<String> = table
                .key
                .iter()
                .map(|&i| quote(&table.columns[i]))
                .collect();
            let marks: Vec<String> = (1..=key.len()).map(|n| format!("${n}")).collect();
            let after = format!("({}) > ({})", key.join(", "), marks.join(", "));
            (key, after)
        }
    };
    let head = format!(
        "SELECT {}, {listed} FROM {}",
        order.join(", "),
        quote(&table.name)
    );
    let tail = format!("ORDER BY {}", order.join(", "));
    let per_statement = (MAX_PARAMETERS / table.columns.len().max(1)).clamp(1, PAGE_ROWS as usize);
    let insert_head = format!(
        "INSERT INTO {} ({}) OVERRIDING SYSTEM VALUE VALUES ",
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
    let mut last: Option<Vec<Value>> = None;
    let mut limit = FIRST_PAGE_ROWS;
    loop {
        let (statement, params) = match &last {
            None => (format!("{head} {tail} LIMIT {limit}"), Vec::new()),
            Some(last) => (
                format!("{head} WHERE {after} {tail} LIMIT {limit}"),
                last.clone(),
            ),
        };
        let page = match from.query(&statement, params).await {
            Ok(page) => page,
            // Wider rows than the page was sized for: fewer of them.
            Err(Error::TooLarge(_)) if limit > 1 => {
                limit /= 2;
                continue;
            }
            Err(error) => return Err(sql(error)),
        };
        let Some(final_row) = page.rows.last() else {
            break;
        };
        let next: Vec<Value> = final_row[..order.len()].to_vec();
        // Each page starts past the last; one that ends where the last did would go
        // round. (A row a page skips — a NULL in a key — is caught by the count.)
        if last.as_ref() == Some(&next) {
            bail!("table {}: its rows do not come in order", table.name);
        }
        last = Some(next);
        let mut rows = Vec::with_capacity(page.rows.len());
        for mut row in page.rows {
            row.drain(..order.len());
            let weight = super::ResultBudget::weigh(&row);
            copied.widest = copied.widest.max(weight);
            copied.rows.add(&row, &target.exact);
            rows.push(row);
        }
        limit = (PAGE_BYTES / copied.widest.max(1)).clamp(1, PAGE_ROWS);
        for chunk in rows.chunks(per_statement) {
            let mut statement = insert_head.clone();
            let mut params = Vec::with_capacity(chunk.len() * table.columns.len());
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
/// a digest: a range of the table's blocks at a time (a scan of those blocks alone),
/// about [`PAGE_ROWS`] rows a range given that it holds `rows`; fewer blocks when a
/// range weighs more than one result of the transaction may.
async fn read_back(tx: &mut Transaction, target: &Target, rows: u64) -> Result<RowDigest> {
    let size = tx
        .query(
            "SELECT (pg_relation_size(format('%I.%I', current_schema(), $1::text)) \
             / current_setting('block_size')::bigint)::bigint",
            vec![Value::Text(target.name.clone())],
        )
        .await
        .map_err(sql)?;
    let blocks = match size.rows.first().map(Vec::as_slice) {
        Some([Value::Integer(blocks)]) => *blocks,
        _ => bail!("table {}: its size could not be read", target.name),
    };
    // A value of a type Postgres writes in its own form is read as whether it is
    // NULL: all the comparison looks at, and a type the host need not decode.
    let listed: Vec<String> = target
        .columns
        .iter()
        .zip(&target.exact)
        .map(|((name, _), exact)| match exact {
            true => quote(name),
            false => format!("({} IS NULL)", quote(name)),
        })
        .collect();
    let statement = format!(
        "SELECT {} FROM {} WHERE ctid >= CAST($1 AS tid) AND ctid < CAST($2 AS tid)",
        listed.join(", "),
        quote(&target.name)
    );
    let rows_per_block = (rows / (blocks.max(1) as u64)).max(1);
    let mut step = (PAGE_ROWS / rows_per_block).clamp(1, 1024) as i64;
    let mut digest = RowDigest::default();
    let mut start = 0i64;
    while start < blocks {
        let end = start.saturating_add(step);
        let params = vec![
            Value::Text(format!("({start},0)")),
            Value::Text(format!("({end},0)")),
        ];
        let rows = match tx.query(&statement, params).await {
            Ok(rows) => rows,
            Err(Error::TooLarge(_)) if step > 1 => {
                step /= 2;
                continue;
            }
            Err(error) => return Err(sql(error)),
        };
        for row in rows.rows {
            let row: Vec<Value> = row
                .into_iter()
                .zip(&target.exact)
                .map(|(value, exact)| match (exact, value) {
                    (false, Value::Boolean(true)) => Value::Null,
                    (false, _) => Value::Text(String::new()),
                    (true, value) => value,
                })
                .collect();
            digest.add(&row, &target.exact);
        }
        start = end;
    }
    Ok(digest)
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
        // Not below the sequence's least value (a column holding only smaller ones).
        tx.query(
            &format!(
                "SELECT setval(CAST($1 AS regclass), greatest(x.m, s.seqmin), x.m >= s.seqmin)::text \
                 FROM (SELECT max({})::bigint AS m FROM {}) AS x, pg_sequence AS s \
                 WHERE s.seqrelid = CAST($1 AS regclass) AND x.m IS NOT NULL",
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
/// The files a carry set aside from `file` (`<file>.carried-to-postgres…`, with their
/// journals), those that exist.
pub fn set_aside_from(file: &Path) -> Vec<PathBuf> {
    let (Some(dir), Some(name)) = (file.parent(), file.file_name()) else {
        return Vec::new();
    };
    let prefix = format!("{}.{CARRIED_SUFFIX}", name.to_string_lossy());
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|entry| entry.file_name().to_string_lossy().starts_with(&prefix))
        .map(|entry| entry.path())
        .collect()
}

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
            rowid: Some("rowid"),
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
        rows.iter().for_each(|row| forward.add(row, &[]));
        rows.iter().rev().for_each(|row| backward.add(row, &[]));
        assert_eq!(forward, backward);
        assert_eq!(forward.count, 3);

        let mut changed = RowDigest::default();
        changed.add(&rows[0], &[]);
        changed.add(&[Value::Integer(2), Value::Text(String::new())], &[]);
        changed.add(&rows[2], &[]);
        assert_ne!(forward, changed, "a NULL is not an empty text");
        // A boolean reads back as the integer SQLite kept.
        let (mut integer, mut boolean) = (RowDigest::default(), RowDigest::default());
        integer.add(&[Value::Integer(1)], &[]);
        boolean.add(&[Value::Boolean(true)], &[]);
        assert_eq!(integer, boolean);
        // A timestamp's text comes back in Postgres's form: only NULL or not counts.
        let (mut written, mut read) = (RowDigest::default(), RowDigest::default());
        written.add(
            &[Value::Integer(1), Value::Text("2026-01-02 03:04:05".into())],
            &[true, false],
        );
        read.add(
            &[Value::Integer(1), Value::Text("2026-01-02T03:04:05".into())],
            &[true, false],
        );
        assert_eq!(written, read);
        let mut missing = RowDigest::default();
        missing.add(&[Value::Integer(1), Value::Null], &[true, false]);
        assert_ne!(written, missing);
        assert!(
            kept_exactly("character varying(20)") && !kept_exactly("timestamp without time zone")
        );
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
