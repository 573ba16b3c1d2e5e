//! The Postgres backend: per module, a schema owned by a role of its own.
//!
//! The host connects once with the deployment's administrator URL to make sure the
//! module's role (`modhost_<module>`, LOGIN, no other rights) and schema (owned by that
//! role, closed to everyone else) exist, then opens the module's pool **as that
//! role**. Postgres itself then refuses the module anything outside its schema; no
//! statement the module sends can change that (there is no role to switch to).
//!
//! The role's password is derived from the administrator URL and the role name, so
//! every node of a deployment computes the same one and none has to store it.
//!
//! What a module's SQL could leave behind or change is the host's to undo:
//!
//! - A connection goes back to the pool **clean** ([`RESET_SESSION`]): the module's
//!   session settings reset (a `SET statement_timeout = 0` lasts until its connection
//!   returns), its advisory locks released, its cursors, temporary tables and
//!   listeners gone.
//! - A statement past the module's deadline is **cancelled by the host** as the
//!   administrator ([`PgDatabase::cancel_overdue`]), whatever the session's
//!   `statement_timeout` says by then.
//! - The host's own advisory locks (start-up, migrations, relay leases) are keyed by a
//!   digest of the administrator URL ([`PgDatabase::lock_key`]), which no module
//!   knows, so a module cannot compute them ahead to take them first.
//!
//! The host's own tables (`modhost_outbox`, `modhost_inbox`, `modhost_migrations`…)
//! live in a **host schema** of the module's ([`host_schema`], named like its role),
//! owned by the administrator: the module's role may use the schema's functions and
//! nothing else in it. The host reads and writes those tables as the administrator,
//! through a small pool of its own ([`PgDatabase::host_pool`]). What must commit in the
//! module's transaction (an event published, an event handled, a migration recorded)
//! goes through a **host function** ([`PgDatabase::host_function`]): `SECURITY DEFINER`,
//! so it writes with the administrator's rights, and refusing any caller that does not
//! pass the host's key — which travels as a bound parameter of one statement, and which
//! no module knows. Tables a module's role made there before this version are moved to
//! the host schema when the node starts.

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use sqlx::encode::IsNull;
use sqlx::postgres::{
    PgArgumentBuffer, PgConnectOptions, PgPoolOptions, PgRow, PgSslMode, PgTypeInfo, Postgres,
};
use sqlx::{Column, ConnectOptions, Connection, Executor, Row, TypeInfo, ValueRef};
use std::str::FromStr;
use std::time::Duration;

use super::{error, Error, ResultBudget, Rows, Value, VALUE_OVERHEAD};
use crate::deployment::{DatabaseSpec, PostgresTls, TlsMode};
use crate::telemetry::metrics::metrics;
use prometheus_client::metrics::histogram::Histogram;
use sqlx::pool::PoolConnection;

/// Run on every connection a module hands back, before anyone else gets it: what the
/// module's statements may have changed in the session goes back to how the host
/// opened it (`RESET ALL` returns every setting to its value at connection time,
/// which includes the host's `statement_timeout` and `search_path`).
pub const RESET_SESSION: &str =
    "CLOSE ALL; UNLISTEN *; RESET ALL; SELECT pg_advisory_unlock_all(); DISCARD TEMP";

/// Connections of the host's own pool for one module's host schema.
const HOST_POOL: u32 = 2;

/// How long a connection may sit idle in a pool and still be lent without a ping
/// first. One used and reset more recently than this is alive as far as anyone can
/// tell; pinging it too (sqlx's default, before every loan) would cost a round trip
/// per statement.
pub const PING_AFTER_IDLE: Duration = Duration::from_secs(1);

/// sqlx's `before_acquire` for both pools: a connection idle past
/// [`PING_AFTER_IDLE`] is pinged, and closed (another one lent instead) if it does
/// not answer.
fn ping_if_idle(
    connection: &mut sqlx::PgConnection,
    metadata: sqlx::pool::PoolConnectionMetadata,
) -> crate::runtime::BoxFuture<'_, Result<bool, sqlx::Error>> {
    Box::pin(async move {
        if metadata.idle_for < PING_AFTER_IDLE {
            return Ok(true);
        }
        Ok(connection.ping().await.is_ok())
    })
}

