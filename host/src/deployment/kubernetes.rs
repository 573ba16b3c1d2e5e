//! Kubernetes manifests for a split deployment, generated from its file
//! (`modhost manifests`), so that what runs on the cluster and what the file says
//! cannot drift apart.
//!
//! Each node of `[nodes]` becomes one StatefulSet of one pod (a stable name, and a
//! volume for its data dir that follows it) behind a Service of its own, named
//! `APP-NODE`, carrying its gateway, mesh and admin ports as the file numbers them.
//! One more Service spreads client traffic over every node's gateway (any node
//! serves every route: requests for modules elsewhere are forwarded over the mesh),
//! and one PodDisruptionBudget lets a drain take at most one node at a time.
//!
//! The deployment file the nodes read is an overlay of the file given, in a
//! ConfigMap mounted beside that file in the image (the repository's Dockerfile copies
//! the application to `/app`; `config/three-node.toml` → `/app/config/
//! three-node.kubernetes.toml`, so relative paths mean what they mean in the file):
//! it extends the image's copy of the file (or of the file it extends) and replaces
//! what differs on a cluster — each node's gateway and mesh addresses become its
//! Service's name (the mesh resolves them at each connection; certificates name nodes,
//! not addresses, so `modhost certs` output serves as is), its admin API listens on
//! the pod's loopback only (`kubectl port-forward`; nodes ask each other over the
//! mesh), the data dir is the node's volume, the mesh certificates are read from the
//! node's Secret, and the admin token comes from the environment. Everything else,
//! modules and placement included, is the file's. Values written `"$NAME"` (a
//! Postgres URL, a SASL password, the admin token) are taken from the Secret
//! `APP-env`, which the operator creates; Kafka and Postgres are outside the
//! cluster's manifests, reached by the addresses the file gives them — never the
//! node's own loopback.

use anyhow::{bail, Context, Result};
use base64::Engine as _;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::{Deployment, NodeAddress};

/// The extension of the nodes' deployment file, beside the file it is made from.
pub const NODES_FILE_EXTENSION: &str = "kubernetes.toml";
/// Where a node's container finds its mesh certificates (its Secret).
pub const CERTS_DIR: &str = "/etc/modhost/certs";
/// Where a node keeps its state: its PersistentVolumeClaim.
pub const DATA_DIR: &str = "/var/lib/modhost";
/// The user and group the container runs as (the image's `modhost` user).
pub const RUN_AS: u32 = 10001;
/// The environment variable the admin token is read from.
pub const ADMIN_TOKEN_VAR: &str = "MODHOST_ADMIN_TOKEN";
/// Time a pod is given beyond the gateway's `shutdown_grace` after SIGTERM: the
/// mesh, the admin API and the event services stop after the gateway has drained.
const TERMINATION_MARGIN_SECONDS: u64 = 10;
/// The longest name of a node's StatefulSet and Service: a StatefulSet's pods carry
/// its name and a hash in a label of at most 63 characters.
const MAX_NODE_NAME: usize = 52;

/// What the manifests are made for, beyond the deployment file.
#[derive(Debug, Clone)]
pub struct Options {
    /// The container image every node runs (built from the repository's Dockerfile).
    pub image: String,
    /// The directory the image holds the application in (the Dockerfile's `/app`).
    pub image_root: PathBuf,
    /// The application's directory on this machine: the deployment's files lie under
    /// it, as they lie under `image_root` in the image.
    pub app_root: PathBuf,
    /// The namespace to put every object in (none: kubectl's current one).
    pub namespace: Option<String>,
    /// The size of each node's data volume (a Kubernetes quantity: `1Gi`).
    pub storage: String,
    /// Keys of the nodes' deployment file set to other values than the file's
    /// (`--set events.brokers=kafka.shop:9092`): what differs on the cluster beyond
    /// what the manifests change themselves.
    pub set: Vec<(String, toml::Value)>,
}

