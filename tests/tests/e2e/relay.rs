//! PostgreSQL routes: the byte-faithful relay, pooling modes, prepared statements in
//! transaction mode, cancel, session-state safety and backend failure, against real
//! ephemeral PostgreSQL servers and real clients.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use tests::clients::{connect_tls, psql, psql_interactive, psql_with_input, sqlstate};
use tests::servers::{Postgres, PG_MD5_ROLE, PG_PASSWORD, PG_ROLE};
use tests::sluice::{pg_route, pg_route_as, SluiceConfig, TestSluice};
use tests::wait_for;
use tokio_postgres::types::{FromSql, Type};
use tokio_postgres::{Client, SimpleQueryMessage};

struct Setup {
    pg: Arc<Postgres>,
    db: String,
    s: TestSluice,
}

impl Setup {
    async fn new(mode: &str, opts: &str) -> Setup {
        let pg = Postgres::shared().await;
        let db = pg.create_database("relay").await;
        let s = SluiceConfig {
            extra: pg_route("pgapp", pg.port, &db, mode, opts),
            ..Default::default()
        }
        .start()
        .await;
        Setup { pg, db, s }
    }

    /// A conninfo straight to the server, as the backend role.
    fn direct_conninfo(&self) -> String {
        direct_conninfo(&self.pg, &self.db)
    }

    async fn direct(&self) -> Client {
        tests::clients::connect_plain(&self.direct_conninfo())
            .await
            .expect("direct connection")
    }

    async fn admin(&self) -> Client {
        tests::clients::connect_plain(&self.pg.conninfo(&self.db))
            .await
            .expect("superuser connection")
    }

    async fn client(&self) -> Client {
        connect_tls(&self.conninfo(), &self.s.prepared.pki)
            .await
            .expect("connection through sluice")
    }

    fn conninfo(&self) -> String {
        self.s.conninfo("alice", "pgapp", "require")
    }
}

fn direct_conninfo(pg: &Postgres, db: &str) -> String {
    format!(
        "host=127.0.0.1 port={} user={PG_ROLE} password={PG_PASSWORD} dbname={db}",
        pg.port
    )
}

/// Any value, as the exact bytes the server sent.
#[derive(Debug, PartialEq)]
struct Raw(Option<Vec<u8>>);

impl<'a> FromSql<'a> for Raw {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(Some(raw.to_vec())))
    }

    fn from_sql_null(_: &Type) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(None))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

async fn text_rows(c: &Client, sql: &str) -> Vec<Vec<Option<String>>> {
    c.simple_query(sql)
        .await
        .expect("simple query")
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => {
                Some((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect())
            }
            _ => None,
        })
        .collect()
}

async fn binary_rows(c: &Client, sql: &str) -> (Vec<Type>, Vec<Vec<Raw>>) {
    let rows = c.query(sql, &[]).await.expect("extended query");
    let types = rows
        .first()
        .map(|r| r.columns().iter().map(|c| c.type_().clone()).collect())
        .unwrap_or_default();
    let values = rows
        .iter()
        .map(|r| (0..r.len()).map(|i| r.get::<_, Raw>(i)).collect())
        .collect();
    (types, values)
}

const BATTERY: &str = "
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE battery (
  id int PRIMARY KEY, i2 int2, i4 int4, i8 int8, n numeric, f4 float4, f8 float8,
  t text, vc varchar(20), b bytea, bo bool, d date, ts timestamp, tz timestamptz,
  iv interval, u uuid, j json, jb jsonb, ai int[], at text[], m mood, tm time, ip inet);
INSERT INTO battery VALUES
 (1, -32768, 2147483647, -9223372036854775808, 12345678901234567890.123456789, 1.5, -2.25e-300,
  'héllo ✓ \"q\"', 'short', '\\x00ff10', true, '2024-02-29', '2024-02-29 23:59:59.123456',
  '2024-02-29 23:59:59.5+05:30', '1 year 2 mons 3 days 04:05:06.7', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
  '{\"a\": [1, 2]}', '{\"b\": {\"c\": null}}', '{1,NULL,3}', '{\"x y\",z}', 'happy', '12:34:56.789', '10.1.2.3/8'),
 (2, 0, 0, 0, 'NaN', 'Infinity', '-Infinity', '', '', '\\x', false, 'infinity', '-infinity',
  'infinity', '-1 days', '00000000-0000-0000-0000-000000000000', 'null', '[]', '{}', '{}', 'sad',
  '00:00', '::1'),
 (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL, NULL, NULL);
