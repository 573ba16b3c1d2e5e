//! Kubernetes manifests generated from the deployment file (`modhost manifests`):
//! the guide's commands (docs/scale-out.md, "On Kubernetes") run as written on a copy
//! of the repository's config/, the objects pass Kubernetes' schemas
//! (kubernetes-validate, strict), they say what the deployment file says, and the
//! nodes' deployment file in the ConfigMap is one modhost accepts.

mod common;
use common::*;

use base64::Engine as _;
use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;

/// The kubernetes-validate ./test.sh installs, or `None` (skipped, except under CI).
fn kubernetes_validate() -> Option<PathBuf> {
    match std::env::var_os("MODHOST_KUBERNETES_VALIDATE").map(PathBuf::from) {
        Some(path) if path.is_file() => Some(path),
        _ => missing(
            "the manifests' schema check",
            "no kubernetes-validate: ./test.sh installs it (MODHOST_KUBERNETES_VALIDATE)",
        ),
    }
}

/// The application as the image holds it: a copy of what the Dockerfile copies to
/// /app (its `cp -r … /app/` line), with the built components left in this build's
/// target directory (the test's commands are given it as CARGO_TARGET_DIR).
fn application_copy() -> tempfile::TempDir {
    let dockerfile = std::fs::read_to_string(workspace().join("Dockerfile")).unwrap();
    let copied: Vec<&str> = dockerfile
        .lines()
        .find_map(|line| {
            let line = line
                .trim()
                .trim_start_matches("&& ")
                .trim_end_matches(" \\");
            line.strip_prefix("cp -r ")?.strip_suffix(" /app/")
        })
        .expect("the Dockerfile copies the application to /app")
        .split_whitespace()
        .collect();
    assert!(copied.contains(&"config"), "{copied:?}");
    let app = tempfile::tempdir().unwrap();
    for path in copied {
        let from = workspace().join(path);
        if from.is_dir() {
            copy_dir(&from, &app.path().join(path));
        } else {
            std::fs::copy(&from, app.path().join(path)).unwrap();
        }
    }
    app
}

/// The commands of the guide's tested block: each `modhost …` and
/// `kubernetes-validate …` line (continuations joined), and the lines it leaves to a
/// machine with a cluster and a container engine.
fn guide_commands() -> (Vec<String>, Vec<String>) {
    let guide = std::fs::read_to_string(workspace().join("docs/scale-out.md")).unwrap();
    let marker = "<!-- tests/manifests.rs runs";
    let start = guide
        .find(marker)
        .expect("the guide marks its tested block");
    let block = &guide[start..];
    let block = &block[block.find("```sh\n").expect("a sh block") + 6..];
    let block = &block[..block.find("```").expect("the block's end")];
    let mut run = Vec::new();
    let mut left = Vec::new();
    let mut command = String::new();
    for line in block.lines() {
        // A comment after the command is not the command's.
        let code = line.split("  #").next().unwrap_or(line).trim_end();
        match code.strip_suffix('\\') {
            Some(part) => command.push_str(part),
            None => {
                command.push_str(code);
                let whole = std::mem::take(&mut command);
                if whole.starts_with("modhost ") || whole.starts_with("kubernetes-validate ") {
                    run.push(whole);
                } else if !whole.trim().is_empty() {
                    left.push(whole);
                }
            }
        }
    }
    (run, left)
}

