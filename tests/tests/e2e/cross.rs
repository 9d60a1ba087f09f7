//! Cross-protocol routes: MySQL clients on PostgreSQL and SQLite routes, PostgreSQL clients
//! on MariaDB routes, through the neutral result set and its type mapping.

use std::process::Output;

use tests::clients::{connect_tls, mariadb, psql, python};
use tests::servers::{Mariadb, Postgres, PG_ROLE};
use tests::sluice::{my_route, pg_route, SluiceConfig, TestSluice, PASSWORD};

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The mariadb CLI over TLS to database `db` of sluice, batch mode without headers.
async fn cli(s: &TestSluice, db: &str, sql: &str) -> Output {
    let args = [
        "-h".to_string(),
        "127.0.0.1".into(),
        format!("-P{}", s.mysql.port()),
        "-ualice".into(),
        format!("-p{PASSWORD}"),
        "--ssl".into(),
        format!("--ssl-ca={}", s.prepared.pki.ca_cert.display()),
        "--ssl-verify-server-cert".into(),
        "-N".into(),
        "-B".into(),
        db.into(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    mariadb(&args, sql).await
}

#[tokio::test]
async fn a_mysql_client_reads_a_postgresql_route() {
    let pg = Postgres::shared().await;
    let db = pg.create_database("cross").await;
    let owner = tests::clients::connect_plain(&format!(
        "host=127.0.0.1 port={} user={PG_ROLE} password={} dbname={db}",
        pg.port,
        tests::servers::PG_PASSWORD
    ))
    .await
    .unwrap();
    owner
        .batch_execute(
            "CREATE TABLE t (id int PRIMARY KEY, big bigint, n numeric(12,3), f float8, \
               b bool, s text, raw bytea, d date, tm time(3), ts timestamp(6), tz timestamptz, \
               j jsonb, u uuid);
             INSERT INTO t VALUES
               (1, -9007199254740993, -1234.5, 0.25, true, 'héllo 🦀', 'ab', '2024-02-29',
                '13:14:15.5', '2024-12-31 23:59:59.123456', '2024-01-01 10:00:00+02',
                '{\"k\": [1, 2]}', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'),
               (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);",
        )
        .await
        .unwrap();
    let s = SluiceConfig {
        extra: pg_route("pgdb", pg.port, &db, "transaction", ""),
        ..Default::default()
    }
    .start()
    .await;
    let out = ok(&cli(&s, "pgdb", "SELECT * FROM t ORDER BY id").await);
    assert_eq!(
        out,
        "1\t-9007199254740993\t-1234.500\t0.25\t1\théllo 🦀\tab\t2024-02-29\t13:14:15.5\t\
         2024-12-31 23:59:59.123456\t2024-01-01 08:00:00\t{\"k\": [1, 2]}\t\
         a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11\n\
         2\tNULL\tNULL\tNULL\tNULL\tNULL\tNULL\tNULL\tNULL\tNULL\tNULL\tNULL\tNULL\n"
    );
    // Writes, a transaction rolled back, several statements and their results, and the
    // dialect stays PostgreSQL's.
    let out = ok(&cli(
        &s,
        "pgdb",
        "INSERT INTO t (id) VALUES (3); BEGIN; DELETE FROM t; ROLLBACK; \
         SELECT count(*) FROM t; SELECT id::text || '!' FROM t WHERE id = 3",
    )
    .await);
    assert_eq!(out, "3\n3!\n");
    let err = cli(&s, "pgdb", "SELECT * FROM missing").await;
    assert!(!err.status.success());
    let err = String::from_utf8_lossy(&err.stderr);
    assert!(err.contains("ERROR 1146 (42P01)"), "{err}");

    // Python sees the types the column definitions announce.
    let script = r#"
import os, pymysql, decimal, datetime
c = pymysql.connect(host='127.0.0.1', port=int(os.environ['SPORT']), user='alice',
                    password=os.environ['PW'], database='pgdb', autocommit=True,
                    ssl={'ca': os.environ['CA']})
cur = c.cursor()
cur.execute('SELECT id, big, n, f, s, raw, d, ts FROM t WHERE id = 1')
row = cur.fetchone()
assert row == (1, -9007199254740993, decimal.Decimal('-1234.500'), 0.25, 'héllo 🦀', b'ab',
               datetime.date(2024, 2, 29), datetime.datetime(2024, 12, 31, 23, 59, 59, 123456)), row
print('ok')
"#;
    let out = python(
        script,
        &[
            ("CA", s.prepared.pki.ca_cert.display().to_string()),
            ("SPORT", s.mysql.port().to_string()),
            ("PW", PASSWORD.to_string()),
        ],
    )
    .await;
    assert_eq!(ok(&out).trim(), "ok");
    // Nothing the MySQL sessions did is left on the pooled server connections.
    let busy = owner
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND state <> 'idle'",
            &[&db],
        )
        .await
        .unwrap();
    assert_eq!(busy.get::<_, i64>(0), 1, "only this query runs");
}

#[tokio::test]
async fn postgresql_clients_read_a_mariadb_route() {
    let maria = Mariadb::shared().await;
    let db = maria.create_database("cross");
    maria
        .query(&format!(
            "CREATE TABLE {db}.t (id INT PRIMARY KEY, ubi BIGINT UNSIGNED, de DECIMAL(10,2), \
               db DOUBLE, vc VARCHAR(20), bl BLOB, d DATE, dt DATETIME(3), tm TIME) \
               DEFAULT CHARSET utf8mb4; \
             INSERT INTO {db}.t VALUES (1, 18446744073709551615, -12.50, 1.5, 'héllo 🦀', \
               X'00FF', '2024-02-29', '2024-12-31 23:59:59.125', '-838:59:58'), \
               (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)"
        ))
        .await
        .unwrap();
    let s = SluiceConfig {
        extra: my_route("shop", maria.port, &db, "transaction", ""),
        ..Default::default()
    }
    .start()
    .await;
    let conninfo = s.conninfo("alice", "shop", "require");
    let out = psql(
        &conninfo,
        &["-At", "-F", "|", "-c", "SELECT * FROM t ORDER BY id"],
    )
    .await;
    assert_eq!(
        ok(&out),
        "1|18446744073709551615|-12.50|1.5|héllo 🦀|\\x00ff|2024-02-29|2024-12-31 23:59:59.125|-838:59:58\n\
         2||||||||\n"
    );
    let out = psql(
        &conninfo,
        &[
            "-At",
            "-c",
            "INSERT INTO t (id) VALUES (3)",
            "-c",
            "SELECT COUNT(*) FROM t",
        ],
    )
    .await;
    assert_eq!(ok(&out), "INSERT 0 1\n3\n");
    let err = psql(&conninfo, &["-c", "SELECT * FROM missing"]).await;
    assert!(String::from_utf8_lossy(&err.stderr).contains("doesn't exist"));

    // Extended protocol: server-side prepared statements with MySQL placeholders, typed
    // binary results.
    let client = connect_tls(&conninfo, &s.prepared.pki).await.unwrap();
    let rows = client
        .query("SELECT id, vc, bl, db FROM t WHERE id = ?", &[&"1"])
        .await
        .unwrap();
    assert_eq!(rows[0].get::<_, i64>(0), 1);
    assert_eq!(rows[0].get::<_, String>(1), "héllo 🦀");
    assert_eq!(rows[0].get::<_, Vec<u8>>(2), vec![0, 255]);
    assert_eq!(rows[0].get::<_, f64>(3), 1.5);

    // psycopg in binary mode decodes numeric, date and timestamp as sent in binary.
    let script = r#"
import os, psycopg, decimal, datetime
with psycopg.connect(os.environ['DSN']) as c:
    cur = c.cursor(binary=True)
    cur.execute('SELECT de, d, dt, ubi FROM t WHERE id = 1')
    row = cur.fetchone()
    assert row == (decimal.Decimal('-12.50'), datetime.date(2024, 2, 29),
                   datetime.datetime(2024, 12, 31, 23, 59, 59, 125000),
                   decimal.Decimal('18446744073709551615')), row
print('ok')
"#;
    let out = python(
        script,
        &[(
            "DSN",
            format!(
                "{conninfo} sslrootcert={}",
                s.prepared.pki.ca_cert.display()
            ),
        )],
    )
    .await;
    assert_eq!(ok(&out).trim(), "ok");
}
