//! Hostile input: every malformed, oversized or odd request gets a clear
//! gateway error (never a crash, never a call upstream), and the gateway
//! keeps serving normal stops afterwards.

use std::time::{Duration, Instant};

use jsonwebtoken::Algorithm;
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::*;

/// POSTs raw `body` bytes to the stop route with a valid token.
async fn post_raw(app: &TestApp, body: impl Into<reqwest::Body>) -> (StatusCode, HeaderMap, Value) {
    app.post_raw(STOP, &caller_token(TENANT_A), body, None)
        .await
}

/// The gateway is up and stops phones normally; nothing hostile went upstream.
async fn still_serves(app: &TestApp) {
    assert_eq!(
        app.sim.stats().batch_stop_requests,
        0,
        "a refused request reached CPH"
    );
    let ids = app.phones(PROJECT_A, 42, 3);
    // Earlier calls may have stopped them: start them again first.
    app.sim.start_phones();
    let (status, body) = app.stop(&caller_token(TENANT_A), &ids).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_accounts_for(&ids, &body);
    assert!(
        body["jobs"]
            .as_array()
            .is_some_and(|j| j.iter().all(|e| e["job_id"].is_string())),
        "{body}"
    );
    app.sim.reset_stats();
}

/// A raw HTTP/1.1 exchange over loopback: writes `head`, then the `body`
/// chunks from a separate task (the server may answer, and close, before
/// reading them all), and reads one response.
async fn raw_exchange(
    url: &str,
    head: String,
    chunks: Vec<Vec<u8>>,
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let addr = url.trim_start_matches("http://");
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut rd, mut wr) = stream.into_split();
    let writer = tokio::spawn(async move {
        let mut sent = 0usize;
        if wr.write_all(head.as_bytes()).await.is_err() {
            return sent;
        }
        for c in chunks {
            if wr.write_all(&c).await.is_err() {
                break;
            }
            sent += c.len();
        }
        sent
    });
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let read = async {
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                let len = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse::<usize>().ok())?
                    })
                    .unwrap_or(0);
                if buf.len() >= end + 4 + len {
                    return (head, buf[end + 4..end + 4 + len].to_vec());
                }
            }
            match rd.read(&mut chunk).await {
                Ok(0) | Err(_) => panic!(
                    "connection closed before a full response: {:?}",
                    String::from_utf8_lossy(&buf)
                ),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    };
    let (head, body) = tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("a response within 10 s");
    writer.abort();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers, body)
}

// ---------------------------------------------------------------------------
// Bodies
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_body_is_413_fast() {
    // Over a raw socket: the gateway answers from Content-Length and closes
    // without reading the 5 MiB, so a client that insists on writing all of
    // it first (as reqwest does) may see a broken pipe instead of the 413.
    let app = TestApp::spawn().await;
    let body = format!("{{\"phone_ids\":[\"{}\"]}}", "a".repeat(5 * 1024 * 1024));
    let head = format!(
        "POST {STOP} HTTP/1.1\r\nhost: gateway\r\nauthorization: Bearer {}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n",
        caller_token(TENANT_A),
        body.len()
    );
    let chunks = body
        .into_bytes()
        .chunks(64 * 1024)
        .map(<[u8]>::to_vec)
        .collect();
    let started = Instant::now();
    let (status, _, answer) = raw_exchange(&app.url, head, chunks).await;
    let took = started.elapsed();
    let status = StatusCode::from_u16(status).expect("status");
    println!("5 MiB body: {status} in {took:?}");
    let answer: Value = serde_json::from_slice(&answer).expect("JSON error body");
    assert_gateway_error(status, &answer, StatusCode::PAYLOAD_TOO_LARGE, "CPHGW.0003");
    assert!(took < Duration::from_secs(2), "{took:?}");
    still_serves(&app).await;
}

