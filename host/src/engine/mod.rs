//! The engines: one wasmtime `Engine` for the whole host's WASI 0.2 modules, configured
//! for serving, and a second, made only when a WASI 0.3 (P3) component loads, with the
//! component model's concurrency on ([`Engine`] says why two). Both are:
//!
//! - **Pooling allocator**: instance slots are reserved up front and reused, so a fresh
//!   instance per request costs microseconds, not a `mmap` per memory.
//! - **Epoch interruption**: a ticker thread advances the engine's epoch every
//!   [`EPOCH_TICK`]; each store gets a deadline in ticks, so a guest stuck in a loop is
//!   interrupted (a trap) instead of holding a worker thread forever.
//! - **Compile cache** ([`cache`]): compiled code is kept on disk keyed by the
//!   component's hash and the engine's settings, so a restart does not recompile.
//!
//! Per-store memory limits live in [`limits`].

pub mod cache;
pub mod limits;

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use wasmtime::component::Component;
use wasmtime::{Config, Enabled, InstanceAllocationStrategy, PoolingAllocationConfig, Precompiled};

#[cfg(not(feature = "compiler"))]
use crate::deployment::build::Part;
use crate::deployment::{ByteSize, Deployment, Instances};

/// How often the epoch advances; deadlines are accurate to about this much.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Bytes of each memory and table an idle pool slot keeps resident (with PAGEMAP_SCAN).
/// Measured: 1 MiB beat 64 KiB, 512 KiB, 1.5 MiB, 2 MiB and 4 MiB for a Rust module.
const KEEP_RESIDENT: usize = 1 << 20;
/// Slots decommitted in one batch, so one TLB flush serves many.
const DECOMMIT_BATCH: usize = 32;

/// Core instances one component instance may hold: a Rust component holds the
/// program and the shims of its canonical-ABI adapters, three or four; a Python one
/// (componentize-py: CPython and its libraries, dynamically linked) fourteen.
pub const CORE_INSTANCES_PER_COMPONENT: u32 = 16;
/// Linear memories one component instance may hold (a Rust component has one).
pub const MEMORIES_PER_COMPONENT: u32 = 2;
/// Tables one component instance may hold (a Rust component has one or two).
pub const TABLES_PER_COMPONENT: u32 = 4;

/// What the pooling allocator must make room for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineSettings {
    /// Component instances alive at once, across all modules.
    pub instances: u32,
    /// Largest linear memory any module may grow to.
    pub max_memory: ByteSize,
}

impl EngineSettings {
    /// Room for every module of this node running at its full concurrency, plus as many idle warm
    /// instances for each module that reuses them, plus headroom for instances still
    /// being torn down. A node of a split deployment makes room for every module of
    /// the deployment, not only those placed on it at start: a new placement may bring
    /// any of them while it runs (the pool is reserved address space, committed as
    /// instances use it).
    pub fn for_deployment(deployment: &Deployment) -> EngineSettings {
        let modules = || {
            deployment
                .modules
                .values()
                .filter(|module| deployment.node.is_some() || deployment.is_local(&module.name))
        };
        let concurrency: u32 = modules()
            .map(|module| match module.instances {
                Instances::Fresh => module.limits.concurrency,
                Instances::Reuse => module.limits.concurrency.saturating_mul(2),
            })
            .fold(0, u32::saturating_add);
        let max_memory = modules()
            .map(|module| module.limits.memory)
            .max()
            .unwrap_or(ByteSize::mib(64));
        EngineSettings {
            instances: concurrency.saturating_add(32),
            max_memory,
        }
    }
}

impl Default for EngineSettings {
    fn default() -> Self {
        EngineSettings {
            instances: 1000,
            max_memory: ByteSize::mib(64),
        }
    }
}

