//! Operability: the metrics after real stops, the OpenAPI document (served
//! and checked in), health and readiness.

use reqwest::StatusCode;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_real_stops() {
    let app = TestApp::spawn().await;
    let token = caller_token(TENANT_A);
    let mut ids = app.phones(PROJECT_A, 0, 250);
    ids.push("abc".into()); // CPS.0004 from CPH
    let (status, body) = app.stop(&token, &ids).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _) = app.stop("not-a-jwt", &ids[..1]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let m = app.metrics().await;
    let get = |series: &str| sample(&m, series).unwrap_or_else(|| panic!("no {series} in\n{m}"));
    assert_eq!(
        get(r#"cphgw_requests_total{route="stop",status="200",tenant="acme"}"#),
        1.0
    );
    assert_eq!(
        get(r#"cphgw_requests_total{route="stop",status="401",tenant=""}"#),
        1.0
    );
    assert_eq!(get("cphgw_request_duration_seconds_count"), 2.0);
    assert!(get("cphgw_request_duration_seconds_sum") > 0.0);
    // 251 ids in batches of 100: 3 upstream calls.
    assert_eq!(get(r#"cphgw_upstream_requests_total{status="200"}"#), 3.0);
    assert_eq!(get("cphgw_upstream_duration_seconds_count"), 3.0);
    assert_eq!(
        get(r#"cphgw_phones_total{outcome="stopped",tenant="acme"}"#),
        250.0
    );
    assert_eq!(
        get(r#"cphgw_phones_total{outcome="rejected",tenant="acme"}"#),
        1.0
    );
    assert_eq!(
        get(r#"cphgw_iam_token_fetches_total{result="success"}"#),
        1.0
    );
    assert_eq!(
        get(r#"cphgw_jwt_rejections_total{reason="malformed"}"#),
        1.0
    );
    // Gauges: nothing in flight now; the token is young.
    assert_eq!(
        get("cphgw_in_flight_requests"),
        1.0,
        "only the scrape itself"
    );
    assert_eq!(
        get(&format!(
            r#"cphgw_upstream_in_flight{{project="{PROJECT_A}"}}"#
        )),
        0.0
    );
    let age = get(&format!(
        r#"cphgw_iam_token_age_seconds{{project="{PROJECT_A}"}}"#
    ));
    assert!((0.0..60.0).contains(&age), "token age {age}");
}

#[tokio::test]
async fn openapi_is_served_and_checked_in() {
    let app = TestApp::spawn().await;
    let served = app
        .client
        .get(format!("{}/openapi.json", app.admin_url))
        .send()
        .await
        .expect("openapi");
    assert_eq!(served.status(), StatusCode::OK);
    let served: serde_json::Value = served.json().await.expect("JSON");
    assert!(
        served["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1"))
    );
    for path in [
        "/v1/cloud-phone/phones/batch-stop",
        "/v1/{project_id}/cloud-phone/phones/batch-stop",
        "/v1/cloud-phone/jobs/{job_id}",
        "/admin/v1/tenants/{tenant}",
        "/admin/v1/reload",
    ] {
        assert!(served["paths"][path].is_object(), "{path} missing");
    }

    let generated = cph_gateway::http::openapi::document();
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/openapi.json");
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(&file, format!("{generated}\n")).expect("write deploy/openapi.json");
    }
    let checked_in = std::fs::read_to_string(&file).unwrap_or_default();
    assert_eq!(
        checked_in.trim_end(),
        generated,
        "deploy/openapi.json is stale: run `UPDATE_OPENAPI=1 cargo nextest run --test it ops::`"
    );
}

#[tokio::test]
async fn health_and_readiness() {
    let app = TestApp::spawn().await;
    let health = app
        .client
        .get(format!("{}/healthz", app.admin_url))
        .send()
        .await
        .expect("healthz");
    assert_eq!(health.status(), StatusCode::OK);
    let ready: serde_json::Value = app
        .client
        .get(format!("{}/readyz", app.admin_url))
        .send()
        .await
        .expect("readyz")
        .json()
        .await
        .expect("JSON");
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["tenants"], 2);
    // The caller port does not serve admin routes.
    let resp = app
        .client
        .get(format!("{}/metrics", app.url))
        .send()
        .await
        .expect("answer");
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
}

/// Callers that go away in the middle of stops leave no gauge behind: the
/// in-flight gauges are drop guards, so they are back to 0 once the stops
/// have ended, whatever the callers did.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnected_callers_leave_the_in_flight_gauges_at_zero() {
    let app = TestApp::spawn_with(TestOptions::default().sim(|s| {
        s.faults.latency_ms = 300;
    }))
    .await;
    let token = caller_token(TENANT_A);
    let ids = app.phones(PROJECT_A, 0, 250);
    // Ten callers that give up after 100 ms, with their stops in flight.
    let impatient = reqwest::Client::builder()
        .timeout(std::time::Duration::from_millis(100))
        .no_proxy()
        .build()
        .expect("client");
    let calls = (0..10).map(|i| {
        let ids = ids[i * 25..(i + 1) * 25].to_vec();
        let (impatient, url, token) = (impatient.clone(), app.url.clone(), token.clone());
        async move {
            impatient
                .post(format!("{url}{STOP}"))
                .bearer_auth(token)
                .json(&serde_json::json!({ "phone_ids": ids }))
                .send()
                .await
        }
    });
    let results = futures_util::future::join_all(calls).await;
    assert!(
        results
            .iter()
            .all(|r| r.as_ref().is_err_and(|e| e.is_timeout())),
        "every caller gave up before its answer"
    );
    // The scrape counts itself: 1 is "nothing else in flight".
    let settled = eventually(std::time::Duration::from_secs(5), async || {
        let m = app.metrics().await;
        sample(&m, "cphgw_in_flight_requests") == Some(1.0)
            && sample(
                &m,
                &format!("cphgw_upstream_in_flight{{project=\"{PROJECT_A}\"}}"),
            ) == Some(0.0)
    })
    .await;
    assert!(settled, "gauges not back to 0:\n{}", app.metrics().await);
}

/// The metric names of the README's metrics table, with their types.
fn readme_metrics() -> Vec<(String, String)> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README");
    readme
        .lines()
        .filter_map(|l| l.strip_prefix("| `cphgw_"))
        .map(|rest| {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            let kind = rest
                .split('|')
                .nth(1)
                .map(str::trim)
                .unwrap_or_default()
                .to_owned();
            (format!("cphgw_{name}"), kind)
        })
        .collect()
}

/// The metric names (as their samples are named) and types the gateway
/// exposes, from the `# TYPE` lines.
fn exposed_metrics(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(name, kind)| {
            let name = if kind == "counter" {
                format!("{name}_total")
            } else {
                name.to_owned()
            };
            (name, kind.to_owned())
        })
        .collect()
}

/// The README's metrics table is the gateway's list of metrics (the
/// dashboard and alerts are checked against it offline by validate.sh), and
/// every metric the dashboard and the alerts use is one the gateway exposes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_metrics_table_dashboard_and_alerts_match_the_exposition() {
    let app = TestApp::spawn().await;
    let (status, _) = app
        .stop(&caller_token(TENANT_A), &app.phones(PROJECT_A, 0, 1))
        .await;
    assert_eq!(status, StatusCode::OK);
    let text = app.metrics().await;
    let mut exposed = exposed_metrics(&text);
    let mut documented = readme_metrics();
    exposed.sort();
    documented.sort();
    assert_eq!(documented, exposed, "README metrics table vs /metrics");

    let mut series: Vec<String> = Vec::new();
    for (name, kind) in &exposed {
        series.push(name.clone());
        if kind == "histogram" {
            for suffix in ["_bucket", "_sum", "_count"] {
                series.push(format!("{name}{suffix}"));
            }
        }
    }
    for file in [
        "deploy/monitoring/dashboard.json",
        "deploy/monitoring/prometheusrule.yaml",
    ] {
        let body = std::fs::read_to_string(format!("{}/{file}", env!("CARGO_MANIFEST_DIR")))
            .expect("monitoring file");
        let used: Vec<&str> = body
            .match_indices("cphgw_")
            .map(|(i, _)| {
                let end = body[i..]
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .map_or(body.len(), |n| i + n);
                &body[i..end]
            })
            .collect();
        assert!(!used.is_empty(), "{file} uses no metric");
        for name in used {
            assert!(
                series.iter().any(|s| s == name),
                "{file}: {name} is not exposed"
            );
        }
    }
}
