//! Route names for the request metrics (`cphgw_requests_total{route,..}`):
//! a route's metric name travels with the route, as [`named`] wraps the
//! route's handlers so that their answers carry a [`RouteName`].

use axum::response::Response;
use axum::routing::MethodRouter;

/// The short name of the route that answered (the `route` label).
#[derive(Debug, Clone, Copy)]
pub struct RouteName(pub &'static str);

/// Marks an answer that gets no request log line (health and metrics).
#[derive(Debug, Clone, Copy)]
pub struct Unlogged;

/// Gives a route its metric name; `unlogged` routes get no log line.
pub fn named<S>(name: &'static str, unlogged: bool, route: MethodRouter<S>) -> MethodRouter<S>
where
    S: Clone + Send + Sync + 'static,
{
    route.layer(axum::middleware::map_response(
        move |mut resp: Response| async move {
            resp.extensions_mut().insert(RouteName(name));
            if unlogged {
                resp.extensions_mut().insert(Unlogged);
            }
            resp
        },
    ))
}
