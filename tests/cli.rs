//! The `modhost` command line: `check`, `run` refusing bad input before serving,
//! `compile` for precompiled (edge) deployments, the compile cache, and `up`.

mod common;
use common::*;

use std::process::Command;

fn modhost(args: &[&str]) -> std::process::Output {
    Command::new(modhost_bin())
        .args(args)
        .env("MODHOST_LOG", "warn")
        .output()
        .expect("run modhost")
}

#[test]
fn check_accepts_a_valid_deployment() {
    let deployment = TestDeployment::new(SHOP);
    let data = deployment.data_dir();
    let file = deployment.file.to_str().unwrap();
    let output = Command::new(modhost_bin())
        .args(["check", file])
        .env("MODHOST_LOG", "warn")
        .current_dir(deployment.dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("7 module(s) valid"), "{stdout}");
    for module in [
        "users",
        "catalog",
        "inventory",
        "payments",
        "orders",
        "fraud",
        "notifications",
    ] {
        assert!(stdout.contains(module), "{module} missing: {stdout}");
    }
    drop(data);
}

/// A team's pipeline checks its new build before anything is deployed: here a new
/// `users` (Rust) whose `get` returns a number breaks `fraud` (Python), which imports
/// it; the check names the consumer and both signatures, and exits 2. The current
/// build passes the same check.
#[test]
fn check_with_a_new_build_lists_each_consumer_it_would_break() {
    let deployment = TestDeployment::new(SHOP);
    let file = deployment.file.display().to_string();
    let current = format!("users={}", guest("users").display());
    let ok = modhost(&["check", &file, "--module", &current]);
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );

    let broken = deployment.dir.path().join("users-next.wasm");
    let wasm = wat::parse_str(
        r#"(component
            (core module $m (func (export "get") (param i64) (result i32) i32.const 7))
            (core instance $i (instantiate $m))
            (func $get (param "id" u64) (result u32) (canon lift (core func $i "get")))
            (instance $api (export "get" (func $get)))
            (export "shop:users/api@1.0.0" (instance $api))
        )"#,
    )
    .unwrap();
    std::fs::write(&broken, wasm).unwrap();
    let next = format!("users={}", broken.display());
    let refused = modhost(&["check", &file, "--module", &next]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("module `fraud`: imports shop:users/api@1.0.0#get with a signature module `users` does not have"),
        "{stderr}"
    );
    assert!(
        stderr.contains("fraud expects: func(id: u64) -> result<option<record { id: u64, name: string, email: string }>"),
        "{stderr}"
    );
    assert!(
        stderr.contains("users exports: func(id: u64) -> u32"),
        "{stderr}"
    );
    assert!(stderr.contains(&format!("with {next}")), "{stderr}");

    for (argument, expected) in [
        (
            "nobody=x.wasm".to_string(),
            "the deployment has no module `nobody`",
        ),
        ("users".to_string(), "expected NAME=PATH"),
        (
            format!(
                "users={}",
                deployment.dir.path().join("missing.wasm").display()
            ),
            "does not exist",
        ),
    ] {
        let bad = modhost(&["check", &file, "--module", &argument]);
        let stderr = String::from_utf8_lossy(&bad.stderr);
        assert_eq!(bad.status.code(), Some(2), "{argument}: {stderr}");
        assert!(stderr.contains(expected), "{argument}: {stderr}");
    }
}

