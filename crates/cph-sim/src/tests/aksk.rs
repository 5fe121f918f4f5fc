//! AK/SK signed calls: accepted, and every reason for APIGW.0301.

use super::*;
use crate::AkSkCredential;
use serde_json::json;

const TMP: (&str, &str) = (
    "TMPAK0000000000000001",
    "tmp-secret-key-000000000000000000000",
);
const TMP_TOKEN: &str = "gQpjbi1lYXN0LTMfake/security+token==";

async fn sim_with_temporary() -> Sim {
    let mut o = opts();
    o.aksk
        .push(AkSkCredential::temporary(TMP.0, TMP.1, TMP_TOKEN));
    Sim::start(o).await.unwrap()
}

fn stop_path(project: &str) -> String {
    format!("/v1/{project}/cloud-phone/phones/batch-stop")
}

fn stop_body(i: u32) -> Vec<u8> {
    json!({ "phone_ids": [phone_id(PROJECT, i)] })
        .to_string()
        .into_bytes()
}

#[tokio::test]
async fn signed_calls_are_accepted_on_every_route() {
    let sim = sim_with_temporary().await;
    let c = client();
    let p = phone_id(PROJECT, 1);
    let (status, body) = signed_stop(&c, &sim, PROJECT, &[&p]).await;
    assert_eq!(status, 200, "{body}");
    let job = body["jobs"][0]["job_id"].as_str().unwrap().to_owned();
    let request_id = body["request_id"].as_str().unwrap().to_owned();

    for path in [
        format!("/v1/{PROJECT}/cloud-phone/jobs/{job}"),
        format!("/v1/{PROJECT}/cloud-phone/jobs?request_ids={request_id},x&limit=5"),
        format!("/v1/{PROJECT}/cloud-phone/phones/{p}"),
    ] {
        // Without Content-Type and X-Project-Id, which are optional.
        let mut h = http::HeaderMap::new();
        let date = crate::sign::format_sdk_date(time::OffsetDateTime::now_utc());
        h.insert("x-sdk-date", date.parse().unwrap());
        let h = sign(&sim, "GET", &path, h, b"", DEFAULT, true);
        let (status, body) = send(&c, &sim, "GET", &path, h, b"").await;
        assert_eq!(status, 200, "{path}: {body}");
    }

    // A temporary credential with its signed security token.
    let mut h = sign_base(PROJECT);
    h.insert("x-security-token", TMP_TOKEN.parse().unwrap());
    let body = stop_body(2);
    let h = sign(&sim, "POST", &stop_path(PROJECT), h, &body, TMP, true);
    let (status, res) = send(&c, &sim, "POST", &stop_path(PROJECT), h, &body).await;
    assert_eq!(status, 200, "{res}");

    // Tokens keep working next to signatures.
    let t = token(&c, &sim, PROJECT).await;
    let res = stop_call(&c, &sim, &t, PROJECT, &[&phone_id(PROJECT, 3)])
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let stats = sim.stats();
    assert_eq!((stats.signed_requests, stats.unauthorized), (5, 0));
}

/// Sends a batch-stop prepared by `make` and expects 401 APIGW.0301.
async fn refused(
    c: &reqwest::Client,
    sim: &Sim,
    why: &str,
    path: &str,
    h: http::HeaderMap,
    body: &[u8],
) {
    let (status, res) = send(c, sim, "POST", path, h, body).await;
    assert_eq!(status, 401, "{why}: {res}");
    assert_eq!(res["error_code"], "APIGW.0301", "{why}");
    assert!(
        res["error_msg"]
            .as_str()
            .unwrap()
            .starts_with("Incorrect IAM"),
        "{why}"
    );
    assert_eq!(res["request_id"].as_str().unwrap().len(), 32, "{why}");
}

