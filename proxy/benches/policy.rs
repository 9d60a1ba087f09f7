//! The per-statement cost of access control: parsing alone, classification (sqlparser
//! and the name walk), the policy decision under a 200-rule policy (cached and not), and
//! `SessionPolicy::check` as the frontends call it (with the classification cache).
//!
//! `cargo bench -p proxy --bench policy`

use std::collections::{HashMap, HashSet};
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use policies::{AccessRequest, Policy, DEFAULT_MODEL};
use proxy::access::{AccessState, SessionPolicy};
use proxy::classify::{classify, Dialect, Scope};

/// The statements of pgbench's select-only and TPC-B-like scripts, and a wider query.
const STATEMENTS: &[(&str, &str)] = &[
    (
        "select",
        "SELECT abalance FROM pgbench_accounts WHERE aid = 4711;",
    ),
    (
        "update",
        "UPDATE pgbench_accounts SET abalance = abalance + 17 WHERE aid = 4711;",
    ),
    (
        "insert",
        "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) \
         VALUES (3, 1, 4711, 17, CURRENT_TIMESTAMP);",
    ),
    (
        "join_cte",
        "WITH recent AS (SELECT aid, delta FROM pgbench_history WHERE mtime > now() - \
         interval '1 hour') SELECT a.aid, a.abalance, sum(r.delta) FROM pgbench_accounts a \
         JOIN recent r ON r.aid = a.aid JOIN pgbench_branches b ON b.bid = a.bid \
         WHERE b.bid IN (SELECT bid FROM pgbench_tellers WHERE tbalance > 0) \
         GROUP BY a.aid, a.abalance ORDER BY 3 DESC LIMIT 10",
    ),
];

/// 200 rules: 196 roles over schemas of their own, and the four rules the bench user needs.
fn policy_text() -> String {
    let mut text = String::new();
    for i in 0..196 {
        let action = ["select", "insert", "update", "delete"][i % 4];
        text.push_str(&format!("p, role{i}, *, schema{i}.*, {action}, allow\n"));
    }
    for action in ["select", "insert", "update", "delete"] {
        text.push_str(&format!("p, bench, *, public.pgbench_*, {action}, allow\n"));
    }
    text.push_str("g, alice, bench, *\n");
    text
}

fn bench(c: &mut Criterion) {
    let text = policy_text();
    let policy = Policy::from_text(DEFAULT_MODEL, &[("bench.csv", &text)]).unwrap();
    assert_eq!(policy.rules(), 201);
    classification(c);
    decisions(c, &policy);
    let access = AccessState {
        users: HashMap::new(),
        policy: Some(policy),
        unparsed_allowed: HashSet::new(),
        audit: None,
        generation: 1,
        classified: Default::default(),
    };
    session_checks(c, &access);
}

/// sqlparser alone, then classification.
fn classification(c: &mut Criterion) {
    let search_path = Vec::new();
    let scope = Scope {
        dialect: Dialect::Postgres,
        search_path: &search_path,
        database: "",
        lexing: Default::default(),
        fold_table_names: true,
    };

    let mut group = c.benchmark_group("parse");
    for (name, sql) in STATEMENTS {
        group.bench_function(*name, |b| {
            b.iter(|| proxy::classify::parse(black_box(sql), Dialect::Postgres).unwrap())
        });
    }
    group.finish();

    let mut group = c.benchmark_group("classify");
    for (name, sql) in STATEMENTS {
        group.bench_function(*name, |b| {
            b.iter(|| classify(black_box(sql), &scope).unwrap())
        });
    }
    group.finish();
}

/// One decision under 200 rules, cached and not.
fn decisions(c: &mut Criterion, policy: &Policy) {
    let mut group = c.benchmark_group("decide");
    group.bench_function("cached", |b| {
        let request = AccessRequest {
            subject: "alice",
            domain: "bench",
            object: "public.pgbench_accounts",
            action: policies::Action::Select,
        };
        b.iter(|| black_box(policy.check(black_box(&request))))
    });
    // a new object every time (the counter outlives criterion's repeated calls of the
    // closure): the decision goes to casbin, whose matcher runs over all 200 rules
    let mut fresh = 0u64;
    group.bench_function("uncached", |b| {
        b.iter(|| {
            fresh += 1;
            let object = format!("public.pgbench_{fresh}");
            let request = AccessRequest {
                subject: "alice",
                domain: "bench",
                object: &object,
                action: policies::Action::Select,
            };
            black_box(policy.check(&request))
        })
    });
    group.finish();
}

/// `SessionPolicy::check` as the frontends call it.
fn session_checks(c: &mut Criterion, access: &AccessState) {
    // through the classification cache: the same texts, and (numbers_vary) the pgbench
    // select with a new number each time, as `pgbench -M simple` sends it
    let mut group = c.benchmark_group("session_check");
    let mut session = SessionPolicy::new("alice", "bench", "postgres", None, Dialect::Postgres, "");
    let mut aid = 0u64;
    group.bench_function("numbers_vary", |b| {
        b.iter(|| {
            aid += 1;
            let sql = format!("SELECT abalance FROM pgbench_accounts WHERE aid = {aid};");
            session.check(access, &sql, false).unwrap()
        })
    });
    for (name, sql) in STATEMENTS {
        let mut session =
            SessionPolicy::new("alice", "bench", "postgres", None, Dialect::Postgres, "");
        group.bench_function(*name, |b| {
            b.iter(|| session.check(access, black_box(sql), false).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
