//! Policy bypasses through the session's own settings and statements the old classifier
//! did not see: lexing under `standard_conforming_strings` and `sql_mode`, client
//! encodings that are not ASCII-safe, identity changes through generic SET, server-wide
//! SET, SHOW, table functions, database switches hidden in a request, and MySQL table
//! name case. Every case asserts the client's error and, on the server, that nothing ran;
//! allowed counterparts keep working.

use tests::clients::connect_tls;
use tests::servers::Mariadb;
use tests::sluice::{my_route, pg_route, TestSluice, PASSWORD};

use crate::policy::{fingerprint, pg_fixture, start_with, APP_POLICY};

async fn pg_denied(client: &impl tokio_postgres::GenericClient, sql: &str) {
    let err = client
        .simple_query(sql)
        .await
        .expect_err(&format!("denied: {sql}"));
    let db = err.as_db_error().unwrap_or_else(|| panic!("{sql}: {err}"));
    assert_eq!(db.code().code(), "42501", "{sql}: {db}");
}

#[tokio::test]
async fn postgresql_session_settings_cannot_hide_statements_from_the_policy() {
    let (pg, db, owner) = pg_fixture().await;
    let s = start_with(
        pg_route("shop", pg.port, &db, "session", ""),
        APP_POLICY,
        "",
    )
    .await;
    let client = connect_tls(&s.conninfo("alice", "shop", "require"), &s.prepared.pki)
        .await
        .unwrap();
    let before = fingerprint(&owner).await;

    // with standard_conforming_strings off the server reads `\'` as a quote: the call
    // that sluice would have read as part of a string runs (it deletes from app.audit)
    let hidden = r"SELECT 'a\' , ' , (SELECT app.f()) --'";
    client.simple_query(hidden).await.unwrap();
    client
        .simple_query("SET standard_conforming_strings = off")
        .await
        .unwrap();
    pg_denied(&client, hidden).await;
    // inside a transaction sluice follows the server's report of the setting
    client
        .batch_execute("BEGIN; SET standard_conforming_strings = on; ROLLBACK")
        .await
        .unwrap();
    pg_denied(&client, hidden).await;
    // text that reads the same either way still runs
    let rows = client.simple_query(r"SELECT 'it\'s'").await.unwrap();
    assert!(!rows.is_empty());

    // generic SET of the identity, server-side functions in FROM
    for sql in [
        "SET \"role\" TO postgres",
        "SET role = postgres",
        "SET session_authorization = postgres",
        "RESET ROLE",
        "RESET ALL",
        "SELECT * FROM app.orders, LATERAL app.f() AS x",
        "SELECT * FROM LATERAL pg_ls_dir('.')",
        "SELECT * FROM app.orders, LATERAL pg_read_file('/etc/passwd') AS x",
        "SELECT * FROM query_to_xml('select * from public.secrets', true, true, '')",
        "SELECT * FROM set_config('role', 'postgres', false)",
        "SELECT * FROM nextval('public.seq')",
        "SET client_encoding = 'SJIS'",
        "SET NAMES 'BIG5'",
        "SET client_encoding TO gbk",
    ] {
        pg_denied(&client, sql).await;
    }
    client
        .simple_query("SET client_encoding = 'LATIN1'")
        .await
        .unwrap();
    client
        .simple_query("SELECT * FROM app.orders, generate_series(1, 2) AS g")
        .await
        .unwrap();
    assert_eq!(fingerprint(&owner).await, before, "a denied statement ran");

    // an encoding that is not ASCII-safe in the startup packet: every statement is refused
    let out = tokio::process::Command::new("psql")
        .args([
            "-X",
            "-At",
            &s.conninfo("alice", "shop", "require"),
            "-c",
            "SELECT n FROM app.orders",
        ])
        .env("PGPASSWORD", PASSWORD)
        .env("PGCLIENTENCODING", "SJIS")
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "SJIS session ran a statement");
    assert!(stderr.contains("not ASCII-safe"), "{stderr}");
    assert_eq!(fingerprint(&owner).await, before);
}

