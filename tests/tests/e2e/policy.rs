//! Access policies end to end: a bypass corpus through real clients (every case denied,
//! nothing reaching the backend, each allowed counterpart working), reload, and audit.

use tests::clients::connect_tls;
use tests::servers::{Mariadb, Postgres};
use tests::sluice::{my_route, pg_route, SluiceConfig, TestSluice, PASSWORD};

pub(crate) const APP_POLICY: &str = "\
p, app_rw, *, app.*, select, allow
p, app_rw, *, app.*, insert, allow
p, app_rw, *, app.*, update, allow
p, app_rw, *, app.*, delete, allow
p, app_rw, *, app.*, copy_in, allow
p, app_rw, *, app.audit, delete, deny
p, app_rw, *, *, session, allow
p, app_rw, *, *, transaction, allow
g, alice, app_rw, *
";

async fn start(extra: String, policy: &str) -> TestSluice {
    start_with(extra, policy, "").await
}

pub(crate) async fn start_with(extra: String, policy: &str, user_options: &str) -> TestSluice {
    let dir = tempfile::tempdir().unwrap().keep();
    let file = dir.join("policy.csv");
    std::fs::write(&file, policy).unwrap();
    let config = SluiceConfig {
        extra: format!("{extra}\n[policy]\nfiles = [\"{}\"]\n", file.display()),
        user_options: user_options.to_string(),
        ..SluiceConfig::default()
    };
    config.start().await
}

pub(crate) fn policy_file(s: &TestSluice) -> std::path::PathBuf {
    let text = std::fs::read_to_string(&s.prepared.path).unwrap();
    let line = text.lines().find(|l| l.starts_with("files = ")).unwrap();
    let path = line
        .trim_start_matches("files = [\"")
        .trim_end_matches("\"]");
    path.into()
}

pub(crate) async fn pg_fixture() -> (std::sync::Arc<Postgres>, String, tokio_postgres::Client) {
    let pg = Postgres::shared().await;
    let db = pg.create_database("policy").await;
    let owner = pg.connect_owner(&db).await;
    owner
        .batch_execute(
            "CREATE SCHEMA app; CREATE SCHEMA other;
             CREATE TABLE app.orders (id int PRIMARY KEY, n int);
             CREATE TABLE app.audit (id int);
             CREATE TABLE other.orders (id int PRIMARY KEY, n int);
             CREATE TABLE public.secrets (s text);
             CREATE SEQUENCE public.seq;
             INSERT INTO app.orders VALUES (1, 10);
             INSERT INTO app.audit VALUES (1), (2);
             INSERT INTO other.orders VALUES (1, 99);
             INSERT INTO public.secrets VALUES ('s');
             CREATE FUNCTION app.f() RETURNS int LANGUAGE sql AS 'DELETE FROM app.audit RETURNING 1';
             CREATE PROCEDURE app.p() LANGUAGE sql AS 'DELETE FROM app.audit';",
        )
        .await
        .unwrap();
    (pg, db, owner)
}

/// The backend state every denied statement would have changed.
pub(crate) async fn fingerprint(owner: &tokio_postgres::Client) -> String {
    let row = owner
        .query_one(
            "SELECT (SELECT count(*) FROM app.audit)::text || '/' || \
                    (SELECT string_agg(id || ':' || n, ',' ORDER BY id) FROM app.orders) || '/' || \
                    (SELECT count(*) FROM other.orders)::text || '/' || \
                    (SELECT count(*) FROM public.secrets)::text || '/' || \
                    (SELECT last_value FROM public.seq)::text || '/' || \
                    (SELECT count(*) FROM pg_tables WHERE schemaname = 'app')::text",
            &[],
        )
        .await
        .unwrap();
    row.get(0)
}

