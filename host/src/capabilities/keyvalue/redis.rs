//! The Redis key-value store, shared by every node of a deployment.
//!
//! Every key the host writes for a module is named
//! `modhost:<app>:<module>:<bucket>:<key>`: the host makes the name, the module gives
//! only the bucket (checked against its grants) and the key, so a module reaches its
//! own buckets and nothing else. (Neither module nor bucket names may contain `:`.)
//! Listing keys scans only the module's bucket's names.

use anyhow::{Context, Result};
use redis::aio::ConnectionManager;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::embedded::Failed;

/// How long connecting to Redis may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// A connection to the deployment's Redis server, shared by the node's modules.
pub async fn connect(url: &str) -> Result<ConnectionManager> {
    let client = redis::Client::open(url).with_context(|| "the key-value store's url")?;
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_number_of_retries(2);
    tokio::time::timeout(
        CONNECT_TIMEOUT * 2,
        ConnectionManager::new_with_config(client, config),
    )
    .await
    .map_err(|_| {
        anyhow::anyhow!("no connection to the key-value store within {CONNECT_TIMEOUT:?}")
    })?
    .context("connecting to the key-value store")
}

/// One module's buckets on the shared server.
#[derive(Clone)]
pub struct RedisStore {
    connection: ConnectionManager,
    /// `modhost:<app>:<module>:`
    prefix: String,
    /// Keys a `SCAN` returned past a page's limit, for the pages after.
    overflow: Arc<Mutex<Overflow>>,
}

/// Listing pages that a `SCAN` overfilled, by the cursor handed out for them.
///
/// `SCAN`'s `COUNT` is a hint: while Redis grows a table it visits both, and one call
/// can return more keys than asked. A page never holds more than its limit, so the
/// rest waits here under a cursor of its own (top bit set: a Redis cursor never has
/// it) until the module asks for the next page. At most [`Overflow::KEPT`] wait at
/// once; a listing abandoned longer than that loses its place and says so.
#[derive(Default)]
struct Overflow {
    /// By cursor: the keys left over, and the Redis cursor to go on from after them.
    waiting: BTreeMap<u64, (Vec<String>, u64)>,
    next: u64,
}

impl Overflow {
    const KEPT: usize = 64;
    const MARK: u64 = 1 << 63;

    /// Keeps `keys` (then Redis cursor `then`) for a later page; its cursor.
    fn keep(&mut self, keys: Vec<String>, then: u64) -> u64 {
        while self.waiting.len() >= Overflow::KEPT {
            self.waiting.pop_first();
        }
        self.next = self.next.wrapping_add(1);
        let cursor = Overflow::MARK | (self.next & !Overflow::MARK);
        self.waiting.insert(cursor, (keys, then));
        cursor
    }
}

/// `keys` cut to `limit`, the rest kept in `overflow` under the cursor returned; the
/// cursor of the next page (none when the listing is over).
fn page_of(
    mut keys: Vec<String>,
    then: u64,
    limit: usize,
    overflow: &Mutex<Overflow>,
) -> (Vec<String>, Option<u64>) {
    if keys.len() <= limit {
        return (keys, (then != 0).then_some(then));
    }
    let rest = keys.split_off(limit);
    let cursor = overflow
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .keep(rest, then);
    (keys, Some(cursor))
}

impl RedisStore {
    /// `module`'s buckets (of app `app`) over `connection`.
    pub fn new(connection: ConnectionManager, app: &str, module: &str) -> RedisStore {
        RedisStore {
            connection,
            prefix: format!("modhost:{app}:{module}:"),
            overflow: Arc::default(),
        }
    }

    fn name(&self, bucket: &str, key: &str) -> String {
        format!("{}{bucket}:{key}", self.prefix)
    }

    async fn run<T: redis::FromRedisValue>(&self, command: &redis::Cmd) -> Result<T, Failed> {
        let mut connection = self.connection.clone();
        command
            .query_async(&mut connection)
            .await
            .map_err(|error| format!("the key-value store failed: {error}"))
    }

    /// The value of `key` in `bucket`, if any.
    pub async fn get(&self, bucket: &str, key: &str) -> Result<Option<Vec<u8>>, Failed> {
        self.run(redis::cmd("GET").arg(self.name(bucket, key)))
            .await
    }

    /// Sets `key` in `bucket` to `value`.
    pub async fn set(&self, bucket: &str, key: &str, value: &[u8]) -> Result<(), Failed> {
        self.run(redis::cmd("SET").arg(self.name(bucket, key)).arg(value))
            .await
    }

    /// Removes `keys` from `bucket`.
    pub async fn delete(&self, bucket: &str, keys: &[String]) -> Result<(), Failed> {
        if keys.is_empty() {
            return Ok(());
        }
        let mut command = redis::cmd("DEL");
        for key in keys {
            command.arg(self.name(bucket, key));
        }
        self.run::<i64>(&command).await.map(drop)
    }

