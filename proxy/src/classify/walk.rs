//! The walk over one statement's syntax tree that collects its accesses.

use std::collections::HashSet;
use std::ops::ControlFlow;

use policies::Action;
use sqlparser::ast::{
    self, Expr, ObjectName, ObjectNamePart, Query, SetExpr, Statement, TableFactor, TableWithJoins,
    Visit, Visitor,
};

use super::{Access, Classified, Dialect, Effect, Scope, Unsupported};

mod functions;
mod show;
mod statements;

pub(super) fn classify_one(stmt: &Statement, scope: &Scope<'_>) -> Result<Classified, Unsupported> {
    let mut walk = Walk {
        scope,
        frames: Vec::new(),
        reads: Vec::new(),
        targets: Vec::new(),
        accesses: Vec::new(),
        effects: Vec::new(),
        executes: None,
        action: None,
        locks: false,
        skip_relations: HashSet::new(),
        volatile: false,
        error: None,
    };
    let _ = stmt.visit(&mut walk);
    if let Some(e) = walk.error {
        return Err(Unsupported(e));
    }
    let mut reads = walk.reads;
    // A write target is also visited as a relation: it is written, not read, unless it
    // appears again (a subquery reading the table being written).
    for t in &walk.targets {
        if let Some(i) = reads.iter().position(|r| r == t) {
            reads.remove(i);
        }
    }
    let read_action = if walk.locks {
        Action::Update
    } else {
        Action::Select
    };
    let mut accesses = walk.accesses;
    for name in reads {
        for object in scope.resolve(&name) {
            accesses.push(Access {
                action: read_action,
                object,
            });
        }
    }
    accesses.sort();
    accesses.dedup();
    Ok(Classified {
        action: walk.action.unwrap_or(Action::Other),
        accesses,
        effects: walk.effects,
        executes: walk.executes,
        deterministic: !walk.volatile && !walk.locks,
    })
}

/// A name as the backend folds it: parts already case-folded, unresolved.
type Name = Vec<String>;

/// One WITH clause in scope: its names, how many are visible now, and the CTE queries.
struct Frame {
    query: *const Query,
    names: Vec<String>,
    visible: usize,
    recursive: bool,
    ctes: Vec<*const Query>,
}

struct Walk<'s, 'a> {
    scope: &'s Scope<'a>,
    frames: Vec<Frame>,
    /// Relations read (CTE references removed), in visiting order.
    reads: Vec<Name>,
    /// Relations a statement writes; removed once each from `reads`.
    targets: Vec<Name>,
    accesses: Vec<Access>,
    effects: Vec<Effect>,
    executes: Option<String>,
    action: Option<Action>,
    /// A query takes row locks (FOR UPDATE / FOR SHARE): its reads count as updates.
    locks: bool,
    /// Table factors that are function calls, not relations (by name pointer).
    skip_relations: HashSet<*const ObjectName>,
    /// Something whose value is not fixed by the tables read: a volatile or unknown
    /// function, a session variable.
    volatile: bool,
    error: Option<String>,
}

impl Scope<'_> {
    fn fold(&self, ident: &ast::Ident) -> String {
        match self.dialect {
            Dialect::Postgres if ident.quote_style.is_some() => ident.value.clone(),
            Dialect::Mysql if !self.fold_table_names => ident.value.clone(),
            _ => ident.value.to_lowercase(),
        }
    }

    fn name(&self, name: &ObjectName) -> Name {
        name.0
            .iter()
            .map(|p| match p {
                ObjectNamePart::Identifier(i) => self.fold(i),
                other => other.to_string(),
            })
            .collect()
    }

    /// Every object an unqualified or qualified name may denote.
    fn resolve(&self, name: &[String]) -> Vec<String> {
        match (self.dialect, name) {
            (_, []) => vec!["*".into()],
            (Dialect::Postgres, [t])
                if t.starts_with("pg_") && !self.search_path.iter().any(|s| s == "pg_catalog") =>
            {
                // PostgreSQL looks in pg_catalog first unless the path names it (every
                // catalog relation's name starts with pg_)
                let mut out = vec![format!("pg_catalog.{t}")];
                out.extend(self.resolve_in_path(t));
                out
            }
            (Dialect::Postgres, [t]) => self.resolve_in_path(t),
            (Dialect::Mysql, [t]) if self.fold_table_names => {
                vec![format!("{}.{t}", self.database.to_lowercase())]
            }
            (Dialect::Mysql, [t]) => vec![format!("{}.{t}", self.database)],
            (Dialect::Sqlite, [t]) => vec![format!("main.{t}")],
            (_, parts) => {
                let n = parts.len();
                vec![format!("{}.{}", parts[n - 2], parts[n - 1])]
            }
        }
    }

    /// An unqualified PostgreSQL name in every schema of the search path.
    fn resolve_in_path(&self, t: &str) -> Vec<String> {
        let path: Vec<&String> = self
            .search_path
            .iter()
            .filter(|s| s.as_str() != "$user" && s.as_str() != "pg_temp")
            .collect();
        if path.is_empty() {
            vec![format!("public.{t}")]
        } else {
            path.into_iter().map(|s| format!("{s}.{t}")).collect()
        }
    }
}