/// Chunked, without Content-Length: refused once the limit (1 MiB) is
/// passed, without reading the remaining megabytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_body_over_the_limit_is_413() {
    let app = TestApp::spawn().await;
    let head = format!(
        "POST {STOP} HTTP/1.1\r\nhost: gateway\r\nauthorization: Bearer {}\r\n\
         content-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n",
        caller_token(TENANT_A)
    );
    let piece = 64 * 1024;
    let mut chunks = vec![];
    let first = br#"{"phone_ids":[""#.to_vec();
    chunks.push(
        [
            format!("{:x}\r\n", first.len()).into_bytes(),
            first,
            b"\r\n".to_vec(),
        ]
        .concat(),
    );
    for _ in 0..128 {
        // 8 MiB in all.
        chunks.push(
            [
                format!("{piece:x}\r\n").into_bytes(),
                vec![b'a'; piece],
                b"\r\n".to_vec(),
            ]
            .concat(),
        );
    }
    chunks.push(b"0\r\n\r\n".to_vec());
    let started = Instant::now();
    let (status, _, body) = raw_exchange(&app.url, head, chunks).await;
    let took = started.elapsed();
    println!("chunked 8 MiB body: {status} in {took:?}");
    let body: Value = serde_json::from_slice(&body).expect("JSON error body");
    assert_gateway_error(
        StatusCode::from_u16(status).expect("status"),
        &body,
        StatusCode::PAYLOAD_TOO_LARGE,
        "CPHGW.0003",
    );
    still_serves(&app).await;
}

