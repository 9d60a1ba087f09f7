//! The read cache: answers served from it, writes through any instance invalidating at
//! once (at COMMIT, not after ROLLBACK), what is never cached, what never shares an
//! entry, and Redis trouble costing no client errors.

use std::time::Duration;

mod extended;
mod leaks;
mod routes;
mod shared;

use tests::clients::connect_tls;
use tests::servers::{Postgres, Redis};
use tests::sluice::{pg_route, SluiceConfig, TestSluice};

/// A database with `app.t` and `other.t` (same name, different rows), and its owner.
async fn fixture() -> (std::sync::Arc<Postgres>, String, tokio_postgres::Client) {
    let pg = Postgres::shared().await;
    let db = pg.create_database("cache").await;
    let owner = pg.connect_owner(&db).await;
    owner
        .batch_execute(
            "CREATE SCHEMA app; CREATE SCHEMA other;
             CREATE TABLE app.t (id int PRIMARY KEY, v text);
             CREATE TABLE other.t (id int PRIMARY KEY, v text);
             INSERT INTO app.t VALUES (1, 'a'); INSERT INTO other.t VALUES (1, 'other');",
        )
        .await
        .unwrap();
    (pg, db, owner)
}

/// A sluice with route `shop` caching, optionally through Redis.
async fn sluice(pg: &Postgres, db: &str, redis: Option<&Redis>, extra: &str) -> TestSluice {
    let store = match redis {
        Some(r) => format!(
            "[cache]\nredis = \"{}\"\ntimeout_ms = 200\nbreaker_open_secs = 0.5\n",
            r.url()
        ),
        None => String::new(),
    };
    SluiceConfig {
        extra: format!(
            "{}[routes.shop.cache]\nenabled = true\ninvalidate = \"table\"\n{store}{extra}",
            pg_route("shop", pg.port, db, "transaction", ""),
        ),
        ..SluiceConfig::default()
    }
    .start()
    .await
}

async fn client(s: &TestSluice) -> tokio_postgres::Client {
    connect_tls(&s.conninfo("alice", "shop", "require"), &s.prepared.pki)
        .await
        .unwrap()
}

/// The first column of the first row.
async fn value(c: &tokio_postgres::Client, sql: &str) -> String {
    let msgs = c.simple_query(sql).await.unwrap();
    msgs.iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(r.get(0).unwrap_or("").to_string()),
            _ => None,
        })
        .unwrap_or_default()
}

/// The `[audit]` table of a sluice writing every statement to `log`.
fn audit_to(log: &std::path::Path) -> String {
    format!(
        "[audit]\nenabled = true\nsink = \"{}\"\nstatements = \"full\"\n",
        log.display()
    )
}

/// The `rows` of the audit events of `statement`, once there are `n` of them.
async fn audited_rows(log: &std::path::Path, statement: &str, n: usize) -> Vec<u64> {
    let rows = |events: Vec<serde_json::Value>| -> Vec<u64> {
        events
            .iter()
            .filter(|e| e["statement"] == statement)
            .map(|e| e["rows"].as_u64().unwrap_or(u64::MAX))
            .collect()
    };
    tests::wait_for("the audit events", Duration::from_secs(10), || async {
        let found = rows(tests::audit_events(log, 0).await);
        (found.len() >= n).then_some(found)
    })
    .await
}

/// Answers are stored in the background after they are sent: give that a moment.
async fn stored() {
    tokio::time::sleep(Duration::from_millis(100)).await;
}

const READ: &str = "SELECT v FROM app.t WHERE id = 1";

