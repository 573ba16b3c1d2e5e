//! The end-to-end test harness: real `modhost` processes on loopback ports, real
//! components, real HTTP.
//!
//! `./test.sh` builds the guest modules and the `modhost` binary before the tests
//! run; the helpers here find them and say how to build them when they are missing.

#![allow(dead_code)] // each test binary uses a different subset

pub mod browser;
pub mod cluster;
pub mod kafka;
pub mod otlp;
pub mod peer;
pub mod postgres;
pub mod prometheus;
pub mod redis;
pub mod shop;
pub mod tls;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// A loopback port that nothing listens on, for a process a test is about to start.
///
/// Between this check and the process binding the port, another socket could take it.
/// Two things make that unlikely: ports come from below Linux's ephemeral range
/// (32768–60999), where the outgoing connections of the tests and of the processes they
/// start never land; and no port is handed out twice in one test process.
pub fn free_port() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    static GIVEN: Mutex<std::collections::BTreeSet<u16>> =
        Mutex::new(std::collections::BTreeSet::new());
    const RANGE: (u16, u16) = (20000, 32000);
    let mut given = GIVEN.lock().unwrap();
    for _ in 0..10_000 {
        let random = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        let port = RANGE.0 + (random % u64::from(RANGE.1 - RANGE.0)) as u16;
        if !given.contains(&port) && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.insert(port);
            return port;
        }
    }
    panic!("no free loopback port in {}..{}", RANGE.0, RANGE.1);
}

/// `component` with a custom section naming `tag`: a new version of the same code.
pub fn variant(component: &Path, tag: &str, dir: &Path) -> PathBuf {
    let mut bytes = std::fs::read(component).unwrap();
    let name = b"modhost-test-version";
    let mut payload = vec![name.len() as u8];
    payload.extend_from_slice(name);
    payload.extend_from_slice(tag.as_bytes());
    bytes.push(0); // custom section
    bytes.push(payload.len() as u8);
    bytes.extend_from_slice(&payload);
    let path = dir.join(format!("{tag}.wasm"));
    std::fs::write(&path, bytes).unwrap();
    path
}

/// A tool a test needs is not on this machine: under `CI=true` the test fails (CI
/// must run every test); elsewhere `part` of it is skipped, saying `why`. Always
/// `None`, to return.
pub fn missing<T>(part: &str, why: &str) -> Option<T> {
    if std::env::var("CI").is_ok_and(|ci| ci == "true") {
        panic!("{why} (CI=true: this test may not be skipped)");
    }
    eprintln!("skipping {part}: {why}");
    None
}

/// Runs `line` with `sh` in `dir`, as a reader of the docs would: `modhost` is this
/// build's, found first on `PATH` (then the directories of `tools`), builds go to this
/// build's target directory. Its exit code and output (stdout, then stderr).
pub fn shell(dir: &Path, line: &str, tools: &[&Path]) -> (Option<i32>, String) {
    let mut dirs = vec![modhost_bin().parent().unwrap().to_path_buf()];
    dirs.extend(
        tools
            .iter()
            .filter_map(|tool| tool.parent().map(Path::to_path_buf)),
    );
    let path = std::env::join_paths(dirs.into_iter().chain(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    )))
    .unwrap();
    let output = Command::new("sh")
        .arg("-c")
        .arg(line)
        .current_dir(dir)
        .env("PATH", path)
        .env("CARGO_TARGET_DIR", target_dir())
        .env("MODHOST_LOG", "warn")
        .output()
        .unwrap();
    (
        output.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

/// Where program `name` is on `PATH`, if it is.
pub fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|path| path.is_file())
    })
}