impl Walk<'_, '_> {
    fn set_action(&mut self, action: Action) {
        // The first statement decides, except that a write nested in a read (a
        // data-modifying CTE) makes the whole statement that write.
        match self.action {
            None => self.action = Some(action),
            Some(Action::Select) if is_write(action) => self.action = Some(action),
            _ => {}
        }
    }

    fn access(&mut self, action: Action, object: impl Into<String>) {
        self.accesses.push(Access {
            action,
            object: object.into(),
        });
    }

    fn on_name(&mut self, action: Action, name: &ObjectName) {
        let n = self.scope.name(name);
        for object in self.scope.resolve(&n) {
            self.access(action, object);
        }
    }

    /// A statement writes `name` (also visited as a relation).
    fn target(&mut self, action: Action, name: &ObjectName) {
        self.targets.push(self.scope.name(name));
        self.on_name(action, name);
    }

    fn target_tables(&mut self, action: Action, tables: &[TableWithJoins]) {
        for t in tables {
            self.target_factor(action, &t.relation);
            for j in &t.joins {
                self.target_factor(action, &j.relation);
            }
        }
    }

    fn target_factor(&mut self, action: Action, factor: &TableFactor) {
        if let TableFactor::Table { name, .. } = factor {
            self.target(action, name);
        }
    }

    fn unsupported(&mut self, what: String) {
        if self.error.is_none() {
            self.error = Some(what);
        }
    }

    fn is_cte(&self, name: &Name) -> bool {
        let [single] = name.as_slice() else {
            return false;
        };
        self.frames
            .iter()
            .any(|f| f.names[..f.visible].iter().any(|n| n == single))
    }

    /// `SELECT ... INTO`: PostgreSQL creates a table; MySQL sets variables.
    fn select_into(&mut self, targets: &[Expr]) {
        for t in targets {
            let name = match t {
                Expr::Identifier(i) => ObjectName::from(vec![i.clone()]),
                Expr::CompoundIdentifier(parts) => ObjectName::from(parts.clone()),
                _ => {
                    self.unsupported(format!(
                        "SELECT ... INTO {t} is not supported by access policy"
                    ));
                    continue;
                }
            };
            if self.scope.dialect == Dialect::Mysql && name.to_string().starts_with('@') {
                self.access(Action::Session, name.to_string());
                continue;
            }
            self.set_action(Action::Ddl);
            self.target(Action::Ddl, &name);
        }
    }
}

/// Keywords that read the session or the clock.
const SESSION_KEYWORDS: &[&str] = &[
    "current_role",
    "current_user",
    "session_user",
    "system_user",
    "user",
    "current_catalog",
    "current_schema",
    "current_date",
    "current_time",
    "current_timestamp",
    "localtime",
    "localtimestamp",
];

/// A string that a date or time type reads as the current moment.
fn volatile_literal(v: &ast::Value) -> bool {
    let (ast::Value::SingleQuotedString(s) | ast::Value::DoubleQuotedString(s)) = v else {
        return false;
    };
    let s = s.to_ascii_lowercase();
    ["now", "today", "tomorrow", "yesterday"]
        .iter()
        .any(|w| s.contains(w))
}

fn is_write(a: Action) -> bool {
    matches!(
        a,
        Action::Insert
            | Action::Update
            | Action::Delete
            | Action::Truncate
            | Action::Ddl
            | Action::Admin
    )
}

