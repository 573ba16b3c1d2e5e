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

use crate::capabilities::events::{self, EventsService};
use crate::capabilities::sql::Database;
use crate::deployment::Deployment;
use crate::engine::{self, Engine, EngineSettings};
use crate::gateway::routes::RouteTable;
use crate::gateway::Gateway;
use crate::registry::{LoadError, Registry};

/// Why a node could not start.
#[derive(Debug)]
pub enum StartError {
    /// The engine or its compile cache could not be set up.
    Engine(anyhow::Error),
    /// One or more modules failed to load.
    Modules(Vec<LoadError>),
    /// The gateway could not bind its address.
    Bind(SocketAddr, std::io::Error),
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
            StartError::Bind(addr, error) => write!(f, "gateway: cannot listen on {addr}: {error}"),
        }
    }
}

impl std::error::Error for StartError {}

/// A node with every module loaded, not yet serving.
pub struct Node {
    deployment: Deployment,
    engine: Engine,
    registry: Arc<Registry>,
}

impl Node {
    /// Builds the engine and loads every module of `deployment`.
    pub fn load(deployment: Deployment) -> Result<Node, StartError> {
        let engine = Engine::new(
            EngineSettings::for_deployment(&deployment),
            Some(&engine::cache_dir(&deployment.data_dir)),
        )
        .map_err(StartError::Engine)?;
        let registry = Registry::load(&engine, &deployment).map_err(StartError::Modules)?;
        Ok(Node {
            deployment,
            engine,
            registry: Arc::new(registry),
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

    /// Binds the gateway's listener (the deployment's `gateway.listen`).
    pub async fn bind(&self) -> Result<TcpListener, StartError> {
        let addr = self.deployment.gateway.listen;
        TcpListener::bind(addr)
            .await
            .map_err(|error| StartError::Bind(addr, error))
    }

    /// Serves on `listener` until `shutdown` resolves, then drains in-flight requests.
    /// Events are relayed and delivered meanwhile, and stop after the gateway.
    pub async fn serve(self, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        let events = EventsService::start(&self.deployment, &self.registry);
        let gateway = Arc::new(Gateway::new(
            self.deployment.gateway.clone(),
            RouteTable::new(&self.deployment),
            self.registry.clone(),
        ));
        gateway.serve(listener, shutdown).await;
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
