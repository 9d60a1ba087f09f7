//! Decisions over the shipped model and the example policies in `policies/`.

use std::path::PathBuf;

use super::*;

fn examples() -> Policy {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let files: Vec<PathBuf> = ["analyst.csv", "app.csv", "admin.csv"]
        .iter()
        .map(|f| dir.join(f))
        .collect();
    Policy::load(Some(&dir.join("model.conf")), &files).expect("example policies load")
}

fn ask(p: &Policy, user: &str, route: &str, object: &str, action: Action) -> Decision {
    p.check(&AccessRequest {
        subject: user,
        domain: route,
        object,
        action,
    })
}

#[test]
fn example_policies_decide_as_documented() {
    use Action::*;
    let p = examples();
    // (user, route, object, action, permitted)
    let table: &[(&str, &str, &str, Action, bool)] = &[
        // analyst: reads reporting and public, never payroll, never writes
        ("alice", "warehouse", "reporting.sales", Select, true),
        ("alice", "app", "public.items", Select, true),
        ("alice", "warehouse", "reporting.payroll", Select, false),
        ("alice", "warehouse", "public.payroll", Select, false),
        ("alice", "warehouse", "reporting.sales", Insert, false),
        ("alice", "warehouse", "reporting.sales", Delete, false),
        ("alice", "warehouse", "reporting.sales", Ddl, false),
        ("alice", "warehouse", "reporting.sales", CopyOut, false),
        ("alice", "warehouse", "sales.orders", Select, false),
        ("alice", "warehouse", "search_path", Session, true),
        ("alice", "warehouse", "*", Transaction, true),
        ("alice", "warehouse", "*", Admin, false),
        ("alice", "warehouse", "public.f", Execute, false),
        // app: its own schema only, no DDL or TRUNCATE
        ("app", "orders", "app.orders", Select, true),
        ("app", "orders", "app.orders", Insert, true),
        ("app", "orders", "app.orders", Update, true),
        ("app", "orders", "app.orders", Delete, true),
        ("app", "orders", "app.orders", CopyIn, true),
        ("app", "orders", "app.orders", CopyOut, false),
        ("app", "orders", "app.orders", Truncate, false),
        ("app", "orders", "app.orders", Ddl, false),
        ("app", "orders", "public.orders", Select, false),
        ("app", "orders", "application.orders", Select, false),
        ("app", "orders", "App.orders", Select, false),
        // admin: everything
        ("ops", "orders", "app.orders", Truncate, true),
        ("ops", "x", "*", Admin, true),
        // roles are not users, unknown users have nothing
        ("analyst", "warehouse", "reporting.sales", Select, true),
        ("mallory", "warehouse", "reporting.sales", Select, false),
        ("", "warehouse", "reporting.sales", Select, false),
    ];
    for &(user, route, object, action, permitted) in table {
        let d = ask(&p, user, route, object, action);
        assert_eq!(
            d.is_permit(),
            permitted,
            "{user} {action} {object} on {route}: {d:?}"
        );
        // the cached answer is the same
        assert_eq!(ask(&p, user, route, object, action), d);
    }
}

#[test]
fn denials_say_why() {
    let p = examples();
    let d = ask(&p, "alice", "w", "reporting.payroll", Action::Select);
    assert_eq!(
        d,
        Decision::Denied {
            reason: "a deny rule forbids select on reporting.payroll for alice".into()
        }
    );
    let d = ask(&p, "alice", "w", "reporting.sales", Action::Update);
    assert_eq!(
        d,
        Decision::Denied {
            reason: "no rule allows update on reporting.sales for alice".into()
        }
    );
}

#[test]
fn roles_and_rules_bind_to_route_patterns() {
    let policy = "\
p, reader, sales_*, public.*, select, allow
p, bob, hr, public.people, select, allow
g, bob, reader, sales_eu
";
    let p = Policy::from_text(DEFAULT_MODEL, &[("t.csv", policy)]).unwrap();
    assert!(ask(&p, "bob", "sales_eu", "public.orders", Action::Select).is_permit());
    // the role binding holds on sales_eu only
    assert!(!ask(&p, "bob", "sales_us", "public.orders", Action::Select).is_permit());
    assert!(ask(&p, "bob", "hr", "public.people", Action::Select).is_permit());
    assert!(!ask(&p, "bob", "hr", "public.salaries", Action::Select).is_permit());
    // a pattern does not match across the dot unless it says so
    assert!(!ask(&p, "bob", "sales_eu", "private.orders", Action::Select).is_permit());
}

#[test]
fn an_empty_policy_denies_everything() {
    let p = Policy::from_text(DEFAULT_MODEL, &[]).unwrap();
    for action in Action::ALL {
        assert!(!ask(&p, "u", "r", "*", action).is_permit());
    }
}

#[test]
fn bad_lines_are_refused_with_their_place() {
    let cases = [
        ("p, a, *, t, select", "5 fields"),
        ("p, a, *, t, selekt, allow", "unknown action \"selekt\""),
        ("p, a, *, t, select, maybe", "allow or deny"),
        ("p, a, *, t[0], select, allow", "invalid pattern"),
        ("g, a, b", "3 fields"),
        ("x, a, b", "starts with p or g"),
    ];
    for (line, want) in cases {
        let text = format!("# comment\n\n{line}\n");
        let err = Policy::from_text(DEFAULT_MODEL, &[("f.csv", &text)]).unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("f.csv:3: "), "{msg}");
        assert!(msg.contains(want), "{line}: {msg}");
    }
    let err = Policy::from_text("[request_definition]\nr = sub\n", &[]).unwrap_err();
    assert!(
        matches!(err, PolicyError::Model(_) | PolicyError::Casbin(_)),
        "{err}"
    );
}

#[test]
fn a_200_rule_policy_loads_and_decides() {
    let mut text = String::new();
    for i in 0..200 {
        text.push_str(&format!("p, role{i}, *, schema{i}.*, select, allow\n"));
    }
    text.push_str("g, u, role150, *\n");
    let p = Policy::from_text(DEFAULT_MODEL, &[("big.csv", &text)]).unwrap();
    assert_eq!(p.rules(), 201);
    assert!(ask(&p, "u", "r", "schema150.t", Action::Select).is_permit());
    assert!(!ask(&p, "u", "r", "schema151.t", Action::Select).is_permit());
}

#[test]
fn globs_match_whole_names() {
    use crate::glob;
    for (pattern, name, expected) in [
        ("sales.*", "sales.orders", true),
        ("sales.*", "sales.", true),
        ("sales.*", "salesx.orders", false),
        ("*", "app.orders", true),
        ("*", "", true),
        ("a?c", "abc", true),
        ("a?c", "ac", false),
        ("*.orders", "app.orders", true),
        ("*.orders", "app.orders2", false),
        ("a*b*c", "aXbYbZc", true),
        ("a*b*c", "aXbYbZ", false),
        ("app.t*_log", "app.t1_x_log", true),
        ("exact", "exact", true),
        ("exact", "exactly", false),
        ("sales_*", "hr", false),
        ("é*", "été", true),
    ] {
        assert_eq!(glob(pattern, name), expected, "{pattern} ~ {name}");
    }
    // a pathological pattern stays fast
    let name = "a".repeat(2000);
    assert!(!glob(&format!("{}b", "*a".repeat(50)), &name));
}