/// A module's Postgres database: its pool, logged in as its role, and what the host
/// keeps to police it.
pub struct PgDatabase {
    /// The module's pool.
    pub pool: sqlx::PgPool,
    /// The host's pool for the module's host schema: the administrator, with that
    /// schema first on its search path. Small, and opened on first use.
    pub host_pool: sqlx::PgPool,
    /// The module's host schema.
    host_schema: String,
    /// How the host connects as the administrator (to cancel the module's statements).
    admin: PgConnectOptions,
    /// The module's role.
    role: String,
    /// The digest the host's advisory-lock keys are made from.
    lock_secret: [u8; 32],
    /// How long one of the module's statements may run.
    statement_timeout: Duration,
    /// When the host last changed the module's schema.
    schema_clock: std::sync::Arc<super::SchemaClock>,
    /// How long the module waits for its pool's connections.
    pub acquire_wait: Histogram,
}

impl PgDatabase {
    /// The pool `author`'s statements run on: the module's, or the host's.
    pub fn pool_of(&self, author: super::Author) -> &sqlx::PgPool {
        match author {
            super::Author::Module => &self.pool,
            super::Author::Host => &self.host_pool,
        }
    }

    /// Where the wait for `author`'s connections is recorded: the module's only.
    pub fn waited(&self, author: super::Author) -> Option<&Histogram> {
        (author == super::Author::Module).then_some(&self.acquire_wait)
    }

    /// `CREATE OR REPLACE` of the host function `name` in the module's host schema,
    /// taking `parameters` (SQL, after the key every host function takes first),
    /// returning `returns`, running the PL/pgSQL `body` once `key` is checked.
    pub fn host_function(
        &self,
        key: &[u8; 32],
        name: &str,
        parameters: &str,
        returns: &str,
        body: &str,
    ) -> String {
        let digest: String = Sha256::digest(key)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let schema = &self.host_schema;
        let role = &self.role;
        format!(
            "CREATE OR REPLACE FUNCTION \"{schema}\".{name}(modhost_key bytea, {parameters}) \
             RETURNS {returns} LANGUAGE plpgsql SECURITY DEFINER \
             SET search_path = \"{schema}\", pg_temp AS $modhost$ \
             BEGIN \
               IF sha256(modhost_key) IS DISTINCT FROM '\\x{digest}'::bytea THEN \
                 RAISE EXCEPTION 'only the host may call {name}' USING ERRCODE = '42501'; \
               END IF; \
               {body} \
             END $modhost$; \
             REVOKE ALL ON FUNCTION \"{schema}\".{name} FROM PUBLIC; \
             GRANT EXECUTE ON FUNCTION \"{schema}\".{name} TO \"{role}\""
        )
    }

    /// The statement that calls host function `function` with the key and `arguments`
    /// more parameters.
    pub fn host_call(&self, function: &str, arguments: usize) -> String {
        let parameters: Vec<String> = (1..=arguments + 1).map(|n| format!("${n}")).collect();
        format!(
            "SELECT * FROM \"{}\".{function}({})",
            self.host_schema,
            parameters.join(", ")
        )
    }

    /// Records that the host just changed the module's schema (applied a migration):
    /// the module's connections opened before are closed rather than lent again, so
    /// no statement they kept prepared meets the new shape ([`StaleStatements`]).
    pub fn schema_changed(&self) {
        self.schema_clock.mark();
    }

    /// The advisory-lock key of the host's lock `name` (the same on every node given
    /// the same administrator URL; unknown to modules).
    pub fn lock_key(&self, name: &str) -> i64 {
        lock_key(&self.lock_secret, name)
    }

    /// The host's secret for this database: the same on every node given the same
    /// administrator URL, unknown to modules.
    pub fn secret(&self) -> [u8; 32] {
        self.lock_secret
    }

    /// Cancels, as the administrator, every statement of the module that has run past
    /// its timeout. Called when the host stopped waiting for one: Postgres would
    /// cancel it by the session's `statement_timeout`, unless the module changed that.
    pub async fn cancel_overdue(&self) -> Result<u64> {
        let mut connection = self
            .admin
            .connect()
            .await
            .context("connecting to postgres as the administrator")?;
        let cancelled: i64 = sqlx::query_scalar(
            "SELECT count(*) FILTER (WHERE pg_cancel_backend(pid)) FROM pg_stat_activity \
             WHERE usename = $1 AND state = 'active' \
             AND now() - query_start >= make_interval(secs => $2)",
        )
        .bind(&self.role)
        .bind(self.statement_timeout.as_secs_f64())
        .fetch_one(&mut connection)
        .await
        .context("cancelling the module's overdue statements")?;
        connection.close().await.ok();
        Ok(u64::try_from(cancelled).unwrap_or(0))
    }
}

