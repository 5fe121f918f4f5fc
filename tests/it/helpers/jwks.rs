//! A real JWKS endpoint for tests: an axum app on loopback port 0 whose
//! answer (status, body, `Cache-Control`) can be switched at run time; it
//! counts fetches and can hang.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use super::keys_dir;

/// A JWKS endpoint whose answer can be switched at run time; counts fetches.
pub struct JwksServer {
    pub url: String,
    pub state: Arc<JwksState>,
    task: tokio::task::JoinHandle<()>,
}

pub struct JwksState {
    /// (HTTP status, body) of the next answers.
    answer: Mutex<(u16, String)>,
    /// `Cache-Control` of the next answers, if any.
    cache_control: Mutex<Option<String>>,
    fetches: AtomicU64,
    /// Accept requests but never answer them.
    pub hang: AtomicBool,
}

impl JwksServer {
    pub async fn start(body: String) -> Self {
        let state = Arc::new(JwksState {
            answer: Mutex::new((200, body)),
            cache_control: Mutex::new(None),
            fetches: AtomicU64::new(0),
            hang: AtomicBool::new(false),
        });
        let shared = state.clone();
        let router = axum::Router::new().route(
            "/jwks.json",
            axum::routing::get(move || {
                let shared = shared.clone();
                async move {
                    shared.fetches.fetch_add(1, Ordering::SeqCst);
                    if shared.hang.load(Ordering::SeqCst) {
                        std::future::pending::<()>().await;
                    }
                    let (status, body) = shared.answer.lock().expect("jwks state").clone();
                    let mut headers = axum::http::HeaderMap::new();
                    headers.insert(
                        axum::http::header::CONTENT_TYPE,
                        axum::http::HeaderValue::from_static("application/json"),
                    );
                    if let Some(cc) = shared.cache_control.lock().expect("jwks state").clone() {
                        headers.insert(
                            axum::http::header::CACHE_CONTROL,
                            cc.parse().expect("header value"),
                        );
                    }
                    (
                        axum::http::StatusCode::from_u16(status).expect("status"),
                        headers,
                        body,
                    )
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            axum::serve(listener, router).await.expect("jwks server");
        });
        Self {
            url: format!("http://{addr}/jwks.json"),
            state,
            task,
        }
    }

    pub fn set(&self, status: u16, body: String) {
        *self.state.answer.lock().expect("jwks state") = (status, body);
    }

    pub fn set_cache_control(&self, value: Option<&str>) {
        *self.state.cache_control.lock().expect("jwks state") = value.map(str::to_owned);
    }

    pub fn fetches(&self) -> u64 {
        self.state.fetches.load(Ordering::SeqCst)
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The JWK in `tests/keys/{file}`.
pub fn jwk(file: &str) -> Value {
    let text = std::fs::read_to_string(keys_dir().join(file)).expect("jwk file");
    serde_json::from_str(&text).expect("jwk JSON")
}

/// A JWKS of the JWKs in `tests/keys/{files}`.
pub fn jwks(files: &[&str]) -> String {
    json!({"keys": files.iter().map(|f| jwk(f)).collect::<Vec<_>>()}).to_string()
}