/// A loaded component and where its machine code came from.
pub struct LoadedComponent {
    /// The compiled component, ready to link.
    pub component: Component,
    /// Hex SHA-256 of the component's bytes (of the `.cwasm` for precompiled ones):
    /// the module version's identity.
    pub digest: String,
    /// Whether the machine code came from the compile cache (or a `.cwasm`).
    pub precompiled: bool,
}

/// The host's wasmtime engines with their compile caches.
///
/// Two engines, because the component model's concurrency costs every call: the
/// **serving engine** has it off and runs WASI 0.2 components (every module the
/// project builds); the **concurrent engine** has it on and runs WASI 0.3 (P3)
/// components, whose exports are async-lifted and whose bodies are streams. The
/// concurrent one is made the first time a WASI 0.3 component loads, so a node without
/// one reserves no second pool.
#[derive(Clone)]
pub struct Engine {
    serving: Compiler,
    concurrent: Arc<OnceLock<Compiler>>,
    settings: EngineSettings,
    cache_dir: Option<PathBuf>,
    /// The machine the engines compile for, when it is not this one.
    target: Option<String>,
}

/// One wasmtime engine and its compile cache.
#[derive(Clone)]
struct Compiler {
    engine: wasmtime::Engine,
    #[cfg(feature = "compiler")]
    cache: Option<cache::CompileCache>,
}

impl Compiler {
    fn new(
        settings: EngineSettings,
        concurrency: bool,
        cache_dir: Option<&Path>,
        target: Option<&str>,
    ) -> Result<Self> {
        #[cfg_attr(not(feature = "compiler"), allow(unused_mut))]
        let mut config = wasmtime_config(settings, concurrency);
        if let Some(target) = target {
            #[cfg(feature = "compiler")]
            config
                .target(target)
                .map_err(anyhow::Error::from)
                .with_context(|| format!("{target} is not a target wasmtime knows"))?;
            #[cfg(not(feature = "compiler"))]
            bail!("compiling for {target}: {}", Part::Compiler.missing());
        }
        let engine = wasmtime::Engine::new(&config)
            .map_err(anyhow::Error::from)
            .context("configuring the wasmtime engine")?;
        start_epoch_ticker(&engine);
        // The cache key includes the engine's settings: both engines share the
        // directory without ever taking each other's code.
        #[cfg(feature = "compiler")]
        let cache = cache_dir
            .map(|dir| cache::CompileCache::open(dir, &engine))
            .transpose()?;
        #[cfg(not(feature = "compiler"))]
        let _ = cache_dir;
        Ok(Compiler {
            engine,
            #[cfg(feature = "compiler")]
            cache,
        })
    }
}

impl Engine {
    /// Builds the serving engine and starts its epoch ticker. With a `cache_dir`
    /// (created if needed) compiled components are kept there across restarts.
    pub fn new(settings: EngineSettings, cache_dir: Option<&Path>) -> Result<Engine> {
        Engine::with(settings, cache_dir, None)
    }

    /// Engines with `settings` and `cache_dir`, compiling for `target` (`None`: this
    /// machine); the concurrent one is made when first needed.
    fn with(
        settings: EngineSettings,
        cache_dir: Option<&Path>,
        target: Option<&str>,
    ) -> Result<Engine> {
        Ok(Engine {
            serving: Compiler::new(settings, false, cache_dir, target)?,
            concurrent: Arc::default(),
            settings,
            cache_dir: cache_dir.map(Path::to_path_buf),
            target: target.map(str::to_string),
        })
    }

    /// Engines that compile for `target` (a target triple, such as
    /// `aarch64-unknown-linux-gnu`) with the settings a node there runs with, and run
    /// nothing: what `modhost compile --target` precompiles another machine's
    /// modules with.
    pub fn cross(target: &str) -> Result<Engine> {
        // (`cross-compile` implies `compiler`.)
        if !cfg!(feature = "cross-compile") {
            bail!(
                "this modhost was built without the `cross-compile` feature: it compiles for \
                 its own machine only, not {target}"
            );
        }
        Engine::with(EngineSettings::default(), None, Some(target))
    }

