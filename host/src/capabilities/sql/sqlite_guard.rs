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
//! transactions. The authorizer keeps the two apart: a connection is in **module
//! mode** or in **host mode**. In module mode nothing whose name starts with
//! `modhost_` may be read, written, created, altered or dropped, and
//! `sqlite_sequence` may not be written. In host mode only those tables may be
//! changed, so a module's trigger or foreign-key cascade on its own tables cannot run
//! its SQL with the host's rights (the host's statement fails instead: a module that
//! declares `ON DELETE CASCADE` from a host table stops its own outbox, nobody
//! else's).
//!
//! A module's connections are in module mode; the host's own pool for the file opens
//! its connections in host mode, and they stay so. What the host must write inside a
//! module's transaction (an event published, an event claimed as handled, a migration
//! recorded) goes through the SQL function [`HOST_FUNCTION`],
//! `modhost_host(key, statement, parameters…)`: given the database's host key, which
//! no module knows, it compiles and runs that one statement in host mode, on the
//! connection's own thread and within the call, and answers its rows as JSON
//! ([`HostAnswer`]). Any other caller is refused with `SQLITE_AUTH`. The function is
//! direct-only, so no trigger, view or default of a module's can call it. This costs
//! no round trip of its own: the statement travels with the host's call, as the
//! host's functions on Postgres do.
//!
//! The per-connection state ([`Guard`]) is attached to the connection as SQLite
//! client data, which SQLite frees when the connection closes. SQLite calls every
//! callback on the thread using the connection, one at a time.

use super::SchemaClock;
use libsqlite3_sys as ffi;
use std::cell::{Cell, RefCell};
use std::ffi::{c_char, c_int, c_uint, c_void, CStr};
use std::sync::Arc;
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

/// The SQL function through which the host runs one statement of its own in a
/// module's transaction (see the module's documentation).
pub const HOST_FUNCTION: &CStr = c"modhost_host";

/// What [`HOST_FUNCTION`] answers for a statement that answers rows, as JSON: its
/// columns, its rows, and how many rows it changed. (A statement without rows is
/// answered with the number of rows it changed, an integer.)
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct HostAnswer {
    /// The columns' names.
    pub columns: Vec<String>,
    /// The rows, each value with its stored type.
    pub rows: Vec<Vec<HostValue>>,
    /// Rows the statement inserted, updated or deleted (0 for a read).
    pub changes: u64,
}

/// One value of a [`HostAnswer`]'s row, by its stored type.
#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum HostValue {
    /// `NULL`.
    Null,
    /// An integer.
    Integer(i64),
    /// A floating-point number.
    Real(f64),
    /// Text (what is not UTF-8 in it replaced).
    Text(String),
    /// A blob.
    Blob(Vec<u8>),
}

/// One connection's guard: its statement deadline, when its statement started,
/// whether it is in host mode, and the key that lets the host's calls in.
struct Guard {
    /// How long one statement may run.
    limit: Duration,
    /// When the running statement started (set by SQLite's trace callback).
    started: Cell<Option<Instant>>,
    /// Host mode: for the host's pool always, for a module's connection while
    /// [`HOST_FUNCTION`] runs a statement of the host's.
    host: Cell<bool>,
    /// What a call of [`HOST_FUNCTION`] must pass first.
    key: [u8; 32],
    /// The host's statements [`HOST_FUNCTION`] ran here, compiled, by their text
    /// (at most [`CACHED_STATEMENTS`]): the outbox's insert runs once per event.
    /// Finalized by the connection's [`Statements`] as it closes.
    statements: RefCell<Vec<CachedStatement>>,
    /// The module's schema clock, marked when a module's statement reshapes a table.
    schema_clock: Arc<SchemaClock>,
}

/// One of the host's statements kept compiled: its text, and its handle.
type CachedStatement = (Box<[u8]>, *mut ffi::sqlite3_stmt);

/// How many of the host's statements a connection keeps compiled.
const CACHED_STATEMENTS: usize = 16;

/// The host's statements compiled on one connection ([`Guard::statements`]), which
/// must be finalized before SQLite will close it: whoever closes the connection
/// drops this first (sqlx drops its connection's hooks, and so this one, after its
/// own statements and before it closes the connection). From [`statements`].
pub struct Statements(*mut Guard);

