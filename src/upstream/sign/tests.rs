//! The signer against the vectors of Huawei's own SDK, and its edge cases.
use super::*;
use serde_json::Value;
use time::{Date, Month, PrimitiveDateTime, Time};

const VECTORS: &str = include_str!("../../../tests/vectors/aksk/vectors.json");

fn vectors() -> Vec<Value> {
    let doc: Value = serde_json::from_str(VECTORS).expect("vectors.json parses");
    assert!(
        doc["generator"]
            .as_str()
            .is_some_and(|g| g.starts_with("huaweicloudsdkcore "))
    );
    let list = doc["vectors"].as_array().expect("vectors array").clone();
    assert!(list.len() >= 10, "expected the full vector set");
    list
}

fn vector(name: &str) -> Value {
    vectors()
        .into_iter()
        .find(|v| v["name"] == name)
        .unwrap_or_else(|| panic!("no vector {name}"))
}

fn s<'v>(v: &'v Value, key: &str) -> &'v str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} missing in {}", v["name"]))
}

/// Splits `scheme://host[:port]/path?query` into (host, path, query).
fn split_url(url: &str) -> (&str, &str, &str) {
    let rest = url.split_once("://").expect("url has a scheme").1;
    let (host, path_query) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let (path, query) = path_query.split_once('?').unwrap_or((path_query, ""));
    (host, path, query)
}

fn header<'v>(v: &'v Value, name: &str) -> Option<&'v str> {
    v["headers"]
        .as_object()
        .expect("headers object")
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, val)| val.as_str().expect("header value is a string"))
}

fn request(v: &Value) -> Request<'_> {
    let (host, path, query) = split_url(s(v, "url"));
    assert_eq!(
        header(v, "host"),
        Some(host),
        "{}: Host header vs URL",
        v["name"]
    );
    Request {
        method: s(v, "method"),
        host,
        path,
        query,
        content_type: header(v, "content-type"),
        project_id: header(v, "x-project-id"),
        security_token: header(v, "x-security-token"),
        body: s(v, "body").as_bytes(),
    }
}

fn check(v: &Value, req: &Request<'_>) {
    let name = &v["name"];
    let date = header(v, "x-sdk-date").expect("X-Sdk-Date header");
    let canonical = canonical_request(req, date);
    assert_eq!(
        canonical,
        s(v, "canonical_request"),
        "{name}: canonical request"
    );
    let sts = string_to_sign(&canonical, date);
    assert_eq!(sts, s(v, "string_to_sign"), "{name}: string to sign");
    let sig = sign_at(s(v, "ak"), s(v, "sk").as_bytes(), req, date).expect("signs");
    assert_eq!(
        sig.authorization,
        s(v, "authorization"),
        "{name}: Authorization"
    );
    assert_eq!(sig.sdk_date, date, "{name}: X-Sdk-Date");

    // The query we tell the caller to send is the canonical one (line 3).
    assert_eq!(
        Some(sig.query.as_str()),
        canonical.split('\n').nth(2),
        "{name}: query"
    );
    assert_eq!(
        sig.content_sha256,
        header(v, "x-sdk-content-sha256"),
        "{name}: X-Sdk-Content-Sha256"
    );

    // Exactly the headers the SDK signed, no more, no less.
    let mut names: Vec<String> = v["headers"]
        .as_object()
        .expect("headers object")
        .keys()
        .map(|k| k.to_ascii_lowercase())
        .collect();
    names.sort();
    assert_eq!(
        signed_headers(req),
        names.join(";"),
        "{name}: signed headers"
    );
}

/// Raw header values the generator passed in where the SDK changed them
/// before recording (stripping); the vectors hold the stripped values.
fn raw_content_type(name: &str) -> Option<&'static str> {
    match name {
        "header-values-trimmed" => Some("application/json;charset=UTF-8 \t"),
        "content-type-leading-space-quirk" => Some(" application/json"),
        _ => None,
    }
}

