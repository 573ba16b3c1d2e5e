//! `modhost:sql`: each module's own database (`wit/modhost/sql.wit`).
//!
//! Lifecycle, like every capability ([`Sql`]): the interface is **linked once**; a
//! version that imports `modhost:sql` without `database = …` is **refused** when it is
//! configured (deny by default); each module with a database gets **its own
//! [`Database`]** when the node **opens** it ([`Database::open`]: its SQLite file or its
//! Postgres schema and role, its pool, its migrations applied); a new version's
//! migrations are applied before it serves (**upgrade**); every instance of the module
//! is **prepared** with a handle to the database, and nothing else.
//!
//! Isolation is the database's own: a module's SQLite connections open only its file
//! (and may not `ATTACH` another, change anything beyond it, or touch the host's own
//! tables in it: [`sqlite_guard`]; the host uses [`Database::host_query`] for those);
//! its Postgres connections log in as its own role, which owns its schema and has no
//! rights on any other.
//!
//! Every statement is bounded three times: waiting for a connection by the pool's
//! acquire timeout (the module's bulkhead), running by the module's own timeout (the
//! database interrupts it there too: SQLite's progress handler, Postgres's statement
//! timeout), and what it returns by the module's `max_result` ([`ResultBudget`]).

pub mod carry;
pub mod migrations;
#[cfg(feature = "postgres")]
mod postgres;
mod schema_clock;
mod sqlite;
pub mod sqlite_guard;

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use wasmtime::component::{HasSelf, Linker, Resource};

use super::{
    Capability, Components, InstanceState, OpenContext, StateMap, UpgradeContext, VersionContext,
};
use crate::deployment::{DatabaseBackend, DatabaseSpec};
use crate::runtime::BoxFuture;
use crate::telemetry::metrics::{metrics, Metrics, Sampled};
use prometheus_client::metrics::histogram::Histogram;

/// Host bindings of `modhost:sql`, generated from its WIT (`wit/modhost/sql.wit`,
/// which documents them).
#[allow(missing_docs)]
pub mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit/modhost/sql.wit",
        world: "modhost:sql/guest",
        imports: { default: async | trappable },
        with: { "modhost:sql/sql.transaction": super::Transaction },
        additional_derives: [PartialEq],
    });
}

pub use bindings::modhost::sql::sql::{ConstraintFailure, Error, Rows, Value};
use bindings::modhost::sql::sql::{Host, HostTransaction};
#[cfg(feature = "postgres")]
pub use postgres::PING_AFTER_IDLE;
pub use schema_clock::SchemaClock;

/// The interface's name, as modules import it.
pub const INTERFACE: &str = "modhost:sql/sql@2.0.0";

/// The `modhost:sql` capability.
pub struct Sql;

/// An instance's handle to its module's database.
pub struct SqlSlice(Arc<Database>);

/// Where `module` keeps its data on Postgres, if it does: the administrator's URL,
/// its schema and how connections are encrypted.
fn postgres_of(module: OpenContext<'_>) -> Option<(&str, &str, &crate::deployment::PostgresTls)> {
    match &module.spec.database.as_ref()?.backend {
        DatabaseBackend::Postgres { url, schema, tls } => Some((url, schema, tls)),
        DatabaseBackend::Sqlite => None,
    }
}

