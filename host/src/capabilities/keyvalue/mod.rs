//! `wasi:keyvalue`: buckets of keys and values a module keeps between requests (the
//! standard WIT, `wit/wasi/keyvalue`: `store`, `atomics`, `batch`).
//!
//! Lifecycle, like every capability ([`KeyValue`]):
//! - **link** the three interfaces once;
//! - **configure**: a version that imports `wasi:keyvalue` while its module may open
//!   no bucket (`keyvalue = [...]` under `[modules.NAME]`) is refused — deny by default;
//! - **open** the module's store: by default a SQLite file of its own under the data
//!   dir ([`embedded`]); with `[keyvalue] backend = "redis"`, the deployment's Redis
//!   server, shared by the nodes, under names only the host makes ([`redis`]);
//! - **prepare** each instance with a handle to its module's buckets, nothing more.
//!
//! A module opens a bucket by its name; a name it was not granted is `access-denied`.
//! Whatever a module asks, the host bounds it: keys of at most [`MAX_KEY`] bytes,
//! values of at most `[keyvalue] max_value`, at most [`MAX_BATCH`] keys per batch or
//! page, and every operation within the module's timeout.

pub mod embedded;
pub mod redis;
pub mod settings;

use anyhow::Result;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use wasmtime::component::{HasSelf, Linker, Resource};

use super::{Capability, Components, InstanceState, OpenContext, StateMap, VersionContext};
use crate::deployment::{ConfigError, ConfigErrors, Deployment};
use crate::runtime::BoxFuture;
use embedded::{EmbeddedStore, Failed};
use redis::RedisStore;
use settings::Backend;

/// Host bindings of `wasi:keyvalue`, generated from its WIT (`wit/wasi/keyvalue`,
/// which documents them).
#[allow(missing_docs)]
pub mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit/wasi/keyvalue",
        world: "wasi:keyvalue/imports",
        imports: { default: async | trappable },
        with: { "wasi:keyvalue/store.bucket": super::Bucket },
    });
}

use bindings::wasi::keyvalue::store::{Error, KeyResponse};
use bindings::wasi::keyvalue::{atomics, batch, store};

/// The longest key, in bytes.
pub const MAX_KEY: usize = 1024;
/// The most keys one batch names, and one page of `list-keys` returns.
pub const MAX_BATCH: usize = 1000;

/// The `wasi:keyvalue` capability.
#[derive(Default)]
pub struct KeyValue {
    /// The node's one connection to Redis, made when the first module opens.
    redis: tokio::sync::OnceCell<::redis::aio::ConnectionManager>,
}

/// An open bucket, as a module holds it.
pub struct Bucket {
    name: String,
}

/// A module's buckets: the ones it may open, and where they are kept.
pub struct ModuleBuckets {
    module: String,
    granted: BTreeSet<String>,
    store: Store,
    max_value: usize,
    timeout: Duration,
}

enum Store {
    Embedded(EmbeddedStore),
    Redis(RedisStore),
}

/// An instance's handle to its module's buckets.
struct KeyValueSlice(Arc<ModuleBuckets>);

/// The interfaces, as modules import them.
const INTERFACE: &str = "wasi:keyvalue/store@0.2.0-draft";

