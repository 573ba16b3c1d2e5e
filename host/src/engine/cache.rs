//! The compile cache: machine code for components, kept on disk so a restart does
//! not recompile.
//!
//! An entry's name is the SHA-256 of the component's bytes plus a hash of everything
//! about the engine that compiled code depends on (wasmtime version, target, settings),
//! so a changed component or a changed engine simply misses. Entries are written to a
//! temporary file and renamed into place: a crash mid-write never leaves a torn entry.
//! An entry that fails to load is treated as a miss and overwritten.

use sha2::{Digest, Sha256};
use std::path::Path;
#[cfg(feature = "compiler")]
use {
    super::LoadedComponent,
    anyhow::{Context, Result},
    std::hash::{Hash, Hasher},
    std::path::PathBuf,
    wasmtime::component::Component,
};

/// A directory of compiled components for one engine configuration (a node that
/// cannot compile keeps none).
#[cfg(feature = "compiler")]
#[derive(Clone)]
pub struct CompileCache {
    dir: PathBuf,
    engine_key: String,
}

#[cfg(feature = "compiler")]
impl CompileCache {
    /// Opens (creating if needed) the cache in `dir` for `engine`.
    pub fn open(dir: &Path, engine: &wasmtime::Engine) -> Result<CompileCache> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the compile cache {}", dir.display()))?;
        // DefaultHasher::new() has fixed keys: the same engine settings give the same
        // key in every process built from this source.
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Ok(CompileCache {
            dir: dir.to_path_buf(),
            engine_key: format!("{:016x}", hasher.finish()),
        })
    }

    /// The compiled form of `wasm`, from the cache or freshly compiled (and stored).
    pub fn load_or_compile(
        &self,
        engine: &wasmtime::Engine,
        wasm: &[u8],
    ) -> Result<LoadedComponent> {
        let digest = digest(wasm);
        let entry = self.dir.join(format!("{digest}-{}.cwasm", self.engine_key));
        if entry.is_file() {
            // SAFETY: entries are written only by this cache, from wasmtime's own
            // output, into the host's data dir; the key includes the engine hash.
            match unsafe { Component::deserialize_file(engine, &entry) } {
                Ok(component) => {
                    return Ok(LoadedComponent {
                        component,
                        digest,
                        precompiled: true,
                    })
                }
                Err(err) => tracing::warn!(
                    entry = %entry.display(),
                    error = %err,
                    "compile cache entry unusable; recompiling"
                ),
            }
        }
        let compiled = engine
            .precompile_component(wasm)
            .map_err(anyhow::Error::from)
            .context("compiling the component")?;
        if let Err(err) = write_atomically(&entry, &compiled) {
            // A read-only cache costs compile time, not correctness.
            tracing::warn!(entry = %entry.display(), error = %err, "cannot write compile cache entry");
        }
        // SAFETY: `compiled` was produced by this engine a moment ago.
        let component = unsafe { Component::deserialize(engine, &compiled) }
            .map_err(anyhow::Error::from)
            .context("loading freshly compiled code")?;
        Ok(LoadedComponent {
            component,
            digest,
            precompiled: false,
        })
    }
}

/// Hex SHA-256 of `bytes`.
pub fn digest(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Writes `bytes` to `path` through a temporary file in the same directory, so readers
/// see either no file or the whole file.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}