/// 100,000 levels of nesting: where `phone_ids` should be, a clear 400;
/// elsewhere in the body (JSON is valid, unknown fields are ignored, as CPH
/// does) the stop goes ahead. Either way no stack overflow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deeply_nested_json_is_400() {
    let app = TestApp::spawn().await;
    let depth = 100_000;
    let refused = [
        format!(
            "{{\"phone_ids\": {}{}}}",
            "[".repeat(depth),
            "]".repeat(depth)
        ),
        format!(
            "{{\"phone_ids\": [{}{}]}}",
            "{\"a\":".repeat(depth),
            "}".repeat(depth)
        ),
        format!("{}{}", "{\"a\":".repeat(depth), "}".repeat(depth)),
        format!("{}1{}", "[".repeat(depth), "]".repeat(depth)),
        // Unterminated: the parser must give up, not recurse.
        format!("{{\"phone_ids\": [\"a\"], \"x\": {}", "[".repeat(depth)),
    ];
    for body in refused {
        let started = Instant::now();
        let (status, _, answer) = post_raw(&app, body).await;
        println!("100k-deep JSON: {status} in {:?}", started.elapsed());
        assert_gateway_error(status, &answer, StatusCode::BAD_REQUEST, "CPHGW.0001");
    }
    still_serves(&app).await;
    let ids = vec![app.phones(PROJECT_A, 5, 1).remove(0)];
    let body = format!(
        "{{\"phone_ids\": [\"{}\"], \"x\": {}{}}}",
        ids[0],
        "[".repeat(depth),
        "]".repeat(depth)
    );
    let (status, _, answer) = post_raw(&app, body).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_accounts_for(&ids, &answer);
    app.sim.reset_stats();
    still_serves(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrongly_typed_or_broken_bodies_are_400() {
    let app = TestApp::spawn().await;
    let invalid_body: &[&[u8]] = &[
        br#"{"phone_ids": {}}"#,
        br#"{"phone_ids": 1}"#,
        br#"{"phone_ids": null}"#,
        br#"{"phone_ids": [null]}"#,
        br#"{"phone_ids": [true]}"#,
        br#"{"phone_ids": [1, 2]}"#,
        br#"{"phone_ids": "abc"}"#,
        br#"{"phone_ids": [["a"]]}"#,
        br#"{"phone_ids": [{"id": "a"}]}"#,
        br#"{"phone_ids": []}"#,
        br#"{"phone_ids": ["a"], "phone_ids": ["b"]}"#,
        br#"{"phone_ids": ["a"]} trailing"#,
        br#"{"phone_ids": ["a""#,
        br#"{"PHONE_IDS": ["a"]}"#,
        br#"{}"#,
        br#"[]"#,
        br#""phone_ids""#,
        b"",
        b"null",
        // Not UTF-8.
        b"{\"phone_ids\": [\"\xff\xfe\"]}",
        b"\xff\xfe\xfd\xfc",
        b"\xff\xfe{\0\"\0p\0\"\0:\0[\0]\0}\0",
        b"{\"phone_ids\": [\"a\xc3\"]}",
    ];
    for body in invalid_body {
        let (status, _, answer) = post_raw(&app, body.to_vec()).await;
        assert_eq!(
            answer["error_code"],
            "CPHGW.0001",
            "{:?}: {answer}",
            String::from_utf8_lossy(body)
        );
        assert_gateway_error(status, &answer, StatusCode::BAD_REQUEST, "CPHGW.0001");
    }
    let long = "x".repeat(65);
    let invalid_id: Vec<Value> = vec![
        json!({"phone_ids": [""]}),
        json!({"phone_ids": ["a b"]}),
        json!({"phone_ids": ["ok", "../../etc/passwd"]}),
        json!({"phone_ids": [long]}),
        json!({"phone_ids": ["\u{0000}"]}),
        json!({"phone_ids": ["télé"]}),
        json!({"phone_ids": ["a\nb"]}),
    ];
    for body in invalid_id {
        let (status, _, answer) = post_raw(&app, body.to_string()).await;
        assert_gateway_error(status, &answer, StatusCode::BAD_REQUEST, "CPHGW.0002");
        let msg = answer["error_msg"].as_str().unwrap_or_default();
        assert!(msg.len() < 1000, "error_msg echoes too much: {msg}");
    }
    still_serves(&app).await;
}

/// A refusal names what is wrong without echoing the caller's megabyte back:
/// the error message stays short whatever the body holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_messages_do_not_echo_the_body() {
    let app = TestApp::spawn().await;
    let big = "x".repeat(900 * 1024);
    let bodies = [
        json!({ "phone_ids": big }).to_string(),
        json!({ "phone_ids": { big.as_str(): 1 } }).to_string(),
        json!({ "phone_ids": [big] }).to_string(),
        format!("{{\"phone_ids\": [\"{big}"),
    ];
    let mut echoes = vec![];
    for (i, body) in bodies.into_iter().enumerate() {
        let (status, _, answer) = post_raw(&app, body).await;
        let msg = answer["error_msg"].as_str().unwrap_or_default();
        println!(
            "body {i}: {status} {}, error_msg of {} bytes",
            answer["error_code"],
            msg.len()
        );
        assert!(status.is_client_error(), "{status}");
        if msg.len() > 1024 {
            echoes.push(format!(
                "body {i}: {} bytes: {}...",
                msg.len(),
                &msg[..msg.len().min(80)]
            ));
        }
    }
    assert!(echoes.is_empty(), "error_msg echoes the body: {echoes:#?}");
    still_serves(&app).await;
}