#[test]
fn every_sdk_vector_matches_byte_for_byte() {
    let all = vectors();
    for v in &all {
        let name = s(v, "name");
        let raw_project = (name == "header-values-trimmed")
            .then(|| format!(" {}  ", header(v, "x-project-id").expect("project id")));
        let mut req = request(v);
        if let Some(ct) = raw_content_type(name) {
            req.content_type = Some(ct);
        }
        if let Some(project) = &raw_project {
            req.project_id = Some(project);
        }
        check(v, &req);
    }
}

#[test]
fn stripping_happens_after_the_json_check() {
    // Stripped, the quirk vector's Content-Type would be hashed normally;
    // raw, its leading space makes the body unsigned, as in the SDK.
    let v = vector("content-type-leading-space-quirk");
    assert!(!request(&v).unsigned_payload());
    let req = Request {
        content_type: raw_content_type(s(&v, "name")),
        ..request(&v)
    };
    assert!(req.unsigned_payload());
    check(&v, &req);
    let trimmed = Request {
        content_type: Some("application/json \t"),
        ..request(&v)
    };
    assert!(!trimmed.unsigned_payload());
}

fn base() -> Request<'static> {
    Request {
        method: "POST",
        host: "cph.cn-east-3.myhuaweicloud.com",
        path: "/v1/p/cloud-phone/phones/batch-stop",
        query: "",
        content_type: Some("application/json"),
        project_id: Some("p"),
        security_token: None,
        body: br#"{"phone_ids":["a"]}"#,
    }
}

#[test]
fn sdk_date_is_utc_and_zero_padded() {
    let at = |y, mo, d, h, mi, s| {
        let date = Date::from_calendar_date(y, mo, d).expect("date");
        let time = Time::from_hms(h, mi, s).expect("time");
        PrimitiveDateTime::new(date, time)
    };
    assert_eq!(
        sdk_date(at(2026, Month::November, 30, 8, 0, 0).assume_utc()),
        "20261130T080000Z"
    );
    assert_eq!(
        sdk_date(at(2026, Month::January, 2, 3, 4, 5).assume_utc()),
        "20260102T030405Z"
    );
    let plus8 = UtcOffset::from_hms(8, 0, 0).expect("offset");
    assert_eq!(
        sdk_date(at(2026, Month::December, 1, 7, 59, 59).assume_offset(plus8)),
        "20261130T235959Z"
    );
    let now = OffsetDateTime::now_utc();
    assert!(valid_sdk_date(&sdk_date(now)));
}

#[test]
fn sign_uses_the_formatted_date() {
    let now = PrimitiveDateTime::new(
        Date::from_calendar_date(2026, Month::November, 30).expect("date"),
        Time::from_hms(8, 0, 0).expect("time"),
    )
    .assume_utc();
    let a = sign("AK", b"SK", &base(), now).expect("signs");
    let b = sign_at("AK", b"SK", &base(), "20261130T080000Z").expect("signs");
    assert_eq!(a, b);
    assert_eq!(a.sdk_date, "20261130T080000Z");
}

#[test]
fn any_change_changes_the_signature() {
    let date = "20261130T080000Z";
    let sig =
        |req: &Request<'_>, sk: &[u8]| sign_at("AK", sk, req, date).expect("signs").authorization;
    let reference = sig(&base(), b"SK");
    let changed = [
        sig(
            &Request {
                body: br#"{"phone_ids":["b"]}"#,
                ..base()
            },
            b"SK",
        ),
        sig(
            &Request {
                body: b"",
                ..base()
            },
            b"SK",
        ),
        sig(
            &Request {
                path: "/v1/p/cloud-phone/phones/batch-stop/x",
                ..base()
            },
            b"SK",
        ),
        sig(
            &Request {
                query: "a=1",
                ..base()
            },
            b"SK",
        ),
        sig(
            &Request {
                host: "cph.cn-north-4.myhuaweicloud.com",
                ..base()
            },
            b"SK",
        ),
        sig(
            &Request {
                project_id: Some("q"),
                ..base()
            },
            b"SK",
        ),
        sig(
            &Request {
                security_token: Some("t"),
                ..base()
            },
            b"SK",
        ),
        sig(
            &Request {
                method: "PUT",
                ..base()
            },
            b"SK",
        ),
        sig(&base(), b"SK2"),
    ];
    for (i, c) in changed.iter().enumerate() {
        assert_ne!(c, &reference, "change #{i} did not change the signature");
    }
    // Cosmetic differences the SDK ignores do not change it.
    assert_eq!(
        sig(
            &Request {
                method: "post",
                ..base()
            },
            b"SK"
        ),
        reference
    );
    assert_eq!(
        sig(
            &Request {
                path: "/v1/p/cloud-phone/phones/batch-stop/",
                ..base()
            },
            b"SK"
        ),
        reference
    );
}

