//! Postgres connections have Nagle's algorithm off, as libpq's do: sqlx 0.9 leaves it on, and
//! a statement of more than one TCP segment (a 100-alert delivery, ~76 KB) then waited ~40 ms
//! for the server's delayed ACK. Its own test binary, so no other test's connections to the
//! server are among the sockets it inspects.

#![cfg(target_os = "linux")]

mod support;

use opsbot::store::PostgresStore;
use opsbot::store::nodelay::{has_nodelay, peer_port};

#[tokio::test]
async fn every_connection_of_the_store_has_nodelay() {
    let Some(schema) = support::fresh_postgres_schema().await else {
        return;
    };
    let url = support::postgres_url();
    let port = url::Url::parse(&url)
        .ok()
        .and_then(|u| u.port())
        .unwrap_or(5432);
    let store = PostgresStore::connect(&url, 4, Some(&schema))
        .await
        .expect("connect postgres store");
    let sockets: Vec<i32> = std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|&fd| peer_port(fd) == Some(port))
        .collect();
    assert!(!sockets.is_empty(), "the store holds a connection");
    for fd in sockets {
        assert!(has_nodelay(fd), "fd {fd} to Postgres has Nagle on");
    }
    drop(store);
    support::drop_postgres_schema(&schema).await;
}
