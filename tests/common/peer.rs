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
        let addr = deployment.nodes[to].mesh.bind();
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
    call_frame_within(caller, interface, function, 2000)
}

/// [`call_frame`], giving the callee `deadline_ms`.
pub fn call_frame_within(
    caller: &str,
    interface: &str,
    function: &str,
    deadline_ms: u64,
) -> Vec<u8> {
    let header = modhost::mesh::wire::CallHeader {
        interface: interface.to_string(),
        function: function.to_string(),
        caller: caller.to_string(),
        depth: 1,
        deadline_ms,
        traceparent: String::new(),
        request_id: "peer-request\nforged log line".to_string(),
    };
    let mut frame = Vec::new();
    header.encode(&mut frame);
    frame
}

/// A node of the deployment gone bad: it holds node `name`'s certificate and listens on
/// its mesh address, and answers every request with `200` and a body that does not end
/// (`bytes` of zeros, 1 MiB at a time). What a node reads from a peer must be bounded
/// by the node, not by the peer.
pub struct EndlessPeer {
    requests: Arc<std::sync::Mutex<Vec<String>>>,
    server: tokio::task::JoinHandle<()>,
}

impl EndlessPeer {
    /// Serves as node `name` of the deployment in `file`.
    pub async fn serve(file: &std::path::Path, name: &str, bytes: u64) -> EndlessPeer {
        let (listener, acceptor) = listen_as(file, name).await;
        let requests = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = requests.clone();
        let server = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (acceptor, seen) = (acceptor.clone(), seen.clone());
                tokio::spawn(async move {
                    let Ok(stream) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(move |request: http::Request<_>| {
                        seen.lock().unwrap().push(request.uri().path().to_string());
                        let body = Endless {
                            left: bytes,
                            chunk: Bytes::from(vec![0u8; 1 << 20]),
                        };
                        async move { Ok::<_, std::convert::Infallible>(http::Response::new(body)) }
                    });
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        EndlessPeer { requests, server }
    }

    /// The paths asked of this peer so far.
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for EndlessPeer {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// The mesh listener of node `name` of the deployment in `file`, and the TLS that
/// proves it is that node.
async fn listen_as(
    file: &std::path::Path,
    name: &str,
) -> (tokio::net::TcpListener, tokio_rustls::TlsAcceptor) {
    let deployment = modhost::node::load_deployment(file).expect("the deployment");
    let settings = deployment.mesh.as_ref().expect("a [mesh] section");
    let names = deployment.nodes.keys().cloned().collect();
    let tls = MeshTls::load(settings, name, names).expect("node certificate");
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.server_config());
    let listener = tokio::net::TcpListener::bind(deployment.nodes[name].mesh.bind())
        .await
        .expect("the node's mesh address is free");
    (listener, acceptor)
}

/// How a [`ScriptedPeer`] answers one request.
pub enum Scripted {
    /// This status and body.
    Answer(u16, Vec<u8>),
    /// This status and body, after a while (a node slow to answer).
    Later(std::time::Duration, u16, Vec<u8>),
    /// Nothing: the peer goes away (its listener and every connection close), as a
    /// node that dies.
    Die,
}

/// A node of the deployment that answers each request as its script says, by path:
/// a target that accepts a module and then dies, or that finds its copy does not
/// match.
pub struct ScriptedPeer {
    requests: Arc<std::sync::Mutex<Vec<String>>>,
    dead: Arc<tokio::sync::watch::Sender<bool>>,
}

impl ScriptedPeer {
    /// Serves as node `name` of the deployment in `file`, answering with `script`.
    pub async fn serve(
        file: &std::path::Path,
        name: &str,
        script: impl Fn(&str) -> Scripted + Send + Sync + 'static,
    ) -> ScriptedPeer {
        let (listener, acceptor) = listen_as(file, name).await;
        let requests = Arc::new(std::sync::Mutex::new(Vec::new()));
        let dead = Arc::new(tokio::sync::watch::Sender::new(false));
        let script = Arc::new(script);
        let (seen, dying) = (requests.clone(), dead.clone());
        tokio::spawn(async move {
            loop {
                let mut died = dying.subscribe();
                let accepted = tokio::select! {
                    accepted = listener.accept() => accepted,
                    _ = died.wait_for(|dead| *dead) => return,
                };
                let Ok((tcp, _)) = accepted else { return };
                let (acceptor, seen, script, dying) = (
                    acceptor.clone(),
                    seen.clone(),
                    script.clone(),
                    dying.clone(),
                );
                tokio::spawn(async move {
                    let Ok(stream) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let killer = dying.clone();
                    let service = hyper::service::service_fn(move |request: http::Request<_>| {
                        let path = request.uri().path().to_string();
                        seen.lock().unwrap().push(path.clone());
                        let respond = |status: u16, body: Vec<u8>| {
                            http::Response::builder()
                                .status(status)
                                .body(Full::new(Bytes::from(body)))
                                .unwrap()
                        };
                        let (wait, answer) = match script(&path) {
                            Scripted::Answer(status, body) => {
                                (std::time::Duration::ZERO, Ok(respond(status, body)))
                            }
                            Scripted::Later(wait, status, body) => {
                                (wait, Ok(respond(status, body)))
                            }
                            Scripted::Die => {
                                killer.send_replace(true);
                                (
                                    std::time::Duration::ZERO,
                                    Err(std::io::Error::other("the node died")),
                                )
                            }
                        };
                        async move {
                            tokio::time::sleep(wait).await;
                            answer
                        }
                    });
                    let serving = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service);
                    let mut died = dying.subscribe();
                    tokio::select! {
                        _ = serving => {}
                        _ = died.wait_for(|dead| *dead) => {}
                    }
                });
            }
        });
        ScriptedPeer { requests, dead }
    }

    /// The paths asked of this peer so far.
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for ScriptedPeer {
    fn drop(&mut self) {
        self.dead.send_replace(true);
    }
}

/// A body of `left` bytes, sent `chunk` at a time.
struct Endless {
    left: u64,
    chunk: Bytes,
}

impl hyper::body::Body for Endless {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        if self.left == 0 {
            return std::task::Poll::Ready(None);
        }
        let size = self
            .chunk
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        self.left -= size as u64;
        let chunk = self.chunk.slice(..size);
        std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(chunk))))
    }
}