    /// Whether `key` is in `bucket`.
    pub async fn exists(&self, bucket: &str, key: &str) -> Result<bool, Failed> {
        let found: i64 = self
            .run(redis::cmd("EXISTS").arg(self.name(bucket, key)))
            .await?;
        Ok(found > 0)
    }

    /// The values of `keys` in `bucket`, in order.
    pub async fn get_many(
        &self,
        bucket: &str,
        keys: &[String],
    ) -> Result<Vec<Option<Vec<u8>>>, Failed> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut command = redis::cmd("MGET");
        for key in keys {
            command.arg(self.name(bucket, key));
        }
        self.run(&command).await
    }

    /// Sets every pair of `pairs` in `bucket`, all at once.
    pub async fn set_many(&self, bucket: &str, pairs: &[(String, Vec<u8>)]) -> Result<(), Failed> {
        if pairs.is_empty() {
            return Ok(());
        }
        let mut command = redis::cmd("MSET");
        for (key, value) in pairs {
            command.arg(self.name(bucket, key)).arg(value.as_slice());
        }
        self.run(&command).await
    }

    /// One page of `bucket`'s keys from scan position `cursor` (at most `page` of
    /// them), and the position of the next page if the scan is not over.
    pub async fn list(
        &self,
        bucket: &str,
        cursor: u64,
        page: u32,
    ) -> Result<(Vec<String>, Option<u64>), Failed> {
        let limit = page as usize;
        if cursor & Overflow::MARK != 0 {
            let kept = self
                .overflow
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .waiting
                .remove(&cursor);
            let Some((keys, then)) = kept else {
                return Err(
                    "this listing's cursor has expired (too many listings left unfinished); \
                     list again from the start"
                        .to_string(),
                );
            };
            return Ok(page_of(keys, then, limit, &self.overflow));
        }
        let prefix = format!("{}{bucket}:", self.prefix);
        let pattern = format!("{}*", escape_glob(&prefix));
        let (next, names): (u64, Vec<String>) = self
            .run(
                redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(pattern)
                    .arg("COUNT")
                    .arg(page),
            )
            .await?;
        let keys = names
            .into_iter()
            .filter_map(|name| name.strip_prefix(&prefix).map(str::to_string))
            .collect();
        Ok(page_of(keys, next, limit, &self.overflow))
    }

    /// Adds `delta` to the number at `key` in `bucket` (0 when absent), atomically.
    pub async fn increment(&self, bucket: &str, key: &str, delta: u64) -> Result<u64, Failed> {
        let delta = i64::try_from(delta)
            .map_err(|_| "the store's counters hold at most 2^63-1".to_string())?;
        let value: i64 = self
            .run(redis::cmd("INCRBY").arg(self.name(bucket, key)).arg(delta))
            .await?;
        u64::try_from(value).map_err(|_| format!("the counter at {key:?} is negative"))
    }
}

/// `text` with Redis glob characters escaped, to match it literally.
fn escape_glob(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\' | '^' | '-') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_characters_match_literally() {
        assert_eq!(escape_glob("modhost:a*b:m:"), "modhost:a\\*b:m:");
        assert_eq!(escape_glob("x[1]?"), "x\\[1\\]\\?");
    }

    #[test]
    fn an_overfilled_scan_is_paged_out_without_losing_a_key() {
        let overflow = Mutex::new(Overflow::default());
        let keys: Vec<String> = (0..2500).map(|i| format!("k{i}")).collect();
        // One SCAN answered 2500 keys (then Redis cursor 77) for pages of 1000.
        let (first, cursor) = page_of(keys.clone(), 77, 1000, &overflow);
        assert_eq!(first.len(), 1000);
        let cursor = cursor.unwrap();
        assert_ne!(cursor & Overflow::MARK, 0, "a cursor of the host's own");
        let (rest, then) = overflow.lock().unwrap().waiting.remove(&cursor).unwrap();
        let (second, cursor) = page_of(rest, then, 1000, &overflow);
        let (rest, then) = overflow
            .lock()
            .unwrap()
            .waiting
            .remove(&cursor.unwrap())
            .unwrap();
        let (third, cursor) = page_of(rest, then, 1000, &overflow);
        assert_eq!((second.len(), third.len()), (1000, 500));
        assert_eq!(cursor, Some(77), "then on with Redis's cursor");
        let all: Vec<String> = [first, second, third].concat();
        assert_eq!(all, keys);
        // A scan that ended: no cursor.
        assert_eq!(page_of(vec!["a".into()], 0, 1000, &overflow).1, None);
        // Listings left unfinished are kept up to a bound, oldest dropped first.
        let cursors: Vec<u64> = (0..Overflow::KEPT + 1)
            .map(|_| {
                page_of(vec!["a".into(), "b".into()], 5, 1, &overflow)
                    .1
                    .unwrap()
            })
            .collect();
        let waiting = &overflow.lock().unwrap().waiting;
        assert_eq!(waiting.len(), Overflow::KEPT);
        assert!(!waiting.contains_key(&cursors[0]));
        assert!(waiting.contains_key(&cursors[Overflow::KEPT]));
    }
}
