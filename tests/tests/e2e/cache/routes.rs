//! Other routes and clients: the embedded SQLite route, and MySQL clients on MariaDB and
//! PostgreSQL routes.

use super::*;

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
    let dsn = s.verified_conninfo("alice", "app");
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