#[tokio::test]
async fn postgresql_bypass_corpus_is_denied_and_allowed_counterparts_work() {
    let (pg, db, owner) = pg_fixture().await;
    let s = start(pg_route("shop", pg.port, &db, "session", ""), APP_POLICY).await;
    let client = connect_tls(&s.conninfo("alice", "shop", "require"), &s.prepared.pki)
        .await
        .unwrap();
    let before = fingerprint(&owner).await;
    let corpus = [
        "SELECT 1; DROP TABLE app.orders",
        "SELECT 1; DELETE FROM app.audit",
        "SELECT * FROM public.secrets",
        "SELECT * FROM secrets",
        "SELECT * FROM \"Secrets\"",
        "DELETE FROM App.Audit",
        "DELETE FROM \"app\".\"audit\"",
        "DELETE FROM APP.AUDIT WHERE true",
        "/* harmless */ DELETE FROM app.audit",
        "SELECT 1 /* nested /* comment */ still */; DELETE FROM app.audit",
        "SELECT 1 -- comment\n; DROP TABLE app.orders",
        "WITH d AS (DELETE FROM app.audit RETURNING *) SELECT * FROM d",
        "WITH x AS (SELECT * FROM public.secrets) SELECT * FROM x",
        "WITH secrets AS (SELECT 1) SELECT * FROM (SELECT * FROM public.secrets) s",
        "SELECT * INTO app.stolen FROM app.orders",
        "CREATE TABLE app.t2 AS SELECT * FROM public.secrets",
        "INSERT INTO app.orders SELECT id + 10, n FROM other.orders",
        "UPDATE app.orders SET n = (SELECT count(*) FROM public.secrets)",
        "DELETE FROM app.orders WHERE id IN (SELECT id FROM other.orders)",
        "COPY app.orders TO PROGRAM 'true'",
        "COPY app.orders FROM '/etc/passwd'",
        "COPY public.secrets TO STDOUT",
        "DO $$ BEGIN DELETE FROM app.audit; END $$",
        "CALL app.p()",
        "SELECT app.f()",
        "PREPARE p AS DELETE FROM app.audit",
        "EXECUTE never_prepared",
        "SELEC garbage FROM nowhere",
        "SET ROLE postgres",
        "SET SESSION AUTHORIZATION postgres",
        "SET search_path TO other; SELECT * FROM orders",
        "SELECT pg_read_file('/etc/passwd')",
        "SELECT set_config('search_path', 'other', false)",
        "SELECT nextval('public.seq')",
        "TRUNCATE app.orders",
        "DROP TABLE app.orders",
        "ALTER TABLE app.orders ADD COLUMN x int",
        "GRANT ALL ON app.orders TO PUBLIC",
        "EXPLAIN ANALYZE DELETE FROM app.audit",
        "SELECT * FROM other.orders FOR UPDATE",
        "SELECT * FROM app.orders, other.orders",
    ];
    for sql in corpus {
        let err = client
            .simple_query(sql)
            .await
            .expect_err(&format!("denied: {sql}"));
        let db_err = err.as_db_error().unwrap_or_else(|| panic!("{sql}: {err}"));
        assert_eq!(db_err.code().code(), "42501", "{sql}: {db_err}");
        let msg = db_err.message();
        assert!(
            msg.starts_with("permission denied: ")
                || msg.contains("not supported by access policy")
                || msg.contains("was not prepared through sluice"),
            "{sql}: {msg}"
        );
    }
    // the extended protocol is checked at Parse
    let err = client.prepare("DELETE FROM app.audit").await.unwrap_err();
    assert_eq!(err.as_db_error().unwrap().code().code(), "42501");
    // a search_path set in an earlier request applies to later ones
    client
        .simple_query("SET search_path TO other")
        .await
        .unwrap();
    let err = client
        .simple_query("SELECT * FROM orders")
        .await
        .unwrap_err();
    assert_eq!(err.as_db_error().unwrap().code().code(), "42501");
    assert_eq!(fingerprint(&owner).await, before, "a denied statement ran");

    // allowed counterparts
    client.simple_query("SET search_path TO app").await.unwrap();
    let rows = client
        .query("SELECT n FROM app.orders WHERE id = $1", &[&1i32])
        .await
        .unwrap();
    assert_eq!(rows[0].get::<_, i32>(0), 10);
    client
        .batch_execute(
            "BEGIN; INSERT INTO app.orders VALUES (2, 20); UPDATE orders SET n = 21 WHERE id = 2; \
             COMMIT; DELETE FROM app.orders WHERE id = 2; SELECT * FROM app.audit",
        )
        .await
        .unwrap();
    let with = client
        .simple_query("WITH x AS (SELECT * FROM app.orders) SELECT count(*) FROM x")
        .await
        .unwrap();
    assert!(!with.is_empty());
    assert_eq!(fingerprint(&owner).await, before);

    // COPY: FROM STDIN is copy_in (allowed), TO STDOUT is copy_out (no rule), both through
    // the extended protocol
    use futures::SinkExt;
    let sink = client
        .copy_in::<_, bytes::Bytes>("COPY app.orders FROM STDIN")
        .await
        .unwrap();
    futures::pin_mut!(sink);
    sink.send(bytes::Bytes::from_static(b"7\t70\n8\t80\n"))
        .await
        .unwrap();
    assert_eq!(sink.finish().await.unwrap(), 2);
    let err = client
        .copy_out("COPY app.orders TO STDOUT")
        .await
        .err()
        .expect("COPY TO STDOUT is denied");
    assert_eq!(err.as_db_error().unwrap().code().code(), "42501");
    let copied = owner
        .query_one("SELECT count(*) FROM app.orders WHERE id IN (7, 8)", &[])
        .await
        .unwrap();
    assert_eq!(copied.get::<_, i64>(0), 2);
}

