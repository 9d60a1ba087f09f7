//! PostgreSQL routes, fidelity: what a client sees through sluice is what the server sent
//! (types in text and binary, errors, notices, COPY, cancel), against real ephemeral
//! PostgreSQL servers and real clients. Shared setup for the pooling tests lives here too.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use tests::clients::{connect_tls, psql, psql_with_input, sqlstate};
use tests::servers::Postgres;
use tests::sluice::{pg_route, SluiceConfig, TestSluice};
use tokio_postgres::types::{FromSql, Type};
use tokio_postgres::{Client, SimpleQueryMessage};

pub struct Setup {
    pub pg: Arc<Postgres>,
    pub db: String,
    pub s: TestSluice,
}

impl Setup {
    pub async fn new(mode: &str, opts: &str) -> Setup {
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
    pub fn direct_conninfo(&self) -> String {
        direct_conninfo(&self.pg, &self.db)
    }

    pub async fn direct(&self) -> Client {
        tests::clients::connect_plain(&self.direct_conninfo())
            .await
            .expect("direct connection")
    }

    pub async fn admin(&self) -> Client {
        tests::clients::connect_plain(&self.pg.conninfo(&self.db))
            .await
            .expect("superuser connection")
    }

    pub async fn client(&self) -> Client {
        connect_tls(&self.conninfo(), &self.s.prepared.pki)
            .await
            .expect("connection through sluice")
    }

    pub fn conninfo(&self) -> String {
        self.s.conninfo("alice", "pgapp", "require")
    }
}

fn direct_conninfo(pg: &Postgres, db: &str) -> String {
    pg.owner_conninfo(db)
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

pub async fn text_rows(c: &Client, sql: &str) -> Vec<Vec<Option<String>>> {
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
