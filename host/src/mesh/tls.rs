//! Node identities on the mesh: mutual TLS with the deployment's own CA.
//!
//! Every node holds a certificate whose DNS name is its node name, signed by the
//! deployment's CA. Both ends of a mesh connection present theirs:
//! - the **client** checks the server's certificate chains to the CA, is in date, and
//!   names the node it meant to reach;
//! - the **server** checks the client's chains to the CA and is in date (rustls), then
//!   that it names a node of the deployment ([`MeshTls::peer_node`]); anything else is
//!   refused and logged.
//!
//! Certificates are files; [`MeshTls::reload_if_changed`] rebuilds both configurations
//! when any of them changes on disk (checked every few seconds), so rotating a node's
//! certificate needs no restart: new connections use the new one.

use anyhow::{Context, Result};
use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use crate::deployment::MeshSettings;

/// The mesh protocol, negotiated with ALPN.
const ALPN: &[u8] = b"h2";

/// The TLS configurations of this node, kept current with the files they came from.
pub struct MeshTls {
    node: String,
    nodes: Vec<String>,
    files: [PathBuf; 3],
    server: ArcSwap<ServerConfig>,
    client: ArcSwap<ClientConfig>,
    stamps: Mutex<Vec<Option<SystemTime>>>,
}

impl MeshTls {
    /// Loads node `node`'s identity and the CA from the files `settings` names;
    /// `nodes` are the names a peer's certificate may carry.
    pub fn load(settings: &MeshSettings, node: &str, nodes: Vec<String>) -> Result<MeshTls> {
        let files = [
            settings.ca.clone(),
            settings.cert_of(node),
            settings.key_of(node),
        ];
        let (server, client) = configs(&files)?;
        Ok(MeshTls {
            node: node.to_string(),
            nodes,
            stamps: Mutex::new(stamps(&files)),
            files,
            server: ArcSwap::from_pointee(server),
            client: ArcSwap::from_pointee(client),
        })
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The configuration to accept peers with, as of now.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.server.load_full()
    }

    /// The configuration to connect to peers with, as of now.
    pub fn client_config(&self) -> Arc<ClientConfig> {
        self.client.load_full()
    }

    /// Rebuilds both configurations if a certificate or key file changed since they
    /// were built. Returns whether they were replaced; on an error (a half-written
    /// file, a key that does not match) the current ones stay.
    pub fn reload_if_changed(&self) -> Result<bool> {
        let now = stamps(&self.files);
        let mut seen = self.stamps.lock().unwrap_or_else(|e| e.into_inner());
        if *seen == now {
            return Ok(false);
        }
        let (server, client) = configs(&self.files)?;
        self.server.store(Arc::new(server));
        self.client.store(Arc::new(client));
        *seen = now;
        Ok(true)
    }

    /// Which node of the deployment the (already chain-verified) certificate `peer`
    /// names, if any.
    pub fn peer_node(&self, peer: &CertificateDer<'_>) -> Option<String> {
        let cert = webpki::EndEntityCert::try_from(peer).ok()?;
        self.nodes
            .iter()
            .find(|name| {
                ServerName::try_from(name.as_str())
                    .is_ok_and(|server| cert.verify_is_valid_for_subject_name(&server).is_ok())
            })
            .cloned()
    }
}

/// The CA's roots, and this node's chain and key, as rustls configurations.
fn configs(files: &[PathBuf; 3]) -> Result<(ServerConfig, ClientConfig)> {
    let [ca, cert, key] = files;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for root in read_certs(ca)? {
        roots
            .add(root)
            .with_context(|| format!("{}: not a usable CA certificate", ca.display()))?;
    }
    let roots = Arc::new(roots);
    let chain = read_certs(cert)?;
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("reading the private key {}", key.display()))?;

    let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
        .build()
        .context("building the peer certificate verifier")?;
    let mut server = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .context("TLS 1.3")?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain.clone(), key.clone_key())
        .with_context(|| format!("{} and its key do not match", cert.display()))?;
    server.alpn_protocols = vec![ALPN.to_vec()];

    let mut client = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .context("TLS 1.3")?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .with_context(|| format!("{} and its key do not match", cert.display()))?;
    client.alpn_protocols = vec![ALPN.to_vec()];
    Ok((server, client))
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("reading certificates from {}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{}: not PEM certificates", path.display()))?;
    if certs.is_empty() {
        anyhow::bail!("{} holds no certificate", path.display());
    }
    Ok(certs)
}

fn stamps(files: &[PathBuf]) -> Vec<Option<SystemTime>> {
    files
        .iter()
        .map(|file| std::fs::metadata(file).and_then(|m| m.modified()).ok())
        .collect()
}