/// Makes sure the server stops running a statement of `database`'s module that the
/// host stopped waiting for: cancels the module's overdue statements a moment after
/// the host's deadline (the statement started on the server a little after the host
/// began waiting), and once more a whole timeout later, when it is overdue however
/// late it started.
pub fn cancel_after_deadline(database: std::sync::Arc<PgDatabase>) {
    tokio::spawn(async move {
        let grace = (database.statement_timeout / 10)
            .clamp(Duration::from_millis(20), Duration::from_millis(500));
        for wait in [grace, database.statement_timeout] {
            tokio::time::sleep(wait).await;
            match database.cancel_overdue().await {
                Ok(0) => {}
                Ok(cancelled) => tracing::warn!(
                    role = %database.role,
                    cancelled,
                    "cancelled statements that ran past the module's timeout"
                ),
                Err(error) => tracing::warn!(role = %database.role, "{error:#}"),
            }
        }
    });
}

/// The digest lock keys are made from: the administrator URL, which holds its
/// password, so no module can compute it.
fn lock_secret(admin_url: &str) -> [u8; 32] {
    Sha256::new()
        .chain_update(b"modhost advisory locks\0")
        .chain_update(admin_url.as_bytes())
        .finalize()
        .into()
}

/// The advisory-lock key of lock `name` under `secret`.
fn lock_key(secret: &[u8; 32], name: &str) -> i64 {
    let digest = Sha256::new()
        .chain_update(secret)
        .chain_update(name.as_bytes())
        .finalize();
    let mut key = [0u8; 8];
    key.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(key)
}

/// The role a module's connections log in as.
pub fn role_name(module: &str) -> String {
    format!("modhost_{}", module.replace('-', "_"))
}

/// The schema of the host's tables for `module`: named like its role (roles and
/// schemas do not share names in Postgres), beside the module's own schema, which
/// may not start with `modhost_`.
pub fn host_schema(module: &str) -> String {
    role_name(module)
}

/// `options` with the deployment's `tls` and `ca` in place of the URL's `sslmode` and
/// `sslrootcert`, where it sets them. The module's connections are made from the
/// administrator's options, so they are encrypted and verified alike.
fn with_tls(options: PgConnectOptions, tls: &PostgresTls) -> PgConnectOptions {
    let options = match tls.mode {
        Some(mode) => options.ssl_mode(match mode {
            TlsMode::Disable => PgSslMode::Disable,
            TlsMode::Prefer => PgSslMode::Prefer,
            TlsMode::Require => PgSslMode::Require,
            TlsMode::VerifyFull => PgSslMode::VerifyFull,
        }),
        None => options,
    };
    match &tls.ca {
        Some(ca) => options.ssl_root_cert(ca),
        None => options,
    }
}