";

#[tokio::test]
async fn a_type_battery_returns_the_same_bytes_as_a_direct_connection() {
    let t = Setup::new("transaction", "pool_size = 2").await;
    let direct = t.direct().await;
    direct.batch_execute(BATTERY).await.unwrap();
    let via = t.client().await;
    let q = "SELECT * FROM battery ORDER BY id";
    let text = text_rows(&via, q).await;
    assert_eq!(text, text_rows(&direct, q).await);
    assert_eq!(text.len(), 3);
    assert_eq!(binary_rows(&via, q).await, binary_rows(&direct, q).await);
    let psql_args = ["-A", "-c", q];
    let (a, b) = (
        psql(&t.conninfo(), &psql_args).await,
        psql(&t.direct_conninfo(), &psql_args).await,
    );
    assert!(a.status.success(), "{}", String::from_utf8_lossy(&a.stderr));
    assert_eq!(a.stdout, b.stdout);
}

#[tokio::test]
async fn errors_and_notices_keep_every_field() {
    let t = Setup::new("transaction", "").await;
    let (via, direct) = (t.client().await, t.direct().await);
    direct
        .batch_execute("CREATE TABLE u (id int PRIMARY KEY); INSERT INTO u VALUES (1)")
        .await
        .unwrap();
    for sql in [
        "INSERT INTO u VALUES (1)",
        "SELECT id FROM u WHERE nosuchcolumn = 1",
        "SELECT 1/0",
        "SELEC 1",
    ] {
        let a = via.simple_query(sql).await.unwrap_err();
        let b = direct.simple_query(sql).await.unwrap_err();
        let (a, b) = (a.as_db_error().unwrap(), b.as_db_error().unwrap());
        assert_eq!(
            (a.code(), a.message(), a.detail(), a.hint(), a.position()),
            (b.code(), b.message(), b.detail(), b.hint(), b.position()),
            "{sql}"
        );
    }
    let notice = "DO $$BEGIN RAISE NOTICE 'careful' USING HINT = 'mind the step'; END$$";
    let out = psql(&t.conninfo(), &["-c", notice]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("NOTICE:  careful"), "{stderr}");
    // Empty queries and multi-statement queries.
    assert_eq!(
        format!("{:?}", via.simple_query("").await.unwrap()),
        format!("{:?}", direct.simple_query("").await.unwrap())
    );
    let rows = text_rows(&via, "SELECT 1; SELECT 2, 3; ;").await;
    assert_eq!(
        rows,
        vec![
            vec![Some("1".into())],
            vec![Some("2".into()), Some("3".into())]
        ]
    );
}

#[tokio::test]
async fn copy_in_and_out_round_trip_a_hundred_thousand_rows() {
    let t = Setup::new("transaction", "").await;
    t.direct()
        .await
        .batch_execute(
            "CREATE TABLE big AS SELECT g AS id, md5(g::text) AS v, now() AS at \
             FROM generate_series(1, 100000) g; CREATE TABLE big2 (LIKE big)",
        )
        .await
        .unwrap();
    let copy_out = ["-c", "COPY big TO STDOUT"];
    let out = psql(&t.conninfo(), &copy_out).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let direct_out = psql(&t.direct_conninfo(), &copy_out).await;
    assert_eq!(out.stdout.len(), direct_out.stdout.len());
    assert!(out.stdout == direct_out.stdout, "COPY TO output differs");
    assert_eq!(out.stdout.iter().filter(|&&b| b == b'\n').count(), 100_000);
    let copied = psql_with_input(&t.conninfo(), &["-c", "COPY big2 FROM STDIN"], &out.stdout).await;
    assert!(
        copied.status.success(),
        "{}",
        String::from_utf8_lossy(&copied.stderr)
    );
    let check = "SELECT count(*), md5(string_agg(id || v || at, ',' ORDER BY id)) FROM ";
    let direct = t.direct().await;
    assert_eq!(
        text_rows(&direct, &format!("{check} big")).await,
        text_rows(&direct, &format!("{check} big2")).await
    );
    // COPY through the extended protocol too.
    let via = t.client().await;
    let stream = via.copy_out("COPY big TO STDOUT").await.unwrap();
    let sizes: Vec<usize> = stream.map_ok(|b| b.len()).try_collect().await.unwrap();
    assert_eq!(sizes.iter().sum::<usize>(), out.stdout.len());
}