/// The workspace root.
pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The `modhost` binary of this build (target/<profile>/modhost), rebuilt once per
/// test process so `cargo test` alone never runs a stale binary. (Cargo builds a
/// dependency's binaries only for that package's own tests, not for this package's.)
pub fn modhost_bin() -> PathBuf {
    static BUILT: std::sync::Once = std::sync::Once::new();
    BUILT.call_once(|| {
        let status = build_modhost(&[])
            .status()
            .expect("run cargo build -p modhost");
        assert!(status.success(), "building the modhost binary failed");
    });
    let exe = std::env::current_exe().expect("current test executable");
    // target/<profile>/deps/<test>-<hash> → target/<profile>/modhost
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable lives in target/<profile>/deps");
    let bin = profile_dir.join(format!("modhost{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.is_file(),
        "{} is missing: run ./test.sh, or `cargo build -p modhost` before `cargo test`",
        bin.display()
    );
    bin
}

/// `cargo build` of the modhost binary in this build's profile, with `extra`
/// arguments (another target, other features), as a build from the shell runs it.
pub fn build_modhost(extra: &[&str]) -> Command {
    let mut build = Command::new(env!("CARGO"));
    build.args(["build", "--quiet", "-p", "modhost", "--bin", "modhost"]);
    build.args(extra);
    // As a build from the shell sees it: `cargo test` gives the test process the
    // variables it gives a crate it compiles (CARGO_PKG_NAME, …), and a dependency
    // (ring) whose build reads them would be rebuilt — and the binary with it —
    // here, and again by the next build from the shell.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if [
            "CARGO_PKG_",
            "CARGO_MANIFEST_",
            "CARGO_CRATE_",
            "CARGO_BIN_",
        ]
        .iter()
        .any(|prefix| name.starts_with(prefix))
            || [
                "CARGO_PRIMARY_PACKAGE",
                "CARGO_TARGET_TMPDIR",
                "CARGO_RUSTC_CURRENT_DIR",
            ]
            .contains(&name.as_ref())
        {
            build.env_remove(name.as_ref());
        }
    }
    if !cfg!(debug_assertions) {
        build.arg("--release");
    }
    build
}

/// The build's target directory: `$CARGO_TARGET_DIR`, or the workspace's `target/`.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target"))
}

/// A new application laid out like this repository, in a temporary directory: the
/// given directories copied (`wit`, the SDKs, modules), a workspace of the given Rust
/// members with this repository's build profiles (so compiled dependencies are shared
/// through the target directory) and lock file, and an empty `config/`.
pub fn application(copied: &[&str], members: &[&str]) -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let repo = workspace();
    for dir in copied {
        copy_dir(&repo.join(dir), &root.path().join(dir));
    }
    let members: Vec<String> = members.iter().map(|m| format!("\"{m}\"")).collect();
    std::fs::write(
        root.path().join("Cargo.toml"),
        format!(
            "[workspace]\nresolver = \"2\"\nmembers = [{}]\n\n\
             [workspace.package]\nedition = \"2021\"\nlicense = \"Apache-2.0\"\n\n\
             [profile.guest]\ninherits = \"release\"\nopt-level = \"s\"\ndebug = false\nstrip = true\n\n\
             [profile.dev]\ndebug = \"line-tables-only\"\n\n\
             [profile.dev.package.\"*\"]\nopt-level = 3\ndebug = false\n",
            members.join(", ")
        ),
    )
    .unwrap();
    std::fs::copy(repo.join("Cargo.lock"), root.path().join("Cargo.lock")).unwrap();
    std::fs::create_dir(root.path().join("config")).unwrap();
    root
}

/// Copies the directory `from` to `to`, leaving out build output and caches.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if name == "__pycache__" || name == "target" || name == "node_modules" {
            continue;
        }
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &to.join(&name));
        } else {
            std::fs::copy(entry.path(), to.join(&name)).unwrap();
        }
    }
}

/// The built component of guest crate `name` (target/wasm32-wasip2/guest/<name>.wasm).
pub fn guest(name: &str) -> PathBuf {
    let path = target_dir()
        .join("wasm32-wasip2/guest")
        .join(format!("{name}.wasm"));
    assert!(
        path.is_file(),
        "{} is missing: run ./test.sh, or `cargo build --profile guest --target wasm32-wasip2 -p {name}`",
        path.display()
    );
    path
}

