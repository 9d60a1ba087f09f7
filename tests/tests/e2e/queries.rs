//! Queries on the embedded SQLite backend through the simple and extended protocols.

use std::time::Duration;

use tests::clients::{connect_tls, pgbench, psql, sqlstate};
use tests::sluice::{SluiceConfig, PASSWORD};
use tokio_postgres::types::Type;
use tokio_postgres::SimpleQueryMessage;

#[tokio::test]
async fn psql_selects_inserts_and_reports_errors() {
    let s = SluiceConfig::default().start().await;
    let conninfo = s.conninfo("alice", "app", "require");
    let out = psql(
        &conninfo,
        &[
            "-At",
            "-c",
            "INSERT INTO items (id, name) VALUES (10, 'fig')",
            "-c",
            "SELECT name FROM items WHERE id = 10",
        ],
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "INSERT 0 1\nfig\n");
    let out = psql(&conninfo, &["-c", "SELECT * FROM missing_table"]).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such table"));
}

#[tokio::test]
async fn typed_values_come_back_in_text_and_binary() {
    let s = SluiceConfig::default().start().await;
    let c = connect_tls(&s.conninfo("alice", "app", "require"), &s.prepared.pki)
        .await
        .unwrap();
    // Extended protocol: tokio-postgres asks for binary results.
    let row = c
        .query_one(
            "SELECT id, name, price, in_stock, data FROM items WHERE id = 1",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.columns()[0].type_(), &Type::INT8);
    assert_eq!(row.get::<_, i64>(0), 1);
    assert_eq!(row.get::<_, String>(1), "apple");
    assert_eq!(row.get::<_, f64>(2), 0.5);
    assert!(row.get::<_, bool>(3));
    assert_eq!(row.get::<_, Vec<u8>>(4), vec![0u8, 255]);
    let row = c
        .query_one("SELECT price, data FROM items WHERE id = 2", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, Option<f64>>(0), Some(0.75));
    assert_eq!(row.get::<_, Option<Vec<u8>>>(1), None);
    // Simple protocol: text results.
    let msgs = c
        .simple_query("SELECT id, price, in_stock, data FROM items WHERE id = 1")
        .await
        .unwrap();
    let SimpleQueryMessage::Row(r) = &msgs[1] else {
        panic!("expected a row: {msgs:?}")
    };
    assert_eq!(
        (r.get(0), r.get(1), r.get(2), r.get(3)),
        (Some("1"), Some("0.5"), Some("t"), Some("\\x00ff"))
    );
}

#[tokio::test]
async fn parameters_bind_through_the_extended_protocol() {
    let s = SluiceConfig::default().start().await;
    let c = connect_tls(&s.conninfo("alice", "app", "require"), &s.prepared.pki)
        .await
        .unwrap();
    let insert = c
        .prepare_typed(
            "INSERT INTO items (id, name, price) VALUES ($1, $2, $3)",
            &[Type::INT8, Type::TEXT, Type::FLOAT8],
        )
        .await
        .unwrap();
    for i in 20..25i64 {
        c.execute(&insert, &[&i, &format!("item {i}"), &(i as f64 / 4.0)])
            .await
            .unwrap();
    }
    let select = c
        .prepare_typed(
            "SELECT name, price FROM items WHERE id >= $1 ORDER BY id",
            &[Type::INT8],
        )
        .await
        .unwrap();
    let rows = c.query(&select, &[&22i64]).await.unwrap();
    let got: Vec<(String, f64)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(
        got,
        vec![
            ("item 22".into(), 5.5),
            ("item 23".into(), 5.75),
            ("item 24".into(), 6.0)
        ]
    );
    // Untyped text parameters compare with integer columns.
    let row = c
        .query_one("SELECT name FROM items WHERE id = $1", &[&"2"])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "pear");
}

#[tokio::test]
async fn transactions_commit_and_roll_back() {
    let s = SluiceConfig::default().start().await;
    let mut c = connect_tls(&s.conninfo("alice", "app", "require"), &s.prepared.pki)
        .await
        .unwrap();
    let tx = c.transaction().await.unwrap();
    tx.simple_query("INSERT INTO items (id, name) VALUES (30, 'gone')")
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    let tx = c.transaction().await.unwrap();
    tx.simple_query("INSERT INTO items (id, name) VALUES (31, 'kept')")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let rows = c
        .simple_query("SELECT id FROM items WHERE id IN (30, 31)")
        .await
        .unwrap();
    let ids: Vec<_> = rows
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        })
        .collect();
    assert_eq!(ids, ["31"]);
}