    /// The serving engine (WASI 0.2 components).
    pub fn wasmtime(&self) -> &wasmtime::Engine {
        &self.serving.engine
    }

    /// Whether `component` runs on the concurrent engine (it is a WASI 0.3 component).
    pub fn is_concurrent(&self, component: &Component) -> bool {
        !wasmtime::Engine::same(component.engine(), &self.serving.engine)
    }

    /// The concurrent engine (WASI 0.3 components), made on first use.
    fn concurrent(&self) -> Result<&Compiler> {
        if let Some(compiler) = self.concurrent.get() {
            return Ok(compiler);
        }
        let made = Compiler::new(
            self.settings,
            true,
            self.cache_dir.as_deref(),
            self.target.as_deref(),
        )?;
        // Two loads racing both make one; the loser's is dropped (its ticker stops).
        let _ = self.concurrent.set(made);
        match self.concurrent.get() {
            Some(compiler) => Ok(compiler),
            None => bail!("the concurrent engine was not kept"),
        }
    }

    /// The engine a component of these bytes (a Wasm component) needs.
    #[cfg(feature = "compiler")]
    fn for_wasm(&self, bytes: &[u8]) -> Result<&Compiler> {
        if needs_concurrency(bytes) {
            self.concurrent()
        } else {
            Ok(&self.serving)
        }
    }

    /// Epoch ticks for a deadline of `timeout` (rounded up, at least one).
    pub fn deadline_ticks(timeout: Duration) -> u64 {
        let ticks = timeout.as_nanos().div_ceil(EPOCH_TICK.as_nanos());
        u64::try_from(ticks).unwrap_or(u64::MAX).max(1)
    }

    /// Loads the component at `path`: a `.cwasm` is deserialised as is; a `.wasm` is
    /// compiled, or taken from the compile cache when this engine compiled it before.
    /// Deserialising precompiled code trusts it as native code: only a path the
    /// operator named in the deployment file is loaded this way. Everything else — a
    /// new version through the admin API, a component from another node — goes
    /// through [`Self::load_wasm`].
    pub fn load(&self, path: &Path) -> Result<LoadedComponent> {
        self.load_from(path, true)
    }

    /// Loads the component at `path`, which must be a Wasm component: precompiled
    /// bytes are refused, since this engine would run them as native code unchecked.
    pub fn load_wasm(&self, path: &Path) -> Result<LoadedComponent> {
        self.load_from(path, false)
    }