impl Visitor for Walk<'_, '_> {
    type Break = ();

    fn pre_visit_statement(&mut self, stmt: &Statement) -> ControlFlow<()> {
        if self.error.is_some() {
            return ControlFlow::Break(());
        }
        self.statement(stmt);
        if show::is_show(stmt) {
            // SHOW's names are not relations read: show() checked them
            return ControlFlow::Break(());
        }
        if let Statement::Prepare { .. } = stmt {
            // The prepared statement was classified on its own; its parts are not
            // accesses of the PREPARE itself.
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_query(&mut self, q: &Query) -> ControlFlow<()> {
        if !q.locks.is_empty() {
            self.locks = true;
        }
        // Entering the query of a CTE: only the CTEs before it are visible (and itself,
        // when the WITH is recursive).
        if let Some(frame) = self.frames.last_mut() {
            if let Some(i) = frame.ctes.iter().position(|c| std::ptr::eq(*c, q)) {
                frame.visible = if frame.recursive { i + 1 } else { i };
            }
        }
        if let Some(with) = &q.with {
            let names = with
                .cte_tables
                .iter()
                .map(|c| self.scope.fold(&c.alias.name))
                .collect();
            self.frames.push(Frame {
                query: q,
                names,
                visible: 0,
                recursive: with.recursive,
                ctes: with
                    .cte_tables
                    .iter()
                    .map(|c| &*c.query as *const Query)
                    .collect(),
            });
        }
        if let SetExpr::Select(select) = &*q.body {
            if let Some(into) = &select.into {
                self.select_into(&into.targets);
            }
        }
        ControlFlow::Continue(())
    }

    fn post_visit_query(&mut self, q: &Query) -> ControlFlow<()> {
        if self.frames.last().is_some_and(|f| std::ptr::eq(f.query, q)) {
            self.frames.pop();
        }
        // Leaving a CTE's query: it is visible to what follows.
        if let Some(frame) = self.frames.last_mut() {
            if let Some(i) = frame.ctes.iter().position(|c| std::ptr::eq(*c, q)) {
                frame.visible = i + 1;
            }
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, f: &TableFactor) -> ControlFlow<()> {
        if let TableFactor::Function { name, args, .. } = f {
            // FROM [LATERAL] f(...)
            let args = ast::FunctionArguments::List(ast::FunctionArgumentList {
                duplicate_treatment: None,
                args: args.clone(),
                clauses: Vec::new(),
            });
            self.function(name, Some(&args));
        }
        if let TableFactor::Table {
            name,
            args: Some(args),
            ..
        } = f
        {
            // FROM f(...): a function call, not a relation
            self.skip_relations.insert(name as *const ObjectName);
            let args = ast::FunctionArguments::List(ast::FunctionArgumentList {
                duplicate_treatment: None,
                args: args.args.clone(),
                clauses: Vec::new(),
            });
            self.function(name, Some(&args));
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_relation(&mut self, r: &ObjectName) -> ControlFlow<()> {
        if self.skip_relations.contains(&(r as *const ObjectName)) {
            return ControlFlow::Continue(());
        }
        let name = self.scope.name(r);
        if !self.is_cte(&name) {
            self.reads.push(name);
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
        match e {
            Expr::Function(f) => self.function(&f.name, Some(&f.args)),
            // 'now', 'today' as dates and times: fixed when the statement runs, not by
            // the tables read
            Expr::Value(v) if volatile_literal(&v.value) => self.volatile = true,
            Expr::TypedString(t) if volatile_literal(&t.value.value) => self.volatile = true,
            // CURRENT_ROLE, SESSION_USER... written without parentheses
            Expr::Identifier(i)
                if i.quote_style.is_none()
                    && SESSION_KEYWORDS.contains(&i.value.to_ascii_lowercase().as_str()) =>
            {
                self.volatile = true
            }
            // MySQL user and system variables (@x, @@x)
            Expr::Identifier(i) if i.value.starts_with('@') => self.volatile = true,
            Expr::CompoundIdentifier(parts)
                if parts.first().is_some_and(|i| i.value.starts_with('@')) =>
            {
                self.volatile = true
            }
            _ => {}
        }
        ControlFlow::Continue(())
    }
}
