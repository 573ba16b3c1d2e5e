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
//! The per-connection state ([`Guard`]) is attached to the connection as SQLite
//! client data, which SQLite frees when the connection closes. SQLite calls every
//! callback on the thread using the connection, one at a time, so the guard needs no
//! locking.

use libsqlite3_sys as ffi;
use std::cell::Cell;
use std::ffi::{c_char, c_int, c_uint, c_void, CStr};
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

/// One connection's guard: its statement deadline, and when its statement started.
struct Guard {
    /// How long one statement may run.
    limit: Duration,
    /// When the running statement started (set by SQLite's trace callback).
    started: Cell<Option<Instant>>,
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
        ffi::sqlite3_set_authorizer(db, Some(authorize), std::ptr::null_mut());
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
    _user: *mut c_void,
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
    let allowed = match action {
        ffi::SQLITE_ATTACH | ffi::SQLITE_DETACH => false,
        ffi::SQLITE_PRAGMA => {
            let name = text(first).unwrap_or_default().to_ascii_lowercase();
            pragma_allowed(&name, second.is_null())
        }
        ffi::SQLITE_FUNCTION => {
            text(second).is_none_or(|name| !name.eq_ignore_ascii_case("load_extension"))
        }
        _ => true,
    };
    if allowed {
        ffi::SQLITE_OK
    } else {
        ffi::SQLITE_DENY
    }
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
