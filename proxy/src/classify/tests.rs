use super::*;

const PUBLIC: &[String] = &[];

fn pg(sql: &str) -> Vec<String> {
    pg_path(sql, PUBLIC)
}

fn pg_path(sql: &str, path: &[String]) -> Vec<String> {
    describe(
        sql,
        &Scope {
            dialect: Dialect::Postgres,
            search_path: path,
            database: "",
            lexing: Default::default(),
            fold_table_names: true,
        },
    )
}

fn my(sql: &str) -> Vec<String> {
    describe(
        sql,
        &Scope {
            dialect: Dialect::Mysql,
            search_path: &[],
            database: "App",
            lexing: Default::default(),
            fold_table_names: true,
        },
    )
}

/// Each statement as "action: access access ...", or "unsupported".
fn describe(sql: &str, scope: &Scope<'_>) -> Vec<String> {
    match classify(sql, scope) {
        Ok(stmts) => stmts
            .iter()
            .map(|c| {
                let mut accesses: Vec<String> = c
                    .accesses
                    .iter()
                    .map(|a| format!(" {} {}", a.action, a.object))
                    .collect();
                accesses.sort();
                format!("{}:{}", c.action, accesses.concat())
            })
            .collect(),
        Err(_) => vec!["unsupported".into()],
    }
}

#[test]
fn reads_resolve_names_like_the_backend() {
    let cases: &[(&str, &[&str])] = &[
        ("SELECT 1", &["select:"]),
        ("SELECT * FROM orders", &["select: select public.orders"]),
        ("select * from ORDERS", &["select: select public.orders"]),
        (
            "SELECT * FROM \"Orders\"",
            &["select: select public.Orders"],
        ),
        (
            "SELECT * FROM Sales.Orders o JOIN public.items i ON true",
            &["select: select public.items select sales.orders"],
        ),
        ("SELECT * FROM db.s.t", &["select: select s.t"]),
        (
            "SELECT (SELECT max(x) FROM a) FROM b WHERE EXISTS (SELECT 1 FROM c)",
            &["select: select public.a select public.b select public.c"],
        ),
        (
            "SELECT * FROM a UNION SELECT * FROM b",
            &["select: select public.a select public.b"],
        ),
        (
            "SELECT * FROM v_report",
            &["select: select public.v_report"],
        ),
        (
            "SELECT 1; SELECT * FROM t",
            &["select:", "select: select public.t"],
        ),
    ];
    for (sql, want) in cases {
        assert_eq!(pg(sql), *want, "{sql}");
    }
}

#[test]
fn cte_names_are_not_tables_only_where_visible() {
    let cases: &[(&str, &[&str])] = &[
        (
            "WITH x AS (SELECT * FROM orders) SELECT * FROM x",
            &["select: select public.orders"],
        ),
        // the inner "orders" is the table: a non-recursive CTE cannot see itself
        (
            "WITH orders AS (SELECT * FROM orders) SELECT * FROM orders",
            &["select: select public.orders"],
        ),
        (
            "WITH a AS (SELECT 1), b AS (SELECT * FROM a) SELECT * FROM b",
            &["select:"],
        ),
        // "a" outside the WITH's scope is the table
        (
            "SELECT * FROM (WITH a AS (SELECT 1) SELECT * FROM a) s, a",
            &["select: select public.a"],
        ),
        (
            "WITH RECURSIVE r AS (SELECT 1 UNION ALL SELECT * FROM r) SELECT * FROM r",
            &["select:"],
        ),
    ];
    for (sql, want) in cases {
        assert_eq!(pg(sql), *want, "{sql}");
    }
}