impl Capability for KeyValue {
    fn name(&self) -> &'static str {
        "wasi:keyvalue"
    }

    fn module_keys(&self) -> &'static [&'static str] {
        &["keyvalue"]
    }

    fn sections(&self) -> &'static [&'static str] {
        &["keyvalue"]
    }

    fn validate(&self, deployment: &Deployment) -> Vec<ConfigError> {
        settings::validate(deployment)
    }

    fn link(&self, linker: &mut Linker<InstanceState>, _: &Components<'_>) -> Result<()> {
        store::add_to_linker::<InstanceState, HasSelf<InstanceState>>(linker, |state| state)?;
        atomics::add_to_linker::<InstanceState, HasSelf<InstanceState>>(linker, |state| state)?;
        batch::add_to_linker::<InstanceState, HasSelf<InstanceState>>(linker, |state| state)?;
        Ok(())
    }

    fn configure(&self, version: &VersionContext<'_>, _: &mut StateMap) -> Result<()> {
        let granted = settings::buckets(version.deployment, version.spec).map_err(config)?;
        if version.imports("wasi:keyvalue/") && granted.is_empty() {
            anyhow::bail!(
                "{} imports {INTERFACE} but the module may open no bucket: list its buckets in \
                 `keyvalue = [...]` under [modules.{}]",
                version.path.display(),
                version.spec.name
            );
        }
        Ok(())
    }

    fn open<'a>(
        &'a self,
        module: OpenContext<'a>,
        state: &'a mut StateMap,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let (deployment, spec) = (module.deployment, module.spec);
            let granted = settings::buckets(deployment, spec).map_err(config)?;
            if granted.is_empty() {
                return Ok(());
            }
            let settings = settings::store(deployment).map_err(config)?;
            let store = match &settings.backend {
                Backend::Embedded => {
                    Store::Embedded(EmbeddedStore::open(&spec.name, &deployment.data_dir).await?)
                }
                Backend::Redis { url } => {
                    let connection = self
                        .redis
                        .get_or_try_init(|| redis::connect(url))
                        .await?
                        .clone();
                    Store::Redis(RedisStore::new(
                        connection,
                        &deployment.app_name,
                        &spec.name,
                    ))
                }
            };
            tracing::info!(
                module = %spec.name,
                backend = match settings.backend { Backend::Embedded => "embedded", Backend::Redis { .. } => "redis" },
                buckets = ?granted,
                "key-value buckets ready"
            );
            state.insert(ModuleBuckets {
                module: spec.name.clone(),
                granted,
                store,
                max_value: usize::try_from(settings.max_value.bytes()).unwrap_or(usize::MAX),
                timeout: spec.limits.timeout.duration(),
            });
            Ok(())
        })
    }

    fn prepare(&self, instance: &mut InstanceState, module: &StateMap, _: &StateMap) {
        if let Some(buckets) = module.get_arc::<ModuleBuckets>() {
            instance.slices.insert(KeyValueSlice(buckets));
        }
    }
}

/// Configuration problems, as one error (they were reported in full at validation).
fn config(errors: Vec<ConfigError>) -> anyhow::Error {
    anyhow::Error::new(ConfigErrors(errors))
}

/// The decimal counter stored in `value` (0 when there is none).
fn counter(value: Option<&[u8]>) -> Result<u64, Failed> {
    let Some(value) = value else { return Ok(0) };
    std::str::from_utf8(value)
        .ok()
        .and_then(|text| text.parse::<u64>().ok())
        .ok_or_else(|| "the value is not a decimal counter".to_string())
}