/// Runs `statements` (separated by `----`; `RECONNECT` starts a new session) through
/// PyMySQL with multi-statements on; one line per statement: `ok` or the error code.
async fn pymysql(s: &TestSluice, database: &str, statements: &[&str]) -> Vec<String> {
    let script = r#"
import os, sys, pymysql
from pymysql.constants import CLIENT
def connect():
    return pymysql.connect(host="127.0.0.1", port=int(os.environ["PORT"]), user="alice",
                           password=os.environ["PW"], database=os.environ["DB"],
                           autocommit=True, client_flag=CLIENT.MULTI_STATEMENTS)
c = connect()
for sql in sys.stdin.read().split("\n----\n"):
    if sql == "RECONNECT":
        c.close()
        c = connect()
        print("reconnected")
        continue
    try:
        cur = c.cursor()
        cur.execute(sql)
        while cur.nextset():
            pass
        print("ok")
    except pymysql.MySQLError as e:
        print(e.args[0])
"#;
    let out = tests::clients::python_stdin(
        script,
        &[
            ("PORT", s.mysql.port().to_string()),
            ("PW", PASSWORD.to_string()),
            ("DB", database.to_string()),
        ],
        &statements.join("\n----\n"),
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn mysql_session_settings_and_statements_cannot_escape_the_policy() {
    let my = Mariadb::shared().await;
    let db = my.create_database("lexing");
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
    let s = start_with(extra, &policy, "routes = [\"shop\"]").await;
    // (statement, expected answer); the hidden DELETE would remove audit rows
    let cases: &[(&str, &str)] = &[
        (r#"SELECT "a\"; DELETE FROM audit; -- ""#, "ok"),
        ("SET sql_mode = 'ANSI_QUOTES'", "ok"),
        (r#"SELECT "a\"; DELETE FROM audit; -- ""#, "1142"),
        ("SELECT \"n\" FROM orders", "ok"),
        ("SET sql_mode = 'ANSI_QUOTES'; SELECT 1", "1142"),
        ("SET sql_mode = CONCAT(@@sql_mode, ',ANSI_QUOTES')", "1142"),
        ("SET sql_mode = 'ORACLE'", "1142"),
        ("RECONNECT", "reconnected"),
        ("SET SESSION sql_mode = 'NO_BACKSLASH_ESCAPES'", "ok"),
        (r"SELECT 'a\'; DELETE FROM audit; -- '", "1142"),
        (r"SELECT 'C:\'", "ok"),
        ("RECONNECT", "reconnected"),
        ("SET NAMES gbk", "1142"),
        ("SET character_set_client = sjis", "1142"),
        ("SET NAMES big5 COLLATE big5_bin", "1142"),
        ("SET NAMES utf8mb4", "ok"),
        ("SET GLOBAL max_connections = 1000", "1142"),
        ("SET @@global.read_only = 1", "1142"),
        ("SET @x = 1, @@global.read_only = 1", "1142"),
        ("SET @@GLOBAL.sql_mode = 'ANSI'", "1142"),
        ("SET PASSWORD = PASSWORD('x')", "1142"),
        ("SHOW GRANTS", "1142"),
        ("SHOW GRANTS FOR root@localhost", "1142"),
        ("SHOW DATABASES", "1142"),
        ("SHOW TABLE STATUS FROM mysql", "1142"),
        ("SHOW TABLES FROM mysql", "1142"),
        ("SHOW INDEX FROM mysql.user", "1142"),
        ("SHOW COLUMNS FROM mysql.user", "1142"),
        ("SHOW ENGINE INNODB STATUS", "1142"),
        ("SHOW PROCEDURE STATUS", "1142"),
        ("SHOW GLOBAL VARIABLES", "1142"),
        ("SHOW TABLES", "ok"),
        ("SHOW INDEX FROM orders", "ok"),
        ("SHOW WARNINGS", "ok"),
        ("SELECT 1; USE elsewhere", "1142"),
        ("SELECT 1; USE mysql", "1142"),
        ("SELECT n FROM orders", "ok"),
        ("PREPARE s FROM 'SELECT n FROM orders'", "ok"),
        ("EXECUTE s", "ok"),
        ("PREPARE d FROM 'DELETE FROM audit'", "1142"),
    ];
    let statements: Vec<&str> = cases.iter().map(|c| c.0).collect();
    let lines = pymysql(&s, "shop", &statements).await;
    assert_eq!(lines.len(), cases.len(), "{lines:?}");
    for ((sql, want), got) in cases.iter().zip(&lines) {
        if sql.starts_with("SELECT \"a\\\"") && *want == "ok" {
            // read as a string by the default sql_mode: a plain SELECT of one value
            assert!(got == "ok" || got == "1064", "{sql}: {got}");
            continue;
        }
        assert_eq!(got, want, "{sql}");
    }
    let state = my
        .sql(&format!(
            "SELECT (SELECT count(*) FROM {db}.audit), (SELECT count(*) FROM {db}.orders)"
        ))
        .unwrap();
    assert_eq!(state.trim(), "2\t1", "a denied statement ran");
}

#[tokio::test]
async fn mysql_table_names_are_checked_with_the_servers_case_rules() {
    let my = Mariadb::shared().await;
    let folding = my
        .sql("SELECT @@lower_case_table_names")
        .unwrap()
        .trim()
        .to_string();
    assert_eq!(folding, "0", "the test server compares table names by case");
    let db = my.create_database("case");
    my.sql(&format!(
        "CREATE TABLE {db}.orders (id INT); CREATE TABLE {db}.Orders (secret TEXT);
         INSERT INTO {db}.orders VALUES (1); INSERT INTO {db}.Orders VALUES ('s');"
    ))
    .unwrap();
    let policy =
        format!("p, alice, *, {db}.orders, select, allow\np, alice, *, *, session, allow\n");
    let s = start_with(my_route("shop", my.port, &db, "session", ""), &policy, "").await;
    let lines = pymysql(
        &s,
        "shop",
        &[
            "SELECT * FROM Orders",
            &format!("SELECT * FROM {db}.Orders"),
            "SELECT * FROM `Orders`",
            "SELECT * FROM orders",
            &format!("SELECT * FROM {db}.orders"),
        ],
    )
    .await;
    assert_eq!(lines, ["1142", "1142", "1142", "ok", "ok"]);
}

#[tokio::test]
async fn a_reload_stops_portals_bound_and_cursors_declared_before_it() {
    let (pg, db, _owner) = pg_fixture().await;
    let s = start_with(
        pg_route("shop", pg.port, &db, "session", ""),
        APP_POLICY,
        "",
    )
    .await;
    let mut client = connect_tls(&s.conninfo("alice", "shop", "require"), &s.prepared.pki)
        .await
        .unwrap();
    let stmt = client
        .prepare("SELECT n FROM app.orders WHERE id = 1")
        .await
        .unwrap();
    let tx = client.transaction().await.unwrap();
    let portal = tx.bind(&stmt, &[]).await.unwrap();
    tx.batch_execute("DECLARE c CURSOR FOR SELECT n FROM app.orders")
        .await
        .unwrap();
    // allowed before the reload
    let rows = tx.simple_query("FETCH 1 FROM c").await.unwrap();
    assert!(rows
        .iter()
        .any(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(_))));

    let file = crate::policy::policy_file(&s);
    let revoked = format!("{APP_POLICY}p, app_rw, *, app.orders, select, deny\n");
    std::fs::write(&file, revoked).unwrap();
    let (status, body) = tests::clients::http_post(s.admin, "/reload").await;
    assert!(status.contains("200"), "{status} {body}");

    let err = tx.query_portal(&portal, 1).await.unwrap_err();
    assert_eq!(err.as_db_error().map(|d| d.code().code()), Some("42501"));
    drop(tx);
    let tx = client.transaction().await.unwrap();
    tx.batch_execute("DECLARE d CURSOR FOR SELECT 1")
        .await
        .unwrap();
    tx.simple_query("FETCH 1 FROM d").await.unwrap();
    drop(tx);
    let tx = client.transaction().await.unwrap();
    pg_denied(&tx, "DECLARE c CURSOR FOR SELECT n FROM app.orders").await;
    drop(tx);
    // a cursor declared before the reload, fetched after it
    client
        .batch_execute("BEGIN; DECLARE e CURSOR FOR SELECT id FROM app.audit")
        .await
        .unwrap();
    std::fs::write(
        &file,
        format!("{APP_POLICY}p, app_rw, *, app.audit, select, deny\n"),
    )
    .unwrap();
    let (status, _) = tests::clients::http_post(s.admin, "/reload").await;
    assert!(status.contains("200"));
    pg_denied(&client, "FETCH 1 FROM e").await;
    pg_denied(&client, "FETCH 1 FROM never_declared").await;
}

#[tokio::test]
async fn every_refusal_is_audited_with_its_action_and_objects() {
    let (pg, db, _owner) = pg_fixture().await;
    let my = Mariadb::shared().await;
    let mydb = my.create_database("refusals");
    my.sql(&format!("CREATE TABLE {mydb}.orders (id INT PRIMARY KEY);"))
        .unwrap();
    let dir = tempfile::tempdir().unwrap().keep();
    let log = dir.join("audit.jsonl");
    let extra = format!(
        "{}{}\n[audit]\nenabled = true\nsink = \"{}\"\nstatements = \"full\"\n",
        pg_route("shop", pg.port, &db, "session", ""),
        my_route("myshop", my.port, &mydb, "transaction", ""),
        log.display()
    );
    let policy = format!("{APP_POLICY}p, app_rw, myshop, {mydb}.*, select, allow\n");
    let s = start_with(extra, &policy, "routes = [\"shop\", \"myshop\"]").await;
    let client = connect_tls(&s.conninfo("alice", "shop", "require"), &s.prepared.pki)
        .await
        .unwrap();
    // a policy denial names the statement's accesses; an unparsable one says `other`
    pg_denied(&client, "SELECT * FROM public.secrets").await;
    pg_denied(&client, "SELEC garbage").await;
    // a Bind refused after a reload
    let stmt = client.prepare("SELECT n FROM app.orders").await.unwrap();
    let file = crate::policy::policy_file(&s);
    std::fs::write(
        &file,
        format!("{policy}p, app_rw, *, app.orders, select, deny\n"),
    )
    .unwrap();
    let (status, _) = tests::clients::http_post(s.admin, "/reload").await;
    assert!(status.contains("200"));
    client.query(&stmt, &[]).await.unwrap_err();

    let script = r#"
import os, pymysql
c = pymysql.connect(host="127.0.0.1", port=int(os.environ["PORT"]), user="alice",
                    password=os.environ["PW"], database="myshop", autocommit=True,
                    local_infile=True)
cur = c.cursor()
for sql in ["SELECT 1; SELECT 2", "LOAD DATA LOCAL INFILE '/etc/hostname' INTO TABLE orders",
            "KILL 999999", "USE elsewhere"]:
    try:
        cur.execute(sql)
        print("ok")
    except pymysql.MySQLError as e:
        print(e.args[0])
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
    assert_eq!(
        text.lines().collect::<Vec<_>>(),
        ["1064", "1148", "1094", "1044"],
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events = tests::audit_events(&log, 10).await;
    let denials: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["event"] == "statement" && e["decision"] == "deny")
        .collect();
    let find = |text: &str| {
        denials
            .iter()
            .find(|e| e["statement"] == text)
            .unwrap_or_else(|| panic!("no denial of {text}: {events:#?}"))
    };
    let secrets = find("SELECT * FROM public.secrets");
    assert_eq!(secrets["action"][0], "select");
    assert_eq!(secrets["objects"][0], "select:public.secrets");
    assert_eq!(find("SELEC garbage")["action"][0], "other");
    assert_eq!(
        find("SELECT n FROM app.orders")["objects"][0],
        "select:app.orders"
    );
    assert_eq!(find("SELECT 1; SELECT 2")["action"][0], "other");
    assert_eq!(
        find("LOAD DATA LOCAL INFILE '/etc/hostname' INTO TABLE orders")["action"][0],
        "admin"
    );
    assert_eq!(find("KILL 999999")["action"][0], "admin");
    let switch = find("USE `elsewhere`");
    assert_eq!(switch["action"][0], "session");
    assert_eq!(switch["objects"][0], "session:elsewhere");
}
