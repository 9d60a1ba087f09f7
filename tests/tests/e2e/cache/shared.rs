//! Instances sharing one Redis or Redis Cluster: writes through one seen by the others at
//! once, Redis trouble, and the write-then-read race.

use super::*;

#[tokio::test]
async fn two_instances_share_redis_and_a_write_through_one_is_seen_by_the_other() {
    let (pg, db, owner) = fixture().await;
    let mut redis = Redis::start().await;
    let a = sluice(&pg, &db, Some(&redis), "").await;
    let b = sluice(&pg, &db, Some(&redis), "").await;
    let (ca, cb) = (client(&a).await, client(&b).await);
    assert_eq!(value(&cb, READ).await, "a");
    stored().await;
    owner
        .batch_execute("UPDATE app.t SET v = 'behind' WHERE id = 1")
        .await
        .unwrap();
    // a's first read finds b's entry in Redis
    assert_eq!(value(&ca, READ).await, "a");
    ca.simple_query("UPDATE app.t SET v = 'b' WHERE id = 1")
        .await
        .unwrap();
    assert_eq!(value(&cb, READ).await, "b");

    // Redis gone: no client error, reads and writes go to the backend
    redis.kill();
    for i in 0..20 {
        ca.simple_query(&format!("UPDATE app.t SET v = 'down{i}' WHERE id = 1"))
            .await
            .unwrap();
        assert_eq!(value(&cb, READ).await, format!("down{i}"));
    }
    // back (empty): nothing stale is served, and caching resumes
    redis.restart().await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    ca.simple_query("UPDATE app.t SET v = 'up' WHERE id = 1")
        .await
        .unwrap();
    for _ in 0..5 {
        assert_eq!(value(&cb, READ).await, "up");
        assert_eq!(value(&ca, READ).await, "up");
    }
    let (_, metrics) = tests::clients::http_get(b.admin, "/metrics").await;
    assert!(metrics.contains("sluice_cache_errors_total"), "{metrics}");
}

#[tokio::test]
async fn no_read_after_a_completed_write_returns_the_old_value() {
    let (pg, db, owner) = fixture().await;
    let redis = Redis::start().await;
    let a = sluice(&pg, &db, Some(&redis), "").await;
    let b = sluice(&pg, &db, Some(&redis), "").await;
    owner
        .batch_execute("INSERT INTO app.t SELECT g, '-1' FROM generate_series(10, 13) g")
        .await
        .unwrap();
    let mut tasks = Vec::new();
    // four writer/reader pairs, each on its own row, crossing instances both ways
    for pair in 0..4 {
        let (w, r) = if pair % 2 == 0 { (&a, &b) } else { (&b, &a) };
        let (writer, reader) = (client(w).await, client(r).await);
        tasks.push(tokio::spawn(async move {
            let read = format!("SELECT v FROM app.t WHERE id = {}", 10 + pair);
            for round in 0..2500 {
                writer
                    .simple_query(&format!(
                        "UPDATE app.t SET v = '{round}' WHERE id = {}",
                        10 + pair
                    ))
                    .await
                    .unwrap();
                let seen: i64 = value(&reader, &read).await.parse().unwrap();
                assert!(
                    seen >= round,
                    "pair {pair}: read {seen} after writing {round}"
                );
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test]
async fn two_instances_share_a_redis_cluster() {
    let (pg, db, owner) = fixture().await;
    let cluster = tests::servers::RedisCluster::start().await;
    let urls: Vec<String> = cluster.urls().iter().map(|u| format!("\"{u}\"")).collect();
    let store = format!(
        "[cache]\nredis_cluster = [{}]\ntimeout_ms = 500\n",
        urls.join(", ")
    );
    let a = sluice(&pg, &db, None, &store).await;
    let b = sluice(&pg, &db, None, &store).await;
    let (ca, cb) = (client(&a).await, client(&b).await);
    assert_eq!(value(&cb, READ).await, "a");
    stored().await;
    owner
        .batch_execute("UPDATE app.t SET v = 'behind' WHERE id = 1")
        .await
        .unwrap();
    assert_eq!(
        value(&ca, READ).await,
        "a",
        "b's answer, found in the cluster"
    );
    ca.simple_query("UPDATE app.t SET v = 'b' WHERE id = 1")
        .await
        .unwrap();
    assert_eq!(value(&cb, READ).await, "b");
    let (_, metrics) = tests::clients::http_get(a.admin, "/metrics").await;
    assert!(metrics.contains("sluice_cache_hits_total"), "{metrics}");
    // a flush through one instance empties every node for all of them
    stored().await;
    owner
        .batch_execute("UPDATE app.t SET v = 'behind again' WHERE id = 1")
        .await
        .unwrap();
    assert_eq!(value(&cb, READ).await, "b");
    let (status, body) = tests::clients::http_post(a.admin, "/cache/flush").await;
    assert!(status.contains("200"), "{status} {body}");
    assert_eq!(value(&cb, READ).await, "behind again");
}
