//! A node: one running modhost process, serving the modules of a deployment.
//!
//! Starting a node is: build the engine, load every module (compile or take from the
//! cache, link, pre-instantiate), bind the gateway, serve until told to stop. Nothing is
//! served until every module has loaded, so `/readyz` answering 200 means the whole
//! deployment is up.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;

use crate::admin::Admin;
use crate::calls::dispatch::{Remote, RemoteModule};
use crate::capabilities::events::{self, EventsService};
use crate::capabilities::sql::Database;
use crate::deployment::Deployment;
use crate::engine::{self, Engine, EngineSettings};
use crate::gateway::routes::RouteTable;
use crate::gateway::Gateway;
use crate::mesh::Mesh;
use crate::registry::{LoadError, Registry};

/// Why a node could not start.
#[derive(Debug)]
pub enum StartError {
    /// The engine or its compile cache could not be set up.
    Engine(anyhow::Error),
    /// One or more modules failed to load.
    Modules(Vec<LoadError>),
    /// The gateway or the mesh could not bind its address.
    Bind(SocketAddr, std::io::Error),
    /// The mesh (certificates, peers) could not be set up.
    Mesh(anyhow::Error),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Engine(error) => write!(f, "engine: {error:#}"),
            StartError::Modules(errors) => {
                for (i, error) in errors.iter().enumerate() {
                    if i > 0 {
                        writeln!(f)?;
                    }
                    write!(f, "{error}")?;
                }
                Ok(())
            }
            StartError::Bind(addr, error) => write!(f, "cannot listen on {addr}: {error}"),
            StartError::Mesh(error) => write!(f, "mesh: {error:#}"),
        }
    }
}

impl std::error::Error for StartError {}

/// A node with every module loaded, not yet serving.
pub struct Node {
    deployment: Deployment,
    engine: Engine,
    registry: Arc<Registry>,
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
        let registry = Registry::load(&engine, &deployment).map_err(StartError::Modules)?;
        let mesh = Mesh::new(&deployment)
            .map_err(StartError::Mesh)?
            .map(Arc::new);
        if let Some(mesh) = &mesh {
            let modules = deployment
                .modules
                .values()
                .filter(|module| !deployment.is_local(&module.name))
                .map(|module| {
                    (
                        module.name.clone(),
                        RemoteModule {
                            nodes: deployment.nodes_of(&module.name).to_vec(),
                            timeout: module.limits.timeout.duration(),
                        },
                    )
                })
                .collect();
            registry.directory().connect(Remote {
                mesh: mesh.clone(),
                modules,
            });
        }
        Ok(Node {
            deployment,
            engine,
            registry: Arc::new(registry),
            mesh,
        })
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

    /// Opens the database of every module that has one and applies its migrations. A
    /// module whose database fails to open or migrate does not start — its requests
    /// and calls get 503 with the reason — while every other module serves.
    pub async fn open_databases(&self) {
        for spec in self.deployment.modules.values() {
            let (Some(database), Some(module)) = (&spec.database, self.registry.get(&spec.name))
            else {
                continue;
            };
            let opened = Database::open(
                &spec.name,
                database,
                &self.deployment.data_dir,
                spec.limits.timeout.duration(),
            )
            .await;
            // A module that publishes or receives events keeps its outbox and inbox in
            // its database, next to its own tables.
            let opened = match opened {
                Ok(opened) if !spec.publishes.is_empty() || !spec.subscribes.is_empty() => {
                    match events::tables::create(&opened).await {
                        Ok(()) => Ok(opened),
                        Err(error) => Err(anyhow::anyhow!(
                            "creating its event outbox and inbox: {error:?}"
                        )),
                    }
                }
                other => other,
            };
            match opened {
                Ok(opened) => {
                    tracing::info!(module = %spec.name, backend = opened.backend(), "database ready");
                    let _ = module.database.set(Arc::new(opened));
                }
                Err(error) => {
                    let reason = format!("{error:#}");
                    tracing::error!(module = %spec.name, %reason, "module not started: its database did not open");
                    let _ = module.broken.set(reason);
                }
            }
        }
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
        let mesh = match (&self.mesh, &self.deployment.node) {
            (Some(_), Some(node)) => match self.deployment.nodes.get(node) {
                Some(spec) => Some(bind(spec.mesh).await?),
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

    /// Serves until `shutdown` resolves, then drains in-flight requests. Events are
    /// relayed and delivered meanwhile; the mesh serves other nodes until the gateway
    /// has drained; then both stop.
    pub async fn serve(self, listeners: Listeners, shutdown: impl Future<Output = ()>) {
        let events = EventsService::start(&self.deployment, &self.registry);
        let gateway = Arc::new(Gateway::new(
            self.deployment.gateway.clone(),
            RouteTable::new(&self.deployment),
            self.registry.clone(),
            &self.deployment.rollout.sticky_header,
        ));
        let (stop_mesh, mesh_stopping) = tokio::sync::watch::channel(false);
        let mut mesh_tasks = Vec::new();
        if let (Some(mesh), Some(listener)) = (&self.mesh, listeners.mesh) {
            mesh_tasks.push(tokio::spawn(crate::mesh::server::serve(
                listener,
                mesh.tls().clone(),
                self.registry.directory().clone(),
                gateway.clone(),
                wait_for(mesh_stopping.clone()),
            )));
            mesh_tasks.push(tokio::spawn(watch_certificates(
                mesh.clone(),
                mesh_stopping.clone(),
            )));
        }
        if let (Some(settings), Some(listener)) = (&self.deployment.admin, listeners.admin) {
            let admin = Arc::new(Admin::new(
                settings.token.clone(),
                self.deployment.clone(),
                self.registry.clone(),
                self.mesh.clone(),
            ));
            mesh_tasks.push(tokio::spawn(
                admin.serve(listener, wait_for(mesh_stopping.clone())),
            ));
        }
        gateway.serve(listeners.gateway, shutdown).await;
        let _ = stop_mesh.send(true);
        for task in mesh_tasks {
            let _ = task.await;
        }
        if let Some(events) = events {
            events
                .stop(self.deployment.gateway.shutdown_grace.duration())
                .await;
        }
    }
}

/// Resolves on the first SIGTERM or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = terminate.recv() => tracing::info!("SIGTERM received"),
                    _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot watch SIGTERM; only Ctrl-C stops the node");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("Ctrl-C received");
    }
}

/// Resolves once `stopping` turns true (or its sender is gone).
async fn wait_for(mut stopping: tokio::sync::watch::Receiver<bool>) {
    while !*stopping.borrow() {
        if stopping.changed().await.is_err() {
            return;
        }
    }
}

/// Reloads the mesh's certificates when their files change, until `stopping`.
async fn watch_certificates(mesh: Arc<Mesh>, mut stopping: tokio::sync::watch::Receiver<bool>) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(CERTIFICATE_CHECK) => {}
            _ = stopping.changed() => return,
        }
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