/// Makes sure `module`'s role and schema exist, then opens its pool as that role.
/// `statement_timeout` (the module's timeout) is also set in every session, so a
/// statement the host stopped waiting for is cancelled by Postgres too, and so is a
/// transaction left idle; every connection is reset as it comes back
/// ([`RESET_SESSION`]).
pub async fn open(
    module: &str,
    spec: &DatabaseSpec,
    admin_url: &str,
    schema: &str,
    tls: &PostgresTls,
    statement_timeout: Duration,
) -> Result<PgDatabase> {
    // Statement logging is off: the set-up statements carry the role's password.
    let admin = with_tls(
        PgConnectOptions::from_str(admin_url).context("the postgres URL does not parse")?,
        tls,
    )
    .disable_statement_logging();
    let role = role_name(module);
    let host_schema = host_schema(module);
    let password = password(admin_url, &role);
    let database = admin
        .get_database()
        .map(str::to_string)
        .unwrap_or_else(|| admin.get_username().to_string());

    let mut connection = admin
        .connect()
        .await
        .context("connecting to postgres as the administrator")?;
    // Identifiers and the password cannot be bound as parameters in these statements;
    // they are quoted here, and are made of [a-z0-9_] (module and schema names are
    // validated, the password is hex).
    let statements = [
        format!(
            "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') \
             THEN CREATE ROLE \"{role}\"; END IF; END $$"
        ),
        format!(
            "ALTER ROLE \"{role}\" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE \
             NOINHERIT NOREPLICATION NOBYPASSRLS PASSWORD '{password}'"
        ),
        format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\" AUTHORIZATION \"{role}\""),
        format!("ALTER SCHEMA \"{schema}\" OWNER TO \"{role}\""),
        format!("REVOKE ALL ON SCHEMA \"{schema}\" FROM PUBLIC"),
        // Only the module's own rights change: other roles of a shared database keep
        // theirs (revoking from PUBLIC database-wide would lock them out).
        format!("GRANT CONNECT ON DATABASE \"{database}\" TO \"{role}\""),
        // The host's schema: the administrator's; the module may call its functions.
        format!("CREATE SCHEMA IF NOT EXISTS \"{host_schema}\""),
        format!("REVOKE ALL ON SCHEMA \"{host_schema}\" FROM PUBLIC"),
        format!("GRANT USAGE ON SCHEMA \"{host_schema}\" TO \"{role}\""),
        // The host's tables a module's role made in its own schema before this
        // version move there, with their rows, and become the administrator's.
        format!(
            "DO $$ DECLARE t text; BEGIN \
               FOR t IN SELECT tablename FROM pg_tables WHERE schemaname = '{schema}' \
                        AND tablename LIKE 'modhost\\_%' LOOP \
                 IF to_regclass(format('%I.%I', '{host_schema}', t)) IS NULL THEN \
                   EXECUTE format('ALTER TABLE %I.%I SET SCHEMA %I', '{schema}', t, '{host_schema}'); \
                   EXECUTE format('ALTER TABLE %I.%I OWNER TO %I', '{host_schema}', t, current_user); \
                 END IF; \
               END LOOP; END $$"
        ),
        format!("REVOKE ALL ON ALL TABLES IN SCHEMA \"{host_schema}\" FROM \"{role}\""),
        format!("REVOKE ALL ON ALL SEQUENCES IN SCHEMA \"{host_schema}\" FROM \"{role}\""),
    ];
    // Nodes (and modules) preparing at once would race on the catalog rows of roles
    // and grants ("tuple concurrently updated"): one at a time, under a session lock
    // that closing the connection releases.
    let lock_secret = lock_secret(admin_url);
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(lock_key(&lock_secret, "modhost.prepare"))
        .execute(&mut connection)
        .await
        .context("waiting for the postgres set-up lock")?;
    for statement in &statements {
        connection
            .execute(statement.as_str())
            .await
            .with_context(|| format!("preparing postgres for {module}"))?;
    }
    connection.close().await.ok();

    let host_pool = PgPoolOptions::new()
        .test_before_acquire(false)
        .before_acquire(ping_if_idle)
        .max_connections(HOST_POOL)
        .min_connections(0)
        .idle_timeout(Some(Duration::from_secs(60)))
        .acquire_timeout(spec.acquire_timeout.duration())
        .connect_lazy_with(admin.clone().options([
            ("search_path", host_schema.clone()),
            (
                "statement_timeout",
                format!("{}ms", statement_timeout.as_millis().max(1)),
            ),
        ]));
    let options = admin.clone().username(&role).password(&password).options([
        ("search_path", schema.to_string()),
        (
            "statement_timeout",
            format!("{}ms", statement_timeout.as_millis().max(1)),
        ),
        (
            "idle_in_transaction_session_timeout",
            format!("{}ms", statement_timeout.as_millis().max(1)),
        ),
    ]);
    // Every connection a module hands back is reset, a round trip that also shows
    // it alive: the ping before the next loan is skipped unless it has been idle. One
    // opened before the host last changed the schema is closed instead of lent.
    let schema_clock = std::sync::Arc::new(super::SchemaClock::new());
    let on_loan = schema_clock.clone();
    let pool = PgPoolOptions::new()
        .max_connections(spec.pool)
        .acquire_timeout(spec.acquire_timeout.duration())
        .test_before_acquire(false)
        .before_acquire(move |connection, metadata| {
            if on_loan.predates_change(metadata.age) {
                return Box::pin(async { Ok(false) });
            }
            ping_if_idle(connection, metadata)
        })
        .after_release(|connection, _| {
            Box::pin(async move {
                connection.execute(RESET_SESSION).await?;
                Ok(true)
            })
        })
        .connect_with(options)
        .await
        .with_context(|| format!("connecting to postgres as role {role}"))?;
    Ok(PgDatabase {
        pool,
        host_pool,
        host_schema,
        admin,
        role,
        lock_secret,
        statement_timeout,
        schema_clock,
        acquire_wait: metrics().db_acquire(module),
    })
}