impl Capability for Sql {
    fn name(&self) -> &'static str {
        "modhost:sql"
    }

    /// Links `modhost:sql` into `linker`.
    fn link(&self, linker: &mut Linker<InstanceState>, _: &Components<'_>) -> Result<()> {
        bindings::modhost::sql::sql::add_to_linker::<InstanceState, HasSelf<InstanceState>>(
            linker,
            |state| state,
        )?;
        Ok(())
    }

    fn configure(&self, version: &VersionContext<'_>, _: &mut StateMap) -> Result<()> {
        let spec = version.spec;
        if version.imports("modhost:sql/") && spec.database.is_none() {
            anyhow::bail!(
                "{} imports {INTERFACE} but the module has no database: add `database = \"sqlite\"` \
                 (or postgres) under [modules.{}]",
                version.path.display(),
                spec.name
            );
        }
        // Migrations are applied when the module opens; their names are checked now,
        // so `modhost check` catches a misnamed or duplicated file.
        if let Some(dir) = spec.database.as_ref().and_then(|db| db.migrations.as_ref()) {
            migrations::read(dir)?;
        }
        Ok(())
    }

    fn open<'a>(
        &'a self,
        module: OpenContext<'a>,
        state: &'a mut StateMap,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let spec = module.spec;
            let Some(database) = &spec.database else {
                return Ok(());
            };
            let data_dir = &module.deployment.data_dir;
            let opened = Database::open_unmigrated(
                &spec.name,
                database,
                data_dir,
                spec.limits.timeout.duration(),
            )
            .await?;
            // A schema made now for a module whose SQLite file is here awaits the
            // file's rows: what its migrations make is the file's to replace. One
            // node at a time looks and migrates: a node that finds nothing awaited
            // and makes the tables is seen by the next as a schema with tables; one
            // that records the awaiting, as awaited.
            let lock = opened
                .lock_session(&carry::lock_name(&spec.name), carry::LOCK_WAIT)
                .await?;
            let single_node = module.deployment.nodes.is_empty();
            let prepared = carry::before_migrations(
                &opened,
                data_dir,
                &spec.name,
                &carry::former_spec(database),
                single_node,
            )
            .await;
            let migrated = match prepared {
                Ok(()) => opened.migrate(database).await,
                Err(error) => Err(error),
            };
            lock.release().await;
            migrated?;
            tracing::info!(module = %spec.name, backend = opened.backend(), "database ready");
            state.insert(opened);
            if let Some(opened) = state.get_arc::<Database>() {
                // Its pool's connections are read at each scrape, while it is open.
                let sampled: Arc<dyn Sampled> = opened;
                metrics().sample_from(Arc::downgrade(&sampled));
            }
            Ok(())
        })
    }

    /// A module's SQLite file; a Postgres schema is reached from every node.
    fn data_files(&self, module: OpenContext<'_>) -> Vec<PathBuf> {
        match &module.spec.database {
            Some(database) if database.backend == DatabaseBackend::Sqlite => {
                vec![sqlite::file_of(
                    &module.deployment.data_dir,
                    &module.spec.name,
                )]
            }
            _ => Vec::new(),
        }
    }

    /// A Postgres schema (the module's, or the host's for it) that exists is in use.
    fn check_unused<'a>(&'a self, module: OpenContext<'a>) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            match postgres_of(module) {
                #[cfg(feature = "postgres")]
                Some((url, schema, tls)) => {
                    postgres::check_unused(&module.spec.name, url, schema, tls).await
                }
                #[cfg(not(feature = "postgres"))]
                Some(_) => anyhow::bail!("this modhost is built without postgres"),
                None => Ok(()),
            }
        })
    }

    /// Drops the module's schema and the host's schema for it.
    fn discard<'a>(&'a self, module: OpenContext<'a>) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            match postgres_of(module) {
                #[cfg(feature = "postgres")]
                Some((url, schema, tls)) => {
                    postgres::drop_schemas(&module.spec.name, url, schema, tls).await
                }
                _ => Ok(()),
            }
        })
    }

    /// Moves what the write-ahead log holds into the file: all of it, emptying the
    /// log, when the module's work is held; what it can without waiting, otherwise.
    fn settle<'a>(
        &'a self,
        module: OpenContext<'a>,
        state: &'a StateMap,
        held: bool,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            if state.get::<Database>().is_none() {
                return Ok(());
            }
            for file in self.data_files(module) {
                sqlite::checkpoint(&file, held).await?;
            }
            Ok(())
        })
    }

    fn count<'a>(
        &'a self,
        file: &'a Path,
    ) -> BoxFuture<'a, Result<std::collections::BTreeMap<String, u64>>> {
        Box::pin(async move {
            if is_sqlite(file) {
                sqlite::count_rows(file).await
            } else {
                Ok(std::collections::BTreeMap::new())
            }
        })
    }

    fn upgrade<'a>(
        &'a self,
        version: UpgradeContext<'a>,
        state: &'a StateMap,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let Some(database) = state.get::<Database>() else {
                return Ok(());
            };
            let dir: Option<PathBuf> = version.migrations.map(Path::to_path_buf).or_else(|| {
                version
                    .spec
                    .database
                    .as_ref()
                    .and_then(|db| db.migrations.clone())
            });
            let Some(dir) = dir else { return Ok(()) };
            let applied = migrations::apply(database, &dir)
                .await
                .with_context(|| format!("migrating {}'s database", version.spec.name))?;
            // The new version's migrations may have been applied by another node of
            // the deployment, before this one got to them: its connections knew the
            // schema before either way.
            database.schema_changed();
            if applied > 0 {
                tracing::info!(module = %version.spec.name, applied, dir = %dir.display(), "migrations applied for the new version");
            }
            Ok(())
        })
    }

    fn prepare(&self, instance: &mut InstanceState, module: &StateMap, _: &StateMap) {
        if let Some(database) = module.get_arc::<Database>() {
            instance.slices.insert(SqlSlice(database));
        }
    }
}

/// A lock of the host's on Postgres held by this process ([`Database::lock_session`]):
/// a connection of its own, closed to release it (so a lock never goes back to a pool).
pub(crate) struct SessionLock {
    /// The connection that holds it (none on SQLite).
    #[cfg(feature = "postgres")]
    connection: Option<sqlx::PgConnection>,
}

impl SessionLock {
    /// No lock: SQLite needs none.
    fn none() -> SessionLock {
        SessionLock {
            #[cfg(feature = "postgres")]
            connection: None,
        }
    }

    /// Releases the lock: its connection closes.
    pub(crate) async fn release(self) {
        #[cfg(feature = "postgres")]
        if let Some(connection) = self.connection {
            use sqlx::Connection;
            let _ = connection.close().await;
        }
    }
}

/// One module's database: its pool, how long a statement may run and how much a
/// result may weigh.
pub struct Database {
    module: String,
    pool: Pool,
    statement_timeout: Duration,
    max_result: u64,
    /// The host's secret for this database (see [`Database::host_key`]).
    secret: [u8; 32],
}

/// A result as it arrives, weighed against the module's `max_result`: what the host
/// holds of one result never grows past that bound (plus the row that crossed it).
///
/// A value weighs its bytes (text, blob) plus [`VALUE_OVERHEAD`], about what it takes
/// in the module's memory once lowered.
#[derive(Debug, Clone, Copy)]
pub struct ResultBudget {
    limit: u64,
    used: u64,
}

/// What a value weighs beyond its bytes: its place in the list of values.
pub const VALUE_OVERHEAD: u64 = 16;

impl ResultBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: u64) -> ResultBudget {
        ResultBudget { limit, used: 0 }
    }

    /// What a row of `values` weighs.
    pub fn weigh(values: &[Value]) -> u64 {
        values
            .iter()
            .map(|value| {
                let bytes = match value {
                    Value::Text(text) => text.len(),
                    Value::Blob(bytes) => bytes.len(),
                    _ => 0,
                };
                VALUE_OVERHEAD.saturating_add(u64::try_from(bytes).unwrap_or(u64::MAX))
            })
            .fold(0, u64::saturating_add)
    }

    /// Takes a row of `weight` out of the budget; `too-large` once the rows so far
    /// outweigh it.
    pub fn take(&mut self, weight: u64) -> Result<(), Error> {
        self.used = self.used.saturating_add(weight);
        if self.used > self.limit {
            return Err(Error::TooLarge(self.limit));
        }
        Ok(())
    }

    /// A database error as the module sees it, naming this bound when the database
    /// refused to build a value that large.
    fn error(&self, error: sqlx::Error) -> Error {
        match self::error(error) {
            Error::TooLarge(_) => Error::TooLarge(self.limit),
            other => other,
        }
    }
}

