//! The SQLite backend: one file per module, `<data_dir>/databases/<module>.sqlite`.
//!
//! Every connection is opened in WAL mode (readers do not block the writer), with a
//! busy timeout (a writer waits for another instead of failing at once) and foreign
//! keys enforced, and carries the module's guard ([`super::sqlite_guard`]): no
//! `ATTACH`, no extensions, no PRAGMA that reaches past the module's own schema, no
//! access to the host's tables, no value larger than its result bound, no statement
//! past its deadline. The host reaches its tables through a pool of its own
//! ([`SqliteDatabase::host_pool`]), and inside a module's transaction through
//! [`host_in_transaction`].

use anyhow::{Context, Result};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Executor, Row, Sqlite, TypeInfo, ValueRef};
use std::path::Path;
use std::time::Duration;

use super::{
    close_pool, error, lend, sqlite_guard, Author, Error, ResultBudget, Rows, SchemaClock, Value,
};
use crate::deployment::database::DEFAULT_MAX_RESULT;
use crate::deployment::DatabaseSpec;
use crate::telemetry::metrics::metrics;
use prometheus_client::metrics::histogram::Histogram;

/// How long a writer waits for another writer's lock before failing with `timeout`
/// (at most: never longer than the module's own statement timeout).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// A module's SQLite database: the module's pool, and the host's own for its tables.
pub struct SqliteDatabase {
    /// The module's connections, in module mode.
    pub pool: sqlx::SqlitePool,
    /// The host's connections to the same file, in host mode: they may change the
    /// host's tables and nothing else. Small, and opened on first use.
    pub host_pool: sqlx::SqlitePool,
    /// What the host passes to [`sqlite_guard::HOST_FUNCTION`] in a module's
    /// transaction.
    key: [u8; 32],
    /// When the file's schema last changed by the host's hand, or under a connection
    /// (see [`crashed`]): both pools close connections opened before.
    pub schema_clock: std::sync::Arc<SchemaClock>,
    /// How long the module waits for its pool's connections.
    pub acquire_wait: Histogram,
}

/// Connections of the host's own pool for one module's file.
const HOST_POOL: u32 = 2;

impl SqliteDatabase {
    /// Runs a statement of `author`'s that returns rows (see [`query`]) on its pool:
    /// the module's, or the host's ([`SqliteDatabase::host_retry`]).
    pub async fn query_as(
        &self,
        author: Author,
        statement: &str,
        params: Vec<Value>,
        budget: ResultBudget,
    ) -> Result<Rows, Error> {
        if author == Author::Module {
            let mut connection = lend(&self.pool, Some(&self.acquire_wait)).await?;
            let clock = &self.schema_clock;
            return query(&mut *connection, statement, &params, budget, clock).await;
        }
        let mut connection = self.host_pool.acquire().await.map_err(error)?;
        let clock = &self.schema_clock;
        match query(&mut *connection, statement, &params, budget, clock).await {
            Err(Error::Denied(_)) if Self::host_retry(&mut connection).await => {
                query(&mut *connection, statement, &params, budget, clock).await
            }
            answer => answer,
        }
    }

    /// Runs a statement of `author`'s that changes rows (see [`execute`]) on its pool,
    /// as [`SqliteDatabase::query_as`] does.
    pub async fn execute_as(
        &self,
        author: Author,
        statement: &str,
        params: Vec<Value>,
        budget: ResultBudget,
    ) -> Result<u64, Error> {
        if author == Author::Module {
            let mut connection = lend(&self.pool, Some(&self.acquire_wait)).await?;
            let clock = &self.schema_clock;
            return execute(&mut *connection, statement, &params, budget, clock).await;
        }
        let mut connection = self.host_pool.acquire().await.map_err(error)?;
        let clock = &self.schema_clock;
        match execute(&mut *connection, statement, &params, budget, clock).await {
            Err(Error::Denied(_)) if Self::host_retry(&mut connection).await => {
                execute(&mut *connection, statement, &params, budget, clock).await
            }
            answer => answer,
        }
    }