/// A connection to the server of `admin_url` as the administrator, encrypted as
/// `tls` says (statement logging off, as in [`open`]).
async fn connect_admin(admin_url: &str, tls: &PostgresTls) -> Result<sqlx::PgConnection> {
    with_tls(
        PgConnectOptions::from_str(admin_url).context("the postgres URL does not parse")?,
        tls,
    )
    .disable_statement_logging()
    .connect()
    .await
    .context("connecting to postgres as the administrator")
}

/// Refuses when `module`'s schema `schema`, or the host's schema for it, exists: what
/// a move onto them makes, and drops if called off ([`drop_schemas`]), must be all
/// there is — nothing of anyone's, not a grant.
pub async fn check_unused(
    module: &str,
    admin_url: &str,
    schema: &str,
    tls: &PostgresTls,
) -> Result<()> {
    let host_schema = host_schema(module);
    let mut connection = connect_admin(admin_url, tls).await?;
    let existing: Vec<(String,)> = sqlx::query_as(
        "SELECT nspname::text FROM pg_namespace WHERE nspname IN ($1, $2) ORDER BY 1",
    )
    .bind(schema)
    .bind(&host_schema)
    .fetch_all(&mut connection)
    .await
    .context("looking for the module's schemas")?;
    connection.close().await.ok();
    if !existing.is_empty() {
        let existing: Vec<String> = existing.into_iter().map(|(name,)| name).collect();
        anyhow::bail!(
            "its postgres schemas exist already ({}): a module moving to postgres is carried \
             into new schemas ({schema} and the host's {host_schema}); name another with \
             schema = …, or drop those (DROP SCHEMA … CASCADE) if nothing in them is needed",
            existing.join(", ")
        );
    }
    Ok(())
}

