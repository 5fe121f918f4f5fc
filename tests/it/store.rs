//! The shared store on a real PostgreSQL: several replicas on one database,
//! admins racing with If-Match, the database going away under traffic, many
//! concurrent writes, import and export, and the schema's own constraints.
//! Each test has a database of its own (see `helpers::db`).

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::db::TestDb;
use crate::helpers::process::GatewayProcess;
use crate::helpers::tcp_proxy::TcpProxy;
use crate::helpers::*;

const STORE_VAR: &str = "CPHGW_STORE_URL";

/// Options for a replica on the store at `url`.
fn on_store(url: &str) -> TestOptions {
    TestOptions::default()
        .set("store.url_env", &format!("\"{STORE_VAR}\""))
        .env(STORE_VAR, url)
        // A fleet's tenants live in the store: the file is only a default.
        .set("tenants.watch_interval_ms", "1000")
}

/// A tenant body in cn-east-3 with the `default` credential.
fn body(projects: &[&str]) -> Value {
    json!({
        "default_project": projects[0],
        "projects": projects.iter().map(|p| json!({"project_id": p, "region": "cn-east-3", "credential": "default"})).collect::<Vec<_>>(),
    })
}

/// A 32-hex project id numbered `n`.
fn project(n: u32) -> String {
    format!("{n:08x}4e5f60718293a4b5c6d7e8f9")
}