#[test]
fn writes_name_their_targets_and_their_sources() {
    let cases: &[(&str, &[&str])] = &[
        ("INSERT INTO t VALUES (1)", &["insert: insert public.t"]),
        (
            "INSERT INTO t SELECT * FROM s",
            &["insert: insert public.t select public.s"],
        ),
        (
            "INSERT INTO t VALUES (1) ON CONFLICT (id) DO UPDATE SET x = 1",
            &["insert: insert public.t update public.t"],
        ),
        (
            "UPDATE t SET x = 1 WHERE id = 2",
            &["update: update public.t"],
        ),
        (
            "UPDATE t SET x = (SELECT max(x) FROM t)",
            &["update: select public.t update public.t"],
        ),
        (
            "UPDATE t SET x = s.x FROM s WHERE s.id = t.id",
            &["update: select public.s update public.t"],
        ),
        (
            "DELETE FROM t WHERE id IN (SELECT id FROM s)",
            &["delete: delete public.t select public.s"],
        ),
        (
            "DELETE FROM t USING s WHERE s.id = t.id",
            &["delete: delete public.t select public.s"],
        ),
        (
            "TRUNCATE a, b",
            &["truncate: truncate public.a truncate public.b"],
        ),
        // data-modifying CTEs make the statement a write
        (
            "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d",
            &["delete: delete public.t"],
        ),
        (
            "WITH i AS (INSERT INTO t VALUES (1) RETURNING id) SELECT * FROM i",
            &["insert: insert public.t"],
        ),
        // row locks are writes
        ("SELECT * FROM t FOR UPDATE", &["select: update public.t"]),
        ("SELECT * FROM t FOR SHARE", &["select: update public.t"]),
        // sequences
        (
            "SELECT nextval('orders_id_seq')",
            &["select: update public.orders_id_seq"],
        ),
        ("SELECT setval('app.s', 5)", &["select: update app.s"]),
        (
            "SELECT nextval(x) FROM t",
            &["select: select public.t update *"],
        ),
    ];
    for (sql, want) in cases {
        assert_eq!(pg(sql), *want, "{sql}");
    }
}

#[test]
fn ddl_copy_functions_and_the_rest() {
    let cases: &[(&str, &[&str])] = &[
        ("CREATE TABLE n (id int)", &["ddl: ddl public.n"]),
        (
            "CREATE TABLE n AS SELECT * FROM secret",
            &["ddl: ddl public.n select public.secret"],
        ),
        (
            "SELECT * INTO n FROM secret",
            &["ddl: ddl public.n select public.secret"],
        ),
        (
            "CREATE VIEW v AS SELECT * FROM secret",
            &["ddl: ddl public.v select public.secret"],
        ),
        ("DROP TABLE t", &["ddl: ddl public.t"]),
        ("ALTER TABLE t ADD COLUMN y int", &["ddl: ddl public.t"]),
        ("CREATE INDEX i ON t (x)", &["ddl: ddl public.t"]),
        ("DROP SCHEMA s CASCADE", &["admin: admin *"]),
        ("COPY t FROM STDIN", &["copy_in: copy_in public.t"]),
        ("COPY t TO STDOUT", &["copy_out: copy_out public.t"]),
        (
            "COPY (SELECT * FROM s) TO STDOUT",
            &["copy_out: copy_out * select public.s"],
        ),
        ("COPY t TO PROGRAM 'rm -rf /'", &["admin: admin public.t"]),
        ("COPY t FROM '/etc/passwd'", &["admin: admin public.t"]),
        (
            "SELECT lower(name), count(*) FROM t GROUP BY 1",
            &["select: select public.t"],
        ),
        ("SELECT my_func(1)", &["select: execute public.my_func"]),
        ("SELECT app.f()", &["select: execute app.f"]),
        ("SELECT pg_catalog.pg_get_userbyid(10)", &["select:"]),
        (
            "SELECT pg_read_file('/etc/passwd')",
            &["admin: admin pg_read_file"],
        ),
        (
            "SELECT set_config('search_path', 'x', false)",
            &["admin: admin set_config"],
        ),
        ("SELECT * FROM generate_series(1, 3)", &["select:"]),
        ("CALL p(1)", &["execute: execute public.p"]),
        ("BEGIN", &["transaction: transaction *"]),
        ("COMMIT", &["transaction: transaction *"]),
        (
            "SET statement_timeout = 0",
            &["session: session statement_timeout"],
        ),
        ("SET ROLE postgres", &["admin: admin *"]),
        ("SET SESSION AUTHORIZATION postgres", &["admin: admin *"]),
        ("GRANT SELECT ON t TO u", &["admin: admin *"]),
        ("EXPLAIN SELECT * FROM t", &["select: select public.t"]),
        (
            "EXPLAIN ANALYZE DELETE FROM t",
            &["delete: delete public.t"],
        ),
        ("DO $$ BEGIN DELETE FROM t; END $$", &["unsupported"]),
        ("SELEC 1", &["unsupported"]),
        ("SELECT 1 /* unterminated", &["unsupported"]),
        // a nested comment hides nothing
        ("SELECT 1 /* a /* b */ DROP TABLE t */", &["select:"]),
        ("SELECT 1; DROP TABLE t", &["select:", "ddl: ddl public.t"]),
        ("SELECT 1 -- ; DROP TABLE t", &["select:"]),
    ];
    for (sql, want) in cases {
        assert_eq!(pg(sql), *want, "{sql}");
    }
}

