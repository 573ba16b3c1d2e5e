//! A real Kafka-protocol broker for a test: tansu (a Kafka-compatible broker written
//! in Rust) on a free loopback port, in memory, behind a TCP proxy the test can cut.
//!
//! Clients only ever see the proxy (it is the broker's advertised address).
//! [`Broker::stop`] takes the broker away as a crashed or partitioned one goes: every
//! open connection is closed, new ones are closed at once, and the broker process
//! itself is stopped (SIGSTOP) until [`Broker::resume`]. It keeps what it stored
//! meanwhile, as a broker with durable storage does across a restart. A real restart
//! is not possible with tansu 0.6.0: its Postgres storage needs a schema the crate
//! does not ship, and its SQLite (libsql) storage panics on the first produce after a
//! restart (`more or less than one row`, tansu-storage lite.rs) — tried and recorded.
//!
//! [`Broker::start_with`] starts one as a managed Kafka service is reached: over TLS
//! (the proxy terminates it, with a certificate for `localhost` from a CA of its own:
//! [`Broker::ca`] — tansu 0.6.0 takes `--cert` but never uses it), and requiring a
//! SASL login (`--authentication`). tansu 0.6.0 offers SCRAM and OAUTHBEARER only, and
//! checks a SCRAM login against the users it stores; none can be stored on a broker
//! that requires a login (`tansu user create` must log in first, and the memory
//! storage starts empty), so every login is refused: a test can show a refusal, not a
//! login that works.
//!
//! `./test.sh` installs tansu (`cargo install tansu --locked --features
//! dynostore,postgres`) into `~/.cache/modhost/tools` when it is missing. Without it a
//! test is skipped with a message, except under `CI=true`, where it fails.

