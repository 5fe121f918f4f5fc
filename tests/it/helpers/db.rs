//! A PostgreSQL database of its own per test (random name, dropped at the
//! end), on the server `CPHGW_TEST_DATABASE_URL` names (default: the local
//! one). Without a reachable server the store tests are skipped with a
//! notice, unless `CPHGW_REQUIRE_STORE_TESTS=1` (CI), where they fail.

use std::time::Duration;

use sqlx::Connection;
use sqlx::postgres::PgConnection;

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A database that exists for the life of the value.
pub struct TestDb {
    /// `postgres://…/cphgw_test_…`
    pub url: String,
    server: String,
    name: String,
}

impl TestDb {
    /// A new empty database, or `None` (with a notice) when no server can
    /// be reached and store tests are not required.
    pub async fn create() -> Option<Self> {
        let server =
            std::env::var("CPHGW_TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_URL.into());
        let required = std::env::var("CPHGW_REQUIRE_STORE_TESTS").is_ok_and(|v| v == "1");
        let mut conn = match tokio::time::timeout(
            Duration::from_secs(5),
            PgConnection::connect(&server),
        )
        .await
        {
            Ok(Ok(c)) => c,
            Ok(Err(e)) if !required => {
                eprintln!("NOTICE: store test skipped: no PostgreSQL at {server}: {e}");
                return None;
            }
            Err(_) if !required => {
                eprintln!("NOTICE: store test skipped: PostgreSQL at {server} does not answer");
                return None;
            }
            Ok(Err(e)) => panic!("CPHGW_REQUIRE_STORE_TESTS=1 but no PostgreSQL at {server}: {e}"),
            Err(_) => {
                panic!("CPHGW_REQUIRE_STORE_TESTS=1 but PostgreSQL at {server} does not answer")
            }
        };
        let name = format!("cphgw_test_{}", hex::encode(rand::random::<[u8; 8]>()));
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .expect("create the test database");
        let _ = conn.close().await;
        let url = match server.rfind('/') {
            Some(i) if server[..i].contains("://") && i > server.find("://").unwrap_or(0) + 2 => {
                format!("{}/{name}", &server[..i])
            }
            _ => format!("{server}/{name}"),
        };
        Some(Self { url, server, name })
    }

    /// A connection of the test's own (to look at or change rows directly).
    pub async fn connect(&self) -> PgConnection {
        PgConnection::connect(&self.url)
            .await
            .expect("connect to the test database")
    }

    /// The URL with another host and port (e.g. a proxy in front of it).
    pub fn url_via(&self, addr: std::net::SocketAddr) -> String {
        let rest = self.url.split_once("://").map_or("", |(_, r)| r);
        let (auth, path) = rest.split_once('/').unwrap_or((rest, ""));
        let user = auth
            .rsplit_once('@')
            .map_or(String::new(), |(u, _)| format!("{u}@"));
        format!("postgres://{user}{addr}/{path}")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let (server, name) = (self.server.clone(), self.name.clone());
        // Drop runs outside any runtime the test may still be using.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                if let Ok(mut conn) = PgConnection::connect(&server).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut conn)
                        .await;
                }
            });
        })
        .join();
    }
}
