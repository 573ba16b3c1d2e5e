//! Problems in a deployment file: each names the file, the line when known, the key
//! and what is wrong; every problem is reported, not just the first.

use std::fmt;
use std::path::PathBuf;

use super::overlay::Origins;

/// One problem in a deployment file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The deployment file.
    pub file: PathBuf,
    /// The line of the offending text, when the parser knows it.
    pub line: Option<usize>,
    /// The dotted key path, e.g. `modules.users.limits.memory`.
    pub key: String,
    /// What is wrong, in words.
    pub problem: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if self.key.is_empty() {
            write!(f, ": {}", self.problem)
        } else {
            write!(f, ": {}: {}", self.key, self.problem)
        }
    }
}

/// Every problem found in a deployment file (at least one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Collects problems for one deployment, each named with the file that wrote its key.
pub(crate) struct Problems {
    pub(crate) origins: Origins,
    pub(crate) errors: Vec<ConfigError>,
}

impl Problems {
    /// No problems yet, in the deployment whose sections come from `origins`.
    pub(crate) fn of(origins: Origins) -> Problems {
        Problems {
            origins,
            errors: Vec::new(),
        }
    }

    /// A problem with `key`.
    pub(crate) fn add(&mut self, key: &str, problem: &str) {
        self.at(key, None, problem);
    }

    /// Every problem found.
    pub(crate) fn into_errors(self) -> Vec<ConfigError> {
        self.errors
    }

    /// A problem with `key`, on `line`.
    pub(crate) fn at(&mut self, key: &str, line: Option<usize>, problem: &str) {
        self.errors.push(ConfigError {
            file: self.origins.file_of(key).to_path_buf(),
            line,
            key: key.to_string(),
            problem: problem.to_string(),
        });
    }
}
