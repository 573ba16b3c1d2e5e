//! A node: one running modhost process, serving the modules of a deployment.
//!
//! The node wires every layer below it together, and only it does:
//! - the capabilities (the host's standard ones, and calls to other modules through
//!   the dispatcher) and the registry that loads the modules with them;
//! - on a split deployment, the mesh: the dispatcher's and the gateway's transport to
//!   other nodes, and a listener handed its inbound handlers (calls, forwarded HTTP,
//!   admin) — the mesh never reaches up into the gateway or the admin API itself;
//! - the gateway, the admin API, and the capabilities' background work.
//!
//! Starting a node is: validate the deployment ([`load_deployment`]), load every module
//! ([`Node::load`]), open them ([`Node::open`]: databases, tables…), bind the
//! listeners, serve until told to stop. Nothing is served until every module has
//! loaded, so `/readyz` answering 200 means the whole deployment is up.

pub mod watch;

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use tokio::net::TcpListener;

#[cfg(feature = "mesh")]
use crate::admin::peer::PeerRequests;
use crate::admin::{Admin, Reload};
use crate::calls::{Calls, Dispatcher};
use crate::capabilities::Capabilities;
use crate::deployment::{ConfigErrors, Deployment};
use crate::engine::{self, Engine, EngineSettings};
use crate::gateway::access::Guards;
use crate::gateway::routes::RouteTable;
use crate::gateway::Gateway;
#[cfg(feature = "mesh")]
use crate::mesh::server::{ForwardedHttp, Handlers};
#[cfg(feature = "mesh")]
use crate::mesh::Mesh;
use crate::module::directory::{Directory, Placement};
use crate::module::placing::{PlaceRefused, Placed};
use crate::module::{LoadError, Registry};
#[cfg(feature = "mesh")]
use crate::runtime::responses::Body;
use crate::runtime::shutdown::Shutdown;
use crate::runtime::BoxFuture;
use crate::telemetry::metrics::{metrics, Sampled};
use crate::telemetry::overview;

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The engine or its compile cache could not be set up.
    #[error("engine: {0:#}")]
    Engine(anyhow::Error),
    /// One or more modules failed to load.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Modules(Vec<LoadError>),
    /// The gateway or the mesh could not bind its address.
    #[error("cannot listen on {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
    /// The mesh (certificates, peers) could not be set up.
    #[error("mesh: {0:#}")]
    Mesh(anyhow::Error),
}

/// The host's capabilities, as a node runs them: the standard ones, then calls to
/// other modules through `dispatcher`.
fn capabilities(dispatcher: &Arc<Dispatcher>) -> Capabilities {
    let mut list = Capabilities::standard();
    list.push(Arc::new(Calls::new(dispatcher.clone())));
    Capabilities::new(list)
}

/// Reads and validates the deployment file at `path`: the host's own sections and
/// every capability's settings. Every problem is reported, each naming the file, the
/// key and what is wrong.
pub fn load_deployment(path: &Path) -> Result<Deployment, ConfigErrors> {
    let capabilities = Capabilities::new(Capabilities::standard());
    let deployment = Deployment::load_with(path, &capabilities.settings())?;
    let problems = capabilities.validate(&deployment);
    if problems.is_empty() {
        Ok(deployment)
    } else {
        Err(ConfigErrors(problems))
    }
}

/// Reads the node's deployment file again, as the node was started with it (the same
/// `--node` and command-line overrides): what a reload applies.
pub type ReadDeployment = Arc<dyn Fn() -> Result<Deployment, ConfigErrors> + Send + Sync>;

/// A node with every module loaded, not yet serving.
pub struct Node {
    deployment: Deployment,
    /// How to read the deployment file again, when the node can (`SIGHUP`, `POST
    /// /v1/reload`).
    reading: Option<ReadDeployment>,
    /// `SIGHUP`s received since the node began to start, to reload on once it serves.
    hangups: Option<Hangups>,
    engine: Engine,
    registry: Arc<Registry>,
    dispatcher: Arc<Dispatcher>,
    #[cfg(feature = "mesh")]
    mesh: Option<Arc<Mesh>>,
}