#[tokio::test]
async fn bad_signatures_are_refused() {
    let sim = sim_with_temporary().await;
    let c = client();
    let path = stop_path(PROJECT);
    let body = stop_body(1);
    let ok = |h| sign(&sim, "POST", &path, h, &body, DEFAULT, true);
    let mut cases: Vec<(&str, http::HeaderMap, Vec<u8>)> = Vec::new();

    cases.push((
        "wrong secret",
        sign(
            &sim,
            "POST",
            &path,
            sign_base(PROJECT),
            &body,
            (crate::DEFAULT_AK, "nope"),
            true,
        ),
        body.clone(),
    ));
    cases.push((
        "unknown AK",
        sign(
            &sim,
            "POST",
            &path,
            sign_base(PROJECT),
            &body,
            ("NOSUCHAK", "x"),
            true,
        ),
        body.clone(),
    ));
    cases.push((
        "body changed by one byte",
        ok(sign_base(PROJECT)),
        stop_body(2),
    ));
    let mut h = sign_base(PROJECT);
    h.remove("x-sdk-date");
    cases.push(("no X-Sdk-Date", ok(h), body.clone()));
    let mut h = sign_base(PROJECT);
    h.insert("x-sdk-date", "2026-11-30T08:00:00Z".parse().unwrap());
    cases.push(("malformed X-Sdk-Date", ok(h), body.clone()));
    for minutes in [-16, 16] {
        let mut h = sign_base(PROJECT);
        let t = time::OffsetDateTime::now_utc() + time::Duration::minutes(minutes);
        h.insert(
            "x-sdk-date",
            crate::sign::format_sdk_date(t).parse().unwrap(),
        );
        cases.push(("X-Sdk-Date 16 minutes off", ok(h), body.clone()));
    }
    cases.push((
        "host not signed",
        sign(
            &sim,
            "POST",
            &path,
            sign_base(PROJECT),
            &body,
            DEFAULT,
            false,
        ),
        body.clone(),
    ));
    let mut h = ok(sign_base(PROJECT));
    h.insert("x-project-id", OTHER.parse().unwrap());
    cases.push(("X-Project-Id changed after signing", h, body.clone()));
    cases.push((
        "X-Project-Id of another project",
        ok(sign_base(OTHER)),
        body.clone(),
    ));
    let mut h = sign_base(PROJECT);
    h.remove("x-project-id");
    let mut h = ok(h);
    h.insert("x-project-id", PROJECT.parse().unwrap());
    cases.push(("X-Project-Id not signed", h, body.clone()));
    let mut h = ok(sign_base(PROJECT));
    let auth = h["authorization"]
        .to_str()
        .unwrap()
        .replace("Signature=", "Signature=0");
    h.insert("authorization", auth.parse().unwrap());
    cases.push(("garbled signature", h, body.clone()));
    let mut h = ok(sign_base(PROJECT));
    h.insert("authorization", "SDK-HMAC-SHA256 Access=x".parse().unwrap());
    cases.push(("malformed Authorization", h, body.clone()));
    // Temporary credentials.
    cases.push((
        "temporary AK without token",
        sign(&sim, "POST", &path, sign_base(PROJECT), &body, TMP, true),
        body.clone(),
    ));
    let mut h = sign_base(PROJECT);
    h.insert("x-security-token", "wrong".parse().unwrap());
    cases.push((
        "temporary AK with a wrong token",
        sign(&sim, "POST", &path, h, &body, TMP, true),
        body.clone(),
    ));
    let mut h = sign(&sim, "POST", &path, sign_base(PROJECT), &body, TMP, true);
    h.insert("x-security-token", TMP_TOKEN.parse().unwrap());
    cases.push(("temporary AK with an unsigned token", h, body.clone()));
    let mut h = sign_base(PROJECT);
    h.insert("x-security-token", TMP_TOKEN.parse().unwrap());
    cases.push(("permanent AK with a token", ok(h), body.clone()));

    let n = cases.len() as u64;
    for (why, h, body) in cases {
        refused(&c, &sim, why, &path, h, &body).await;
    }
    assert_eq!(
        sim.phone_state(PROJECT, &phone_id(PROJECT, 1)),
        Some(PhoneState::Running)
    );
    let stats = sim.stats();
    assert_eq!((stats.unauthorized, stats.signed_requests), (n, 0));
    assert_eq!(stats.responses_by_status[&401], n);

    // Job routes check signatures too.
    let jobs = format!("/v1/{PROJECT}/cloud-phone/jobs?request_ids=a");
    let mut h = sign(&sim, "GET", &jobs, sign_base(PROJECT), b"", DEFAULT, true);
    h.insert("x-sdk-date", "20000101T000000Z".parse().unwrap());
    let (status, res) = send(&c, &sim, "GET", &jobs, h, b"").await;
    assert_eq!(
        (status, res["error_code"].as_str()),
        (401, Some("APIGW.0301"))
    );
}

#[tokio::test]
async fn accepted_keys_can_be_replaced_while_running() {
    let sim = sim_with_temporary().await;
    let c = client();
    let path = stop_path(PROJECT);
    let body = stop_body(4);
    let signed = |keys| sign(&sim, "POST", &path, sign_base(PROJECT), &body, keys, true);
    let (status, res) = send(&c, &sim, "POST", &path, signed(DEFAULT), &body).await;
    assert_eq!(status, 200, "{res}");

    let rotated = (crate::DEFAULT_AK, "rotated-secret-key");
    sim.set_aksk(vec![AkSkCredential::new(rotated.0, rotated.1)]);
    sim.start_phones();
    refused(&c, &sim, "old secret key", &path, signed(DEFAULT), &body).await;
    let (status, res) = send(&c, &sim, "POST", &path, signed(rotated), &body).await;
    assert_eq!(status, 200, "{res}");
    // The temporary credential was not in the new list.
    let mut h = sign_base(PROJECT);
    h.insert("x-security-token", TMP_TOKEN.parse().unwrap());
    let h = sign(&sim, "POST", &path, h, &body, TMP, true);
    refused(&c, &sim, "dropped temporary key", &path, h, &body).await;
}
