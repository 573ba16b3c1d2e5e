//! What a module's SQL may do on its SQLite connection, enforced by SQLite itself.
//!
//! A module sends any SQL it likes; the host does not parse it. Instead every
//! connection of a module's pool carries, from the moment it opens:
//!
//! - an **authorizer** ([`authorize`]), which SQLite asks about every table, function
//!   and PRAGMA a statement uses while it compiles it. It refuses `ATTACH`/`DETACH`
//!   (another file), `load_extension` (native code), and every PRAGMA but read-only
//!   schema questions and the two that govern only the module's own foreign keys.
//!   That is what keeps one module from changing the process: `hard_heap_limit`,
//!   `soft_heap_limit` and `mmap_size` are process-wide, and `journal_mode`,
//!   `synchronous` or `writable_schema` would change the file the host relies on. A
//!   refused statement fails with SQLite's `SQLITE_AUTH`, which a module sees as
//!   `denied`.
//! - a **length limit** (`SQLITE_LIMIT_LENGTH`): no string, blob or row larger than the
//!   module's result bound is ever built, so `randomblob(300000000)` fails before it
//!   allocates (`too-large`) instead of after.
//! - a **statement deadline**: SQLite reports each statement as it starts
//!   ([`statement_started`], a trace callback) and calls a progress handler every
//!   [`PROGRESS_STEPS`] virtual-machine steps ([`past_deadline`]); past the module's
//!   timeout the handler interrupts the statement. The host stops waiting at the same
//!   deadline; without this the statement would go on using a core and holding its
//!   connection after nobody waits for it (sqlx runs it on a thread of its own).
//!
//! The host keeps its own tables in the module's file (`modhost_outbox`,
//! `modhost_inbox`, `modhost_migrations`…) so that they commit in the module's
//! transactions. The authorizer keeps the two apart. A connection is in **module
//! mode** unless the host put it in **host mode** for one statement of its own
//! ([`host_mode`]). In module mode nothing whose name starts with `modhost_` may be
//! read, written, created, altered or dropped, and `sqlite_sequence` may not be
//! written. In host mode only those tables may be changed, so a module's trigger or
//! foreign-key cascade on its own tables cannot run its SQL with the host's rights
//! (the host's statement fails instead: a module that declares `ON DELETE CASCADE`
//! from a host table stops its own outbox, nobody else's).
//!
//! SQLite asks the authorizer only when it compiles a statement, and sqlx keeps
//! compiled statements per connection, keyed by their text. So the host's statements
//! carry a tag no module knows ([`host_statement`]): a module that sends the text of
//! one of the host's statements compiles its own copy, in module mode.
//!
//! The per-connection state ([`Guard`]) is attached to the connection as SQLite
//! client data, which SQLite frees when the connection closes. SQLite calls every
//! callback on the thread using the connection, one at a time; the host-mode flag,
//! which the host sets from its own thread, is atomic.

