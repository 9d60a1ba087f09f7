//! What made one session's cached answer reach another (or a stale one come back): the
//! startup `application_name`, settings changed inside a function, a temporary table
//! shadowing a real one, and a COMMIT after a ROLLBACK TO SAVEPOINT in one request.

use tests::clients::connect_tls;
use tests::servers::{Mariadb, Postgres};
use tests::sluice::{my_route, pg_route, SluiceConfig, TestSluice, PASSWORD};

use super::{stored, value};

async fn session_mode_sluice(pg: &Postgres, db: &str) -> TestSluice {
    SluiceConfig {
        extra: format!(
            "{}[routes.shop.cache]\nenabled = true\n",
            pg_route("shop", pg.port, db, "session", ""),
        ),
        ..SluiceConfig::default()
    }
    .start()
    .await
}

async fn connect(s: &TestSluice, extra: &str) -> tokio_postgres::Client {
    let conninfo = format!("{} {extra}", s.conninfo("alice", "shop", "require"));
    connect_tls(&conninfo, &s.prepared.pki).await.unwrap()
}

#[tokio::test]
async fn session_state_the_key_cannot_see_is_never_shared() {
    let pg = Postgres::shared().await;
    let db = pg.create_database("leaks").await;
    let owner = pg.connect_owner(&db).await;
    owner
        .batch_execute(
            "CREATE SCHEMA app;
             CREATE TABLE app.r (tag text, v text);
             INSERT INTO app.r VALUES ('a', 'row of a'), ('b', 'row of b'), ('x', 'row of x');
             ALTER TABLE app.r ENABLE ROW LEVEL SECURITY;
             ALTER TABLE app.r FORCE ROW LEVEL SECURITY;
             CREATE POLICY by_app ON app.r USING (
                 tag = current_setting('application_name')
                 OR tag = current_setting('app.tag', true));
             CREATE FUNCTION app.tag(t text) RETURNS text LANGUAGE sql
                 AS $$ SELECT set_config('app.tag', t, false) $$;
             CREATE TABLE public.t (id int, v text);
             INSERT INTO public.t VALUES (1, 'real');",
        )
        .await
        .unwrap();
    let s = session_mode_sluice(&pg, &db).await;
    const READ: &str = "SELECT string_agg(v, ',' ORDER BY v) FROM app.r";

    // the startup packet's application_name is part of the key
    let a = connect(&s, "application_name=a").await;
    let b = connect(&s, "application_name=b").await;
    assert_eq!(value(&a, READ).await, "row of a");
    stored().await;
    assert_eq!(value(&a, READ).await, "row of a");
    assert_eq!(value(&b, READ).await, "row of b");

    // a setting changed inside a function: that session stops using the cache
    let c = connect(&s, "application_name=c").await;
    assert_eq!(value(&c, READ).await, "");
    stored().await;
    value(&c, "SELECT app.tag('x')").await;
    assert_eq!(value(&c, READ).await, "row of x");
    let c2 = connect(&s, "application_name=c").await;
    assert_eq!(value(&c2, READ).await, "");
    stored().await;
    assert_eq!(value(&c, READ).await, "row of x");

    // a temporary table shadows public.t for its session only
    let d = connect(&s, "").await;
    let e = connect(&s, "").await;
    assert_eq!(value(&d, "SELECT v FROM t WHERE id = 1").await, "real");
    d.batch_execute("CREATE TEMP TABLE t (id int, v text); INSERT INTO t VALUES (1, 'temp')")
        .await
        .unwrap();
    assert_eq!(value(&d, "SELECT v FROM t WHERE id = 1").await, "temp");
    stored().await;
    assert_eq!(value(&e, "SELECT v FROM t WHERE id = 1").await, "real");
    assert_eq!(value(&d, "SELECT v FROM t WHERE id = 1").await, "temp");
}

#[tokio::test]
async fn a_commit_after_a_rollback_to_savepoint_invalidates_what_it_commits() {
    let my = Mariadb::shared().await;
    let db = my.create_database("savepoint");
    my.sql(&format!(
        "CREATE TABLE {db}.t (id INT PRIMARY KEY, v TEXT); INSERT INTO {db}.t VALUES (1, 'old');"
    ))
    .unwrap();
    let s = SluiceConfig {
        extra: format!(
            "{}[routes.shop.cache]\nenabled = true\ninvalidate = \"table\"\n",
            my_route("shop", my.port, &db, "transaction", "")
        ),
        ..SluiceConfig::default()
    }
    .start()
    .await;
    let script = r#"
import os, time, pymysql
from pymysql.constants import CLIENT
c = pymysql.connect(host="127.0.0.1", port=int(os.environ["PORT"]), user="alice",
                    password=os.environ["PW"], database="shop", autocommit=True,
                    client_flag=CLIENT.MULTI_STATEMENTS)
cur = c.cursor()
def read():
    cur.execute("SELECT v FROM t WHERE id = 1")
    return cur.fetchone()[0]
print(read()); time.sleep(0.1); print(read())
cur.execute("BEGIN")
cur.execute("UPDATE t SET v = 'new' WHERE id = 1")
cur.execute("SAVEPOINT s")
cur.execute("ROLLBACK TO SAVEPOINT s; COMMIT")
while cur.nextset():
    pass
print(read())
"#;
    let out = tests::clients::python(
        script,
        &[
            ("PORT", s.mysql.port().to_string()),
            ("PW", PASSWORD.to_string()),
        ],
    )
    .await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(text.lines().collect::<Vec<_>>(), ["old", "old", "new"]);
}