    /// Whether to run a refused statement of the host's once more on `connection`,
    /// which this brings up to date with the file's schema first. SQLite compiles a
    /// statement against the schema the connection last read, and learns of a change
    /// only when a statement it compiled runs: a module's table with a cascade from a
    /// host table, dropped through another connection, would otherwise keep the
    /// host's statements refused here. Reading `sqlite_schema` is such a statement.
    async fn host_retry(connection: &mut SqliteConnection) -> bool {
        sqlx::query("SELECT count(*) FROM sqlite_schema")
            .execute(&mut *connection)
            .await
            .is_ok()
    }

    /// Closes both pools, waiting for connections in use to come back.
    pub async fn close(&self) {
        close_pool(&self.pool).await;
        close_pool(&self.host_pool).await;
    }
}

/// `module`'s database file under `data_dir`.
pub fn file_of(data_dir: &Path, module: &str) -> std::path::PathBuf {
    data_dir.join("databases").join(format!("{module}.sqlite"))
}

/// Opens (creating if needed) `module`'s database file and its two pools, each
/// connection guarded: statements interrupted past `statement_timeout`, no value
/// larger than the module's result bound. `key` lets the host's statements into the
/// module's transactions ([`host_in_transaction`]).
pub async fn open(
    module: &str,
    spec: &DatabaseSpec,
    data_dir: &Path,
    statement_timeout: Duration,
    key: [u8; 32],
) -> Result<SqliteDatabase> {
    let file = file_of(data_dir, module);
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    // Its data went to Postgres: a new, empty file would serve in its place. (The
    // directory is listed only when there is no file: not at every start.)
    let carried = match file.exists() {
        true => Vec::new(),
        false => super::carry::set_aside_from(&file),
    };
    if let Some(carried) = carried.first() {
        anyhow::bail!(
            "its data was carried into postgres ({} is the SQLite file it had, set aside): \
             its database is on postgres now; give it its `database = {{ postgres = … }}` \
             in the deployment file again (or move the set-aside files away to start it \
             afresh on an empty SQLite file)",
            carried.display()
        );
    }
    let options = SqliteConnectOptions::new()
        .filename(&file)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(BUSY_TIMEOUT.min(statement_timeout))
        .foreign_keys(true);
    // No value larger than the result bound is built; the host's own rows (an event's
    // payload) keep the default's room when the module's bound is smaller.
    let max_length = spec.max_result.max(DEFAULT_MAX_RESULT).bytes();
    let schema_clock = std::sync::Arc::new(SchemaClock::new());
    let guarded = |mode| {
        let on_loan = schema_clock.clone();
        let on_connect = schema_clock.clone();
        SqlitePoolOptions::new()
            .acquire_timeout(spec.acquire_timeout.duration())
            // sqlx pings a connection before every loan by default: on SQLite a round
            // trip to the connection's thread, for a file that cannot go away the way
            // a server can. One that knew the schema before its last change is
            // closed instead (see `SchemaClock`).
            .test_before_acquire(false)
            .before_acquire(move |_, metadata| {
                let fresh = !on_loan.predates_change(metadata.age);
                Box::pin(async move { Ok(fresh) })
            })
            .after_connect(move |connection, _| {
                let schema_clock = on_connect.clone();
                Box::pin(async move {
                    let mut handle = connection.lock_handle().await?;
                    // SAFETY: the handle is a live connection, locked for our exclusive
                    // use for the duration of this call.
                    let statements = unsafe {
                        let db = handle.as_raw_handle().as_ptr();
                        sqlite_guard::install(
                            db,
                            mode,
                            statement_timeout,
                            max_length,
                            key,
                            schema_clock,
                        );
                        sqlite_guard::statements(db)
                    };
                    // sqlx drops a connection's hooks after its own statements and
                    // before it closes it: the host's compiled statements go with a
                    // (do-nothing) rollback hook, and so are finalized in time.
                    handle.set_rollback_hook(move || {
                        let _kept = &statements;
                    });
                    Ok(())
                })
            })
    };
    let pool = guarded(sqlite_guard::Mode::Module)
        .max_connections(spec.pool)
        .connect_with(options.clone())
        .await
        .with_context(|| format!("opening {}", file.display()))?;
    let host_pool = guarded(sqlite_guard::Mode::Host)
        .max_connections(HOST_POOL)
        .min_connections(0)
        .connect_lazy_with(options);
    Ok(SqliteDatabase {
        pool,
        host_pool,
        key,
        schema_clock,
        acquire_wait: metrics().db_acquire(module),
    })
}

