//! The middleware of both servers, assembled in one place; each concern in a
//! file of its own.

mod context;
mod fallback;
mod metrics;

use axum::Router;

pub use context::{Context, REQUEST_ID_HEADER, RequestStarted, in_context, request_context};
pub use fallback::{method_not_allowed, not_found};
pub use metrics::{Names, RouteName, RouteNames};

/// Wraps every route of `router` in the request context (request id, span,
/// log line, metrics with the in-flight gauge, the route's name from
/// `names`, and panic catching): one layer, as each costs a boxed future
/// and a service clone per request.
pub fn wrap(router: Router, ctx: Context) -> Router {
    router.layer(axum::middleware::from_fn_with_state(ctx, request_context))
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use axum::routing::get;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use std::sync::Arc;

    use super::*;
    use crate::telemetry::Metrics;

    async fn boom() -> &'static str {
        panic!("boom")
    }

    async fn call(router: &Router, path: &str) -> (StatusCode, String) {
        let req = Request::get(path).body(Body::empty()).unwrap();
        let resp = router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn routes_are_counted_by_name_and_a_panic_is_answered_with_a_body() {
        let metrics = Arc::new(Metrics::new());
        let mut names = Names::default();
        let router = Router::new()
            .route(
                names.add("/ok/{id}", "ok_route", false),
                get(|| async { "fine" }),
            )
            .route(names.add("/boom", "boom_route", false), get(boom))
            .fallback(not_found);
        let ctx = Context::new(metrics.clone(), names);
        let router = wrap(router, ctx);

        assert_eq!(
            call(&router, "/ok/7").await,
            (StatusCode::OK, "fine".into())
        );
        let (status, body) = call(&router, "/boom").await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(body.contains("CPHGW.0500"), "{body}");
        let (status, _) = call(&router, "/nowhere").await;
        assert_eq!(status, StatusCode::NOT_FOUND);

        let text = metrics.render();
        for (route, status) in [("ok_route", "200"), ("boom_route", "500"), ("other", "404")] {
            assert!(
                text.lines().any(|l| l.starts_with("cphgw_requests_total{")
                    && l.contains(&format!("route=\"{route}\""))
                    && l.contains(&format!("status=\"{status}\""))),
                "no {route} {status} in\n{text}"
            );
        }
    }
}
