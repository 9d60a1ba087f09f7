//! The harness's ephemeral servers start from the installed binaries and answer.

use tests::servers::{Mariadb, Postgres, Redis};

#[tokio::test]
async fn an_ephemeral_postgres_starts_on_its_own_port() {
    let pg = Postgres::start().await;
    assert_ne!(pg.port, 5432);
    let c = tests::clients::connect_plain(&pg.conninfo("postgres"))
        .await
        .unwrap();
    let row = c
        .query_one("SELECT current_setting('port')::int", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), pg.port as i32);
}

#[tokio::test]
async fn an_ephemeral_mariadb_starts_on_its_own_port() {
    let db = Mariadb::start().await;
    assert_ne!(db.port, 3306);
    assert_eq!(db.sql("SELECT @@port").unwrap().trim(), db.port.to_string());
}

#[tokio::test]
async fn an_ephemeral_redis_starts_on_its_own_port() {
    let r = Redis::start().await;
    assert_ne!(r.port, 6379);
    assert_eq!(r.command("PING").unwrap(), "+PONG");
}