/// A connection of the host's own to `file`, outside any module's guard: for work on
/// the file as a whole (a checkpoint, counting a copy's rows).
async fn plain_connection(file: &Path, read_only: bool) -> Result<SqliteConnection> {
    use sqlx::Connection;
    let options = SqliteConnectOptions::new()
        .filename(file)
        .read_only(read_only)
        .busy_timeout(BUSY_TIMEOUT);
    SqliteConnection::connect_with(&options)
        .await
        .with_context(|| format!("opening {}", file.display()))
}

/// The secret the host keeps in the SQLite database `file` (see
/// `Database::file_secret`), read without changing the file; `None` if it keeps none.
pub async fn kept_secret(file: &Path) -> Result<Option<String>> {
    let mut connection = plain_connection(file, true).await?;
    let tables: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = 'modhost_secret'",
    )
    .fetch_one(&mut connection)
    .await
    .with_context(|| format!("reading {}", file.display()))?;
    if tables == 0 {
        return Ok(None);
    }
    sqlx::query_scalar("SELECT secret FROM modhost_secret WHERE id = 1")
        .fetch_optional(&mut connection)
        .await
        .with_context(|| format!("reading {}", file.display()))
}

/// Moves what `file`'s write-ahead log holds into the file. `whole`: all of it, and
/// the log emptied (`wal_checkpoint(TRUNCATE)`), so that the file alone holds the
/// database — what a byte copy of it needs; retried briefly while a reader holds an
/// old snapshot. Otherwise what goes without waiting for anyone (`PASSIVE`).
pub async fn checkpoint(file: &Path, whole: bool) -> Result<()> {
    let mut connection = plain_connection(file, false).await?;
    let statement = if whole {
        "PRAGMA wal_checkpoint(TRUNCATE)"
    } else {
        "PRAGMA wal_checkpoint(PASSIVE)"
    };
    for _ in 0..100 {
        let (busy, _, _): (i64, i64, i64) = sqlx::query_as(statement)
            .fetch_one(&mut connection)
            .await
            .with_context(|| format!("checkpointing {}", file.display()))?;
        if busy == 0 || !whole {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    anyhow::bail!(
        "{} stayed busy: a connection kept reading an old snapshot",
        file.display()
    )
}

/// The rows of every table in the SQLite database `file`, by table (the host's own
/// tables too: an event outbox moves with the data).
pub async fn count_rows(file: &Path) -> Result<std::collections::BTreeMap<String, u64>> {
    let mut connection = plain_connection(file, true).await?;
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name",
    )
    .fetch_all(&mut connection)
    .await?;
    let mut counts = std::collections::BTreeMap::new();
    for table in tables {
        let quoted = format!("\"{}\"", table.replace('"', "\"\""));
        let rows: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {quoted}"))
            .fetch_one(&mut connection)
            .await?;
        counts.insert(table, u64::try_from(rows).unwrap_or_default());
    }
    Ok(counts)
}

/// The node's own secret for its SQLite databases (which no other node shares):
/// `<data_dir>/host.secret`, made on first use, readable by the node's user only.
/// Modules have no access to the host's files.
pub fn host_secret(data_dir: &Path) -> Result<[u8; 32]> {
    let file = data_dir.join("host.secret");
    match std::fs::read_to_string(&file) {
        Ok(text) => {
            let bytes: Vec<u8> = (0..text.trim().len())
                .step_by(2)
                .filter_map(|i| u8::from_str_radix(text.trim().get(i..i + 2)?, 16).ok())
                .collect();
            <[u8; 32]>::try_from(bytes).map_err(|_| {
                anyhow::anyhow!(
                    "{} is not a host secret (64 hex digits); remove it to make a new one",
                    file.display()
                )
            })
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let secret = super::random_secret();
            let text: String = secret.iter().map(|b| format!("{b:02x}")).collect();
            std::fs::create_dir_all(data_dir)
                .with_context(|| format!("creating {}", data_dir.display()))?;
            let temporary = data_dir.join(format!("host.secret.{}", std::process::id()));
            {
                use std::io::Write;
                use std::os::unix::fs::OpenOptionsExt;
                let mut out = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(&temporary)
                    .with_context(|| format!("writing {}", temporary.display()))?;
                out.write_all(text.as_bytes())?;
                out.sync_all()?;
            }
            // Two processes starting at once on one data dir: the first rename wins,
            // and both then read what it wrote.
            if std::fs::hard_link(&temporary, &file).is_err() && !file.exists() {
                anyhow::bail!("could not create {}", file.display());
            }
            std::fs::remove_file(&temporary).ok();
            host_secret(data_dir)
        }
        Err(error) => Err(error).with_context(|| format!("reading {}", file.display())),
    }
}

/// SQLite accepts `$0` as a parameter name, which sqlx would then index out of range
/// (a panic on the connection's worker): parameters start at `$1`, so say so instead.
fn check_parameters(statement: &str) -> Result<(), Error> {
    let bytes = statement.as_bytes();
    let zero = bytes
        .windows(2)
        .enumerate()
        .any(|(i, pair)| pair == b"$0" && !bytes.get(i + 2).is_some_and(u8::is_ascii_digit));
    if zero {
        return Err(Error::Syntax(
            "parameter $0 does not exist: parameters are numbered from $1".into(),
        ));
    }
    Ok(())
}

/// Runs a query on `executor` (the pool, or a transaction's connection), taking its
/// rows as they come until they outweigh `budget`.
pub async fn query<'c>(
    executor: impl Executor<'c, Database = Sqlite>,
    statement: &str,
    params: &[Value],
    budget: ResultBudget,
    clock: &SchemaClock,
) -> Result<Rows, Error> {
    use futures_util::{StreamExt, TryStreamExt};
    check_parameters(statement)?;
    let stream = bind(sqlx::query(statement), params)
        .fetch(executor)
        .inspect_err(|failed| crashed(failed, clock))
        .boxed();
    super::collect(stream, budget, |row, budget| {
        let values = decode(row)?;
        budget.take(ResultBudget::weigh(&values))?;
        Ok(values)
    })
    .await
}

