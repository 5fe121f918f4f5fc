//! TLS on the caller listener: served with the configured certificate,
//! a new certificate taken up without a restart (new connections see it),
//! an unusable one ignored, and mTLS refusing clients without a certificate
//! at the handshake.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::tls::{Pem, TestCa, der};
use crate::helpers::*;

struct TlsFiles {
    dir: tempfile::TempDir,
}

impl TlsFiles {
    fn new(server: &Pem) -> Self {
        let files = Self {
            dir: tempfile::tempdir().unwrap(),
        };
        files.write(server);
        files
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// Writes the certificate and key as a deployment tool would: the key
    /// first, then the certificate.
    fn write(&self, server: &Pem) {
        std::fs::write(self.path("tls.key"), &server.key).unwrap();
        std::fs::write(self.path("tls.crt"), &server.cert).unwrap();
    }

    fn options(&self) -> TestOptions {
        TestOptions::default()
            .set("server.tls_cert_file", &self.path("tls.crt"))
            .set("server.tls_key_file", &self.path("tls.key"))
    }
}

/// A client trusting `ca`, with `identity` if given, no connection reuse.
fn client(ca: &TestCa, identity: Option<&Pem>) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .no_proxy()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca.pem().as_bytes()).unwrap())
        .tls_info(true)
        .pool_max_idle_per_host(0);
    if let Some(id) = identity {
        let pem = format!("{}{}", id.cert, id.key);
        b = b.identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap());
    }
    b.build().unwrap()
}

/// A stop of one phone over HTTPS: the status, and the certificate the
/// gateway presented.
async fn stop(
    app: &TestApp,
    client: &reqwest::Client,
    n: u32,
) -> reqwest::Result<(StatusCode, Vec<u8>)> {
    let url = format!("https://localhost:{}{STOP}", app.gateway.addr.port());
    let resp = client
        .post(url)
        .bearer_auth(caller_token(TENANT_A))
        .json(&json!({ "phone_ids": app.phones(PROJECT_A, n, 1) }))
        .send()
        .await?;
    let cert = resp
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|i| i.peer_certificate())
        .map(<[u8]>::to_vec)
        .unwrap_or_default();
    Ok((resp.status(), cert))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_certificate_is_served_without_a_restart() {
    let ca = TestCa::new("listener CA");
    let first = ca.server("gateway-1");
    let files = TlsFiles::new(&first);
    let app = TestApp::spawn_with(files.options()).await;
    let c = client(&ca, None);

    let (status, cert) = stop(&app, &c, 0).await.expect("HTTPS answers");
    assert_eq!(status, StatusCode::OK);
    assert_eq!(cert, der(&first.cert), "the configured certificate");
    // Plain HTTP on the TLS port gets no answer.
    let plain = app
        .client
        .get(format!(
            "http://127.0.0.1:{}{STOP}",
            app.gateway.addr.port()
        ))
        .send()
        .await;
    assert!(plain.is_err() || plain.is_ok_and(|r| r.status() != StatusCode::OK));

    // The certificate is renewed (a new key too): new connections get it.
    let second = ca.server("gateway-2");
    files.write(&second);
    let mut n = 1;
    let renewed = eventually(Duration::from_secs(5), async || {
        n += 1;
        matches!(stop(&app, &c, n).await, Ok((StatusCode::OK, cert)) if cert == der(&second.cert))
    })
    .await;
    assert!(renewed, "the new certificate was not served");

    // A file that cannot be used keeps the last good certificate.
    std::fs::write(files.path("tls.key"), "not a key\n").unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (status, cert) = stop(&app, &c, 100).await.expect("still served");
    assert_eq!(status, StatusCode::OK);
    assert_eq!(cert, der(&second.cert));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_client_ca_a_client_certificate_is_required() {
    let server_ca = TestCa::new("listener CA");
    let client_ca = TestCa::new("client CA");
    let files = TlsFiles::new(&server_ca.server("gateway"));
    std::fs::write(files.path("clients.crt"), client_ca.pem()).unwrap();
    let app = TestApp::spawn_with(
        files
            .options()
            .set("server.client_ca_file", &files.path("clients.crt")),
    )
    .await;

    let good = client_ca.client("billing-service");
    let (status, _) = stop(&app, &client(&server_ca, Some(&good)), 0)
        .await
        .expect("a client with a certificate is served");
    assert_eq!(status, StatusCode::OK);

    // No certificate, or one from another CA: refused at the handshake,
    // before any HTTP.
    let stranger = TestCa::new("other CA").client("stranger");
    for (who, c, alert) in [
        (
            "no certificate",
            client(&server_ca, None),
            "CertificateRequired",
        ),
        (
            "untrusted certificate",
            client(&server_ca, Some(&stranger)),
            "UnknownCA",
        ),
    ] {
        let err = stop(&app, &c, 1).await.expect_err(who);
        // The gateway's TLS alert, received by the client. In TLS 1.3 the
        // client finishes its side of the handshake before the server has
        // judged its certificate, so on a busy machine the client may see
        // the connection closed before it reads the alert; either way no
        // request was served (the simulator's count below).
        let chain = format!("{:?}", std::error::Error::source(&err));
        assert!(
            chain.contains(&format!("AlertReceived({alert})"))
                || chain.contains("Canceled")
                || chain.contains("connection closed"),
            "{who}: {chain}"
        );
    }
    let stats = app.sim.stats();
    assert_eq!(
        stats.batch_stop_requests, 1,
        "only the served client's stop"
    );
}