#[test]
fn canonical_query_rules() {
    assert_eq!(canonical_query(""), "");
    assert_eq!(canonical_query("&&"), "");
    assert_eq!(canonical_query("b=2&a=1"), "a=1&b=2");
    assert_eq!(canonical_query("a=2&a=10&a=1"), "a=1&a=10&a=2");
    assert_eq!(canonical_query("flag&e="), "e=&flag=");
    assert_eq!(canonical_query("k=a b+c*~"), "k=a%20b%2Bc%2A~");
    assert_eq!(canonical_query("k=a%2Cb,c"), "k=a%2Cb%2Cc");
    assert_eq!(canonical_query("x=1=2"), "x=1%3D2");
    // Sorted on decoded text: '.' (0x2E) before '/' (0x2F) though "%2F" < ".".
    assert_eq!(canonical_query("k=%2F&k=."), "k=.&k=%2F");
    // Idempotent: the canonical form is what gets sent.
    let once = canonical_query("request_ids=a,b,c&offset=0&limit=100&n=%E6%89%8B%20x");
    assert_eq!(canonical_query(&once), once);
    // Malformed escapes stay literal, invalid UTF-8 becomes U+FFFD.
    assert_eq!(canonical_query("k=%zz&j=%FF"), "j=%EF%BF%BD&k=%25zz");
}

#[test]
fn canonical_uri_rules() {
    assert_eq!(canonical_uri(""), "/");
    assert_eq!(canonical_uri("/"), "/");
    assert_eq!(canonical_uri("/a/b"), "/a/b/");
    assert_eq!(canonical_uri("/a/b/"), "/a/b/");
    assert_eq!(canonical_uri("/a%2Fb"), "/a/b/");
    assert_eq!(canonical_uri("/a b/手"), "/a%20b/%E6%89%8B/");
    assert_eq!(canonical_uri("//x"), "//x/");
}

#[test]
fn rejects_bad_input_without_panicking() {
    let date = "20261130T080000Z";
    assert_eq!(
        sign_at("", b"SK", &base(), date),
        Err(SignError::EmptyAccessKey)
    );
    assert_eq!(
        sign_at("AK", b"", &base(), date),
        Err(SignError::EmptySecretKey)
    );
    for bad in [
        "",
        "2026-11-30T08:00:00Z",
        "20261130T080000",
        "20261130 080000Z",
    ] {
        assert_eq!(
            sign_at("AK", b"SK", &base(), bad),
            Err(SignError::InvalidSdkDate),
            "{bad:?}"
        );
    }
    let req = Request {
        security_token: Some("t\r\nX-Evil: 1"),
        ..base()
    };
    assert_eq!(
        sign_at("AK", b"SK", &req, date),
        Err(SignError::InvalidValue("x-security-token"))
    );
    assert_eq!(
        sign_at("A\nK", b"SK", &base(), date),
        Err(SignError::InvalidValue("access key"))
    );
    // Any key length is fine for HMAC.
    assert!(sign_at("AK", &[7u8; 1000], &base(), date).is_ok());
    assert!(!SignError::Hmac.to_string().is_empty());
}