/// Runs a statement on `executor`; returns the number of rows it changed. (`budget`
/// names the bound when a value it builds is too large.)
pub async fn execute<'c>(
    executor: impl Executor<'c, Database = Sqlite>,
    statement: &str,
    params: &[Value],
    budget: ResultBudget,
    clock: &SchemaClock,
) -> Result<u64, Error> {
    check_parameters(statement)?;
    let done = bind(sqlx::query(statement), params)
        .execute(executor)
        .await
        .map_err(|e| {
            crashed(&e, clock);
            budget.error(e)
        })?;
    Ok(done.rows_affected())
}

/// Marks `clock` if `failed` says the connection's worker thread is gone: sqlx's
/// SQLite worker panics when a statement it kept meets more columns than it saw (a
/// schema change it was not closed for, such as the module's own `ALTER TABLE` on
/// another connection), and the connection is dead from then on. Marking the clock
/// closes it, and every other connection that knew the old schema, at their next loan
/// (see [`SchemaClock`]): one statement fails, not every later one.
fn crashed(failed: &sqlx::Error, clock: &SchemaClock) {
    if matches!(failed, sqlx::Error::WorkerCrashed) {
        tracing::warn!("a SQLite connection's worker thread crashed; replacing the connections");
        clock.mark();
    }
}