/// The Python module `name`, precompiled by this build's modhost once per test
/// process. Its component (target/python/<name>.wasm) is built by ./test.sh with
/// `modhost build`; compiling CPython takes seconds, so the tests' deployments name
/// the `.cwasm` rather than have every node compile it again.
pub fn python_guest(name: &str) -> PathBuf {
    static COMPILED: Mutex<Vec<(String, PathBuf)>> = Mutex::new(Vec::new());
    let mut compiled = COMPILED.lock().unwrap();
    if let Some((_, path)) = compiled.iter().find(|(built, _)| built == name) {
        return path.clone();
    }
    let target = target_dir();
    let wasm = target.join("python").join(format!("{name}.wasm"));
    assert!(
        wasm.is_file(),
        "{} is missing: run ./test.sh, or `modhost build config/single-node.toml`",
        wasm.display()
    );
    // Named by what it is compiled from — the component and this build's modhost — so
    // test processes share it and a new build of either compiles it again.
    let bin = std::fs::metadata(modhost_bin()).expect("the modhost binary");
    let stamp = format!(
        "{}-{}-{:?}",
        std::fs::metadata(&wasm)
            .map(|m| m.len())
            .unwrap_or_default(),
        bin.len(),
        bin.modified().ok()
    );
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    std::hash::Hash::hash(
        &(stamp, std::fs::read(&wasm).unwrap_or_default()),
        &mut hasher,
    );
    let out = target
        .join("test-artifacts/precompiled")
        .join(format!("{:016x}", std::hash::Hasher::finish(&hasher)));
    let path = out.join(format!("{name}.cwasm"));
    if path.is_file() {
        compiled.push((name.to_string(), path.clone()));
        return path;
    }
    let status = Command::new(modhost_bin())
        .arg("compile")
        .arg(&wasm)
        .arg("--out-dir")
        .arg(&out)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("run modhost compile");
    assert!(
        status.success(),
        "modhost compile {} failed",
        wasm.display()
    );
    let path = out.join(format!("{name}.cwasm"));
    assert!(
        path.is_file(),
        "modhost compile wrote no {}",
        path.display()
    );
    compiled.push((name.to_string(), path.clone()));
    path
}

