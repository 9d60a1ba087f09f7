//! MySQL frontend: the mariadb CLI, PyMySQL and mysql-connector-python through sluice to an
//! ephemeral MariaDB, and to the SQLite demo route.

use std::process::Output;

use tests::clients::{mariadb, python};
use tests::servers::Mariadb;
use tests::sluice::{my_route, SluiceConfig, TestSluice, PASSWORD};

/// sluice with a MariaDB route `shop` (transaction mode) next to the SQLite route `app`.
struct Setup {
    maria: std::sync::Arc<Mariadb>,
    db: String,
    s: TestSluice,
}

impl Setup {
    async fn new(mode: &str, opts: &str) -> Setup {
        Setup::with_users(mode, opts, &["alice"]).await
    }

    async fn with_users(mode: &str, opts: &str, users: &[&str]) -> Setup {
        let maria = Mariadb::shared().await;
        let db = maria.create_database("shop");
        let s = SluiceConfig {
            extra: my_route("shop", maria.port, &db, mode, opts),
            users: users
                .iter()
                .map(|u| (u.to_string(), "scram-sha-256"))
                .collect(),
            ..Default::default()
        }
        .start()
        .await;
        Setup { maria, db, s }
    }

    /// Arguments for the mariadb CLI: TLS verified against the test CA.
    fn cli(&self, user: &str, password: &str, db: &str, plugin: &str) -> Vec<String> {
        vec![
            "-h".into(),
            "127.0.0.1".into(),
            format!("-P{}", self.s.mysql.port()),
            format!("-u{user}"),
            format!("-p{password}"),
            "--ssl".into(),
            format!("--ssl-ca={}", self.s.prepared.pki.ca_cert.display()),
            "--ssl-verify-server-cert".into(),
            format!("--default-auth={plugin}"),
            "-N".into(),
            "-B".into(),
            db.into(),
        ]
    }

