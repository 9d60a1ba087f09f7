//! PostgreSQL routes, pooling: transaction and session modes, prepared statements and
//! settings across server connections, clean-up after vanished clients, checkout timeouts,
//! backend failure, and pgbench in every protocol mode.

use std::time::{Duration, Instant};

use tests::certs::TestPki;
use tests::clients::{connect_tls, psql_interactive, sqlstate};
use tests::servers::{Postgres, PG_MD5_ROLE, PG_PASSWORD, PG_ROLE};
use tests::sluice::{pg_route, pg_route_as, SluiceConfig};
use tests::wait_for;
use tokio_postgres::Client;

use super::relay::{text_rows, Setup};

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
async fn the_most_recently_returned_server_connection_serves_next() {
    let t = Setup::new("transaction", "pool_size = 2").await;
    let (a, b, c) = (t.client().await, t.client().await, t.client().await);
    // one simple query: one checkout (the extended protocol may take two)
    async fn pid(client: &Client) -> Option<String> {
        text_rows(client, "SELECT pg_backend_pid()").await[0][0].clone()
    }
    for _ in 0..3 {
        // a and b each hold one of the two server connections; a gives its one back first
        a.batch_execute("BEGIN").await.unwrap();
        b.batch_execute("BEGIN").await.unwrap();
        let (pid_a, pid_b) = (pid(&a).await, pid(&b).await);
        assert_ne!(pid_a, pid_b);
        a.batch_execute("COMMIT").await.unwrap();
        b.batch_execute("COMMIT").await.unwrap();
        assert_eq!(
            pid(&c).await,
            pid_b,
            "b's connection, returned last, serves c"
        );
        assert_eq!(pid(&a).await, pid_b, "and a's next statement too");
    }
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

#[tokio::test]
async fn backend_tls_verifies_the_server_certificate_and_name() {
    let pki = TestPki::generate();
    let pg = Postgres::start_tls(&pki).await;
    let db = pg.create_database("tls").await;
    let stranger = TestPki::generate();
    let route = |name: &str, tls: &str| {
        format!(
            "[backends.{name}_pg]\nkind = \"postgres\"\nhost = \"127.0.0.1\"\nport = {port}\n\
             user = \"{PG_ROLE}\"\npassword = \"{PG_PASSWORD}\"\nconnect_timeout_secs = 2\n{tls}\n\
             [routes.{name}]\nbackend = \"{name}_pg\"\ndatabase = \"{db}\"\n\
             pool_mode = \"transaction\"\ncheckout_timeout_secs = 2\n",
            port = pg.port,
        )
    };
    let ca = |p: &TestPki| {
        format!(
            "tls = \"verify-full\"\ntls_ca = \"{}\"",
            p.ca_cert.display()
        )
    };
    let extra = [
        route("good", &ca(&pki)),
        route(
            "named",
            &format!("{}\ntls_server_name = \"localhost\"", ca(&pki)),
        ),
        route("stranger", &ca(&stranger)),
        route(
            "misnamed",
            &format!("{}\ntls_server_name = \"db.example.com\"", ca(&pki)),
        ),
        route("plain", "tls = \"disable\""),
    ]
    .concat();
    let s = SluiceConfig {
        extra,
        ..Default::default()
    }
    .start()
    .await;
    for name in ["good", "named"] {
        let c = connect_tls(&s.conninfo("alice", name, "require"), &s.prepared.pki)
            .await
            .unwrap_or_else(|e| panic!("route {name}: {e:?}"));
        let rows = text_rows(
            &c,
            "SELECT ssl::text, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        )
        .await;
        assert_eq!(rows[0][0].as_deref(), Some("true"), "route {name}");
        assert!(
            rows[0][1].as_deref().unwrap_or("").starts_with("TLSv1."),
            "{rows:?}"
        );
    }
    // An untrusted CA, a name the certificate does not carry, and plaintext (refused by
    // the server's pg_hba) all fail the client promptly with 08006; sluice stays up.
    for (name, why) in [
        ("stranger", "certificate"),
        ("misnamed", "certificate"),
        ("plain", "no encryption"),
    ] {
        let started = Instant::now();
        let e = connect_tls(&s.conninfo("alice", name, "require"), &s.prepared.pki)
            .await
            .unwrap_err();
        assert_eq!(sqlstate(&e).as_deref(), Some("08006"), "{name}: {e:?}");
        let text = format!("{e:?}");
        assert!(text.contains(why), "{name}: {text}");
        assert!(started.elapsed() < Duration::from_secs(5), "{name}");
    }
    let c = connect_tls(&s.conninfo("alice", "good", "require"), &s.prepared.pki)
        .await
        .unwrap();
    assert_eq!(text_rows(&c, "SELECT 1").await[0][0].as_deref(), Some("1"));
}