// SAFETY: the pointer is used only in `drop`, which runs on whatever thread closes
// the connection, with nothing else using it.
unsafe impl Send for Statements {}

impl Drop for Statements {
    fn drop(&mut self) {
        // SAFETY: the guard lives until the connection closes, which is after this.
        let guard = unsafe { &*self.0 };
        for (_, statement) in guard.statements.borrow_mut().drain(..) {
            // SAFETY: each was prepared by `run_statement` and is finalized once.
            unsafe { ffi::sqlite3_finalize(statement) };
        }
    }
}

/// The compiled host statements of `db`, to drop before it closes; `None` if the
/// connection carries no guard.
///
/// # Safety
/// `db` must be a live connection with nothing else using it during this call, and
/// the result dropped before it closes.
pub unsafe fn statements(db: *mut ffi::sqlite3) -> Option<Statements> {
    // SAFETY: the caller's promise; the client data is the guard `install` put there.
    let guard = unsafe { ffi::sqlite3_get_clientdata(db, CLIENT_DATA.as_ptr()) };
    (!guard.is_null()).then(|| Statements(guard.cast::<Guard>()))
}

/// Whose connection a guard is installed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A module's: its statements may not touch the host's tables.
    Module,
    /// The host's own: its statements may change the host's tables and nothing else.
    Host,
}

