//! A real Prometheus server for a test: Debian's `prometheus`, on a free loopback port,
//! its database in a temporary directory, scraping the given targets every second,
//! stopped when dropped. Queries go through its HTTP API, as an operator's would.
//!
//! Without the binary a test is skipped with a message, except under `CI=true`, where
//! it fails: CI must run every test (`.ci/run` installs the prometheus package).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{client, free_port, send};

/// A running Prometheus server.
pub struct Prometheus {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

/// One series of an instant query's answer: its labels and its value.
#[derive(Debug, Clone)]
pub struct Sample {
    /// The series' labels (`__name__` among them for a plain selector).
    pub labels: serde_json::Map<String, serde_json::Value>,
    /// Its value at the query's time.
    pub value: f64,
}

impl Sample {
    /// Label `name`, or "" when the series has none.
    pub fn label(&self, name: &str) -> &str {
        self.labels
            .get(name)
            .and_then(|value| value.as_str())
            .unwrap_or_default()
    }
}

impl Prometheus {
    /// Starts a server scraping `targets` (`host:port`, path `/metrics`) every second,
    /// and waits until it is ready; `None` (after saying why) when this machine has no
    /// `prometheus` and this is not CI.
    pub async fn start(targets: &[String]) -> Option<Prometheus> {
        let binary = ["/usr/bin/prometheus", "/usr/local/bin/prometheus"]
            .into_iter()
            .find(|path| std::path::Path::new(path).is_file());
        let Some(binary) = binary else {
            let why = "no prometheus binary: install the prometheus package";
            return super::missing("this test", why);
        };
        let dir = tempfile::tempdir().expect("a directory for Prometheus");
        let targets: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: modhost\n    scrape_interval: 1s\n    \
             scrape_timeout: 900ms\n    static_configs:\n      - targets: [{}]\n",
            targets.join(", ")
        );
        let config_file = dir.path().join("prometheus.yml");
        std::fs::write(&config_file, config).expect("write prometheus.yml");
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("a log file");
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start prometheus");
        let mut prometheus = Prometheus {
            child,
            port,
            _dir: dir,
        };
        // It answers /-/ready with 200 once it serves queries; before it listens, the
        // connection is refused.
        let http = client(false);
        let ready = prometheus.url("/-/ready");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let probe = http::Request::get(ready.as_str())
                .body(Default::default())
                .expect("a request");
            if let Ok(Ok(answer)) =
                tokio::time::timeout(Duration::from_secs(5), http.request(probe)).await
            {
                if answer.status() == 200 {
                    return Some(prometheus);
                }
            }
            if let Ok(Some(status)) = prometheus.child.try_wait() {
                panic!(
                    "Prometheus exited ({status}) before it was ready:\n{}",
                    prometheus.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "Prometheus was not ready within 60s:\n{}",
                prometheus.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A URL on the server.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// What the server logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// The answer to instant query `query` now, through `/api/v1/query`.
    pub async fn query(&self, query: &str) -> Vec<Sample> {
        let url = self.url(&format!("/api/v1/query?query={}", encode(query)));
        let answer = send(&client(false), "GET", &url, None).await;
        assert_eq!(answer.status, 200, "{query}: {}", answer.text());
        let body: serde_json::Value =
            serde_json::from_slice(&answer.body).expect("Prometheus answers JSON");
        assert_eq!(body["status"], "success", "{query}: {body}");
        body["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|series| Sample {
                labels: series["metric"].as_object().cloned().unwrap_or_default(),
                value: series["value"][1]
                    .as_str()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(f64::NAN),
            })
            .collect()
    }

    /// Asks `query` until `holds` is true of its answer, within `within`; the answer
    /// that held. Prometheus learns of a change at its next scrape: a test waits for
    /// what it expects rather than for a time.
    pub async fn wait_for(
        &self,
        within: Duration,
        query: &str,
        holds: impl Fn(&[Sample]) -> bool,
    ) -> Vec<Sample> {
        let deadline = Instant::now() + within;
        loop {
            let samples = self.query(query).await;
            if holds(&samples) {
                return samples;
            }
            assert!(
                Instant::now() < deadline,
                "{query} never gave what was expected within {within:?}; last: {samples:#?}\n\
                 targets: {}\nlog:\n{}",
                self.targets().await,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The scrape targets' state, as `/api/v1/targets` gives it (for failures).
    pub async fn targets(&self) -> String {
        send(&client(false), "GET", &self.url("/api/v1/targets"), None)
            .await
            .text()
    }
}

/// `text` percent-encoded for a URL's query string.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(byte).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