#[tokio::test]
async fn sqlite_errors_become_postgres_sqlstates_and_the_session_goes_on() {
    let s = SluiceConfig::default().start().await;
    let c = connect_tls(&s.conninfo("alice", "app", "require"), &s.prepared.pki)
        .await
        .unwrap();
    let cases = [
        ("INSERT INTO items (id, name) VALUES (1, 'dup')", "23505"),
        ("INSERT INTO items (id) VALUES (99)", "23502"),
        ("SELECT * FROM nowhere", "42P01"),
        ("SELECT nope FROM items", "42703"),
        ("SELEKT 1", "42601"),
    ];
    for (sql, code) in cases {
        let e = c
            .simple_query(sql)
            .await
            .err()
            .unwrap_or_else(|| panic!("{sql} should fail"));
        assert_eq!(sqlstate(&e).as_deref(), Some(code), "{sql}");
        let e = c
            .query(sql, &[])
            .await
            .err()
            .unwrap_or_else(|| panic!("{sql} should fail"));
        assert_eq!(sqlstate(&e).as_deref(), Some(code), "{sql} (extended)");
    }
    assert_eq!(c.simple_query("SELECT 1").await.unwrap().len(), 3);
}

#[tokio::test]
async fn multi_statement_queries_return_every_result_and_empty_queries_are_answered() {
    let s = SluiceConfig::default().start().await;
    let c = connect_tls(&s.conninfo("alice", "app", "require"), &s.prepared.pki)
        .await
        .unwrap();
    let msgs = c
        .simple_query("SELECT 1; SELECT 2, 3; UPDATE items SET price = 1 WHERE id = 3")
        .await
        .unwrap();
    let completes: Vec<u64> = msgs
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::CommandComplete(n) => Some(*n),
            _ => None,
        })
        .collect();
    assert_eq!(completes, [1, 1, 1]);
    assert!(c.simple_query("").await.unwrap().is_empty() || c.simple_query(";").await.is_ok());
}

#[tokio::test]
async fn pgbench_runs_an_extended_protocol_script() {
    let s = SluiceConfig::default().start().await;
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("point.sql");
    std::fs::write(
        &script,
        "\\set id random(1, 3)\nSELECT name, price FROM items WHERE id = :id;\n",
    )
    .unwrap();
    for mode in ["extended", "prepared"] {
        let port = s.pg.port().to_string();
        let out = pgbench(
            &[
                "-n",
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "alice",
                "-M",
                mode,
                "-c",
                "4",
                "-t",
                "50",
                "-f",
                script.to_str().unwrap(),
                "app",
            ],
            PASSWORD,
            "require",
        )
        .await;
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("processed: 200/200"), "{stdout}");
    }
}

#[tokio::test]
async fn a_running_query_is_cancelled_with_the_key_sluice_issued() {
    let s = SluiceConfig::default().start().await;
    let c = connect_tls(&s.conninfo("alice", "app", "require"), &s.prepared.pki)
        .await
        .unwrap();
    let token = c.cancel_token();
    let slow = tokio::spawn(async move {
        c.simple_query(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT count(*) FROM n",
        )
        .await
    });
    let tls = tokio_postgres_rustls::MakeRustlsConnect::new(s.prepared.pki.client_config());
    // Cancel until the query ends: the first request may arrive before the query starts.
    let result = loop {
        token.cancel_query(tls.clone()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        if slow.is_finished() {
            break slow.await.unwrap();
        }
    };
    let e = result.expect_err("the endless query was cancelled");
    assert_eq!(sqlstate(&e).as_deref(), Some("57014"));
}

#[tokio::test]
async fn a_forged_cancel_key_cancels_nothing() {
    let s = SluiceConfig::default().start().await;
    let c = connect_tls(&s.conninfo("alice", "app", "require"), &s.prepared.pki)
        .await
        .unwrap();
    let mut packet = 16i32.to_be_bytes().to_vec();
    packet.extend_from_slice(&80877102i32.to_be_bytes());
    packet.extend_from_slice(&1i32.to_be_bytes());
    packet.extend_from_slice(&2i32.to_be_bytes());
    let mut raw = tokio::net::TcpStream::connect(s.pg).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut raw, &packet)
        .await
        .unwrap();
    let row = c
        .query_one("SELECT count(*) FROM items", &[])
        .await
        .unwrap();
    assert_eq!(row.columns()[0].type_(), &Type::INT8, "{:?}", row.columns());
    assert_eq!(row.get::<_, i64>(0), 3);
}

#[tokio::test]
async fn psycopg_binds_parameters_server_side_over_tls() {
    let s = SluiceConfig::default().start().await;
    let script = r#"
import os, psycopg
with psycopg.connect(os.environ["DSN"]) as conn:
    with conn.cursor() as cur:
        cur.execute("INSERT INTO items (id, name, price) VALUES (%s, %s, %s)", (40, "kiwi", 1.25))
        cur.execute("SELECT name, price FROM items WHERE id = %s", (40,))
        print(cur.fetchone())
"#;
    let out =
        tests::clients::python(script, &[("DSN", s.conninfo("alice", "app", "require"))]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "('kiwi', 1.25)"
    );
}