impl ModuleBuckets {
    /// Runs `operation` within the module's timeout, telling its failure as the WIT's.
    async fn bounded<T>(
        &self,
        operation: impl std::future::Future<Output = Result<T, Failed>>,
    ) -> Result<T, Error> {
        match tokio::time::timeout(self.timeout, operation).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(failed)) => Err(Error::Other(failed)),
            Err(_) => Err(Error::Other(format!(
                "the key-value store did not answer within the module's timeout of {:?}",
                self.timeout
            ))),
        }
    }

    fn check_key(key: &str) -> Result<(), Error> {
        if key.len() > MAX_KEY {
            return Err(Error::Other(format!(
                "a key is at most {MAX_KEY} bytes; this one is {}",
                key.len()
            )));
        }
        Ok(())
    }

    fn check_value(&self, value: &[u8]) -> Result<(), Error> {
        if value.len() > self.max_value {
            return Err(Error::Other(format!(
                "a value is at most {} bytes ([keyvalue] max_value); this one is {}",
                self.max_value,
                value.len()
            )));
        }
        Ok(())
    }

    fn check_batch(len: usize) -> Result<(), Error> {
        if len > MAX_BATCH {
            return Err(Error::Other(format!(
                "a batch names at most {MAX_BATCH} keys; this one names {len}"
            )));
        }
        Ok(())
    }

    async fn get(&self, bucket: &str, key: &str) -> Result<Option<Vec<u8>>, Error> {
        Self::check_key(key)?;
        self.bounded(async {
            match &self.store {
                Store::Embedded(store) => store.get(bucket, key).await,
                Store::Redis(store) => store.get(bucket, key).await,
            }
        })
        .await
    }

    async fn set(&self, bucket: &str, key: &str, value: &[u8]) -> Result<(), Error> {
        Self::check_key(key)?;
        self.check_value(value)?;
        self.bounded(async {
            match &self.store {
                Store::Embedded(store) => store.set(bucket, key, value).await,
                Store::Redis(store) => store.set(bucket, key, value).await,
            }
        })
        .await
    }

    async fn delete(&self, bucket: &str, keys: &[String]) -> Result<(), Error> {
        Self::check_batch(keys.len())?;
        keys.iter().try_for_each(|key| Self::check_key(key))?;
        self.bounded(async {
            match &self.store {
                Store::Embedded(store) => store.delete(bucket, keys).await,
                Store::Redis(store) => store.delete(bucket, keys).await,
            }
        })
        .await
    }

    async fn exists(&self, bucket: &str, key: &str) -> Result<bool, Error> {
        Self::check_key(key)?;
        self.bounded(async {
            match &self.store {
                Store::Embedded(store) => store.get(bucket, key).await.map(|v| v.is_some()),
                Store::Redis(store) => store.exists(bucket, key).await,
            }
        })
        .await
    }

    async fn list(&self, bucket: &str, cursor: Option<u64>) -> Result<KeyResponse, Error> {
        let page = MAX_BATCH as u32;
        let (keys, cursor) = self
            .bounded(async {
                match &self.store {
                    Store::Embedded(store) => store.list(bucket, cursor.unwrap_or(0), page).await,
                    Store::Redis(store) => store.list(bucket, cursor.unwrap_or(0), page).await,
                }
            })
            .await?;
        Ok(KeyResponse { keys, cursor })
    }

    async fn increment(&self, bucket: &str, key: &str, delta: u64) -> Result<u64, Error> {
        Self::check_key(key)?;
        self.bounded(async {
            match &self.store {
                Store::Embedded(store) => store.increment(bucket, key, delta).await,
                Store::Redis(store) => store.increment(bucket, key, delta).await,
            }
        })
        .await
    }

    async fn get_many(
        &self,
        bucket: &str,
        keys: Vec<String>,
    ) -> Result<Vec<Option<(String, Vec<u8>)>>, Error> {
        Self::check_batch(keys.len())?;
        keys.iter().try_for_each(|key| Self::check_key(key))?;
        let values = self
            .bounded(async {
                match &self.store {
                    Store::Embedded(store) => {
                        let mut values = Vec::with_capacity(keys.len());
                        for key in &keys {
                            values.push(store.get(bucket, key).await?);
                        }
                        Ok(values)
                    }
                    Store::Redis(store) => store.get_many(bucket, &keys).await,
                }
            })
            .await?;
        Ok(keys
            .into_iter()
            .zip(values)
            .map(|(key, value)| value.map(|value| (key, value)))
            .collect())
    }

    async fn set_many(&self, bucket: &str, pairs: Vec<(String, Vec<u8>)>) -> Result<(), Error> {
        Self::check_batch(pairs.len())?;
        for (key, value) in &pairs {
            Self::check_key(key)?;
            self.check_value(value)?;
        }
        self.bounded(async {
            match &self.store {
                Store::Embedded(store) => store.set_many(bucket, &pairs).await,
                Store::Redis(store) => store.set_many(bucket, &pairs).await,
            }
        })
        .await
    }
}

