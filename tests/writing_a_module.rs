//! docs/writing-a-module.md, run: every command and every file of the guide, in order,
//! in an application of its own, so the guide cannot rot.
//!
//! The guide's fenced blocks are read in order:
//! - a block whose info string names a file (```rust file=modules/x/src/lib.rs) is
//!   written there whole;
//! - a `sh` block's lines are commands, run from the application's root with this
//!   build's `modhost` first on `PATH`. `modhost up FILE` starts a server (stopping the
//!   one before it) on a free port, where the guide's `localhost:8080` then points; a
//!   `# → TEXT` line after a command asserts that its output contains TEXT, and
//!   `# eventually → TEXT` waits (bounded) for it, repeating the command.

mod common;
use common::*;
use std::path::Path;
use std::time::{Duration, Instant};

const GUIDE: &str = "docs/writing-a-module.md";

/// One step of the guide.
#[derive(Debug)]
enum Step {
    /// Write this file (relative to the application's root).
    File { path: String, text: String },
    /// Run this command line; its output must contain `expect` (when given), at once or
    /// `eventually`.
    Command {
        line: String,
        expect: Option<String>,
        eventually: bool,
    },
}

/// The guide's steps, in order.
fn steps(guide: &str) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut lines = guide.lines();
    while let Some(line) = lines.next() {
        let Some(info) = line.strip_prefix("```") else {
            continue;
        };
        let block: Vec<&str> = lines
            .by_ref()
            .take_while(|l| !l.starts_with("```"))
            .collect();
        if let Some(path) = info
            .split_whitespace()
            .find_map(|w| w.strip_prefix("file="))
        {
            steps.push(Step::File {
                path: path.to_string(),
                text: block.join("\n") + "\n",
            });
        } else if info.trim() == "sh" {
            for line in block {
                if let Some(expected) = line.strip_prefix("# → ") {
                    expect(&mut steps, expected, false);
                } else if let Some(expected) = line.strip_prefix("# eventually → ") {
                    expect(&mut steps, expected, true);
                } else if !line.trim().is_empty() && !line.starts_with('#') {
                    steps.push(Step::Command {
                        line: line.to_string(),
                        expect: None,
                        eventually: false,
                    });
                }
            }
        }
    }
    steps
}

fn expect(steps: &mut [Step], expected: &str, waits: bool) {
    match steps.last_mut() {
        Some(Step::Command {
            expect, eventually, ..
        }) if expect.is_none() => {
            *expect = Some(expected.to_string());
            *eventually = waits;
        }
        _ => panic!("{GUIDE}: `# → {expected}` follows no command"),
    }
}

/// An application laid out like this repository: its WIT, the SDKs, the shop's `users`
/// module, a workspace holding the Rust ones.
fn guide_application() -> tempfile::TempDir {
    application(
        &[
            "wit",
            "modules/sdk",
            "modules/sdk-python",
            "modules/sdk-js",
            "modules/users",
        ],
        &["modules/sdk", "modules/users"],
    )
}

/// Runs `line` with `sh` in `root` (`localhost:8080` being `server`'s address); its
/// exit code and output (stdout, then stderr).
fn run(root: &Path, line: &str, server: Option<&Modhost>) -> (Option<i32>, String) {
    let mut line = line.to_string();
    if let Some(server) = server {
        line = line.replace("localhost:8080", &server.addr.to_string());
    }
    shell(root, &line, &[])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_of_the_guide_to_writing_a_module_works() {
    let guide = std::fs::read_to_string(workspace().join(GUIDE)).unwrap();
    let steps = steps(&guide);
    let commands = steps
        .iter()
        .filter(|s| matches!(s, Step::Command { .. }))
        .count();
    assert!(commands >= 10, "{GUIDE} lost its commands: {steps:#?}");
    let app = guide_application();
    let root = app.path();
    let mut server: Option<Modhost> = None;
    for step in &steps {
        match step {
            Step::File { path, text } => {
                let path = root.join(path);
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(path, text).unwrap();
            }
            Step::Command { line, .. } if line.starts_with("modhost up ") => {
                drop(server.take());
                let file = line.trim_start_matches("modhost up ").trim();
                server = Some(Modhost::spawn(
                    &[
                        "up".into(),
                        root.join(file).into(),
                        "--listen".into(),
                        "127.0.0.1:0".into(),
                    ],
                    &[("CARGO_TARGET_DIR", target_dir().to_str().unwrap())],
                ));
            }
            Step::Command {
                line,
                expect,
                eventually,
            } => {
                let deadline = Instant::now() + Duration::from_secs(30);
                loop {
                    let (code, output) = run(root, line, server.as_ref());
                    assert_eq!(code, Some(0), "{GUIDE}: `{line}` failed:\n{output}");
                    let Some(expected) = expect else { break };
                    if output.contains(expected.as_str()) {
                        break;
                    }
                    assert!(
                        *eventually && Instant::now() < deadline,
                        "{GUIDE}: `{line}` printed\n{output}\nnot containing\n{expected}{}",
                        server
                            .as_ref()
                            .map(|s| format!("\nserver log:\n{}", s.logs().join("\n")))
                            .unwrap_or_default()
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}
