//! The route table: which module owns a request path.

use crate::deployment::routes::covers;
use crate::deployment::Deployment;

/// Route prefixes and their modules, longest prefix first.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    routes: Vec<(String, String)>,
}

/// The module a path routes to, and the route that matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteMatch<'a> {
    /// The owning module.
    pub module: &'a str,
    /// The matched route prefix.
    pub route: &'a str,
}

impl RouteTable {
    /// The table for every route of every module in `deployment`.
    pub fn new(deployment: &Deployment) -> RouteTable {
        let mut routes: Vec<(String, String)> = deployment
            .modules
            .values()
            .flat_map(|module| {
                module
                    .routes
                    .iter()
                    .map(|route| (route.clone(), module.name.clone()))
            })
            .collect();
        // Longest first, so the first covering prefix is the most specific one.
        routes.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
        RouteTable { routes }
    }

    /// The module owning `path`, by longest covering prefix.
    pub fn lookup(&self, path: &str) -> Option<RouteMatch<'_>> {
        self.routes
            .iter()
            .find(|(route, _)| covers(route, path))
            .map(|(route, module)| RouteMatch { module, route })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> RouteTable {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("c.wasm"), b"").unwrap();
        let deployment = Deployment::parse(
            &dir.path().join("d.toml"),
            r#"
            [app]
            name = "t"
            [modules.orders]
            component = "c.wasm"
            routes = ["/orders"]
            [modules.admin]
            component = "c.wasm"
            routes = ["/orders/admin"]
            [modules.site]
            component = "c.wasm"
            routes = ["/"]
            "#,
        )
        .unwrap();
        RouteTable::new(&deployment)
    }

    #[test]
    fn the_longest_covering_prefix_wins() {
        let table = table();
        assert_eq!(table.lookup("/orders/admin/x").unwrap().module, "admin");
        assert_eq!(table.lookup("/orders/42").unwrap().module, "orders");
        assert_eq!(table.lookup("/orders").unwrap().route, "/orders");
        assert_eq!(table.lookup("/ordersx").unwrap().module, "site");
        assert_eq!(table.lookup("/").unwrap().module, "site");
    }
}