/// Drops `module`'s schema `schema` and the host's schema for it, with everything in
/// them (its role stays: [`open`] makes both schemas again).
pub async fn drop_schemas(
    module: &str,
    admin_url: &str,
    schema: &str,
    tls: &PostgresTls,
) -> Result<()> {
    let mut connection = connect_admin(admin_url, tls).await?;
    // Identifiers cannot be bound; both are validated names of [a-z0-9_].
    for schema in [schema.to_string(), host_schema(module)] {
        connection
            .execute(format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE").as_str())
            .await
            .with_context(|| format!("dropping schema {schema}"))?;
    }
    connection.close().await.ok();
    Ok(())
}

/// The role's password: a digest of the administrator URL and the role.
fn password(admin_url: &str, role: &str) -> String {
    let digest = Sha256::new()
        .chain_update(b"modhost role password\0")
        .chain_update(admin_url.as_bytes())
        .chain_update(b"\0")
        .chain_update(role.as_bytes())
        .finalize();
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Runs a query on `connection`, lent from the pool for it alone, taking its rows as they
/// come until they outweigh `budget`. (Postgres sends a row whole: the host holds at
/// most one row past the bound, and a row is at most what Postgres allows, 1 GB a
/// value.) A kept statement whose plan the schema outdated is prepared afresh and run
/// once more ([`StaleStatements`]): it failed before it ran.
pub async fn query(
    mut connection: PoolConnection<Postgres>,
    statement: &str,
    params: &[Value],
    budget: ResultBudget,
) -> Result<Rows, Error> {
    match try_query(&mut connection, statement, params, budget, Keep::Yes).await {
        Err(Failure::Stale { retry, failed }) => {
            StaleStatements::forget(&mut connection).await;
            if !retry {
                return Err(failed);
            }
            try_query(&mut connection, statement, params, budget, Keep::Yes)
                .await
                .map_err(Failure::into_error)
        }
        done => done.map_err(Failure::into_error),
    }
}

/// Runs a query inside a transaction (see [`query`]). A statement kept from before
/// a schema change fails here as it does on the server, where it ended the
/// transaction; the connection forgets its kept statements, so the next one works.
pub async fn query_in(
    connection: &mut sqlx::PgConnection,
    statement: &str,
    params: &[Value],
    budget: ResultBudget,
) -> Result<Rows, Error> {
    let done = try_query(connection, statement, params, budget, Keep::Yes).await;
    if let Err(Failure::Stale { .. }) = done {
        StaleStatements::forget(connection).await;
    }
    done.map_err(Failure::into_error)
}

/// Runs one of the host's statements inside a module's transaction, **not** kept:
/// a kept statement has a name the module can see (`pg_prepared_statements`) and
/// replace with its own (`DEALLOCATE` and `PREPARE` it), which the host would then
/// run with its secrets as parameters (the key of its functions, its lock keys).
/// The unnamed statement of one call is the host's alone.
pub async fn host_query_in(
    connection: &mut sqlx::PgConnection,
    statement: &str,
    params: &[Value],
    budget: ResultBudget,
) -> Result<Rows, Error> {
    try_query(connection, statement, params, budget, Keep::No)
        .await
        .map_err(Failure::into_error)
}

/// Runs a statement on `connection`, lent from the pool for it alone; returns the number
/// of rows it changed (a stale kept statement as in [`query`]).
pub async fn execute(
    mut connection: PoolConnection<Postgres>,
    statement: &str,
    params: &[Value],
) -> Result<u64, Error> {
    match try_execute(&mut connection, statement, params, Keep::Yes).await {
        Err(Failure::Stale { retry, failed }) => {
            StaleStatements::forget(&mut connection).await;
            if !retry {
                return Err(failed);
            }
            try_execute(&mut connection, statement, params, Keep::Yes)
                .await
                .map_err(Failure::into_error)
        }
        done => done.map_err(Failure::into_error),
    }
}

/// Runs one of the host's statements that changes rows inside a module's
/// transaction, not kept (see [`host_query_in`]).
pub async fn host_execute_in(
    connection: &mut sqlx::PgConnection,
    statement: &str,
    params: &[Value],
) -> Result<u64, Error> {
    try_execute(connection, statement, params, Keep::No)
        .await
        .map_err(Failure::into_error)
}

/// Runs a statement inside a transaction (see [`query_in`]); returns the number of
/// rows it changed.
pub async fn execute_in(
    connection: &mut sqlx::PgConnection,
    statement: &str,
    params: &[Value],
) -> Result<u64, Error> {
    let done = try_execute(connection, statement, params, Keep::Yes).await;
    if let Err(Failure::Stale { .. }) = done {
        StaleStatements::forget(connection).await;
    }
    done.map_err(Failure::into_error)
}

/// Whether a statement is kept prepared on its connection.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Keep {
    Yes,
    No,
}

impl Keep {
    /// The text `statement` is sent as: kept under [`kept_text`], or as it is.
    fn text<'a>(self, statement: &'a str, params: &[Value]) -> std::borrow::Cow<'a, str> {
        match self {
            Keep::Yes => kept_text(statement, params).into(),
            Keep::No => statement.into(),
        }
    }

    /// `text` as a query, kept or not.
    fn query(self, text: &str) -> sqlx::query::Query<'_, Postgres, sqlx::postgres::PgArguments> {
        sqlx::query(text).persistent(self == Keep::Yes)
    }
}

/// Why one attempt at a statement failed.
enum Failure {
    /// The connection's kept statements no longer match the server
    /// ([`StaleStatements`]); `retry`: the statement did not run and may run again.
    Stale { failed: Error, retry: bool },
    /// Anything else: the statement's own failure.
    Statement(Error),
}

impl Failure {
    fn into_error(self) -> Error {
        match self {
            Failure::Stale { failed, .. } | Failure::Statement(failed) => failed,
        }
    }
}

async fn try_query(
    connection: &mut sqlx::PgConnection,
    statement: &str,
    params: &[Value],
    budget: ResultBudget,
    keep: Keep,
) -> Result<Rows, Failure> {
    use futures_util::{StreamExt, TryStreamExt};
    let text = keep.text(statement, params);
    let stale = std::sync::OnceLock::new();
    let stream = bind(keep.query(&text), params)
        .fetch(connection)
        .inspect_err(|failed| {
            if let Some(found) = StaleStatements::of(failed) {
                let _ = stale.set(found);
            }
        })
        .boxed();
    let done = super::collect(stream, budget, |row, budget| {
        // Weighed before it is decoded: a row past the bound is not copied again.
        budget.take(raw_weight(row)?)?;
        decode(row)
    })
    .await;
    match (done, stale.get().copied()) {
        (Err(failed), Some(stale)) => Err(Failure::Stale {
            failed,
            retry: stale == Stale::Replanned,
        }),
        (done, _) => done.map_err(Failure::Statement),
    }
}