/// The sockets a node serves on.
pub struct Listeners {
    /// The gateway's: HTTP from clients.
    pub gateway: TcpListener,
    /// The mesh's: other nodes, over mutual TLS (split deployments only).
    pub mesh: Option<TcpListener>,
    /// The admin API's, when the deployment (or node) has one.
    pub admin: Option<TcpListener>,
}

/// How often the mesh looks for rotated certificate files.
#[cfg(feature = "mesh")]
const CERTIFICATE_CHECK: std::time::Duration = std::time::Duration::from_secs(2);

impl Node {
    /// Builds the engine and loads the modules of `deployment` that run on this node
    /// (all of them, unless [`Deployment::select_node`] chose one node of several); on
    /// a split deployment, sets up the mesh to the others.
    pub fn load(deployment: Deployment) -> Result<Node, StartError> {
        let engine = Engine::new(
            EngineSettings::for_deployment(&deployment),
            Some(&engine::cache_dir(&deployment.data_dir)),
        )
        .map_err(StartError::Engine)?;
        let directory = Arc::new(Directory::new(Placement::default()));
        let dispatcher = Arc::new(Dispatcher::new(directory.clone(), deployment.clone()));
        let registry = Registry::load(&engine, &deployment, capabilities(&dispatcher), directory)
            .map_err(StartError::Modules)?;
        // A build without the mesh refuses a split deployment when it loads it
        // (deployment::build).
        #[cfg(feature = "mesh")]
        let mesh = Mesh::new(&deployment)
            .map_err(StartError::Mesh)?
            .map(Arc::new);
        #[cfg(feature = "mesh")]
        if let Some(mesh) = &mesh {
            dispatcher.connect(mesh.clone());
        }
        let registry = Arc::new(registry);
        // The modules' versions and load are read from the registry at each scrape.
        let sampled: Arc<dyn Sampled> = registry.clone();
        metrics().sample_from(Arc::downgrade(&sampled));
        metrics().node_info(
            deployment.node.as_deref().unwrap_or_default(),
            &deployment.app_name,
        );
        Ok(Node {
            deployment,
            reading: None,
            hangups: None,
            engine,
            registry,
            dispatcher,
            #[cfg(feature = "mesh")]
            mesh,
        })
    }

    /// Whether this node is one of a split deployment's, reaching the others.
    fn has_mesh(&self) -> bool {
        #[cfg(feature = "mesh")]
        return self.mesh.is_some();
        #[cfg(not(feature = "mesh"))]
        false
    }

    /// This node, able to read its deployment file again with `read` and apply the new
    /// placement while it serves: on each of `hangups` (`SIGHUP`), and through the
    /// admin API.
    pub fn reloading_with(self, read: ReadDeployment, hangups: Hangups) -> Node {
        Node {
            reading: Some(read),
            hangups: Some(hangups),
            ..self
        }
    }