    fn load_from(&self, path: &Path, precompiled_allowed: bool) -> Result<LoadedComponent> {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let kind = wasmtime::Engine::detect_precompiled(&bytes);
        if kind.is_some() && !precompiled_allowed {
            bail!(
                "{} is precompiled code: a new version is a Wasm component (.wasm), which this \
                 node compiles itself; precompiled code is loaded only from the deployment file's paths",
                path.display()
            );
        }
        match kind {
            Some(Precompiled::Component) => {
                if let Some(machine) = foreign_machine(&bytes) {
                    bail!(
                        "{} was precompiled for {machine}, and this node runs {}: precompile \
                         the component for this machine (`modhost compile` here, or \
                         `modhost compile --target {}-unknown-linux-gnu` on another), or \
                         deploy the .wasm itself",
                        path.display(),
                        std::env::consts::ARCH,
                        std::env::consts::ARCH
                    );
                }
                // Code compiled for the serving engine, or else for the concurrent one:
                // wasmtime checks the engine settings it was made with.
                let deserialize = |engine: &wasmtime::Engine| {
                    // SAFETY: deserialising trusts the file to be wasmtime output. A
                    // `.cwasm` named in the deployment file is the operator's own
                    // artefact (`modhost compile`), just as the host binary itself is.
                    unsafe { Component::deserialize(engine, &bytes) }.map_err(anyhow::Error::from)
                };
                // When neither takes it, the serving engine's reason is the one to give.
                let component = deserialize(&self.serving.engine)
                    .or_else(|serving| match self.concurrent() {
                        Ok(concurrent) => deserialize(&concurrent.engine).map_err(|_| serving),
                        Err(_) => Err(serving),
                    })
                    .with_context(|| {
                        format!(
                            "{} was precompiled for another wasmtime version or engine settings; \
                             recompile it with `modhost compile`",
                            path.display()
                        )
                    })?;
                Ok(LoadedComponent {
                    component,
                    digest: cache::digest(&bytes),
                    precompiled: true,
                })
            }
            Some(Precompiled::Module) => bail!(
                "{} is a precompiled core module, not a component",
                path.display()
            ),
            // A new version (the admin API, a peer) is always a Wasm component, which
            // an edge node cannot take; its deployment file's may be precompiled.
            #[cfg(not(feature = "compiler"))]
            None if !precompiled_allowed => bail!(
                "{} is a Wasm component, and this node cannot compile: {}; update an edge \
                 node by replacing its .cwasm files and restarting it",
                path.display(),
                Part::Compiler.missing()
            ),
            #[cfg(not(feature = "compiler"))]
            None => bail!(
                "{} is a Wasm component, which this node would compile: {}; precompile it \
                 with `modhost compile` (--target for another machine)",
                path.display(),
                Part::Compiler.missing()
            ),
            #[cfg(feature = "compiler")]
            None => {
                let compiler = self.for_wasm(&bytes)?;
                match &compiler.cache {
                    Some(cache) => cache.load_or_compile(&compiler.engine, &bytes),
                    None => {
                        let component = Component::new(&compiler.engine, &bytes)
                            .map_err(anyhow::Error::from)
                            .context("compiling the component")?;
                        Ok(LoadedComponent {
                            component,
                            digest: cache::digest(&bytes),
                            precompiled: false,
                        })
                    }
                }
            }
        }
    }

    /// Compiles the component at `wasm` to `.cwasm` bytes loadable by this engine.
    pub fn precompile(&self, wasm: &Path) -> Result<Vec<u8>> {
        let bytes = std::fs::read(wasm).with_context(|| format!("reading {}", wasm.display()))?;
        if wasmtime::Engine::detect_precompiled(&bytes).is_some() {
            bail!("{} is already precompiled", wasm.display());
        }
        #[cfg(not(feature = "compiler"))]
        bail!("compiling {}: {}", wasm.display(), Part::Compiler.missing());
        #[cfg(feature = "compiler")]
        self.for_wasm(&bytes)?
            .engine
            .precompile_component(&bytes)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("compiling {}", wasm.display()))
    }
}