/// How many parameters one of the host's statements in a module's transaction may
/// have: SQLite passes a function 127 arguments at most, and the key and the
/// statement take two.
const MAX_HOST_PARAMETERS: usize = 125;

/// The call of [`sqlite_guard::HOST_FUNCTION`] for each number of parameters, made
/// once: `SELECT modhost_host($1, $2, $3, …)`.
static HOST_CALLS: std::sync::LazyLock<Vec<String>> = std::sync::LazyLock::new(|| {
    let function = sqlite_guard::HOST_FUNCTION.to_string_lossy();
    (0..=MAX_HOST_PARAMETERS)
        .map(|count| {
            let arguments: Vec<String> = (1..=count + 2).map(|i| format!("${i}")).collect();
            format!("SELECT {function}({})", arguments.join(", "))
        })
        .collect()
});

/// Runs one of the host's statements inside a module's transaction on `connection`:
/// through [`sqlite_guard::HOST_FUNCTION`], which runs it in host mode, in the same
/// round trip. Its rows, and how many rows it changed.
pub async fn host_in_transaction(
    connection: &mut SqliteConnection,
    database: &SqliteDatabase,
    statement: &str,
    params: Vec<Value>,
    budget: ResultBudget,
) -> Result<(Rows, u64), Error> {
    let Some(call) = HOST_CALLS.get(params.len()) else {
        return Err(Error::Other(format!(
            "the host's statements take at most {MAX_HOST_PARAMETERS} parameters, not {} \
             (the host's mistake)",
            params.len()
        )));
    };
    // The call reads no table: a transaction whose first write is the host's takes
    // the write lock at once (waiting for it if need be), as a plain INSERT would.
    // That also means it does not bring the connection up to date with the file's
    // schema, so a refusal is tried once more after that (see
    // [`SqliteDatabase::host_retry`]).
    let key = &database.key[..];
    let row = match call_host(connection, call, key, statement, &params).await {
        Err(Error::Denied(_)) if SqliteDatabase::host_retry(connection).await => {
            call_host(connection, call, key, statement, &params).await?
        }
        row => row?,
    };
    // A count of the rows changed, or, for a statement that answers rows, a
    // [`sqlite_guard::HostAnswer`].
    let json = match decode(&row)?.pop() {
        Some(Value::Integer(changes)) => {
            return Ok((
                Rows {
                    columns: Vec::new(),
                    rows: Vec::new(),
                },
                u64::try_from(changes).unwrap_or(0),
            ))
        }
        Some(Value::Text(json)) => json,
        other => {
            return Err(Error::Other(format!(
                "the host's statement answered {other:?}"
            )))
        }
    };
    let answer: sqlite_guard::HostAnswer = serde_json::from_str(&json)
        .map_err(|e| Error::Other(format!("the host's statement answered {json:?}: {e}")))?;
    let mut budget = budget;
    let mut rows = Rows {
        columns: answer.columns,
        rows: Vec::with_capacity(answer.rows.len()),
    };
    for row in answer.rows {
        let values: Vec<Value> = row
            .into_iter()
            .map(|value| match value {
                sqlite_guard::HostValue::Null => Value::Null,
                sqlite_guard::HostValue::Integer(n) => Value::Integer(n),
                sqlite_guard::HostValue::Real(x) => Value::Real(x),
                sqlite_guard::HostValue::Text(text) => Value::Text(text),
                sqlite_guard::HostValue::Blob(bytes) => Value::Blob(bytes),
            })
            .collect();
        budget.take(ResultBudget::weigh(&values))?;
        rows.rows.push(values);
    }
    Ok((rows, answer.changes))
}

/// One call of the host's function on `connection`, its values borrowed.
async fn call_host(
    connection: &mut SqliteConnection,
    call: &str,
    key: &[u8],
    statement: &str,
    params: &[Value],
) -> Result<SqliteRow, Error> {
    bind(sqlx::query(call).bind(key).bind(statement), params)
        .fetch_one(connection)
        .await
        .map_err(error)
}