/// Reads `KEY=VALUE` (`--set`): a dotted key of the deployment file, and a TOML value
/// (`5`, `true`, `["a"]`, `"text"`), or else the text itself.
pub fn parse_setting(written: &str) -> Result<(String, toml::Value), String> {
    let Some((key, value)) = written.split_once('=') else {
        return Err(format!("--set {written}: expected KEY=VALUE"));
    };
    let key = key.trim();
    if key.is_empty() || key.split('.').any(str::is_empty) || !key.contains('.') {
        return Err(format!(
            "--set {written}: the key is a section and a key in it (events.brokers)"
        ));
    }
    let value = format!("value = {value}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut table| table.remove("value"))
        .unwrap_or_else(|| toml::Value::String(value.to_string()));
    Ok((key.to_string(), value))
}

/// The generated manifests.
#[derive(Debug)]
pub struct Manifests {
    /// Where the nodes read their deployment file, in the image.
    pub nodes_file: PathBuf,
    /// The deployment file the nodes read (the ConfigMap's).
    pub deployment_file: String,
    /// The Kubernetes objects, in the order they are applied.
    pub objects: Vec<Value>,
}

impl Manifests {
    /// The objects as one YAML stream: each object a JSON document (JSON is YAML),
    /// `---` between them, as `kubectl apply -f` takes it.
    pub fn to_yaml(&self, source: &Path) -> String {
        let mut yaml = format!(
            "# Generated by `modhost manifests {}`: regenerate it rather than edit it.\n",
            source.display()
        );
        for object in &self.objects {
            yaml.push_str("---\n");
            yaml.push_str(&serde_json::to_string_pretty(object).unwrap_or_default());
            yaml.push('\n');
        }
        yaml
    }
}

/// The manifests for `deployment`, a split one (with `[nodes]`), as `options` say;
/// `environment` names the variables its `$NAME` values read (read it with
/// [`super::declaring_environment`]). The mesh certificates are read from the files
/// `[mesh]` names (`modhost certs` makes them).
pub fn generate(
    deployment: &Deployment,
    environment: &BTreeSet<String>,
    options: &Options,
) -> Result<Manifests> {
    if deployment.nodes.is_empty() {
        bail!(
            "{} has no [nodes]: manifests are made for a split deployment (one workload \
             per node), such as config/three-node.toml",
            deployment.file.display()
        );
    }
    let Some(mesh) = &deployment.mesh else {
        bail!("{} has no [mesh]", deployment.file.display());
    };
    let app = dns_label(&deployment.app_name, "app.name", MAX_NODE_NAME)?;
    let service_of = |node: &str| {
        dns_label(
            &format!("{app}-{node}"),
            &format!("nodes.{node}"),
            MAX_NODE_NAME,
        )
    };
    let nodes_file = in_image(&deployment.file, options)?.with_extension(NODES_FILE_EXTENSION);
    let nodes_file_name = nodes_file
        .to_str()
        .context("the nodes' deployment file's path is not UTF-8")?
        .to_string();

    let mut environment = environment.clone();
    let deployment_file = overlay(deployment, options, &service_of, &mut environment)?;
    let digest: String = Sha256::digest(deployment_file.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    let namespaced = |name: &str, labels: Value| {
        let mut metadata = json!({ "name": name, "labels": labels });
        if let Some(namespace) = &options.namespace {
            metadata["namespace"] = json!(namespace);
        }
        metadata
    };
    let app_labels = json!({
        "app.kubernetes.io/name": app,
        "app.kubernetes.io/managed-by": "modhost",
    });
    let env_secret = format!("{app}-env");
    let grace = deployment
        .gateway
        .shutdown_grace
        .duration()
        .as_secs_f64()
        .ceil() as u64;

    let mut objects = vec![json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": namespaced(&format!("{app}-deployment"), app_labels.clone()),
        "data": { "deployment.toml": deployment_file },
    })];
    let mut workloads = Vec::new();
    for node in deployment.nodes.values() {
        let service = service_of(&node.name)?;
        let mut labels = app_labels.clone();
        labels["app.kubernetes.io/instance"] = json!(service);
        labels["modhost.dev/node"] = json!(node.name);
        let selector = json!({
            "app.kubernetes.io/name": app,
            "modhost.dev/node": node.name,
        });

        let secret = format!("{service}-mesh");
        let read = |path: &Path| -> Result<String> {
            let bytes = std::fs::read(path).with_context(|| {
                format!(
                    "reading node {}'s mesh certificates ({}): run `modhost certs {}` first",
                    node.name,
                    path.display(),
                    deployment.file.display()
                )
            })?;
            Ok(base64::engine::general_purpose::STANDARD.encode(bytes))
        };
        objects.push(json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": namespaced(&secret, labels.clone()),
            "type": "Opaque",
            "data": {
                "ca.pem": read(&mesh.ca)?,
                format!("{}.pem", node.name): read(&mesh.cert_of(&node.name))?,
                format!("{}.key", node.name): read(&mesh.key_of(&node.name))?,
            },
        }));

        // The admin API listens on the pod's loopback: no Service, no containerPort.
        let ports = [("http", node.listen.port()), ("mesh", node.mesh.port())];
        objects.push(json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": namespaced(&service, labels.clone()),
            "spec": {
                "selector": selector,
                "ports": ports.iter().map(|(name, port)| json!({
                    "name": name, "port": port, "targetPort": name, "protocol": "TCP",
                })).collect::<Vec<_>>(),
            },
        }));

        let memory_mib = 64
            + deployment
                .modules
                .values()
                .filter(|module| deployment.nodes_of(&module.name).contains(&node.name))
                .map(|module| module.limits.memory.bytes().div_ceil(1024 * 1024))
                .sum::<u64>();
        let mut env = vec![json!({ "name": "MODHOST_LOG_FORMAT", "value": "json" })];
        for name in &environment {
            env.push(json!({
                "name": name,
                "valueFrom": { "secretKeyRef": { "name": env_secret, "key": name } },
            }));
        }
        let probe = |path: &str, period: u32, failures: u32| {
            json!({
                "httpGet": { "path": path, "port": "http" },
                "periodSeconds": period,
                "failureThreshold": failures,
            })
        };
        workloads.push(json!({
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": namespaced(&service, labels.clone()),
            "spec": {
                "serviceName": service,
                "replicas": 1,
                "selector": { "matchLabels": selector },
                "template": {
                    "metadata": {
                        "labels": labels,
                        // A changed deployment file rolls the pods.
                        "annotations": { "modhost.dev/deployment-sha256": digest },
                    },
                    "spec": {
                        "terminationGracePeriodSeconds": grace + TERMINATION_MARGIN_SECONDS,
                        // A node needs nothing of the Kubernetes API.
                        "automountServiceAccountToken": false,
                        "enableServiceLinks": false,
                        "securityContext": {
                            "runAsNonRoot": true,
                            "runAsUser": RUN_AS,
                            "runAsGroup": RUN_AS,
                            "fsGroup": RUN_AS,
                            "seccompProfile": { "type": "RuntimeDefault" },
                        },
                        "containers": [{
                            "name": "modhost",
                            "image": options.image,
                            "args": ["run", nodes_file_name, "--node", node.name],
                            "env": env,
                            "ports": ports.iter().map(|(name, port)| json!({
                                "name": name, "containerPort": port, "protocol": "TCP",
                            })).collect::<Vec<_>>(),
                            // Compiling every module on a first start takes a while;
                            // after that, ready within seconds.
                            "startupProbe": probe("/healthz", 2, 150),
                            "livenessProbe": probe("/healthz", 10, 6),
                            "readinessProbe": probe("/readyz", 5, 2),
                            "resources": {
                                "requests": { "cpu": "250m", "memory": format!("{memory_mib}Mi") },
                            },
                            "securityContext": {
                                "allowPrivilegeEscalation": false,
                                "readOnlyRootFilesystem": true,
                                "capabilities": { "drop": ["ALL"] },
                            },
                            "volumeMounts": [
                                {
                                    "name": "deployment",
                                    "mountPath": nodes_file_name,
                                    "subPath": "deployment.toml",
                                    "readOnly": true,
                                },
                                { "name": "mesh", "mountPath": CERTS_DIR, "readOnly": true },
                                { "name": "data", "mountPath": DATA_DIR },
                                // SQLite's temporary files (large sorts, index builds)
                                // on a read-only root filesystem.
                                { "name": "tmp", "mountPath": "/tmp" },
                            ],
                        }],
                        "volumes": [
                            { "name": "deployment", "configMap": { "name": format!("{app}-deployment") } },
                            { "name": "mesh", "secret": { "secretName": secret, "defaultMode": 0o440 } },
                            { "name": "tmp", "emptyDir": {} },
                        ],
                    },
                },
                "volumeClaimTemplates": [{
                    "metadata": { "name": "data" },
                    "spec": {
                        "accessModes": ["ReadWriteOnce"],
                        "resources": { "requests": { "storage": options.storage } },
                    },
                }],
            },
        }));
    }
    objects.push(json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": namespaced(&format!("{app}-gateway"), app_labels.clone()),
        "spec": {
            "selector": { "app.kubernetes.io/name": app },
            "ports": [{ "name": "http", "port": 80, "targetPort": "http", "protocol": "TCP" }],
        },
    }));
    objects.extend(workloads);
    objects.push(json!({
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": namespaced(&app, app_labels.clone()),
        "spec": {
            "maxUnavailable": 1,
            "selector": { "matchLabels": { "app.kubernetes.io/name": app } },
        },
    }));
    Ok(Manifests {
        nodes_file,
        deployment_file,
        objects,
    })
}

