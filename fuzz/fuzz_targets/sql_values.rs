//! The SQL value mapping: any row of `modhost:sql` values a module binds is stored and
//! read back as the same values (booleans as integers on SQLite), through a real
//! SQLite database opened as the host opens a module's, guard and all.

#![no_main]

use libfuzzer_sys::fuzz_target;
use modhost::capabilities::sql::{Database, Value};
use modhost::deployment::database::DEFAULT_MAX_RESULT;
use modhost::deployment::{DatabaseBackend, DatabaseSpec, Timeout};
use std::sync::OnceLock;
use std::time::Duration;

struct Fixture {
    runtime: tokio::runtime::Runtime,
    database: Database,
    _dir: tempfile::TempDir,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let spec = DatabaseSpec {
            backend: DatabaseBackend::Sqlite,
            pool: 1,
            acquire_timeout: Timeout(Duration::from_secs(2)),
            max_result: DEFAULT_MAX_RESULT,
            migrations: None,
        };
        let database = runtime
            .block_on(Database::open(
                "fuzz",
                &spec,
                dir.path(),
                Duration::from_secs(5),
            ))
            .unwrap();
        Fixture {
            runtime,
            database,
            _dir: dir,
        }
    })
}

/// Up to eight values read from the fuzzer's bytes: a kind byte, then its content.
fn values(mut data: &[u8]) -> Vec<Value> {
    let mut values = Vec::new();
    while let Some((&kind, rest)) = data.split_first() {
        data = rest;
        let mut take = |n: usize| {
            let n = n.min(data.len());
            let (head, rest) = data.split_at(n);
            data = rest;
            head.to_vec()
        };
        let word = |bytes: Vec<u8>| {
            let mut eight = [0u8; 8];
            eight[..bytes.len()].copy_from_slice(&bytes);
            eight
        };
        values.push(match kind % 6 {
            0 => Value::Null,
            1 => Value::Integer(i64::from_le_bytes(word(take(8)))),
            2 => Value::Real(f64::from_le_bytes(word(take(8)))),
            3 => {
                let len = take(1).first().copied().unwrap_or(0);
                Value::Text(String::from_utf8_lossy(&take(usize::from(len))).into_owned())
            }
            4 => {
                let len = take(1).first().copied().unwrap_or(0);
                Value::Blob(take(usize::from(len)))
            }
            _ => Value::Boolean(take(1).first().is_some_and(|b| b % 2 == 1)),
        });
        if values.len() == 8 {
            break;
        }
    }
    values
}

/// What SQLite gives back for `value`: booleans are integers, and a NaN is stored as
/// NULL.
fn stored(value: &Value) -> Value {
    match value {
        Value::Boolean(b) => Value::Integer(i64::from(*b)),
        Value::Real(x) if x.is_nan() => Value::Null,
        other => other.clone(),
    }
}

fuzz_target!(|data: &[u8]| {
    let values = values(data);
    if values.is_empty() {
        return;
    }
    let fixture = fixture();
    let placeholders: Vec<String> = (1..=values.len()).map(|i| format!("${i}")).collect();
    let statement = format!("SELECT {}", placeholders.join(", "));
    let rows = fixture
        .runtime
        .block_on(fixture.database.query(&statement, values.clone()))
        .expect("bound values are selected back");
    let expected: Vec<Value> = values.iter().map(stored).collect();
    assert_eq!(rows.rows, vec![expected]);
});
