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

impl Broker {
    /// Starts a broker, or `None` (after saying why) when tansu is not installed and
    /// this is not CI.
    pub fn start() -> Option<Broker> {
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
        let proxy = Proxy::start(upstream);
        let log = std::fs::File::create(dir.path().join("tansu.log")).expect("tansu log");
        let child = Command::new(tansu)
            .arg("broker")
            .arg("--listener-url")
            .arg(format!("tcp://{upstream}"))
            .arg("--advertised-listener-url")
            .arg(format!("tcp://{}", proxy.addr))
            .arg("--storage-engine")
            .arg("memory://tansu/")
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

    /// The bootstrap address clients use (the proxy's).
    pub fn address(&self) -> String {
        self.proxy.addr.to_string()
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

/// A TCP proxy to the broker on its own thread and runtime.
struct Proxy {
    addr: SocketAddr,
    cut: Arc<AtomicBool>,
}

impl Proxy {
    fn start(upstream: SocketAddr) -> Proxy {
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
                    tokio::spawn(relay(client, upstream, flag.clone()));
                }
            });
        });
        Proxy { addr, cut }
    }
}

/// Copies bytes both ways until either side closes or the proxy is cut.
async fn relay(mut client: tokio::net::TcpStream, upstream: SocketAddr, cut: Arc<AtomicBool>) {
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