    async fn run(&self, plugin: &str, db: &str, sql: &str) -> Output {
        let args = self.cli("alice", PASSWORD, db, plugin);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        mariadb(&args, sql).await
    }
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "mariadb failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    assert!(!out.status.success(), "expected a failure");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test]
async fn the_mariadb_cli_logs_in_over_tls_with_both_plugins() {
    let t = Setup::new("transaction", "").await;
    t.maria
        .sql(&format!(
            "CREATE TABLE {db}.t (id INT PRIMARY KEY, name VARCHAR(20)); \
             INSERT INTO {db}.t VALUES (1, 'één'), (2, '🦀')",
            db = t.db
        ))
        .unwrap();
    // First caching_sha2_password login: full authentication over TLS; the second takes
    // the fast path from the cache.
    for plugin in [
        "caching_sha2_password",
        "caching_sha2_password",
        "mysql_native_password",
    ] {
        let out = t
            .run(
                plugin,
                "shop",
                "SELECT id, name FROM t ORDER BY id; SELECT CURRENT_USER()",
            )
            .await;
        let text = stdout(&out);
        assert!(text.starts_with("1\téén\n2\t🦀\n"), "{plugin}: {text}");
        assert!(text.contains("sluice_backend@"), "{plugin}: {text}");
    }
    let wrong = t.cli("alice", "wrong-password", "shop", "mysql_native_password");
    let wrong: Vec<&str> = wrong.iter().map(String::as_str).collect();
    assert!(stderr(&mariadb(&wrong, "SELECT 1").await).contains("ERROR 1045"));
    let unknown = t.cli("mallory", PASSWORD, "shop", "caching_sha2_password");
    let unknown: Vec<&str> = unknown.iter().map(String::as_str).collect();
    assert!(stderr(&mariadb(&unknown, "SELECT 1").await).contains("ERROR 1045"));
}

#[tokio::test]
async fn errors_keep_their_codes_and_use_switches_routes() {
    let t = Setup::new("transaction", "").await;
    t.maria
        .sql(&format!("CREATE TABLE {}.u (id INT PRIMARY KEY)", t.db))
        .unwrap();
    for (sql, code) in [
        ("SELEC 1", "ERROR 1064"),
        ("SELECT * FROM missing_table", "ERROR 1146"),
        (
            "INSERT INTO u VALUES (1); INSERT INTO u VALUES (1)",
            "ERROR 1062",
        ),
    ] {
        let err = stderr(&t.run("mysql_native_password", "shop", sql).await);
        assert!(err.contains(code), "{sql}: {err}");
    }
    let out = t
        .run(
            "mysql_native_password",
            "shop",
            "SELECT COUNT(*) FROM u; USE app; SELECT name FROM items ORDER BY id; USE shop; SELECT id FROM u",
        )
        .await;
    assert_eq!(stdout(&out), "1\napple\npear\nplum\n1\n");
    let err = stderr(&t.run("mysql_native_password", "nowhere", "SELECT 1").await);
    assert!(err.contains("ERROR 1049"), "{err}");
}

#[tokio::test]
async fn python_drivers_see_the_same_values_as_direct_in_text_and_binary() {
    let t = Setup::new("transaction", "").await;
    t.maria
        .sql(&format!(
            "CREATE TABLE {db}.types (
                id INT PRIMARY KEY, ti TINYINT, si SMALLINT, mi MEDIUMINT, bi BIGINT,
                ubi BIGINT UNSIGNED, de DECIMAL(20,6), fl FLOAT, db DOUBLE,
                d DATE, t TIME(6), dt DATETIME(6), ts TIMESTAMP(3) NULL,
                c CHAR(4), vc VARCHAR(40), tx TEXT, bl BLOB, js JSON,
                en ENUM('a','b'), st SET('x','y'), bt BIT(10)
            ) DEFAULT CHARSET utf8mb4;
            INSERT INTO {db}.types VALUES
              (1, -128, -32768, -8388608, -9223372036854775808, 18446744073709551615,
               12345678901234.123456, 1.5, 2.25, '2024-02-29', '-838:59:58.999999',
               '2024-12-31 23:59:59.123456', '2024-01-01 00:00:00.5', 'ab', 'héllo 🦀',
               'long text', X'00FF10', '{{\"k\": [1, 2]}}', 'b', 'x,y', b'1010101010'),
              (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
               NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)",
            db = t.db
        ))
        .unwrap();
    let script = r#"
import os, sys, pymysql, mysql.connector, ssl
def pym(port, user, pw, db):
    kw = dict(host='127.0.0.1', port=port, user=user, password=pw, database=db, charset='utf8mb4')
    if user == 'alice':
        kw['ssl'] = {'ca': os.environ['CA']}
    c = pymysql.connect(**kw)
    cur = c.cursor()
    cur.execute('SELECT * FROM types ORDER BY id')
    rows = cur.fetchall()
    cur.execute('SELECT * FROM types WHERE id = %s', (1,))
    rows += cur.fetchall()
    c.close()
    return rows
def conn(port, user, pw, db):
    kw = dict(host='127.0.0.1', port=port, user=user, password=pw, database=db, use_pure=True)
    if user == 'alice':
        kw.update(ssl_ca=os.environ['CA'], ssl_verify_cert=True)
    c = mysql.connector.connect(**kw)
    out = []
    for prepared in (False, True):
        cur = c.cursor(prepared=prepared)
        cur.execute('SELECT * FROM types WHERE id >= %s ORDER BY id', (1,))
        out += cur.fetchall()
        cur.close()
    c.close()
    return out
mport, sport, db = int(os.environ['MPORT']), int(os.environ['SPORT']), os.environ['DB']
def run(label, f, *args):
    try:
        return f(*args)
    except Exception as e:
        raise SystemExit(f'{label}: {e!r}')
direct = (run('pymysql direct', pym, mport, 'sluice_backend', 'backend-pw', db),
          run('connector direct', conn, mport, 'sluice_backend', 'backend-pw', db))
via = (run('pymysql sluice', pym, sport, 'alice', os.environ['PW'], 'shop'),
       run('connector sluice', conn, sport, 'alice', os.environ['PW'], 'shop'))
if direct != via:
    print('DIRECT', direct, file=sys.stderr)
    print('SLUICE', via, file=sys.stderr)
    sys.exit(1)
print(len(direct[0]), len(direct[1]))
"#;
    let out = python(
        script,
        &[
            ("CA", t.s.prepared.pki.ca_cert.display().to_string()),
            ("MPORT", t.maria.port.to_string()),
            ("SPORT", t.s.mysql.port().to_string()),
            ("DB", t.db.clone()),
            ("PW", PASSWORD.to_string()),
        ],
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "3 4");
}

/// A PyMySQL client through sluice that opens a transaction, locks row 1 of `t`, says
/// `locked`, then either idles (`IDLE=1`) or runs a long query until it is killed.
const LOCKER: &str = r#"
import os, sys, time, pymysql
c = pymysql.connect(host='127.0.0.1', port=int(os.environ['SPORT']), user='alice',
                    password=os.environ['PW'], database='shop',
                    ssl={'ca': os.environ['CA']})
cur = c.cursor()
cur.execute('BEGIN')
cur.execute('UPDATE t SET v = v + 1 WHERE id = 1')
print('locked', flush=True)
if os.environ['IDLE'] == '1':
    time.sleep(600)
else:
    cur.execute('SELECT SLEEP(600)')
"#;

