//! TLS negotiation and authentication.

use std::time::Duration;

use tests::clients::{connect_plain, connect_tls, psql, sqlstate};
use tests::sluice::SluiceConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn tokio_postgres_logs_in_with_scram_over_tls() {
    let s = SluiceConfig::default().start().await;
    let client = connect_tls(&s.conninfo("alice", "app", "require"), &s.prepared.pki)
        .await
        .unwrap();
    let row = client
        .query_one("SELECT name FROM items WHERE id = 1", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "apple");
}

#[tokio::test]
async fn psql_logs_in_with_scram_over_tls_and_verifies_the_server() {
    let s = SluiceConfig::default().start().await;
    let conninfo = format!(
        "{} sslrootcert={} sslmode=verify-full",
        s.conninfo("alice", "app", "require")
            .replace(" sslmode=require", ""),
        s.prepared.pki.ca_cert.display()
    );
    let out = psql(&conninfo, &["-At", "-c", "SELECT count(*) FROM items"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "3");
}

#[tokio::test]
async fn wrong_password_and_unknown_user_both_get_28p01() {
    let s = SluiceConfig::default().start().await;
    let pki = &s.prepared.pki;
    let wrong = s
        .conninfo("alice", "app", "require")
        .replace("password=", "password=x");
    let unknown = s.conninfo("mallory", "app", "require");
    let Err(e1) = connect_tls(&wrong, pki).await else {
        panic!("wrong password refused")
    };
    let Err(e2) = connect_tls(&unknown, pki).await else {
        panic!("unknown user refused")
    };
    assert_eq!(sqlstate(&e1).as_deref(), Some("28P01"));
    assert_eq!(sqlstate(&e2).as_deref(), Some("28P01"));
    let m1 = e1.as_db_error().unwrap().message().replace("alice", "USER");
    let m2 = e2
        .as_db_error()
        .unwrap()
        .message()
        .replace("mallory", "USER");
    assert_eq!(m1, m2, "the two failures must look the same");
}

#[tokio::test]
async fn md5_users_log_in_when_configured_for_md5() {
    let config = SluiceConfig {
        users: vec![("alice".into(), "scram-sha-256"), ("bob".into(), "md5")],
        ..Default::default()
    };
    let s = config.start().await;
    let client = connect_tls(&s.conninfo("bob", "app", "require"), &s.prepared.pki)
        .await
        .unwrap();
    client.simple_query("SELECT 1").await.unwrap();
    let wrong = s
        .conninfo("bob", "app", "require")
        .replace("password=", "password=x");
    let e = connect_tls(&wrong, &s.prepared.pki).await.err().unwrap();
    assert_eq!(sqlstate(&e).as_deref(), Some("28P01"));
}

#[tokio::test]
async fn plaintext_clients_are_refused_when_tls_is_required() {
    let s = SluiceConfig::default().start().await;
    let e = connect_plain(&s.conninfo("alice", "app", "disable"))
        .await
        .err()
        .unwrap();
    assert_eq!(sqlstate(&e).as_deref(), Some("28000"));
    let message = e
        .as_db_error()
        .map(|d| d.message().to_string())
        .unwrap_or_default();
    assert!(message.contains("SSL connection is required"), "{e:?}");
}

#[tokio::test]
async fn plaintext_clients_are_served_when_tls_is_allowed() {
    let s = SluiceConfig {
        tls_mode: "allow",
        ..Default::default()
    }
    .start()
    .await;
    let client = connect_plain(&s.conninfo("alice", "app", "disable"))
        .await
        .unwrap();
    client.simple_query("SELECT 1").await.unwrap();
}

fn ssl_request() -> Vec<u8> {
    let mut v = 8i32.to_be_bytes().to_vec();
    v.extend_from_slice(&80877103i32.to_be_bytes());
    v
}

fn startup_packet(user: &str) -> Vec<u8> {
    let mut body = 196608i32.to_be_bytes().to_vec();
    for s in ["user", user, "database", "app", ""] {
        body.extend_from_slice(s.as_bytes());
        body.push(0);
    }
    let mut v = (body.len() as i32 + 4).to_be_bytes().to_vec();
    v.extend_from_slice(&body);
    v
}

/// Reads until the server closes; returns everything it sent.
async fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut out))
        .await
        .expect("server closes the connection")
        .ok();
    out
}

#[tokio::test]
async fn plaintext_bytes_pipelined_after_ssl_request_are_refused_with_08p01() {
    let s = SluiceConfig::default().start().await;
    let mut stream = TcpStream::connect(s.pg).await.unwrap();
    let mut bytes = ssl_request();
    bytes.extend(startup_packet("alice"));
    stream.write_all(&bytes).await.unwrap();
    let reply = read_to_close(&mut stream).await;
    assert_eq!(
        reply.first(),
        Some(&b'E'),
        "an ErrorResponse, not 'S': {reply:?}"
    );
    let text = String::from_utf8_lossy(&reply);
    assert!(text.contains("C08P01"), "{text}");
    assert!(
        text.contains("unencrypted data after SSL request"),
        "{text}"
    );
}

#[tokio::test]
async fn a_login_that_stalls_is_closed_at_the_timeout() {
    let s = SluiceConfig {
        login_timeout_secs: 0.5,
        ..Default::default()
    }
    .start()
    .await;
    let mut silent = TcpStream::connect(s.pg).await.unwrap();
    let started = std::time::Instant::now();
    let reply = read_to_close(&mut silent).await;
    assert!(reply.is_empty());
    assert!(started.elapsed() >= Duration::from_millis(400));
    // A client that stalls mid-login (after the startup packet) is closed too.
    let mut stalled = TcpStream::connect(s.pg).await.unwrap();
    stalled.write_all(&ssl_request()).await.unwrap();
    let mut answer = [0u8; 1];
    stalled.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"S");
    let rest = read_to_close(&mut stalled).await;
    assert!(rest.is_empty());
}

#[tokio::test]
async fn an_unknown_database_gets_3d000() {
    let s = SluiceConfig::default().start().await;
    let e = connect_tls(&s.conninfo("alice", "nope", "require"), &s.prepared.pki)
        .await
        .err()
        .unwrap();
    assert_eq!(sqlstate(&e).as_deref(), Some("3D000"));
}