/// The deployment file of the cluster's nodes: an overlay of the image's copy of the
/// file (or of the file it extends), with what differs on a cluster.
/// Adds to `environment` the variables it makes the nodes read.
fn overlay(
    deployment: &Deployment,
    options: &Options,
    service_of: &dyn Fn(&str) -> Result<String>,
    environment: &mut BTreeSet<String>,
) -> Result<String> {
    let written = table_of(&deployment.file)?;
    let base = deployment.origins.base().map(table_of).transpose()?;
    // The section as the deployment has it: the file's, or else its base's.
    let effective = |section: &str| {
        written
            .get(section)
            .or_else(|| base.as_ref().and_then(|base| base.get(section)))
            .and_then(toml::Value::as_table)
            .cloned()
            .unwrap_or_default()
    };

    let mut out = toml::Table::new();
    let extended = deployment.origins.base().unwrap_or(&deployment.file);
    out.insert(
        "extends".into(),
        in_image(extended, options)?.display().to_string().into(),
    );
    // An overlay's own sections stay as written (a base's are the image's already).
    if base.is_some() {
        for (key, value) in &written {
            if !["extends", "app", "nodes", "mesh", "admin"].contains(&key.as_str()) {
                out.insert(key.clone(), value.clone());
            }
        }
    }
    let mut app = effective("app");
    app.insert("data_dir".into(), DATA_DIR.into());
    out.insert("app".into(), app.into());

    let mut nodes = toml::Table::new();
    for node in deployment.nodes.values() {
        let service = service_of(&node.name)?;
        let at = |address: &NodeAddress| format!("{service}:{}", address.port());
        let mut spec = toml::Table::new();
        spec.insert("listen".into(), at(&node.listen).into());
        spec.insert("mesh".into(), at(&node.mesh).into());
        if let Some(admin) = &node.admin {
            spec.insert("admin".into(), format!("localhost:{}", admin.port()).into());
        }
        nodes.insert(node.name.clone(), spec.into());
    }
    out.insert("nodes".into(), nodes.into());

    let mut mesh = effective("mesh");
    mesh.insert("ca".into(), format!("{CERTS_DIR}/ca.pem").into());
    mesh.insert("cert".into(), format!("{CERTS_DIR}/{{node}}.pem").into());
    mesh.insert("key".into(), format!("{CERTS_DIR}/{{node}}.key").into());
    out.insert("mesh".into(), mesh.into());

    if deployment.admin.is_some() {
        let mut admin = effective("admin");
        let from_environment = admin
            .get("token")
            .and_then(toml::Value::as_str)
            .is_some_and(|token| token.starts_with('$'));
        if !from_environment {
            admin.insert("token".into(), format!("${ADMIN_TOKEN_VAR}").into());
            environment.insert(ADMIN_TOKEN_VAR.to_string());
        }
        out.insert("admin".into(), admin.into());
    }

    for (key, value) in &options.set {
        let mut path = key.split('.');
        let section = path.next().unwrap_or_default();
        if ["modules", "extends"].contains(&section) {
            bail!("--set {key}: the modules are the image's; change them in the file it holds");
        }
        let generated = ["nodes", "mesh.ca", "mesh.cert", "mesh.key", "app.data_dir"];
        if generated
            .iter()
            .any(|owned| key == owned || key.starts_with(&format!("{owned}.")))
        {
            bail!("--set {key}: the manifests write it (Services, Secrets, volumes)");
        }
        if !out.contains_key(section) {
            let section_dir = |file: &Path| file.parent().map(Path::to_path_buf);
            let from_base = !written.contains_key(section);
            let elsewhere = deployment
                .origins
                .base()
                .is_some_and(|base| section_dir(base) != section_dir(&deployment.file));
            if from_base && elsewhere {
                bail!(
                    "--set {key}: [{section}] is the base's, in another directory than {}: \
                     its relative paths would not hold beside it; write [{section}] in {}",
                    deployment.file.display(),
                    deployment.file.display()
                );
            }
            out.insert(section.to_string(), effective(section).into());
        }
        let mut table = out.get_mut(section).and_then(toml::Value::as_table_mut);
        let keys: Vec<&str> = path.collect();
        for (i, name) in keys.iter().enumerate() {
            let Some(current) = table else {
                bail!("--set {key}: {} is not a table", keys[..i].join("."));
            };
            if i + 1 == keys.len() {
                current.insert(name.to_string(), value.clone());
                collect_variables(value, environment);
                break;
            }
            table = current
                .entry(name.to_string())
                .or_insert_with(|| toml::Table::new().into())
                .as_table_mut();
        }
    }
    for module in deployment.modules.values() {
        if let Some(super::DatabaseSpec {
            backend: super::DatabaseBackend::Postgres { url, .. },
            ..
        }) = &module.database
        {
            let host = url
                .split_once("://")
                .map(|(_, rest)| rest)
                .and_then(|rest| rest.split('/').next())
                .map(|authority| authority.rsplit('@').next().unwrap_or(authority))
                .unwrap_or_default();
            if is_loopback(host) {
                bail!(
                    "modules.{}.database: {host} is the node's own loopback, not a database on \
                     the cluster: write its address (or \"$NAME\", read from the Secret APP-env)",
                    module.name
                );
            }
        }
    }
    if let Some(brokers) = out
        .get("events")
        .or_else(|| written.get("events"))
        .or_else(|| base.as_ref().and_then(|base| base.get("events")))
        .and_then(|events| events.get("brokers"))
        .and_then(toml::Value::as_str)
    {
        let loopback = brokers
            .split(',')
            .map(str::trim)
            .find(|broker| is_loopback(broker));
        if let Some(broker) = loopback {
            bail!(
                "events.brokers: {broker} is the node's own loopback, not a broker on the \
                 cluster: give the brokers' address with --set events.brokers=HOST:PORT, \
                 or write brokers = \"$KAFKA_BROKERS\" in the file (the nodes then read \
                 it from the Secret APP-env)"
            );
        }
    }

    let text = toml::to_string(&out).context("writing the nodes' deployment file")?;
    Ok(format!(
        "# The deployment file of {}'s nodes on Kubernetes, generated by `modhost \
         manifests` from {}:\n# the image's {} with each node's Service, volume, \
         certificates and secrets.\n{text}",
        deployment.app_name,
        deployment.file.display(),
        extended.display()
    ))
}