/// The wasmtime settings every node uses. Compiled code depends on them, so they are
/// part of the compile cache's key.
fn wasmtime_config(settings: EngineSettings, concurrency: bool) -> Config {
    let mut pool = PoolingAllocationConfig::default();
    let instances = settings.instances.max(1);
    // The pool's slots are shared by every module. Each component instance may hold
    // at most its share of them (a component that needs more is refused when it
    // loads), and the totals are that share times the instances: a module at its
    // full concurrency can use up its own slots and never another module's.
    pool.max_core_instances_per_component(CORE_INSTANCES_PER_COMPONENT)
        .max_memories_per_component(MEMORIES_PER_COMPONENT)
        .max_tables_per_component(TABLES_PER_COMPONENT)
        .total_component_instances(instances)
        .total_core_instances(instances.saturating_mul(CORE_INSTANCES_PER_COMPONENT))
        .total_memories(instances.saturating_mul(MEMORIES_PER_COMPONENT))
        .total_tables(instances.saturating_mul(TABLES_PER_COMPONENT))
        .total_stacks(instances)
        .max_memory_size(usize::try_from(settings.max_memory.bytes()).unwrap_or(usize::MAX));

    // Recycling a slot is where a fresh instance per request spends its time: `madvise`
    // to decommit, then page faults to re-populate, each flushing TLBs on every core
    // (on virtual machines those IPIs are VM exits). Where the kernel has PAGEMAP_SCAN
    // (Linux 6.7+), wasmtime resets only the pages an instance dirtied, in place, and
    // keeps them resident: 2x gateway throughput on the benchmark machine (see
    // BENCHMARKS.md). Without it, keeping pages resident means memset-ing them all,
    // which is slower than decommitting; batching the decommits is what helps there.
    if PoolingAllocationConfig::is_pagemap_scan_available() {
        pool.pagemap_scan(Enabled::Yes)
            .linear_memory_keep_resident(KEEP_RESIDENT)
            .table_keep_resident(KEEP_RESIDENT);
    }
    pool.decommit_batch_size(DECOMMIT_BATCH);

    let mut config = Config::new();
    config
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
        .epoch_interruption(true)
        .wasm_component_model(true)
        // WASI 0.2 components do not use the component model's async ABI (streams,
        // futures, async-lifted exports). Without the concurrency runtime a call into
        // an instance is a plain call on a fiber rather than a trip through the
        // concurrent scheduler (a reused-instance call: 4.1 → see BENCHMARKS.md), so
        // only the engine of WASI 0.3 components has it on.
        .concurrency_support(concurrency)
        .wasm_component_model_async(concurrency);
    config
}

/// The processor architecture precompiled code in `bytes` (wasmtime's output: an ELF
/// object) was compiled for, when it is not this machine's. `None` when it is this
/// machine's, or when the bytes do not say (wasmtime then checks them itself).
fn foreign_machine(bytes: &[u8]) -> Option<&'static str> {
    // ELF: e_machine is the little-endian half-word at offset 18 (wasmtime writes
    // little-endian objects for every target it compiles for but s390x).
    if bytes.get(..4)? != b"\x7fELF" {
        return None;
    }
    let machine = match bytes.get(5)? {
        2 => u16::from_be_bytes([*bytes.get(18)?, *bytes.get(19)?]),
        _ => u16::from_le_bytes([*bytes.get(18)?, *bytes.get(19)?]),
    };
    let arch = match machine {
        62 => "x86_64",
        183 => "aarch64",
        243 => "riscv64",
        22 => "s390x",
        _ => return None,
    };
    (arch != std::env::consts::ARCH).then_some(arch)
}

/// Whether the Wasm component in `bytes` is a WASI 0.3 (P3) one, which only the
/// concurrent engine runs: it imports or exports a `wasi:*@0.3.*` interface.
pub fn needs_concurrency(bytes: &[u8]) -> bool {
    let is_p3 = |name: &String| {
        name.starts_with("wasi:")
            && name
                .split_once('@')
                .is_some_and(|(_, version)| version.starts_with("0.3."))
    };
    let names = OuterNames::of(bytes);
    names.imports.iter().chain(&names.exports).any(is_p3)
}

/// The names a component imports and exports, read from its bytes without compiling
/// them. Only the outer component's own count, not those of components nested in it;
/// bytes that do not parse give what was read before the error (compiling them says
/// what is wrong).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct OuterNames {
    /// Its imports, in order.
    pub imports: Vec<String>,
    /// Its exports, in order.
    pub exports: Vec<String>,
}

impl OuterNames {
    /// The outer imports and exports of the component in `bytes`.
    pub fn of(bytes: &[u8]) -> OuterNames {
        use wasmparser::{Parser, Payload};
        let mut names = OuterNames::default();
        let mut depth = 0usize;
        for payload in Parser::new(0).parse_all(bytes) {
            let Ok(payload) = payload else { break };
            match payload {
                Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => depth += 1,
                Payload::End(_) => depth = depth.saturating_sub(1),
                Payload::ComponentImportSection(imports) if depth == 0 => names.imports.extend(
                    imports
                        .into_iter()
                        .flatten()
                        .map(|i| i.name.name.to_string()),
                ),
                Payload::ComponentExportSection(exports) if depth == 0 => names.exports.extend(
                    exports
                        .into_iter()
                        .flatten()
                        .map(|e| e.name.name.to_string()),
                ),
                _ => {}
            }
        }
        names
    }
}