use libsqlite3_sys as ffi;
use std::cell::Cell;
use std::ffi::{c_char, c_int, c_uint, c_void, CStr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

/// Virtual-machine steps between two looks at the clock: a look costs tens of
/// nanoseconds, a thousand steps a few microseconds, so the deadline is kept to well
/// under a millisecond for a negligible cost.
pub const PROGRESS_STEPS: c_int = 1000;

/// The name the guard is kept under, as SQLite client data.
const CLIENT_DATA: &CStr = c"modhost.guard";

/// PRAGMAs that only answer questions about the module's own schema, with or without
/// an argument (`table_info(orders)`, `integrity_check(10)`).
const QUESTION_PRAGMAS: &[&str] = &[
    "collation_list",
    "foreign_key_check",
    "foreign_key_list",
    "function_list",
    "index_info",
    "index_list",
    "index_xinfo",
    "integrity_check",
    "quick_check",
    "table_info",
    "table_list",
    "table_xinfo",
];

/// PRAGMAs a module may read (without an argument), as setting them would change the
/// file or the process.
const READABLE_PRAGMAS: &[&str] = &[
    "application_id",
    "data_version",
    "encoding",
    "freelist_count",
    "page_count",
    "page_size",
    "schema_version",
];

/// PRAGMAs a module may read and set: each changes only how its own connection checks
/// its own foreign keys, or a number in its own file's header.
const SETTABLE_PRAGMAS: &[&str] = &["defer_foreign_keys", "foreign_keys", "user_version"];

/// The prefix of every name the host keeps for itself in a module's database.
pub const HOST_PREFIX: &str = "modhost_";

/// One connection's guard: its statement deadline, when its statement started, and
/// whether the host is using it.
struct Guard {
    /// How long one statement may run.
    limit: Duration,
    /// When the running statement started (set by SQLite's trace callback).
    started: Cell<Option<Instant>>,
    /// Set while the host runs a statement of its own ([`HostMode`]).
    host: Arc<AtomicBool>,
}

/// A connection in host mode, for as long as this lives: its statements may touch the
/// host's tables and nothing else. Dropping it (the statement done, or its future
/// dropped half-way) puts the connection back in module mode.
pub struct HostMode(Arc<AtomicBool>);

impl Drop for HostMode {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

/// Puts `db` in host mode until the returned [`HostMode`] is dropped; `None` if the
/// connection carries no guard (it was not opened by [`super::sqlite::open`]).
///
/// # Safety
/// `db` must be a live connection that nothing else uses during this call.
pub unsafe fn host_mode(db: *mut ffi::sqlite3) -> Option<HostMode> {
    // SAFETY: `db` is live (the caller's promise); the client data, if any, is the
    // guard `install` put there, alive as long as the connection.
    let guard = unsafe { ffi::sqlite3_get_clientdata(db, CLIENT_DATA.as_ptr()) };
    if guard.is_null() {
        return None;
    }
    // SAFETY: as above.
    let flag = unsafe { &*guard.cast::<Guard>() }.host.clone();
    flag.store(true, Ordering::SeqCst);
    Some(HostMode(flag))
}

/// This process's tag for the host's statements: random, and never shown to a module.
static HOST_TAG: LazyLock<String> =
    LazyLock::new(|| format!(" /* modhost host {} */", uuid::Uuid::new_v4().simple()));

/// `statement` as the host sends it: with this process's tag, so that its compiled
/// form, which sqlx keeps by text, is one no module's statement can ever reuse.
pub fn host_statement(statement: &str) -> String {
    let mut tagged = String::with_capacity(statement.len() + HOST_TAG.len());
    tagged.push_str(statement);
    tagged.push_str(&HOST_TAG);
    tagged
}

/// Installs the guard on a freshly opened connection: the authorizer, the length limit
/// (`max_length` bytes, at most SQLite's own 1 GB) and the deadline of `limit` per
/// statement. `ATTACH` is also limited to no database at all.
///
/// # Safety
/// `db` must be a live connection that nothing else uses during this call.
pub unsafe fn install(db: *mut ffi::sqlite3, limit: Duration, max_length: u64) {
    let max_length = c_int::try_from(max_length).unwrap_or(c_int::MAX);
    let guard = Box::into_raw(Box::new(Guard {
        limit,
        started: Cell::new(None),
        host: Arc::new(AtomicBool::new(false)),
    }))
    .cast::<c_void>();
    // SAFETY: `db` is live and ours for this call (the caller's promise). The guard is
    // handed to SQLite as client data with a destructor, so SQLite owns it from here and
    // frees it when the connection closes; the callbacks get the same pointer, and
    // SQLite calls none of them after the connection closes.
    unsafe {
        ffi::sqlite3_limit(db, ffi::SQLITE_LIMIT_ATTACHED, 0);
        ffi::sqlite3_limit(db, ffi::SQLITE_LIMIT_LENGTH, max_length);
        ffi::sqlite3_set_clientdata(db, CLIENT_DATA.as_ptr(), guard, Some(free_guard));
        ffi::sqlite3_set_authorizer(db, Some(authorize), guard);
        ffi::sqlite3_trace_v2(
            db,
            ffi::SQLITE_TRACE_STMT as c_uint,
            Some(statement_started),
            guard,
        );
        ffi::sqlite3_progress_handler(db, PROGRESS_STEPS, Some(past_deadline), guard);
    }
}

/// Frees a connection's guard (SQLite calls it when the connection closes).
unsafe extern "C" fn free_guard(guard: *mut c_void) {
    // SAFETY: `guard` is the pointer `install` made with `Box::into_raw`, freed once.
    drop(unsafe { Box::from_raw(guard.cast::<Guard>()) });
}

/// SQLite's trace callback: a statement starts running. A trigger's body reports
/// itself too (its text is a `-- TRIGGER name` comment); it is part of the statement
/// that fired it and does not restart the clock.
unsafe extern "C" fn statement_started(
    event: c_uint,
    guard: *mut c_void,
    _statement: *mut c_void,
    text: *mut c_void,
) -> c_int {
    if event != ffi::SQLITE_TRACE_STMT as c_uint || guard.is_null() {
        return 0;
    }
    // SAFETY: for SQLITE_TRACE_STMT the fourth argument is the statement's text, a
    // NUL-terminated string SQLite keeps alive for the call.
    let in_trigger = !text.is_null()
        && unsafe { CStr::from_ptr(text.cast::<c_char>()) }
            .to_bytes()
            .starts_with(b"--");
    if !in_trigger {
        // SAFETY: `guard` is the connection's live guard (see `install`).
        let guard = unsafe { &*guard.cast::<Guard>() };
        guard.started.set(Some(Instant::now()));
    }
    0
}

/// SQLite's progress handler: non-zero interrupts the running statement, which then
/// fails with `SQLITE_INTERRUPT`.
unsafe extern "C" fn past_deadline(guard: *mut c_void) -> c_int {
    // SAFETY: `guard` is the connection's live guard (see `install`).
    let guard = unsafe { &*guard.cast::<Guard>() };
    match guard.started.get() {
        Some(started) if started.elapsed() > guard.limit => 1,
        _ => 0,
    }
}

/// SQLite's authorizer: `SQLITE_OK` or `SQLITE_DENY` for one thing a statement uses.
unsafe extern "C" fn authorize(
    guard: *mut c_void,
    action: c_int,
    first: *const c_char,
    second: *const c_char,
    _database: *const c_char,
    _trigger_or_view: *const c_char,
) -> c_int {
    // SAFETY: SQLite passes NUL-terminated strings or NULL, alive for the call.
    let text = |pointer: *const c_char| {
        (!pointer.is_null()).then(|| unsafe { CStr::from_ptr(pointer) }.to_string_lossy())
    };
    // SAFETY: `guard` is the connection's live guard (see `install`).
    let host = !guard.is_null()
        && unsafe { &*guard.cast::<Guard>() }
            .host
            .load(Ordering::SeqCst);
    let allowed = match action {
        ffi::SQLITE_ATTACH | ffi::SQLITE_DETACH => false,
        ffi::SQLITE_PRAGMA => {
            let name = text(first).unwrap_or_default().to_ascii_lowercase();
            host || pragma_allowed(&name, second.is_null())
        }
        ffi::SQLITE_FUNCTION => {
            text(second).is_none_or(|name| !name.eq_ignore_ascii_case("load_extension"))
        }
        // Nothing here touches one table's rows: the whole statement, a transaction,
        // statistics and indexes rebuilt from what is there.
        ffi::SQLITE_SELECT
        | ffi::SQLITE_TRANSACTION
        | ffi::SQLITE_SAVEPOINT
        | ffi::SQLITE_RECURSIVE
        | ffi::SQLITE_ANALYZE
        | ffi::SQLITE_REINDEX => true,
        // A table and one of its columns: the table says whose it is.
        ffi::SQLITE_READ | ffi::SQLITE_UPDATE => {
            object_allowed(host, action, text(first).as_deref())
        }
        // The one action whose first name is a database's, not an object's.
        ffi::SQLITE_ALTER_TABLE => object_allowed(host, action, text(second).as_deref()),
        // Every other action names the objects it touches: a table, index, trigger or
        // view, and the table it belongs to.
        _ => {
            object_allowed(host, action, text(first).as_deref())
                && object_allowed(host, action, text(second).as_deref())
        }
    };
    if allowed {
        ffi::SQLITE_OK
    } else {
        ffi::SQLITE_DENY
    }
}

/// Whether a statement in host mode (`host`) or module mode may do `action` to the
/// object (table, index, trigger, view) called `name`.
fn object_allowed(host: bool, action: c_int, name: Option<&str>) -> bool {
    let Some(name) = name.filter(|name| !name.is_empty()) else {
        return true;
    };
    let hosts = name
        .get(..HOST_PREFIX.len())
        .is_some_and(|prefix| prefix.eq_ignore_ascii_case(HOST_PREFIX));
    let internal = name
        .get(..7)
        .is_some_and(|prefix| prefix.eq_ignore_ascii_case("sqlite_"));
    if host {
        // The host's statements change its tables and SQLite's own (the schema, the
        // sequence of `AUTOINCREMENT`), never the module's; they may read a module's
        // table, which SQLite does to check a foreign key of the module's that names
        // a host table.
        return hosts || internal || action == ffi::SQLITE_READ || name.starts_with("pragma_");
    }
    let writes = matches!(
        action,
        ffi::SQLITE_INSERT | ffi::SQLITE_UPDATE | ffi::SQLITE_DELETE
    );
    let sequence = writes && name.eq_ignore_ascii_case("sqlite_sequence");
    !hosts && !sequence
}

/// Whether a module may run `PRAGMA name` (`reading`: without an argument).
fn pragma_allowed(name: &str, reading: bool) -> bool {
    QUESTION_PRAGMAS.contains(&name)
        || SETTABLE_PRAGMAS.contains(&name)
        || (reading && READABLE_PRAGMAS.contains(&name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_module_may_read_its_schema_but_not_change_the_process_or_the_file() {
        for (name, reading) in [
            ("table_info", false),
            ("integrity_check", true),
            ("page_count", true),
            ("foreign_key_check", true),
            ("user_version", true),
            ("defer_foreign_keys", false),
            ("foreign_keys", false),
        ] {
            assert!(pragma_allowed(name, reading), "{name} ({reading})");
        }
        for (name, reading) in [
            ("hard_heap_limit", false),
            ("hard_heap_limit", true),
            ("soft_heap_limit", false),
            ("mmap_size", false),
            ("journal_mode", false),
            ("synchronous", false),
            ("writable_schema", false),
            ("cache_size", false),
            ("page_size", false),
            ("database_list", true),
        ] {
            assert!(!pragma_allowed(name, reading), "{name} ({reading})");
        }
    }
}

#[cfg(test)]
mod host_tables {
    use crate::capabilities::sql::{Database, Error, Value};
    use crate::deployment::database::DEFAULT_MAX_RESULT;
    use crate::deployment::{DatabaseBackend, DatabaseSpec, Timeout};
    use std::time::Duration;

    async fn database(dir: &std::path::Path) -> Database {
        let spec = DatabaseSpec {
            backend: DatabaseBackend::Sqlite,
            pool: 2,
            acquire_timeout: Timeout(Duration::from_secs(2)),
            max_result: DEFAULT_MAX_RESULT,
            migrations: None,
        };
        let database = Database::open("m", &spec, dir, Duration::from_secs(2))
            .await
            .unwrap();
        for statement in [
            "CREATE TABLE IF NOT EXISTS modhost_box (id INTEGER PRIMARY KEY AUTOINCREMENT, v TEXT)",
            "INSERT INTO modhost_box (v) VALUES ('the host''s')",
        ] {
            database.host_execute(statement, vec![]).await.unwrap();
        }
        database
    }

    async fn denied(database: &Database, statement: &str) {
        let result = database.execute(statement, vec![]).await;
        assert!(
            matches!(result, Err(Error::Denied(_))),
            "{statement}: {result:?}"
        );
    }

    async fn host_rows(database: &Database) -> Vec<Vec<Value>> {
        database
            .host_query("SELECT id, v FROM modhost_box ORDER BY id", vec![])
            .await
            .unwrap()
            .rows
    }

    #[tokio::test]
    async fn a_module_cannot_read_write_or_reshape_the_host_tables_in_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let database = database(dir.path()).await;
        // The host has run this text, so its connection may hold it compiled: the
        // module's identical text is compiled again, as the module's.
        database
            .host_query("SELECT v FROM modhost_box", vec![])
            .await
            .unwrap();
        for statement in [
            "SELECT v FROM modhost_box",
            "SELECT count(*) FROM modhost_box",
            "SELECT 1 FROM MODHOST_BOX",
            "INSERT INTO modhost_box (v) VALUES ('forged')",
            "UPDATE modhost_box SET v = 'changed'",
            "DELETE FROM modhost_box",
            "DROP TABLE modhost_box",
            "ALTER TABLE modhost_box RENAME TO mine",
            "ALTER TABLE modhost_box ADD COLUMN w TEXT",
            "CREATE INDEX mine ON modhost_box (v)",
            "CREATE TRIGGER mine AFTER INSERT ON modhost_box BEGIN SELECT 1; END",
            "CREATE TEMP TRIGGER mine AFTER INSERT ON main.modhost_box BEGIN SELECT 1; END",
            // A table of its own under the host's name would shadow the host's.
            "CREATE TEMP TABLE modhost_box (v TEXT)",
            "CREATE TABLE modhost_other (v TEXT)",
            "CREATE TEMP VIEW modhost_box AS SELECT 1 AS v",
            "UPDATE sqlite_sequence SET seq = 9223372036854775807 WHERE name = 'modhost_box'",
            "DELETE FROM sqlite_sequence",
        ] {
            denied(&database, statement).await;
        }
        // Nor through a view or a trigger of its own, which run as its statements.
        database
            .execute("CREATE VIEW peek AS SELECT v FROM modhost_box", vec![])
            .await
            .unwrap();
        denied(&database, "SELECT v FROM peek").await;
        database
            .execute("CREATE TABLE mine (v TEXT)", vec![])
            .await
            .unwrap();
        database
            .execute(
                "CREATE TRIGGER smuggle AFTER INSERT ON mine BEGIN \
                 INSERT INTO modhost_box (v) VALUES (new.v); END",
                vec![],
            )
            .await
            .unwrap();
        denied(&database, "INSERT INTO mine VALUES ('forged')").await;
        // Inside a transaction too.
        let mut tx = database.begin().await.unwrap();
        let result = tx.execute("DELETE FROM modhost_box", vec![]).await;
        assert!(matches!(result, Err(Error::Denied(_))), "{result:?}");
        tx.host_execute(
            "INSERT INTO modhost_box (v) VALUES ('in the module''s tx')",
            vec![],
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();

        assert_eq!(
            host_rows(&database).await,
            [
                vec![Value::Integer(1), Value::Text("the host's".into())],
                vec![Value::Integer(2), Value::Text("in the module's tx".into())],
            ]
        );
        // What the module may still do with its own tables and SQLite's.
        for statement in [
            "DROP TRIGGER smuggle",
            "CREATE TABLE counted (id INTEGER PRIMARY KEY AUTOINCREMENT, v TEXT)",
            "INSERT INTO counted (v) VALUES ('mine')",
            "SELECT name, seq FROM sqlite_sequence",
            "SELECT name FROM sqlite_schema",
            "PRAGMA table_info(modhost_box)",
            "ANALYZE",
        ] {
            database.execute(statement, vec![]).await.unwrap();
        }
    }

    #[tokio::test]
    async fn the_host_statements_change_only_the_host_tables() {
        let dir = tempfile::tempdir().unwrap();
        let database = database(dir.path()).await;
        // A module's table may name a host table in a foreign key, but not hold a row:
        // checking the reference reads the host's table.
        database
            .execute(
                "CREATE TABLE mine (id INTEGER REFERENCES modhost_box (id) ON DELETE CASCADE)",
                vec![],
            )
            .await
            .unwrap();
        denied(&database, "INSERT INTO mine VALUES (1)").await;
        denied(&database, "INSERT INTO mine VALUES (NULL)").await;
        for statement in [
            "CREATE TABLE log (v TEXT)",
            "CREATE TRIGGER ride AFTER DELETE ON mine BEGIN INSERT INTO log VALUES ('rode'); \
             INSERT INTO modhost_box (v) VALUES ('forged'); END",
        ] {
            database.execute(statement, vec![]).await.unwrap();
        }
        // The cascade would run the module's trigger inside the host's statement: the
        // host's statement may write no table of the module's, so it fails instead.
        let result = database
            .host_execute("DELETE FROM modhost_box WHERE id = 1", vec![])
            .await;
        assert!(matches!(result, Err(Error::Denied(_))), "{result:?}");
        let log = database.query("SELECT v FROM log", vec![]).await.unwrap();
        assert!(log.rows.is_empty(), "{log:?}");
        assert_eq!(host_rows(&database).await.len(), 1);
        // A reference that changes nothing when its row goes only reads the module's
        // table, which the host's statement may.
        for statement in [
            "DROP TABLE mine",
            "CREATE TABLE plain (id INTEGER REFERENCES modhost_box (id))",
        ] {
            database.execute(statement, vec![]).await.unwrap();
        }
        database
            .host_execute("DELETE FROM modhost_box WHERE id = 1", vec![])
            .await
            .unwrap();
        assert!(host_rows(&database).await.is_empty());
    }
}
