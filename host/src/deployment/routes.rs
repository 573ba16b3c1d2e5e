//! Route prefixes: what a module may claim, and what "a prefix covers a path" means.
//!
//! A route is a path prefix matched at segment boundaries: `/users` covers `/users`
//! and `/users/42` but not `/usersx`. Between modules the longest covering prefix
//! wins, so `/orders` and `/orders/admin` may belong to different modules. Two claims
//! of the same prefix are an error, as is a prefix a module already covers with
//! another of its own, and anything under the host's own `/healthz`, `/readyz` and
//! `/metrics`.

use super::ModuleSpec;
use std::collections::HashMap;

/// Paths the host answers itself, before any module route.
pub const RESERVED: &[&str] = &["/healthz", "/readyz", "/metrics"];

/// Checks a written route and returns it in normal form (no trailing slash).
pub fn normalise(route: &str) -> Result<String, String> {
    if !route.starts_with('/') {
        return Err(format!("route {route:?} must start with '/'"));
    }
    if let Some(bad) = route
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || matches!(c, '?' | '#' | '*' | '%'))
    {
        return Err(format!(
            "route {route:?} contains {bad:?}; a route is a plain path prefix (no query, fragment, wildcard or escapes)"
        ));
    }
    let trimmed = if route.len() > 1 {
        route.trim_end_matches('/')
    } else {
        route
    };
    let trimmed = if trimmed.is_empty() { "/" } else { trimmed };
    if trimmed.len() > 1
        && trimmed[1..]
            .split('/')
            .any(|segment| segment.is_empty() || segment == "." || segment == "..")
    {
        return Err(format!("route {route:?} has an empty, '.' or '..' segment"));
    }
    if RESERVED.iter().any(|reserved| covers(reserved, trimmed)) {
        return Err(format!(
            "route {route:?} is reserved for the host's health endpoints ({})",
            RESERVED.join(", ")
        ));
    }
    Ok(trimmed.to_string())
}

/// Whether route `prefix` (normal form) covers request path `path`.
pub fn covers(prefix: &str, path: &str) -> bool {
    if prefix == "/" {
        return path.starts_with('/');
    }
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// Every conflict between the modules' routes, as `(key, problem)` pairs.
pub fn conflicts<'a>(modules: impl Iterator<Item = &'a ModuleSpec>) -> Vec<(String, String)> {
    let mut owner: HashMap<&str, &str> = HashMap::new();
    let mut problems = Vec::new();
    for module in modules {
        for (i, route) in module.routes.iter().enumerate() {
            let key = format!("modules.{}.routes[{i}]", module.name);
            if let Some(other) = owner.get(route.as_str()) {
                let whose = if *other == module.name {
                    "this module already claims it".to_string()
                } else {
                    format!("module `{other}` already claims it")
                };
                problems.push((key, format!("duplicate route {route:?}: {whose}")));
                continue;
            }
            if let Some(wider) = module
                .routes
                .iter()
                .find(|other| *other != route && covers(other, route))
            {
                problems.push((
                    key,
                    format!("route {route:?} overlaps {wider:?} of the same module, which already covers it"),
                ));
                continue;
            }
            owner.insert(route, &module.name);
        }
    }
    problems
}