#[tokio::test]
async fn reads_are_served_from_the_cache_and_writes_through_sluice_invalidate_them() {
    let (pg, db, owner) = fixture().await;
    let s = sluice(&pg, &db, None, "").await;
    let c = client(&s).await;
    assert_eq!(value(&c, READ).await, "a");
    stored().await;
    // a change behind sluice's back is not seen: the answer comes from the cache
    owner
        .batch_execute("UPDATE app.t SET v = 'behind' WHERE id = 1")
        .await
        .unwrap();
    assert_eq!(value(&c, READ).await, "a");
    // a write through sluice: the next read is fresh
    c.simple_query("UPDATE app.t SET v = 'b' WHERE id = 1")
        .await
        .unwrap();
    assert_eq!(value(&c, READ).await, "b");

    // in a transaction: reads never use the cache, writes invalidate at COMMIT
    let other = client(&s).await;
    c.batch_execute("BEGIN").await.unwrap();
    owner
        .batch_execute("UPDATE app.t SET v = 'behind2' WHERE id = 1")
        .await
        .unwrap();
    assert_eq!(
        value(&c, READ).await,
        "behind2",
        "a read in a transaction hit the cache"
    );
    c.batch_execute("UPDATE app.t SET v = 'rolled back' WHERE id = 1")
        .await
        .unwrap();
    assert_eq!(
        value(&other, READ).await,
        "b",
        "uncommitted: the cached answer stands"
    );
    c.batch_execute("ROLLBACK").await.unwrap();
    // ROLLBACK invalidates nothing: still the cached answer
    assert_eq!(value(&other, READ).await, "b");
    c.batch_execute("BEGIN; UPDATE app.t SET v = 'c' WHERE id = 1")
        .await
        .unwrap();
    assert_eq!(value(&other, READ).await, "b");
    c.batch_execute("COMMIT").await.unwrap();
    assert_eq!(value(&other, READ).await, "c");

    // volatile and locking reads are never cached
    let volatile = "SELECT v || (now() IS NOT NULL)::text FROM app.t WHERE id = 1";
    assert_eq!(value(&c, volatile).await, "ctrue");
    owner
        .batch_execute("UPDATE app.t SET v = 'd' WHERE id = 1")
        .await
        .unwrap();
    assert_eq!(value(&c, volatile).await, "dtrue");
    let hinted = "/* sluice:nocache */ SELECT v FROM app.t WHERE id = 1";
    assert_eq!(value(&c, hinted).await, "d");

    // the same text under another search_path has its own entry
    let app = client(&s).await;
    app.simple_query("SET search_path TO app").await.unwrap();
    let oth = client(&s).await;
    oth.simple_query("SET search_path TO other").await.unwrap();
    let unqualified = "SELECT v FROM t WHERE id = 1";
    assert_eq!(value(&app, unqualified).await, "d");
    assert_eq!(value(&oth, unqualified).await, "other");
    assert_eq!(value(&app, unqualified).await, "d");
    let fresh = client(&s).await;
    fresh.simple_query("SET search_path TO app").await.unwrap();
    assert_eq!(value(&fresh, unqualified).await, "d");
    fresh
        .simple_query("SET search_path TO other")
        .await
        .unwrap();
    assert_eq!(value(&fresh, unqualified).await, "other");

    let (_, metrics) = tests::clients::http_get(s.admin, "/metrics").await;
    assert!(metrics.contains("sluice_cache_hits_total"), "{metrics}");

    // POST /cache/flush drops every answer
    owner
        .batch_execute("UPDATE app.t SET v = 'flushed' WHERE id = 1")
        .await
        .unwrap();
    // ('c' was cached after the COMMIT; 'd' was written behind sluice's back)
    assert_eq!(value(&c, READ).await, "c");
    let (status, body) = tests::clients::http_post(s.admin, "/cache/flush").await;
    assert!(status.contains("200"), "{status} {body}");
    assert_eq!(value(&c, READ).await, "flushed");

    // a write through the MySQL frontend to the same database invalidates too
    stored().await;
    let out = tests::clients::python(
        "import os, pymysql\nc = pymysql.connect(host='127.0.0.1', port=int(os.environ['PORT']), user='alice', password=os.environ['PW'], database='shop', autocommit=True)\nc.cursor().execute(\"UPDATE app.t SET v = 'via mysql' WHERE id = 1\")\nprint('ok')\n",
        &[
            ("PORT", s.mysql.port().to_string()),
            ("PW", tests::sluice::PASSWORD.to_string()),
        ],
    )
    .await;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "ok",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(value(&c, READ).await, "via mysql");
}

#[tokio::test]
async fn users_with_different_policies_never_share_entries() {
    let (pg, db, owner) = fixture().await;
    let dir = tempfile::tempdir().unwrap().keep();
    let file = dir.join("policy.csv");
    std::fs::write(
        &file,
        "p, alice, *, app.*, select, allow\np, bob, *, app.t, select, allow\n",
    )
    .unwrap();
    let s = SluiceConfig {
        users: vec![
            ("alice".into(), "scram-sha-256"),
            ("bob".into(), "scram-sha-256"),
        ],
        extra: format!(
            "{}[routes.shop.cache]\nenabled = true\n[policy]\nfiles = [\"{}\"]\n",
            pg_route("shop", pg.port, &db, "transaction", ""),
            file.display()
        ),
        ..SluiceConfig::default()
    }
    .start()
    .await;
    let alice = client(&s).await;
    assert_eq!(value(&alice, READ).await, "a");
    stored().await;
    owner
        .batch_execute("UPDATE app.t SET v = 'new' WHERE id = 1")
        .await
        .unwrap();
    let bob = connect_tls(&s.conninfo("bob", "shop", "require"), &s.prepared.pki)
        .await
        .unwrap();
    assert_eq!(
        value(&bob, READ).await,
        "new",
        "bob was served alice's entry"
    );
    assert_eq!(value(&alice, READ).await, "a", "alice's entry is hers");
}
