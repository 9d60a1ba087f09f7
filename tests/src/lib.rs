//! End-to-end test harness: certificates made at test time, sluice started in-process on
//! port 0 (or as a process, for signal tests), and ephemeral PostgreSQL, MariaDB and Redis
//! servers in temp dirs on free loopback ports. Nothing here uses the servers already
//! running on the machine or their default ports.

pub mod certs;
pub mod clients;
pub mod servers;
pub mod sluice;

use std::time::{Duration, Instant};

/// Polls `check` until it returns `Some`, or panics after `limit` naming `what`.
pub async fn wait_for<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A free TCP port on 127.0.0.1 (bound and released; servers that need a number get it).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

/// A name no other call in this process returns (databases of the shared servers: a
/// free port number may come up twice).
pub fn unique_name(prefix: &str) -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{prefix}_{}_{n}", std::process::id())
}

/// Reads the audit log until it holds `n` events.
pub async fn audit_events(log: &std::path::Path, n: usize) -> Vec<serde_json::Value> {
    let mut events = Vec::new();
    for _ in 0..100 {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        events = text
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .collect();
        if events.len() >= n {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    events
}