#[tokio::test]
async fn a_long_pg_sleep_is_cancelled_through_sluice() {
    let t = Setup::new("transaction", "").await;
    let c = t.client().await;
    let token = c.cancel_token();
    let c = Arc::new(c);
    let runner = c.clone();
    let started = Instant::now();
    let slow = tokio::spawn(async move { runner.simple_query("SELECT pg_sleep(60)").await });
    let tls = tokio_postgres_rustls::MakeRustlsConnect::new(t.s.prepared.pki.client_config());
    let result = loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        token.cancel_query(tls.clone()).await.unwrap();
        if slow.is_finished() {
            break slow.await.unwrap();
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "cancel had no effect"
        );
    };
    let e = result.expect_err("pg_sleep was cancelled");
    assert_eq!(sqlstate(&e).as_deref(), Some("57014"));
    assert!(started.elapsed() < Duration::from_secs(20));
    // The session goes on.
    assert_eq!(
        text_rows(&c, "SELECT 7").await,
        vec![vec![Some("7".into())]]
    );
}

#[tokio::test]
async fn fifty_clients_share_a_pool_of_five_in_transaction_mode() {
    let t = Setup::new("transaction", "pool_size = 5\ncheckout_timeout_secs = 30").await;
    t.direct()
        .await
        .batch_execute(
            "CREATE TABLE counters (id int PRIMARY KEY, n int NOT NULL);
             INSERT INTO counters SELECT g, 0 FROM generate_series(1, 10) g;
             CREATE TABLE log (client int, i int, seen int)",
        )
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for client in 0..50i32 {
        let conninfo = t.conninfo();
        let pki = t.s.prepared.pki.client_config();
        tasks.push(tokio::spawn(async move {
            let tls = tokio_postgres_rustls::MakeRustlsConnect::new(pki);
            let (mut c, conn) = tokio_postgres::connect(&conninfo, tls).await.unwrap();
            tokio::spawn(conn);
            let read = c
                .prepare("SELECT n FROM counters WHERE id = $1")
                .await
                .unwrap();
            for i in 0..10i32 {
                let id = (client + i) % 10 + 1;
                let tx = c.transaction().await.unwrap();
                tx.execute("UPDATE counters SET n = n + 1 WHERE id = $1", &[&id])
                    .await
                    .unwrap();
                let seen: i32 = tx.query_one(&read, &[&id]).await.unwrap().get(0);
                tx.execute("INSERT INTO log VALUES ($1, $2, $3)", &[&client, &i, &seen])
                    .await
                    .unwrap();
                tx.commit().await.unwrap();
                let rows = c.simple_query("SELECT 1").await.unwrap();
                assert_eq!(rows.len(), 3, "row description, row, command complete");
            }
        }));
    }
    for task in tasks {
        task.await.expect("client task");
    }
    let direct = t.direct().await;
    let sums = text_rows(
        &direct,
        "SELECT sum(n), (SELECT count(*) FROM log), \
         (SELECT count(DISTINCT seen) FROM log) FROM counters",
    )
    .await;
    assert_eq!(sums[0][0].as_deref(), Some("500"));
    assert_eq!(sums[0][1].as_deref(), Some("500"));
    assert_eq!(
        sums[0][2].as_deref(),
        Some("50"),
        "each counter value was seen once"
    );
    let server_conns = text_rows(
        &t.admin().await,
        &format!(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = '{PG_ROLE}' AND datname = '{}'",
            t.db
        ),
    )
    .await;
    let n: i32 = server_conns[0][0].as_deref().unwrap().parse().unwrap();
    assert!(
        n <= 6,
        "{n} server connections for a pool of 5 (plus the direct one)"
    );
}

