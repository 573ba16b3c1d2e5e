//! `modhost new`: a new module to start from, in Rust, Python or JavaScript, that
//! builds, passes its own test and serves on the first try.
//!
//! It is written into an application laid out like this repository — `wit/` with the
//! `modhost:*` packages, `modules/sdk` (Rust), `modules/sdk-python` or `modules/sdk-js`
//! — as
//! `modules/NAME/` with its contract in `wit/NAMESPACE/NAME.wit`: a table of notes
//! (its migration), `GET`/`POST /NAME`, a `count` function other modules may call, and a
//! unit test of its rules. A Rust module also joins the workspace's `members`.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// The language of a new module.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Language {
    /// A Rust crate built for `wasm32-wasip2` with the workspace's SDK.
    Rust,
    /// A Python module built with componentize-py with the Python SDK.
    Python,
    /// A JavaScript module built with componentize-js with the JavaScript SDK.
    JavaScript,
}

/// What `modhost new` wrote.
#[derive(Debug)]
pub struct Scaffolded {
    /// The module's directory.
    pub dir: PathBuf,
    /// Every file written (and the workspace manifest, when it was changed).
    pub files: Vec<PathBuf>,
    /// The module's section for a deployment file in the application's `config/`.
    pub stanza: String,
}

const CONTRACT: &str = include_str!("scaffold/shared/contract.wit");
const MIGRATION: &str = include_str!("scaffold/shared/migration.sql");
const RUST: &[(&str, &str)] = &[
    ("Cargo.toml", include_str!("scaffold/rust/Cargo.toml")),
    ("src/lib.rs", include_str!("scaffold/rust/src/lib.rs")),
];
const JAVASCRIPT: &[(&str, &str)] = &[
    (
        "package.json",
        include_str!("scaffold/javascript/package.json"),
    ),
    ("app.js", include_str!("scaffold/javascript/app.js")),
    ("notes.js", include_str!("scaffold/javascript/notes.js")),
    (
        "test/notes.test.js",
        include_str!("scaffold/javascript/test/notes.test.js"),
    ),
];
const PYTHON: &[(&str, &str)] = &[
    (
        "pyproject.toml",
        include_str!("scaffold/python/pyproject.toml"),
    ),
    ("app.py", include_str!("scaffold/python/app.py")),
    ("notes.py", include_str!("scaffold/python/notes.py")),
    (
        "tests/test_notes.py",
        include_str!("scaffold/python/tests/test_notes.py"),
    ),
];

/// The nearest directory at or above `from` that holds a modhost application (its
/// `wit/modhost/sql.wit`).
pub fn find_app_root(from: &Path) -> Option<PathBuf> {
    from.ancestors()
        .find(|dir| dir.join("wit/modhost/sql.wit").is_file())
        .map(Path::to_path_buf)
}

/// Writes module `name` (contract package `namespace:name`) in `language` into the
/// application at `root`. Nothing is overwritten: an existing module or contract of
/// that name is an error.
pub fn new_module(
    root: &Path,
    name: &str,
    namespace: &str,
    language: Language,
) -> Result<Scaffolded> {
    for (what, value) in [("module name", name), ("namespace", namespace)] {
        if !is_wit_name(value) {
            bail!(
                "{what} {value:?} must be lower-case letters and digits in words joined by \
                 '-', starting with a letter (it names a WIT package and a route)"
            );
        }
    }
    if let Some(why) = taken_name(name) {
        bail!("module name {name:?} cannot be used: {why}; nothing was written");
    }
    let sdk = match language {
        Language::Rust => "modules/sdk/Cargo.toml",
        Language::Python => "modules/sdk-python/modhost_guest/__init__.py",
        Language::JavaScript => "modules/sdk-js/modhost_guest.js",
    };
    if !root.join(sdk).is_file() {
        bail!(
            "{} has no {sdk}: a new module uses the application's SDK",
            root.display()
        );
    }
    let dir = root.join("modules").join(name);
    let contract = root.join("wit").join(namespace).join(format!("{name}.wit"));
    for taken in [&dir, &contract] {
        if taken.exists() {
            bail!("{} exists already; nothing was written", taken.display());
        }
    }
    // Everything that can refuse is asked before the first file is written.
    let manifest = root.join("Cargo.toml");
    let joined = match language {
        Language::Rust => Some(with_member(&manifest, &format!("modules/{name}"))?),
        Language::Python | Language::JavaScript => None,
    };
    let fill = |template: &str| {
        template
            .replace("{{name}}", name)
            .replace("{{ident}}", &name.replace('-', "_"))
            .replace("{{namespace}}", namespace)
            .replace("{{namespace_ident}}", &namespace.replace('-', "_"))
    };
    let mut files = Vec::new();
    let mut write = |path: PathBuf, text: String| -> Result<()> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        files.push(path);
        Ok(())
    };
    write(contract, fill(CONTRACT))?;
    write(
        dir.join("migrations")
            .join(format!("0001_{}.sql", name.replace('-', "_"))),
        fill(MIGRATION),
    )?;
    let templates = match language {
        Language::Rust => RUST,
        Language::Python => PYTHON,
        Language::JavaScript => JAVASCRIPT,
    };
    for (path, template) in templates {
        write(dir.join(path), fill(template))?;
    }
    if let Some(Some(updated)) = joined {
        std::fs::write(&manifest, updated)
            .with_context(|| format!("writing {}", manifest.display()))?;
        files.push(manifest);
    }
    let memory = match language {
        Language::Rust => "32MiB",
        // CPython's heap and its image of the module take ~20 MiB before any request,
        // StarlingMonkey's about as much.
        Language::Python | Language::JavaScript => "64MiB",
    };
    let stanza = format!(
        "[modules.{name}]\n\
         component = \"../modules/{name}\"   # relative to a deployment file in config/\n\
         routes = [\"/{name}\"]\n\
         database = \"sqlite\"\n\
         limits = {{ memory = \"{memory}\", timeout = \"2s\", concurrency = 64 }}\n"
    );
    Ok(Scaffolded { dir, files, stanza })
}

