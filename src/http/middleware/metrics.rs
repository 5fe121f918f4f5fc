//! Request metrics: `cphgw_requests_total{route,status}`, the latency
//! histogram and the in-flight gauge (a drop guard, so a request whose
//! caller goes away still leaves the gauge right).
//!
//! A route's metric name travels with the route: [`named`] wraps the
//! route's handlers so that their answers carry a [`RouteName`].

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::MethodRouter;

use crate::domain::TenantId;
use crate::telemetry::Metrics;

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

tokio::task_local! {
    /// The request's tenant, once the handler has resolved it.
    static TENANT: std::sync::OnceLock<TenantId>;
}

/// Notes the request's tenant (from the mapping) for its metric labels.
pub fn note_tenant(tenant: &TenantId) {
    let _ = TENANT.try_with(|t| t.set(tenant.clone()));
}

/// Counts and times every request, labelled with its route and tenant.
pub async fn track(State(metrics): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let _in_flight = metrics.in_flight_guard();
    TENANT
        .scope(std::sync::OnceLock::new(), async move {
            let resp = next.run(req).await;
            let route = resp
                .extensions()
                .get::<RouteName>()
                .map_or("other", |r| r.0);
            let tenant = TENANT.with(|t| t.get().cloned());
            let tenant = tenant.as_ref().map_or("", TenantId::as_str);
            metrics.request(route, resp.status().as_u16(), tenant, started.elapsed());
            resp
        })
        .await
}
