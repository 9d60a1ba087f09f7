//! The admin listener: health and Prometheus metrics.

use tests::clients::{connect_tls, http_get as get, metric};
use tests::sluice::SluiceConfig;

#[tokio::test]
async fn healthz_answers_ok_and_unknown_paths_404() {
    let s = SluiceConfig::default().start().await;
    assert_eq!(
        get(s.admin, "/healthz").await,
        ("HTTP/1.1 200 OK".into(), "ok\n".into())
    );
    assert_eq!(get(s.admin, "/readyz").await.0, "HTTP/1.1 200 OK");
    assert_eq!(get(s.admin, "/nope").await.0, "HTTP/1.1 404 Not Found");
}

#[tokio::test]
async fn metrics_move_after_real_queries() {
    let s = SluiceConfig::default().start().await;
    let (_, before) = get(s.admin, "/metrics").await;
    let c = connect_tls(&s.conninfo("alice", "app", "require"), &s.prepared.pki)
        .await
        .unwrap();
    c.simple_query("SELECT 1").await.unwrap();
    c.query("SELECT name FROM items", &[]).await.unwrap();
    let _ = c.simple_query("SELECT * FROM nowhere").await;
    let bad = s
        .conninfo("alice", "app", "require")
        .replace("password=", "password=x");
    let _ = connect_tls(&bad, &s.prepared.pki).await;
    let (status, after) = get(s.admin, "/metrics").await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    let delta = |prefix: &str| metric(&after, prefix) - metric(&before, prefix);
    assert!(
        delta("sluice_queries_total{protocol=\"postgres\",outcome=\"ok\"}") >= 2.0,
        "{after}"
    );
    assert!(
        delta("sluice_queries_total{protocol=\"postgres\",outcome=\"error\"}") >= 1.0,
        "{after}"
    );
    assert!(
        delta("sluice_connections_accepted_total{protocol=\"postgres\"}") >= 2.0,
        "{after}"
    );
    assert!(
        delta("sluice_auth_failures_total{protocol=\"postgres\"") >= 1.0,
        "{after}"
    );
    assert!(
        delta("sluice_query_duration_seconds_count{protocol=\"postgres\"}") >= 3.0,
        "{after}"
    );
    assert!(
        after.contains("sluice_connections_active{protocol=\"postgres\"}"),
        "{after}"
    );
}