    /// The deployment this node serves.
    pub fn deployment(&self) -> &Deployment {
        &self.deployment
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The loaded modules.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// Opens every module: what its capabilities keep for it (its database and
    /// migrations, its event tables…). A module that fails to open does not start —
    /// its requests and calls get 503 with the reason — while every other module
    /// serves.
    pub async fn open(&self) {
        self.registry.open().await;
    }

    /// Binds the gateway's listener (`gateway.listen`, or the node's `listen`) and, on
    /// a split deployment, the mesh's (the node's `mesh`).
    pub async fn bind(&self) -> Result<Listeners, StartError> {
        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|error| StartError::Bind(addr, error))
        };
        let gateway = bind(self.deployment.gateway.listen).await?;
        let mesh = match (self.has_mesh(), &self.deployment.node) {
            (true, Some(node)) => match self.deployment.nodes.get(node) {
                Some(spec) => Some(bind(spec.mesh.bind()).await?),
                None => None,
            },
            _ => None,
        };
        let admin = match self
            .deployment
            .admin
            .as_ref()
            .and_then(|admin| admin.listen)
        {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        };
        Ok(Listeners {
            gateway,
            mesh,
            admin,
        })
    }

    /// Serves until `shutdown` resolves, then drains in-flight requests. The
    /// capabilities' background work (event relays and deliveries) runs meanwhile; the
    /// mesh and the admin API serve until the gateway has drained; then all stop.
    pub async fn serve(self, listeners: Listeners, shutdown: impl Future<Output = ()>) {
        let grace = self.deployment.gateway.shutdown_grace.duration();
        self.registry.start();
        let gateway = Arc::new(Gateway::new(
            self.deployment.gateway.clone(),
            RouteTable::new(&self.deployment),
            Guards::new(&self.deployment.access),
            self.registry.clone(),
            self.dispatcher.clone(),
            &self.deployment.rollout.sticky_header,
        ));
        let stopping = Shutdown::new();
        let after_gateway = Shutdown::new();
        let mut tasks = Vec::new();
        // What the dashboard shows: a short history of this node's metrics, which the
        // admin API reads, here or asked by another node over the mesh.
        overview::history().set_slow(self.deployment.telemetry.slow_request);
        if self.has_mesh() || listeners.admin.is_some() {
            let stopped = after_gateway.clone();
            tasks.push(tokio::spawn(overview::record(async move {
                stopped.triggered().await
            })));
        }
        #[cfg(feature = "mesh")]
        if let (Some(mesh), Some(listener)) = (&self.mesh, listeners.mesh) {
            let handlers = Handlers {
                calls: self.dispatcher.clone(),
                http: Arc::new(ForwardedToGateway(gateway.clone())),
                admin: Arc::new(PeerRequests::new(self.registry.clone(), mesh.clone())),
            };
            tasks.push(tokio::spawn(crate::mesh::server::serve(
                listener,
                mesh.tls().clone(),
                handlers,
                after_gateway.clone(),
                grace,
            )));
            tasks.push(tokio::spawn(watch_certificates(
                mesh.clone(),
                after_gateway.clone(),
            )));
        }
        let reloader = self.reading.clone().map(|read| {
            Arc::new(Reloader {
                read,
                registry: self.registry.clone(),
            })
        });
        if let (Some(reloader), Some(hangups)) = (&reloader, self.hangups) {
            tasks.push(tokio::spawn(reload_on_hangup(
                reloader.clone(),
                hangups,
                after_gateway.clone(),
            )));
        }
        if let (Some(settings), Some(listener)) = (&self.deployment.admin, listeners.admin) {
            let mut admin = Admin::new(
                settings.token.clone(),
                self.deployment.clone(),
                self.registry.clone(),
            );
            if let Some(reloader) = &reloader {
                admin = admin.reloading(reloader.clone());
            }
            #[cfg(feature = "mesh")]
            let admin = admin.reaching(self.mesh.clone());
            let admin = Arc::new(admin);
            tasks.push(tokio::spawn(admin.serve(listener, after_gateway.clone())));
        }
        let stop_on_signal = async {
            shutdown.await;
            stopping.trigger();
        };
        // The gateway serves until the signal, and returns once it has drained.
        tokio::join!(
            gateway.clone().serve(listeners.gateway, stopping.clone()),
            stop_on_signal
        );
        after_gateway.trigger();
        for task in tasks {
            let _ = task.await;
        }
        self.registry.stop(grace).await;
    }
}

/// The gateway, as the mesh server sees it: what serves requests forwarded by other
/// nodes.
#[cfg(feature = "mesh")]
struct ForwardedToGateway(Arc<Gateway>);

#[cfg(feature = "mesh")]
impl ForwardedHttp for ForwardedToGateway {
    fn serve<'a>(
        &'a self,
        peer: &'a str,
        module: &'a str,
        request: hyper::Request<hyper::body::Incoming>,
    ) -> BoxFuture<'a, hyper::Response<Body>> {
        Box::pin(self.0.serve_forwarded(peer, module, request))
    }
}

/// Reads the node's deployment file again and applies its placement: what `SIGHUP`
/// and the admin API's `POST /v1/reload` do.
struct Reloader {
    read: ReadDeployment,
    registry: Arc<Registry>,
}

