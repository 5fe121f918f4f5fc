//! The direct client against a loopback HTTP/1.1 server.

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;

/// A loopback HTTP/1.1 server answering each request `answer`; with
/// `close`, it closes each connection after its first answer. Counts
/// the connections it accepted.
async fn server(answer: &'static str, close: bool) -> (reqwest::Url, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1/p/x", listener.local_addr().unwrap());
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        loop {
            let (mut sock, _) = listener.accept().await.unwrap();
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let mut chunk = [0u8; 4096];
                    let n = match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    buf.extend_from_slice(&chunk[..n]);
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .map_or(0, |v| v.trim().parse().unwrap());
                    if buf.len() < end + 4 + len {
                        continue;
                    }
                    buf.drain(..end + 4 + len);
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{answer}",
                        answer.len()
                    );
                    sock.write_all(resp.as_bytes()).await.unwrap();
                    if close {
                        return;
                    }
                }
            });
        }
    });
    (reqwest::Url::parse(&url).unwrap(), accepted)
}

/// The upstream config of a config file with `[upstream]` `extra`.
fn upstream(extra: &str) -> UpstreamConfig {
    let env: std::collections::BTreeMap<String, String> =
        [("S".into(), "0123456789abcdef0123456789abcdef".into())].into();
    let toml =
        format!("[auth]\nissuer = \"https://idp\"\nhs256_secret_env = \"S\"\n[upstream]\n{extra}");
    crate::config::Config::from_toml(&toml, &env)
        .unwrap()
        .upstream
}

fn client() -> DirectClient {
    DirectClient::new(&upstream(""))
        .unwrap()
        .expect("no proxy configured")
}

async fn post(client: &DirectClient, target: &Target, limit: usize) -> Result<Bytes, CallError> {
    let (resp, lease) = client
        .post_json(target, HeaderMap::new(), b"{}".to_vec())
        .await?;
    read_body(resp, lease, limit).await.map(|(_, _, b)| b)
}

#[tokio::test]
async fn calls_one_after_another_share_one_connection() {
    let (url, accepted) = server(r#"{"jobs":[]}"#, false).await;
    let client = client();
    let target = client.target(&url).unwrap();
    for _ in 0..5 {
        let body = post(&client, &target, 1024).await.unwrap();
        assert_eq!(&body[..], br#"{"jobs":[]}"#);
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    assert_eq!(target.origin.idle_count(), 1);
}

#[tokio::test]
async fn a_connection_the_server_closed_is_not_used_again() {
    let (url, accepted) = server(r#"{"jobs":[]}"#, true).await;
    let client = client();
    let target = client.target(&url).unwrap();
    for i in 0..3 {
        post(&client, &target, 1024)
            .await
            .unwrap_or_else(|e| panic!("call {i}: {e:?}"));
        // Either the closed connection is seen as closed when taken,
        // or the request comes back unsent and goes on a new one.
        tokio::time::sleep(Duration::from_millis(if i == 0 { 50 } else { 0 })).await;
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn an_answer_over_the_limit_is_refused_and_its_connection_dropped() {
    let (url, _) = server(r#"{"jobs":["a long answer"]}"#, false).await;
    let client = client();
    let target = client.target(&url).unwrap();
    match post(&client, &target, 8).await {
        Err(CallError::TooLarge { limit: 8 }) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(target.origin.idle_count(), 0);
}

#[tokio::test]
async fn nothing_listening_means_not_sent() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1/p/x", listener.local_addr().unwrap());
    drop(listener);
    let client = client();
    let target = client.target(&reqwest::Url::parse(&url).unwrap()).unwrap();
    match post(&client, &target, 1024).await {
        Err(CallError::NotSent(msg)) => assert!(msg.starts_with("connection failed"), "{msg}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_proxy_leaves_every_call_to_the_general_client() {
    let cfg = upstream("proxy = \"http://proxy:3128\"\n");
    assert!(DirectClient::new(&cfg).unwrap().is_none());
}

#[tokio::test]
async fn each_serving_thread_keeps_its_own_connections() {
    let (url, accepted) = server(r#"{"jobs":[]}"#, false).await;
    let client = client();
    let target = client.target(&url).unwrap();
    // This test's thread stands for two serving threads in turn.
    post(&client, &target, 1024).await.unwrap();
    use_pool(1);
    post(&client, &target, 1024).await.unwrap();
    post(&client, &target, 1024).await.unwrap();
    assert_eq!(accepted.load(Ordering::SeqCst), 2, "pool 1 made its own");
    use_pool(0);
    post(&client, &target, 1024).await.unwrap();
    assert_eq!(accepted.load(Ordering::SeqCst), 2, "pool 0 kept its own");
    assert_eq!(target.origin.idle_count(), 2);
    // A pool beyond the count wraps round to one that exists.
    use_pool(pool_count());
    post(&client, &target, 1024).await.unwrap();
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
    use_pool(0);
}