/// The workspace manifest at `path` with `member` added to its `members` (`None` when
/// it is there already), or why it cannot be.
fn with_member(path: &Path, member: &str) -> Result<Option<String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading {}; nothing was written", path.display()))?;
    let parsed: toml::Table = text
        .parse()
        .with_context(|| format!("{} is not valid TOML; nothing was written", path.display()))?;
    let members = parsed
        .get("workspace")
        .and_then(|workspace| workspace.get("members"))
        .and_then(toml::Value::as_array);
    if members.is_some_and(|members| members.iter().any(|m| m.as_str() == Some(member))) {
        return Ok(None);
    }
    // Edit the text rather than re-serialise the table, so comments and layout stay: the
    // line that starts with `members` (never `default-members`).
    let start = text
        .match_indices("members")
        .map(|(at, _)| at)
        .find(|&at| {
            (at == 0 || text[..at].ends_with('\n'))
                && text[at + "members".len()..].trim_start().starts_with('=')
        })
        .and_then(|at| text[at..].find('[').map(|open| at + open + 1));
    let Some(at) = start else {
        bail!(
            "{} has no `members = [` line in its [workspace]: add \"{member}\" to its members \
             by hand; nothing was written",
            path.display()
        );
    };
    let rest = text[at..].trim_start();
    let separator = if rest.starts_with(']') { "" } else { ", " };
    Ok(Some(format!(
        "{}\"{member}\"{separator}{}",
        &text[..at],
        rest
    )))
}

/// Why `name` cannot name a module although it is a WIT name: a WIT keyword, the name
/// of the contract's interface, a crate name cargo refuses, or a route the gateway
/// keeps for itself.
fn taken_name(name: &str) -> Option<&'static str> {
    const WIT_KEYWORDS: &[&str] = &[
        "as",
        "async",
        "bool",
        "borrow",
        "char",
        "constructor",
        "enum",
        "error-context",
        "export",
        "f32",
        "f64",
        "flags",
        "from",
        "func",
        "future",
        "import",
        "include",
        "interface",
        "list",
        "option",
        "own",
        "package",
        "record",
        "resource",
        "result",
        "s8",
        "s16",
        "s32",
        "s64",
        "static",
        "stream",
        "string",
        "tuple",
        "type",
        "u8",
        "u16",
        "u32",
        "u64",
        "use",
        "variant",
        "with",
        "world",
    ];
    const CARGO_RESERVED: &[&str] = &[
        "test",
        "std",
        "core",
        "alloc",
        "proc-macro",
        "self",
        "crate",
        "super",
    ];
    if WIT_KEYWORDS.contains(&name) {
        Some("it is a WIT keyword")
    } else if name == "api" {
        Some("its contract's interface is `api`, and a world may not share its name")
    } else if CARGO_RESERVED.contains(&name) {
        Some("cargo keeps it for itself")
    } else if crate::deployment::routes::RESERVED.contains(&format!("/{name}").as_str()) {
        Some("the gateway keeps its route for itself")
    } else {
        None
    }
}