/// Takes a result's rows as they arrive from `stream`, each through `take` (which
/// weighs it against `budget` and decodes it, in the order the backend prefers), until
/// the stream ends or the budget is spent.
async fn collect<R: sqlx::Row>(
    mut stream: futures_util::stream::BoxStream<'_, Result<R, sqlx::Error>>,
    mut budget: ResultBudget,
    take: impl Fn(&R, &mut ResultBudget) -> Result<Vec<Value>, Error>,
) -> Result<Rows, Error> {
    use futures_util::TryStreamExt;
    use sqlx::Column;
    let mut result = Rows {
        columns: Vec::new(),
        rows: Vec::new(),
    };
    while let Some(row) = stream.try_next().await.map_err(|e| budget.error(e))? {
        if result.columns.is_empty() {
            result.columns = row.columns().iter().map(|c| c.name().to_string()).collect();
        }
        result.rows.push(take(&row, &mut budget)?);
    }
    Ok(result)
}

/// Waits for `acquiring` — a connection of a module's pool, or a transaction on one —
/// and records in `waited` how long that took (for a transaction, with its `BEGIN`):
/// `modhost_db_acquire_seconds`, the sign of a pool too small for its module.
async fn timed<T>(waited: &Histogram, acquiring: impl std::future::Future<Output = T>) -> T {
    let started = std::time::Instant::now();
    let acquired = acquiring.await;
    waited.observe(started.elapsed().as_secs_f64());
    acquired
}

/// A connection of `pool`, the wait for it recorded in `waited` when given (the
/// module's own pool; the host's small pool is not the module's to tune).
async fn lend<DB: sqlx::Database>(
    pool: &sqlx::Pool<DB>,
    waited: Option<&Histogram>,
) -> Result<sqlx::pool::PoolConnection<DB>, Error> {
    match waited {
        Some(waited) => timed(waited, pool.acquire()).await,
        None => pool.acquire().await,
    }
    .map_err(error)
}

enum Pool {
    Sqlite(Arc<sqlite::SqliteDatabase>),
    #[cfg(feature = "postgres")]
    Postgres(Arc<postgres::PgDatabase>),
}

/// Whose statement runs: the module's own SQL, or the host's on its own tables (which
/// each backend keeps apart: [`sqlite_guard`], [`postgres`]'s host schema).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Author {
    /// The module's SQL, which may not touch the host's tables.
    Module,
    /// The host's, on its own tables.
    Host,
}

/// What the host's functions on Postgres are keyed with: [`Database::host_key`] for
/// this purpose.
#[cfg(feature = "postgres")]
const HOST_FUNCTION_KEY: &str = "postgres host functions";

/// What the host's statements in a module's transaction on SQLite are keyed with
/// ([`sqlite_guard::HOST_FUNCTION`]).
const SQLITE_HOST_KEY: &str = "sqlite host statements";

/// How a transaction's host statements reach the host's tables.
enum HostReach {
    /// The transaction is the host's own, on its own pool: they run as they are, and
    /// the module's statements not at all.
    Direct,
    /// A module's transaction on SQLite: each runs through the guard's keyed function.
    Sqlite(Arc<sqlite::SqliteDatabase>),
    /// A module's transaction on Postgres: the tables through the host's functions
    /// ([`Transaction::host_call`], keyed with `key`); what needs no table (an
    /// advisory lock) as it is.
    #[cfg(feature = "postgres")]
    Postgres {
        database: Arc<postgres::PgDatabase>,
        key: [u8; 32],
    },
}

