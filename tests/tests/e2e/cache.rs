//! The read cache: answers served from it, writes through any instance invalidating at
//! once (at COMMIT, not after ROLLBACK), what is never cached, what never shares an
//! entry, and Redis trouble costing no client errors.

use std::time::Duration;

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
async fn extended_protocol_reads_are_cached_per_parameter() {
    let (pg, db, owner) = fixture().await;
    owner
        .batch_execute("INSERT INTO app.t VALUES (2, 'two')")
        .await
        .unwrap();
    let s = sluice(&pg, &db, None, "").await;
    let c = client(&s).await;
    let read = |id: i32| {
        let c = &c;
        async move {
            let rows = c
                .query("SELECT v FROM app.t WHERE id = $1", &[&id])
                .await
                .unwrap();
            rows[0].get::<_, String>(0)
        }
    };
    assert_eq!(read(1).await, "a");
    assert_eq!(read(2).await, "two");
    stored().await;
    owner
        .batch_execute("UPDATE app.t SET v = v || ' behind'")
        .await
        .unwrap();
    // answered from the cache, each under its own parameter
    assert_eq!(read(1).await, "a");
    assert_eq!(read(2).await, "two");
    // a write through sluice (extended protocol too) invalidates
    c.execute("UPDATE app.t SET v = 'b' WHERE id = $1", &[&1i32])
        .await
        .unwrap();
    assert_eq!(read(1).await, "b");

    // psycopg: Parse, Bind, Describe portal, Execute and Sync in one batch
    let script = r#"
import os, psycopg
with psycopg.connect(os.environ["DSN"], autocommit=True) as c:
    for _ in range(3):
        print(c.execute("SELECT v, id FROM app.t WHERE id = %s", (2,)).fetchall())
"#;
    let dsn = format!(
        "{} sslrootcert={}",
        s.conninfo("alice", "shop", "verify-ca"),
        s.prepared.pki.ca_cert.display()
    );
    let out = tests::clients::python(script, &[("DSN", dsn)]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text.lines().collect::<Vec<_>>(),
        ["[('two behind', 2)]"; 3],
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (_, metrics) = tests::clients::http_get(s.admin, "/metrics").await;
    let hits = metrics
        .lines()
        .find_map(|l| l.strip_prefix("sluice_cache_hits_total "))
        .map_or(0.0, |v| v.trim().parse::<f64>().unwrap());
    assert!(hits >= 4.0, "{metrics}");
}

#[tokio::test]
async fn asyncpg_reads_with_a_row_limit_are_answered_from_the_cache() {
    let (pg, db, owner) = fixture().await;
    owner
        .batch_execute("INSERT INTO app.t VALUES (2, 'two'), (3, 'three')")
        .await
        .unwrap();
    let s = sluice(&pg, &db, None, "").await;
    // fetch() executes without a row limit; fetchrow() and fetchval() with a limit of one
    // row, answered from the cache as a DataRow and PortalSuspended. A miss with a row
    // limit is stored too: sluice fetches the rest of the portal itself (`solo` and
    // `desc` are only ever read with fetchrow first). An error past the rows the client
    // asked for (`div`) is the cache's alone.
    let script = r#"
import asyncio, os, ssl, sys, asyncpg
async def main():
    tls = ssl.create_default_context(cafile=os.environ["CA"])
    tls.check_hostname = False
    c = await asyncpg.connect(host="127.0.0.1", port=int(os.environ["PORT"]), user="alice",
                              password=os.environ["PW"], database="shop", ssl=tls)
    one = "SELECT v FROM app.t WHERE id = $1"
    many = "SELECT id, v FROM app.t WHERE id >= $1 ORDER BY id"
    solo = "SELECT v FROM app.t WHERE id = $1 AND v IS NOT NULL"
    desc = "SELECT v FROM app.t WHERE id >= $1 ORDER BY id DESC"
    div = "SELECT 10 / (id - 2) AS q FROM app.t WHERE id >= $1"
    async def reads():
        return [await c.fetchval(one, 1), (await c.fetchrow(one, 2))["v"],
                (await c.fetchrow(many, 2))["v"], len(await c.fetch(many, 1)),
                (await c.fetchrow(solo, 3))["v"], [r["v"] for r in await c.fetch(desc, 1)],
                await c.fetchval(div, 1)]
    print([(await c.fetch(one, 1))[0]["v"], (await c.fetch(one, 2))[0]["v"],
           len(await c.fetch(many, 2)), len(await c.fetch(many, 1)),
           (await c.fetchrow(solo, 3))["v"], (await c.fetchrow(desc, 1))["v"],
           await c.fetchval(div, 1)], flush=True)
    await asyncio.sleep(0.2)
    print(await reads(), flush=True)
    sys.stdin.readline()  # the test changes the rows behind sluice's back
    print(await reads(), flush=True)
    await c.execute("UPDATE app.t SET v = 'b' WHERE id = $1", 1)
    print(await reads(), flush=True)
asyncio.run(main())
"#;
    let env = vec![
        ("PORT", s.pg.port().to_string()),
        ("PW", tests::sluice::PASSWORD.to_string()),
        ("CA", s.prepared.pki.ca_cert.display().to_string()),
    ];
    let mut py = tests::clients::Interactive::start(script, &env);
    assert_eq!(
        py.line().await.as_deref(),
        Some("['a', 'two', 2, 3, 'three', 'three', -10]")
    );
    let before = "['a', 'two', 'two', 3, 'three', ['three', 'two', 'a'], -10]";
    assert_eq!(py.line().await.as_deref(), Some(before));
    owner
        .batch_execute("UPDATE app.t SET v = v || '!'")
        .await
        .unwrap();
    py.send("go").await;
    assert_eq!(
        py.line().await.as_deref(),
        Some(before),
        "answered from the cache, row limits included"
    );
    assert_eq!(
        py.line().await.as_deref(),
        Some("['b', 'two!', 'two!', 3, 'three!', ['three!', 'two!', 'b'], -10]"),
        "the write invalidated them"
    );
    let (_, metrics) = tests::clients::http_get(s.admin, "/metrics").await;
    let hits = metrics
        .lines()
        .find_map(|l| l.strip_prefix("sluice_cache_hits_total "))
        .map_or(0.0, |v| v.trim().parse::<f64>().unwrap());
    assert!(hits >= 8.0, "{metrics}");
}

#[tokio::test]
async fn the_embedded_sqlite_route_caches_in_process() {
    let log = tempfile::tempdir().unwrap().keep().join("audit.jsonl");
    let s = SluiceConfig {
        extra: format!("[routes.app.cache]\nenabled = true\n{}", audit_to(&log)),
        ..SluiceConfig::default()
    }
    .start()
    .await;
    let c = connect_tls(&s.conninfo("alice", "app", "require"), &s.prepared.pki)
        .await
        .unwrap();
    let read = "SELECT name FROM items WHERE id = 1";
    assert_eq!(value(&c, read).await, "apple");
    stored().await;
    // a change straight into the database file, behind sluice's back
    let db = s.prepared.dir.path().join("app.db");
    let out = tests::clients::python(
        "import os, sqlite3\nc = sqlite3.connect(os.environ['DB'])\nc.execute(\"UPDATE items SET name = 'behind' WHERE id = 1\")\nc.commit()\nprint('ok')\n",
        &[("DB", db.display().to_string())],
    )
    .await;
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");
    assert_eq!(value(&c, read).await, "apple", "answered from the cache");
    // writes through sluice invalidate, in a transaction at COMMIT
    c.batch_execute("BEGIN").await.unwrap();
    c.batch_execute("UPDATE items SET name = 'pending' WHERE id = 1")
        .await
        .unwrap();
    let other = connect_tls(&s.conninfo("alice", "app", "require"), &s.prepared.pki)
        .await
        .unwrap();
    assert_eq!(value(&other, read).await, "apple");
    c.batch_execute("COMMIT").await.unwrap();
    assert_eq!(value(&other, read).await, "pending");
    // answers from the cache are audited with their rows, as the backend's are
    assert_eq!(audited_rows(&log, read, 4).await, [1, 1, 1, 1]);

    // the extended protocol (psycopg): results cached per parameter
    let script = r#"
import os, sys, psycopg
with psycopg.connect(os.environ["DSN"], autocommit=True) as c:
    read = lambda i: c.execute("SELECT name FROM items WHERE id = %s", (i,)).fetchone()[0]
    print(read(1), read(2), flush=True)
    sys.stdin.readline()
    print(read(1), read(2), flush=True)
    c.execute("UPDATE items SET name = 'fresh' WHERE id = %s", (1,))
    print(read(1), read(2), flush=True)
"#;
    let dsn = format!(
        "{} sslrootcert={}",
        s.conninfo("alice", "app", "verify-ca"),
        s.prepared.pki.ca_cert.display()
    );
    let mut py = tests::clients::Interactive::start(script, &[("DSN", dsn)]);
    assert_eq!(py.line().await.as_deref(), Some("pending pear"));
    stored().await;
    let out = tests::clients::python(
        "import os, sqlite3\nc = sqlite3.connect(os.environ['DB'])\nc.execute(\"UPDATE items SET name = name || '!'\")\nc.commit()\n",
        &[("DB", db.display().to_string())],
    )
    .await;
    assert!(out.status.success());
    py.send("go").await;
    assert_eq!(
        py.line().await.as_deref(),
        Some("pending pear"),
        "answered from the cache"
    );
    assert_eq!(py.line().await.as_deref(), Some("fresh pear!"));
}

#[tokio::test]
async fn mysql_clients_are_answered_from_the_cache() {
    let my = tests::servers::Mariadb::shared().await;
    let mydb = my.create_database("cache");
    my.sql(&format!(
        "CREATE TABLE {mydb}.t (id INT PRIMARY KEY, v VARCHAR(20)); INSERT INTO {mydb}.t VALUES (1, 'a');"
    ))
    .unwrap();
    let (pg, db, _owner) = fixture().await;
    let log = tempfile::tempdir().unwrap().keep().join("audit.jsonl");
    let s = SluiceConfig {
        extra: format!(
            "{}{}[routes.shop.cache]\nenabled = true\n[routes.myshop.cache]\nenabled = true\n{}",
            pg_route("shop", pg.port, &db, "transaction", ""),
            tests::sluice::my_route("myshop", my.port, &mydb, "transaction", ""),
            audit_to(&log),
        ),
        ..SluiceConfig::default()
    }
    .start()
    .await;
    // PostgreSQL clients' answers on the same route are never served to MySQL clients
    let c = client(&s).await;
    assert_eq!(value(&c, READ).await, "a");
    stored().await;
    let script = r#"
import os, sys, time, pymysql
c = pymysql.connect(host="127.0.0.1", port=int(os.environ["PORT"]), user="alice",
                    password=os.environ["PW"], database=sys.argv[1] if len(sys.argv) > 1 else "myshop",
                    autocommit=True)
cur = c.cursor()
def read(sql):
    cur.execute(sql)
    return cur.fetchall()[0][0]
out = [read("SELECT v FROM app.t WHERE id = 1")] if os.environ["ROUTE"] == "shop" else []
if os.environ["ROUTE"] == "myshop":
    out.append(read("SELECT v FROM t WHERE id = 1"))
    time.sleep(0.2)
    print("\n".join(out), flush=True)
    sys.stdin.readline()  # the test changes the row behind sluice's back
    out = [read("SELECT v FROM t WHERE id = 1")]
    cur.execute("UPDATE t SET v = 'b' WHERE id = 1")
    out.append(read("SELECT v FROM t WHERE id = 1"))
print("\n".join(out), flush=True)
"#;
    let env = |route: &str| {
        vec![
            ("PORT", s.mysql.port().to_string()),
            ("PW", tests::sluice::PASSWORD.to_string()),
            ("ROUTE", route.to_string()),
        ]
    };
    let out = tests::clients::python(
        &script.replace(
            "sys.argv[1] if len(sys.argv) > 1 else \"myshop\"",
            "\"shop\"",
        ),
        &env("shop"),
    )
    .await;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "a",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // MariaDB: cached, changed behind sluice's back, then written through sluice
    let mut py = tests::clients::Interactive::start(script, &env("myshop"));
    assert_eq!(py.line().await.as_deref(), Some("a"));
    my.sql(&format!("UPDATE {mydb}.t SET v = 'behind' WHERE id = 1"))
        .unwrap();
    py.send("go").await;
    assert_eq!(
        py.line().await.as_deref(),
        Some("a"),
        "answered from the cache"
    );
    assert_eq!(
        py.line().await.as_deref(),
        Some("b"),
        "the write invalidated it"
    );
    // read, answered from the cache, read again: each audited with its one row
    let read = "SELECT v FROM t WHERE id = 1";
    assert_eq!(audited_rows(&log, read, 3).await, [1, 1, 1]);
}

#[tokio::test]
async fn mysql_prepared_statements_are_answered_from_the_cache() {
    let my = tests::servers::Mariadb::shared().await;
    let mydb = my.create_database("cache");
    my.sql(&format!(
        "CREATE TABLE {mydb}.t (id INT PRIMARY KEY, v VARCHAR(20)); \
         INSERT INTO {mydb}.t VALUES (1, 'a'), (2, 'two');"
    ))
    .unwrap();
    let s = SluiceConfig {
        extra: format!(
            "{}[routes.myshop.cache]\nenabled = true\n",
            tests::sluice::my_route("myshop", my.port, &mydb, "transaction", ""),
        ),
        ..SluiceConfig::default()
    }
    .start()
    .await;
    let script = r#"
import os, sys, time, mysql.connector
c = mysql.connector.connect(host="127.0.0.1", port=int(os.environ["PORT"]), user="alice",
                            password=os.environ["PW"], database="myshop", use_pure=True,
                            ssl_ca=os.environ["CA"], autocommit=True)
cur = c.cursor(prepared=True)
def read(i):
    cur.execute("SELECT v FROM t WHERE id = %s", (i,))
    return cur.fetchall()[0][0]
print(read(1), read(2), flush=True)
time.sleep(0.2)
sys.stdin.readline()  # the test changes the rows behind sluice's back
print(read(1), read(2), flush=True)
cur.execute("UPDATE t SET v = 'b' WHERE id = %s", (1,))
print(read(1), read(2), flush=True)
"#;
    let mut py = tests::clients::Interactive::start(script, &s.mysql_env());
    assert_eq!(py.line().await.as_deref(), Some("a two"));
    my.sql(&format!("UPDATE {mydb}.t SET v = concat(v, '!')"))
        .unwrap();
    py.send("go").await;
    assert_eq!(
        py.line().await.as_deref(),
        Some("a two"),
        "answered from the cache, per parameter"
    );
    // the default invalidation is the whole database: both rows are read again
    assert_eq!(py.line().await.as_deref(), Some("b two!"));
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
