#!/usr/bin/env python3
"""Generate AK/SK ("SDK-HMAC-SHA256") signing test vectors with Huawei Cloud's
official Python SDK core (huaweicloudsdkcore).

Every signature here comes from the SDK's own code: a `BasicCredentials`
object signs an `SdkRequest` through `BasicCredentials.sign_request`, exactly as
the SDK's HTTP client does before sending a call. That path adds X-Project-Id
and X-Security-Token, and `Signer.sign` adds Host and reads X-Sdk-Date. The
canonical request and string to sign are recorded by wrapping the SDK's own
`Signer._process_canonical_request` / `Signer._process_string_to_sign`, which
the SDK calls while signing. No part of the algorithm is reimplemented here.

The output is deterministic: fixed keys, fixed X-Sdk-Date.

    pip install huaweicloudsdkcore==3.1.219
    python3 tests/vectors/aksk/generate.py

Input conventions (which the Rust signer's tests follow):
- `url` is the URL as the caller writes it; its query is split on '&', then on
  the first '=' (a key without '=' has the value ""), and each part is
  percent-decoded (a '+' stays a '+'). The SDK gets those (key, value) pairs as
  its `query_params`, just as its generated clients pass them.
- `headers` lists every header the SDK signed, with the value it signed, under
  the name the request carried (so case may vary).
"""

import json
import os
import sys
from importlib.metadata import version
from urllib.parse import unquote, urlsplit

from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.sdk_request import SdkRequest
from huaweicloudsdkcore.signer.signer import Signer

SDK = "huaweicloudsdkcore"
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "vectors.json")

DATE = "20261130T080000Z"
AK = "HPUAEXAMPLEAK0000001"
SK = "ExampleSecretKey0123456789abcdefghijklmn"
PROJECT = "0a1b2c3d4e5f60718293a4b5c6d7e8f9"
HOST = "cph.cn-east-3.myhuaweicloud.com"
BASE = "https://" + HOST
JSON = "application/json"

# Temporary AK/SK as STS returns them: an access key, a secret and a token.
TMP_AK = "TMPAKEXAMPLE00000002"
TMP_SK = "TmpSecretKeyExample/+=9876543210zyxwvu"
TMP_TOKEN = "gQpjbi1lYXN0LTMfake-security-token/with+symbols=="

BATCH_STOP = "/v1/%s/cloud-phone/phones/batch-stop" % PROJECT
JOBS = "/v1/%s/cloud-phone/jobs" % PROJECT


