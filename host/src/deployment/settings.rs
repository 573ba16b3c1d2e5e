//! Settings that belong to a capability rather than to the host's core: keys of a
//! `[modules.NAME]` section (`keyvalue = …`) and top-level sections (`[keyvalue]`)
//! that the deployment layer keeps as written, for the capability that owns them to
//! read and validate.
//!
//! The file's own syntax stays strict: a key that neither the host nor any
//! capability owns is an error naming its line, as a misspelt key always was. Which
//! keys the capabilities own is told at parse time ([`Owned`]), so this layer does
//! not depend on the capabilities.

use std::collections::BTreeSet;

/// One capability setting as written, and where.
#[derive(Debug, Clone, PartialEq)]
pub struct Setting {
    /// Its value.
    pub value: toml::Value,
    /// The line it starts on.
    pub line: Option<usize>,
}

/// The keys the capabilities own in a deployment file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Owned {
    /// Keys of a `[modules.NAME]` section.
    pub module_keys: BTreeSet<&'static str>,
    /// Top-level sections.
    pub sections: BTreeSet<&'static str>,
}

/// The line of byte offset `at` in `text`.
pub(super) fn line_of(text: &str, at: usize) -> usize {
    text[..at.min(text.len())].matches('\n').count() + 1
}

/// serde's way of naming what was expected: "`a`, `b`, `c`".
pub(super) fn expected(keys: impl IntoIterator<Item = impl AsRef<str>>) -> String {
    keys.into_iter()
        .map(|key| format!("`{}`", key.as_ref()))
        .collect::<Vec<_>>()
        .join(", ")
}
