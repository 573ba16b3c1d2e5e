//! The SQLite backend: one file per module, `<data_dir>/databases/<module>.sqlite`.
//!
//! Every connection is opened in WAL mode (readers do not block the writer), with a
//! busy timeout (a writer waits for another instead of failing at once) and foreign
//! keys enforced, and carries the module's guard ([`super::sqlite_guard`]): no
//! `ATTACH`, no extensions, no PRAGMA that reaches past the module's own schema, no
//! access to the host's tables, no value larger than its result bound, no statement
//! past its deadline. The host reaches its tables with [`query_as`] and
//! [`execute_as`] as [`Author::Host`].

use anyhow::{Context, Result};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Executor, Row, Sqlite, TypeInfo, ValueRef};
use std::path::Path;
use std::time::Duration;

use super::{error, sqlite_guard, Author, Error, ResultBudget, Rows, Value};
use crate::deployment::database::DEFAULT_MAX_RESULT;
use crate::deployment::DatabaseSpec;

/// How long a writer waits for another writer's lock before failing with `timeout`
/// (at most: never longer than the module's own statement timeout).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens (creating if needed) `module`'s database file and its pool, each connection
/// guarded: statements interrupted past `statement_timeout`, no value larger than the
/// module's result bound.
pub async fn open(
    module: &str,
    spec: &DatabaseSpec,
    data_dir: &Path,
    statement_timeout: Duration,
) -> Result<sqlx::SqlitePool> {
    let dir = data_dir.join("databases");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let file = dir.join(format!("{module}.sqlite"));
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
    SqlitePoolOptions::new()
        .max_connections(spec.pool)
        .acquire_timeout(spec.acquire_timeout.duration())
        .after_connect(move |connection, _| {
            Box::pin(async move {
                let mut handle = connection.lock_handle().await?;
                // SAFETY: the handle is a live connection, locked for our exclusive use
                // for the duration of this call.
                unsafe {
                    sqlite_guard::install(
                        handle.as_raw_handle().as_ptr(),
                        statement_timeout,
                        max_length,
                    );
                }
                Ok(())
            })
        })
        .connect_with(options)
        .await
        .with_context(|| format!("opening {}", file.display()))
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
            // Two random UUIDs: 244 bits from the operating system's generator.
            let mut secret = [0u8; 32];
            secret[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
            secret[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
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
    params: Vec<Value>,
    budget: ResultBudget,
) -> Result<Rows, Error> {
    check_parameters(statement)?;
    let stream = bind(sqlx::query(statement), params).fetch(executor);
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
    params: Vec<Value>,
    budget: ResultBudget,
) -> Result<u64, Error> {
    check_parameters(statement)?;
    let done = bind(sqlx::query(statement), params)
        .execute(executor)
        .await
        .map_err(|e| budget.error(e))?;
    Ok(done.rows_affected())
}

/// Puts `connection` in host mode ([`sqlite_guard::host_mode`]) until the returned
/// guard is dropped.
async fn host_mode(connection: &mut SqliteConnection) -> Result<sqlite_guard::HostMode, Error> {
    let mut handle = connection.lock_handle().await.map_err(error)?;
    // SAFETY: the handle is a live connection, locked for our exclusive use for the
    // duration of this call.
    unsafe { sqlite_guard::host_mode(handle.as_raw_handle().as_ptr()) }.ok_or_else(|| {
        Error::Other("the connection carries no guard (the host's own mistake)".into())
    })
}

/// [`query`] on `connection` as `author`: the host's statements run with the
/// connection in host mode, tagged ([`sqlite_guard::host_statement`]).
pub async fn query_as(
    connection: &mut SqliteConnection,
    author: Author,
    statement: &str,
    params: Vec<Value>,
    budget: ResultBudget,
) -> Result<Rows, Error> {
    let (_host, tagged) = as_author(connection, author, statement).await?;
    query(
        &mut *connection,
        tagged.as_deref().unwrap_or(statement),
        params,
        budget,
    )
    .await
}

/// [`execute`] on `connection` as `author` (see [`query_as`]).
pub async fn execute_as(
    connection: &mut SqliteConnection,
    author: Author,
    statement: &str,
    params: Vec<Value>,
    budget: ResultBudget,
) -> Result<u64, Error> {
    let (_host, tagged) = as_author(connection, author, statement).await?;
    execute(
        &mut *connection,
        tagged.as_deref().unwrap_or(statement),
        params,
        budget,
    )
    .await
}

/// For the host's statement: `connection` in host mode (until the guard is dropped)
/// and the statement's tagged text. Nothing for the module's.
async fn as_author(
    connection: &mut SqliteConnection,
    author: Author,
    statement: &str,
) -> Result<(Option<sqlite_guard::HostMode>, Option<String>), Error> {
    Ok(match author {
        Author::Module => (None, None),
        Author::Host => (
            Some(host_mode(connection).await?),
            Some(sqlite_guard::host_statement(statement)),
        ),
    })
}

fn bind<'q>(
    mut query: sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments<'q>>,
    params: Vec<Value>,
) -> sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments<'q>> {
    for param in params {
        query = match param {
            Value::Null => query.bind(None::<i64>),
            Value::Integer(n) => query.bind(n),
            Value::Real(x) => query.bind(x),
            Value::Text(text) => query.bind(text),
            Value::Blob(bytes) => query.bind(bytes),
            Value::Boolean(b) => query.bind(b),
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
