use std::sync::Arc;

use super::*;
use crate::classify::{classify, Dialect, Scope};

fn stmts(sql: &str) -> Vec<Classified> {
    classify(
        sql,
        &Scope {
            dialect: Dialect::Postgres,
            search_path: &[],
            database: "",
            lexing: Default::default(),
            fold_table_names: true,
        },
    )
    .unwrap()
}

fn route(invalidate: Invalidate) -> RouteRules {
    RouteRules::new(
        RouteCache {
            enabled: true,
            never: vec!["public.secret*".into()],
            invalidate,
            ..RouteCache::default()
        },
        "postgres://db:5432/shop".into(),
        "app".into(),
    )
}

fn parts(sql: &str) -> KeyParts<'_> {
    KeyParts {
        route: "shop",
        scope: "alice",
        session: "",
        sql,
        params: &[],
    }
}

fn memory() -> Arc<Cache> {
    Arc::new(Cache::new(&CacheStore::default()).unwrap())
}

#[test]
fn hints() {
    assert_eq!(Hint::parse("SELECT 1"), Hint::None);
    assert_eq!(Hint::parse("/* sluice:nocache */ SELECT 1"), Hint::NoCache);
    assert_eq!(
        Hint::parse("SELECT 1 /* sluice:cache ttl=30s */"),
        Hint::Cache {
            ttl: Some(Duration::from_secs(30))
        }
    );
    assert_eq!(
        Hint::parse("/* other */ /* sluice:cache ttl=250ms */ SELECT 1"),
        Hint::Cache {
            ttl: Some(Duration::from_millis(250))
        }
    );
    assert_eq!(
        Hint::parse("/* sluice:cache */ SELECT 1"),
        Hint::Cache { ttl: None }
    );
    assert_eq!(
        Hint::parse("/* sluice:cache ttl=-1 */ SELECT 1"),
        Hint::Cache { ttl: None }
    );
}

#[test]
fn only_deterministic_single_reads_are_planned() {
    let cache = memory();
    let r = route(Invalidate::Table);
    let plan = |sql: &str| cache.plan(&r, &parts(sql), &stmts(sql)).err();
    assert_eq!(plan("SELECT * FROM orders WHERE id = 1"), None);
    assert_eq!(plan("SELECT 1; SELECT 2"), Some("not_single"));
    assert_eq!(plan("UPDATE orders SET n = 1"), Some("not_read"));
    assert_eq!(plan("SELECT * FROM orders FOR UPDATE"), Some("not_read"));
    assert_eq!(plan("SELECT now()"), Some("volatile"));
    assert_eq!(plan("SELECT * FROM pg_catalog.pg_class"), Some("catalog"));
    assert_eq!(
        plan("SELECT * FROM information_schema.tables"),
        Some("catalog")
    );
    assert_eq!(plan("SELECT * FROM secrets"), Some("excluded"));
    assert_eq!(
        plan("/* sluice:nocache */ SELECT * FROM orders"),
        Some("hint")
    );
    assert_eq!(plan("SET search_path TO app"), Some("not_read"));
    assert_eq!(plan("SELECT app.f()"), Some("not_read"));
}

#[tokio::test]
async fn a_write_makes_older_entries_unreachable() {
    let cache = memory();
    for invalidate in [Invalidate::Table, Invalidate::Database] {
        let r = route(invalidate);
        let sql = format!("SELECT * FROM orders /* {invalidate:?} */");
        let plan = || cache.plan(&r, &parts(&sql), &stmts(&sql)).unwrap();
        let Lookup::Miss(fill) = cache.lookup(plan()).await else {
            panic!("empty cache")
        };
        cache.fill(fill, Bytes::from_static(b"answer"));
        // the store runs in the background
        let mut hit = None;
        for _ in 0..100 {
            if let Lookup::Hit(a) = cache.lookup(plan()).await {
                hit = Some(a);
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(hit.as_deref(), Some(&b"answer"[..]));
        // a write to another table: still there only when invalidating by table
        cache
            .invalidate(&r, &written(&stmts("DELETE FROM other"), true))
            .await;
        let still = matches!(cache.lookup(plan()).await, Lookup::Hit(_));
        assert_eq!(still, invalidate == Invalidate::Table);
        cache
            .invalidate(&r, &written(&stmts("UPDATE orders SET n = 1"), true))
            .await;
        assert!(matches!(cache.lookup(plan()).await, Lookup::Miss(_)));
    }
}

#[test]
fn keys_differ_by_everything_that_changes_the_answer() {
    let cache = memory();
    let r = route(Invalidate::Table);
    let sql = "SELECT * FROM orders";
    let s = stmts(sql);
    let base = cache.plan(&r, &parts(sql), &s).unwrap();
    let variants = [
        KeyParts {
            scope: "bob",
            ..parts(sql)
        },
        KeyParts {
            session: "search_path=app",
            ..parts(sql)
        },
        KeyParts {
            route: "shop2",
            ..parts(sql)
        },
        KeyParts {
            params: &[1],
            ..parts(sql)
        },
    ];
    for v in variants {
        let p = cache.plan(&r, &v, &s).unwrap();
        assert_ne!(p.key, base.key);
        assert_ne!(p.base, base.base);
    }
    // the stored key is compared on a hit
    let value = pack(&base.key, b"rows");
    assert_eq!(unpack(&value, &base.key).as_deref(), Some(&b"rows"[..]));
    assert_eq!(unpack(&value, "another key"), None);
}

#[test]
fn writes_of_unknown_reach_invalidate_the_database() {
    assert_eq!(
        written(&stmts("DELETE FROM a; UPDATE b SET x = 1"), true),
        ["public.a", "public.b"]
    );
    assert_eq!(written(&stmts("SELECT app.f()"), true), ["*"]);
    assert_eq!(written(&stmts("CREATE TABLE t (a int)"), true), ["*"]);
    assert_eq!(written(&[], false), ["*"]);
    assert!(written(&stmts("SELECT * FROM a"), true).is_empty());
}

#[tokio::test]
async fn concurrent_misses_share_one_fill() {
    let cache = memory();
    let r = route(Invalidate::Table);
    let sql = "SELECT * FROM orders WHERE id = 7";
    let plan = || cache.plan(&r, &parts(sql), &stmts(sql)).unwrap();
    let Lookup::Miss(fill) = cache.lookup(plan()).await else {
        panic!("empty cache")
    };
    // a second identical read waits for the first one's answer
    let waiter = {
        let cache = cache.clone();
        let p = plan();
        tokio::spawn(async move { cache.lookup(p).await })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(!waiter.is_finished());
    cache.fill(fill, Bytes::from_static(b"shared"));
    let Lookup::Hit(answer) = waiter.await.unwrap() else {
        panic!("the waiting read ran its own query")
    };
    assert_eq!(&answer[..], b"shared");

    // a fill given up (the query failed): the waiting read runs its own query
    let sql = "SELECT * FROM orders WHERE id = 8";
    let plan = || cache.plan(&r, &parts(sql), &stmts(sql)).unwrap();
    let Lookup::Miss(fill) = cache.lookup(plan()).await else {
        panic!("empty cache")
    };
    let waiter = {
        let cache = cache.clone();
        let p = plan();
        tokio::spawn(async move { cache.lookup(p).await })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    drop(fill);
    assert!(matches!(waiter.await.unwrap(), Lookup::Unavailable));
    // and the next read fills it again
    assert!(matches!(cache.lookup(plan()).await, Lookup::Miss(_)));
}
