//! Connection handling: resets.

use super::*;
use std::io;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends one raw batch-stop on a fresh connection and reads until the end.
async fn raw_batch_stop(sim: &Sim, token: &str, close: bool) -> io::Result<Vec<u8>> {
    let body = format!(r#"{{"phone_ids":["{}"]}}"#, phone_id(PROJECT, 0));
    let connection = if close { "close" } else { "keep-alive" };
    let req = format!(
        "POST /v1/{PROJECT}/cloud-phone/phones/batch-stop HTTP/1.1\r\nhost: sim\r\n\
         x-auth-token: {token}\r\nconnection: {connection}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut stream = TcpStream::connect(sim.addr()).await?;
    stream.write_all(req.as_bytes()).await?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.map(|_| answer)
}

#[tokio::test]
async fn reset_fault_sends_rst_and_normal_closes_do_not() {
    let sim = Sim::start(opts()).await.unwrap();
    let t = token(&client(), &sim, PROJECT).await;

    let answer = raw_batch_stop(&sim, &t, true).await.unwrap();
    let answer = String::from_utf8(answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("}]}"), "{answer}");

    sim.set_faults(Faults {
        reset_rate: 1.0,
        ..Faults::default()
    });
    let err = raw_batch_stop(&sim, &t, false).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionReset, "{err}");
    assert_eq!(sim.stats().stopped_phones, 1);
}
