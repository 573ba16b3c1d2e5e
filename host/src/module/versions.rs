//! Which version of each module serves, remembered across restarts.
//!
//! A swap, promotion or rollback writes `<data_dir>/versions/<module>.json`: the serving
//! version's component (swapped-in components are kept under
//! `<data_dir>/components/<digest>.<ext>`, so the file a swap came from may go away) and
//! the digest of the component the deployment file named at the time. At start, a
//! module serves its remembered version — unless the deployment's own component has
//! changed since (a new build, an edited file): then that is the newer intent, and wins.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

use crate::engine::cache::{digest, write_atomically};

/// The remembered versions of a node's modules.
#[derive(Debug, Clone)]
pub struct VersionStore {
    versions: PathBuf,
    components: PathBuf,
}

#[derive(Debug, Serialize, Deserialize)]
struct Record {
    /// The serving version's component file.
    serving: PathBuf,
    /// Hex SHA-256 of the deployment file's component when this was recorded.
    base_digest: String,
}

impl VersionStore {
    /// The store under `data_dir`.
    pub fn new(data_dir: &Path) -> VersionStore {
        VersionStore {
            versions: data_dir.join("versions"),
            components: data_dir.join("components"),
        }
    }

    /// The remembered serving version of `module`, if there is one, its file still
    /// exists, and the deployment's component (`base`) has not changed since.
    pub fn promoted(&self, module: &str, base: &Path) -> Option<PathBuf> {
        let text = std::fs::read_to_string(self.record_file(module)).ok()?;
        let record: Record = serde_json::from_str(&text).ok()?;
        let base_now = std::fs::read(base).map(|bytes| digest(&bytes)).ok()?;
        if base_now != record.base_digest {
            tracing::info!(
                module,
                "the deployment's component changed since the last swap: serving it"
            );
            return None;
        }
        record.serving.is_file().then_some(record.serving)
    }

    /// Copies the component at `source` into the store, named by its digest, and
    /// returns the copy: a swapped-in version outlives the file it came from.
    pub fn keep(&self, source: &Path) -> Result<PathBuf> {
        let bytes =
            std::fs::read(source).with_context(|| format!("reading {}", source.display()))?;
        let extension = source
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("wasm");
        self.keep_bytes(&bytes, extension)
    }

    /// Stores component `bytes` (a `.wasm` or `.cwasm`, as `extension` says), named by
    /// their digest, and returns the file.
    pub fn keep_bytes(&self, bytes: &[u8], extension: &str) -> Result<PathBuf> {
        std::fs::create_dir_all(&self.components)
            .with_context(|| format!("creating {}", self.components.display()))?;
        let kept = self
            .components
            .join(format!("{}.{extension}", digest(bytes)));
        if !kept.is_file() {
            write_atomically(&kept, bytes)
                .with_context(|| format!("writing {}", kept.display()))?;
        }
        Ok(kept)
    }

    /// Remembers that `module` serves the component at `serving`; `base` is the
    /// component the deployment file names.
    pub fn record(&self, module: &str, serving: &Path, base: &Path) -> Result<()> {
        let base_digest = std::fs::read(base)
            .map(|bytes| digest(&bytes))
            .with_context(|| format!("reading {}", base.display()))?;
        let record = Record {
            serving: serving.to_path_buf(),
            base_digest,
        };
        std::fs::create_dir_all(&self.versions)
            .with_context(|| format!("creating {}", self.versions.display()))?;
        let file = self.record_file(module);
        write_atomically(&file, serde_json::to_string_pretty(&record)?.as_bytes())
            .with_context(|| format!("writing {}", file.display()))
    }

    fn record_file(&self, module: &str) -> PathBuf {
        self.versions.join(format!("{module}.json"))
    }
}