#[test]
fn check_names_the_file_and_the_misspelt_key_and_exits_2() {
    let deployment = TestDeployment::new(
        "[app]\nname = \"shop\"\n\n[modules.users]\ncomponent = \"{users}\"\nroutes = [\"/users\"]\nlimts = { memory = \"32MiB\" }\n",
    );
    let output = modhost(&["check", deployment.file.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("deployment.toml:7: modules.users.limts"),
        "{stderr}"
    );
    assert!(stderr.contains("unknown field `limts`"), "{stderr}");
}

/// A split deployment written as an overlay on the one-node file: each problem, found
/// together, names the file that wrote its key; nothing is served.
#[test]
fn an_overlay_and_its_base_are_refused_together_each_problem_by_its_file() {
    let deployment = TestDeployment::new(
        "[app]\nname = \"shop\"\n\n[modules.users]\ncomponent = \"{users}\"\n\
         routes = [\"/users\"]\nlimits = { timeout = \"0s\" }\n",
    );
    let overlay = deployment.dir.path().join("split.toml");
    std::fs::write(
        &overlay,
        "extends = \"deployment.toml\"\n\n\
         [nodes.a]\nlisten = \"127.0.0.1:18080\"\nmesh = \"127.0.0.1:17001\"\n\n\
         [placement]\nusers = [\"a\"]\nbilling = [\"a\"]\n\n\
         [mesh]\nca = \"ca.pem\"\ncert = \"{node}.pem\"\nkey = \"{node}.key\"\n",
    )
    .unwrap();
    let file = overlay.to_str().unwrap();
    for command in [vec!["check", file], vec!["run", file, "--node", "a"]] {
        let output = modhost(&command);
        let command = command[0];
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{command}: {stderr}");
        assert!(
            stderr.contains("split.toml: placement.billing: no module `billing`"),
            "{command}: {stderr}"
        );
        assert!(
            stderr.contains("deployment.toml: modules.users.limits.timeout"),
            "{command}: {stderr}"
        );
        assert!(stderr.contains("nothing was started"), "{stderr}");
    }
}

#[test]
fn check_reports_a_component_that_does_not_load_by_module_name() {
    let deployment = TestDeployment::new(
        "[app]\nname = \"shop\"\n[modules.broken]\ncomponent = \"broken.wasm\"\nroutes = [\"/b\"]\n",
    );
    std::fs::write(
        deployment.dir.path().join("broken.wasm"),
        b"not a component",
    )
    .unwrap();
    let output = modhost(&["check", deployment.file.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("module `broken`"), "{stderr}");
    assert!(stderr.contains("broken.wasm"), "{stderr}");
}

#[test]
fn run_refuses_an_invalid_deployment_before_serving() {
    let deployment = TestDeployment::new(
        "[app]\nname = \"shop\"\n[gateway]\nlisten = \"127.0.0.1:0\"\nmax_body = \"lots\"\n[modules.users]\ncomponent = \"{users}\"\nroutes = [\"/users\", \"/healthz\"]\n",
    );
    let output = modhost(&["run", deployment.file.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("gateway.max_body"), "{stderr}");
    assert!(stderr.contains("nothing was started"), "{stderr}");
}

#[test]
fn run_reports_every_semantic_problem_at_once() {
    let deployment = TestDeployment::new(
        "[app]\nname = \"shop\"\n[modules.users]\ncomponent = \"{users}\"\nroutes = [\"/users\", \"/healthz\"]\n[modules.copy]\ncomponent = \"missing.wasm\"\nroutes = [\"/users\"]\n",
    );
    let output = modhost(&["run", deployment.file.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("modules.users.routes[1]") && stderr.contains("reserved"),
        "{stderr}"
    );
    assert!(
        stderr.contains("modules.copy.component") && stderr.contains("does not exist"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn precompiled_components_serve_without_compiling() {
    let out = tempfile::tempdir().unwrap();
    let output = modhost(&[
        "compile",
        guest("users").to_str().unwrap(),
        "--out-dir",
        out.path().to_str().unwrap(),
    ]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let cwasm = out.path().join("users.cwasm");
    assert!(cwasm.is_file());

    let deployment = TestDeployment::new(&format!(
        "[app]\nname = \"edge\"\n[modules.users]\ncomponent = {:?}\nroutes = [\"/users\"]\n\
         database = \"sqlite\"\nmigrations = \"{{repo}}/modules/users/migrations\"\n",
        cwasm.display().to_string()
    ));
    let host = Modhost::start(&deployment);
    assert_eq!(
        get(&host.url("/users/3")).await.json()["name"],
        "Edsger Dijkstra"
    );
    let loaded = host.wait_for_log("module loaded");
    assert!(loaded.contains("\"cached\":true"), "{loaded}");
    // Nothing was compiled, so nothing was cached.
    let cache = std::fs::read_dir(deployment.data_dir().join("compile-cache"))
        .unwrap()
        .count();
    assert_eq!(cache, 0);
}

/// `modhost compile --target` precompiles for another machine's nodes; a node refuses
/// precompiled code it cannot run, saying why — compiled for another processor, or by
/// another wasmtime — before it serves anything, exit 2.
#[test]
fn precompiled_code_for_another_machine_or_wasmtime_is_refused_by_name() {
    let out = tempfile::tempdir().unwrap();
    let compile = |target: &str, dir: &std::path::Path| {
        modhost(&[
            "compile",
            guest("hello").to_str().unwrap(),
            "--out-dir",
            dir.to_str().unwrap(),
            "--target",
            target,
        ])
    };
    let foreign = if std::env::consts::ARCH == "aarch64" {
        ("x86_64-unknown-linux-gnu", "x86_64", 62u16)
    } else {
        ("aarch64-unknown-linux-gnu", "aarch64", 183u16)
    };
    let (triple, arch, elf_machine) = foreign;
    let output = compile(triple, out.path());
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let cwasm = out.path().join("hello.cwasm");
    let bytes = std::fs::read(&cwasm).unwrap();
    assert_eq!(&bytes[..4], b"\x7fELF");
    assert_eq!(
        u16::from_le_bytes([bytes[18], bytes[19]]),
        elf_machine,
        "not {arch} code"
    );

    let deployment = |component: &std::path::Path| {
        TestDeployment::new(&format!(
            "[app]\nname = \"edge\"\n[modules.hello]\ncomponent = {:?}\nroutes = [\"/hello\"]\n",
            component.display().to_string()
        ))
    };
    let (code, stderr) = check(&deployment(&cwasm));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("module `hello`"), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "was precompiled for {arch}, and this node runs {}",
            std::env::consts::ARCH
        )),
        "{stderr}"
    );

    // By another wasmtime: this one's code, its version rewritten in place.
    let native = tempfile::tempdir().unwrap();
    let output = modhost(&[
        "compile",
        guest("hello").to_str().unwrap(),
        "--out-dir",
        native.path().to_str().unwrap(),
    ]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let cwasm = native.path().join("hello.cwasm");
    let mut bytes = std::fs::read(&cwasm).unwrap();
    // The engine section: a format byte, the version's length, the version ("48").
    let engine = elf_section(&bytes, ".wasmtime.engine").expect("an engine section");
    let length = usize::from(bytes[engine + 1]);
    assert_eq!(&bytes[engine + 2..engine + 2 + length], b"48");
    bytes[engine + 3] = b'7';
    std::fs::write(&cwasm, bytes).unwrap();
    let (code, stderr) = check(&deployment(&cwasm));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("precompiled for another wasmtime version"),
        "{stderr}"
    );
    assert!(stderr.contains("incompatible version '47'"), "{stderr}");

    // A target wasmtime does not know is refused before anything is written.
    let nowhere = tempfile::tempdir().unwrap();
    let output = compile("z80-unknown-none", nowhere.path());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("z80-unknown-none"), "{stderr}");
    assert_eq!(std::fs::read_dir(nowhere.path()).unwrap().count(), 0);
}

/// Where the data of section `name` starts in a little-endian ELF64 object.
fn elf_section(bytes: &[u8], name: &str) -> Option<usize> {
    let u16_at = |at: usize| usize::from(u16::from_le_bytes([bytes[at], bytes[at + 1]]));
    let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
    let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap()) as usize;
    let (headers, size, count, names) = (u64_at(0x28), u16_at(0x3a), u16_at(0x3c), u16_at(0x3e));
    let header = |index: usize| headers + index * size;
    let names_at = u64_at(header(names) + 0x18);
    (0..count).find_map(|index| {
        let start = names_at + u32_at(header(index));
        let end = start + bytes[start..].iter().position(|&b| b == 0)?;
        (&bytes[start..end] == name.as_bytes()).then(|| u64_at(header(index) + 0x18))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_takes_compiled_code_from_the_cache() {
    let deployment = TestDeployment::new(SHOP);
    {
        let host = Modhost::start(&deployment);
        let first = host.wait_for_log("\"module\":\"users\"");
        assert!(first.contains("\"cached\":false"), "{first}");
    }
    let entries = std::fs::read_dir(deployment.data_dir().join("compile-cache"))
        .unwrap()
        .count();
    assert_eq!(entries, 6, "one cache entry per component");

    let host = Modhost::start(&deployment);
    let second = host.wait_for_log("\"module\":\"users\"");
    assert!(second.contains("\"cached\":true"), "{second}");
    assert_eq!(get(&host.url("/users/1")).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_builds_module_crates_and_serves_them() {
    // A deployment naming crates (as config/single-node.toml does), in a temp dir.
    let workspace = workspace();
    let deployment = TestDeployment::new(&format!(
        "[app]\nname = \"shop\"\n[modules.users]\ncomponent = {:?}\nroutes = [\"/users\"]\ndatabase = \"sqlite\"\n[modules.catalog]\ncomponent = {:?}\nroutes = [\"/catalog\"]\nkeyvalue = [\"lookups\"]\ndatabase = \"sqlite\"\n",
        workspace.join("modules/users").display().to_string(),
        workspace.join("modules/catalog").display().to_string(),
    ));
    let host = Modhost::start_with(&deployment, "up", &[]);
    assert_eq!(get(&host.url("/users")).await.json()["total"], 3);
    assert_eq!(get(&host.url("/catalog/products")).await.json()["total"], 4);
}

#[test]
fn the_shipped_deployment_files_are_valid() {
    // config/edge.toml serves precompiled components: make them as its header says.
    let edge_dir = workspace().join(".modhost/edge");
    let output = modhost(&[
        "compile",
        guest("users").to_str().unwrap(),
        guest("catalog").to_str().unwrap(),
        "--out-dir",
        edge_dir.to_str().unwrap(),
    ]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    for file in [
        "config/single-node.toml",
        "config/edge.toml",
        "config/three-node.toml",
    ] {
        let path = workspace().join(file);
        let output = modhost(&["check", path.to_str().unwrap()]);
        assert_eq!(
            output.status.code(),
            Some(0),
            "{file}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