use std::net::{SocketAddr, TcpListener as StdListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::free_port;

/// A running tansu broker behind a cuttable proxy; stopped when dropped.
pub struct Broker {
    child: Child,
    dir: tempfile::TempDir,
    proxy: Proxy,
}

/// How a test's broker is reached.
#[derive(Debug, Clone, Copy, Default)]
pub struct Reached {
    /// Over TLS, terminated by the proxy.
    pub tls: bool,
    /// With a SASL login.
    pub login: bool,
}

impl Broker {
    /// Starts a broker, or `None` (after saying why) when tansu is not installed and
    /// this is not CI.
    pub fn start() -> Option<Broker> {
        Broker::start_with(Reached::default())
    }

    /// Starts a broker reached as `reached` says, or `None` as [`Self::start`].
    pub fn start_with(reached: Reached) -> Option<Broker> {
        let Some(tansu) = tansu_binary() else {
            let message = "no tansu binary (MODHOST_TANSU, ~/.cache/modhost/tools/bin/tansu or \
                           on PATH): ./test.sh installs it";
            return super::missing("the Kafka half of this test", message);
        };
        let dir = tempfile::Builder::new()
            .prefix("modhost-kafka-")
            .tempdir()
            .expect("temp dir");
        let port = free_port();
        let upstream: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let tls = reached
            .tls
            .then(|| tls_acceptor(&dir.path().join("ca.pem")));
        let proxy = Proxy::start(upstream, tls);
        let log = std::fs::File::create(dir.path().join("tansu.log")).expect("tansu log");
        let mut command = Command::new(tansu);
        command
            .arg("broker")
            .arg("--listener-url")
            .arg(format!("tcp://{upstream}"))
            .arg("--advertised-listener-url")
            .arg(format!("tcp://{}", proxy.address()))
            .arg("--storage-engine")
            .arg("memory://tansu/");
        if reached.login {
            command.arg("--authentication");
        }
        let child = command
            // MODHOST_TANSU_LOG (a RUST_LOG filter) says more when a test is debugged.
            .env(
                "RUST_LOG",
                std::env::var("MODHOST_TANSU_LOG").unwrap_or_else(|_| "warn".to_string()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("tansu log"))
            .stderr(log)
            .spawn()
            .expect("start tansu");
        let broker = Broker { child, dir, proxy };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(upstream).is_err() {
            assert!(
                Instant::now() < deadline,
                "tansu did not listen on {upstream} within 30s:\n{}",
                broker.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(broker)
    }

    /// The bootstrap address clients use (the proxy's): `localhost:PORT` when it is
    /// reached over TLS, the name its certificate carries.
    pub fn address(&self) -> String {
        self.proxy.address()
    }

    /// The PEM file of the CA that signed the proxy's certificate (a broker reached
    /// over TLS).
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// Takes the broker away: closes every connection (new ones at once) and stops
    /// the broker process (SIGSTOP).
    pub fn stop(&self) {
        self.proxy.cut.store(true, Ordering::SeqCst);
        super::send_signal(self.child.id(), "STOP");
    }

    /// Brings the broker back: the process continues (SIGCONT) and takes connections.
    pub fn resume(&self) {
        super::send_signal(self.child.id(), "CONT");
        self.proxy.cut.store(false, Ordering::SeqCst);
    }

    /// What the broker has logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("tansu.log")).unwrap_or_default()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            // The test failed: what the broker said is part of the story. Its log is
            // kept beside the temp dir, which goes away.
            let kept = std::env::temp_dir().join(format!(
                "{}.tansu.log",
                self.dir
                    .path()
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
            ));
            if std::fs::copy(self.dir.path().join("tansu.log"), &kept).is_ok() {
                eprintln!("the broker's log: {}", kept.display());
            }
        }
    }
}

/// A TCP proxy to the broker on its own thread and runtime; terminating TLS when it
/// has an acceptor.
struct Proxy {
    addr: SocketAddr,
    tls: bool,
    cut: Arc<AtomicBool>,
}

/// A TLS acceptor with a certificate for `localhost` from a fresh CA, written to `ca`.
fn tls_acceptor(ca: &std::path::Path) -> tokio_rustls::TlsAcceptor {
    let authority = super::tls::TestCa::new("modhost test Kafka CA");
    authority.write(ca);
    let broker = authority.issue(&["localhost"]);
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_no_client_auth()
    .with_single_cert(
        vec![broker.certificate.der().clone()],
        rustls::pki_types::PrivateKeyDer::Pkcs8(broker.key.serialize_der().into()),
    )
    .expect("the broker's certificate");
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

impl Proxy {
    /// The address clients dial: by name when it speaks TLS.
    fn address(&self) -> String {
        if self.tls {
            format!("localhost:{}", self.addr.port())
        } else {
            self.addr.to_string()
        }
    }

    fn start(upstream: SocketAddr, acceptor: Option<tokio_rustls::TlsAcceptor>) -> Proxy {
        let tls = acceptor.is_some();
        let listener = StdListener::bind("127.0.0.1:0").expect("bind the proxy");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("proxy address");
        let cut = Arc::new(AtomicBool::new(false));
        let flag = cut.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("proxy runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("proxy listener");
                loop {
                    let Ok((client, _)) = listener.accept().await else {
                        continue;
                    };
                    if flag.load(Ordering::SeqCst) {
                        drop(client);
                        continue;
                    }
                    let cut = flag.clone();
                    match acceptor.clone() {
                        None => {
                            tokio::spawn(relay(client, upstream, cut));
                        }
                        Some(acceptor) => {
                            tokio::spawn(async move {
                                // A client that fails the handshake (it does not
                                // trust the certificate) just goes.
                                if let Ok(client) = acceptor.accept(client).await {
                                    relay(client, upstream, cut).await;
                                }
                            });
                        }
                    }
                }
            });
        });
        Proxy { addr, tls, cut }
    }
}

/// Copies bytes both ways until either side closes or the proxy is cut.
async fn relay(
    mut client: impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    upstream: SocketAddr,
    cut: Arc<AtomicBool>,
) {
    let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await else {
        return;
    };
    let copying = tokio::io::copy_bidirectional(&mut client, &mut server);
    tokio::pin!(copying);
    loop {
        tokio::select! {
            _ = &mut copying => return,
            () = tokio::time::sleep(Duration::from_millis(20)) => {
                if cut.load(Ordering::SeqCst) {
                    // Both ends close, as they do when a broker process dies.
                    return;
                }
            }
        }
    }
}

fn tansu_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("MODHOST_TANSU").map(PathBuf::from) {
        return path.is_file().then_some(path);
    }
    let cached = std::env::var_os("HOME")
        .map(PathBuf::from)
        .map(|home| home.join(".cache/modhost/tools/bin/tansu"));
    if let Some(cached) = cached.filter(|path| path.is_file()) {
        return Some(cached);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("tansu"))
            .find(|path| path.is_file())
    })
}