impl InstanceState {
    /// The module's buckets; a module without any cannot get here, as it is refused at
    /// load, so this is a trap, not an error value.
    fn buckets(&self) -> wasmtime::Result<Arc<ModuleBuckets>> {
        self.slice::<KeyValueSlice>()
            .map(|KeyValueSlice(buckets)| buckets.clone())
            .ok_or_else(|| {
                wasmtime::format_err!("module {} has no key-value buckets", self.module())
            })
    }

    /// The bucket behind `bucket`, and the module's buckets.
    fn bucket(&self, bucket: &Resource<Bucket>) -> wasmtime::Result<(Arc<ModuleBuckets>, String)> {
        let name = self.table.get(bucket)?.name.clone();
        Ok((self.buckets()?, name))
    }
}

impl store::Host for InstanceState {
    async fn open(
        &mut self,
        identifier: String,
    ) -> wasmtime::Result<Result<Resource<Bucket>, Error>> {
        let buckets = self.buckets()?;
        if !buckets.granted.contains(&identifier) {
            tracing::debug!(module = %buckets.module, bucket = %identifier, "key-value: refused a bucket the module was not granted");
            return Ok(Err(Error::AccessDenied));
        }
        Ok(Ok(self.table.push(Bucket { name: identifier })?))
    }
}

impl store::HostBucket for InstanceState {
    async fn get(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, Error>> {
        let (buckets, name) = self.bucket(&bucket)?;
        Ok(buckets.get(&name, &key).await)
    }

    async fn set(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), Error>> {
        let (buckets, name) = self.bucket(&bucket)?;
        Ok(buckets.set(&name, &key, &value).await)
    }

    async fn delete(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
    ) -> wasmtime::Result<Result<(), Error>> {
        let (buckets, name) = self.bucket(&bucket)?;
        Ok(buckets.delete(&name, &[key]).await)
    }

    async fn exists(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
    ) -> wasmtime::Result<Result<bool, Error>> {
        let (buckets, name) = self.bucket(&bucket)?;
        Ok(buckets.exists(&name, &key).await)
    }

    async fn list_keys(
        &mut self,
        bucket: Resource<Bucket>,
        cursor: Option<u64>,
    ) -> wasmtime::Result<Result<KeyResponse, Error>> {
        let (buckets, name) = self.bucket(&bucket)?;
        Ok(buckets.list(&name, cursor).await)
    }

    async fn drop(&mut self, bucket: Resource<Bucket>) -> wasmtime::Result<()> {
        self.table.delete(bucket)?;
        Ok(())
    }
}

impl atomics::Host for InstanceState {
    async fn increment(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        delta: u64,
    ) -> wasmtime::Result<Result<u64, Error>> {
        let (buckets, name) = self.bucket(&bucket)?;
        Ok(buckets.increment(&name, &key, delta).await)
    }
}

impl batch::Host for InstanceState {
    async fn get_many(
        &mut self,
        bucket: Resource<Bucket>,
        keys: Vec<String>,
    ) -> wasmtime::Result<Result<Vec<Option<(String, Vec<u8>)>>, Error>> {
        let (buckets, name) = self.bucket(&bucket)?;
        Ok(buckets.get_many(&name, keys).await)
    }

    async fn set_many(
        &mut self,
        bucket: Resource<Bucket>,
        key_values: Vec<(String, Vec<u8>)>,
    ) -> wasmtime::Result<Result<(), Error>> {
        let (buckets, name) = self.bucket(&bucket)?;
        Ok(buckets.set_many(&name, key_values).await)
    }

    async fn delete_many(
        &mut self,
        bucket: Resource<Bucket>,
        keys: Vec<String>,
    ) -> wasmtime::Result<Result<(), Error>> {
        let (buckets, name) = self.bucket(&bucket)?;
        Ok(buckets.delete(&name, &keys).await)
    }
}
