//! Speaking to a node's mesh listener as one of its peers would — with a real node
//! certificate of the deployment — but sending whatever the test wants: forged call
//! frames, forwarded requests, admin requests. What a compromised or buggy peer can
//! send, a test can.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::sync::Arc;

use modhost::mesh::tls::MeshTls;

/// A connection to node `to`'s mesh, authenticated as node `from`.
pub struct Peer {
    sender: SendRequest<Full<Bytes>>,
    to: String,
}

impl Peer {
    /// Connects to node `to` of the deployment in `file`, with node `from`'s
    /// certificate.
    pub async fn connect(file: &std::path::Path, from: &str, to: &str) -> Peer {
        let deployment = modhost::node::load_deployment(file).expect("the deployment");
        let settings = deployment.mesh.as_ref().expect("a [mesh] section");
        let names = deployment.nodes.keys().cloned().collect();
        let tls = Arc::new(MeshTls::load(settings, from, names).expect("node certificate"));
        let addr = deployment.nodes[to].mesh;
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let name = rustls::pki_types::ServerName::try_from(to.to_string()).unwrap();
        let stream = tokio_rustls::TlsConnector::from(tls.client_config())
            .connect(name, tcp)
            .await
            .expect("TLS with the node");
        let (sender, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .handshake(TokioIo::new(stream))
            .await
            .expect("HTTP/2 with the node");
        tokio::spawn(connection);
        Peer {
            sender,
            to: to.to_string(),
        }
    }

    /// POSTs `body` to `path`: the status and the answer's bytes.
    pub async fn post(&mut self, path: &str, body: Vec<u8>) -> (u16, Bytes) {
        self.send("POST", path, body).await
    }

    /// Sends `method path` with `body`: the status and the answer's bytes.
    pub async fn send(&mut self, method: &str, path: &str, body: Vec<u8>) -> (u16, Bytes) {
        let request = http::Request::builder()
            .method(method)
            .uri(format!("https://{}{path}", self.to))
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let response = self.sender.send_request(request).await.expect("answer");
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, body)
    }
}

/// A call frame for `function` of `interface` with no parameters, claiming to come from
/// module `caller`.
pub fn call_frame(caller: &str, interface: &str, function: &str) -> Vec<u8> {
    let header = modhost::mesh::wire::CallHeader {
        interface: interface.to_string(),
        function: function.to_string(),
        caller: caller.to_string(),
        depth: 1,
        deadline_ms: 2000,
        traceparent: String::new(),
    };
    let mut frame = Vec::new();
    header.encode(&mut frame);
    frame
}