#[tokio::test]
async fn mysql_bypass_corpus_is_denied_and_allowed_counterparts_work() {
    let my = Mariadb::shared().await;
    let db = my.create_database("policy");
    my.sql(&format!(
        "CREATE TABLE {db}.orders (id INT PRIMARY KEY, n INT); CREATE TABLE {db}.audit (id INT);
         INSERT INTO {db}.orders VALUES (1, 10); INSERT INTO {db}.audit VALUES (1), (2);"
    ))
    .unwrap();
    let policy = APP_POLICY.replace("app.", &format!("{db}."));
    let extra = format!(
        "{}{}",
        my_route("shop", my.port, &db, "transaction", ""),
        my_route("elsewhere", my.port, &db, "transaction", "")
    );
    let s = start_with(extra, &policy, "routes = [\"shop\", \"app\"]").await;
    let script = r#"
import os, sys, pymysql
from pymysql.constants import CLIENT
c = pymysql.connect(host="127.0.0.1", port=int(os.environ["PORT"]), user="alice",
                    password=os.environ["PW"], database="shop", autocommit=True,
                    client_flag=CLIENT.MULTI_STATEMENTS)
cur = c.cursor()
for sql in sys.stdin.read().split("\n----\n"):
    try:
        cur.execute(sql)
        while cur.nextset():
            pass
        print("ok")
    except pymysql.MySQLError as e:
        print(e.args[0], e.args[1].replace("\n", " ") if len(e.args) > 1 else "")
"#;
    let corpus = [
        "SELECT 1; DELETE FROM audit",
        "DELETE FROM `audit`",
        "SELECT 1 # comment\n; DELETE FROM audit",
        "SELECT 1 -- c\n; DELETE FROM audit",
        "SELECT 1 /*! ; DELETE FROM audit */",
        "/*M!100000 DELETE FROM audit */",
        "SELECT * FROM mysql.user",
        "SELECT * FROM other_db.secrets",
        "PREPARE s FROM 'DELETE FROM audit'",
        "SET @q = 'DELETE FROM audit'; PREPARE s FROM @q; EXECUTE s",
        "CALL p()",
        "TRUNCATE orders",
        "DROP TABLE orders",
        "SELECT load_file('/etc/passwd')",
        "SELECT * FROM orders INTO OUTFILE '/tmp/sluice-x'",
        "SELEKT 1",
        "DELETE a FROM audit a",
        "INSERT INTO orders SELECT * FROM other_db.secrets",
        "REPLACE INTO audit VALUES (3)",
        "CREATE TABLE t2 AS SELECT * FROM orders",
        "GRANT ALL ON *.* TO 'x'@'%'",
        "SHOW PROCESSLIST",
    ];
    // the test server compares table names by case (lower_case_table_names = 0): these
    // name other tables, which the policy's rules for `audit` do not cover
    let other_case = ["DELETE FROM AUDIT", "DELETE FROM `Audit` WHERE 1"];
    let mut input = corpus.join("\n----\n");
    for sql in other_case {
        input.push_str("\n----\n");
        input.push_str(sql);
    }
    input.push_str("\n----\nUSE elsewhere");
    input.push_str("\n----\nSELECT n FROM orders WHERE id = 1");
    input.push_str("\n----\nINSERT INTO orders VALUES (5, 50)");
    input.push_str("\n----\nDELETE FROM orders WHERE id = 5");
    input.push_str("\n----\nSELECT count(*) FROM audit");
    let out = tests::clients::python_stdin(
        script,
        &[
            ("PORT", s.mysql.port().to_string()),
            ("PW", PASSWORD.to_string()),
        ],
        &input,
    )
    .await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), corpus.len() + 7, "{text}");
    for (sql, line) in corpus.iter().zip(&lines) {
        assert!(line.starts_with("1142 "), "{sql}: {line}");
    }
    let lines = &lines[corpus.len()..];
    for (sql, line) in other_case.iter().zip(lines) {
        assert!(line.starts_with("1146 "), "{sql}: {line}");
    }
    let lines = &lines[other_case.len()..];
    assert!(lines[0].starts_with("1044 "), "USE: {}", lines[0]);
    for line in &lines[1..] {
        assert_eq!(*line, "ok", "{text}");
    }
    let state = my
        .sql(&format!(
            "SELECT (SELECT count(*) FROM {db}.audit), (SELECT count(*) FROM {db}.orders)"
        ))
        .unwrap();
    assert_eq!(state.trim(), "2\t1", "a denied statement ran");
}