#[tokio::test]
async fn prepared_statements_survive_a_change_of_server_connection() {
    let t = Setup::new("transaction", "pool_size = 2").await;
    let c = t.client().await;
    let admin = t.admin().await;
    let st = c
        .prepare("SELECT pg_backend_pid(), $1::int + 1")
        .await
        .unwrap();
    let mut pids = Vec::new();
    for i in 0..4i32 {
        let row = c.query_one(&st, &[&i]).await.unwrap();
        assert_eq!(row.get::<_, i32>(1), i + 1);
        let pid: i32 = row.get(0);
        pids.push(pid);
        // Take that server connection away: the next run lands on another one.
        admin
            .execute("SELECT pg_terminate_backend($1)", &[&pid])
            .await
            .unwrap();
        wait_for(
            "the server process to exit",
            Duration::from_secs(10),
            || {
                let admin = &admin;
                async move {
                    let n = admin
                        .query_one(
                            "SELECT count(*) FROM pg_stat_activity WHERE pid = $1",
                            &[&pid],
                        )
                        .await
                        .unwrap()
                        .get::<_, i64>(0);
                    (n == 0).then_some(())
                }
            },
        )
        .await;
    }
    pids.sort();
    pids.dedup();
    assert_eq!(pids.len(), 4, "each run used a new server connection");
    // Unnamed statements too, and closing a statement frees only the client's name.
    let rows = c.query("SELECT $1::text || 'x'", &[&"a"]).await.unwrap();
    assert_eq!(rows[0].get::<_, String>(0), "ax");
    drop(st);
    let again = c
        .prepare("SELECT pg_backend_pid(), $1::int + 1")
        .await
        .unwrap();
    assert_eq!(
        c.query_one(&again, &[&41i32])
            .await
            .unwrap()
            .get::<_, i32>(1),
        42
    );
}

#[tokio::test]
async fn session_commands_are_tracked_or_refused_in_transaction_mode() {
    let t = Setup::new("transaction", "pool_size = 2").await;
    t.direct()
        .await
        .batch_execute("CREATE SCHEMA s1; CREATE TABLE s1.only_here (x int); INSERT INTO s1.only_here VALUES (42)")
        .await
        .unwrap();
    let a = t.client().await;
    let b = t.client().await;
    a.batch_execute("SET search_path = s1, public")
        .await
        .unwrap();
    a.batch_execute("SET application_name = 'client-a'")
        .await
        .unwrap();
    for _ in 0..4 {
        // b runs on whichever server connection a used; a's settings never reach it.
        let shown = text_rows(&b, "SHOW search_path").await;
        assert_eq!(shown[0][0].as_deref(), Some("\"$user\", public"));
        let app = text_rows(&b, "SHOW application_name").await;
        assert_ne!(app[0][0].as_deref(), Some("client-a"));
        let tx = text_rows(&b, "BEGIN; SELECT 1; COMMIT").await;
        assert_eq!(tx.len(), 1);
        let x = text_rows(&a, "SELECT x FROM only_here").await;
        assert_eq!(x[0][0].as_deref(), Some("42"));
        let app = text_rows(&a, "SHOW application_name").await;
        assert_eq!(app[0][0].as_deref(), Some("client-a"));
    }
    for refused in [
        "PREPARE p AS SELECT 1",
        "SET work_mem = '8MB'",
        "SELECT 1; DEALLOCATE ALL",
    ] {
        let e = a.simple_query(refused).await.unwrap_err();
        assert_eq!(sqlstate(&e).as_deref(), Some("0A000"), "{refused}");
    }
    a.batch_execute("BEGIN; SET LOCAL work_mem = '8MB'; COMMIT")
        .await
        .unwrap();
    assert_eq!(text_rows(&a, "SELECT 5").await[0][0].as_deref(), Some("5"));
}

