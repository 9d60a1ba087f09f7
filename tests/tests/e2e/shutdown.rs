//! The sluice process and its signals: graceful shutdown on SIGTERM and SIGINT, reload on
//! SIGHUP.

use std::time::Duration;

use tests::clients::{connect_tls, sqlstate};
use tests::sluice::{SluiceConfig, SluiceProcess};
use tests::{free_port, wait_for};

/// A sluice process on fixed free ports: (process, its files, postgres port, admin address).
type Spawned = (
    SluiceProcess,
    tests::sluice::Prepared,
    u16,
    std::net::SocketAddr,
);

async fn spawn() -> Spawned {
    spawn_via(&[], SluiceConfig::default()).await
}

/// A sluice process with `config`, run through `wrapper` (a command and its arguments;
/// none: directly).
async fn spawn_via(wrapper: &[&str], config: SluiceConfig) -> Spawned {
    let prepared = config.write();
    let (port, admin) = (free_port(), free_port());
    let text = std::fs::read_to_string(&prepared.path).unwrap();
    let text = text
        .replacen(
            "postgres = \"127.0.0.1:0\"",
            &format!("postgres = \"127.0.0.1:{port}\""),
            1,
        )
        .replacen(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"127.0.0.1:{admin}\""),
            1,
        );
    std::fs::write(&prepared.path, text).unwrap();
    let process = SluiceProcess::spawn_via(wrapper, &prepared.path);
    (process, prepared, port, ([127, 0, 0, 1], admin).into())
}

async fn login(port: u16, prepared: &tests::sluice::Prepared) -> tokio_postgres::Client {
    wait_for("sluice to accept logins", Duration::from_secs(30), || {
        let (info, pki) = (conninfo(port), &prepared.pki);
        async move { connect_tls(&info, pki).await.ok() }
    })
    .await
}

async fn wait_exit(process: &mut SluiceProcess) -> std::process::ExitStatus {
    wait_for("sluice to exit", Duration::from_secs(30), || {
        let done = process.child.try_wait().unwrap();
        async move { done }
    })
    .await
}

fn conninfo(port: u16) -> String {
    format!(
        "host=127.0.0.1 port={port} user=alice password={} dbname=app sslmode=require",
        tests::sluice::PASSWORD
    )
}

/// Runs a query and signals the process; `workers`: the `[server] workers` setting.
async fn exits_cleanly_on(signal: &str, workers: usize) {
    let (mut process, prepared, port, _) = spawn_via(
        &[],
        SluiceConfig {
            server_options: format!("workers = {workers}\n"),
            ..SluiceConfig::default()
        },
    )
    .await;
    let client = login(port, &prepared).await;
    let other = login(port, &prepared).await;
    // several sessions, each answered, on however many threads
    let (a, b) = tokio::join!(
        client.simple_query("SELECT 1"),
        other.simple_query("SELECT 2")
    );
    a.unwrap();
    b.unwrap();
    process.signal(signal);
    let status = wait_exit(&mut process).await;
    assert!(status.success(), "exit status {status:?}");
    // The connected client was told why, then closed.
    let e = client
        .simple_query("SELECT 1")
        .await
        .expect_err("session ended");
    assert!(
        sqlstate(&e).as_deref() == Some("57P01") || e.is_closed(),
        "{e}"
    );
}

#[tokio::test]
async fn sigterm_exits_cleanly_while_a_client_is_connected() {
    exits_cleanly_on("TERM", 0).await;
}

#[tokio::test]
async fn sigint_exits_cleanly_while_a_client_is_connected() {
    exits_cleanly_on("INT", 2).await;
}

#[tokio::test]
async fn a_single_worker_thread_serves_sessions_and_exits_cleanly() {
    exits_cleanly_on("TERM", 1).await;
}