#[tokio::test]
async fn com_change_user_takes_the_new_users_rules() {
    let my = Mariadb::shared().await;
    let db = my.create_database("change");
    my.sql(&format!(
        "CREATE TABLE {db}.orders (id INT PRIMARY KEY, n INT); CREATE TABLE {db}.audit (id INT);
         INSERT INTO {db}.orders VALUES (1, 10); INSERT INTO {db}.audit VALUES (1), (2);"
    ))
    .unwrap();
    let dir = tempfile::tempdir().unwrap().keep();
    let file = dir.join("policy.csv");
    let policy = format!(
        "{}p, bob, *, {db}.audit, select, allow\np, bob, *, *, session, allow\n",
        APP_POLICY.replace("app.", &format!("{db}."))
    );
    std::fs::write(&file, policy).unwrap();
    let s = SluiceConfig {
        users: vec![
            ("alice".into(), "scram-sha-256"),
            ("bob".into(), "scram-sha-256"),
        ],
        extra: format!(
            "{}{}[policy]\nfiles = [\"{}\"]\n",
            my_route("shop", my.port, &db, "transaction", ""),
            my_route("elsewhere", my.port, &db, "transaction", ""),
            file.display()
        ),
        user_options: "routes = [\"shop\"]".into(),
        ..SluiceConfig::default()
    }
    .start()
    .await;
    let script = r#"
import os, mysql.connector
kw = dict(host="127.0.0.1", port=int(os.environ["PORT"]), use_pure=True, ssl_ca=os.environ["CA"])
pw = os.environ["PW"]
def run(c, sql):
    cur = c.cursor()
    try:
        cur.execute(sql)
        print(len(cur.fetchall()))
    except mysql.connector.Error as e:
        print(e.errno)
    cur.close()
c = mysql.connector.connect(user="alice", password=pw, database="shop", **kw)
run(c, "SELECT * FROM orders")
c.cmd_change_user(username="bob", password=pw, database="shop")
run(c, "SELECT * FROM orders")
run(c, "SELECT * FROM audit")
for user, password, database in (("bob", pw, "elsewhere"), ("alice", "wrong", "shop")):
    c = mysql.connector.connect(user="bob", password=pw, database="shop", **kw)
    try:
        c.cmd_change_user(username=user, password=password, database=database)
        print("changed")
    except mysql.connector.Error as e:
        print(e.errno)
"#;
    let out = tests::clients::python(script, &s.mysql_env()).await;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .collect::<Vec<_>>(),
        // alice reads orders; as bob, orders are denied and audit is readable; a change
        // to a route bob may not use, or with a wrong password, is refused
        ["1", "1142", "2", "1045", "1045"],
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn a_reload_applies_to_the_next_statement_and_a_broken_one_keeps_the_old_state() {
    let (pg, db, _owner) = pg_fixture().await;
    let s = start(
        pg_route("shop", pg.port, &db, "transaction", ""),
        APP_POLICY,
    )
    .await;
    let client = connect_tls(&s.conninfo("alice", "shop", "require"), &s.prepared.pki)
        .await
        .unwrap();
    let denied = |e: tokio_postgres::Error| e.as_db_error().map(|d| d.code().code().to_string());
    let err = client
        .simple_query("SELECT * FROM other.orders")
        .await
        .unwrap_err();
    assert_eq!(denied(err).as_deref(), Some("42501"));
    // prepared while allowed, executed after a reload that denies it
    let stmt = client
        .prepare("SELECT n FROM app.orders WHERE id = 1")
        .await
        .unwrap();

    let file = policy_file(&s);
    let widened = APP_POLICY.replace("app.*, select", "*, select")
        + "p, app_rw, *, app.orders, select, deny\n";
    std::fs::write(&file, &widened).unwrap();
    let (status, body) = tests::clients::http_post(s.admin, "/reload").await;
    assert!(status.contains("200"), "{status} {body}");
    // same connection, next statement
    client
        .simple_query("SELECT * FROM other.orders")
        .await
        .unwrap();
    let err = client.query(&stmt, &[]).await.unwrap_err();
    assert_eq!(denied(err).as_deref(), Some("42501"));

    // a broken policy file: refused, the widened policy stays
    std::fs::write(&file, "p, app_rw, *, x, selekt, allow\n").unwrap();
    let (status, body) = tests::clients::http_post(s.admin, "/reload").await;
    assert!(status.contains("422"), "{status} {body}");
    assert!(body.contains("unknown action"), "{body}");
    client
        .simple_query("SELECT * FROM other.orders")
        .await
        .unwrap();
    // a broken config: refused too
    std::fs::write(&file, &widened).unwrap();
    let config = std::fs::read_to_string(&s.prepared.path).unwrap();
    std::fs::write(&s.prepared.path, format!("{config}\n[nonsense\n")).unwrap();
    let (status, body) = tests::clients::http_post(s.admin, "/reload").await;
    assert!(status.contains("422"), "{status} {body}");
    client
        .simple_query("SELECT * FROM other.orders")
        .await
        .unwrap();
    let (_, metrics) = tests::clients::http_get(s.admin, "/metrics").await;
    assert!(
        metrics.contains("sluice_reload_failures_total"),
        "{metrics}"
    );
}

fn assert_statement(e: &serde_json::Value, decision: &str, rows: u64, statement: &str) {
    assert_eq!(e["event"], "statement", "{e}");
    assert_eq!(e["decision"], decision, "{e}");
    assert_eq!(e["rows"], rows, "{e}");
    assert_eq!(e["statement"], statement, "{e}");
    assert_eq!(e["user"], "alice", "{e}");
    assert!(
        e["client"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{e}"
    );
    for key in ["time", "digest", "duration_us", "route", "protocol"] {
        assert!(!e[key].is_null(), "{key} in {e}");
    }
    assert!(e["action"].is_array() && e["objects"].is_array(), "{e}");
    assert_eq!(e["reason"].is_null(), decision == "permit", "{e}");
}

fn assert_login(e: &serde_json::Value, decision: &str) {
    assert_eq!(e["event"], "login", "{e}");
    assert_eq!(e["decision"], decision, "{e}");
    assert_eq!(e["user"], "alice", "{e}");
    assert!(
        e["client"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{e}"
    );
    assert!(!e["time"].is_null() && !e["route"].is_null(), "{e}");
}

#[tokio::test]
async fn every_decision_and_login_is_one_audit_event() {
    let (pg, db, _owner) = pg_fixture().await;
    let my = Mariadb::shared().await;
    let mydb = my.create_database("audit");
    my.sql(&format!(
        "CREATE TABLE {mydb}.orders (id INT PRIMARY KEY, n INT);
         INSERT INTO {mydb}.orders VALUES (1, 10), (2, 20), (3, 30);"
    ))
    .unwrap();
    let dir = tempfile::tempdir().unwrap().keep();
    let log = dir.join("audit.jsonl");
    let extra = format!(
        "{}{}\n[audit]\nenabled = true\nsink = \"{}\"\nstatements = \"full\"\n",
        pg_route("shop", pg.port, &db, "session", ""),
        my_route("myshop", my.port, &mydb, "transaction", ""),
        log.display()
    );
    let policy = format!("{APP_POLICY}p, app_rw, myshop, {mydb}.*, *, allow\n");
    let s = start(extra, &policy).await;
    let client = connect_tls(&s.conninfo("alice", "shop", "require"), &s.prepared.pki)
        .await
        .unwrap();
    client
        .simple_query("SELECT n FROM app.orders")
        .await
        .unwrap();
    client
        .simple_query("SELECT * FROM public.secrets")
        .await
        .unwrap_err();
    // extended protocol: prepared in one round trip, executed in the next
    let rows = client
        .query("SELECT id FROM app.orders WHERE id >= $1", &[&0i32])
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    client
        .simple_query("UPDATE app.orders SET n = n; SELECT 1")
        .await
        .unwrap();
    let bad = s
        .conninfo("alice", "shop", "require")
        .replace(PASSWORD, "wrong");
    connect_tls(&bad, &s.prepared.pki).await.unwrap_err();
    let events = tests::audit_events(&log, 6).await;
    assert_eq!(events.len(), 6, "{events:#?}");
    assert_login(&events[0], "permit");
    assert_statement(&events[1], "permit", 1, "SELECT n FROM app.orders");
    assert_eq!(events[1]["route"], "shop");
    assert_eq!(events[1]["action"][0], "select");
    assert_eq!(events[1]["objects"][0], "select:app.orders");
    assert_statement(&events[2], "deny", 0, "SELECT * FROM public.secrets");
    assert!(
        events[2]["reason"]
            .as_str()
            .unwrap()
            .contains("public.secrets"),
        "{}",
        events[2]
    );
    assert_statement(
        &events[3],
        "permit",
        1,
        "SELECT id FROM app.orders WHERE id >= $1",
    );
    // one row updated, one selected
    assert_statement(
        &events[4],
        "permit",
        2,
        "UPDATE app.orders SET n = n; SELECT 1",
    );
    assert_login(&events[5], "deny");

    // MySQL: text queries, a server-side prepared statement and a wrong password
    let script = r#"
import os, pymysql, mysql.connector
port, pw = int(os.environ["PORT"]), os.environ["PW"]
c = pymysql.connect(host="127.0.0.1", port=port, user="alice", password=pw,
                    database="myshop", autocommit=True)
cur = c.cursor()
cur.execute("SELECT id FROM orders")
cur.execute("UPDATE orders SET n = n + 1 WHERE id < 3")
try:
    cur.execute("SELECT * FROM mysql.user")
except pymysql.MySQLError as e:
    print(e.args[0])
c.close()
m = mysql.connector.connect(host="127.0.0.1", port=port, user="alice", password=pw,
                            database="myshop", use_pure=True, ssl_ca=os.environ["CA"])
mc = m.cursor(prepared=True)
mc.execute("SELECT n FROM orders WHERE id >= %s", (2,))
print(len(mc.fetchall()))
m.close()
try:
    pymysql.connect(host="127.0.0.1", port=port, user="alice", password="wrong",
                    database="myshop")
except pymysql.MySQLError as e:
    print(e.args[0])
"#;
    let out = tests::clients::python(script, &s.mysql_env()).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text.split_whitespace().collect::<Vec<_>>(),
        ["1142", "2", "1045"],
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events = tests::audit_events(&log, 16).await;
    assert_eq!(events.len(), 16, "{events:#?}");
    // the drivers' own session setup (SET NAMES, SET autocommit) is audited too
    let (setup, mysql): (Vec<&serde_json::Value>, Vec<&serde_json::Value>) =
        events[6..].iter().partition(|e| {
            e["statement"]
                .as_str()
                .is_some_and(|s| s.starts_with("SET "))
        });
    for e in setup {
        assert_statement(e, "permit", 0, e["statement"].as_str().unwrap());
    }
    let summary: Vec<String> = mysql
        .iter()
        .map(|e| {
            format!(
                "{} {} {}",
                e["event"].as_str().unwrap(),
                e["decision"].as_str().unwrap(),
                e["statement"].as_str().unwrap_or("-")
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            "login permit -",
            "statement permit SELECT id FROM orders",
            "statement permit UPDATE orders SET n = n + 1 WHERE id < 3",
            "statement deny SELECT * FROM mysql.user",
            "login permit -",
            "statement permit SELECT n FROM orders WHERE id >= ?",
            "login deny -",
        ],
        "{events:#?}"
    );
    assert_login(mysql[0], "permit");
    assert_statement(mysql[1], "permit", 3, "SELECT id FROM orders");
    assert_statement(
        mysql[2],
        "permit",
        2,
        "UPDATE orders SET n = n + 1 WHERE id < 3",
    );
    assert_statement(mysql[3], "deny", 0, "SELECT * FROM mysql.user");
    assert_statement(mysql[5], "permit", 2, "SELECT n FROM orders WHERE id >= ?");
    assert_eq!(mysql[5]["protocol"], "mysql");
    assert_login(mysql[6], "deny");
}

#[tokio::test]
async fn connection_rules_refuse_at_login() {
    let (pg, db, _owner) = pg_fixture().await;
    let route = pg_route("shop", pg.port, &db, "session", "");
    // a network the test client is not in
    let s = start_with(route.clone(), APP_POLICY, "networks = [\"10.0.0.0/8\"]").await;
    let err = connect_tls(&s.conninfo("alice", "shop", "require"), &s.prepared.pki)
        .await
        .unwrap_err();
    assert_eq!(err.as_db_error().unwrap().code().code(), "28000", "{err}");
    let out = tests::clients::python(
        "import os, pymysql\ntry:\n    pymysql.connect(host='127.0.0.1', port=int(os.environ['PORT']), user='alice', password=os.environ['PW'], database='app')\n    print('ok')\nexcept pymysql.MySQLError as e:\n    print(e.args[0])\n",
        &[("PORT", s.mysql.port().to_string()), ("PW", PASSWORD.to_string())],
    )
    .await;
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1045");
    // the loopback network, but a route the user may not use
    let s = start_with(
        route,
        APP_POLICY,
        "networks = [\"127.0.0.0/8\"]\nroutes = [\"app\"]",
    )
    .await;
    let err = connect_tls(&s.conninfo("alice", "shop", "require"), &s.prepared.pki)
        .await
        .unwrap_err();
    assert_eq!(err.as_db_error().unwrap().code().code(), "28000", "{err}");
    let msg = err.as_db_error().unwrap().message().to_string();
    assert!(msg.contains("may not use database"), "{msg}");
    connect_tls(&s.conninfo("alice", "app", "require"), &s.prepared.pki)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_watched_policy_file_reloads_when_it_changes() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policy.csv");
    std::fs::write(&file, "p, alice, *, main.items, select, allow\n").unwrap();
    let s = SluiceConfig {
        extra: format!("[policy]\nfiles = [\"{}\"]\n", file.display()),
        server_options: "watch_secs = 0.1".into(),
        ..SluiceConfig::default()
    }
    .start()
    .await;
    let client = connect_tls(&s.conninfo("alice", "app", "require"), &s.prepared.pki)
        .await
        .unwrap();
    client.simple_query("SELECT name FROM items").await.unwrap();
    let read = || async {
        match client.simple_query("SELECT name FROM items").await {
            Ok(_) => Some(true),
            Err(e) if tests::clients::sqlstate(&e).as_deref() == Some("42501") => Some(false),
            Err(e) => panic!("{e}"),
        }
    };
    std::fs::write(&file, "p, alice, *, main.other, select, allow\n").unwrap();
    tests::wait_for(
        "the watch to revoke",
        std::time::Duration::from_secs(20),
        || async { (read().await == Some(false)).then_some(()) },
    )
    .await;
    // a broken file is refused and the last good policy stays
    let failures = || async {
        let (_, body) = tests::clients::http_get(s.admin, "/metrics").await;
        tests::clients::metric(&body, "sluice_reload_failures_total ")
    };
    let before = failures().await;
    std::fs::write(&file, "p, alice, *, main.items, select, allow\np, broken\n").unwrap();
    tests::wait_for(
        "the failed reload",
        std::time::Duration::from_secs(20),
        || async { (failures().await > before).then_some(()) },
    )
    .await;
    assert_eq!(read().await, Some(false));
    // fixed: the grant comes back
    std::fs::write(&file, "p, alice, *, main.items, select, allow\n").unwrap();
    tests::wait_for(
        "the watch to grant",
        std::time::Duration::from_secs(20),
        || async { (read().await == Some(true)).then_some(()) },
    )
    .await;
}