#[test]
fn search_path_decides_unqualified_names() {
    let path = vec!["sales".to_string(), "public".to_string()];
    assert_eq!(
        pg_path("SELECT * FROM orders", &path),
        ["select: select public.orders select sales.orders"]
    );
    let stmts = classify(
        "SET search_path TO other, \"Mixed\"",
        &Scope {
            dialect: Dialect::Postgres,
            search_path: &[],
            database: "",
            lexing: Default::default(),
            fold_table_names: true,
        },
    )
    .unwrap();
    assert_eq!(
        stmts[0].effects[0],
        Effect::SearchPath {
            schemas: vec!["other".into(), "Mixed".into()],
            local: false
        }
    );
    let stmts = classify(
        "SET LOCAL search_path = 'a, b'",
        &Scope {
            dialect: Dialect::Postgres,
            search_path: &[],
            database: "",
            lexing: Default::default(),
            fold_table_names: true,
        },
    )
    .unwrap();
    assert_eq!(
        stmts[0].effects[0],
        Effect::SearchPath {
            schemas: vec!["a".into(), "b".into()],
            local: true
        }
    );
}

#[test]
fn sql_level_prepare_is_classified_by_its_body() {
    let scope = Scope {
        dialect: Dialect::Postgres,
        search_path: &[],
        database: "",
        lexing: Default::default(),
        fold_table_names: true,
    };
    let stmts = classify("PREPARE p (int) AS DELETE FROM t WHERE id = $1", &scope).unwrap();
    assert_eq!(stmts[0].action, Action::Session);
    assert!(stmts[0].accesses.is_empty());
    assert_eq!(
        stmts[0].effects,
        vec![Effect::Prepare {
            name: "p".into(),
            accesses: vec![Access {
                action: Action::Delete,
                object: "public.t".into()
            }]
        }]
    );
    let stmts = classify("EXECUTE p (1)", &scope).unwrap();
    assert_eq!(stmts[0].executes.as_deref(), Some("p"));
}

#[test]
fn mysql_names_fold_and_qualify_by_database() {
    let cases: &[(&str, &[&str])] = &[
        ("SELECT * FROM orders", &["select: select app.orders"]),
        ("SELECT * FROM `Orders`", &["select: select app.orders"]),
        ("SELECT * FROM ORDERS", &["select: select app.orders"]),
        (
            "SELECT * FROM other.secrets",
            &["select: select other.secrets"],
        ),
        (
            "DELETE t1 FROM orders t1 JOIN items i ON i.o = t1.id",
            &["delete: delete app.items delete app.orders"],
        ),
        (
            "REPLACE INTO t VALUES (1)",
            &["insert: delete app.t insert app.t"],
        ),
        ("SELECT 1 # ; DROP TABLE t", &["select:"]),
        ("SELECT 1 /*! ; DROP TABLE t */", &["unsupported"]),
        ("SELECT 1 /*M!100000 ; DROP TABLE t */", &["unsupported"]),
        ("SELECT '/*!' AS s", &["select:"]),
        ("SELECT @@version_comment LIMIT 1", &["select:"]),
        ("SELECT DATABASE()", &["select:"]),
        ("SET NAMES utf8mb4", &["session: session names"]),
        ("SET autocommit = 1", &["session: session autocommit"]),
        ("SHOW TABLES", &["select: select app.*"]),
        ("SHOW PROCESSLIST", &["admin: admin *"]),
        ("DESCRIBE orders", &["select: select app.orders"]),
        ("USE other", &["session: session database"]),
        (
            "SELECT load_file('/etc/passwd')",
            &["admin: admin load_file"],
        ),
        ("SELECT * FROM t INTO OUTFILE '/tmp/x'", &["unsupported"]),
    ];
    for (sql, want) in cases {
        assert_eq!(my(sql), *want, "{sql}");
    }
}