#[tokio::test]
async fn a_client_killed_mid_transaction_leaves_no_lock() {
    use tokio::io::AsyncBufReadExt;
    let t = Setup::new("transaction", "").await;
    t.maria
        .query(&format!(
            "CREATE TABLE {db}.t (id INT PRIMARY KEY, v INT) ENGINE=InnoDB; \
             INSERT INTO {db}.t VALUES (1, 0)",
            db = t.db
        ))
        .await
        .unwrap();
    // information_schema.innodb_trx is a cache refreshed only when it was last read over
    // 100 ms ago: poll it slower than that.
    let open_transactions = || async {
        tokio::time::sleep(std::time::Duration::from_millis(150)).await;
        t.maria
            .query("SELECT COUNT(*) FROM information_schema.innodb_trx")
            .await
            .unwrap()
            .trim()
            .parse::<u32>()
            .unwrap()
    };
    for idle in ["1", "0"] {
        let mut child = tests::clients::python_spawn(
            LOCKER,
            &[
                ("CA", t.s.prepared.pki.ca_cert.display().to_string()),
                ("SPORT", t.s.mysql.port().to_string()),
                ("PW", PASSWORD.to_string()),
                ("IDLE", idle.to_string()),
            ],
        );
        let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let line = tokio::time::timeout(std::time::Duration::from_secs(30), lines.next_line())
            .await
            .expect("the locker reports in time")
            .unwrap();
        assert_eq!(line.as_deref(), Some("locked"), "idle={idle}");
        tests::wait_for(
            "the transaction to show",
            std::time::Duration::from_secs(10),
            || async { (open_transactions().await == 1).then_some(()) },
        )
        .await;
        if idle == "0" {
            tests::wait_for("the long query to run", std::time::Duration::from_secs(10), || async {
                let n = t
                    .maria
                    .query("SELECT COUNT(*) FROM information_schema.processlist WHERE info LIKE 'SELECT SLEEP(600)%'")
                    .await
                    .unwrap();
                (n.trim() == "1").then_some(())
            })
            .await;
        }
        child.kill().await.unwrap();
        tests::wait_for(
            "the transaction to end",
            std::time::Duration::from_secs(10),
            || async { (open_transactions().await == 0).then_some(()) },
        )
        .await;
        // The row is free for the next client and the killed update was rolled back.
        let out = t
            .run(
                "mysql_native_password",
                "shop",
                "SET SESSION innodb_lock_wait_timeout = 2; \
                 UPDATE t SET v = v + 10 WHERE id = 1; SELECT v FROM t",
            )
            .await;
        let expected = if idle == "1" { "10\n" } else { "20\n" };
        assert_eq!(stdout(&out), expected, "idle={idle}");
    }
    let sleeping = t
        .maria
        .query(
            "SELECT COUNT(*) FROM information_schema.processlist WHERE info LIKE 'SELECT SLEEP(600)%'",
        )
        .await
        .unwrap();
    assert_eq!(sleeping.trim(), "0", "the long query was killed");
}

#[tokio::test]
async fn kill_takes_sluice_connection_ids() {
    let t = Setup::with_users("transaction", "", &["alice", "bob"]).await;
    let script = r#"
import os, threading, time, pymysql
def connect(user):
    return pymysql.connect(host='127.0.0.1', port=int(os.environ['SPORT']), user=user,
                           password=os.environ['PW'], database='shop', autocommit=True,
                           ssl={'ca': os.environ['CA']})
a, b, other = connect('alice'), connect('alice'), connect('bob')
outcome = {}
def sleeper():
    started = time.time()
    try:
        cur = a.cursor()
        cur.execute('SELECT SLEEP(30)')
        outcome['rows'] = cur.fetchall()
    except pymysql.err.MySQLError as e:
        outcome['error'] = e.args[0]
    outcome['secs'] = time.time() - started
th = threading.Thread(target=sleeper)
th.start()
time.sleep(1)
def code(conn, sql):
    try:
        conn.cursor().execute(sql)
        return 0
    except pymysql.err.MySQLError as e:
        return e.args[0]
print('other', code(other, f'KILL QUERY {a.thread_id()}'))
print('missing', code(b, 'KILL QUERY 999999'))
print('bad', code(b, 'KILL USER alice'))
print('query', code(b, f'KILL QUERY {a.thread_id()}'))
th.join(20)
print('interrupted', outcome['secs'] < 15)
print('connection', code(b, f'KILL {a.thread_id()}'))
time.sleep(0.5)
try:
    a.cursor().execute('SELECT 1')
    print('after', 'alive')
except pymysql.err.MySQLError as e:
    print('after', 'closed')
"#;
    let out = python(
        script,
        &[
            ("CA", t.s.prepared.pki.ca_cert.display().to_string()),
            ("SPORT", t.s.mysql.port().to_string()),
            ("PW", PASSWORD.to_string()),
        ],
    )
    .await;
    assert_eq!(
        stdout_py(&out),
        "other 1095\nmissing 1094\nbad 1064\nquery 0\ninterrupted True\nconnection 0\nafter closed\n"
    );
}

fn stdout_py(out: &Output) -> String {
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