/// A lease from [`Database::try_lease`]: held while this lives.
pub struct Lease(#[allow(dead_code)] Option<LeaseConnection>);

/// The connection a lease on Postgres keeps (a build without Postgres has none).
#[cfg(feature = "postgres")]
type LeaseConnection = sqlx::PgConnection;
#[cfg(not(feature = "postgres"))]
type LeaseConnection = std::convert::Infallible;

/// An open transaction: a connection of the module's pool, held until commit,
/// rollback, or drop (which rolls back).
pub struct Transaction {
    on: TransactionOn,
    /// The module's `max_result`.
    max_result: u64,
    /// Woken once the transaction commits (the outbox relay, when it published).
    after_commit: Option<Arc<tokio::sync::Notify>>,
    /// How its host statements reach the host's tables.
    host: HostReach,
}

enum TransactionOn {
    /// With its database's clock, marked if the connection's worker crashes.
    Sqlite(sqlx::Transaction<'static, sqlx::Sqlite>, Arc<SchemaClock>),
    #[cfg(feature = "postgres")]
    Postgres(sqlx::Transaction<'static, sqlx::Postgres>),
}

/// At each scrape: how many of the module's pool's connections are lent out, and how
/// many idle.
impl Sampled for Database {
    fn sample(&self, metrics: &Metrics) {
        let (size, idle) = match &self.pool {
            Pool::Sqlite(database) => (database.pool.size(), database.pool.num_idle()),
            #[cfg(feature = "postgres")]
            Pool::Postgres(database) => (database.pool.size(), database.pool.num_idle()),
        };
        let idle = u32::try_from(idle).unwrap_or(u32::MAX);
        metrics.db_pool(&self.module, size.saturating_sub(idle), idle);
    }
}

impl Database {
    /// Opens `module`'s database as `spec` says (creating its file, or its schema and
    /// role, on first use) and applies its pending migrations. `data_dir` holds SQLite
    /// files; `statement_timeout` is the module's own timeout.
    pub async fn open(
        module: &str,
        spec: &DatabaseSpec,
        data_dir: &std::path::Path,
        statement_timeout: Duration,
    ) -> Result<Database> {
        let database = Database::open_unmigrated(module, spec, data_dir, statement_timeout).await?;
        database.migrate(spec).await?;
        Ok(database)
    }

    /// [`Database::open`] without applying the migrations ([`Database::migrate`]).
    async fn open_unmigrated(
        module: &str,
        spec: &DatabaseSpec,
        data_dir: &std::path::Path,
        statement_timeout: Duration,
    ) -> Result<Database> {
        // A SQLite file made now gets a secret of its own; one made before files kept
        // their secret kept the node's, which sealed what it holds already.
        let (pool, secret, new_file) = match &spec.backend {
            DatabaseBackend::Sqlite => {
                let secret = sqlite::host_secret(data_dir)?;
                let new_file = !sqlite::file_of(data_dir, module).exists();
                let key = derive_key(&secret, SQLITE_HOST_KEY);
                let database = sqlite::open(module, spec, data_dir, statement_timeout, key).await?;
                (Pool::Sqlite(Arc::new(database)), secret, Some(new_file))
            }
            #[cfg(not(feature = "postgres"))]
            DatabaseBackend::Postgres { .. } => {
                anyhow::bail!("{}", crate::deployment::build::Part::Postgres.missing())
            }
            #[cfg(feature = "postgres")]
            DatabaseBackend::Postgres { url, schema, tls } => {
                let database =
                    postgres::open(module, spec, url, schema, tls, statement_timeout).await?;
                let secret = database.secret();
                (Pool::Postgres(Arc::new(database)), secret, None)
            }
        };
        let mut database = Database {
            module: module.to_string(),
            pool,
            statement_timeout,
            max_result: spec.max_result.bytes(),
            secret,
        };
        if let Some(new_file) = new_file {
            let first = if new_file { random_secret() } else { secret };
            database.secret = database.file_secret(first).await?;
        }
        Ok(database)
    }

    /// Takes the host's lock `name` on Postgres for this process until
    /// [`SessionLock::release`] (or until the lock is dropped, which closes its
    /// connection), waiting at most `wait`: other nodes taking it wait. Nothing on
    /// SQLite, which one node alone opens.
    pub(crate) async fn lock_session(&self, name: &str, wait: Duration) -> Result<SessionLock> {
        match &self.pool {
            Pool::Sqlite(_) => {
                let _ = (name, wait);
                Ok(SessionLock::none())
            }
            #[cfg(feature = "postgres")]
            Pool::Postgres(database) => {
                let mut connection = database
                    .host_pool
                    .acquire()
                    .await
                    .context("a connection for the host's lock")?
                    .detach();
                sqlx::query(&format!(
                    "SET statement_timeout = '{}ms'",
                    wait.as_millis().max(1)
                ))
                .execute(&mut connection)
                .await
                .context("setting the host's lock wait")?;
                sqlx::query("SELECT pg_advisory_lock($1)")
                    .bind(database.lock_key(name))
                    .execute(&mut connection)
                    .await
                    .with_context(|| format!("waiting for the host's lock {name}"))?;
                Ok(SessionLock {
                    connection: Some(connection),
                })
            }
        }
    }

    /// Applies the migrations of `spec` not yet applied.
    async fn migrate(&self, spec: &DatabaseSpec) -> Result<()> {
        if let Some(dir) = &spec.migrations {
            let applied = migrations::apply(self, dir).await?;
            if applied > 0 {
                tracing::info!(module = %self.module, applied, dir = %dir.display(), "migrations applied");
            }
        }
        Ok(())
    }

    /// The secret a SQLite file keeps for the host's keys (`modhost_secret`, a host
    /// table no module reaches): `first` on first use. It moves with the file, so the
    /// seals of the events waiting in its outbox hold on whichever node opens it next.
    async fn file_secret(&self, first: [u8; 32]) -> Result<[u8; 32]> {
        self.host_execute(
            "CREATE TABLE IF NOT EXISTS modhost_secret \
             (id INTEGER PRIMARY KEY CHECK (id = 1), secret TEXT NOT NULL)",
            Vec::new(),
        )
        .await?;
        let hex: String = first.iter().map(|b| format!("{b:02x}")).collect();
        self.host_execute(
            "INSERT INTO modhost_secret (id, secret) VALUES (1, $1) ON CONFLICT (id) DO NOTHING",
            vec![Value::Text(hex)],
        )
        .await?;
        let rows = self
            .host_query("SELECT secret FROM modhost_secret WHERE id = 1", Vec::new())
            .await?;
        let kept = match rows.rows.first().and_then(|row| row.first()) {
            Some(Value::Text(kept)) => kept.clone(),
            _ => anyhow::bail!("the database of {} keeps no secret", self.module),
        };
        let bytes: Vec<u8> = (0..kept.len())
            .step_by(2)
            .filter_map(|i| u8::from_str_radix(kept.get(i..i + 2)?, 16).ok())
            .collect();
        <[u8; 32]>::try_from(bytes).map_err(|_| {
            anyhow::anyhow!("the database of {} keeps a malformed secret", self.module)
        })
    }

    /// How long one statement may run (the module's timeout).
    pub fn statement_timeout(&self) -> Duration {
        self.statement_timeout
    }

    /// Records that the host just changed the module's schema: connections that knew
    /// it before are closed at their next loan instead of lent ([`SchemaClock`]).
    pub fn schema_changed(&self) {
        match &self.pool {
            Pool::Sqlite(database) => database.schema_clock.mark(),
            #[cfg(feature = "postgres")]
            Pool::Postgres(database) => database.schema_changed(),
        }
    }

    /// The module that owns this database.
    pub fn module(&self) -> &str {
        &self.module
    }

    /// Which backend, for logs and status.
    pub fn backend(&self) -> &'static str {
        match self.pool {
            Pool::Sqlite(_) => "sqlite",
            #[cfg(feature = "postgres")]
            Pool::Postgres(_) => "postgres",
        }
    }

    /// Tries to become the one holder of `name` (a lease among every node sharing this
    /// database), for as long as the returned [`Lease`] lives: on Postgres a session
    /// advisory lock on a connection kept for it, released when the connection goes
    /// (the lease is dropped, the node dies). On SQLite, where a database belongs to
    /// one node, always granted. `None`: another node holds it now.
    #[cfg_attr(not(feature = "postgres"), allow(unused_variables))]
    pub async fn try_lease(&self, name: &str) -> Result<Option<Lease>, Error> {
        match &self.pool {
            Pool::Sqlite(_) => Ok(Some(Lease(None))),
            #[cfg(feature = "postgres")]
            Pool::Postgres(database) => {
                let mut connection = database.pool.acquire().await.map_err(error)?;
                let held: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                    .bind(database.lock_key(&format!("modhost.{}.{name}", self.module)))
                    .fetch_one(&mut *connection)
                    .await
                    .map_err(error)?;
                // A connection whose lock was not granted goes back to the pool as is.
                Ok(held.then_some(Lease(Some(connection.detach()))))
            }
        }
    }

    /// Closes the pool, waiting for connections in use to come back.
    pub async fn close(&self) {
        match &self.pool {
            Pool::Sqlite(database) => database.close().await,
            #[cfg(feature = "postgres")]
            Pool::Postgres(database) => close_pool(&database.pool).await,
        }
    }

    /// Runs a statement of the module's that returns rows, within the statement
    /// timeout.
    pub async fn query(&self, statement: &str, params: Vec<Value>) -> Result<Rows, Error> {
        self.query_as(Author::Module, statement, params).await
    }

    /// Runs a statement of the module's that changes rows, within the statement
    /// timeout; returns how many it changed.
    pub async fn execute(&self, statement: &str, params: Vec<Value>) -> Result<u64, Error> {
        self.execute_as(Author::Module, statement, params).await
    }

    /// Runs one of the host's statements on its own tables (`modhost_…`) that returns
    /// rows, within the statement timeout. The module's own statements
    /// ([`Database::query`]) may not touch those tables: on SQLite the guard keeps the
    /// two apart ([`sqlite_guard`]; these may change nothing else), on Postgres the
    /// tables are in the host's schema and these run as the administrator.
    pub async fn host_query(&self, statement: &str, params: Vec<Value>) -> Result<Rows, Error> {
        self.query_as(Author::Host, statement, params).await
    }

    /// Runs one of the host's statements on its own tables that changes rows, within
    /// the statement timeout (see [`Database::host_query`]).
    pub async fn host_execute(&self, statement: &str, params: Vec<Value>) -> Result<u64, Error> {
        self.execute_as(Author::Host, statement, params).await
    }

    async fn query_as(
        &self,
        author: Author,
        statement: &str,
        params: Vec<Value>,
    ) -> Result<Rows, Error> {
        self.bounded(async {
            let budget = ResultBudget::new(self.max_result);
            match &self.pool {
                Pool::Sqlite(database) => {
                    database.query_as(author, statement, params, budget).await
                }
                #[cfg(feature = "postgres")]
                Pool::Postgres(database) => {
                    let connection =
                        lend(database.pool_of(author), database.waited(author)).await?;
                    postgres::query(connection, statement, &params, budget).await
                }
            }
        })
        .await
    }

    async fn execute_as(
        &self,
        author: Author,
        statement: &str,
        params: Vec<Value>,
    ) -> Result<u64, Error> {
        self.bounded(async {
            let budget = ResultBudget::new(self.max_result);
            match &self.pool {
                Pool::Sqlite(database) => {
                    database.execute_as(author, statement, params, budget).await
                }
                #[cfg(feature = "postgres")]
                Pool::Postgres(database) => {
                    let connection =
                        lend(database.pool_of(author), database.waited(author)).await?;
                    postgres::execute(connection, statement, &params).await
                }
            }
        })
        .await
    }

    /// Begins a transaction on one of the pool's connections.
    pub async fn begin(&self) -> Result<Transaction, Error> {
        self.bounded(async {
            let (on, host) = match &self.pool {
                Pool::Sqlite(database) => (
                    TransactionOn::Sqlite(
                        timed(&database.acquire_wait, database.pool.begin())
                            .await
                            .map_err(error)?,
                        database.schema_clock.clone(),
                    ),
                    HostReach::Sqlite(database.clone()),
                ),
                #[cfg(feature = "postgres")]
                Pool::Postgres(database) => (
                    TransactionOn::Postgres(
                        timed(&database.acquire_wait, database.pool.begin())
                            .await
                            .map_err(error)?,
                    ),
                    HostReach::Postgres {
                        database: database.clone(),
                        key: self.host_key(HOST_FUNCTION_KEY),
                    },
                ),
            };
            Ok(Transaction {
                on,
                max_result: self.max_result,
                after_commit: None,
                host,
            })
        })
        .await
    }

    /// Begins a transaction of the host's alone, on its own tables, on one of its own
    /// connections (whose statements then go through [`Transaction::host_execute`]).
    pub async fn host_begin(&self) -> Result<Transaction, Error> {
        self.bounded(async {
            let on = match &self.pool {
                Pool::Sqlite(database) => TransactionOn::Sqlite(
                    database.host_pool.begin().await.map_err(error)?,
                    database.schema_clock.clone(),
                ),
                #[cfg(feature = "postgres")]
                Pool::Postgres(database) => {
                    TransactionOn::Postgres(database.host_pool.begin().await.map_err(error)?)
                }
            };
            Ok(Transaction {
                on,
                max_result: self.max_result,
                after_commit: None,
                host: HostReach::Direct,
            })
        })
        .await
    }

    /// Runs `statements` of the host's that create its tables (and on Postgres its
    /// functions), one node at a time: on Postgres in one transaction under the
    /// host's set-up lock, as several nodes may start together.
    pub async fn host_prepare(&self, statements: &[String]) -> Result<(), Error> {
        match &self.pool {
            Pool::Sqlite(_) => {
                for statement in statements {
                    self.host_execute(statement, Vec::new()).await?;
                }
                Ok(())
            }
            #[cfg(feature = "postgres")]
            Pool::Postgres(database) => {
                use sqlx::Executor;
                let mut tx = database.host_pool.begin().await.map_err(error)?;
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(database.lock_key("modhost.prepare"))
                    .execute(&mut *tx)
                    .await
                    .map_err(error)?;
                for statement in statements {
                    // A plain string runs as a script: a function's body and its grants.
                    (&mut *tx)
                        .execute(statement.as_str())
                        .await
                        .map_err(error)?;
                }
                tx.commit().await.map_err(error)
            }
        }
    }

    /// On Postgres, the statement that creates the host function `name` (see
    /// [`Transaction::host_call`]) with `parameters` after the host's key, returning
    /// `returns`, doing `body` (PL/pgSQL, in the host schema); `None` on SQLite, where
    /// the host writes its tables directly.
    #[cfg_attr(not(feature = "postgres"), allow(unused_variables))]
    pub fn host_function(
        &self,
        name: &str,
        parameters: &str,
        returns: &str,
        body: &str,
    ) -> Option<String> {
        match &self.pool {
            Pool::Sqlite(_) => None,
            #[cfg(feature = "postgres")]
            Pool::Postgres(database) => Some(database.host_function(
                &self.host_key(HOST_FUNCTION_KEY),
                name,
                parameters,
                returns,
                body,
            )),
        }
    }

    /// A key for the host's own use of this database, for `purpose` (sealing the rows
    /// of its outbox, say): the same on every node that shares the database, known to
    /// no module. (SQLite: from the secret the file keeps, which moves with it;
    /// Postgres: from the administrator URL.)
    pub fn host_key(&self, purpose: &str) -> [u8; 32] {
        derive_key(&self.secret, purpose)
    }

    /// The advisory-lock key of the host's lock `name` on Postgres (one no module can
    /// compute); `None` on SQLite, which needs none.
    #[cfg_attr(not(feature = "postgres"), allow(unused_variables))]
    pub fn lock_key(&self, name: &str) -> Option<i64> {
        match &self.pool {
            Pool::Sqlite(_) => None,
            #[cfg(feature = "postgres")]
            Pool::Postgres(database) => Some(database.lock_key(name)),
        }
    }

    /// Runs `operation` within the module's statement timeout. Past it, the database
    /// stops running the statement too: SQLite's guard interrupts it by itself, and
    /// the host cancels it on Postgres.
    pub(crate) async fn bounded<T>(
        &self,
        operation: impl std::future::Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        match tokio::time::timeout(self.statement_timeout, operation).await {
            Ok(result) => result,
            Err(_) => {
                #[cfg(feature = "postgres")]
                if let Pool::Postgres(database) = &self.pool {
                    postgres::cancel_after_deadline(database.clone());
                }
                Err(Error::Timeout)
            }
        }
    }
}

impl Transaction {
    /// Which backend the transaction is on (`sqlite`, `postgres`).
    pub fn backend(&self) -> &'static str {
        match self.on {
            TransactionOn::Sqlite(..) => "sqlite",
            #[cfg(feature = "postgres")]
            TransactionOn::Postgres(_) => "postgres",
        }
    }

    /// Wakes `notify` once this transaction has committed (not if it rolls back).
    pub fn notify_on_commit(&mut self, notify: Arc<tokio::sync::Notify>) {
        self.after_commit = Some(notify);
    }

    // The statement methods return boxed futures: sqlx's executor for a connection
    // (`&mut PgConnection`) is generic over its lifetime, and a future holding one is
    // `Send` for one lifetime but, as rustc sees it, not for every one — which
    // `tokio::spawn` of anything awaiting it requires. Boxed as `Send` here, where the
    // lifetime is known, the question does not arise again further up.

    /// Runs a statement of the module's that returns rows, inside the transaction.
    pub fn query<'a>(
        &'a mut self,
        statement: &'a str,
        params: Vec<Value>,
    ) -> BoxFuture<'a, Result<Rows, Error>> {
        self.query_as(Author::Module, statement, params)
    }

    /// Runs a statement of the module's that changes rows, inside the transaction.
    pub fn execute<'a>(
        &'a mut self,
        statement: &'a str,
        params: Vec<Value>,
    ) -> BoxFuture<'a, Result<u64, Error>> {
        self.execute_as(Author::Module, statement, params)
    }

    /// Runs one of the host's statements that returns rows, inside the transaction: on
    /// SQLite on its own tables (see [`Database::host_query`]); on Postgres, where the
    /// connection is the module's role, for what needs no table (an advisory lock;
    /// its tables are reached with [`Transaction::host_call`]).
    pub fn host_query<'a>(
        &'a mut self,
        statement: &'a str,
        params: Vec<Value>,
    ) -> BoxFuture<'a, Result<Rows, Error>> {
        self.query_as(Author::Host, statement, params)
    }

    /// Runs one of the host's statements that changes rows, inside the transaction
    /// (see [`Transaction::host_query`]).
    pub fn host_execute<'a>(
        &'a mut self,
        statement: &'a str,
        params: Vec<Value>,
    ) -> BoxFuture<'a, Result<u64, Error>> {
        self.execute_as(Author::Host, statement, params)
    }

    fn query_as<'a>(
        &'a mut self,
        author: Author,
        statement: &'a str,
        params: Vec<Value>,
    ) -> BoxFuture<'a, Result<Rows, Error>> {
        Box::pin(async move {
            let budget = ResultBudget::new(self.max_result);
            match (&mut self.on, author, &self.host) {
                (_, Author::Module, HostReach::Direct) => Err(module_in_host_transaction()),
                (TransactionOn::Sqlite(tx, _), Author::Host, HostReach::Sqlite(database)) => {
                    sqlite::host_in_transaction(tx, database, statement, params, budget)
                        .await
                        .map(|(rows, _)| rows)
                }
                (TransactionOn::Sqlite(tx, clock), _, _) => {
                    sqlite::query(&mut **tx, statement, &params, budget, clock).await
                }
                // The host's statements are not kept: a module could replace a
                // kept one (see `postgres::host_query_in`).
                #[cfg(feature = "postgres")]
                (TransactionOn::Postgres(tx), Author::Host, _) => {
                    postgres::host_query_in(tx, statement, &params, budget).await
                }
                #[cfg(feature = "postgres")]
                (TransactionOn::Postgres(tx), Author::Module, _) => {
                    postgres::query_in(tx, statement, &params, budget).await
                }
            }
        })
    }

    fn execute_as<'a>(
        &'a mut self,
        author: Author,
        statement: &'a str,
        params: Vec<Value>,
    ) -> BoxFuture<'a, Result<u64, Error>> {
        Box::pin(async move {
            let budget = ResultBudget::new(self.max_result);
            match (&mut self.on, author, &self.host) {
                (_, Author::Module, HostReach::Direct) => Err(module_in_host_transaction()),
                (TransactionOn::Sqlite(tx, _), Author::Host, HostReach::Sqlite(database)) => {
                    sqlite::host_in_transaction(tx, database, statement, params, budget)
                        .await
                        .map(|(_, changes)| changes)
                }
                (TransactionOn::Sqlite(tx, clock), _, _) => {
                    sqlite::execute(&mut **tx, statement, &params, budget, clock).await
                }
                #[cfg(feature = "postgres")]
                (TransactionOn::Postgres(tx), Author::Host, _) => {
                    postgres::host_execute_in(tx, statement, &params).await
                }
                #[cfg(feature = "postgres")]
                (TransactionOn::Postgres(tx), Author::Module, _) => {
                    postgres::execute_in(tx, statement, &params).await
                }
            }
        })
    }

    /// Calls the host function `function` (made with [`Database::host_function`]) with
    /// the host's key and `params`, inside this transaction of the module's on
    /// Postgres: how the host writes its own tables in the module's transaction there.
    pub fn host_call<'a>(
        &'a mut self,
        function: &'a str,
        params: Vec<Value>,
    ) -> BoxFuture<'a, Result<Rows, Error>> {
        Box::pin(async move {
            #[cfg(feature = "postgres")]
            if let (TransactionOn::Postgres(tx), HostReach::Postgres { database, key }) =
                (&mut self.on, &self.host)
            {
                let budget = ResultBudget::new(self.max_result);
                let statement = database.host_call(function, params.len());
                let mut keyed = Vec::with_capacity(params.len() + 1);
                keyed.push(Value::Blob(key.to_vec()));
                keyed.extend(params);
                return postgres::host_query_in(tx, &statement, &keyed, budget).await;
            }
            Err(Error::Other(format!(
                "host function {function} ({} parameters) called outside a module's \
                 Postgres transaction",
                params.len()
            )))
        })
    }

    /// Runs `sql`, one or more statements of the module's without parameters (a
    /// migration).
    fn execute_script<'a>(&'a mut self, sql: &'a str) -> BoxFuture<'a, Result<(), Error>> {
        use sqlx::Executor;
        Box::pin(async move {
            if matches!(self.host, HostReach::Direct) {
                return Err(module_in_host_transaction());
            }
            // A plain `&str` runs as a script (several statements, no parameters).
            match &mut self.on {
                TransactionOn::Sqlite(tx, _) => tx.execute(sql).await.map(drop),
                #[cfg(feature = "postgres")]
                TransactionOn::Postgres(tx) => tx.execute(sql).await.map(drop),
            }
            .map_err(error)
        })
    }

    /// Makes the transaction's changes durable.
    pub async fn commit(self) -> Result<(), Error> {
        match self.on {
            TransactionOn::Sqlite(tx, _) => tx.commit().await.map_err(error)?,
            #[cfg(feature = "postgres")]
            TransactionOn::Postgres(tx) => tx.commit().await.map_err(error)?,
        }
        if let Some(notify) = self.after_commit {
            notify.notify_one();
        }
        Ok(())
    }

    /// Discards the transaction's changes.
    pub async fn rollback(self) -> Result<(), Error> {
        match self.on {
            TransactionOn::Sqlite(tx, _) => tx.rollback().await.map_err(error),
            #[cfg(feature = "postgres")]
            TransactionOn::Postgres(tx) => tx.rollback().await.map_err(error),
        }
    }
}

