//! HTTPS with an rcgen certificate.

use super::*;
use crate::SimTls;

fn localhost_cert() -> SimTls {
    let rcgen::CertifiedKey { cert, key_pair } =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    SimTls {
        cert_pem: cert.pem().into_bytes(),
        key_pem: key_pair.serialize_pem().into_bytes(),
    }
}

#[tokio::test]
async fn serves_https_with_the_given_certificate() {
    let tls = localhost_cert();
    let sim = Sim::start(SimOptions {
        tls: Some(tls.clone()),
        ..opts()
    })
    .await
    .unwrap();
    let url = sim.url();
    assert_eq!(url, format!("https://localhost:{}", sim.addr().port()));
    let c = reqwest::Client::builder()
        .no_proxy()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&tls.cert_pem).unwrap())
        .build()
        .unwrap();
    let t = token(&c, &sim, PROJECT).await;
    let p = phone_id(PROJECT, 1);
    let res = stop_call(&c, &sim, &t, PROJECT, &[&p]).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(sim.phone_state(PROJECT, &p), Some(PhoneState::Stopping));
    // Signatures over HTTPS sign the `localhost:PORT` host.
    let (status, body) = signed_stop(&c, &sim, PROJECT, &[&phone_id(PROJECT, 2)]).await;
    assert_eq!(status, 200, "{body}");

    // A client that does not trust the certificate fails the handshake,
    // and plain HTTP gets no answer; the server keeps serving.
    let untrusting = reqwest::Client::builder().no_proxy().build().unwrap();
    assert!(
        untrusting
            .get(format!("{url}/sim/v1/stats"))
            .send()
            .await
            .is_err()
    );
    let plain = format!("http://127.0.0.1:{}/sim/v1/stats", sim.addr().port());
    assert!(client().get(plain).send().await.is_err());
    let res = c.get(format!("{url}/sim/v1/stats")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    sim.shutdown().await;
}

#[tokio::test]
async fn unusable_certificates_are_refused_at_start() {
    let good = localhost_cert();
    for tls in [
        SimTls {
            cert_pem: b"not pem".to_vec(),
            ..good.clone()
        },
        SimTls {
            key_pem: b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n".to_vec(),
            ..good.clone()
        },
        SimTls {
            key_pem: localhost_cert().key_pem,
            ..good.clone()
        },
    ] {
        let err = Sim::start(SimOptions {
            tls: Some(tls),
            ..opts()
        })
        .await
        .unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput, "{err}");
        assert!(err.to_string().starts_with("sim TLS"), "{err}");
    }
}