async fn try_execute(
    connection: &mut sqlx::PgConnection,
    statement: &str,
    params: &[Value],
    keep: Keep,
) -> Result<u64, Failure> {
    let text = keep.text(statement, params);
    match bind(keep.query(&text), params).execute(connection).await {
        Ok(done) => Ok(done.rows_affected()),
        Err(failed) => match StaleStatements::of(&failed) {
            Some(stale) => Err(Failure::Stale {
                failed: error(failed),
                retry: stale == Stale::Replanned,
            }),
            None => Err(Failure::Statement(error(failed))),
        },
    }
}

/// The text a statement is kept under in its connection's statement cache: the
/// statement, then a comment naming the kind of each parameter.
///
/// Every statement is kept prepared on its connection (sqlx's statement cache), so
/// running it again is one round trip (bind and execute) instead of two (parse and
/// describe first). That cache is keyed by text alone, and a statement's parameter
/// types are fixed when it is prepared, while a module may send the same text with an
/// `integer` one time and a `real` or an untyped `null` the next: the comment makes
/// each combination a statement of its own. (It goes last, on a line of its own, so
/// it cannot change what the module's text means: a module's unterminated comment or
/// string was an error before it and stays one.)
fn kept_text(statement: &str, params: &[Value]) -> String {
    const MARK: &str = "\n-- modhost parameters: ";
    let mut text = String::with_capacity(statement.len() + MARK.len() + params.len());
    text.push_str(statement);
    text.push_str(MARK);
    text.extend(params.iter().map(|param| match param {
        Value::Null => 'n',
        Value::Integer(_) => 'i',
        Value::Real(_) => 'r',
        Value::Text(_) => 't',
        Value::Blob(_) => 'b',
        Value::Boolean(_) => 'o',
    }));
    text
}

/// Statements a connection keeps prepared that the server no longer runs as they
/// were prepared.
///
/// A kept `SELECT *` fails once a table it reads gains or loses a column ("cached
/// plan must not change result type"): the server found out as it bound the
/// statement, before running it, so it is safe to prepare it again and run it. A
/// module's `DEALLOCATE ALL` or `DISCARD ALL` drops the server's side of every kept
/// statement, and its own `PREPARE` can take a name sqlx would use next: those fail
/// the statement (they may also come from the module's own `EXECUTE` or `PREPARE`,
/// mid-way through work that is not run twice) and the connection forgets what it
/// kept. The host's migrations do more: connections opened before one are not lent
/// again ([`super::SchemaClock`]).
struct StaleStatements;

/// What a stale kept statement met.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stale {
    /// Its plan was outdated by a schema change, found as it was bound: it did not
    /// run.
    Replanned,
    /// Prepared statements of the session were dropped or taken.
    Dropped,
}

impl StaleStatements {
    /// Which of those `failed` is, by its SQLSTATE and (for the outdated plan) the
    /// server routine that raised it: 0A000 from `RevalidateCachedQuery`; 26000
    /// invalid_sql_statement_name; 42P05 duplicate_prepared_statement.
    fn of(failed: &sqlx::Error) -> Option<Stale> {
        let sqlx::Error::Database(db) = failed else {
            return None;
        };
        let routine = db
            .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
            .and_then(|pg| pg.routine());
        match (db.code().as_deref(), routine) {
            (Some("0A000"), Some("RevalidateCachedQuery")) => Some(Stale::Replanned),
            (Some("26000" | "42P05"), _) => Some(Stale::Dropped),
            _ => None,
        }
    }

    /// Forgets every statement `connection` keeps, here and on the server. (Allowed
    /// in a transaction that failed, which is where a stale statement leaves one.)
    async fn forget(connection: &mut sqlx::PgConnection) {
        if let Err(failed) = connection.clear_cached_statements().await {
            tracing::warn!("forgetting a connection's prepared statements: {failed}");
        }
    }
}