/// The objects of a manifests file (JSON documents between `---` lines).
fn objects(yaml: &str) -> Vec<Value> {
    yaml.split("\n---\n")
        .skip(1)
        .map(|document| serde_json::from_str(document).unwrap())
        .collect()
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|object| object["kind"] == kind && object["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

fn decoded(value: &Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(value.as_str().unwrap())
        .unwrap()
}

#[test]
fn the_guides_manifests_for_the_split_shop_validate_and_say_what_the_file_says() {
    let Some(validate) = kubernetes_validate() else {
        return;
    };
    let app = application_copy();
    let (run, left) = guide_commands();
    assert_eq!(run.len(), 3, "{run:?}");
    for command in &run {
        let (code, output) = shell(app.path(), command, &[&validate]);
        assert_eq!(code, Some(0), "{command}:\n{output}");
    }
    // What the test cannot do here: build an image, talk to a cluster.
    for command in &left {
        assert!(
            command.starts_with("docker ") || command.starts_with("kubectl "),
            "{command}"
        );
    }

    let yaml = std::fs::read_to_string(app.path().join("shop.yaml")).unwrap();
    let objects = objects(&yaml);
    let kinds: Vec<&str> = objects
        .iter()
        .map(|object| object["kind"].as_str().unwrap())
        .collect();
    for (kind, count) in [
        ("ConfigMap", 1),
        ("Secret", 3),
        ("Service", 4),
        ("StatefulSet", 3),
        ("PodDisruptionBudget", 1),
    ] {
        assert_eq!(
            kinds.iter().filter(|k| **k == kind).count(),
            count,
            "{kind}: {kinds:?}"
        );
    }

    // Each node as config/three-node.toml places and numbers it.
    let deployment =
        modhost::node::load_deployment(&app.path().join("config/three-node.toml")).unwrap();
    let certs = app.path().join(".modhost/certs");
    for node in deployment.nodes.values() {
        let name = format!("shop-{}", node.name);
        let set = find(&objects, "StatefulSet", &name);
        assert_eq!(set["spec"]["replicas"], 1);
        assert_eq!(set["spec"]["serviceName"], name);
        let pod = &set["spec"]["template"]["spec"];
        assert_eq!(pod["terminationGracePeriodSeconds"], 30 + 10);
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
        assert_eq!(pod["automountServiceAccountToken"], false);
        let container = &pod["containers"][0];
        assert_eq!(container["image"], "registry.example/shop:1.0");
        assert_eq!(
            container["args"],
            serde_json::json!([
                "run",
                "/app/config/three-node.kubernetes.toml",
                "--node",
                node.name
            ])
        );
        assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
        assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
        assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
        let ports = |value: &Value, field: &str| -> Vec<(String, u64)> {
            value
                .as_array()
                .unwrap()
                .iter()
                .map(|port| {
                    (
                        port["name"].as_str().unwrap().to_string(),
                        port[field].as_u64().unwrap(),
                    )
                })
                .collect()
        };
        // The admin API is the pod's alone (loopback): no port of the Service's.
        let expected = vec![
            ("http".to_string(), u64::from(node.listen.port())),
            ("mesh".to_string(), u64::from(node.mesh.port())),
        ];
        assert_eq!(ports(&container["ports"], "containerPort"), expected);
        let service = find(&objects, "Service", &name);
        assert_eq!(ports(&service["spec"]["ports"], "port"), expected);
        assert_eq!(service["spec"]["selector"]["modhost.dev/node"], node.name);

        // The node's Secret holds the CA and its own certificate and key, no other's.
        let secret = &find(&objects, "Secret", &format!("{name}-mesh"))["data"];
        assert_eq!(secret.as_object().unwrap().len(), 3, "{secret}");
        for (key, file) in [
            ("ca.pem".to_string(), "ca.pem".to_string()),
            (format!("{}.pem", node.name), format!("{}.pem", node.name)),
            (format!("{}.key", node.name), format!("{}.key", node.name)),
        ] {
            assert_eq!(
                decoded(&secret[&key]),
                std::fs::read(certs.join(file)).unwrap()
            );
        }
    }
    let gateway = find(&objects, "Service", "shop-gateway");
    assert_eq!(gateway["spec"]["ports"][0]["targetPort"], "http");
    let budget = find(&objects, "PodDisruptionBudget", "shop");
    assert_eq!(budget["spec"]["maxUnavailable"], 1);

    // The nodes' deployment file: each node at its Service, the broker from --set,
    // the certificates and data where the pod mounts them, the token from the Secret.
    let file = find(&objects, "ConfigMap", "shop-deployment")["data"]["deployment.toml"]
        .as_str()
        .unwrap()
        .to_string();
    let table: toml::Table = file.parse().unwrap();
    assert_eq!(
        table["extends"].as_str(),
        Some("/app/config/single-node.toml")
    );
    assert_eq!(table["nodes"]["b"]["mesh"].as_str(), Some("shop-b:7002"));
    assert_eq!(table["nodes"]["b"]["listen"].as_str(), Some("shop-b:8081"));
    assert_eq!(
        table["nodes"]["b"]["admin"].as_str(),
        Some("localhost:9192")
    );
    assert_eq!(
        table["events"]["brokers"].as_str(),
        Some("kafka.kafka.svc:9092")
    );
    assert_eq!(table["app"]["data_dir"].as_str(), Some("/var/lib/modhost"));
    assert_eq!(
        table["mesh"]["cert"].as_str(),
        Some("/etc/modhost/certs/{node}.pem")
    );
    assert_eq!(
        table["admin"]["token"].as_str(),
        Some("$MODHOST_ADMIN_TOKEN")
    );
    let env = &find(&objects, "StatefulSet", "shop-a")["spec"]["template"]["spec"]["containers"][0]
        ["env"];
    assert!(
        env.as_array()
            .unwrap()
            .iter()
            .any(|var| var["name"] == "MODHOST_ADMIN_TOKEN"
                && var["valueFrom"]["secretKeyRef"]["name"] == "shop-env"),
        "{env}"
    );

    // modhost accepts it, where the pod reads it: checked here beside the file it is
    // made from, with the image's /app being this copy, the data dir a temporary one,
    // the token set (every module compiled and linked).
    let data = app.path().join("data");
    let here = file
        .replace("\"/app/", &format!("\"{}/", app.path().display()))
        .replace("\"/var/lib/modhost\"", &format!("\"{}\"", data.display()));
    let cluster = app.path().join("config/three-node.kubernetes.toml");
    std::fs::write(&cluster, here).unwrap();
    let checked = Command::new(modhost_bin())
        .arg("check")
        .arg(&cluster)
        .env("MODHOST_LOG", "warn")
        .env("MODHOST_ADMIN_TOKEN", "a-token-for-the-test")
        .env("CARGO_TARGET_DIR", target_dir())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&checked.stdout).to_string()
        + &String::from_utf8_lossy(&checked.stderr);
    assert_eq!(checked.status.code(), Some(0), "{said}");
    assert_eq!(
        said.lines().filter(|l| l.starts_with("ok ")).count(),
        7,
        "{said}"
    );
}

#[test]
fn manifests_refuse_what_would_not_run_on_a_cluster() {
    let app = application_copy();
    let manifests = |file: &str, extra: &[&str]| {
        let output = Command::new(modhost_bin())
            .args(["manifests", file, "--image", "registry.example/shop:1.0"])
            .env("CARGO_TARGET_DIR", target_dir())
            .args(extra)
            .current_dir(app.path())
            .env("MODHOST_LOG", "warn")
            .output()
            .unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stderr).to_string(),
        )
    };
    // No certificates yet.
    let (code, said) = manifests(
        "config/three-node.toml",
        &["--set", "events.brokers=kafka:9092"],
    );
    assert_eq!(code, Some(2), "{said}");
    assert!(
        said.contains("run `modhost certs config/three-node.toml` first"),
        "{said}"
    );

    let certs = Command::new(modhost_bin())
        .args(["certs", "config/three-node.toml"])
        .current_dir(app.path())
        .output()
        .unwrap();
    assert!(certs.status.success());
    // The file's broker is the laptop's loopback.
    let (code, said) = manifests("config/three-node.toml", &[]);
    assert_eq!(code, Some(2), "{said}");
    assert!(
        said.contains("events.brokers: 127.0.0.1:9092 is the node's own loopback"),
        "{said}"
    );
    // Modules are the image's.
    let (code, said) = manifests(
        "config/three-node.toml",
        &["--set", "modules.users.routes=[\"/u\"]"],
    );
    assert_eq!(code, Some(2), "{said}");
    assert!(said.contains("the modules are the image's"), "{said}");
    // A broker (or any value) written "$NAME": not read here, but by each node from
    // the APP-env Secret.
    let three = std::fs::read_to_string(app.path().join("config/three-node.toml")).unwrap();
    let from_env = three.replace(
        "brokers = \"127.0.0.1:9092\"",
        "brokers = \"$KAFKA_BROKERS\"",
    );
    assert_ne!(from_env, three);
    std::fs::write(app.path().join("config/from-env.toml"), from_env).unwrap();
    let output = Command::new(modhost_bin())
        .args(["manifests", "config/from-env.toml", "--image", "x"])
        .current_dir(app.path())
        .env_remove("KAFKA_BROKERS")
        .output()
        .unwrap();
    let yaml = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let objects = objects(&yaml);
    let env = &find(&objects, "StatefulSet", "shop-c")["spec"]["template"]["spec"]["containers"][0]
        ["env"];
    let from_secret: Vec<&str> = env
        .as_array()
        .unwrap()
        .iter()
        .filter(|var| var["valueFrom"]["secretKeyRef"]["name"] == "shop-env")
        .map(|var| var["name"].as_str().unwrap())
        .collect();
    assert_eq!(from_secret, ["KAFKA_BROKERS", "MODHOST_ADMIN_TOKEN"]);
    let file: toml::Table = find(&objects, "ConfigMap", "shop-deployment")["data"]
        ["deployment.toml"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(file["events"]["brokers"].as_str(), Some("$KAFKA_BROKERS"));

    // One node is not a split deployment.
    let (code, said) = manifests("config/single-node.toml", &[]);
    assert_eq!(code, Some(2), "{said}");
    assert!(said.contains("has no [nodes]"), "{said}");
    // Outside the application's directory, the image would not hold it.
    let elsewhere = tempfile::tempdir().unwrap();
    let output = Command::new(modhost_bin())
        .args([
            "manifests",
            "--image",
            "x",
            "--set",
            "events.brokers=k:9092",
        ])
        .arg(app.path().join("config/three-node.toml"))
        .current_dir(elsewhere.path())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{said}");
    assert!(said.contains("is not under"), "{said}");
}