/// `workers = 0` runs a thread per CPU sluice may run on: on a single CPU (taskset here, a
/// container's limit elsewhere) that is one thread, without a multi-thread scheduler.
#[tokio::test]
async fn the_default_workers_follow_the_cpus_sluice_may_use() {
    let config = || SluiceConfig {
        server_options: "workers = 0\n".into(),
        ..SluiceConfig::default()
    };
    let cpus = std::thread::available_parallelism().unwrap().get();
    for (wrapper, threads) in [(&["taskset", "-c", "0"][..], 1), (&[][..], cpus)] {
        let (mut process, prepared, port, _) = spawn_via(wrapper, config()).await;
        let expected = format!("sessions run on {threads} thread(s)");
        let line = process.log_line("sessions run on");
        assert!(
            line.as_deref().is_some_and(|l| l.contains(&expected)),
            "{wrapper:?}: {line:?}"
        );
        let client = login(port, &prepared).await;
        client.simple_query("SELECT 1").await.unwrap();
        process.signal("TERM");
        assert!(wait_exit(&mut process).await.success());
    }
}

#[tokio::test]
async fn a_running_query_finishes_before_shutdown() {
    let (mut process, prepared, port, admin) = spawn().await;
    let c = login(port, &prepared).await;
    let slow = tokio::spawn(async move {
        c.simple_query(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000000) SELECT count(*) FROM n",
        )
        .await
    });
    // Once the query is in flight, SIGTERM must let it complete before sluice exits.
    wait_for(
        "the query to be in flight",
        Duration::from_secs(20),
        || async move {
            let (_, body) = tests::clients::http_get(admin, "/metrics").await;
            body.lines()
                .any(|l| l.starts_with("sluice_queries_in_flight") && !l.ends_with(" 0"))
                .then_some(())
        },
    )
    .await;
    process.signal("TERM");
    let msgs = slow.await.unwrap().expect("the in-flight query completed");
    assert!(
        matches!(&msgs[1], tokio_postgres::SimpleQueryMessage::Row(r) if r.get(0) == Some("3000000"))
    );
    assert!(wait_exit(&mut process).await.success());
}

/// Some(()) when reading `items` is denied by policy.
async fn denied(c: &tokio_postgres::Client) -> Option<()> {
    match c.simple_query("SELECT name FROM items").await {
        Err(e) => sqlstate(&e).filter(|s| s == "42501").map(|_| ()),
        Ok(_) => None,
    }
}

#[tokio::test]
async fn sighup_reloads_policies_and_a_broken_file_keeps_the_old_ones() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.csv");
    std::fs::write(&policy, "p, alice, *, main.items, select, allow\n").unwrap();
    let config = SluiceConfig {
        extra: format!("[policy]\nfiles = [\"{}\"]\n", policy.display()),
        ..SluiceConfig::default()
    };
    let (process, prepared, port, admin) = spawn_via(&[], config).await;
    let client = login(port, &prepared).await;
    client.simple_query("SELECT name FROM items").await.unwrap();
    // the grant goes: the same connection is denied from its next statement on
    std::fs::write(&policy, "p, alice, *, main.other, select, allow\n").unwrap();
    process.signal("HUP");
    wait_for("the reload", Duration::from_secs(20), || denied(&client)).await;
    // a broken file that would restore the grant: refused, the last good policy stays
    std::fs::write(
        &policy,
        "p, alice, *, main.items, select, allow\np, alice, main.items\n",
    )
    .unwrap();
    process.signal("HUP");
    wait_for(
        "the failed reload",
        Duration::from_secs(20),
        || async move {
            let (_, body) = tests::clients::http_get(admin, "/metrics").await;
            body.lines()
                .any(|l| l.starts_with("sluice_reload_failures_total") && l.ends_with(" 1"))
                .then_some(())
        },
    )
    .await;
    assert!(
        denied(&client).await.is_some(),
        "the old policy still applies"
    );
    // and the process still serves new logins
    let other = login(port, &prepared).await;
    other.simple_query("SELECT 1").await.unwrap();
}