#[tokio::test]
async fn session_mode_resets_the_server_connection_between_clients() {
    let t = Setup::new("session", "pool_size = 1").await;
    let a = t.client().await;
    a.batch_execute(
        "PREPARE p AS SELECT 1; CREATE TEMP TABLE scratch (x int); SET work_mem = '8MB'",
    )
    .await
    .unwrap();
    assert_eq!(text_rows(&a, "EXECUTE p").await[0][0].as_deref(), Some("1"));
    drop(a);
    let b = wait_for(
        "a's server connection to return",
        Duration::from_secs(10),
        || async { connect_tls(&t.conninfo(), &t.s.prepared.pki).await.ok() },
    )
    .await;
    let left = text_rows(
        &b,
        "SELECT (SELECT count(*) FROM pg_prepared_statements), to_regclass('pg_temp.scratch') IS NULL, current_setting('work_mem')",
    )
    .await;
    assert_eq!(left[0][0].as_deref(), Some("0"));
    assert_eq!(left[0][1].as_deref(), Some("t"));
    assert_eq!(left[0][2].as_deref(), Some("4MB"));
}

async fn backend_sessions(admin: &Client, db: &str, state: &str) -> i64 {
    admin
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND state LIKE $2 AND usename = $3",
            &[&db, &state, &PG_ROLE],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn a_client_killed_inside_a_transaction_leaves_no_lock_behind() {
    let t = Setup::new("transaction", "pool_size = 2").await;
    let direct = t.direct().await;
    direct
        .batch_execute(
            "CREATE TABLE acct (id int PRIMARY KEY, n int); INSERT INTO acct VALUES (1, 0)",
        )
        .await
        .unwrap();
    let admin = t.admin().await;
    let mut psql = psql_interactive(&t.conninfo());
    {
        use tokio::io::AsyncWriteExt;
        let stdin = psql.stdin.as_mut().unwrap();
        stdin
            .write_all(b"BEGIN;\nUPDATE acct SET n = 99 WHERE id = 1;\n")
            .await
            .unwrap();
        stdin.flush().await.unwrap();
    }
    wait_for("the open transaction", Duration::from_secs(10), || async {
        (backend_sessions(&admin, &t.db, "idle in transaction%").await == 1).then_some(())
    })
    .await;
    psql.kill().await.unwrap();
    wait_for(
        "the transaction to be rolled back",
        Duration::from_secs(10),
        || async {
            (backend_sessions(&admin, &t.db, "idle in transaction%").await == 0).then_some(())
        },
    )
    .await;
    direct
        .batch_execute("SET lock_timeout = '2s'")
        .await
        .unwrap();
    direct
        .execute("UPDATE acct SET n = n + 1 WHERE id = 1", &[])
        .await
        .expect("the row is not locked");
    let n: i32 = direct
        .query_one("SELECT n FROM acct", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1, "the killed client's update was rolled back");

    // A client that vanishes mid-query: the query is cancelled, not left running.
    let mut psql = psql_interactive(&t.conninfo());
    {
        use tokio::io::AsyncWriteExt;
        let stdin = psql.stdin.as_mut().unwrap();
        stdin.write_all(b"SELECT pg_sleep(60);\n").await.unwrap();
        stdin.flush().await.unwrap();
    }
    wait_for("the running query", Duration::from_secs(10), || async {
        (backend_sessions(&admin, &t.db, "active").await == 1).then_some(())
    })
    .await;
    psql.kill().await.unwrap();
    wait_for("the query to stop", Duration::from_secs(10), || async {
        (backend_sessions(&admin, &t.db, "active").await == 0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_client_waiting_past_the_checkout_timeout_gets_53300() {
    let t = Setup::new("transaction", "pool_size = 1\ncheckout_timeout_secs = 0.5").await;
    let a = t.client().await;
    let b = t.client().await;
    a.batch_execute("BEGIN").await.unwrap();
    let started = Instant::now();
    let e = b.simple_query("SELECT 1").await.unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("53300"), "{e:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    a.batch_execute("COMMIT").await.unwrap();
    assert_eq!(text_rows(&b, "SELECT 2").await[0][0].as_deref(), Some("2"));
}

#[tokio::test]
async fn md5_authentication_to_the_backend_works() {
    let pg = Postgres::shared().await;
    let db = pg.create_database("md5").await;
    let s = SluiceConfig {
        extra: pg_route_as("pgapp", pg.port, &db, "session", "", PG_MD5_ROLE),
        ..Default::default()
    }
    .start()
    .await;
    let c = connect_tls(&s.conninfo("alice", "pgapp", "require"), &s.prepared.pki)
        .await
        .unwrap();
    let who = text_rows(&c, "SELECT current_user").await;
    assert_eq!(who[0][0].as_deref(), Some(PG_MD5_ROLE));
}

#[tokio::test]
async fn a_backend_that_dies_mid_query_fails_its_client_and_service_resumes() {
    let pg = Postgres::start().await;
    let db = pg.create_database("crash").await;
    let s = SluiceConfig {
        extra: pg_route(
            "pgapp",
            pg.port,
            &db,
            "transaction",
            "checkout_timeout_secs = 2",
        ),
        ..Default::default()
    }
    .start()
    .await;
    let conninfo = s.conninfo("alice", "pgapp", "require");
    let c = connect_tls(&conninfo, &s.prepared.pki).await.unwrap();
    let slow = tokio::spawn(async move { c.simple_query("SELECT pg_sleep(30)").await });
    let admin = tests::clients::connect_plain(&pg.conninfo(&db))
        .await
        .unwrap();
    wait_for("the running query", Duration::from_secs(10), || async {
        (backend_sessions(&admin, &db, "active").await == 1).then_some(())
    })
    .await;
    drop(admin);
    let started = Instant::now();
    pg.stop_immediate();
    let result = tokio::time::timeout(Duration::from_secs(10), slow)
        .await
        .expect("the client hears promptly")
        .unwrap();
    assert!(result.is_err(), "the query failed");
    assert!(started.elapsed() < Duration::from_secs(10));
    // While the server is down, new requests fail fast with 08006.
    let c = connect_tls(&conninfo, &s.prepared.pki).await.unwrap();
    let e = c.simple_query("SELECT 1").await.unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("08006"), "{e:?}");
    pg.restart().await;
    let rows = wait_for("service to resume", Duration::from_secs(20), || async {
        c.simple_query("SELECT 3").await.ok()
    })
    .await;
    assert_eq!(rows.len(), 3);
}

#[tokio::test]
async fn a_backend_down_at_startup_gives_a_prompt_error() {
    let port = tests::free_port();
    let s = SluiceConfig {
        extra: pg_route("pgapp", port, "nothing", "transaction", ""),
        ..Default::default()
    }
    .start()
    .await;
    let started = Instant::now();
    let e = connect_tls(&s.conninfo("alice", "pgapp", "require"), &s.prepared.pki)
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("08006"), "{e:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn pgbench_runs_without_failures_in_every_protocol_mode() {
    let t = Setup::new("transaction", "pool_size = 4").await;
    let pgport = t.pg.port.to_string();
    let init = tests::clients::pgbench(
        &[
            "-i",
            "-s",
            "1",
            "-q",
            "-h",
            "127.0.0.1",
            "-p",
            &pgport,
            "-U",
            PG_ROLE,
            &t.db,
        ],
        PG_PASSWORD,
        "disable",
    )
    .await;
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let port = t.s.pg.port().to_string();
    for mode in ["simple", "extended", "prepared"] {
        let out = tests::clients::pgbench(
            &[
                "-n",
                "-c",
                "8",
                "-j",
                "2",
                "-t",
                "50",
                "-M",
                mode,
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "alice",
                "pgapp",
            ],
            tests::sluice::PASSWORD,
            "require",
        )
        .await;
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{mode}: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.contains("number of transactions actually processed: 400/400"),
            "{mode}: {stdout}"
        );
        assert!(
            stdout.contains("number of failed transactions: 0"),
            "{mode}: {stdout}"
        );
    }
}
