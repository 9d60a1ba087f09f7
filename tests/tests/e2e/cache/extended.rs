//! The extended protocol on PostgreSQL routes: Bind/Execute answered per parameter, and
//! Executes with a row limit (asyncpg).

use super::*;

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
    let dsn = s.verified_conninfo("alice", "shop");
    let out = tests::clients::python(script, &[("DSN", dsn)]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text.lines().collect::<Vec<_>>(),
        ["[('two behind', 2)]"; 3],
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (_, metrics) = tests::clients::http_get(s.admin, "/metrics").await;
    let hits = tests::clients::metric(&metrics, "sluice_cache_hits_total ");
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
    let mut py = tests::clients::Interactive::start(script, &s.pg_env());
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
    let hits = tests::clients::metric(&metrics, "sluice_cache_hits_total ");
    assert!(hits >= 8.0, "{metrics}");
}
