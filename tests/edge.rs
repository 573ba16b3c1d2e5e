//! The edge build: modhost without its default features (no compiler, Kafka, Postgres
//! or mesh), cross-compiled for 64-bit ARM Linux and run under `qemu-aarch64`. It
//! serves `config/edge.toml` as shipped, with the shop's users and catalog modules
//! precompiled for aarch64 by `modhost compile --target` on this machine, and it
//! refuses — at `check`, by key and feature — a deployment that needs what it was
//! built without, and code precompiled for another processor.
//!
//! ./test.sh builds the binary (`cargo build -p modhost --bin modhost
//! --no-default-features --target aarch64-unknown-linux-gnu`, linked by Debian's
//! gcc-aarch64-linux-gnu as .cargo/config.toml says); the test builds it again, which
//! costs nothing when it is up to date.

mod common;
use common::*;

use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "aarch64-unknown-linux-gnu";
/// Where Debian's cross toolchain keeps aarch64's C library (the binary's loader).
const SYSROOT: &str = "/usr/aarch64-linux-gnu";
/// ELF's `e_machine` for AArch64.
const EM_AARCH64: u16 = 183;
/// ELF's `e_machine` for x86-64.
const EM_X86_64: u16 = 62;

/// One emulated modhost at a time: under qemu-user a node's resident memory grows by
/// about 50 MB per pool slot as it starts (config/edge.toml's 96 slots: ~5 GB; a few
/// dozen MB natively), so this file's tests take turns rather than add them up.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The aarch64 edge binary, up to date, or `None` (the test is skipped, except under
/// `CI=true`) when this machine cannot build or run it.
fn edge_binary() -> Option<PathBuf> {
    static BUILT: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();
    let built = BUILT.get_or_init(|| {
        for (tool, package) in [
            ("qemu-aarch64", "qemu-user"),
            ("aarch64-linux-gnu-gcc", "gcc-aarch64-linux-gnu"),
        ] {
            if on_path(tool).is_none() {
                return Err(format!("no {tool}: apt-get install {package}"));
            }
        }
        let libdir = Command::new("rustc")
            .args(["--print", "target-libdir", "--target", TARGET])
            .output()
            .ok()
            .map(|output| PathBuf::from(String::from_utf8_lossy(&output.stdout).trim()));
        if !libdir.is_some_and(|dir| dir.is_dir()) {
            return Err(format!(
                "no Rust target {TARGET}: rustup target add {TARGET}"
            ));
        }
        // With every tool there, a build that fails is the code's failure.
        let status = build_modhost(&["--no-default-features", "--target", TARGET])
            .status()
            .expect("run cargo build");
        assert!(status.success(), "building modhost for {TARGET} failed");
        let profile = if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        };
        Ok(target_dir().join(TARGET).join(profile).join("modhost"))
    });
    match built {
        Ok(bin) => Some(bin.clone()),
        Err(why) => missing("the aarch64 edge test", why),
    }
}

/// The edge binary `bin` under qemu, as a command to add modhost's arguments to.
fn under_qemu(bin: &Path) -> Command {
    let mut qemu = Command::new("qemu-aarch64");
    qemu.arg("-L").arg(SYSROOT).arg(bin);
    qemu
}

/// Runs the edge binary with `args`: its exit code and what it printed.
fn run_edge(bin: &Path, args: &[&str]) -> (Option<i32>, String) {
    let output = under_qemu(bin)
        .args(args)
        .env("MODHOST_LOG", "warn")
        .output()
        .expect("run qemu-aarch64");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code(), text)
}

/// The processor an ELF file was built for (its `e_machine`).
fn elf_machine(path: &Path) -> u16 {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[..4], b"\x7fELF", "{} is not ELF", path.display());
    u16::from_le_bytes([bytes[18], bytes[19]])
}

/// The shop's edge application laid out as in this repository: `config/edge.toml`
/// as shipped, the users' and catalog's migrations, and the two modules precompiled
/// for aarch64 where the file names them (`.modhost/edge/`).
fn edge_application() -> tempfile::TempDir {
    let app = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(app.path().join("config")).unwrap();
    std::fs::copy(
        workspace().join("config/edge.toml"),
        app.path().join("config/edge.toml"),
    )
    .unwrap();
    for module in ["users", "catalog"] {
        copy_dir(
            &workspace().join("modules").join(module).join("migrations"),
            &app.path().join("modules").join(module).join("migrations"),
        );
    }
    let out = app.path().join(".modhost/edge");
    let compiled = Command::new(modhost_bin())
        .args(["compile", "--target", TARGET, "--out-dir"])
        .arg(&out)
        .arg(guest("users"))
        .arg(guest("catalog"))
        .output()
        .unwrap();
    assert!(
        compiled.status.success(),
        "modhost compile --target {TARGET}: {}",
        String::from_utf8_lossy(&compiled.stderr)
    );
    for module in ["users", "catalog"] {
        let cwasm = out.join(format!("{module}.cwasm"));
        assert_eq!(elf_machine(&cwasm), EM_AARCH64, "{}", cwasm.display());
    }
    app
}