/// Installs the guard on a freshly opened connection in `mode`: the authorizer, the
/// length limit (`max_length` bytes, at most SQLite's own 1 GB), the deadline of
/// `limit` per statement, and [`HOST_FUNCTION`], keyed with `key`. `ATTACH` is also
/// limited to no database at all. A module's statement that alters or drops a table
/// or view marks `schema_clock` as it is compiled, so the pool's other connections,
/// which knew the old shape, are replaced ([`SchemaClock`]).
///
/// # Safety
/// `db` must be a live connection that nothing else uses during this call.
pub unsafe fn install(
    db: *mut ffi::sqlite3,
    mode: Mode,
    limit: Duration,
    max_length: u64,
    key: [u8; 32],
    schema_clock: Arc<SchemaClock>,
) {
    let max_length = c_int::try_from(max_length).unwrap_or(c_int::MAX);
    let guard = Box::into_raw(Box::new(Guard {
        limit,
        started: Cell::new(None),
        host: Cell::new(mode == Mode::Host),
        key,
        statements: RefCell::new(Vec::new()),
        schema_clock,
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
        ffi::sqlite3_create_function_v2(
            db,
            HOST_FUNCTION.as_ptr(),
            -1,
            ffi::SQLITE_UTF8 | ffi::SQLITE_DIRECTONLY,
            guard,
            Some(run_as_host),
            None,
            None,
            None,
        );
    }
}

/// [`HOST_FUNCTION`]: `modhost_host(key, statement, parameters…)` runs `statement`
/// with `parameters` in host mode if `key` is the guard's, and answers a
/// [`HostAnswer`]; refuses anyone else with `SQLITE_AUTH`. Host mode ends with the
/// call, whatever the statement did.
unsafe extern "C" fn run_as_host(
    context: *mut ffi::sqlite3_context,
    count: c_int,
    values: *mut *mut ffi::sqlite3_value,
) {
    // SAFETY: SQLite passes the function's user data (the connection's live guard,
    // see `install`) and `count` argument values, alive for the call.
    let guard = unsafe { ffi::sqlite3_user_data(context) }.cast::<Guard>();
    let arguments: &[*mut ffi::sqlite3_value] = match usize::try_from(count) {
        Ok(count) if !values.is_null() => unsafe { std::slice::from_raw_parts(values, count) },
        _ => &[],
    };
    // SAFETY: as above; the key argument's bytes live until the value changes.
    let keyed = !guard.is_null()
        && arguments.len() >= 2
        && unsafe { value_bytes(arguments[0]) }
            .is_some_and(|key| same(key, &unsafe { &*guard }.key));
    if !keyed {
        // SAFETY: `context` is the live call's.
        unsafe {
            fail(
                context,
                ffi::SQLITE_AUTH,
                "modhost_host is the host's alone",
            )
        };
        return;
    }
    // SAFETY: checked non-null above; SQLite calls this on the connection's thread.
    let guard = unsafe { &*guard };
    let before = guard.host.replace(true);
    // SAFETY: the connection is the live one this call runs on.
    let answer = unsafe {
        run_statement(
            ffi::sqlite3_context_db_handle(context),
            guard,
            arguments[1],
            &arguments[2..],
        )
    };
    guard.host.set(before);
    // A statement that answers no rows answers how many it changed; one that does,
    // all of it as JSON.
    if let Ok(HostAnswer {
        columns, changes, ..
    }) = &answer
    {
        if columns.is_empty() {
            let changes = i64::try_from(*changes).unwrap_or(i64::MAX);
            // SAFETY: `context` is the live call's.
            unsafe { ffi::sqlite3_result_int64(context, changes) };
            return;
        }
    }
    match answer.and_then(|answer| {
        serde_json::to_string(&answer).map_err(|e| (ffi::SQLITE_ERROR, e.to_string()))
    }) {
        // SAFETY: SQLite copies the text (SQLITE_TRANSIENT) before this returns.
        Ok(json) => unsafe {
            ffi::sqlite3_result_text64(
                context,
                json.as_ptr().cast::<c_char>(),
                json.len() as u64,
                ffi::SQLITE_TRANSIENT(),
                ffi::SQLITE_UTF8 as u8,
            )
        },
        // SAFETY: `context` is the live call's.
        Err((code, message)) => unsafe { fail(context, code, &message) },
    }
}

/// Runs one statement on `db` with `parameters` (compiled before, or now), collecting
/// its answer; on failure SQLite's extended code and message.
///
/// # Safety
/// `db` must be the live connection the calling function runs on, `guard` its guard;
/// `statement` and `parameters` live values of that call.
unsafe fn run_statement(
    db: *mut ffi::sqlite3,
    guard: &Guard,
    statement: *mut ffi::sqlite3_value,
    parameters: &[*mut ffi::sqlite3_value],
) -> Result<HostAnswer, (c_int, String)> {
    // SAFETY: the statement's text lives as long as its value is not changed.
    let text = unsafe { value_bytes(statement) }
        .ok_or((ffi::SQLITE_ERROR, String::from("no statement")))?;
    // Taken out of the cache while it runs, and put back once it ran well.
    let cached = {
        let mut statements = guard.statements.borrow_mut();
        let found = statements.iter().position(|(known, _)| **known == *text);
        found.map(|at| statements.swap_remove(at))
    };
    let handle = match cached {
        Some((_, handle)) => Compiled(handle),
        // SAFETY: `db` is live (the caller's promise).
        None => unsafe { compile(db, text)? },
    };
    // SAFETY: as above; the handle is live until `Compiled` drops it.
    let answer = unsafe { run_compiled(db, handle.0, parameters) }?;
    let mut statements = guard.statements.borrow_mut();
    if statements.len() < CACHED_STATEMENTS {
        // SAFETY: the handle is live; reset, it holds no lock and no value.
        unsafe {
            ffi::sqlite3_reset(handle.0);
            ffi::sqlite3_clear_bindings(handle.0);
        }
        statements.push((text.into(), handle.into_raw()));
    }
    Ok(answer)
}

/// A compiled statement of the host's, finalized when dropped unless kept
/// ([`Compiled::into_raw`]).
struct Compiled(*mut ffi::sqlite3_stmt);

impl Compiled {
    /// The handle, no longer finalized here.
    fn into_raw(self) -> *mut ffi::sqlite3_stmt {
        let handle = self.0;
        std::mem::forget(self);
        handle
    }
}

impl Drop for Compiled {
    fn drop(&mut self) {
        // SAFETY: the handle was prepared by `compile` and is finalized once, here.
        unsafe { ffi::sqlite3_finalize(self.0) };
    }
}

/// SQLite's extended code and message for the last failure on `db`.
///
/// # Safety
/// `db` must be live.
unsafe fn failure(db: *mut ffi::sqlite3) -> (c_int, String) {
    // SAFETY: the caller's promise; the message lives until the next call on `db`.
    unsafe {
        let message = ffi::sqlite3_errmsg(db);
        let message = if message.is_null() {
            String::from("unknown error")
        } else {
            CStr::from_ptr(message).to_string_lossy().into_owned()
        };
        (ffi::sqlite3_extended_errcode(db), message)
    }
}

/// Compiles `text`, which must be one statement, on `db`.
///
/// # Safety
/// `db` must be live.
unsafe fn compile(db: *mut ffi::sqlite3, text: &[u8]) -> Result<Compiled, (c_int, String)> {
    let mut handle: *mut ffi::sqlite3_stmt = std::ptr::null_mut();
    let mut tail: *const c_char = std::ptr::null();
    let length = c_int::try_from(text.len())
        .map_err(|_| (ffi::SQLITE_TOOBIG, String::from("statement too long")))?;
    // SAFETY: `text` is `length` bytes; the handle and tail are written by SQLite.
    let code = unsafe {
        ffi::sqlite3_prepare_v3(
            db,
            text.as_ptr().cast::<c_char>(),
            length,
            ffi::SQLITE_PREPARE_PERSISTENT as c_uint,
            &mut handle,
            &mut tail,
        )
    };
    if code != ffi::SQLITE_OK {
        // SAFETY: as above.
        return Err(unsafe { failure(db) });
    }
    if handle.is_null() {
        return Err((ffi::SQLITE_ERROR, String::from("an empty statement")));
    }
    let handle = Compiled(handle);
    // `tail` points into `text`, just past the statement compiled.
    let compiled = if tail.is_null() {
        text.len()
    } else {
        (tail as usize)
            .saturating_sub(text.as_ptr() as usize)
            .min(text.len())
    };
    if text[compiled..].iter().any(|b| !b.is_ascii_whitespace()) {
        return Err((ffi::SQLITE_ERROR, String::from("one statement at a time")));
    }
    Ok(handle)
}

/// Binds `parameters` to the compiled `handle` and runs it to the end.
///
/// # Safety
/// `db` must be live, `handle` a live statement of it, reset; `parameters` live values.
unsafe fn run_compiled(
    db: *mut ffi::sqlite3,
    handle: *mut ffi::sqlite3_stmt,
    parameters: &[*mut ffi::sqlite3_value],
) -> Result<HostAnswer, (c_int, String)> {
    // SQLite numbers a statement's parameters in the order they first appear, and
    // `$2` may come before `$1`: each is bound by the number in its name (a bare `?`
    // by its place), as sqlx binds the module's.
    // SAFETY: the statement is live for all of what follows.
    let slots = unsafe { ffi::sqlite3_bind_parameter_count(handle) };
    for slot in 1..=slots {
        let name = unsafe { ffi::sqlite3_bind_parameter_name(handle, slot) };
        let number = if name.is_null() {
            usize::try_from(slot).ok()
        } else {
            let name = unsafe { CStr::from_ptr(name) }.to_bytes();
            std::str::from_utf8(name.get(1..).unwrap_or_default())
                .ok()
                .and_then(|digits| digits.parse::<usize>().ok())
        };
        let Some(parameter) = number.and_then(|n| parameters.get(n.checked_sub(1)?)) else {
            return Err((
                ffi::SQLITE_RANGE,
                format!("parameter {slot} of the host's statement has no value"),
            ));
        };
        // SAFETY: SQLite copies the value.
        if unsafe { ffi::sqlite3_bind_value(handle, slot, *parameter) } != ffi::SQLITE_OK {
            return Err(unsafe { failure(db) });
        }
    }
    // SAFETY: the statement is live for all of what follows.
    let columns = unsafe { ffi::sqlite3_column_count(handle) };
    let names = (0..columns)
        .map(|i| unsafe { text_of(ffi::sqlite3_column_name(handle, i)) })
        .collect();
    let mut rows = Vec::new();
    loop {
        match unsafe { ffi::sqlite3_step(handle) } {
            ffi::SQLITE_ROW => rows.push(
                (0..columns)
                    .map(|i| unsafe { column_value(handle, i) })
                    .collect(),
            ),
            ffi::SQLITE_DONE => break,
            _ => return Err(unsafe { failure(db) }),
        }
    }
    let changes = if unsafe { ffi::sqlite3_stmt_readonly(handle) } != 0 {
        0
    } else {
        u64::try_from(unsafe { ffi::sqlite3_changes64(db) }).unwrap_or(0)
    };
    Ok(HostAnswer {
        columns: names,
        rows,
        changes,
    })
}

/// A value's bytes (text or blob), `None` for `NULL`.
///
/// # Safety
/// `value` must be live; the bytes are valid until it changes.
unsafe fn value_bytes<'a>(value: *mut ffi::sqlite3_value) -> Option<&'a [u8]> {
    // SAFETY: the caller's promise; `sqlite3_value_blob` before `_bytes`, as SQLite
    // asks, and a zero-length value may come back as NULL.
    unsafe {
        if ffi::sqlite3_value_type(value) == ffi::SQLITE_NULL {
            return None;
        }
        let data = ffi::sqlite3_value_blob(value).cast::<u8>();
        let length = usize::try_from(ffi::sqlite3_value_bytes(value)).unwrap_or(0);
        Some(if data.is_null() || length == 0 {
            &[]
        } else {
            std::slice::from_raw_parts(data, length)
        })
    }
}

/// Column `i` of the statement's current row.
///
/// # Safety
/// `handle` must be a live statement on a row.
unsafe fn column_value(handle: *mut ffi::sqlite3_stmt, i: c_int) -> HostValue {
    // SAFETY: the caller's promise; `_blob`/`_text` before `_bytes`, as SQLite asks.
    unsafe {
        let bytes = |data: *const u8| {
            let length = usize::try_from(ffi::sqlite3_column_bytes(handle, i)).unwrap_or(0);
            if data.is_null() || length == 0 {
                &[][..]
            } else {
                std::slice::from_raw_parts(data, length)
            }
        };
        match ffi::sqlite3_column_type(handle, i) {
            ffi::SQLITE_INTEGER => HostValue::Integer(ffi::sqlite3_column_int64(handle, i)),
            ffi::SQLITE_FLOAT => HostValue::Real(ffi::sqlite3_column_double(handle, i)),
            ffi::SQLITE_TEXT => HostValue::Text(
                String::from_utf8_lossy(bytes(ffi::sqlite3_column_text(handle, i))).into_owned(),
            ),
            ffi::SQLITE_BLOB => {
                HostValue::Blob(bytes(ffi::sqlite3_column_blob(handle, i).cast::<u8>()).to_vec())
            }
            _ => HostValue::Null,
        }
    }
}

/// A C string SQLite owns, as text ("" for NULL).
///
/// # Safety
/// `text` must be NULL or a live NUL-terminated string.
unsafe fn text_of(text: *const c_char) -> String {
    if text.is_null() {
        return String::new();
    }
    // SAFETY: the caller's promise.
    unsafe { CStr::from_ptr(text) }
        .to_string_lossy()
        .into_owned()
}

/// Whether `given` is `key`, compared in time that does not depend on where they
/// differ.
fn same(given: &[u8], key: &[u8; 32]) -> bool {
    given.len() == key.len() && given.iter().zip(key).fold(0u8, |d, (a, b)| d | (a ^ b)) == 0
}

/// Ends the function call with an error: `code` and `message`.
///
/// # Safety
/// `context` must be the live call's.
unsafe fn fail(context: *mut ffi::sqlite3_context, code: c_int, message: &str) {
    let length = c_int::try_from(message.len()).unwrap_or(c_int::MAX);
    // SAFETY: the caller's promise; SQLite copies the message.
    unsafe {
        ffi::sqlite3_result_error(context, message.as_ptr().cast::<c_char>(), length);
        ffi::sqlite3_result_error_code(context, code);
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
    let guard = (!guard.is_null()).then(|| unsafe { &*guard.cast::<Guard>() });
    let host = guard.is_some_and(|guard| guard.host.get());
    // What changes the columns a kept `SELECT *` returns. (sqlx's SQLite worker,
    // whose statement SQLite recompiles with more columns than it kept, panics.)
    if let (Some(guard), false) = (guard, host) {
        if matches!(
            action,
            ffi::SQLITE_ALTER_TABLE | ffi::SQLITE_DROP_TABLE | ffi::SQLITE_DROP_VIEW
        ) {
            guard.schema_clock.mark();
        }
    }
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
    use std::time::Duration;

    async fn database(dir: &std::path::Path) -> Database {
        let spec = super::super::sqlite::tests::spec();
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
        // The host has run this text on a connection of its own: the module's
        // identical text is compiled on the module's, as the module's.
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

    #[tokio::test]
    async fn only_the_host_may_call_the_host_function() {
        let dir = tempfile::tempdir().unwrap();
        let database = database(dir.path()).await;
        let call = |key: &str| format!("SELECT modhost_host({key}, 'DELETE FROM modhost_box')");
        for key in [
            "NULL",
            "x''",
            "zeroblob(32)",
            "randomblob(32)",
            "'the key'",
            "x'00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff'",
        ] {
            denied(&database, &call(key)).await;
        }
        for statement in [
            "SELECT modhost_host()",
            "SELECT modhost_host(randomblob(32))",
        ] {
            denied(&database, statement).await;
        }
        // Nor from anything of the module's that runs inside another statement (a
        // trigger, a view, a default): the function is direct-only.
        for statement in [
            "CREATE TABLE mine (v TEXT)",
            "CREATE TRIGGER call AFTER INSERT ON mine BEGIN \
             SELECT modhost_host(randomblob(32), 'DELETE FROM modhost_box'); END",
            "CREATE VIEW calls AS SELECT modhost_host(randomblob(32), 'DELETE FROM modhost_box')",
        ] {
            database.execute(statement, vec![]).await.unwrap();
        }
        for statement in ["INSERT INTO mine VALUES ('x')", "SELECT * FROM calls"] {
            let result = database.execute(statement, vec![]).await;
            assert!(result.is_err(), "{statement}: {result:?}");
        }
        // Inside a transaction, after the host's own statements (one that worked and
        // one that failed), the module is back in module mode.
        let mut tx = database.begin().await.unwrap();
        tx.host_execute("INSERT INTO modhost_box (v) VALUES ('host')", vec![])
            .await
            .unwrap();
        let failed = tx
            .host_execute(
                "INSERT INTO modhost_box (id, v) VALUES (1, 'again')",
                vec![],
            )
            .await;
        assert!(
            matches!(failed, Err(Error::ConstraintViolation(_))),
            "{failed:?}"
        );
        let result = tx.execute(&call("randomblob(32)"), vec![]).await;
        assert!(matches!(result, Err(Error::Denied(_))), "{result:?}");
        let result = tx.execute("DELETE FROM modhost_box", vec![]).await;
        assert!(matches!(result, Err(Error::Denied(_))), "{result:?}");
        tx.commit().await.unwrap();
        assert_eq!(host_rows(&database).await.len(), 2);
    }

    #[tokio::test]
    async fn the_host_statements_in_a_module_transaction_answer_typed_rows() {
        let dir = tempfile::tempdir().unwrap();
        let database = database(dir.path()).await;
        database
            .host_execute(
                "CREATE TABLE modhost_typed (i INTEGER, r REAL, t TEXT, b BLOB, n)",
                vec![],
            )
            .await
            .unwrap();
        let mut tx = database.begin().await.unwrap();
        let row = vec![
            Value::Integer(i64::MIN),
            Value::Real(0.5),
            Value::Text("ünïcode".into()),
            Value::Blob(vec![0, 1, 255]),
            Value::Null,
        ];
        let changed = tx
            .host_execute(
                "INSERT INTO modhost_typed VALUES ($1, $2, $3, $4, $5), ($1, $2, $3, $4, $5)",
                row.clone(),
            )
            .await
            .unwrap();
        assert_eq!(changed, 2);
        let rows = tx
            .host_query("SELECT i, r, t, b, n FROM modhost_typed LIMIT 1", vec![])
            .await
            .unwrap();
        assert_eq!(rows.columns, ["i", "r", "t", "b", "n"]);
        assert_eq!(rows.rows, [row]);
        // Parameters bound by the numbers in their names, wherever they appear.
        let swapped = tx
            .host_query(
                "SELECT $2, $1, $2",
                vec![Value::Integer(1), Value::Integer(2)],
            )
            .await
            .unwrap();
        assert_eq!(
            swapped.rows,
            [vec![
                Value::Integer(2),
                Value::Integer(1),
                Value::Integer(2)
            ]]
        );
        let result = tx.host_query("SELECT $3", vec![Value::Integer(1)]).await;
        assert!(result.is_err(), "{result:?}");
        // As many parameters as SQLite passes a function, and no more.
        let placeholders = |n: usize| (1..=n).map(|i| format!("${i}")).collect::<Vec<_>>();
        let many = format!("SELECT {}", placeholders(125).join(" + "));
        let sum = tx
            .host_query(&many, vec![Value::Integer(1); 125])
            .await
            .unwrap();
        assert_eq!(sum.rows, [vec![Value::Integer(125)]]);
        let too_many = format!("SELECT {}", placeholders(126).join(" + "));
        let result = tx.host_query(&too_many, vec![Value::Integer(1); 126]).await;
        assert!(result.is_err(), "{result:?}");
        // One statement at a time.
        let result = tx
            .host_execute("DELETE FROM modhost_typed; DELETE FROM modhost_box", vec![])
            .await;
        assert!(result.is_err(), "{result:?}");
        tx.rollback().await.unwrap();
        assert_eq!(host_rows(&database).await.len(), 1);
    }

    #[tokio::test]
    async fn the_host_statements_follow_a_schema_changed_through_another_connection() {
        let dir = tempfile::tempdir().unwrap();
        let database = database(dir.path()).await;
        database
            .execute(
                "CREATE TABLE mine (id INTEGER REFERENCES modhost_box (id) ON DELETE CASCADE)",
                vec![],
            )
            .await
            .unwrap();
        // Both of the module's connections and both of the host's learn the cascade.
        let mut held = Vec::new();
        for _ in 0..2 {
            let mut tx = database.begin().await.unwrap();
            tx.query("SELECT count(*) FROM mine", vec![]).await.unwrap();
            held.push(tx);
        }
        let refused = database
            .host_execute("DELETE FROM modhost_box WHERE id = 1", vec![])
            .await;
        assert!(matches!(refused, Err(Error::Denied(_))), "{refused:?}");
        // The module drops it through one connection; the other still has it compiled
        // in its schema.
        let mut dropping = held.pop().unwrap();
        dropping.execute("DROP TABLE mine", vec![]).await.unwrap();
        dropping.commit().await.unwrap();
        held.pop().unwrap().commit().await.unwrap();
        // In a transaction of the module's, on either connection, the host's statement
        // sees the schema as it is now.
        let mut first = database.begin().await.unwrap();
        let mut second = database.begin().await.unwrap();
        first
            .host_execute("DELETE FROM modhost_box WHERE id = 1", vec![])
            .await
            .unwrap();
        first.rollback().await.unwrap();
        second
            .host_execute("DELETE FROM modhost_box WHERE id = 1", vec![])
            .await
            .unwrap();
        second.rollback().await.unwrap();
        // And on the host's own connections.
        database
            .host_execute("DELETE FROM modhost_box WHERE id = 1", vec![])
            .await
            .unwrap();
        assert!(host_rows(&database).await.is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn transactions_that_write_the_host_table_first_wait_for_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let database = std::sync::Arc::new(database(dir.path()).await);
        database
            .execute("CREATE TABLE mine (v TEXT)", vec![])
            .await
            .unwrap();
        // As a publisher does: the event first, then its own row, several at once.
        // The host's write takes the lock as a plain write would (waiting for the
        // others), instead of failing at once as a read turned write does.
        let writers = (0..4).map(|writer| {
            let database = database.clone();
            tokio::spawn(async move {
                for i in 0..50 {
                    let mut tx = database.begin().await.unwrap();
                    tx.host_execute(
                        "INSERT INTO modhost_box (v) VALUES ($1)",
                        vec![Value::Text(format!("{writer}.{i}"))],
                    )
                    .await
                    .unwrap();
                    tx.execute("INSERT INTO mine VALUES ('x')", vec![])
                        .await
                        .unwrap();
                    tx.commit().await.unwrap();
                }
            })
        });
        for writer in writers.collect::<Vec<_>>() {
            writer.await.unwrap();
        }
        assert_eq!(host_rows(&database).await.len(), 201);
    }

    #[tokio::test]
    async fn a_connection_keeping_the_host_statements_compiled_still_closes() {
        let dir = tempfile::tempdir().unwrap();
        let database = database(dir.path()).await;
        for _ in 0..3 {
            let mut tx = database.begin().await.unwrap();
            for v in ["one", "two"] {
                tx.host_execute(
                    "INSERT INTO modhost_box (v) VALUES ($1)",
                    vec![Value::Text(v.into())],
                )
                .await
                .unwrap();
            }
            tx.commit().await.unwrap();
        }
        assert_eq!(host_rows(&database).await.len(), 7);
        database.close().await;
        // SQLite refuses to close a connection with a statement left compiled on it.
        let open = super::super::sqlite::tests::files_open_under(dir.path());
        assert!(open.is_empty(), "still open: {open:?}");
    }
}
