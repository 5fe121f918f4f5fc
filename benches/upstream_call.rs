//! The upstream batch-stop call, end to end over loopback against the
//! simulator: on the direct client (hyper's HTTP/1 client, the call
//! prepared once per project: what a stop uses unless a proxy is
//! configured) and on the general reqwest client (what it used before, and
//! still uses behind a proxy). Both sign the call the same way (AK/SK) and
//! read the same answer; the simulator's own work is in both figures.
//! `batch_stop_1_direct_serving_thread` is the direct client as a serving
//! thread uses it: the call, its connection and the connection's task on
//! one single-threaded runtime, with that thread's own pool.
//!
//! Run: `cargo bench --bench upstream_call -- --warm-up-time 1 --measurement-time 3`.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use cph_gateway::config::Config;
use cph_gateway::domain::{PhoneId, ProjectId, Region};
use cph_gateway::telemetry::Metrics;
use cph_gateway::tenants::Project;
use cph_gateway::upstream::cph::{CallOutcome, CphClient};
use cph_gateway::upstream::credentials::{Authorization, SigningKeys};
use cph_gateway::upstream::direct::DirectClient;
use cph_sim::{DEFAULT_AK, DEFAULT_SK, Sim, SimOptions};
use criterion::{Criterion, criterion_group, criterion_main};
use secrecy::SecretString;

const PROJECT: &str = "0a1b2c3d4e5f60718293a4b5c6d7e8f9";

fn upstream_call_benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let sim = rt
        .block_on(Sim::start(SimOptions {
            listen: "127.0.0.1:0".parse().unwrap(),
            ..SimOptions::default()
        }))
        .unwrap();
    let text = format!(
        "[auth]\nissuer = \"https://idp\"\nhs256_secret_env = \"S\"\n[upstream]\ncph_endpoint = \"{}\"\n",
        sim.url()
    );
    let env: BTreeMap<String, String> = [(
        "S".to_owned(),
        "0123456789abcdef0123456789abcdef".to_owned(),
    )]
    .into();
    let cfg = Config::from_toml(&text, &env).unwrap().upstream;
    let metrics = Arc::new(Metrics::new());
    let http = cph_gateway::upstream::http::client(&cfg).unwrap();
    let client = |direct: Option<DirectClient>| {
        CphClient::new(
            http.clone(),
            direct,
            cfg.cph_endpoint.clone(),
            Duration::from_secs(5),
            cfg.max_response_bytes,
            metrics.clone(),
        )
    };
    let direct = DirectClient::new(&cfg).unwrap();
    assert!(direct.is_some(), "no proxy here: the direct client is used");
    let clients = [
        ("batch_stop_1_direct", client(direct)),
        ("batch_stop_1_reqwest", client(None)),
    ];
    let serving = client(DirectClient::new(&cfg).unwrap());
    let local = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let project = Project {
        id: ProjectId::parse(PROJECT).unwrap(),
        region: Region::parse("cn-east-3").unwrap(),
        credential: "default".into(),
    };
    let auth = Authorization::Signed(SigningKeys {
        access_key: Arc::new(SecretString::from(DEFAULT_AK)),
        secret_key: Arc::new(SecretString::from(DEFAULT_SK)),
        security_token: None,
    });
    let ids = vec![PhoneId::parse(&cph_sim::phone_id(PROJECT, 7)).unwrap()];
    let mut g = c.benchmark_group("upstream");
    for (name, client) in &clients {
        let call = || rt.block_on(client.batch_stop(&project, &auth, "bench", black_box(&ids)));
        // Answered (CPH refuses a phone already stopped, in a 200 answer).
        assert!(matches!(call(), CallOutcome::Jobs { .. }), "{name}");
        g.bench_function(*name, |b| b.iter(call));
    }
    cph_gateway::upstream::direct::use_pool(1);
    let call = || local.block_on(serving.batch_stop(&project, &auth, "bench", black_box(&ids)));
    assert!(matches!(call(), CallOutcome::Jobs { .. }), "serving thread");
    g.bench_function("batch_stop_1_direct_serving_thread", |b| b.iter(call));
    cph_gateway::upstream::direct::use_pool(0);
    g.finish();
    drop(sim);
}

criterion_group!(benches, upstream_call_benches);
criterion_main!(benches);