/// The refusal of a module's statement in a transaction of the host's own, whose
/// connection may change the host's tables: the host's mistake, never run.
fn module_in_host_transaction() -> Error {
    Error::Other("a module's statement in a transaction of the host's (the host's mistake)".into())
}

/// Whether `file` begins as a SQLite database does.
fn is_sqlite(file: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 16];
    std::fs::File::open(file)
        .and_then(|mut input| input.read_exact(&mut magic))
        .is_ok_and(|()| &magic == b"SQLite format 3\0")
}

/// 32 bytes from the operating system's generator (two random UUIDs: 244 bits).
fn random_secret() -> [u8; 32] {
    let mut secret = [0u8; 32];
    secret[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    secret[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    secret
}

/// The key for the host's own use of a database, for `purpose`, from its `secret`
/// (see [`Database::host_key`]).
fn derive_key(secret: &[u8; 32], purpose: &str) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    Sha256::new()
        .chain_update(secret)
        .chain_update(b"\0host key\0")
        .chain_update(purpose.as_bytes())
        .finalize()
        .into()
}

/// What a database error means to a module.
fn error(error: sqlx::Error) -> Error {
    use sqlx::error::ErrorKind;
    match error {
        sqlx::Error::Database(db) => {
            let message = db.message().to_string();
            match db.kind() {
                ErrorKind::UniqueViolation
                | ErrorKind::ForeignKeyViolation
                | ErrorKind::NotNullViolation
                | ErrorKind::CheckViolation => Error::ConstraintViolation(ConstraintFailure {
                    constraint: db.constraint().map(str::to_string),
                    message,
                }),
                _ => {
                    let code = db.code().map(|code| code.into_owned()).unwrap_or_default();
                    classify_code(&code, message)
                }
            }
        }
        sqlx::Error::PoolTimedOut => Error::Timeout,
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::PoolClosed => {
            Error::Unavailable(error.to_string())
        }
        other => Error::Other(other.to_string()),
    }
}

/// Sorts a database error by its code: a Postgres SQLSTATE, or an SQLite result code.
fn classify_code(code: &str, message: String) -> Error {
    match code {
        // Postgres: syntax error or access rule violation, undefined objects.
        c if c.starts_with("42") && c != "42501" => Error::Syntax(message),
        // Postgres insufficient_privilege.
        "42501" => Error::Denied(message),
        // SQLite SQLITE_AUTH: the module's guard refused something the statement uses.
        "23" => Error::Denied(format!(
            "{message}: a module's SQL may not ATTACH a database, load an extension, \
             touch the host's tables (names starting with modhost_), or use a PRAGMA \
             beyond questions about its own schema"
        )),
        // SQLite SQLITE_TOOBIG: a value past the bound (named by the caller's budget).
        "18" => Error::TooLarge(0),
        // Postgres connection exceptions, admin shutdown, cannot connect now.
        c if c.starts_with("08") || c == "57P01" || c == "57P03" => Error::Unavailable(message),
        // Postgres query_canceled (statement_timeout); SQLite BUSY, LOCKED, and
        // INTERRUPT (the guard's deadline).
        "57014" | "5" | "6" | "517" | "261" | "9" => Error::Timeout,
        // Postgres deadlock or serialization failure: nothing was changed; a retry may
        // well succeed.
        "40P01" | "40001" => Error::Unavailable(format!("{message} (retry)")),
        // SQLite's generic SQLITE_ERROR is what a bad statement gets: a syntax error, or
        // a table or column that does not exist.
        "1" => Error::Syntax(message),
        _ => Error::Other(message),
    }
}

impl Host for InstanceState {
    async fn query(
        &mut self,
        statement: String,
        params: Vec<Value>,
    ) -> wasmtime::Result<Result<Rows, Error>> {
        let database = self.database()?;
        Ok(database.query(&statement, params).await)
    }

    async fn execute(
        &mut self,
        statement: String,
        params: Vec<Value>,
    ) -> wasmtime::Result<Result<u64, Error>> {
        let database = self.database()?;
        Ok(database.execute(&statement, params).await)
    }

    async fn begin(&mut self) -> wasmtime::Result<Result<Resource<Transaction>, Error>> {
        let database = self.database()?;
        match database.begin().await {
            Ok(transaction) => Ok(Ok(self.table.push(transaction)?)),
            Err(error) => Ok(Err(error)),
        }
    }
}

impl HostTransaction for InstanceState {
    async fn query(
        &mut self,
        transaction: Resource<Transaction>,
        statement: String,
        params: Vec<Value>,
    ) -> wasmtime::Result<Result<Rows, Error>> {
        let database = self.database()?;
        let transaction = self.table.get_mut(&transaction)?;
        Ok(database
            .bounded(transaction.query(&statement, params))
            .await)
    }

    async fn execute(
        &mut self,
        transaction: Resource<Transaction>,
        statement: String,
        params: Vec<Value>,
    ) -> wasmtime::Result<Result<u64, Error>> {
        let database = self.database()?;
        let transaction = self.table.get_mut(&transaction)?;
        Ok(database
            .bounded(transaction.execute(&statement, params))
            .await)
    }

    async fn commit(
        &mut self,
        transaction: Resource<Transaction>,
    ) -> wasmtime::Result<Result<(), Error>> {
        let database = self.database()?;
        let transaction = self.table.delete(transaction)?;
        Ok(database.bounded(transaction.commit()).await)
    }

    async fn rollback(
        &mut self,
        transaction: Resource<Transaction>,
    ) -> wasmtime::Result<Result<(), Error>> {
        let database = self.database()?;
        let transaction = self.table.delete(transaction)?;
        Ok(database.bounded(transaction.rollback()).await)
    }

    async fn drop(&mut self, transaction: Resource<Transaction>) -> wasmtime::Result<()> {
        // Dropping an sqlx transaction that was neither committed nor rolled back
        // rolls it back when its connection returns to the pool.
        self.table.delete(transaction)?;
        Ok(())
    }
}

impl InstanceState {
    /// The module's database; a module without one cannot get here, as it is refused
    /// at load, so this is a trap, not an error value.
    pub(crate) fn database(&self) -> wasmtime::Result<Arc<Database>> {
        self.slice::<SqlSlice>()
            .map(|SqlSlice(database)| database.clone())
            .ok_or_else(|| wasmtime::format_err!("module {} has no database", self.module()))
    }
}

/// Closes `pool` and every connection it had, waiting (up to [`CLOSE_WAIT`]) for
/// those in use to come back.
///
/// sqlx's `Pool::close` alone can return with connections still open: closing an
/// idle connection hands back a permit that connection no longer held, so the close
/// stops waiting for connections in use too early; and a connection on its way back
/// as the close began has already passed the pool's "closed?" check, and lands in
/// the idle queue after the close last emptied it. So the pool is closed again until
/// it holds none. Left open, a SQLite connection keeps the file's write-ahead log
/// until it is dropped on its own thread, and a Postgres server sees its connection
/// cut instead of ended.
pub(crate) async fn close_pool<DB: sqlx::Database>(pool: &sqlx::Pool<DB>) {
    let give_up = tokio::time::Instant::now() + CLOSE_WAIT;
    loop {
        pool.close().await;
        if pool.size() == 0 {
            return;
        }
        if tokio::time::Instant::now() >= give_up {
            tracing::warn!(
                open = pool.size(),
                "connections still in use after {CLOSE_WAIT:?}; dropped unclosed"
            );
            return;
        }
        // A connection in use comes back within its statement's timeout; one on its
        // way back, within a round trip.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// How long closing a pool waits for its connections in use.
const CLOSE_WAIT: Duration = Duration::from_secs(10);