/// Sends `signal` (e.g. "TERM", "STOP") to process `pid`, as `kill -SIGNAL` does. For
/// `STOP`, returns once every thread of the process has stopped: the kernel stops a
/// process's threads one by one as they are next scheduled, so on a busy machine a
/// process can go on answering for a while after `kill` returns.
pub fn send_signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal} {pid}");
    if signal == "STOP" {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !all_threads_stopped(pid) {
            assert!(Instant::now() < deadline, "process {pid} did not stop");
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// Whether every thread of process `pid` is stopped (state `T` in its `stat`).
fn all_threads_stopped(pid: u32) -> bool {
    let Ok(threads) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    threads.filter_map(Result::ok).all(|thread| {
        std::fs::read_to_string(thread.path().join("stat"))
            // The state follows the command name, which is in parentheses.
            .ok()
            .and_then(|stat| {
                let after = stat.rsplit_once(')')?.1;
                after.split_whitespace().next().map(|state| state == "T")
            })
            .unwrap_or(false)
    })
}

/// The `caller` and `callee` test modules: `caller` serves HTTP and calls `callee`
/// through the `modhost-testing:kinds` contract.
pub const CALLS: &str = r#"
[app]
name = "calls"

[modules.caller]
component = "{caller}"
routes = ["/caller"]
calls = ["callee"]
limits = { timeout = "5s" }

[modules.callee]
component = "{callee}"
calls = ["caller"]
limits = { timeout = "500ms", memory = "16MiB" }
"#;

/// The example shop's modules with their routes: the deployment most tests start.
pub const SHOP: &str = r#"
[app]
name = "shop"

[modules.users]
component = "{users}"
routes = ["/users"]
database = "sqlite"
migrations = "{repo}/modules/users/migrations"

[modules.catalog]
component = "{catalog}"
routes = ["/catalog"]
keyvalue = ["lookups"]
database = "sqlite"
migrations = "{repo}/modules/catalog/migrations"

[modules.inventory]
component = "{inventory}"
routes = ["/inventory"]
instances = "reuse"
limits = { concurrency = 256 }
database = "sqlite"
migrations = "{repo}/modules/inventory/migrations"

[modules.payments]
component = "{payments}"
routes = ["/payments"]
config = { currencies = "EUR,USD,GBP", charge_limit_cents = 500000, processor_key = { env = "PAYMENTS_PROCESSOR_KEY", default = "sk_test_sandbox" } }
database = "sqlite"
migrations = "{repo}/modules/payments/migrations"
publishes = ["payments.charged", "payments.failed"]
limits = { concurrency = 256 }

[modules.orders]
component = "{orders}"
routes = ["/orders"]
calls = ["inventory", "fraud", "payments"]
limits = { concurrency = 256 }
database = "sqlite"
migrations = "{repo}/modules/orders/migrations"
publishes = ["orders.cancelled"]
subscribes = ["payments.charged", "payments.failed"]

[modules.fraud]
component = "{fraud}"
routes = ["/fraud"]
calls = ["users"]
database = "sqlite"
migrations = "{repo}/modules/fraud/migrations"
publishes = ["fraud.flagged"]
subscribes = ["payments.failed"]
limits = { memory = "64MiB", concurrency = 64 }
instances = "reuse"

[modules.notifications]
component = "{notifications}"
routes = ["/notifications"]
database = "sqlite"
migrations = "{repo}/modules/notifications/migrations"
subscribes = ["payments.charged", "orders.cancelled"]

[events]
backoff = "50ms"
max_backoff = "500ms"
"#;

/// `toml` with each `{users}`-style placeholder replaced by the path of that guest's
/// built component, and `{repo}` by the repository's root.
fn with_components(toml: &str) -> String {
    let mut text = toml.to_string();
    for name in [
        "users",
        "catalog",
        "inventory",
        "payments",
        "orders",
        "hello",
        "faulty",
        "callee",
        "caller",
        "sqlprobe",
        "eventprobe",
        "kvprobe",
        "configprobe",
        "notifications",
        "plainhttp",
        "wstdserver",
        "p3http",
    ] {
        let placeholder = format!("{{{name}}}");
        if text.contains(&placeholder) {
            text = text.replace(&placeholder, &guest(name).display().to_string());
        }
    }
    if text.contains("{fraud}") {
        text = text.replace("{fraud}", &python_guest("fraud").display().to_string());
    }
    text.replace("{repo}", env!("CARGO_MANIFEST_DIR"))
}

/// A deployment file in a fresh temporary directory (which also holds the data dir).
pub struct TestDeployment {
    pub dir: tempfile::TempDir,
    pub file: PathBuf,
}

impl TestDeployment {
    /// Writes `toml` as the deployment; `{users}`-style placeholders become the path of
    /// that guest's built component, `{repo}` the repository's root.
    pub fn new(toml: &str) -> TestDeployment {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("deployment.toml");
        std::fs::write(&file, with_components(toml)).expect("write deployment");
        TestDeployment { dir, file }
    }

    /// Writes `toml`, its placeholders replaced as in [`Self::new`], as file `name`
    /// beside the deployment file (a file it `extends`, say).
    pub fn write_beside(&self, name: &str, toml: &str) {
        std::fs::write(self.dir.path().join(name), with_components(toml)).expect("write file");
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }
}

/// A running `modhost run` process; killed when dropped.
pub struct Modhost {
    child: Child,
    pub addr: SocketAddr,
    /// The admin API's address, when the node serves one.
    pub admin: Option<SocketAddr>,
    logs: Arc<Mutex<Vec<String>>>,
}

impl Modhost {
    /// The process's peak resident memory so far, in bytes (`VmHWM`).
    pub fn peak_resident_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
        let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        kib * 1024
    }

    /// The CPU time the process has used so far (user + system).
    pub fn cpu_time(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap();
        // The fields after the command name, which is in parentheses and may hold spaces.
        let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
        // utime and stime: fields 14 and 15 of the whole line, in clock ticks.
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        Duration::from_secs_f64(ticks as f64 / clock_ticks_per_second() as f64)
    }

    /// Starts `modhost run` on `deployment` with a free loopback port and JSON logs,
    /// and waits until it logs "modhost ready".
    pub fn start(deployment: &TestDeployment) -> Modhost {
        Modhost::start_with(deployment, "run", &[])
    }

    /// Like [`Modhost::start`], with another subcommand (`up`) and extra arguments.
    pub fn start_with(deployment: &TestDeployment, command: &str, extra: &[&str]) -> Modhost {
        Modhost::start_with_env(deployment, command, extra, &[])
    }

    /// Like [`Modhost::start_with`], with extra environment variables (`MODHOST_FAULTS`).
    pub fn start_with_env(
        deployment: &TestDeployment,
        command: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Modhost {
        let mut args: Vec<std::ffi::OsString> = vec![
            command.into(),
            deployment.file.clone().into(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--data-dir".into(),
            deployment.data_dir().into(),
        ];
        args.extend(extra.iter().map(Into::into));
        Modhost::spawn(&args, env)
    }

    /// Starts `modhost` with `args` (after `--log-format json`) and `env`, and waits
    /// until it logs "modhost ready".
    pub fn spawn(args: &[std::ffi::OsString], env: &[(&str, &str)]) -> Modhost {
        Modhost::spawn_program(Command::new(modhost_bin()), args, env)
    }

    /// Like [`Modhost::spawn`], running `program` as modhost: another build of it, or
    /// one under an emulator (tests/edge.rs).
    pub fn spawn_program(
        program: Command,
        args: &[std::ffi::OsString],
        env: &[(&str, &str)],
    ) -> Modhost {
        Modhost::spawn_signalled(program, args, env, None)
    }

    /// Like [`Modhost::spawn_program`]; with `signal` = `(needle, SIGNAL)`, sends the
    /// process SIGNAL (say "HUP") as soon as a log line contains `needle`, while it
    /// starts.
    pub fn spawn_signalled(
        mut program: Command,
        args: &[std::ffi::OsString],
        env: &[(&str, &str)],
        signal: Option<(&str, &str)>,
    ) -> Modhost {
        let mut child = program
            .arg("--log-format")
            .arg("json")
            .args(args)
            .env("MODHOST_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn modhost");
        let stderr = child.stderr.take().expect("stderr piped");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        {
            let logs = logs.clone();
            let pid = child.id();
            let mut signal = signal.map(|(needle, name)| (needle.to_string(), name.to_string()));
            std::thread::spawn(move || {
                let mut ready_tx = Some(ready_tx);
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    if signal
                        .as_ref()
                        .is_some_and(|(needle, _)| line.contains(needle))
                    {
                        if let Some((_, name)) = signal.take() {
                            send_signal(pid, &name);
                        }
                    }
                    if line.contains("modhost ready") {
                        if let Some(tx) = ready_tx.take() {
                            let _ = tx.send(line.clone());
                        }
                    }
                    logs.lock().unwrap().push(line);
                }
            });
        }
        let ready = ready_rx.recv_timeout(Duration::from_secs(240));
        let line = match ready {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                let status = child.wait().ok();
                panic!(
                    "modhost did not become ready (exit: {status:?}); log:\n{}",
                    logs.lock().unwrap().join("\n")
                );
            }
        };
        let event: serde_json::Value = serde_json::from_str(&line).expect("JSON ready line");
        let addr = event["fields"]["listen"]
            .as_str()
            .and_then(|listen| listen.parse().ok())
            .unwrap_or_else(|| panic!("no listen address in {line}"));
        let admin = event["fields"]["admin"]
            .as_str()
            .and_then(|admin| admin.parse().ok());
        Modhost {
            child,
            addr,
            admin,
            logs,
        }
    }

    /// `http://ADDR` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Every log line so far.
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    /// The first log line containing `needle`, waiting (up to 30 s) for it to appear.
    pub fn wait_for_log(&self, needle: &str) -> String {
        self.wait_for_log_with(&[needle])
    }

    /// Like [`Modhost::wait_for_log`], for a line that contains every one of `needles`.
    pub fn wait_for_log_with(&self, needles: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(line) = self
                .logs()
                .into_iter()
                .find(|line| needles.iter().all(|needle| line.contains(needle)))
            {
                return line;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!(
            "no log line contains all of {needles:?}:\n{}",
            self.logs().join("\n")
        );
    }

    /// The log line of a failed request. `reply` must be the gateway's error answer
    /// with `status`, carrying the same error id in its body and header.
    pub fn failure_log(&self, reply: &Reply, status: u16) -> String {
        assert_eq!(reply.status, status, "{}", reply.text());
        let error_id = reply.json()["error"]["error_id"]
            .as_str()
            .expect("error id in the body")
            .to_string();
        assert_eq!(reply.headers["x-modhost-error-id"], error_id.as_str());
        self.wait_for_log(&error_id)
    }

    /// Sends `signal` (e.g. "TERM") to the process.
    pub fn signal(&self, signal: &str) {
        send_signal(self.child.id(), signal);
    }

    /// Kills the process at once (SIGKILL: no shutdown, no flushing) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits (bounded) for the process to exit.
    pub fn wait(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "modhost did not exit within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Modhost {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A response, fully read.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|err| {
            panic!(
                "body is not JSON ({err}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// The tests' HTTP client.
pub type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

/// An HTTP/1.1 client (HTTP/2 with prior knowledge when `http2`).
pub fn client(http2: bool) -> HttpClient {
    Client::builder(TokioExecutor::new())
        .http2_only(http2)
        .build_http()
}

/// Sends one request and reads the whole response.
pub async fn send(
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    method: &str,
    url: &str,
    body: Option<&str>,
) -> Reply {
    send_with_headers(client, method, url, &[], body).await
}

/// Like [`send`], with extra request headers.
pub async fn send_with_headers(
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Reply {
    let mut request = http::Request::builder().method(method).uri(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    if body.is_some() {
        request = request.header("content-type", "application/json");
    }
    let request = request
        .body(Full::new(Bytes::from(body.unwrap_or_default().to_string())))
        .expect("request");
    let response = tokio::time::timeout(Duration::from_secs(60), client.request(request))
        .await
        .expect("response within 60s")
        .expect("response");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    Reply {
        status,
        headers,
        body,
    }
}

/// GET `url` with a fresh HTTP/1.1 client.
pub async fn get(url: &str) -> Reply {
    send(&client(false), "GET", url, None).await
}

/// Waits (up to 10 s, polling readiness) until `module` has `count` requests in
/// flight, as `/readyz` reports them; panics, saying `why`, if it never does.
pub async fn wait_for_in_flight(host: &Modhost, module: &str, count: u64, why: &str) {
    let mut in_flight = None;
    for _ in 0..1000 {
        in_flight = get(&host.url("/readyz")).await.json()["modules"][module]["in_flight"].as_u64();
        if in_flight == Some(count) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{module}: {in_flight:?} requests in flight, not {count}: {why}");
}

/// Waits until `answered` (a load's count of answered requests, growing meanwhile) has
/// grown by `count`: traffic crossed the change just made. Panics with `stalled()` if
/// it does not within 30 s.
pub async fn wait_for_answers(
    answered: &std::sync::atomic::AtomicU64,
    count: u64,
    stalled: impl Fn() -> String,
) {
    use std::sync::atomic::Ordering;
    let target = answered.load(Ordering::Relaxed) + count;
    for _ in 0..3000 {
        if answered.load(Ordering::Relaxed) >= target {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the load stalled: {}", stalled());
}

/// Runs `futures` concurrently on the runtime and collects their outputs in order.
pub async fn join_all<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut outputs = Vec::new();
    for handle in handles {
        outputs.push(handle.await.expect("task"));
    }
    outputs
}

/// Runs `modhost check` on `deployment`: its exit code and what it printed on stderr.
pub fn check(deployment: &TestDeployment) -> (Option<i32>, String) {
    let output = Command::new(modhost_bin())
        .args(["check", &deployment.file.display().to_string()])
        .env("MODHOST_LOG", "warn")
        .output()
        .expect("run modhost check");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Clock ticks per second, the unit of CPU time in `/proc/*/stat`.
fn clock_ticks_per_second() -> i64 {
    extern "C" {
        fn sysconf(name: i32) -> i64;
    }
    /// `_SC_CLK_TCK` on Linux.
    const SC_CLK_TCK: i32 = 2;
    // SAFETY: sysconf only reads a constant of the system.
    unsafe { sysconf(SC_CLK_TCK) }
}

/// `modhost reload` against `node`'s admin API with `token`: exit code, the JSON it
/// printed, and its stderr.
pub fn reload_node(node: &Modhost, token: &str) -> (Option<i32>, serde_json::Value, String) {
    let admin = format!("http://{}", node.admin.expect("an admin listener"));
    let output = Command::new(modhost_bin())
        .args(["reload", "--admin", &admin, "--token", token])
        .output()
        .expect("run modhost reload");
    let stdout = serde_json::from_slice(&output.stdout).unwrap_or(serde_json::Value::Null);
    (
        output.status.code(),
        stdout,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}