/// A WIT identifier: lower-case words of letters and digits joined by '-', each word
/// starting with a letter.
fn is_wit_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.split('-').all(|word| {
            word.chars().next().is_some_and(|c| c.is_ascii_lowercase())
                && word
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app() -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        for file in [
            "wit/modhost/sql.wit",
            "modules/sdk/Cargo.toml",
            "modules/sdk-python/modhost_guest/__init__.py",
            "modules/sdk-js/modhost_guest.js",
        ] {
            let path = root.path().join(file);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, "").unwrap();
        }
        std::fs::write(
            root.path().join("Cargo.toml"),
            "# the app\n[workspace]\nmembers = [\"modules/sdk\"]\n",
        )
        .unwrap();
        root
    }

    #[test]
    fn a_rust_module_joins_the_workspace_and_fills_every_name() {
        let root = app();
        let made = new_module(root.path(), "gift-cards", "shop", Language::Rust).unwrap();
        let manifest = std::fs::read_to_string(root.path().join("Cargo.toml")).unwrap();
        assert!(manifest.starts_with("# the app\n"), "{manifest}");
        assert!(
            manifest.contains("members = [\"modules/gift-cards\", \"modules/sdk\"]"),
            "{manifest}"
        );
        let lib = std::fs::read_to_string(made.dir.join("src/lib.rs")).unwrap();
        assert!(lib.contains("exports::shop::gift_cards::api::Guest"));
        assert!(!lib.contains("{{"), "a placeholder was left");
        let contract =
            std::fs::read_to_string(root.path().join("wit/shop/gift-cards.wit")).unwrap();
        assert!(contract.contains("package shop:gift-cards@0.1.0;"));
        assert!(made.dir.join("migrations/0001_gift_cards.sql").is_file());
        assert!(made.stanza.contains("[modules.gift-cards]"));
        // Twice is refused, and nothing is overwritten.
        let again = new_module(root.path(), "gift-cards", "shop", Language::Rust).unwrap_err();
        assert!(again.to_string().contains("exists already"), "{again}");
    }

    #[test]
    fn a_python_module_has_its_pyproject_and_test() {
        let root = app();
        let made = new_module(root.path(), "scores", "app", Language::Python).unwrap();
        let pyproject = std::fs::read_to_string(made.dir.join("pyproject.toml")).unwrap();
        assert!(pyproject.contains("worlds = [\"app:scores/scores@0.1.0\""));
        assert!(made.dir.join("tests/test_notes.py").is_file());
        assert!(made.stanza.contains("memory = \"64MiB\""));
        let manifest = std::fs::read_to_string(root.path().join("Cargo.toml")).unwrap();
        assert!(!manifest.contains("scores"), "a Python module is no crate");
    }

    #[test]
    fn a_javascript_module_has_its_package_json_and_test() {
        let root = app();
        let made = new_module(root.path(), "reviews", "shop", Language::JavaScript).unwrap();
        let package = std::fs::read_to_string(made.dir.join("package.json")).unwrap();
        let parsed: serde_json::Value = serde_json::from_str(&package).unwrap();
        assert_eq!(parsed["modhost"]["worlds"][0], "shop:reviews/reviews@0.1.0");
        assert!(made.dir.join("test/notes.test.js").is_file());
        assert!(!std::fs::read_to_string(made.dir.join("app.js"))
            .unwrap()
            .contains("{{"));
    }

    #[test]
    fn names_that_cannot_be_wit_are_refused() {
        let root = app();
        for taken in ["api", "list", "type", "test", "std", "metrics", "readyz"] {
            let refused = new_module(root.path(), taken, "app", Language::Python).unwrap_err();
            assert!(
                refused.to_string().contains("cannot be used"),
                "{taken}: {refused}"
            );
        }
        for bad in ["Gift", "gift_cards", "1gift", "gift--cards", "-gift", ""] {
            assert!(
                new_module(root.path(), bad, "app", Language::Rust).is_err(),
                "{bad:?}"
            );
        }
        assert!(new_module(root.path(), "ok", "My_Space", Language::Rust).is_err());
        assert!(
            std::fs::read_dir(root.path().join("wit")).unwrap().count() == 1,
            "nothing was written"
        );
    }

    #[test]
    fn a_workspace_the_scaffold_cannot_join_is_refused_before_anything_is_written() {
        let root = app();
        std::fs::write(
            root.path().join("Cargo.toml"),
            "[workspace]\ndefault-members = [\"modules/sdk\"]\n",
        )
        .unwrap();
        let refused = new_module(root.path(), "gift-cards", "shop", Language::Rust).unwrap_err();
        assert!(
            refused.to_string().contains("nothing was written"),
            "{refused}"
        );
        assert!(!root.path().join("modules/gift-cards").exists());
        assert!(!root.path().join("wit/shop").exists());
        // default-members before members: the member joins `members`.
        std::fs::write(
            root.path().join("Cargo.toml"),
            "[workspace]\ndefault-members = [\"modules/sdk\"]\nmembers = [\"modules/sdk\"]\n",
        )
        .unwrap();
        new_module(root.path(), "gift-cards", "shop", Language::Rust).unwrap();
        let manifest = std::fs::read_to_string(root.path().join("Cargo.toml")).unwrap();
        assert_eq!(
            manifest,
            "[workspace]\ndefault-members = [\"modules/sdk\"]\nmembers = [\"modules/gift-cards\", \"modules/sdk\"]\n"
        );
    }
}