/// Adds the `NAME` of every string value `"$NAME"` in `value` (one `--set` gives) to
/// `names`.
fn collect_variables(value: &toml::Value, names: &mut BTreeSet<String>) {
    match value {
        toml::Value::String(text) => {
            if let Some(name) = text.strip_prefix('$') {
                let is_name = !name.is_empty()
                    && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    && !name.starts_with(|c: char| c.is_ascii_digit());
                if is_name {
                    names.insert(name.to_string());
                }
            }
        }
        toml::Value::Array(values) => values
            .iter()
            .for_each(|value| collect_variables(value, names)),
        toml::Value::Table(table) => table
            .values()
            .for_each(|value| collect_variables(value, names)),
        _ => {}
    }
}

/// The TOML of the file at `path`, as written.
fn table_of(path: &Path) -> Result<toml::Table> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.parse::<toml::Table>()
        .with_context(|| format!("parsing {}", path.display()))
}

/// Where the image holds `path`, a file under the application's directory here.
fn in_image(path: &Path, options: &Options) -> Result<PathBuf> {
    let absolute = |path: &Path| {
        std::fs::canonicalize(path).with_context(|| format!("finding {}", path.display()))
    };
    let root = absolute(&options.app_root)?;
    let file = absolute(path)?;
    match file.strip_prefix(&root) {
        Ok(relative) => Ok(options.image_root.join(relative)),
        Err(_) => bail!(
            "{} is not under {}, the application directory the image is built from: run \
             `modhost manifests` from the application's directory",
            path.display(),
            options.app_root.display()
        ),
    }
}

