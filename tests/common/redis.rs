//! A real Redis server for a test: `redis-server` from the machine's packages, on a
//! free loopback port, keeping nothing on disk, stopped when dropped.
//!
//! Without the binary a test is skipped with a message, except under `CI=true`, where
//! it fails: CI must run every test (`.ci/run` installs the redis-server package).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::free_port;

/// A running Redis server.
pub struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    /// Starts a server, or `None` (after saying why) when this machine has no
    /// `redis-server` and this is not CI.
    pub fn start() -> Option<Redis> {
        let binary = ["/usr/bin/redis-server", "/usr/local/bin/redis-server"]
            .into_iter()
            .find(|path| std::path::Path::new(path).is_file());
        let Some(binary) = binary else {
            let why = "no redis-server binary: install the redis-server package";
            return super::missing("the Redis half of this test", why);
        };
        let port = free_port();
        let mut child = Command::new(binary)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        // It says when it accepts connections; wait for that line, not for a time.
        let stdout = child.stdout.take().expect("redis-server's stdout");
        let (ready, waiting) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut said = Vec::new();
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                // Reading on after it is ready keeps the server from blocking on a full
                // pipe.
                if line.contains("Ready to accept connections") {
                    let _ = ready.send(Ok(()));
                }
                said.push(line);
            }
            let _ = ready.send(Err(said.join("\n")));
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        match waiting.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(Ok(())) => Some(Redis { child, port }),
            Ok(Err(said)) => panic!("redis-server stopped before it was ready:\n{said}"),
            Err(_) => panic!("redis-server was not ready within 30s"),
        }
    }

    /// The server's URL, database `db`.
    pub fn url(&self, db: u32) -> String {
        format!("redis://127.0.0.1:{}/{db}", self.port)
    }

    /// Every key on the server (`KEYS *`), to see what the host wrote where.
    pub fn keys(&self) -> Vec<String> {
        let output = Command::new("redis-cli")
            .args(["-p", &self.port.to_string(), "--raw", "KEYS", "*"])
            .output()
            .expect("run redis-cli");
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(str::to_string)
            .filter(|line| !line.is_empty())
            .collect()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