def cases():
    # name, method, url, headers given by the caller (besides what the SDK
    # adds), body, ak, sk, project id handed to BasicCredentials, token
    std = {"Content-Type": JSON, "X-Sdk-Date": DATE}
    return [
        ("batch-stop-json-body", "POST", BASE + BATCH_STOP, dict(std),
         '{"phone_ids":["b7a1d7c6e2f34a5b8c9d0e1f2a3b4c5d","c8b2e8d7f3a45b6c9d0e1f2a3b4c5d6e"]}',
         AK, SK, PROJECT, None),
        ("batch-stop-trailing-slash", "POST", BASE + BATCH_STOP + "/", dict(std),
         '{"phone_ids":["b7a1d7c6e2f34a5b8c9d0e1f2a3b4c5d"]}',
         AK, SK, PROJECT, None),
        ("job-get-empty-body", "GET", BASE + JOBS + "/8abf5e4b7c0d4e2f9a1b3c5d7e9f0a1b", dict(std),
         "", AK, SK, PROJECT, None),
        ("job-get-no-content-type", "GET", BASE + JOBS + "/8abf5e4b7c0d4e2f9a1b3c5d7e9f0a1b",
         {"X-Sdk-Date": DATE}, "", AK, SK, PROJECT, None),
        ("job-list-query", "GET",
         BASE + JOBS + "?request_ids=a,b,c&offset=0&limit=100", dict(std),
         "", AK, SK, PROJECT, None),
        ("query-escaping-repeats-empty", "GET",
         BASE + JOBS + "?name=cloud%20phone*~&tag=x+y%2Bz&a=2&a=10&a=1&empty=&flag"
                       "&%E6%89%8B%E6%9C%BA=%E6%89%8B%E6%9C%BA-1&dot.key=a/b&Z=upper",
         dict(std), "", AK, SK, PROJECT, None),
        ("path-escaping", "GET",
         BASE + JOBS + "/job%20id:1(%E6%89%8B)", dict(std), "", AK, SK, PROJECT, None),
        ("unicode-body", "POST", BASE + BATCH_STOP, dict(std),
         '{"phone_ids":["手机-1"]}', AK, SK, PROJECT, None),
        ("security-token-temporary-aksk", "POST", BASE + BATCH_STOP, dict(std),
         '{"phone_ids":["b7a1d7c6e2f34a5b8c9d0e1f2a3b4c5d"]}',
         TMP_AK, TMP_SK, PROJECT, TMP_TOKEN),
        ("security-token-get-query", "GET",
         BASE + JOBS + "?request_ids=r1&limit=20", dict(std), "",
         TMP_AK, TMP_SK, PROJECT, TMP_TOKEN),
        # The caller sets the headers itself, in lower/mixed case (no project id
        # handed to the credentials, so the SDK does not add X-Project-Id).
        ("mixed-case-headers", "post", BASE + BATCH_STOP,
         {"content-type": JSON, "HOST": HOST, "x-PROJECT-id": PROJECT, "x-sdk-date": DATE},
         '{"phone_ids":["b7a1d7c6e2f34a5b8c9d0e1f2a3b4c5d"]}', AK, SK, None, None),
        # Signed values are stripped of surrounding whitespace ...
        ("header-values-trimmed", "POST", BASE + BATCH_STOP,
         {"Content-Type": "application/json;charset=UTF-8 \t", "X-Sdk-Date": DATE},
         '{"phone_ids":[]}', AK, SK, " %s  " % PROJECT, None),
        # ... but the JSON/BSON test that decides on UNSIGNED-PAYLOAD looks at
        # the raw value, so leading whitespace makes the SDK skip the body hash.
        ("content-type-leading-space-quirk", "POST", BASE + BATCH_STOP,
         {"Content-Type": " application/json", "X-Sdk-Date": DATE},
         '{"phone_ids":[]}', AK, SK, PROJECT, None),
        ("host-with-port-no-project", "POST", "http://127.0.0.1:18080" + BATCH_STOP, dict(std),
         '{"phone_ids":["p1"]}', AK, SK, None, None),
        # A non-JSON content type makes the SDK add and sign
        # X-Sdk-Content-Sha256: UNSIGNED-PAYLOAD instead of hashing the body.
        ("non-json-unsigned-payload", "POST", BASE + BATCH_STOP,
         {"Content-Type": "text/plain", "X-Sdk-Date": DATE}, "phone_ids=p1",
         AK, SK, PROJECT, None),
    ]


def parse_query(query):
    pairs = []
    for part in query.split("&"):
        if part == "":
            continue
        key, _, value = part.partition("=")
        pairs.append((unquote(key), unquote(value)))
    return pairs


def main():
    captured = {}
    orig_canonical = Signer._process_canonical_request
    orig_sts = Signer._process_string_to_sign

    def spy_canonical(self, request, signed_headers):
        captured["canonical_request"] = orig_canonical(self, request, signed_headers)
        return captured["canonical_request"]

    def spy_sts(self, canonical_request, t):
        captured["string_to_sign"] = orig_sts(self, canonical_request, t)
        return captured["string_to_sign"]

    Signer._process_canonical_request = spy_canonical
    Signer._process_string_to_sign = spy_sts

    vectors = []
    for name, method, url, headers, body, ak, sk, project, token in cases():
        captured.clear()
        parts = urlsplit(url)
        request = SdkRequest(
            method=method, schema=parts.scheme, host=parts.netloc,
            resource_path=parts.path, query_params=parse_query(parts.query),
            header_params=dict(headers), body=body)
        creds = BasicCredentials(ak, sk, project)
        if token is not None:
            creds = creds.with_security_token(token)
        signed = creds.sign_request(request)

        authorization = signed.header_params["Authorization"]
        names = authorization.split("SignedHeaders=", 1)[1].split(",", 1)[0].split(";")
        sent = {k: v for k, v in signed.header_params.items() if k.lower() in names}
        assert sorted(k.lower() for k in sent) == names, (name, sent, names)
        if signed.body:
            assert signed.body == body.encode("utf-8"), name

        vectors.append({
            "name": name,
            "method": method,
            "url": url,
            "headers": sent,
            "body": body,
            "ak": ak,
            "sk": sk,
            "canonical_request": captured["canonical_request"],
            "string_to_sign": captured["string_to_sign"],
            "authorization": authorization,
        })

    doc = {"generator": "%s %s (python %d.%d)" % (SDK, version(SDK), *sys.version_info[:2]),
           "vectors": vectors}
    with open(OUT, "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False, indent=2)
        f.write("\n")
    print("wrote %d vectors to %s" % (len(vectors), OUT))


if __name__ == "__main__":
    main()