#[test]
fn a_search_path_set_earlier_in_the_request_applies_to_later_statements() {
    assert_eq!(
        pg("SET search_path TO other; SELECT * FROM orders"),
        [
            "session: session search_path",
            "select: select other.orders select public.orders",
        ]
    );
}

#[test]
fn determinism() {
    let deterministic = |dialect: Dialect, sql: &str| {
        let c = classify(
            sql,
            &Scope {
                dialect,
                search_path: &[],
                database: "app",
                lexing: Default::default(),
                fold_table_names: true,
            },
        )
        .unwrap();
        c.iter().all(|c| c.deterministic)
    };
    let pg = |sql| deterministic(Dialect::Postgres, sql);
    let my = |sql| deterministic(Dialect::Mysql, sql);
    for sql in [
        "SELECT * FROM t WHERE id = 1",
        "SELECT count(*), lower(name) FROM t GROUP BY 2",
        "SELECT a FROM t WHERE b IN (SELECT b FROM u WHERE c = $1)",
        "WITH x AS (SELECT sum(n) AS s FROM t) SELECT s FROM x",
    ] {
        assert!(pg(sql), "{sql}");
    }
    for sql in [
        "SELECT now()",
        "SELECT * FROM t WHERE at > now() - interval '1 day'",
        "SELECT CURRENT_TIMESTAMP",
        "SELECT current_user",
        "SELECT * FROM t ORDER BY random() LIMIT 1",
        "SELECT gen_random_uuid()",
        "SELECT * FROM t FOR UPDATE",
        "SELECT * FROM t WHERE id IN (SELECT id FROM u WHERE x = clock_timestamp())",
        "SELECT app.my_function(1)",
        "SELECT current_setting('work_mem')",
        "SELECT * FROM pg_catalog.pg_stat_activity WHERE pid = pg_backend_pid()",
    ] {
        assert!(!pg(sql), "{sql}");
    }
    assert!(my("SELECT * FROM t WHERE id = 1"));
    for sql in [
        "SELECT @x",
        "SELECT * FROM t WHERE id = @id",
        "SELECT @@version",
        "SELECT rand()",
        "SELECT uuid()",
        "SELECT * FROM t WHERE d = curdate()",
        "SELECT last_insert_id()",
    ] {
        assert!(!my(sql), "{sql}");
    }
}