/// `name` as a Kubernetes object name (an RFC 1035 label: lower-case letters, digits
/// and `-`, starting with a letter, at most `max`), `_` written `-`; `key` names where
/// it comes from when it cannot be one.
fn dns_label(name: &str, key: &str, max: usize) -> Result<String> {
    let label = name.to_ascii_lowercase().replace(['_', ' '], "-");
    let valid = label.len() <= max
        && label.starts_with(|c: char| c.is_ascii_lowercase())
        && !label.ends_with('-')
        && label
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !valid {
        bail!(
            "{key}: {label:?} cannot name a Kubernetes object (lower-case letters, digits \
             and '-', starting with a letter, at most {max})"
        );
    }
    Ok(label)
}

/// Whether `address` (`host`, `host:port`, `[v6]:port`) is this machine's loopback.
fn is_loopback(address: &str) -> bool {
    let host = match address.rsplit_once(':') {
        Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => host,
        _ => address,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_names_are_dns_labels() {
        assert_eq!(dns_label("shop_a", "k", 52).unwrap(), "shop-a");
        assert_eq!(dns_label("Shop", "k", 52).unwrap(), "shop");
        let long = "x".repeat(53);
        for bad in ["9shop", "shop.a", "shop-", "", long.as_str()] {
            let error = dns_label(bad, "nodes.a", 52).unwrap_err().to_string();
            assert!(error.starts_with("nodes.a: "), "{error}");
        }
    }

    #[test]
    fn loopback_addresses_are_this_machines() {
        for here in [
            "127.0.0.1:9092",
            "localhost:9092",
            "LOCALHOST",
            "[::1]:9092",
            "127.8.0.1",
        ] {
            assert!(is_loopback(here), "{here}");
        }
        for there in [
            "kafka.shop:9092",
            "10.0.0.5:9092",
            "[fd00::1]:9092",
            "db.example",
        ] {
            assert!(!is_loopback(there), "{there}");
        }
    }

    #[test]
    fn variables_are_values_written_as_a_dollar_and_a_name() {
        let table: toml::Table = r#"
            token = "$MODHOST_ADMIN_TOKEN"
            db = { postgres = "$SHOP_DB", note = "costs $5" }
            list = ["$A_1", "$", "$1X", "plain"]
        "#
        .parse()
        .unwrap();
        let mut names = BTreeSet::new();
        collect_variables(&toml::Value::Table(table), &mut names);
        assert_eq!(
            names.into_iter().collect::<Vec<_>>(),
            ["A_1", "MODHOST_ADMIN_TOKEN", "SHOP_DB"]
        );
    }
}
