//! Route names for the request metrics (`cphgw_requests_total{route,..}`)
//! and which routes are logged: each route is registered with its name as
//! the router is built, and the request context looks the matched route up
//! (one map lookup, rather than a layer on every route).

use std::collections::HashMap;
use std::sync::Arc;

/// The short name of a route (the `route` label), and whether its
/// requests get no log line (health and metrics).
#[derive(Debug, Clone, Copy)]
pub struct RouteName {
    pub name: &'static str,
    pub unlogged: bool,
}

/// Every route's name, by its path pattern.
#[derive(Debug, Clone, Default)]
pub struct RouteNames(Arc<HashMap<&'static str, RouteName, foldhash::fast::RandomState>>);

/// Collects the routes' names while a router is built.
#[derive(Debug, Default)]
pub struct Names(HashMap<&'static str, RouteName, foldhash::fast::RandomState>);

impl Names {
    /// Registers `path`'s name; returns the path, for `Router::route`.
    pub fn add(&mut self, path: &'static str, name: &'static str, unlogged: bool) -> &'static str {
        self.0.insert(path, RouteName { name, unlogged });
        path
    }

    pub fn done(self) -> RouteNames {
        RouteNames(Arc::new(self.0))
    }
}

impl RouteNames {
    /// The name of the route matched by `path` ("other" for none).
    pub fn of(&self, path: Option<&str>) -> RouteName {
        path.and_then(|p| self.0.get(p).copied())
            .unwrap_or(RouteName {
                name: "other",
                unlogged: false,
            })
    }
}
