//! `modhost new`: a scaffolded module, in Rust, Python and JavaScript, builds, passes its
//! own test and serves on the first try — in an application of its own (a copy of this
//! repository's `wit/` and SDKs in a temporary directory, with the same build profiles,
//! so compiled dependencies are shared), as a team would start one.

mod common;
use common::*;
use std::path::Path;
use std::process::Command;

/// A new application: the WIT packages and the SDKs, and a workspace with no module.
fn new_application() -> tempfile::TempDir {
    application(
        &["wit", "modules/sdk", "modules/sdk-python", "modules/sdk-js"],
        &["modules/sdk"],
    )
}

/// Runs `modhost ARGS` in `dir` with the shared target directory; its output, or a
/// panic with it.
fn modhost(dir: &Path, args: &[&str]) -> String {
    let output = Command::new(modhost_bin())
        .args(args)
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", target_dir())
        .env("MODHOST_LOG", "warn")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "modhost {args:?} failed:\n{text}");
    text
}

/// The stanza `modhost new` printed, after its blank line.
fn stanza(printed: &str) -> String {
    let start = printed.find("[modules.").expect("a stanza was printed");
    printed[start..].to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_module_in_rust_python_and_javascript_builds_passes_its_test_and_serves() {
    let app = new_application();
    let root = app.path();
    // From a subdirectory: the application is found above it.
    let rust = modhost(&root.join("config"), &["new", "notes-demo"]);
    let python = modhost(
        &root.join("config"),
        &["new", "py-notes", "--lang", "python"],
    );
    let javascript = modhost(
        &root.join("config"),
        &["new", "js-notes", "--lang", "javascript"],
    );
    assert!(
        rust.contains("wrote ") && rust.contains("notes-demo.wit"),
        "{rust}"
    );
    let file = root.join("config/app.toml");
    std::fs::write(
        &file,
        format!(
            "[app]\nname = \"app\"\n\n{}\n{}\n{}",
            stanza(&rust),
            stanza(&python),
            stanza(&javascript)
        ),
    )
    .unwrap();

    // Built from the deployment file, as `modhost up` does.
    modhost(root, &["build", "config/app.toml"]);
    // Their own tests: Rust's on the host target, Python's on CPython, JavaScript's on
    // Node.
    let tested = Command::new(env!("CARGO"))
        .args(["test", "--quiet", "-p", "notes-demo"])
        .current_dir(root)
        .env("CARGO_TARGET_DIR", target_dir())
        .output()
        .unwrap();
    assert!(
        tested.status.success(),
        "{}{}",
        String::from_utf8_lossy(&tested.stdout),
        String::from_utf8_lossy(&tested.stderr)
    );
    let tested = Command::new("python3")
        .args(["-m", "unittest", "discover", "-s", "tests"])
        .current_dir(root.join("modules/py-notes"))
        .output()
        .unwrap();
    assert!(
        tested.status.success(),
        "{}",
        String::from_utf8_lossy(&tested.stderr)
    );

    let tested = Command::new("node")
        .args(["--test", "test/"])
        .current_dir(root.join("modules/js-notes"))
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&tested.stdout);
    assert!(
        tested.status.success() && report.contains("# pass 1"),
        "{report}{}",
        String::from_utf8_lossy(&tested.stderr)
    );

    // And they serve: each its route, its table, its validation.
    let data = root.join("data");
    let host = Modhost::spawn(
        &[
            "run".into(),
            file.into(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--data-dir".into(),
            data.into(),
        ],
        &[("CARGO_TARGET_DIR", target_dir().to_str().unwrap())],
    );
    let http = client(false);
    for module in ["notes-demo", "py-notes", "js-notes"] {
        let url = host.url(&format!("/{module}"));
        let created = send(&http, "POST", &url, Some(r#"{"text": "  buy milk "}"#)).await;
        assert_eq!(created.status, 201, "{module}: {}", created.text());
        assert_eq!(
            created.json(),
            serde_json::json!({"id": 1, "text": "buy milk"})
        );
        let listed = send(&http, "GET", &url, None).await;
        assert_eq!(listed.status, 200, "{module}: {}", listed.text());
        assert_eq!(
            listed.json(),
            serde_json::json!({"notes": [{"id": 1, "text": "buy milk"}]})
        );
        let invalid = send(&http, "POST", &url, Some(r#"{"text": " "}"#)).await;
        assert_eq!(invalid.status, 400, "{module}: {}", invalid.text());
        assert_eq!(invalid.json()["error"]["fields"]["text"], "is required");
        let wrong = send(&http, "DELETE", &url, None).await;
        assert_eq!(wrong.status, 405, "{module}: {}", wrong.text());
    }
}

#[test]
fn new_refuses_a_name_that_exists_or_cannot_be_wit_and_outside_an_application() {
    let app = new_application();
    let run = |dir: &Path, args: &[&str]| {
        Command::new(modhost_bin())
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap()
    };
    modhost(app.path(), &["new", "taken", "--lang", "python"]);
    let js = run(app.path(), &["new", "taken", "--lang", "javascript"]);
    assert_eq!(
        js.status.code(),
        Some(2),
        "a name is taken whatever the language"
    );
    let again = run(app.path(), &["new", "taken"]);
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists already"));
    let bad = run(app.path(), &["new", "Not_Wit"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("must be lower-case letters"));
    let nowhere = tempfile::tempdir().unwrap();
    let outside = run(nowhere.path(), &["new", "lost"]);
    assert_eq!(outside.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&outside.stderr).contains("not inside a modhost application"));
}
