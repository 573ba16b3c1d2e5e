//! A real browser for a test: Debian's Chromium, driven by `playwright-core` under
//! Node.js. `./test.sh` installs `playwright-core` into the tools cache
//! (`$MODHOST_NODE_MODULES`, by default `~/.cache/modhost/tools/node/node_modules`);
//! `.ci/run` installs the `chromium` package. Playwright's own browser download is
//! never used: it drives the machine's Chromium.
//!
//! Without them a test is skipped with a message, except under `CI=true`, where it
//! fails: CI must run every test.

use super::on_path;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Node.js, `playwright-core` and Chromium, found.
pub struct Browser {
    node: PathBuf,
    modules: PathBuf,
    chromium: PathBuf,
}

impl Browser {
    /// What a browser test needs, or `None` (after saying what is missing) when this
    /// machine lacks it and this is not CI.
    pub fn find() -> Option<Browser> {
        let modules = std::env::var_os("MODHOST_NODE_MODULES")
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME")
                    .map(|home| PathBuf::from(home).join(".cache/modhost/tools/node/node_modules"))
            })
            .unwrap_or_default();
        let node = on_path("node");
        let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
            .into_iter()
            .map(PathBuf::from)
            .find(|path| path.is_file());
        let playwright = modules.join("playwright-core").is_dir();
        let missing = match (&node, &chromium, playwright) {
            (None, _, _) => Some("no node on PATH".to_string()),
            (_, None, _) => Some("no /usr/bin/chromium: install the chromium package".to_string()),
            (_, _, false) => Some(format!(
                "no playwright-core in {} (./test.sh installs it)",
                modules.display()
            )),
            _ => None,
        };
        if let Some(why) = missing {
            return super::missing("this browser test", &why);
        }
        Some(Browser {
            node: node?,
            modules,
            chromium: chromium?,
        })
    }

    /// Runs the Node.js script `script` with `env` (and `CHROMIUM`, the browser to
    /// drive), and returns the JSON it prints last on stdout. A script that fails
    /// fails the test with what it said.
    pub async fn run(&self, script: &Path, env: Vec<(String, String)>) -> serde_json::Value {
        let mut command = Command::new(&self.node);
        command
            .arg(script)
            .env("NODE_PATH", &self.modules)
            .env("CHROMIUM", &self.chromium)
            .envs(env);
        let output = tokio::task::spawn_blocking(move || command.output())
            .await
            .expect("the browser script's thread")
            .expect("run node");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "the browser script failed ({}):\nstdout:\n{stdout}\nstderr:\n{stderr}",
            output.status
        );
        let last = stdout.lines().last().unwrap_or_default();
        serde_json::from_str(last).unwrap_or_else(|e| {
            panic!("the script's last line is not JSON ({e}):\n{stdout}\n{stderr}")
        })
    }
}