impl Reloader {
    async fn reload(&self) -> Result<Placed, PlaceRefused> {
        let read = self.read.clone();
        // Reading validates the whole file (and may read its base and certificates):
        // file I/O, off the async threads.
        let new = tokio::task::spawn_blocking(move || read())
            .await
            .map_err(|error| PlaceRefused::CannotStart {
                module: String::from("(host)"),
                reason: format!("reading the deployment did not finish: {error}"),
            })?
            .map_err(PlaceRefused::Invalid)?;
        let outcome = self.registry.reload(&new).await;
        match &outcome {
            Ok(placed) => tracing::info!(
                started = ?placed.started,
                stopped = ?placed.stopped,
                "reload: the deployment's placement applied"
            ),
            Err(refused) => tracing::error!(
                reason = %refused,
                "reload: refused; the node serves as it did"
            ),
        }
        outcome
    }
}

impl Reload for Reloader {
    fn reload(&self) -> BoxFuture<'_, Result<Placed, PlaceRefused>> {
        Box::pin(Reloader::reload(self))
    }
}

/// The `SIGHUP`s a node receives, watched from the moment it begins to start: one
/// received while it loads its modules is not the signal's default (the process
/// ends) but a reload once it serves.
pub struct Hangups {
    #[cfg(unix)]
    signal: Option<tokio::signal::unix::Signal>,
}

impl Hangups {
    /// Watches `SIGHUP` from now on (within the async runtime).
    pub fn watch() -> Hangups {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let signal = signal(SignalKind::hangup())
                .map_err(|error| {
                    tracing::warn!(%error, "cannot watch SIGHUP; reload through the admin API");
                })
                .ok();
            Hangups { signal }
        }
        #[cfg(not(unix))]
        Hangups {}
    }

    /// The next `SIGHUP`; never, where they cannot be watched.
    async fn next(&mut self) {
        #[cfg(unix)]
        if let Some(signal) = &mut self.signal {
            if signal.recv().await.is_some() {
                return;
            }
        }
        std::future::pending::<()>().await;
    }
}

/// Reloads the deployment file on every `SIGHUP`, until `shutdown`.
async fn reload_on_hangup(reloader: Arc<Reloader>, mut hangups: Hangups, shutdown: Shutdown) {
    loop {
        tokio::select! {
            () = hangups.next() => {
                tracing::info!("SIGHUP received: reloading the deployment file");
                let _ = reloader.reload().await;
            }
            () = shutdown.triggered() => return,
        }
    }
}

/// A future that resolves on the first SIGTERM or SIGINT (Ctrl-C) from now on: the
/// signals are taken over when this is called, not when the future is first polled,
/// so one that comes while the node still starts stops it gracefully once it serves
/// (instead of ending the process with the default action).
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let terminate = signal(SignalKind::terminate());
        let interrupt = signal(SignalKind::interrupt());
        async move {
            match (terminate, interrupt) {
                (Ok(mut terminate), Ok(mut interrupt)) => {
                    tokio::select! {
                        _ = terminate.recv() => tracing::info!("SIGTERM received"),
                        _ = interrupt.recv() => tracing::info!("SIGINT received"),
                    }
                }
                (Err(err), _) | (_, Err(err)) => {
                    tracing::warn!(error = %err, "cannot watch SIGTERM; only Ctrl-C stops the node");
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async move {
            let _ = tokio::signal::ctrl_c().await;
            tracing::info!("Ctrl-C received");
        }
    }
}

/// Reloads the mesh's certificates when their files change, until `shutdown`.
#[cfg(feature = "mesh")]
async fn watch_certificates(mesh: Arc<Mesh>, shutdown: Shutdown) {
    while shutdown.sleep(CERTIFICATE_CHECK).await {
        match mesh.tls().reload_if_changed() {
            Ok(true) => tracing::info!(node = %mesh.tls().node(), "mesh: certificates reloaded"),
            Ok(false) => {}
            Err(error) => tracing::warn!(
                error = %format!("{error:#}"),
                "mesh: the certificate files changed but do not load; keeping the current ones"
            ),
        }
    }
}