/// What a row weighs as Postgres sent it (see [`ResultBudget`]): its values' bytes
/// plus their overhead. (A value read as text weighs its binary form here; the two
/// differ by a few bytes at most, for types like timestamps and uuids.)
fn raw_weight(row: &PgRow) -> Result<u64, Error> {
    (0..row.len()).try_fold(0u64, |weight, i| {
        let raw = row.try_get_raw(i).map_err(error)?;
        let bytes = if raw.is_null() {
            0
        } else {
            raw.as_bytes().map_or(0, <[u8]>::len)
        };
        Ok(weight
            .saturating_add(VALUE_OVERHEAD)
            .saturating_add(u64::try_from(bytes).unwrap_or(u64::MAX)))
    })
}

/// A NULL of no particular type: Postgres infers the parameter's type from the
/// statement, so a NULL fits any column (a typed NULL would not: an `int8` NULL is
/// refused by a `text` column).
struct UntypedNull;

impl sqlx::Type<Postgres> for UntypedNull {
    fn type_info() -> PgTypeInfo {
        PgTypeInfo::with_oid(sqlx::postgres::types::Oid(0))
    }
}

impl sqlx::Encode<'_, Postgres> for UntypedNull {
    fn encode_by_ref(
        &self,
        _buf: &mut PgArgumentBuffer,
    ) -> Result<IsNull, sqlx::error::BoxDynError> {
        Ok(IsNull::Yes)
    }
}

fn bind<'q>(
    mut query: sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>,
    params: &'q [Value],
) -> sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments> {
    for param in params {
        query = match param {
            Value::Null => query.bind(UntypedNull),
            Value::Integer(n) => query.bind(*n),
            Value::Real(x) => query.bind(*x),
            Value::Text(text) => query.bind(text.as_str()),
            Value::Blob(bytes) => query.bind(bytes.as_slice()),
            Value::Boolean(b) => query.bind(*b),
        };
    }
    query
}

/// A row's values, by each column's Postgres type.
fn decode(row: &PgRow) -> Result<Vec<Value>, Error> {
    (0..row.len())
        .map(|i| {
            let raw = row.try_get_raw(i).map_err(error)?;
            if raw.is_null() {
                return Ok(Value::Null);
            }
            let get_err = |e| error(e);
            let value = match row.column(i).type_info().name() {
                "INT2" => Value::Integer(row.try_get::<i16, _>(i).map_err(get_err)?.into()),
                "INT4" => Value::Integer(row.try_get::<i32, _>(i).map_err(get_err)?.into()),
                "INT8" => Value::Integer(row.try_get::<i64, _>(i).map_err(get_err)?),
                "FLOAT4" => Value::Real(row.try_get::<f32, _>(i).map_err(get_err)?.into()),
                "FLOAT8" => Value::Real(row.try_get::<f64, _>(i).map_err(get_err)?),
                "BOOL" => Value::Boolean(row.try_get(i).map_err(get_err)?),
                "BYTEA" => Value::Blob(row.try_get(i).map_err(get_err)?),
                "TEXT" | "VARCHAR" | "BPCHAR" | "NAME" | "CHAR" => {
                    Value::Text(row.try_get(i).map_err(get_err)?)
                }
                "TIMESTAMPTZ" => Value::Text(
                    row.try_get::<chrono::DateTime<chrono::Utc>, _>(i)
                        .map_err(get_err)?
                        .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
                ),
                "TIMESTAMP" => Value::Text(
                    row.try_get::<chrono::NaiveDateTime, _>(i)
                        .map_err(get_err)?
                        .format("%Y-%m-%dT%H:%M:%S%.f")
                        .to_string(),
                ),
                "DATE" => Value::Text(
                    row.try_get::<chrono::NaiveDate, _>(i)
                        .map_err(get_err)?
                        .to_string(),
                ),
                "UUID" => Value::Text(
                    row.try_get::<uuid::Uuid, _>(i)
                        .map_err(get_err)?
                        .to_string(),
                ),
                "JSON" | "JSONB" => Value::Text(
                    row.try_get::<serde_json::Value, _>(i)
                        .map_err(get_err)?
                        .to_string(),
                ),
                other => {
                    return Err(Error::Other(format!(
                        "column {} has type {other}, which modhost:sql does not map; \
                         cast it in the query (e.g. ::text or ::float8)",
                        row.column(i).name()
                    )))
                }
            };
            Ok(value)
        })
        .collect()
}