#[tokio::test]
async fn an_aarch64_edge_build_serves_the_shops_users_and_catalog_under_qemu() {
    let Some(bin) = edge_binary() else { return };
    let _turn = ONE_AT_A_TIME.lock().await;
    assert_eq!(elf_machine(&bin), EM_AARCH64, "{}", bin.display());
    let (code, version) = run_edge(&bin, &["--version"]);
    assert_eq!(code, Some(0), "{version}");
    assert!(version.contains("(features: none)"), "{version}");

    let app = edge_application();
    let config = app.path().join("config/edge.toml");
    let (code, checked) = run_edge(&bin, &["check", config.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{checked}");

    let data = app.path().join("data");
    let host = Modhost::spawn_program(
        under_qemu(&bin),
        &[
            "run".into(),
            config.clone().into(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--data-dir".into(),
            data.into(),
        ],
        &[],
    );
    let http = client(false);

    let user = send(&http, "GET", &host.url("/users/2"), None).await;
    assert_eq!(user.status, 200, "{}", user.text());
    assert_eq!(user.json()["name"], "Grace Hopper");
    let created = send(
        &http,
        "POST",
        &host.url("/users"),
        Some(r#"{"name": "Sophie Wilson", "email": "sophie@example.com"}"#),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.text());
    let id = created.json()["id"].as_i64().unwrap();
    let again = send(&http, "GET", &host.url(&format!("/users/{id}")), None).await;
    assert_eq!(again.json()["email"], "sophie@example.com");
    let invalid = send(&http, "POST", &host.url("/users"), Some(r#"{"name": ""}"#)).await;
    assert_eq!(invalid.status, 400, "{}", invalid.text());

    // The catalog answers from its database, then from its key-value cache.
    for _ in 0..2 {
        let product = send(&http, "GET", &host.url("/catalog/products/KB-001"), None).await;
        assert_eq!(product.status, 200, "{}", product.text());
        assert_eq!(product.json()["price_cents"], 8900, "{}", product.text());
    }
    let all = send(&http, "GET", &host.url("/catalog/products"), None).await;
    assert_eq!(all.json()["total"], 4, "{}", all.text());

    // Each module's database is its own SQLite file in the data dir.
    for module in ["users", "catalog"] {
        let file = app.path().join(format!("data/databases/{module}.sqlite"));
        assert!(file.is_file(), "{}", file.display());
    }
}

#[test]
fn the_edge_build_refuses_what_it_was_built_without() {
    let Some(bin) = edge_binary() else { return };
    let _turn = ONE_AT_A_TIME.blocking_lock();
    let app = edge_application();
    let edge = app.path().join(".modhost/edge");
    let wasm = guest("hello");
    let deployment = app.path().join("config/needs-more.toml");
    std::fs::write(
        &deployment,
        format!(
            r#"
[app]
name = "needs-more"

[modules.users]
component = "{users}"
routes = ["/users"]
database = {{ postgres = "postgres://modhost@db.example/shop" }}
migrations = "../modules/users/migrations"

[modules.hello]
component = "{wasm}"
routes = ["/hello"]

[events]
backend = "kafka"
brokers = "kafka.example:9092"

[nodes.a]
listen = "127.0.0.1:18080"
mesh = "127.0.0.1:17000"

[placement]
users = ["a"]
hello = ["a"]

[mesh]
ca = "../certs/ca.pem"
cert = "../certs/{{node}}.pem"
key = "../certs/{{node}}.key"
"#,
            users = edge.join("users.cwasm").display(),
            wasm = wasm.display(),
        ),
    )
    .unwrap();
    let (code, refused) = run_edge(&bin, &["check", deployment.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{refused}");
    for (key, feature) in [
        ("modules.users.database", "postgres"),
        ("modules.hello.component", "compiler"),
        ("events.backend", "kafka"),
        ("nodes", "mesh"),
    ] {
        let said = format!("built without the `{feature}` feature");
        assert!(
            refused
                .lines()
                .any(|line| line.contains(&format!("{key}:")) && line.contains(&said)),
            "nothing said about {key} and {feature}:\n{refused}"
        );
    }
    let (code, refused) = run_edge(&bin, &["compile", wasm.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{refused}");
    assert!(refused.contains("`compiler` feature"), "{refused}");

    // Code precompiled for another processor (x86_64), named where the edge file
    // expects aarch64's: the node does not start, and says why.
    let foreign = Command::new(modhost_bin())
        .args([
            "compile",
            "--target",
            "x86_64-unknown-linux-gnu",
            "--out-dir",
        ])
        .arg(&edge)
        .arg(guest("users"))
        .output()
        .unwrap();
    assert!(foreign.status.success());
    assert_eq!(elf_machine(&edge.join("users.cwasm")), EM_X86_64);
    let config = app.path().join("config/edge.toml");
    let (code, refused) = run_edge(
        &bin,
        &[
            "run",
            config.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            app.path().join("data").to_str().unwrap(),
        ],
    );
    assert_eq!(code, Some(2), "{refused}");
    assert!(
        refused.contains(&format!(
            "{} was precompiled for x86_64, and this node runs aarch64",
            edge.join("users.cwasm").display(),
        )),
        "{refused}"
    );
}