/// Advances `engine`'s epoch every [`EPOCH_TICK`] until the engine is dropped.
fn start_epoch_ticker(engine: &wasmtime::Engine) {
    let weak = engine.weak();
    let spawned = std::thread::Builder::new()
        .name("modhost-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        });
    if let Err(err) = spawned {
        // Without a ticker no deadline fires; refusing to start is the safe answer,
        // but a thread spawn failing here means the process is already in trouble.
        panic!("cannot start the epoch ticker thread: {err}");
    }
}

/// Where a deployment's state lives under its data dir.
pub fn cache_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("compile-cache")
}

/// The file extension a component's bytes call for: `cwasm` for wasmtime's
/// precompiled output, `wasm` otherwise.
pub fn component_extension(bytes: &[u8]) -> &'static str {
    match wasmtime::Engine::detect_precompiled(bytes) {
        Some(_) => "cwasm",
        None => "wasm",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::limits::MemoryLimiter;
    use wasmtime::component::Linker;
    use wasmtime::Store;

    /// A component of `memories` core modules, each with one memory of `pages` pages.
    fn component_with_memories(memories: usize, pages: u32) -> Vec<u8> {
        let modules: String = (0..memories)
            .map(|i| {
                format!("(core module $m{i} (memory {pages})) (core instance (instantiate $m{i}))")
            })
            .collect();
        wat::parse_str(format!("(component {modules})")).unwrap()
    }

    fn engine() -> wasmtime::Engine {
        wasmtime::Engine::new(&wasmtime_config(
            EngineSettings {
                instances: 4,
                max_memory: ByteSize::mib(64),
            },
            false,
        ))
        .unwrap()
    }

    #[test]
    fn a_wasi_0_3_component_is_told_by_its_outer_imports_and_exports() {
        let parse = |wat: &str| wat::parse_str(wat).unwrap();
        let p3_import = parse(
            r#"(component
                (import "wasi:clocks/monotonic-clock@0.2.4" (instance))
                (import "wasi:http/types@0.3.2" (instance))
            )"#,
        );
        assert!(needs_concurrency(&p3_import));
        let p3_export = parse(
            r#"(component
                (component $c)
                (instance $i (instantiate $c))
                (export "wasi:http/handler@0.3.0" (instance $i))
            )"#,
        );
        assert!(needs_concurrency(&p3_export));
        // 0.2, another namespace at 0.3, a nested component's 0.3 import, junk: no.
        let p2 = parse(
            r#"(component
                (import "wasi:http/types@0.2.12" (instance))
                (import "shop:users/api@0.3.0" (instance))
                (component (import "wasi:http/types@0.3.0" (instance)))
            )"#,
        );
        assert!(!needs_concurrency(&p2));
        assert!(!needs_concurrency(b"not wasm"));
        assert_eq!(
            OuterNames::of(&p2).imports,
            ["wasi:http/types@0.2.12", "shop:users/api@0.3.0"]
        );
        assert_eq!(
            OuterNames::of(&p3_export).exports,
            ["wasi:http/handler@0.3.0"]
        );
    }

    #[test]
    fn each_engine_loads_its_own_components_and_tells_them_apart() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::new(
            EngineSettings {
                instances: 4,
                max_memory: ByteSize::mib(64),
            },
            None,
        )
        .unwrap();
        let p2 = dir.path().join("p2.wasm");
        std::fs::write(
            &p2,
            wat::parse_str(r#"(component (import "wasi:cli/stdin@0.2.0" (instance)))"#).unwrap(),
        )
        .unwrap();
        let p3 = dir.path().join("p3.wasm");
        std::fs::write(
            &p3,
            wat::parse_str(r#"(component (import "wasi:cli/stdin@0.3.0" (instance)))"#).unwrap(),
        )
        .unwrap();
        assert!(
            engine.concurrent.get().is_none(),
            "made before it was needed"
        );
        let serving = engine.load(&p2).unwrap();
        assert!(!engine.is_concurrent(&serving.component));
        assert!(
            engine.concurrent.get().is_none(),
            "a WASI 0.2 component made it"
        );
        let concurrent = engine.load(&p3).unwrap();
        assert!(engine.is_concurrent(&concurrent.component));
        // Precompiled for either, each `.cwasm` loads on the engine that compiled it.
        for (wasm, is_concurrent) in [(&p2, false), (&p3, true)] {
            let cwasm = wasm.with_extension("cwasm");
            std::fs::write(&cwasm, engine.precompile(wasm).unwrap()).unwrap();
            let loaded = engine.load(&cwasm).unwrap();
            assert!(loaded.precompiled);
            assert_eq!(engine.is_concurrent(&loaded.component), is_concurrent);
        }
    }

    #[test]
    fn precompiled_code_names_the_machine_it_was_compiled_for() {
        let elf = |class_endian: u8, machine: [u8; 2]| {
            let mut bytes = b"\x7fELF\x02".to_vec();
            bytes.push(class_endian);
            bytes.resize(18, 0);
            bytes.extend_from_slice(&machine);
            bytes
        };
        let native = match std::env::consts::ARCH {
            "aarch64" => 183u16,
            _ => 62u16,
        };
        assert_eq!(foreign_machine(&elf(1, native.to_le_bytes())), None);
        let other = if native == 62 {
            ("aarch64", 183u16)
        } else {
            ("x86_64", 62)
        };
        assert_eq!(
            foreign_machine(&elf(1, other.1.to_le_bytes())),
            Some(other.0)
        );
        assert_eq!(foreign_machine(&elf(2, 22u16.to_be_bytes())), Some("s390x"));
        // Not ELF, cut short, or a machine wasmtime does not compile for: not ours to say.
        assert_eq!(foreign_machine(b"\0asm\x0d\0\x01\0"), None);
        assert_eq!(foreign_machine(b"\x7fELF\x02\x01"), None);
        assert_eq!(foreign_machine(&elf(1, 3u16.to_le_bytes())), None);
    }

    #[test]
    fn a_component_that_needs_more_than_its_share_of_the_pool_does_not_load() {
        let engine = engine();
        let within = component_with_memories(MEMORIES_PER_COMPONENT as usize, 1);
        Component::new(&engine, within).unwrap();
        let greedy = component_with_memories(MEMORIES_PER_COMPONENT as usize + 1, 1);
        let Err(error) = Component::new(&engine, greedy) else {
            panic!("a component with more memories than its share loaded");
        };
        assert!(format!("{error:#}").contains("memories"), "{error:#}");
    }

    #[test]
    fn the_memory_limit_covers_every_memory_of_an_instance() {
        let engine = engine();
        // Two memories of 40 MiB: each within a 64 MiB limit, not both.
        let component = Component::new(&engine, component_with_memories(2, 640)).unwrap();
        let linker = Linker::<MemoryLimiter>::new(&engine);
        let instantiate = |limit: u64| {
            let mut store = Store::new(&engine, MemoryLimiter::new(limit));
            store.limiter(|limiter| limiter);
            let result = linker.instantiate(&mut store, &component).map(drop);
            (result, store.data().exceeded())
        };
        let (result, exceeded) = instantiate(64 << 20);
        assert!(result.is_err() && exceeded);
        let (result, exceeded) = instantiate(80 << 20);
        assert!(result.is_ok() && !exceeded, "{result:?}");
    }
}