/// 100,000 ids under the body limit: refused as too many as soon as the
/// parser meets id 10,001, quickly, and nothing is sent upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_ids_are_413_quickly() {
    let app =
        TestApp::spawn_with(TestOptions::default().set("limits.max_body_bytes", "2097152")).await;
    let ids = vec!["a"; 100_000];
    let body = json!({ "phone_ids": ids }).to_string();
    assert!(body.len() < 2 * 1024 * 1024);
    let started = Instant::now();
    let (status, _, answer) = post_raw(&app, body.clone()).await;
    let took = started.elapsed();
    println!("100,000 ids ({} bytes): {status} in {took:?}", body.len());
    assert_gateway_error(status, &answer, StatusCode::PAYLOAD_TOO_LARGE, "CPHGW.0003");
    assert!(took < Duration::from_secs(2), "{took:?}");
    still_serves(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_max_phone_ids_works_and_one_more_does_not() {
    let app = TestApp::spawn().await;
    let token = caller_token(TENANT_A);
    let ids = app.phones(PROJECT_A, 0, 10_000);
    let (status, body) = app.stop(&token, &ids).await;
    assert_eq!(status, StatusCode::OK, "{}", body["error_msg"]);
    assert_accounts_for(&ids, &body);
    assert!(
        body["jobs"]
            .as_array()
            .is_some_and(|j| j.iter().all(|e| e["job_id"].is_string())),
        "a phone of 10,000 not stopped"
    );
    assert_eq!(app.sim.stats().batch_stop_requests, 100);
    app.sim.reset_stats();
    let ids = app.phones(PROJECT_A, 0, 10_001);
    let (status, body) = app.stop(&token, &ids).await;
    assert_gateway_error(status, &body, StatusCode::PAYLOAD_TOO_LARGE, "CPHGW.0003");
    still_serves(&app).await;
}

// ---------------------------------------------------------------------------
// Headers and tokens
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_authorization_header_is_401_or_431() {
    let app = TestApp::spawn().await;
    for len in [17 * 1024, 100 * 1024] {
        let resp = app
            .client
            .post(format!("{}{STOP}", app.url))
            .header("authorization", format!("Bearer {}", "a".repeat(len)))
            .json(&json!({"phone_ids": ["a"]}))
            .send()
            .await
            .expect("gateway answers");
        let status = resp.status();
        println!("Authorization of {len} bytes: {status}");
        assert!(
            matches!(status.as_u16(), 401 | 431),
            "Authorization of {len} bytes: {status}"
        );
        if status == StatusCode::UNAUTHORIZED {
            assert!(resp.headers().contains_key("www-authenticate"));
            let body: Value = resp.json().await.expect("JSON");
            assert_gateway_error(status, &body, StatusCode::UNAUTHORIZED, "CPHGW.0101");
        }
    }
    // Too many headers: refused by the HTTP layer, not a crash.
    let mut req = app
        .client
        .post(format!("{}{STOP}", app.url))
        .bearer_auth(caller_token(TENANT_A))
        .json(&json!({"phone_ids": ["a"]}));
    for i in 0..200 {
        req = req.header(format!("x-filler-{i}"), "x");
    }
    let status = req.send().await.map(|r| r.status());
    println!("200 extra headers: {status:?}");
    assert!(
        status
            .as_ref()
            .is_ok_and(|s| s.is_client_error() || s.is_success()),
        "{status:?}"
    );
    still_serves(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_request_id_with_control_characters_is_replaced() {
    let app = TestApp::spawn().await;
    let ids = app.phones(PROJECT_A, 7, 1);
    let stop_with = async |value: HeaderValue| {
        let resp = app
            .client
            .post(format!("{}{STOP}", app.url))
            .bearer_auth(caller_token(TENANT_A))
            .header("x-request-id", value)
            .json(&json!({ "phone_ids": ids }))
            .send()
            .await
            .expect("gateway answers");
        let status = resp.status();
        let header = resp
            .headers()
            .get("x-request-id")
            .map(|v| v.as_bytes().to_vec())
            .expect("x-request-id in the answer");
        let body: Value = resp.json().await.expect("JSON");
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(
            body["request_id"].as_str().map(str::as_bytes),
            Some(header.as_slice()),
            "header and body request ids differ"
        );
        String::from_utf8(header).expect("ASCII request id")
    };
    // A well-formed id is kept.
    let kept = "caller-req.42:/~";
    assert_eq!(stop_with(HeaderValue::from_static(kept)).await, kept);
    let hostile: Vec<Vec<u8>> = vec![
        b"abc\tdef".to_vec(),
        b"a b".to_vec(),
        "caf\u{e9}".as_bytes().to_vec(),
        b"ok\x80\xff".to_vec(),
        vec![b'r'; 129],
    ];
    for value in hostile {
        let got = stop_with(HeaderValue::from_bytes(&value).expect("header value")).await;
        assert_ne!(got.as_bytes(), value.as_slice());
        assert!(
            is_hex32(&got),
            "{:?} replaced by {got:?}",
            String::from_utf8_lossy(&value)
        );
    }
    // Raw control bytes that no HTTP client library would send.
    for bad in [&b"a\x01b"[..], b"\x7f", b"a\x1bb"] {
        let mut head = format!(
            "POST {STOP} HTTP/1.1\r\nhost: gateway\r\nauthorization: Bearer {}\r\n\
             content-type: application/json\r\ncontent-length: 2\r\nx-request-id: ",
            caller_token(TENANT_A)
        )
        .into_bytes();
        head.extend_from_slice(bad);
        head.extend_from_slice(b"\r\nconnection: close\r\n\r\n{}");
        let head = String::from_utf8(head).expect("ASCII");
        let (status, headers, _) = raw_exchange(&app.url, head, vec![]).await;
        let echoed = headers
            .iter()
            .find(|(k, _)| k == "x-request-id")
            .map(|(_, v)| v.clone());
        println!("X-Request-Id {bad:?}: {status}, answered with {echoed:?}");
        assert!(
            status == 400,
            "X-Request-Id {bad:?}: {status} (the body {{}} is a 400 either way)"
        );
        if let Some(id) = echoed {
            assert!(is_hex32(&id), "{id:?}");
        }
    }
    app.sim.reset_stats();
    still_serves(&app).await;
}

/// Validly signed tokens with extreme claims: a clear 200/401/403, never a
/// 500, also when the same token comes again (the verified-token cache).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extreme_jwt_claims_get_a_clear_answer() {
    let app = TestApp::spawn().await;
    let ids = app.phones(PROJECT_A, 9, 1);
    let now = now();
    let base = claims(Some(TENANT_A), &[]);
    let with = |k: &str, v: Value| {
        let mut c = base.clone();
        c[k] = v;
        c
    };
    let cases: Vec<(&str, Value, u16)> = vec![
        ("exp 1e300", with("exp", json!(1e300)), 401),
        ("exp -1", with("exp", json!(-1)), 401),
        ("exp string", with("exp", json!("tomorrow")), 401),
        ("exp past", with("exp", json!(now - 3600)), 401),
        ("nbf far future", with("nbf", json!(u64::MAX)), 401),
        ("nbf 1e300", with("nbf", json!(1e300)), 401),
        ("sub number", with("sub", json!(1)), 401),
        ("sub empty", with("sub", json!("")), 401),
        ("iss other", with("iss", json!("https://evil.example")), 401),
        ("iss array of others", with("iss", json!(["x", "y"])), 401),
        ("aud other", with("aud", json!("someone-else")), 401),
        ("tenant object", with("tenant", json!({"a": 1})), 403),
        (
            "tenant huge",
            with("tenant", json!("t".repeat(10_000))),
            403,
        ),
        ("roles huge", with("roles", json!(vec!["r"; 1000])), 200),
        // iat in the future, a lifetime over auth.max_token_lifetime_s.
        ("iat u64::MAX", with("iat", json!(u64::MAX)), 401),
        (
            "exp a year away",
            with("exp", json!(now + 365 * 86_400)),
            401,
        ),
    ];
    for (name, claims, want) in &cases {
        let token = mint(Algorithm::HS256, claims, None);
        for attempt in ["first", "again"] {
            let (status, body) = app.stop(&token, &ids).await;
            assert_eq!(status.as_u16(), *want, "{name} ({attempt}): {body}");
        }
    }
    app.sim.reset_stats();
    still_serves(&app).await;
}

/// A validly signed token whose `exp` is the largest integer: a lifetime
/// far over `auth.max_token_lifetime_s`, refused every time it comes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_with_exp_u64_max_is_refused_every_time() {
    let app = TestApp::spawn().await;
    let ids = app.phones(PROJECT_A, 11, 1);
    let mut c = claims(Some(TENANT_A), &[]);
    c["exp"] = json!(u64::MAX);
    let token = mint(Algorithm::HS256, &c, None);
    for attempt in 1..=3 {
        let (status, body) = app.stop(&token, &ids).await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "attempt {attempt}: {body}"
        );
        assert_eq!(body["error_code"], "CPHGW.0101", "{body}");
    }
    app.sim.reset_stats();
    still_serves(&app).await;
}
