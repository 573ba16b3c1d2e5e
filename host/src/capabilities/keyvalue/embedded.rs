//! The embedded key-value store: one SQLite file per module,
//! `<data_dir>/keyvalue/<module>.sqlite`, one table holding every bucket of the module.
//! Durable, in this process, for a module that runs on one node.

use anyhow::{Context, Result};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};
use std::path::Path;
use std::time::Duration;

/// Connections one module's store keeps.
const POOL: u32 = 4;
/// How long a writer waits for another's lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// One module's embedded store.
#[derive(Clone)]
pub struct EmbeddedStore {
    pool: SqlitePool,
}

/// Sets one key of one bucket, whether it was there or not.
const UPSERT: &str = "INSERT INTO modhost_keyvalue (bucket, key, value) VALUES (?1, ?2, ?3) \
                      ON CONFLICT (bucket, key) DO UPDATE SET value = excluded.value";

/// What a store operation can fail with, before it is told to the module.
pub type Failed = String;

impl EmbeddedStore {
    /// Opens (creating if needed) `module`'s store under `data_dir`.
    pub async fn open(module: &str, data_dir: &Path) -> Result<EmbeddedStore> {
        let dir = data_dir.join("keyvalue");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let file = dir.join(format!("{module}.sqlite"));
        let options = SqliteConnectOptions::new()
            .filename(&file)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(BUSY_TIMEOUT);
        let pool = SqlitePoolOptions::new()
            .max_connections(POOL)
            .connect_with(options)
            .await
            .with_context(|| format!("opening {}", file.display()))?;
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS modhost_keyvalue (bucket TEXT NOT NULL, key TEXT NOT NULL, \
             value BLOB NOT NULL, PRIMARY KEY (bucket, key)) WITHOUT ROWID",
        )
        .execute(&pool)
        .await
        .with_context(|| format!("creating the store in {}", file.display()))?;
        Ok(EmbeddedStore { pool })
    }

    /// The value of `key` in `bucket`, if any.
    pub async fn get(&self, bucket: &str, key: &str) -> Result<Option<Vec<u8>>, Failed> {
        sqlx::query_scalar("SELECT value FROM modhost_keyvalue WHERE bucket = ?1 AND key = ?2")
            .bind(bucket)
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(failed)
    }

    /// Sets `key` in `bucket` to `value`.
    pub async fn set(&self, bucket: &str, key: &str, value: &[u8]) -> Result<(), Failed> {
        sqlx::query(UPSERT)
            .bind(bucket)
            .bind(key)
            .bind(value)
            .execute(&self.pool)
            .await
            .map(drop)
            .map_err(failed)
    }

    /// Removes `keys` from `bucket` (those that are not there are no error).
    pub async fn delete(&self, bucket: &str, keys: &[String]) -> Result<(), Failed> {
        let mut tx = self.pool.begin().await.map_err(failed)?;
        for key in keys {
            sqlx::query("DELETE FROM modhost_keyvalue WHERE bucket = ?1 AND key = ?2")
                .bind(bucket)
                .bind(key)
                .execute(&mut *tx)
                .await
                .map_err(failed)?;
        }
        tx.commit().await.map_err(failed)
    }

    /// Sets every pair of `pairs` in `bucket`, all or none.
    pub async fn set_many(&self, bucket: &str, pairs: &[(String, Vec<u8>)]) -> Result<(), Failed> {
        let mut tx = self.pool.begin().await.map_err(failed)?;
        for (key, value) in pairs {
            sqlx::query(UPSERT)
                .bind(bucket)
                .bind(key)
                .bind(value)
                .execute(&mut *tx)
                .await
                .map_err(failed)?;
        }
        tx.commit().await.map_err(failed)
    }

    /// The keys of `bucket` from position `from`, at most `page`, and the position of
    /// the next page if there is one.
    pub async fn list(
        &self,
        bucket: &str,
        from: u64,
        page: u32,
    ) -> Result<(Vec<String>, Option<u64>), Failed> {
        let rows = sqlx::query(
            "SELECT key FROM modhost_keyvalue WHERE bucket = ?1 ORDER BY key LIMIT ?2 OFFSET ?3",
        )
        .bind(bucket)
        .bind(i64::from(page) + 1)
        .bind(i64::try_from(from).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(failed)?;
        let mut keys: Vec<String> = rows
            .iter()
            .map(|row| row.try_get::<String, _>(0))
            .collect::<Result<_, _>>()
            .map_err(failed)?;
        let next = (keys.len() > page as usize).then(|| from + u64::from(page));
        keys.truncate(page as usize);
        Ok((keys, next))
    }

    /// Adds `delta` to the decimal number stored at `key` (0 when absent), atomically.
    pub async fn increment(&self, bucket: &str, key: &str, delta: u64) -> Result<u64, Failed> {
        // IMMEDIATE takes the write lock first: two increments never read the same value.
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(failed)?;
        let current: Option<Vec<u8>> =
            sqlx::query_scalar("SELECT value FROM modhost_keyvalue WHERE bucket = ?1 AND key = ?2")
                .bind(bucket)
                .bind(key)
                .fetch_optional(&mut *tx)
                .await
                .map_err(failed)?;
        let next = super::counter(current.as_deref())?
            .checked_add(delta)
            .ok_or_else(|| "incrementing overflows the counter".to_string())?;
        sqlx::query(UPSERT)
            .bind(bucket)
            .bind(key)
            .bind(next.to_string().into_bytes())
            .execute(&mut *tx)
            .await
            .map_err(failed)?;
        tx.commit().await.map_err(failed)?;
        Ok(next)
    }
}

fn failed(error: sqlx::Error) -> Failed {
    format!("the key-value store failed: {error}")
}