#[test]
fn mysql_show_set_and_use_are_classified_by_what_they_reveal_or_change() {
    let cases: &[(&str, &[&str])] = &[
        ("SHOW GRANTS", &["admin: admin *"]),
        ("SHOW GRANTS FOR root", &["admin: admin *"]),
        ("SHOW DATABASES", &["admin: admin *"]),
        ("SHOW TABLES", &["select: select app.*"]),
        ("SHOW FULL TABLES", &["select: select app.*"]),
        ("SHOW TABLES FROM other", &["select: select other.*"]),
        ("SHOW TABLE STATUS", &["select: select app.*"]),
        ("SHOW TABLE STATUS FROM other", &["select: select other.*"]),
        ("SHOW INDEX FROM t", &["select: select app.t"]),
        ("SHOW INDEX FROM other.t", &["select: select other.t"]),
        ("SHOW KEYS FROM t FROM other", &["select: select other.t"]),
        ("SHOW COLUMNS FROM t", &["select: select app.t"]),
        (
            "SHOW FULL COLUMNS FROM other.t",
            &["select: select other.t"],
        ),
        ("SHOW CREATE TABLE t", &["select: select app.t"]),
        ("SHOW ENGINE INNODB STATUS", &["admin: admin *"]),
        ("SHOW PROCEDURE STATUS", &["admin: admin *"]),
        ("SHOW GLOBAL VARIABLES", &["admin: admin *"]),
        ("SHOW GLOBAL STATUS", &["admin: admin *"]),
        ("SHOW BINARY LOGS", &["admin: admin *"]),
        ("SHOW WARNINGS", &["session: session *"]),
        ("SHOW VARIABLES LIKE 'x'", &["session: session *"]),
        ("SET GLOBAL read_only = 1", &["admin: admin read_only"]),
        ("SET @@global.read_only = 1", &["admin: admin read_only"]),
        ("SET @@GLOBAL.read_only = 1", &["admin: admin read_only"]),
        (
            "SET @x = 1, @@global.read_only = 1",
            &["admin: admin read_only session @x"],
        ),
        ("SET PASSWORD = 'x'", &["admin: admin password"]),
        ("SET PASSWORD FOR bob = 'x'", &["unsupported"]),
        ("SET sql_mode = 'ANSI'", &["session: session sql_mode"]),
        (
            "SET @@session.sql_mode = 'ANSI'",
            &["session: session sql_mode"],
        ),
        ("SET sql_mode = 'ANSI'; SELECT 1", &["unsupported"]),
        ("SELECT 1; SET NAMES gbk", &["unsupported"]),
        (
            "SELECT 1; USE other",
            &["select:", "session: session database"],
        ),
        ("EXECUTE s USING @a", &["execute:"]),
        ("PREPARE s FROM 'SELECT * FROM orders'", &["session:"]),
        ("PREPARE s FROM @q", &["unsupported"]),
    ];
    for (sql, want) in cases {
        assert_eq!(my(sql), *want, "{sql}");
    }
    let Ok(p) = classify(
        "PREPARE s FROM 'SELECT * FROM orders WHERE a = \\'x\\''",
        &Scope {
            dialect: Dialect::Mysql,
            search_path: &[],
            database: "app",
            lexing: Default::default(),
            fold_table_names: true,
        },
    ) else {
        panic!("PREPARE FROM a literal is classified");
    };
    let Effect::Prepare { name, accesses } = &p[0].effects[0] else {
        panic!("a PREPARE effect");
    };
    assert_eq!(name, "s");
    assert_eq!(accesses[0].object, "app.orders");
}

#[test]
fn mysql_table_names_fold_as_the_server_does() {
    let scope = |fold| Scope {
        dialect: Dialect::Mysql,
        search_path: &[],
        database: "App",
        lexing: Default::default(),
        fold_table_names: fold,
    };
    let sql = "SELECT * FROM Orders JOIN App.Items ON 1 WHERE UPPER(x) = COUNT(1)";
    assert_eq!(
        describe(sql, &scope(true)),
        ["select: select app.items select app.orders"]
    );
    assert_eq!(
        describe(sql, &scope(false)),
        ["select: select App.Items select App.Orders"]
    );
}

