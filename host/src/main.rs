//! The `modhost` command line. Everything it does is in the library; this file only
//! parses arguments, calls it, and turns outcomes into exit codes:
//! 0 success, 1 a runtime failure, 2 a deployment that is invalid or does not load.

use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use modhost::capabilities::events::{inspect, replay};
use modhost::deployment::build::{self, Part};
use modhost::deployment::{
    declaring_environment, kubernetes, ConfigError, ConfigErrors, Deployment,
};
use modhost::engine::{self, Engine, EngineSettings};
use modhost::module::{scaffold, sources};
use modhost::node::{self, Node};
use modhost::telemetry::{self, LogFormat};

/// Exit code for an invalid deployment or a module that does not load.
const EXIT_INVALID: u8 = 2;

/// `--version`: the version and the features this binary was built with (an edge
/// build has fewer: see `deployment::build`).
static VERSION: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let features = build::features();
    format!(
        "{} (features: {})",
        env!("CARGO_PKG_VERSION"),
        if features.is_empty() {
            "none".to_string()
        } else {
            features.join(", ")
        }
    )
});

#[derive(Parser)]
#[command(
    name = "modhost",
    version = VERSION.as_str(),
    about = "Run a business application as a modular monolith of WebAssembly components"
)]
struct Cli {
    /// Log line format.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value_t,
        env = "MODHOST_LOG_FORMAT"
    )]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve a deployment.
    Run {
        /// The deployment file.
        deployment: PathBuf,
        #[command(flatten)]
        overrides: Overrides,
    },
    /// Build the deployment's modules from source if needed, then serve it.
    Up {
        /// The deployment file.
        #[arg(default_value = "config/single-node.toml")]
        deployment: PathBuf,
        #[command(flatten)]
        overrides: Overrides,
        /// Rebuild a module crate when its files change, and hot-swap it in.
        #[arg(long)]
        watch: bool,
    },
    /// Show every module's serving version, canary and work in flight (admin API).
    Status {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Replace a module's version: checked, migrated, switched atomically (admin API).
    Swap {
        /// The module.
        module: String,
        /// The new component (.wasm or .cwasm).
        component: PathBuf,
        /// Apply the migrations in this directory (default: the module's own).
        #[arg(long)]
        migrations: Option<PathBuf>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Try a new version on a share of a module's traffic (admin API).
    Canary {
        /// The module.
        module: String,
        /// The new component (.wasm or .cwasm).
        component: PathBuf,
        /// Percent of the module's requests and calls it gets.
        #[arg(long)]
        weight: u32,
        /// Apply the migrations in this directory (default: the module's own).
        #[arg(long)]
        migrations: Option<PathBuf>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Make a module's canary its serving version (admin API).
    Promote {
        /// The module.
        module: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Drop a module's canary, or go back to its previous version (admin API).
    Rollback {
        /// The module.
        module: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Move a module, with its data, from the node that runs it to another, while the
    /// application serves (admin API of the node that runs it); then, asked of the node
    /// it left, --commit drops the copy kept there or --abort brings it back.
    Extract {
        /// The module.
        module: String,
        /// The node it moves to.
        #[arg(long, required_unless_present_any = ["commit", "abort"], conflicts_with_all = ["commit", "abort"])]
        to: Option<String>,
        /// With --to: the Postgres database a SQLite module moves onto (a postgres://
        /// URL, or $NAME of an environment variable every node has, to keep the
        /// password out of the deployment file); its data is carried there.
        #[arg(long, value_name = "URL", requires = "to")]
        to_postgres: Option<String>,
        /// Remove the copy of the module's data kept on this node since it left.
        #[arg(long, conflicts_with = "abort")]
        commit: bool,
        /// Bring the module back to this node, which it left, with its data.
        #[arg(long)]
        abort: bool,
        /// The longest its work in flight may take to finish once its new requests and
        /// calls are held, before the move is called off (e.g. 5s, 500ms).
        #[arg(long, default_value = "5s", value_parser = parse_timeout)]
        max_pause: Duration,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Have a node read its deployment file again and apply its [placement]: modules
    /// start or stop serving there without a restart (admin API; SIGHUP does the same).
    Reload {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Start a new module in this application: a Rust crate, a Python or a JavaScript module with its
    /// WIT contract, a migration, an HTTP route and a test; prints its deployment stanza.
    New {
        /// The module's name: lower-case words joined by '-' (it names its route and
        /// its WIT package).
        name: String,
        /// The language to write it in.
        #[arg(long, value_enum, default_value_t = Lang::Rust)]
        lang: Lang,
        /// The namespace of its WIT package (`NAMESPACE:NAME@0.1.0`).
        #[arg(long, default_value = "app")]
        namespace: String,
    },
    /// Build the deployment's modules from source (Rust crates, Python and JavaScript modules) where
    /// they changed, without serving.
    Build {
        /// The deployment file.
        #[arg(default_value = "config/single-node.toml")]
        deployment: PathBuf,
    },
    /// Validate a deployment and compile and link every module, without serving.
    Check {
        /// The deployment file.
        deployment: PathBuf,
        /// Check a new build of module NAME (a .wasm/.cwasm file, or a source directory,
        /// built first where it changed; PATH is relative to the current directory) in
        /// place of the deployment's: every importer it would break and every import it
        /// lacks is listed, with both signatures.
        #[arg(long = "module", value_name = "NAME=PATH")]
        modules: Vec<String>,
    },
    /// Generate development certificates for the mesh: the deployment's CA and one
    /// certificate per node, written where `[mesh]` says.
    Certs {
        /// The deployment file.
        deployment: PathBuf,
        /// Only these nodes (default: every node of the deployment).
        #[arg(long = "node")]
        nodes: Vec<String>,
        /// How long the node certificates are valid, in days.
        #[arg(long, default_value_t = 90)]
        days: i64,
        /// Make a new CA even if one exists (every node then needs a new certificate).
        #[arg(long)]
        new_ca: bool,
    },
    /// Inspect the events of a deployment.
    Events {
        #[command(subcommand)]
        command: EventsCommand,
    },
    /// Write the Kubernetes manifests of a split deployment: a StatefulSet and a
    /// Service per node, the gateway's Service, the deployment file, the mesh
    /// certificates, a PodDisruptionBudget (docs/scale-out.md).
    Manifests {
        /// The deployment file (with [nodes]); run from the application's directory,
        /// which the image holds at --image-root.
        deployment: PathBuf,
        /// The container image every node runs (built from the Dockerfile).
        #[arg(long)]
        image: String,
        /// Put every object in this namespace.
        #[arg(long)]
        namespace: Option<String>,
        /// Where the image holds the application.
        #[arg(long, default_value = "/app")]
        image_root: PathBuf,
        /// Size of each node's data volume.
        #[arg(long, default_value = "1Gi")]
        storage: String,
        /// Set KEY (a dotted key of the deployment file) to VALUE in the nodes'
        /// deployment file: what differs on the cluster (events.brokers=HOST:PORT).
        #[arg(long = "set", value_name = "KEY=VALUE", value_parser = kubernetes::parse_setting)]
        set: Vec<(String, toml::Value)>,
        /// Write the manifests here instead of to standard output.
        #[arg(long, short)]
        out: Option<PathBuf>,
    },
    /// Precompile components (.wasm) to .cwasm for fast start.
    Compile {
        /// Component files to compile.
        #[arg(required = true)]
        components: Vec<PathBuf>,
        /// Where to write the .cwasm files (default: next to each input).
        #[arg(long, short)]
        out_dir: Option<PathBuf>,
        /// Compile for another machine: a target triple such as
        /// `aarch64-unknown-linux-gnu` (default: this one).
        #[arg(long)]
        target: Option<String>,
    },
}

/// The languages `modhost new` writes.
#[derive(Clone, Copy, clap::ValueEnum)]
enum Lang {
    /// A Rust crate, built for wasm32-wasip2.
    Rust,
    /// A Python module, built with componentize-py.
    Python,
    /// A JavaScript module, built with componentize-js.
    Javascript,
}

#[derive(Subcommand)]
enum EventsCommand {
    /// List the events that subscribing modules gave up on (their dead-letter topics),
    /// with the error of the last attempt.
    DeadLetters {
        /// The deployment file.
        deployment: PathBuf,
        /// Only this module's dead letters.
        #[arg(long)]
        module: Option<String>,
        /// Read the embedded bus here instead of `app.data_dir`.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Send a module's dead letters through it again, once the cause of their failures
    /// is fixed. Other subscribers of the topic skip them (their inboxes know them).
    Replay {
        /// The deployment file.
        deployment: PathBuf,
        /// The module whose dead letters to replay.
        #[arg(long)]
        module: String,
        /// Only the dead letter of this event (repeatable); all of them without it.
        #[arg(long = "event")]
        events: Vec<String>,
        /// The data directory (embedded bus, SQLite files) instead of `app.data_dir`.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// One JSON object per line instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// Where the admin API is, and its token.
#[derive(clap::Args)]
struct AdminArgs {
    /// The admin API's address.
    #[arg(long, env = "MODHOST_ADMIN", default_value = "http://127.0.0.1:9090")]
    admin: String,
    /// The deployment's admin token.
    #[arg(long, env = "MODHOST_ADMIN_TOKEN", hide_env_values = true)]
    token: String,
}

/// Settings the command line may override, for running one deployment file in
/// several places (tests, a second instance on one machine).
#[derive(clap::Args)]
struct Overrides {
    /// Which node of a split deployment this process is (`[nodes.NAME]`).
    #[arg(long)]
    node: Option<String>,
    /// Listen on this address instead of `gateway.listen`.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Keep state here instead of `app.data_dir`.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Serve the admin API here instead of `[admin] listen` (needs `[admin]`).
    #[arg(long)]
    admin_listen: Option<SocketAddr>,
}

fn main() -> ExitCode {
    let started = Instant::now();
    quiet_library_backtraces();
    let cli = Cli::parse();
    telemetry::init(cli.log_format);
    match cli.command {
        Command::Run {
            deployment,
            overrides,
        } => serve(&deployment, overrides, false, false, started),
        Command::Up {
            deployment,
            overrides,
            watch,
        } => serve(&deployment, overrides, true, watch, started),
        Command::Status { admin } => admin_request(&admin, http::Method::GET, "/v1/status", None),
        Command::Swap {
            module,
            component,
            migrations,
            admin,
        } => admin_request(
            &admin,
            http::Method::POST,
            &format!("/v1/modules/{module}/swap"),
            Some(serde_json::json!({
                "component": absolute(&component),
                "migrations": migrations.as_deref().map(absolute),
            })),
        ),
        Command::Canary {
            module,
            component,
            weight,
            migrations,
            admin,
        } => admin_request(
            &admin,
            http::Method::POST,
            &format!("/v1/modules/{module}/canary"),
            Some(serde_json::json!({
                "component": absolute(&component),
                "weight": weight,
                "migrations": migrations.as_deref().map(absolute),
            })),
        ),
        Command::Promote { module, admin } => admin_request(
            &admin,
            http::Method::POST,
            &format!("/v1/modules/{module}/promote"),
            Some(serde_json::json!({})),
        ),
        Command::Rollback { module, admin } => admin_request(
            &admin,
            http::Method::POST,
            &format!("/v1/modules/{module}/rollback"),
            Some(serde_json::json!({})),
        ),
        Command::Extract {
            module,
            to,
            to_postgres,
            commit,
            abort,
            max_pause,
            admin,
        } => {
            let max_pause_ms = u64::try_from(max_pause.as_millis()).unwrap_or(u64::MAX);
            let body = match to {
                Some(to) => serde_json::json!({
                    "to": to,
                    "max_pause_ms": max_pause_ms,
                    "to_postgres": to_postgres,
                }),
                None if commit => serde_json::json!({ "commit": true }),
                None => serde_json::json!({ "abort": abort, "max_pause_ms": max_pause_ms }),
            };
            admin_request(
                &admin,
                http::Method::POST,
                &format!("/v1/modules/{module}/extract"),
                Some(body),
            )
        }
        Command::Reload { admin } => admin_request(
            &admin,
            http::Method::POST,
            "/v1/reload",
            Some(serde_json::json!({})),
        ),
        Command::New {
            name,
            lang,
            namespace,
        } => new_module(&name, lang, &namespace),
        Command::Build { deployment } => build(&deployment),
        Command::Check {
            deployment,
            modules,
        } => check(&deployment, &modules),
        Command::Compile {
            components,
            out_dir,
            target,
        } => compile(&components, out_dir.as_deref(), target.as_deref()),
        Command::Certs {
            deployment,
            nodes,
            days,
            new_ca,
        } => certs(&deployment, &nodes, days, new_ca),
        Command::Manifests {
            deployment,
            image,
            namespace,
            image_root,
            storage,
            set,
            out,
        } => manifests(
            &deployment,
            kubernetes::Options {
                image,
                image_root,
                app_root: PathBuf::from("."),
                namespace,
                storage,
                set,
            },
            out.as_deref(),
        ),
        Command::Events {
            command:
                EventsCommand::DeadLetters {
                    deployment,
                    module,
                    data_dir,
                    json,
                },
        } => dead_letters(&deployment, module.as_deref(), data_dir, json),
        Command::Events {
            command:
                EventsCommand::Replay {
                    deployment,
                    module,
                    events,
                    data_dir,
                    json,
                },
        } => replay(&deployment, &module, &events, data_dir, json),
    }
}

/// Reads a duration as the deployment file writes one (`5s`, `500ms`).
fn parse_timeout(text: &str) -> Result<Duration, String> {
    modhost::deployment::units::Timeout::parse(text).map(|timeout| timeout.duration())
}

fn load_deployment(path: &Path, overrides: Option<&Overrides>) -> Result<Deployment, ExitCode> {
    read_deployment(path, overrides).map_err(|errors| {
        eprintln!("{errors}");
        eprintln!(
            "modhost: {} problem(s) in the deployment; nothing was started",
            errors.0.len()
        );
        ExitCode::from(EXIT_INVALID)
    })
}

/// Reads and validates the deployment file at `path`, as this process runs it: the
/// node `overrides` names, with their addresses and data directory. What a node reads
/// at start, and again on each reload.
fn read_deployment(path: &Path, overrides: Option<&Overrides>) -> Result<Deployment, ConfigErrors> {
    let mut deployment = node::load_deployment(path)?;
    let Some(overrides) = overrides else {
        return Ok(deployment);
    };
    let refused = |key: &str, problem: String| {
        ConfigErrors(vec![ConfigError {
            file: path.to_path_buf(),
            line: None,
            key: key.to_string(),
            problem,
        }])
    };
    deployment
        .select_node(overrides.node.as_deref())
        .map_err(|problem| refused("", problem))?;
    if let Some(listen) = overrides.listen {
        deployment.gateway.listen = listen;
    }
    if let Some(dir) = &overrides.data_dir {
        deployment.data_dir = dir.clone();
    }
    if let Some(listen) = overrides.admin_listen {
        match &mut deployment.admin {
            Some(admin) => admin.listen = Some(listen),
            None => {
                return Err(refused(
                    "admin",
                    "--admin-listen needs an [admin] section with a token".to_string(),
                ))
            }
        }
    }
    Ok(deployment)
}

/// `modhost new`: writes the module into the application around the current directory.
fn new_module(name: &str, lang: Lang, namespace: &str) -> ExitCode {
    let here = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    let Some(root) = scaffold::find_app_root(&here) else {
        eprintln!(
            "modhost: {} is not inside a modhost application (no wit/modhost/sql.wit here or above)",
            here.display()
        );
        return ExitCode::from(EXIT_INVALID);
    };
    let language = match lang {
        Lang::Rust => scaffold::Language::Rust,
        Lang::Python => scaffold::Language::Python,
        Lang::Javascript => scaffold::Language::JavaScript,
    };
    match scaffold::new_module(&root, name, namespace, language) {
        Ok(made) => {
            for file in &made.files {
                println!("wrote {}", file.display());
            }
            println!(
                "\nAdd it to a deployment file in {}/config (then `modhost up FILE`):\n\n{}",
                root.display(),
                made.stanza
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("modhost: {error:#}");
            ExitCode::from(EXIT_INVALID)
        }
    }
}

/// `modhost build`: every module source of the deployment, built where it changed.
fn build(path: &Path) -> ExitCode {
    let deployment = match load_deployment(path, None) {
        Ok(deployment) => deployment,
        Err(code) => return code,
    };
    match sources::build(deployment.modules.values().map(|module| &module.component)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("modhost: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(
    path: &Path,
    overrides: Overrides,
    build: bool,
    watch: bool,
    started: Instant,
) -> ExitCode {
    let deployment = match load_deployment(path, Some(&overrides)) {
        Ok(deployment) => deployment,
        Err(code) => return code,
    };
    if build {
        let sources = deployment.modules.values().map(|module| &module.component);
        if let Err(error) = sources::build(sources) {
            eprintln!("modhost: {error:#}");
            return ExitCode::FAILURE;
        }
    }
    let Some(runtime) = async_runtime(Runtime::Serving) else {
        return ExitCode::FAILURE;
    };
    runtime.block_on(async move {
        // From now on a SIGHUP asks for a reload, even while the modules load, and a
        // SIGTERM stops the node gracefully once it serves.
        let hangups = node::Hangups::watch();
        let shutdown = node::shutdown_signal();
        let node = match Node::load(deployment) {
            Ok(node) => node,
            Err(error) => {
                eprintln!("{error}");
                eprintln!("modhost: the deployment does not load; nothing was started");
                return ExitCode::from(EXIT_INVALID);
            }
        };
        let file = path.to_path_buf();
        let node = node.reloading_with(
            Arc::new(move || read_deployment(&file, Some(&overrides))),
            hangups,
        );
        let settings = node.deployment();
        if let Err(error) = telemetry::export::start(
            &settings.telemetry,
            &settings.app_name,
            settings.node.as_deref(),
        ) {
            eprintln!("modhost: {error:#}");
            return ExitCode::FAILURE;
        }
        node.open().await;
        let listeners = match node.bind().await {
            Ok(listeners) => listeners,
            Err(error) => {
                eprintln!("modhost: {error}");
                return ExitCode::FAILURE;
            }
        };
        let listen = listeners
            .gateway
            .local_addr()
            .map(|addr| addr.to_string())
            .unwrap_or_default();
        let address = |listener: &Option<tokio::net::TcpListener>| {
            listener
                .as_ref()
                .and_then(|listener| listener.local_addr().ok())
                .map(|addr| addr.to_string())
                .unwrap_or_default()
        };
        let (mesh, admin) = (address(&listeners.mesh), address(&listeners.admin));
        tracing::info!(
            app = %node.deployment().app_name,
            node = node.deployment().node.as_deref().unwrap_or(""),
            listen = %listen,
            mesh = %mesh,
            admin = %admin,
            modules = node.registry().modules().len(),
            startup_ms = started.elapsed().as_secs_f64() * 1000.0,
            "modhost ready"
        );
        if watch {
            node::watch::start(node.deployment(), node.registry().clone());
        }
        node.serve(listeners, shutdown).await;
        // The last requests' spans, if they are exported.
        telemetry::export::flush(Duration::from_secs(2)).await;
        tracing::info!("modhost stopped");
        ExitCode::SUCCESS
    })
}

fn check(path: &Path, replaced: &[String]) -> ExitCode {
    let mut deployment = match load_deployment(path, None) {
        Ok(deployment) => deployment,
        Err(code) => return code,
    };
    let here = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    for replacement in replaced {
        let Some((module, component)) = replacement.split_once('=') else {
            eprintln!("modhost: --module {replacement}: expected NAME=PATH");
            return ExitCode::from(EXIT_INVALID);
        };
        if let Err(problem) = deployment.replace_component(module, &here, component) {
            eprintln!("modhost: {problem}");
            return ExitCode::from(EXIT_INVALID);
        }
        // A source directory is checked as it is now: built first where it changed.
        let replaced = deployment.modules.get(module).map(|spec| &spec.component);
        if let Err(error) = sources::build(replaced) {
            eprintln!("modhost: --module {replacement}: {error:#}");
            return ExitCode::FAILURE;
        }
    }
    let modules = deployment.modules.len();
    match Node::load(deployment) {
        Ok(node) => {
            for module in node.registry().modules() {
                println!(
                    "ok  {:<16} {}  {}",
                    module.name(),
                    module.version,
                    module.source.display()
                );
            }
            println!(
                "{}: {modules} module(s) valid, compiled and linked",
                path.display()
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("{error}");
            if !replaced.is_empty() {
                eprintln!(
                    "modhost: with {}, {} does not load: each problem above names the module it breaks",
                    replaced.join(", "),
                    path.display()
                );
            }
            ExitCode::from(EXIT_INVALID)
        }
    }
}

fn compile(components: &[PathBuf], out_dir: Option<&Path>, target: Option<&str>) -> ExitCode {
    if !Part::Compiler.is_built_in() {
        eprintln!("modhost compile: {}", Part::Compiler.missing());
        return ExitCode::from(EXIT_INVALID);
    }
    let engine = match target {
        Some(target) => Engine::cross(target),
        None => Engine::new(EngineSettings::default(), None),
    };
    let engine = match engine {
        Ok(engine) => engine,
        Err(error) => {
            eprintln!("modhost: {error:#}");
            return ExitCode::from(EXIT_INVALID);
        }
    };
    let mut failed = false;
    for input in components {
        let output = match out_dir {
            Some(dir) => dir.join(input.file_name().unwrap_or_default()),
            None => input.clone(),
        }
        .with_extension("cwasm");
        let result = engine.precompile(input).and_then(|bytes| {
            if let Some(parent) = output.parent() {
                std::fs::create_dir_all(parent)?;
            }
            engine::cache::write_atomically(&output, &bytes)?;
            Ok(bytes.len())
        });
        match result {
            Ok(size) => println!("{} -> {} ({size} bytes)", input.display(), output.display()),
            Err(error) => {
                eprintln!("modhost: {}: {error:#}", input.display());
                failed = true;
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// The deployment for an `events` command, with its data dir overridden when asked.
fn load_for_events(path: &Path, data_dir: Option<PathBuf>) -> Result<Deployment, ExitCode> {
    let overrides = Overrides {
        node: None,
        listen: None,
        data_dir,
        admin_listen: None,
    };
    load_deployment(path, Some(&overrides))
}

/// An `events` command named a module that subscribes to nothing: a usage error.
fn no_subscriber(module: &str, path: &Path) -> ExitCode {
    eprintln!(
        "modhost: no module `{module}` subscribes to events in {}",
        path.display()
    );
    ExitCode::from(EXIT_INVALID)
}

fn dead_letters(
    path: &Path,
    only: Option<&str>,
    data_dir: Option<PathBuf>,
    json: bool,
) -> ExitCode {
    let deployment = match load_for_events(path, data_dir) {
        Ok(deployment) => deployment,
        Err(code) => return code,
    };
    if let Some(only) = only {
        if !inspect::subscribers(&deployment).iter().any(|m| m == only) {
            return no_subscriber(only, path);
        }
    }
    let Some(runtime) = async_runtime(Runtime::Tool) else {
        return ExitCode::FAILURE;
    };
    let letters = match runtime.block_on(inspect::dead_letters(&deployment, only)) {
        Ok(letters) => letters,
        Err(error) => {
            eprintln!("modhost: {error:#}");
            return ExitCode::FAILURE;
        }
    };
    for letter in &letters {
        if json {
            println!("{}", letter.to_json());
        } else {
            println!("{letter}");
        }
    }
    if !json {
        println!("{} dead letter(s)", letters.len());
    }
    ExitCode::SUCCESS
}

fn replay(
    path: &Path,
    module: &str,
    only: &[String],
    data_dir: Option<PathBuf>,
    json: bool,
) -> ExitCode {
    let deployment = match load_for_events(path, data_dir) {
        Ok(deployment) => deployment,
        Err(code) => return code,
    };
    if replay::subscriber(&deployment, module).is_none() {
        return no_subscriber(module, path);
    }
    let Some(runtime) = async_runtime(Runtime::Tool) else {
        return ExitCode::FAILURE;
    };
    let replays = match runtime.block_on(replay::replay(&deployment, module, only)) {
        Ok(replays) => replays,
        Err(error) => {
            eprintln!("modhost: replaying the dead letters of `{module}`: {error:#}");
            return ExitCode::FAILURE;
        }
    };
    for replay in &replays {
        if json {
            println!(
                "{}",
                serde_json::json!({
                    "module": module,
                    "id": replay.id,
                    "topic": replay.topic,
                    "outcome": replay.outcome.as_str(),
                })
            );
        } else {
            println!(
                "{}  {}  {}",
                replay.id,
                replay.topic,
                replay.outcome.as_str()
            );
        }
    }
    if !json {
        let sent = replays
            .iter()
            .filter(|r| r.outcome == replay::Replayed::Sent)
            .count();
        println!(
            "{sent} dead letter(s) of `{module}` sent again, {} already handled",
            replays.len() - sent
        );
    }
    ExitCode::SUCCESS
}

#[cfg(not(feature = "mesh"))]
fn certs(_: &Path, _: &[String], _: i64, _: bool) -> ExitCode {
    eprintln!("modhost certs: {}", Part::Mesh.missing());
    ExitCode::from(EXIT_INVALID)
}

#[cfg(feature = "mesh")]
fn certs(path: &Path, nodes: &[String], days: i64, new_ca: bool) -> ExitCode {
    let deployment = match load_deployment(path, None) {
        Ok(deployment) => deployment,
        Err(code) => return code,
    };
    if days < 1 {
        eprintln!("modhost: --days must be at least 1");
        return ExitCode::from(EXIT_INVALID);
    }
    match modhost::mesh::certs::generate(&deployment, nodes, days, new_ca) {
        Ok(written) => {
            let (ca, made) = written.ca;
            println!("{} CA {}", if made { "made" } else { "kept" }, ca.display());
            for (node, cert, key) in written.nodes {
                println!("node {node}: {} {}", cert.display(), key.display());
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("modhost: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Keeps an operator's `RUST_BACKTRACE=1` from slowing the node down. Without
/// `RUST_LIB_BACKTRACE`, libraries' backtraces (`std::backtrace::Backtrace::capture`,
/// anyhow's) follow `RUST_BACKTRACE`: every error made and handled on a busy path —
/// a refused call, a trapped instance; each dropped store, in earlier measurements —
/// would walk the stack for a trace the node never prints (BENCHMARKS.md,
/// "RUST_BACKTRACE"). A panic's backtrace still follows `RUST_BACKTRACE`;
/// `RUST_LIB_BACKTRACE=1` asks for library ones.
fn quiet_library_backtraces() {
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        // Before any other thread exists: nothing reads the environment meanwhile.
        std::env::set_var("RUST_LIB_BACKTRACE", "0");
    }
}

/// Writes the Kubernetes manifests of the split deployment at `path`.
fn manifests(path: &Path, options: kubernetes::Options, out: Option<&Path>) -> ExitCode {
    // The secrets `$NAME` values read are the cluster's, not this machine's.
    let (loaded, environment) = declaring_environment(|| load_deployment(path, None));
    let deployment = match loaded {
        Ok(deployment) => deployment,
        Err(code) => return code,
    };
    let manifests = match kubernetes::generate(&deployment, &environment, &options) {
        Ok(manifests) => manifests,
        Err(error) => {
            eprintln!("modhost: {error:#}");
            return ExitCode::from(EXIT_INVALID);
        }
    };
    let yaml = manifests.to_yaml(path);
    match out {
        None => {
            print!("{yaml}");
            ExitCode::SUCCESS
        }
        Some(out) => match std::fs::write(out, yaml) {
            Ok(()) => {
                println!(
                    "{}: {} objects for {} nodes",
                    out.display(),
                    manifests.objects.len(),
                    deployment.nodes.len()
                );
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("modhost: writing {}: {error}", out.display());
                ExitCode::FAILURE
            }
        },
    }
}

/// A path as the admin API should read it: absolute, since it runs elsewhere.
fn absolute(path: &Path) -> String {
    std::path::absolute(path)
        .unwrap_or_else(|_| path.to_path_buf())
        .display()
        .to_string()
}

/// Sends one request to the admin API and prints its answer: exit 0 when it was done,
/// 1 when it was refused (the answer says why), 2 when the request itself was wrong.
fn admin_request(
    admin: &AdminArgs,
    method: http::Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> ExitCode {
    let Some(runtime) = async_runtime(Runtime::Tool) else {
        return ExitCode::FAILURE;
    };
    let answer = runtime.block_on(modhost::admin::client::request(
        &admin.admin,
        &admin.token,
        method,
        path,
        body,
    ));
    match answer {
        Ok((status, json)) => {
            let text = serde_json::to_string_pretty(&json).unwrap_or_default();
            if status.is_success() {
                println!("{text}");
                ExitCode::SUCCESS
            } else {
                eprintln!("{text}");
                eprintln!("modhost: the admin API answered {status}");
                if status.is_client_error() && status != http::StatusCode::CONFLICT {
                    ExitCode::from(EXIT_INVALID)
                } else {
                    ExitCode::FAILURE
                }
            }
        }
        Err(error) => {
            eprintln!("modhost: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// What an async runtime is for: serving traffic wants every core; a one-shot tool
/// command (the CLI's admin client, reading the dead letters) wants one thread.
enum Runtime {
    Serving,
    Tool,
}

/// Builds the runtime a command needs, or says why it cannot (the caller exits 1).
fn async_runtime(kind: Runtime) -> Option<tokio::runtime::Runtime> {
    let mut builder = match kind {
        Runtime::Serving => tokio::runtime::Builder::new_multi_thread(),
        Runtime::Tool => tokio::runtime::Builder::new_current_thread(),
    };
    match builder.enable_all().build() {
        Ok(runtime) => Some(runtime),
        Err(error) => {
            eprintln!("modhost: cannot start the async runtime: {error}");
            None
        }
    }
}