/// `query` with `params` bound after what it already has, borrowed: nothing is copied
/// until sqlx hands the values to SQLite.
fn bind<'q>(
    mut query: sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments<'q>>,
    params: &'q [Value],
) -> sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments<'q>> {
    for param in params {
        query = match param {
            Value::Null => query.bind(None::<i64>),
            Value::Integer(n) => query.bind(*n),
            Value::Real(x) => query.bind(*x),
            Value::Text(text) => query.bind(text.as_str()),
            Value::Blob(bytes) => query.bind(bytes.as_slice()),
            Value::Boolean(b) => query.bind(*b),
        };
    }
    query
}

/// A row's values, each by its stored type (SQLite types values, not columns).
fn decode(row: &SqliteRow) -> Result<Vec<Value>, Error> {
    (0..row.len())
        .map(|i| {
            let raw = row.try_get_raw(i).map_err(error)?;
            if raw.is_null() {
                return Ok(Value::Null);
            }
            let value = match raw.type_info().name() {
                "INTEGER" | "BOOLEAN" => Value::Integer(row.try_get_unchecked(i).map_err(error)?),
                "REAL" => Value::Real(row.try_get_unchecked(i).map_err(error)?),
                "BLOB" => Value::Blob(row.try_get_unchecked(i).map_err(error)?),
                _ => Value::Text(row.try_get_unchecked(i).map_err(error)?),
            };
            Ok(value)
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::deployment::{DatabaseBackend, Timeout};

    /// The files under `dir` this process still has open. A connection that did not
    /// close keeps its database file open (SQLite's own sign of a clean close, the
    /// write-ahead log removed, also needs connections to close one after another).
    pub(crate) fn files_open_under(dir: &Path) -> Vec<std::path::PathBuf> {
        let dir = dir.canonicalize().unwrap();
        std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
            .filter(|file| file.starts_with(&dir))
            .collect()
    }

    /// A SQLite database of two connections, 2 s to wait for one, the default bound.
    pub(crate) fn spec() -> DatabaseSpec {
        DatabaseSpec {
            backend: DatabaseBackend::Sqlite,
            pool: 2,
            acquire_timeout: Timeout(Duration::from_secs(2)),
            max_result: DEFAULT_MAX_RESULT,
            migrations: None,
        }
    }

    #[tokio::test]
    async fn a_file_carried_to_postgres_is_not_replaced_by_an_empty_one() {
        let dir = tempfile::tempdir().unwrap();
        let file = file_of(dir.path(), "m");
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        let aside = dir.path().join("databases/m.sqlite.carried-to-postgres.2");
        std::fs::write(&aside, b"the data, carried").unwrap();
        let refused = open("m", &spec(), dir.path(), Duration::from_secs(2), [7; 32])
            .await
            .err()
            .expect("refused");
        assert!(format!("{refused:#}").contains("its data was carried into postgres"));
        assert!(!file.exists());
        // Moved away by the operator: the module starts afresh.
        std::fs::remove_file(&aside).unwrap();
        let database = open("m", &spec(), dir.path(), Duration::from_secs(2), [7; 32])
            .await
            .unwrap();
        database.close().await;
        assert!(file.exists());
    }

    #[tokio::test]
    async fn closing_right_after_a_loan_closes_every_connection() {
        let spec = spec();
        let budget = || ResultBudget::new(DEFAULT_MAX_RESULT.bytes());
        for round in 0..40 {
            let dir = tempfile::tempdir().unwrap();
            let database = open("m", &spec, dir.path(), Duration::from_secs(2), [7; 32])
                .await
                .unwrap();
            database
                .execute_as(Author::Module, "CREATE TABLE t (v)", vec![], budget())
                .await
                .unwrap();
            database
                .query_as(Author::Host, "SELECT 1", vec![], budget())
                .await
                .unwrap();
            // Both connections are still on their way back to their pools.
            database.close().await;
            let open = files_open_under(dir.path());
            assert!(open.is_empty(), "round {round}: still open: {open:?}");
        }
    }
}
