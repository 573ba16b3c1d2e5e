//! A split deployment for a test: several real `modhost` processes, one per node of
//! the deployment, on loopback ports, with real mutual TLS between them (a CA and node
//! certificates made by `modhost certs`).

use std::collections::BTreeMap;

use super::{free_port, modhost_bin, Modhost, TestDeployment};

/// The nodes of a split deployment, running.
pub struct Cluster {
    pub deployment: TestDeployment,
    pub nodes: BTreeMap<String, Modhost>,
}

impl Cluster {
    /// Splits `toml` (a deployment without `[nodes]`, `[placement]` or `[mesh]`) over
    /// `nodes` as `placement` says (module → nodes), makes certificates, and starts
    /// every node. `extra` is appended to the file (more sections, say).
    pub fn start(toml: &str, nodes: &[&str], placement: &[(&str, &[&str])]) -> Cluster {
        Cluster::launch(Cluster::write(toml, nodes, placement), nodes)
    }

    /// Like [`Self::start`], the deployment split the way a user splits one: `base`
    /// (the one-node file, as `base.toml`) extended by `overlay` (which says
    /// `extends = "base.toml"`), to which the nodes, placement and mesh are added.
    pub fn start_extending(
        base: &str,
        overlay: &str,
        nodes: &[&str],
        placement: &[(&str, &[&str])],
    ) -> Cluster {
        let deployment = Cluster::write(overlay, nodes, placement);
        deployment.write_beside("base.toml", base);
        Cluster::launch(deployment, nodes)
    }

    /// Makes `deployment`'s certificates and starts each of its `nodes` (a deployment
    /// from [`Self::write`], changed by the test).
    pub fn launch(deployment: TestDeployment, nodes: &[&str]) -> Cluster {
        Cluster::certs(&deployment);
        let mut cluster = Cluster {
            deployment,
            nodes: BTreeMap::new(),
        };
        for node in nodes {
            cluster.start_node(node, &[]);
        }
        cluster
    }

    /// Writes the split deployment file (with free ports) without starting anything.
    pub fn write(toml: &str, nodes: &[&str], placement: &[(&str, &[&str])]) -> TestDeployment {
        let mut text = toml.to_string();
        for node in nodes {
            text.push_str(&format!(
                "\n[nodes.{node}]\nlisten = \"127.0.0.1:{}\"\nmesh = \"127.0.0.1:{}\"\nadmin = \"127.0.0.1:{}\"\n",
                free_port(),
                free_port(),
                free_port()
            ));
        }
        text.push_str("\n[placement]\n");
        for (module, on) in placement {
            let on: Vec<String> = on.iter().map(|n| format!("{n:?}")).collect();
            text.push_str(&format!("{module} = [{}]\n", on.join(", ")));
        }
        text.push_str(
            "\n[mesh]\nca = \"certs/ca.pem\"\ncert = \"certs/{node}.pem\"\nkey = \"certs/{node}.key\"\n\
             connect_timeout = \"500ms\"\nbreaker = { consecutive_failures = 3, open_for = \"1s\" }\n",
        );
        TestDeployment::new(&text)
    }

    /// Runs `modhost certs` on `deployment`.
    pub fn certs(deployment: &TestDeployment) {
        let output = std::process::Command::new(modhost_bin())
            .arg("certs")
            .arg(&deployment.file)
            .output()
            .expect("run modhost certs");
        assert!(
            output.status.success(),
            "modhost certs failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Starts (or restarts) node `node`, with its own data dir and extra `env`.
    pub fn start_node(&mut self, node: &str, env: &[(&str, &str)]) {
        self.nodes.remove(node);
        let args: Vec<std::ffi::OsString> = vec![
            "run".into(),
            self.deployment.file.clone().into(),
            "--node".into(),
            node.into(),
            "--data-dir".into(),
            self.deployment
                .dir
                .path()
                .join(format!("data-{node}"))
                .into(),
        ];
        self.nodes
            .insert(node.to_string(), Modhost::spawn(&args, env));
    }

    /// Node `node`.
    pub fn node(&self, node: &str) -> &Modhost {
        &self.nodes[node]
    }

    /// Node `node`, to kill or signal.
    pub fn node_mut(&mut self, node: &str) -> &mut Modhost {
        self.nodes.get_mut(node).expect("a node of the cluster")
    }

    /// Every log line of every node, prefixed with the node's name.
    pub fn logs(&self) -> Vec<String> {
        self.nodes
            .iter()
            .flat_map(|(name, host)| {
                host.logs()
                    .into_iter()
                    .map(move |line| format!("[{name}] {line}"))
            })
            .collect()
    }
}