#[test]
fn postgres_identity_settings_and_table_functions() {
    let cases: &[(&str, &[&str])] = &[
        ("SET \"role\" TO x", &["admin: admin role"]),
        ("SET role = x", &["admin: admin role"]),
        ("SET ROLE x", &["admin: admin *"]),
        ("RESET ROLE", &["admin: admin *"]),
        ("RESET SESSION AUTHORIZATION", &["admin: admin *"]),
        ("RESET ALL", &["admin: admin *"]),
        (
            "SET session_authorization = x",
            &["admin: admin session_authorization"],
        ),
        ("SET SESSION AUTHORIZATION x", &["admin: admin *"]),
        (
            "SELECT set_config('role', 'x', false)",
            &["admin: admin set_config"],
        ),
        ("RESET work_mem", &["session: session work_mem"]),
        (
            "SELECT * FROM LATERAL pg_ls_dir('.')",
            &["admin: admin pg_ls_dir"],
        ),
        (
            "SELECT * FROM t, LATERAL pg_ls_dir('.') AS x",
            &["admin: admin pg_ls_dir select public.t"],
        ),
        (
            "SELECT * FROM pg_ls_dir('.') WITH ORDINALITY",
            &["admin: admin pg_ls_dir"],
        ),
        (
            "SELECT * FROM t, LATERAL myfunc(t.a)",
            &["select: execute public.myfunc select public.t"],
        ),
        (
            "SELECT * FROM query_to_xml('select 1', true, true, '')",
            &["admin: admin query_to_xml"],
        ),
        ("SELECT * FROM nextval('s')", &["select: update public.s"]),
        ("SELECT * FROM ROWS FROM (pg_ls_dir('.'))", &["unsupported"]),
        ("SHOW search_path", &["session: session search_path"]),
        ("SHOW ALL", &["session: session *"]),
        ("SELECT x FROM generate_series(1, 3) AS x", &["select:"]),
        ("SELECT U&'\\0061'", &["unsupported"]),
    ];
    for (sql, want) in cases {
        assert_eq!(pg(sql), *want, "{sql}");
    }
}

#[test]
fn statements_are_lexed_under_the_sessions_settings() {
    let attack = r"SELECT 'a\' , ' , (SELECT secret FROM hidden) --'";
    let pg_scope = |standard| Scope {
        dialect: Dialect::Postgres,
        search_path: &[],
        database: "",
        lexing: Lexing {
            standard_strings: standard,
            ..Lexing::default()
        },
        fold_table_names: true,
    };
    assert_eq!(describe(attack, &pg_scope(Some(true))), ["select:"]);
    assert_eq!(
        describe(attack, &pg_scope(Some(false))),
        ["select: select public.hidden"]
    );
    assert_eq!(describe(attack, &pg_scope(None)), ["unsupported"]);
    let my_scope = |ansi, escapes| Scope {
        dialect: Dialect::Mysql,
        search_path: &[],
        database: "app",
        lexing: Lexing {
            ansi_quotes: ansi,
            backslash_escapes: escapes,
            ..Lexing::default()
        },
        fold_table_names: true,
    };
    let ansi = r#"SELECT "a\", ", (SELECT secret FROM hidden) -- ""#;
    assert_eq!(describe(ansi, &my_scope(true, true)), ["select:"]);
    assert_eq!(
        describe(ansi, &my_scope(false, true)),
        ["select: select app.hidden"]
    );
    let nbe = r"SELECT 'a\', (SELECT secret FROM hidden), '\'";
    assert_eq!(
        describe(nbe, &my_scope(false, false)),
        ["select: select app.hidden"]
    );
}

#[test]
fn the_clock_and_the_session_are_not_deterministic() {
    let scope = Scope {
        dialect: Dialect::Postgres,
        search_path: &[],
        database: "",
        lexing: Default::default(),
        fold_table_names: true,
    };
    for sql in [
        "SELECT * FROM t WHERE d < 'now'::timestamptz",
        "SELECT * FROM t WHERE d < TIMESTAMP 'now'",
        "SELECT * FROM t WHERE d = 'today'",
        "SELECT CURRENT_ROLE, x FROM t",
        "SELECT session_user FROM t",
    ] {
        let c = classify(sql, &scope).unwrap();
        assert!(!c[0].deterministic, "{sql}");
    }
    let sqlite = Scope {
        dialect: Dialect::Sqlite,
        ..scope
    };
    let c = classify("SELECT * FROM t WHERE d < strftime('%s', 'now')", &sqlite).unwrap();
    assert!(!c[0].deterministic);
    assert!(classify("SELECT * FROM t WHERE s = 'x'", &scope).unwrap()[0].deterministic);
    // an unqualified catalog name is the catalog's (looked up first), not public's
    assert_eq!(
        pg("SELECT * FROM pg_authid"),
        ["select: select pg_catalog.pg_authid select public.pg_authid"]
    );
}