async fn admin_call(
    client: &reqwest::Client,
    base: &str,
    method: Method,
    path: &str,
    body: Option<&Value>,
    headers: &[(&str, &str)],
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let mut req = client
        .request(method, format!("{base}{path}"))
        .bearer_auth(admin_token());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if let Some(b) = body {
        req = req.json(b);
    }
    let resp = req.send().await.expect("admin API answers");
    let status = resp.status();
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap_or_default();
    (
        status,
        headers,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Waits until the replica at `admin_url` is ready.
async fn ready(client: &reqwest::Client, admin_url: &str) -> bool {
    eventually(Duration::from_secs(10), async || {
        client
            .get(format!("{admin_url}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == StatusCode::OK)
    })
    .await
}

/// The revision a replica reports in its metrics.
async fn revision(client: &reqwest::Client, admin_url: &str) -> Option<f64> {
    let text = client
        .get(format!("{admin_url}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    sample(&text, "cphgw_tenants_revision")
}

/// Like `eventually`, polling every 5 ms, so that the time it takes is the
/// propagation time to within a few milliseconds.
async fn within(timeout: Duration, mut f: impl AsyncFnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    f().await
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_serve_a_change_made_through_any_of_them_within_a_second() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let sim = cph_sim::Sim::start(Default::default()).await.expect("sim");
    let env = [
        ("CPHGW__STORE__URL_ENV", "\"CPHGW_STORE_URL\""),
        ("CPHGW_STORE_URL", db.url.as_str()),
    ];
    let mut replicas = Vec::new();
    for _ in 0..3 {
        replicas.push(GatewayProcess::start_against(&sim, &env).await);
    }
    let client = client();
    let mut puts = Vec::new();
    let mut deletes = Vec::new();
    // One admin change through `writer`; how long until every other
    // replica answers `GET` of the tenant with `seen`.
    let change = async |writer: &GatewayProcess,
                        method: Method,
                        tenant: &str,
                        body: Option<&Value>,
                        done: StatusCode,
                        seen: StatusCode| {
        let path = format!("/admin/v1/tenants/{tenant}");
        let started = Instant::now();
        let (status, _, reply) =
            admin_call(&client, &writer.admin_url, method, &path, body, &[]).await;
        assert_eq!(status, done, "{reply}");
        for other in replicas.iter().filter(|r| r.admin_url != writer.admin_url) {
            let served = within(Duration::from_secs(1), async || {
                admin_call(&client, &other.admin_url, Method::GET, &path, None, &[])
                    .await
                    .0
                    == seen
            })
            .await;
            assert!(
                served,
                "replica {} did not answer {seen} for {tenant} within 1 s",
                other.admin_url
            );
        }
        started.elapsed()
    };
    for round in 0..8u32 {
        let tenant = format!("tenant-{round}");
        let writer = &replicas[round as usize % 3];
        let spec = body(&[&project(round)]);
        puts.push(
            change(
                writer,
                Method::PUT,
                &tenant,
                Some(&spec),
                StatusCode::CREATED,
                StatusCode::OK,
            )
            .await,
        );
        deletes.push(
            change(
                writer,
                Method::DELETE,
                &tenant,
                None,
                StatusCode::NO_CONTENT,
                StatusCode::NOT_FOUND,
            )
            .await,
        );
    }
    // Every replica reports the same revision for the same mapping.
    let revisions: Vec<Option<f64>> =
        futures_util::future::join_all(replicas.iter().map(|r| revision(&client, &r.admin_url)))
            .await;
    assert!(revisions[0].is_some(), "{revisions:?}");
    assert!(
        revisions.iter().all(|r| *r == revisions[0]),
        "{revisions:?}"
    );
    puts.sort();
    deletes.sort();
    println!(
        "propagation to the two other replicas, 8 rounds: PUT p50 {:?} max {:?}; DELETE p50 {:?} max {:?}",
        percentile(&puts, 0.5),
        puts[puts.len() - 1],
        percentile(&deletes, 0.5),
        deletes[deletes.len() - 1],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_admins_racing_with_if_match_on_two_replicas_one_wins() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let a = TestApp::spawn_with(on_store(&db.url)).await;
    let b = TestApp::spawn_with(on_store(&db.url)).await;
    assert!(ready(&a.client, &a.admin_url).await && ready(&b.client, &b.admin_url).await);
    let path = "/admin/v1/tenants/initech";
    let (status, headers, _) = admin_call(
        &a.client,
        &a.admin_url,
        Method::PUT,
        path,
        Some(&body(&[&project(1)])),
        &[("If-None-Match", "*")],
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let etag = headers
        .get("etag")
        .expect("ETag on create")
        .to_str()
        .unwrap()
        .to_owned();
    // A second create-only PUT fails: the tenant exists.
    let (status, _, reply) = admin_call(
        &b.client,
        &b.admin_url,
        Method::PUT,
        path,
        Some(&body(&[&project(9)])),
        &[("If-None-Match", "*")],
    )
    .await;
    assert_gateway_error(
        status,
        &reply,
        StatusCode::PRECONDITION_FAILED,
        "CPHGW.0105",
    );
    let tag = etag.as_str();
    let (body2, body3) = (body(&[&project(2)]), body(&[&project(3)]));
    let if_match = [("If-Match", tag)];
    let (one, two) = tokio::join!(
        admin_call(
            &a.client,
            &a.admin_url,
            Method::PUT,
            path,
            Some(&body2),
            &if_match
        ),
        admin_call(
            &b.client,
            &b.admin_url,
            Method::PUT,
            path,
            Some(&body3),
            &if_match
        ),
    );
    let statuses = [one.0, two.0];
    assert!(
        statuses.contains(&StatusCode::OK) && statuses.contains(&StatusCode::PRECONDITION_FAILED),
        "exactly one of the racing writes wins: {statuses:?}"
    );
    let (loser, winner_project) = if one.0 == StatusCode::OK {
        (&two, project(2))
    } else {
        (&one, project(3))
    };
    assert_gateway_error(
        loser.0,
        &loser.2,
        StatusCode::PRECONDITION_FAILED,
        "CPHGW.0105",
    );
    let (status, _, audit) = admin_call(
        &a.client,
        &a.admin_url,
        Method::GET,
        "/admin/v1/audit?tenant=initech",
        None,
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{audit}");
    let events = audit["events"].as_array().expect("events");
    assert_eq!(
        events.len(),
        2,
        "the create and the winning change only: {audit}"
    );
    assert_eq!(events[0]["action"], "put");
    assert_eq!(
        events[0]["after"]["default_project"],
        winner_project.as_str(),
        "{audit}"
    );
    assert_eq!(
        events[0]["before"]["default_project"],
        project(1).as_str(),
        "{audit}"
    );
    assert!(
        events[0]["who"].as_str().is_some_and(|w| !w.is_empty()),
        "{audit}"
    );
    assert_eq!(events[0]["who"], events[1]["who"], "{audit}");
    // A DELETE with a stale ETag is refused too; with the current one it works.
    let (status, _, reply) = admin_call(
        &b.client,
        &b.admin_url,
        Method::DELETE,
        path,
        None,
        &[("If-Match", tag)],
    )
    .await;
    assert_gateway_error(
        status,
        &reply,
        StatusCode::PRECONDITION_FAILED,
        "CPHGW.0105",
    );
    let current = eventually(Duration::from_secs(2), async || {
        admin_call(&b.client, &b.admin_url, Method::GET, path, None, &[])
            .await
            .2["default_project"]
            == winner_project.as_str()
    })
    .await;
    assert!(current);
    let (_, headers, _) = admin_call(&b.client, &b.admin_url, Method::GET, path, None, &[]).await;
    let fresh = headers
        .get("etag")
        .expect("ETag on GET")
        .to_str()
        .unwrap()
        .to_owned();
    let (status, _, _) = admin_call(
        &b.client,
        &b.admin_url,
        Method::DELETE,
        path,
        None,
        &[("If-Match", fresh.as_str())],
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_going_away_fails_no_stop_and_every_replica_catches_up() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let target: std::net::SocketAddr = "127.0.0.1:5432".parse().unwrap();
    let proxy = TcpProxy::start(target).await;
    let behind = db.url_via(proxy.addr);
    let a = TestApp::spawn_with(on_store(&behind)).await;
    let b = TestApp::spawn_with(on_store(&behind)).await;
    // A third replica reaches the database directly: it can change the
    // mapping while the other two cannot reach it.
    let c = TestApp::spawn_with(on_store(&db.url)).await;
    for app in [&a, &b, &c] {
        assert!(ready(&app.client, &app.admin_url).await);
    }
    let tenant_path = "/admin/v1/tenants/initech";
    let (status, _, _) = admin_call(
        &c.client,
        &c.admin_url,
        Method::PUT,
        tenant_path,
        Some(&body(&[&project(1)])),
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    // The callers' tenant, in the store (the tenants file is not the source).
    let (status, _, _) = admin_call(
        &c.client,
        &c.admin_url,
        Method::PUT,
        "/admin/v1/tenants/acme",
        Some(&body(&[PROJECT_A])),
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    for app in [&a, &b] {
        let mapped = eventually(Duration::from_secs(2), async || {
            app.stop(&caller_token(TENANT_A), &app.phones(PROJECT_A, 0, 1))
                .await
                .0
                == StatusCode::OK
        })
        .await;
        assert!(mapped);
    }

    // Steady stop traffic on both replicas behind the proxy, throughout.
    let stop_traffic = |app: &'static TestApp| async move {
        let token = caller_token(TENANT_A);
        let (mut ok, mut failed, mut n) = (0u32, 0u32, 0u32);
        let until = Instant::now() + Duration::from_secs(6);
        while Instant::now() < until {
            app.sim.start_phones();
            let ids = app.phones(PROJECT_A, n % 1000, 5);
            n += 5;
            let (status, body) = app.stop(&token, &ids).await;
            let all_jobs = body["jobs"]
                .as_array()
                .is_some_and(|j| j.len() == 5 && j.iter().all(|e| e["job_id"].is_string()));
            if status == StatusCode::OK && all_jobs {
                ok += 1
            } else {
                failed += 1
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (ok, failed)
    };
    let a: &'static TestApp = Box::leak(Box::new(a));
    let b: &'static TestApp = Box::leak(Box::new(b));
    let traffic = tokio::spawn(async move { tokio::join!(stop_traffic(a), stop_traffic(b)) });

    tokio::time::sleep(Duration::from_secs(1)).await;
    proxy.cut();
    // Admin writes through a replica without its store: 503 CPHGW.0304.
    let (status, headers, reply) = admin_call(
        &a.client,
        &a.admin_url,
        Method::PUT,
        tenant_path,
        Some(&body(&[&project(2)])),
        &[],
    )
    .await;
    assert_gateway_error(
        status,
        &reply,
        StatusCode::SERVICE_UNAVAILABLE,
        "CPHGW.0304",
    );
    assert!(headers.contains_key("retry-after"));
    let down = eventually(Duration::from_secs(5), async || {
        let m = a.metrics().await;
        sample(&m, "cphgw_store_up") == Some(0.0)
    })
    .await;
    assert!(down, "cphgw_store_up did not go to 0");
    // Meanwhile the mapping changes through the replica that reaches it.
    let (status, _, _) = admin_call(
        &c.client,
        &c.admin_url,
        Method::PUT,
        tenant_path,
        Some(&body(&[&project(3)])),
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    tokio::time::sleep(Duration::from_secs(1)).await;
    proxy.restore();
    let restored = Instant::now();
    for app in [a, b] {
        let caught_up = eventually(Duration::from_secs(5), async || {
            admin_call(
                &app.client,
                &app.admin_url,
                Method::GET,
                tenant_path,
                None,
                &[],
            )
            .await
            .2["default_project"]
                == project(3).as_str()
        })
        .await;
        assert!(
            caught_up,
            "{} did not catch up within 5 s of the database returning",
            app.admin_url
        );
    }
    println!(
        "caught up {:?} after the database returned",
        restored.elapsed()
    );
    let ((ok_a, failed_a), (ok_b, failed_b)) = traffic.await.expect("traffic");
    println!(
        "stops during the outage: {} ok, {} failed",
        ok_a + ok_b,
        failed_a + failed_b
    );
    assert_eq!(
        failed_a + failed_b,
        0,
        "stops failed while the store was away"
    );
    assert!(ok_a > 10 && ok_b > 10);
    let up = eventually(Duration::from_secs(5), async || {
        sample(&a.metrics().await, "cphgw_store_up") == Some(1.0)
    })
    .await;
    assert!(up);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_concurrent_writes_end_as_the_audit_says_on_every_replica() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let mut replicas = Vec::new();
    for _ in 0..3 {
        let app = TestApp::spawn_with(on_store(&db.url)).await;
        assert!(ready(&app.client, &app.admin_url).await);
        replicas.push(app);
    }
    let writes = (0..100u32).map(|i| {
        let app = &replicas[i as usize % 3];
        let tenant = format!("t{}", i % 10);
        async move {
            let (status, _, reply) = admin_call(
                &app.client,
                &app.admin_url,
                Method::PUT,
                &format!("/admin/v1/tenants/{tenant}"),
                Some(&body(&[&project(i)])),
                &[],
            )
            .await;
            assert!(status.is_success(), "{status}: {reply}");
        }
    });
    futures_util::future::join_all(writes).await;
    let client = &replicas[0].client;
    for t in 0..10 {
        let tenant = format!("t{t}");
        let (_, _, audit) = admin_call(
            client,
            &replicas[0].admin_url,
            Method::GET,
            &format!("/admin/v1/audit?tenant={tenant}&limit=1"),
            None,
            &[],
        )
        .await;
        let last = audit["events"][0]["after"].clone();
        assert!(last.is_object(), "{audit}");
        for app in &replicas {
            let served = eventually(Duration::from_secs(2), async || {
                admin_call(
                    &app.client,
                    &app.admin_url,
                    Method::GET,
                    &format!("/admin/v1/tenants/{tenant}"),
                    None,
                    &[],
                )
                .await
                .2 == last
            })
            .await;
            assert!(
                served,
                "{} does not serve the last write of {tenant}: {last}",
                app.admin_url
            );
        }
    }
    let (_, _, all) = admin_call(
        client,
        &replicas[0].admin_url,
        Method::GET,
        "/admin/v1/audit?limit=1000",
        None,
        &[],
    )
    .await;
    assert_eq!(
        all["events"].as_array().map(Vec::len),
        Some(100),
        "one event per write"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_boots_without_its_store_waits_then_serves() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let proxy = TcpProxy::start("127.0.0.1:5432".parse().unwrap()).await;
    proxy.cut();
    let app = TestApp::spawn_with(on_store(&db.url_via(proxy.addr))).await;
    let readyz = app
        .client
        .get(format!("{}/readyz", app.admin_url))
        .send()
        .await
        .expect("readyz");
    assert_eq!(readyz.status(), StatusCode::SERVICE_UNAVAILABLE);
    let (status, body) = app
        .stop(&caller_token(TENANT_A), &app.phones(PROJECT_A, 0, 1))
        .await;
    assert_gateway_error(status, &body, StatusCode::SERVICE_UNAVAILABLE, "CPHGW.0304");
    proxy.restore();
    assert!(
        ready(&app.client, &app.admin_url).await,
        "not ready after the store returned"
    );
    // An empty new store: ready, no tenant yet; import the file, then serve.
    let (status, body) = app
        .stop(&caller_token(TENANT_A), &app.phones(PROJECT_A, 0, 1))
        .await;
    assert_gateway_error(status, &body, StatusCode::FORBIDDEN, "CPHGW.0102");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_then_export_round_trips_and_a_second_import_changes_nothing() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let dir = tempfile::tempdir().expect("dir");
    let config = write_config(dir.path(), "http://127.0.0.1:9");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_cph-gateway"))
            .args(args)
            .arg("--config")
            .arg(&config)
            .env_clear()
            .envs(secret_env())
            .env("CPHGW__STORE__URL_ENV", "\"CPHGW_STORE_URL\"")
            .env("CPHGW_STORE_URL", &db.url)
            .output()
            .expect("run the binary");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, out, err) = run(&["migrate"]);
    assert!(ok, "{out}{err}");
    let (ok, out, err) = run(&["tenants", "import"]);
    assert!(ok && out.contains("imported 2 tenants"), "{out}{err}");
    let (ok, exported, err) = run(&["tenants", "export"]);
    assert!(ok, "{err}");
    let exported_file: cph_gateway::tenants::TenantsFile =
        toml::from_str(&exported).expect("export is a tenants file");
    let original: cph_gateway::tenants::TenantsFile =
        toml::from_str(&default_tenants()).expect("default tenants");
    assert_eq!(exported_file, original);
    let export_path = dir.path().join("exported.toml");
    std::fs::write(&export_path, &exported).unwrap();
    let (ok, out, err) = run(&["tenants", "import", "--file", export_path.to_str().unwrap()]);
    assert!(ok && out.contains("nothing changed"), "{out}{err}");
    let mut conn = db.connect().await;
    let events: i64 =
        sqlx::query_scalar("SELECT count(*) FROM cphgw_audit WHERE action = 'import'")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(
        events, 2,
        "one import event per tenant, none for the no-op import"
    );
    let revision: i64 = sqlx::query_scalar("SELECT tenants_revision FROM cphgw_meta")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(revision, 1, "the no-op import left the revision as it was");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_schema_refuses_rows_the_gateway_would_refuse_and_migrations_race_safely() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    // Five replicas starting together apply the schema once.
    let starts = (0..5).map(|_| TestApp::spawn_with(on_store(&db.url)));
    let apps = futures_util::future::join_all(starts).await;
    for app in &apps {
        assert!(ready(&app.client, &app.admin_url).await);
    }
    let mut conn = db.connect().await;
    let (applied, distinct): (i64, i64) =
        sqlx::query_as("SELECT count(*), count(DISTINCT version) FROM _sqlx_migrations")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(applied, distinct, "a migration was applied twice");
    let files = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))
        .unwrap()
        .filter(|f| {
            f.as_ref()
                .is_ok_and(|f| f.path().extension().is_some_and(|e| e == "sql"))
        })
        .count();
    assert_eq!(applied as usize, files, "every migration applied");
    let refused = [
        // A tenant whose default project is not among its projects.
        "BEGIN; INSERT INTO cphgw_tenants VALUES ('x', '0a1b2c3d4e5f60718293a4b5c6d7e8f9', 1); COMMIT;",
        // A bad tenant name.
        "INSERT INTO cphgw_tenants VALUES ('bad name', '0a1b2c3d4e5f60718293a4b5c6d7e8f9', 1)",
        // A malformed project id and region.
        "BEGIN; INSERT INTO cphgw_tenants VALUES ('y', 'zz', 1); INSERT INTO cphgw_tenant_projects VALUES ('y', 0, 'zz', 'cn-east-3', 'default'); COMMIT;",
        "BEGIN; INSERT INTO cphgw_tenants VALUES ('z', '0a1b2c3d4e5f60718293a4b5c6d7e8f9', 1); INSERT INTO cphgw_tenant_projects VALUES ('z', 0, '0a1b2c3d4e5f60718293a4b5c6d7e8f9', 'CN EAST', 'default'); COMMIT;",
        // An unknown audit action.
        "INSERT INTO cphgw_audit (who, action) VALUES ('me', 'drop')",
        // A stop record and a key whose tenant or project cannot be one.
        "INSERT INTO cphgw_stop_records (tenant, request_id, caller, project_id, created_at, expires_at) VALUES (repeat('t', 65), 'r', 'c', '0a1b2c3d4e5f60718293a4b5c6d7e8f9', now(), now())",
        "INSERT INTO cphgw_stop_records (tenant, request_id, caller, project_id, created_at, expires_at) VALUES ('t', 'r', 'c', 'zz', now(), now())",
        "INSERT INTO cphgw_idempotency_keys (tenant, key, fingerprint, request_id, lease_until, expires_at) VALUES ('', 'k', repeat('f', 64), 'r', now(), now())",
    ];
    for sql in refused {
        let result = sqlx::raw_sql(sql).execute(&mut conn).await;
        assert!(result.is_err(), "the schema accepted: {sql}");
        let _ = sqlx::raw_sql("ROLLBACK").execute(&mut conn).await;
    }
    // And through the admin API the same bodies are 400 with nothing written.
    let (status, _, reply) = admin_call(
        &apps[0].client,
        &apps[0].admin_url,
        Method::PUT,
        "/admin/v1/tenants/bad",
        Some(&json!({"default_project": project(1), "projects": [{"project_id": project(2), "region": "cn-east-3", "credential": "default"}]})),
        &[],
    )
    .await;
    assert_gateway_error(status, &reply, StatusCode::BAD_REQUEST, "CPHGW.0001");
    let tenants: i64 = sqlx::query_scalar("SELECT count(*) FROM cphgw_tenants")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(tenants, 0);
}

/// Puts tenant acme (project A) into the store through `admin_url`.
async fn map_acme(client: &reqwest::Client, admin_url: &str) {
    let (status, _, reply) = admin_call(
        client,
        admin_url,
        Method::PUT,
        "/admin/v1/tenants/acme",
        Some(&body(&[PROJECT_A])),
        &[],
    )
    .await;
    assert!(status.is_success(), "{status}: {reply}");
}

/// Two replicas on `db`, tenant acme put through the first and seen by the
/// second.
async fn two_replicas_with_acme(db: &TestDb) -> (TestApp, TestApp) {
    let a = TestApp::spawn_with(on_store(&db.url)).await;
    let b = TestApp::spawn_with(on_store(&db.url)).await;
    assert!(ready(&a.client, &a.admin_url).await && ready(&b.client, &b.admin_url).await);
    map_acme(&a.client, &a.admin_url).await;
    let mapped = eventually(Duration::from_secs(2), async || {
        let get = admin_call(
            &b.client,
            &b.admin_url,
            Method::GET,
            "/admin/v1/tenants/acme",
            None,
            &[],
        );
        get.await.0 == StatusCode::OK
    })
    .await;
    assert!(mapped, "replica B sees tenant acme");
    (a, b)
}

/// A keyed stop on `base`: status, headers, body.
async fn keyed_stop(
    client: &reqwest::Client,
    base: &str,
    ids: &[String],
    key: &str,
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    keyed_stop_as(client, base, ids, key, None).await
}

/// A keyed stop on `base`, with the caller's `X-Request-Id` when given.
async fn keyed_stop_as(
    client: &reqwest::Client,
    base: &str,
    ids: &[String],
    key: &str,
    request_id: Option<&str>,
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let mut req = client
        .post(format!("{base}{STOP}"))
        .bearer_auth(caller_token(TENANT_A))
        .header("idempotency-key", key);
    if let Some(id) = request_id {
        req = req.header("x-request-id", id);
    }
    let resp = req
        .json(&json!({ "phone_ids": ids }))
        .send()
        .await
        .expect("gateway answers");
    let (status, headers) = (resp.status(), resp.headers().clone());
    (status, headers, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_used_on_one_replica_is_replayed_by_another() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let (a, b) = two_replicas_with_acme(&db).await;
    let ids = a.phones(PROJECT_A, 0, 120);
    let (status, h1, first) = keyed_stop(&a.client, &a.url, &ids, "across-replicas").await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let (status, h2, again) = keyed_stop(&b.client, &b.url, &ids, "across-replicas").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        h2.get("idempotent-replayed").and_then(|v| v.to_str().ok()),
        Some("true")
    );
    assert_eq!(again, first);
    assert_eq!(h2.get("x-request-id"), h1.get("x-request-id"));
    assert_eq!(
        b.sim.stats().batch_stop_requests,
        0,
        "replica B sent nothing"
    );
    // The stop's record is readable through either replica.
    let id = first["request_id"].as_str().unwrap().to_owned();
    let (status, _, _) = b
        .get(
            &format!("/v1/cloud-phone/stops/{id}"),
            &caller_token(TENANT_A),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_whose_replica_died_is_resumed_without_resending_what_had_an_outcome() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let sim = cph_sim::Sim::start(cph_sim::SimOptions {
        faults: cph_sim::Faults {
            latency_ms: 300,
            ..Default::default()
        },
        ..Default::default()
    })
    .await
    .expect("sim");
    let env = [
        ("CPHGW__STORE__URL_ENV", "\"CPHGW_STORE_URL\""),
        ("CPHGW_STORE_URL", db.url.as_str()),
        ("CPHGW__UPSTREAM__MAX_BATCH_SIZE", "10"),
        ("CPHGW__UPSTREAM__MAX_CONCURRENCY_PER_REQUEST", "1"),
        // The claim's lease is the request deadline plus 5 s.
        ("CPHGW__LIMITS__REQUEST_TIMEOUT_MS", "4000"),
    ];
    let a = GatewayProcess::start_against(&sim, &env).await;
    let client = client();
    map_acme(&client, &a.admin_url).await;
    let ids: Vec<String> = (0..100).map(|i| cph_sim::phone_id(PROJECT_A, i)).collect();
    let claimed_at = Instant::now();
    let doomed = {
        let (client, url, ids) = (client.clone(), a.url.clone(), ids.clone());
        // The connection dies with the replica: no answer is expected.
        tokio::spawn(async move {
            client
                .post(format!("{url}{STOP}"))
                .bearer_auth(caller_token(TENANT_A))
                .header("idempotency-key", "survives-a-crash")
                .json(&json!({ "phone_ids": ids }))
                .send()
                .await
                .is_ok()
        })
    };
    // Ten batches one after another at 300 ms each: kill the replica midway.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    a.signal("KILL");
    let _ = doomed.await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let sent_before = sim.stats().batch_stop_requests;
    let mut conn = db.connect().await;
    let recorded: i64 =
        sqlx::query_scalar("SELECT count(*) FROM cphgw_stop_batches WHERE entries IS NOT NULL")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert!(
        (1..10).contains(&recorded),
        "batches with an outcome when the replica died: {recorded}"
    );

    let b = GatewayProcess::start_against(&sim, &env).await;
    // While the dead replica's lease runs, the key is still in flight.
    let (status, _, reply) = keyed_stop(&client, &b.url, &ids, "survives-a-crash").await;
    if claimed_at.elapsed() < Duration::from_secs(8) {
        assert_gateway_error(status, &reply, StatusCode::CONFLICT, "CPHGW.0007");
    }
    let lease_over = claimed_at + Duration::from_millis(9_500);
    tokio::time::sleep(lease_over.saturating_duration_since(Instant::now())).await;
    let (status, headers, body) = keyed_stop(&client, &b.url, &ids, "survives-a-crash").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let resumed = headers
        .get("idempotent-resumed")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        resumed.starts_with(&format!("{recorded} of 10 batches")),
        "Idempotent-Resumed: {resumed:?}"
    );
    let sent_after = sim.stats().batch_stop_requests - sent_before;
    println!("resumed: {resumed}; batch calls before the crash {sent_before}, after {sent_after}");
    assert_eq!(
        sent_after,
        10 - recorded as u64,
        "only batches without a recorded outcome were sent again"
    );
    let jobs = body["jobs"].as_array().expect("jobs");
    assert_eq!(jobs.len(), 100);
    // Every phone stopped once: a job, or (for a batch that was in flight
    // when the replica died) CPH's "already stopping".
    assert!(
        jobs.iter()
            .all(|j| j["job_id"].is_string() || j["error_code"] == "CPS.0010"),
        "{body}"
    );
    // And now it is an ordinary replay.
    let (status, headers, again) = keyed_stop(&client, &b.url, &ids, "survives-a-crash").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        headers
            .get("idempotent-replayed")
            .and_then(|v| v.to_str().ok()),
        Some("true")
    );
    assert_eq!(again, body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_online_tries_the_store() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let sim = cph_sim::Sim::start(Default::default()).await.expect("sim");
    let dir = tempfile::tempdir().expect("dir");
    let config = write_config(dir.path(), &sim.url());
    let check = |url: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_cph-gateway"))
            .args(["check-config", "--online", "--config"])
            .arg(&config)
            .env_clear()
            .envs(secret_env())
            .env("CPHGW__STORE__URL_ENV", "\"CPHGW_STORE_URL\"")
            .env("CPHGW_STORE_URL", url)
            .output()
            .expect("run the binary");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    // A new database: reachable, but no schema yet.
    let (ok, out) = check(&db.url);
    assert!(
        !ok && out.contains("FAIL store (PostgreSQL): reachable, but"),
        "{out}"
    );
    // Migrated and with the tenants imported: every line passes.
    let app = TestApp::spawn_with(on_store(&db.url)).await;
    assert!(ready(&app.client, &app.admin_url).await);
    map_acme(&app.client, &app.admin_url).await;
    let (ok, out) = check(&db.url);
    assert!(ok, "{out}");
    assert!(
        out.contains("PASS store (PostgreSQL): reachable; 1 tenants"),
        "{out}"
    );
    assert!(
        out.contains("PASS IAM token"),
        "the credentials of the store's tenants are tried: {out}"
    );
    // Nobody listening: FAIL, exit 1, no password in the message.
    let (ok, out) = check("postgres://postgres:secret-pw@127.0.0.1:9/none");
    assert!(!ok && out.contains("FAIL store (PostgreSQL)"), "{out}");
    assert!(!out.contains("secret-pw"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_are_shared_by_replicas_and_pruned_whole_after_their_retention() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let short = || on_store(&db.url).set("tracking.retention_s", "1");
    let a = TestApp::spawn_with(short()).await;
    assert!(ready(&a.client, &a.admin_url).await);
    map_acme(&a.client, &a.admin_url).await;
    let mapped = eventually(Duration::from_secs(2), async || {
        let (status, _, _) = a
            .post_raw(
                STOP,
                &caller_token(TENANT_A),
                json!({"phone_ids": a.phones(PROJECT_A, 0, 1)}).to_string(),
                None,
            )
            .await;
        status == StatusCode::OK
    })
    .await;
    assert!(mapped, "acme is served");
    // A record of one batch, one of two (written whole, one row each), and
    // a keyed stop of two batches (its outcomes also written as they came).
    for (id, n) in [("one-batch", 1), ("two-batches", 150)] {
        let (status, _, body) = a
            .post_raw(
                STOP,
                &caller_token(TENANT_A),
                json!({"phone_ids": a.phones(PROJECT_A, 10, n)}).to_string(),
                Some(id),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let ids = a.phones(PROJECT_A, 200, 150);
    let (status, _, keyed) = keyed_stop(&a.client, &a.url, &ids, "pruned-key").await;
    assert_eq!(status, StatusCode::OK, "{keyed}");
    let keyed_id = keyed["request_id"].as_str().expect("request_id").to_owned();
    // Every record, read back through the other replica, whole.
    let b = TestApp::spawn_with(short()).await;
    assert!(ready(&b.client, &b.admin_url).await);
    for (id, n) in [
        ("one-batch", 1),
        ("two-batches", 150),
        (keyed_id.as_str(), 150),
    ] {
        let read = eventually(Duration::from_secs(1), async || {
            let (status, _, rec) = b
                .get(
                    &format!("/v1/cloud-phone/stops/{id}"),
                    &caller_token(TENANT_A),
                )
                .await;
            let rec: Value = serde_json::from_str(&rec).unwrap_or(Value::Null);
            status == StatusCode::OK
                && rec["jobs"].as_array().is_some_and(|j| j.len() == n)
                && rec["summary"]["total"] == n
        })
        .await;
        assert!(
            read,
            "record {id} with its {n} phones, through the other replica"
        );
    }
    let mut conn = db.connect().await;
    let count = async |conn: &mut sqlx::PgConnection, table: &str| -> i64 {
        sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
            .fetch_one(conn)
            .await
            .unwrap()
    };
    assert!(count(&mut conn, "cphgw_stop_records").await >= 4);
    assert!(
        count(&mut conn, "cphgw_stop_batches").await >= 1,
        "the keyed stop's outcomes were written as they came"
    );
    // Past their retention they are gone for callers at once, and from the
    // database at the next prune (a replica prunes when it starts).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (status, _, reply) = b
        .get("/v1/cloud-phone/stops/two-batches", &caller_token(TENANT_A))
        .await;
    let reply: Value = serde_json::from_str(&reply).unwrap_or(Value::Null);
    assert_gateway_error(status, &reply, StatusCode::NOT_FOUND, "CPHGW.0009");
    let c = TestApp::spawn_with(short()).await;
    assert!(ready(&c.client, &c.admin_url).await);
    let pruned = within(Duration::from_secs(5), async || {
        count(&mut conn, "cphgw_stop_records").await == 0
            && count(&mut conn, "cphgw_stop_batches").await == 0
    })
    .await;
    assert!(pruned, "expired records and their batch rows are deleted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_raced_on_two_replicas_run_once_each_and_replay_their_answer() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let (a, b) = two_replicas_with_acme(&db).await;
    // Each key three times at once: twice on A (claims that may meet in one
    // statement), once on B.
    const KEYS: u32 = 40;
    let stops = (0..KEYS).map(|k| {
        let ids = a.phones(PROJECT_A, k * 3, 3);
        let key = format!("race-{k}");
        let (a, b) = (&a, &b);
        async move {
            let (one, two, three) = tokio::join!(
                keyed_stop(&a.client, &a.url, &ids, &key),
                keyed_stop(&a.client, &a.url, &ids, &key),
                keyed_stop(&b.client, &b.url, &ids, &key),
            );
            (key, ids, [one, two, three])
        }
    });
    let raced = futures_util::future::join_all(stops).await;
    let sent = a.sim.stats().batch_stop_requests + b.sim.stats().batch_stop_requests;
    assert_eq!(sent, u64::from(KEYS), "each key's stop reached CPH once");
    for (key, ids, answers) in raced {
        let mut answered = None;
        for (status, _, body) in &answers {
            match *status {
                StatusCode::OK => {
                    assert_eq!(body["jobs"].as_array().map(Vec::len), Some(3), "{body}");
                    if let Some(first) = &answered {
                        assert_eq!(body, first, "{key}: one answer, replayed");
                    }
                    answered = Some(body.clone());
                }
                StatusCode::CONFLICT => assert_eq!(body["error_code"], "CPHGW.0007", "{body}"),
                other => panic!("{key}: {other} {body}"),
            }
        }
        let first = answered.unwrap_or_else(|| panic!("{key}: no request ran: {answers:?}"));
        // Afterwards, either replica replays it.
        let (status, headers, again) = keyed_stop(&b.client, &b.url, &ids, &key).await;
        assert_eq!(status, StatusCode::OK, "{again}");
        assert_eq!(
            headers
                .get("idempotent-replayed")
                .and_then(|v| v.to_str().ok()),
            Some("true")
        );
        assert_eq!(again, first);
    }
    let sent_after = a.sim.stats().batch_stop_requests + b.sim.stats().batch_stop_requests;
    assert_eq!(sent_after, sent, "replays send nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_stops_recover_when_the_database_drops_the_gateways_connections() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let a = TestApp::spawn_with(on_store(&db.url)).await;
    assert!(ready(&a.client, &a.admin_url).await);
    map_acme(&a.client, &a.admin_url).await;
    // Keys claimed and answered: the gateway keeps connections for both.
    for k in 0..3 {
        let ids = a.phones(PROJECT_A, k * 2, 2);
        let (status, _, body) = keyed_stop(&a.client, &a.url, &ids, &format!("before-{k}")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let mut admin = db.connect().await;
    let killed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND application_name = 'cph-gateway') t",
    )
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert!(
        killed >= 2,
        "the gateway's connections were there: {killed}"
    );
    // Every stop after that answers with each phone, or 503 with its code,
    // and keyed stops soon run again.
    let mut ok_in_a_row = 0;
    for n in 0..20 {
        let ids = a.phones(PROJECT_A, 100 + n * 2, 2);
        let (status, _, body) = keyed_stop(&a.client, &a.url, &ids, &format!("after-{n}")).await;
        match status {
            StatusCode::OK => {
                assert_eq!(body["jobs"].as_array().map(Vec::len), Some(2), "{body}");
                ok_in_a_row += 1;
                if ok_in_a_row == 3 {
                    break;
                }
            }
            StatusCode::SERVICE_UNAVAILABLE => {
                assert_eq!(body["error_code"], "CPHGW.0304", "{body}");
                ok_in_a_row = 0;
            }
            other => panic!("{other}: {body}"),
        }
    }
    assert_eq!(ok_in_a_row, 3, "keyed stops run again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_stops_reusing_one_request_id_are_all_answered_and_replayed() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let (a, _b) = two_replicas_with_acme(&db).await;
    // Single-batch keyed stops, sent at once under one caller-chosen
    // X-Request-Id: their answers meet in a statement that finds the
    // request id's record already written, and still each one is stored.
    const STOPS: u32 = 24;
    let stop = |k: u32| {
        let ids = a.phones(PROJECT_A, k * 2, 2);
        let a = &a;
        async move {
            let key = format!("shared-id-{k}");
            let (status, headers, body) =
                keyed_stop_as(&a.client, &a.url, &ids, &key, Some("one-id-for-all")).await;
            (status, headers.contains_key("idempotent-replayed"), body)
        }
    };
    let first = futures_util::future::join_all((0..STOPS).map(stop)).await;
    for (k, (status, replayed, body)) in first.iter().enumerate() {
        assert_eq!(*status, StatusCode::OK, "stop {k}: {body}");
        assert!(!replayed, "stop {k} ran");
        assert_eq!(body["jobs"].as_array().map(Vec::len), Some(2), "{body}");
    }
    assert_eq!(a.sim.stats().batch_stop_requests, u64::from(STOPS));
    // Every key's answer was stored: each is replayed, sending nothing.
    let again = futures_util::future::join_all((0..STOPS).map(stop)).await;
    for (k, ((status, replayed, body), (_, _, was))) in again.iter().zip(&first).enumerate() {
        assert_eq!(*status, StatusCode::OK, "stop {k}: {body}");
        assert!(replayed, "stop {k} replayed");
        assert_eq!(body, was, "stop {k}: its own answer");
    }
    assert_eq!(a.sim.stats().batch_stop_requests, u64::from(STOPS));
    // The request id's record is one of theirs.
    let (status, _, rec) = a
        .get(
            "/v1/cloud-phone/stops/one-id-for-all",
            &caller_token(TENANT_A),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{rec}");
    let rec: Value = serde_json::from_str(&rec).expect("a record");
    assert_eq!(rec["summary"]["total"], 2, "{rec}");
}
