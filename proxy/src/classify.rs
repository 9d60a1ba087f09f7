//! Statement classification for access policies: for each statement of a request, what it
//! does and every object it touches, with names resolved the way the backend resolves them.
//!
//! Parsing is sqlparser's, with the backend's dialect. Classification fails closed: a
//! statement sqlparser cannot parse, or of a kind not listed here, is `Unsupported`, and
//! when in doubt an access is added rather than left out (an unqualified PostgreSQL table
//! is checked in every schema of the search path; a CTE name is a CTE only inside the
//! scope where it is visible).

use std::collections::HashSet;
use std::ops::ControlFlow;

use policies::Action;
use sqlparser::ast::{
    self, CopySource, CopyTarget, Expr, FromTable, ObjectName, ObjectNamePart, ObjectType, Query,
    Set, SetExpr, Statement, TableFactor, TableObject, TableWithJoins, Visit, Visitor,
};
use sqlparser::dialect::{Dialect as SqlDialect, MySqlDialect, PostgreSqlDialect, SQLiteDialect};
use sqlparser::parser::Parser;

/// The SQL dialect of the backend that will run the statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Postgres,
    Mysql,
    Sqlite,
}

/// Where unqualified names resolve.
#[derive(Debug, Clone, Copy)]
pub struct Scope<'a> {
    pub dialect: Dialect,
    /// PostgreSQL: the schemas an unqualified table may resolve to, in order.
    pub search_path: &'a [String],
    /// MySQL: the current database.
    pub database: &'a str,
}

/// One access a statement makes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Access {
    pub action: Action,
    /// `schema.table`, `database.table`, a function, a setting name, or `*`.
    pub object: String,
}

/// Session state a statement changes, for the classification of later statements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// `SET [SESSION|LOCAL] search_path`: the schemas named (empty: back to the default).
    SearchPath { schemas: Vec<String>, local: bool },
    /// SQL-level `PREPARE name AS ...`: what running it will access.
    Prepare { name: String, accesses: Vec<Access> },
    /// SQL-level `DEALLOCATE name` (None: all).
    Deallocate(Option<String>),
}

/// One classified statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classified {
    /// What the statement does as a whole (a data-modifying CTE makes a SELECT a write).
    pub action: Action,
    pub accesses: Vec<Access>,
    pub effects: Vec<Effect>,
    /// SQL-level `EXECUTE name`: the accesses are those recorded at PREPARE.
    pub executes: Option<String>,
}

/// A request that cannot be classified, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsupported(pub String);

/// Classifies every statement of one request (a simple query may hold several).
pub fn classify(sql: &str, scope: &Scope<'_>) -> Result<Vec<Classified>, Unsupported> {
    if scope.dialect == Dialect::Mysql && has_executable_comment(sql) {
        return Err(Unsupported(
            "MySQL executable comments (/*! ... */) are not supported by access policy".into(),
        ));
    }
    let statements = parse(sql, scope.dialect)?;
    let mut path = scope.search_path.to_vec();
    let mut out = Vec::with_capacity(statements.len());
    for s in &statements {
        let c = classify_one(
            s,
            &Scope {
                search_path: &path,
                ..*scope
            },
        )?;
        // A later statement of the same request resolves names under the search_path an
        // earlier one set; the old schemas stay candidates (the SET may not take effect).
        for e in &c.effects {
            if let Effect::SearchPath { schemas, .. } = e {
                let mut next = if schemas.is_empty() {
                    vec!["public".to_string()]
                } else {
                    schemas.clone()
                };
                let old = if path.is_empty() {
                    vec!["public".to_string()]
                } else {
                    path.clone()
                };
                for o in old {
                    if !next.contains(&o) {
                        next.push(o);
                    }
                }
                path = next;
            }
        }
        out.push(c);
    }
    Ok(out)
}

/// Parses with the backend's dialect.
pub fn parse(sql: &str, dialect: Dialect) -> Result<Vec<Statement>, Unsupported> {
    let d: &dyn SqlDialect = match dialect {
        Dialect::Postgres => &PostgreSqlDialect {},
        Dialect::Mysql => &MySqlDialect {},
        Dialect::Sqlite => &SQLiteDialect {},
    };
    Parser::parse_sql(d, sql).map_err(|e| Unsupported(format!("cannot parse statement: {e}")))
}

/// `/*!` or `/*M!` outside string literals: MySQL runs what such a comment holds.
fn has_executable_comment(sql: &str) -> bool {
    let b = sql.as_bytes();
    let mut i = 0;
    let mut quote: Option<u8> = None;
    while i < b.len() {
        let c = b[i];
        match quote {
            Some(q) => {
                if c == b'\\' {
                    i += 1;
                } else if c == q {
                    quote = None;
                }
            }
            None => {
                if matches!(c, b'\'' | b'"' | b'`') {
                    quote = Some(c);
                } else if c == b'/' && (b[i..].starts_with(b"/*!") || b[i..].starts_with(b"/*M!")) {
                    return true;
                }
            }
        }
        i += 1;
    }
    false
}

fn classify_one(stmt: &Statement, scope: &Scope<'_>) -> Result<Classified, Unsupported> {
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
    error: Option<String>,
}

impl Scope<'_> {
    fn fold(&self, ident: &ast::Ident) -> String {
        match self.dialect {
            Dialect::Postgres if ident.quote_style.is_some() => ident.value.clone(),
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
            (Dialect::Postgres, [t]) => {
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
            (Dialect::Mysql, [t]) => vec![format!("{}.{t}", self.database.to_lowercase())],
            (Dialect::Sqlite, [t]) => vec![format!("main.{t}")],
            (_, parts) => {
                let n = parts.len();
                vec![format!("{}.{}", parts[n - 2], parts[n - 1])]
            }
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

    fn statement(&mut self, stmt: &Statement) {
        use Action::*;
        match stmt {
            Statement::Query(_) => self.set_action(Select),
            Statement::Insert(ins) => {
                self.set_action(Insert);
                if let TableObject::TableName(name) = &ins.table {
                    self.target(Insert, name);
                    if ins.on.is_some() {
                        self.on_name(Update, name);
                    }
                    if ins.replace_into {
                        self.on_name(Delete, name);
                    }
                } else {
                    self.unsupported("INSERT into a table function".into());
                }
            }
            Statement::Update(upd) => {
                self.set_action(Update);
                self.target_tables(Update, std::slice::from_ref(&upd.table));
            }
            Statement::Delete(del) => {
                self.set_action(Delete);
                let from = match &del.from {
                    FromTable::WithFromKeyword(t) | FromTable::WithoutKeyword(t) => t,
                };
                self.target_tables(Delete, from);
                for name in &del.tables {
                    // MySQL multi-table DELETE names its targets (maybe by alias): the
                    // tables in FROM are already targets, an alias adds nothing.
                    let n = self.scope.name(name);
                    let aliased = from.iter().any(|t| {
                        std::iter::once(&t.relation)
                            .chain(t.joins.iter().map(|j| &j.relation))
                            .any(|f| match f {
                                TableFactor::Table { alias: Some(a), .. } => {
                                    n.len() == 1 && self.scope.fold(&a.name) == n[0]
                                }
                                _ => false,
                            })
                    });
                    if !aliased {
                        self.on_name(Delete, name);
                    }
                }
            }
            Statement::Merge(m) => {
                self.set_action(Update);
                self.target_factor(Insert, &m.table);
                self.target_factor(Update, &m.table);
                self.target_factor(Delete, &m.table);
            }
            Statement::Truncate(t) => {
                self.set_action(Truncate);
                for target in &t.table_names {
                    self.target(Truncate, &target.name);
                }
            }
            Statement::Copy {
                source, to, target, ..
            } => {
                let action = match (to, target) {
                    (_, CopyTarget::File { .. } | CopyTarget::Program { .. }) => Admin,
                    (false, _) => CopyIn,
                    (true, _) => CopyOut,
                };
                self.set_action(action);
                match source {
                    CopySource::Table { table_name, .. } => self.target(action, table_name),
                    CopySource::Query(_) => self.access(action, "*"),
                }
            }
            Statement::CreateTable(ct) => {
                self.set_action(Ddl);
                self.target(Ddl, &ct.name);
            }
            Statement::CreateView(cv) => {
                self.set_action(Ddl);
                self.target(Ddl, &cv.name);
            }
            Statement::CreateIndex(ci) => {
                self.set_action(Ddl);
                self.target(Ddl, &ci.table_name);
            }
            Statement::AlterTable(at) => {
                self.set_action(Ddl);
                self.target(Ddl, &at.name);
            }
            Statement::AlterIndex { name, .. }
            | Statement::AlterView { name, .. }
            | Statement::CreateSequence { name, .. }
            | Statement::CreateType { name, .. }
            | Statement::Comment {
                object_name: name, ..
            } => {
                self.set_action(Ddl);
                self.target(Ddl, name);
            }
            Statement::CreateFunction(f) => {
                self.set_action(Ddl);
                self.target(Ddl, &f.name);
            }
            Statement::CreateProcedure { name, .. } => {
                self.set_action(Ddl);
                self.target(Ddl, name);
            }
            Statement::CreateTrigger(t) => {
                self.set_action(Ddl);
                self.target(Ddl, &t.table_name);
            }
            Statement::RenameTable(renames) => {
                self.set_action(Ddl);
                for r in renames {
                    self.target(Ddl, &r.old_name);
                    self.target(Ddl, &r.new_name);
                }
            }
            Statement::Drop {
                object_type, names, ..
            } => match object_type {
                ObjectType::Schema | ObjectType::Database | ObjectType::Role | ObjectType::User => {
                    self.set_action(Admin);
                    self.access(Admin, "*");
                }
                _ => {
                    self.set_action(Ddl);
                    for n in names {
                        self.target(Ddl, n);
                    }
                }
            },
            Statement::DropFunction(_) | Statement::DropProcedure { .. } => {
                self.set_action(Ddl);
                self.access(Ddl, "*");
            }
            Statement::Explain { .. } => self.set_action(Select),
            Statement::ExplainTable { table_name, .. } => {
                self.set_action(Select);
                self.on_name(Select, table_name);
            }
            Statement::ShowCreate { obj_name, .. } => {
                self.set_action(Select);
                self.on_name(Select, obj_name);
            }
            Statement::ShowProcessList { .. } => {
                self.set_action(Admin);
                self.access(Admin, "*");
            }
            Statement::ShowVariable { .. }
            | Statement::ShowVariables { .. }
            | Statement::ShowStatus { .. }
            | Statement::ShowTables { .. }
            | Statement::ShowColumns { .. }
            | Statement::ShowDatabases { .. }
            | Statement::ShowSchemas { .. }
            | Statement::ShowCollation { .. }
            | Statement::ShowCharset(_)
            | Statement::ShowFunctions { .. } => {
                self.set_action(Session);
                self.access(Session, "*");
            }
            Statement::StartTransaction { .. }
            | Statement::Commit { .. }
            | Statement::Rollback { .. }
            | Statement::Savepoint { .. }
            | Statement::ReleaseSavepoint { .. } => {
                self.set_action(Transaction);
                self.access(Transaction, "*");
            }
            Statement::Set(set) => self.set(set),
            Statement::Reset(_) | Statement::Discard { .. } => {
                self.set_action(Session);
                self.access(Session, "*");
                self.effects.push(Effect::SearchPath {
                    schemas: Vec::new(),
                    local: false,
                });
            }
            Statement::Use(_) => {
                self.set_action(Session);
                self.access(Session, "*");
            }
            Statement::Declare { .. } | Statement::Fetch { .. } | Statement::Close { .. } => {
                self.set_action(Select)
            }
            Statement::Prepare {
                name, statement, ..
            } => {
                self.set_action(Session);
                match classify_one(statement, self.scope) {
                    Ok(inner) => self.effects.push(Effect::Prepare {
                        name: self.scope.fold(name),
                        accesses: inner.accesses,
                    }),
                    Err(Unsupported(e)) => self.unsupported(e),
                }
            }
            Statement::Execute {
                name: Some(name),
                immediate: false,
                using,
                ..
            } if using.is_empty() => {
                self.set_action(Execute);
                let n = self.scope.name(name);
                self.executes = Some(n.join("."));
            }
            Statement::Deallocate { name, .. } => {
                self.set_action(Session);
                let n = self.scope.fold(name);
                self.effects
                    .push(Effect::Deallocate((n != "all").then_some(n)));
            }
            Statement::Call(f) => {
                self.set_action(Execute);
                self.target(Execute, &f.name);
            }
            Statement::Lock(_) | Statement::LockTables { .. } | Statement::UnlockTables => {
                self.set_action(Update);
                self.access(Update, "*");
            }
            Statement::Analyze(_) => {
                self.set_action(Other);
                self.access(Other, "*");
            }
            Statement::LISTEN { .. } | Statement::UNLISTEN { .. } | Statement::NOTIFY { .. } => {
                self.set_action(Other);
                self.access(Other, "*");
            }
            Statement::Grant(_)
            | Statement::Revoke(_)
            | Statement::CreateRole(_)
            | Statement::AlterRole { .. }
            | Statement::CreateUser(_)
            | Statement::AlterUser(_)
            | Statement::CreateSchema { .. }
            | Statement::CreateDatabase { .. }
            | Statement::CreateExtension(_)
            | Statement::DropExtension(_)
            | Statement::AttachDatabase { .. }
            | Statement::Pragma { .. }
            | Statement::LoadData { .. }
            | Statement::Kill { .. }
            | Statement::Vacuum(_)
            | Statement::AlterSchema(_)
            | Statement::CreateServer(_) => {
                self.set_action(Admin);
                self.access(Admin, "*");
            }
            other => {
                let text = other.to_string();
                let head: String = text
                    .split_whitespace()
                    .take(2)
                    .collect::<Vec<_>>()
                    .join(" ");
                self.unsupported(format!("statement not supported by access policy: {head}"));
            }
        }
    }

    fn set(&mut self, set: &Set) {
        use Action::*;
        self.set_action(Session);
        match set {
            Set::SetRole { .. } | Set::SetSessionAuthorization(_) => {
                self.action = Some(Admin);
                self.access(Admin, "*");
            }
            Set::SingleAssignment {
                scope,
                variable,
                values,
                ..
            } => {
                let n = self.scope.name(variable).join(".");
                if self.scope.dialect == Dialect::Postgres && n == "search_path" {
                    let local = matches!(scope, Some(ast::ContextModifier::Local));
                    let schemas = values.iter().flat_map(search_path_value).collect();
                    self.effects.push(Effect::SearchPath { schemas, local });
                }
                self.access(Session, n);
            }
            Set::MultipleAssignments { assignments } => {
                for a in assignments {
                    let n = self.scope.name(&a.name).join(".");
                    if self.scope.dialect == Dialect::Postgres && n == "search_path" {
                        self.unsupported("search_path in a multiple assignment".into());
                    }
                    self.access(Session, n);
                }
            }
            Set::ParenthesizedAssignments { variables, .. } => {
                for v in variables {
                    let n = self.scope.name(v).join(".");
                    if n == "search_path" {
                        self.unsupported("search_path in a parenthesized assignment".into());
                    }
                    self.access(Session, n);
                }
            }
            _ => self.access(Session, "*"),
        }
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

    fn function(&mut self, name: &ObjectName, args: Option<&ast::FunctionArguments>) {
        let n = self.scope.name(name);
        let base = n.last().map(String::as_str).unwrap_or("");
        let catalog = n.len() == 2 && matches!(n[0].as_str(), "pg_catalog" | "information_schema");
        let qualified_ok = n.len() == 1 || catalog;
        if DANGEROUS.contains(&base) && (n.len() == 1 || catalog) {
            self.set_action(Action::Admin);
            self.access(Action::Admin, base.to_string());
        } else if SEQUENCE_WRITES.contains(&base) && qualified_ok {
            // nextval('seq') / setval('seq', n): an update of the sequence named.
            let seq = args.and_then(first_string_arg);
            match seq.and_then(|s| parse(&format!("SELECT * FROM {s}"), self.scope.dialect).ok()) {
                Some(stmts) => {
                    let mut names = Vec::new();
                    let _ = ast::visit_relations(&stmts, |r| {
                        names.push(r.clone());
                        ControlFlow::<()>::Continue(())
                    });
                    for r in names {
                        self.on_name(Action::Update, &r);
                    }
                }
                None => self.access(Action::Update, "*"),
            }
        } else if (SAFE.contains(&base) && qualified_ok) || catalog {
            // known to read nothing and change nothing beyond its arguments
        } else {
            self.on_name(Action::Execute, name);
        }
    }
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

fn first_string_arg(args: &ast::FunctionArguments) -> Option<String> {
    let ast::FunctionArguments::List(list) = args else {
        return None;
    };
    match list.args.first()? {
        ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(Expr::Value(v))) => match &v.value {
            ast::Value::SingleQuotedString(s) => Some(s.clone()),
            _ => None,
        },
        _ => None,
    }
}

/// The schema names in one `SET search_path` value (`a, "B"`, `'a,b'`, DEFAULT).
fn search_path_value(v: &Expr) -> Vec<String> {
    match v {
        Expr::Identifier(i) if i.quote_style.is_some() => vec![i.value.clone()],
        Expr::Identifier(i) if i.value.eq_ignore_ascii_case("default") => Vec::new(),
        Expr::Identifier(i) => vec![i.value.to_lowercase()],
        Expr::Value(v) => match &v.value {
            ast::Value::SingleQuotedString(s) => s
                .split(',')
                .map(|p| {
                    let p = p.trim();
                    match p.strip_prefix('"').and_then(|p| p.strip_suffix('"')) {
                        Some(q) => q.to_string(),
                        None => p.to_lowercase(),
                    }
                })
                .filter(|p| !p.is_empty())
                .collect(),
            _ => vec![v.to_string()],
        },
        other => vec![other.to_string()],
    }
}

impl Visitor for Walk<'_, '_> {
    type Break = ();

    fn pre_visit_statement(&mut self, stmt: &Statement) -> ControlFlow<()> {
        if self.error.is_some() {
            return ControlFlow::Break(());
        }
        self.statement(stmt);
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
        if let Expr::Function(f) = e {
            self.function(&f.name, Some(&f.args));
        }
        ControlFlow::Continue(())
    }
}

/// Functions that change server state or reach outside the database.
const DANGEROUS: &[&str] = &[
    "pg_read_file",
    "pg_read_binary_file",
    "pg_ls_dir",
    "pg_stat_file",
    "pg_file_write",
    "lo_import",
    "lo_export",
    "lo_from_bytea",
    "lo_put",
    "lo_unlink",
    "pg_terminate_backend",
    "pg_cancel_backend",
    "pg_reload_conf",
    "pg_rotate_logfile",
    "pg_promote",
    "pg_switch_wal",
    "set_config",
    "dblink",
    "dblink_exec",
    "dblink_connect",
    "query_to_xml",
    "load_file",
    "sys_exec",
    "sys_eval",
];

/// Functions that write a sequence.
const SEQUENCE_WRITES: &[&str] = &["nextval", "setval"];

/// Built-in functions known to read no table and change nothing.
const SAFE: &[&str] = &[
    "abs",
    "acos",
    "age",
    "array_agg",
    "array_length",
    "array_to_string",
    "ascii",
    "asin",
    "atan",
    "avg",
    "bit_and",
    "bit_length",
    "bit_or",
    "bool_and",
    "bool_or",
    "btrim",
    "cardinality",
    "cast",
    "cbrt",
    "ceil",
    "ceiling",
    "char",
    "char_length",
    "character_length",
    "chr",
    "coalesce",
    "col_description",
    "concat",
    "concat_ws",
    "connection_id",
    "convert",
    "cos",
    "count",
    "cume_dist",
    "curdate",
    "current_database",
    "current_date",
    "current_schema",
    "current_schemas",
    "current_setting",
    "current_time",
    "current_timestamp",
    "current_user",
    "curtime",
    "database",
    "date",
    "date_add",
    "date_format",
    "date_part",
    "date_sub",
    "date_trunc",
    "datediff",
    "day",
    "dayname",
    "dayofmonth",
    "dayofweek",
    "dayofyear",
    "decode",
    "degrees",
    "dense_rank",
    "div",
    "elt",
    "encode",
    "every",
    "exp",
    "extract",
    "field",
    "first_value",
    "floor",
    "format",
    "format_type",
    "found_rows",
    "from_unixtime",
    "gen_random_uuid",
    "generate_series",
    "greatest",
    "group_concat",
    "has_table_privilege",
    "hex",
    "hour",
    "if",
    "ifnull",
    "initcap",
    "instr",
    "isnull",
    "json_agg",
    "json_array",
    "json_build_array",
    "json_build_object",
    "json_extract",
    "json_object",
    "json_unquote",
    "json_value",
    "jsonb_agg",
    "jsonb_build_array",
    "jsonb_build_object",
    "jsonb_pretty",
    "lag",
    "last_day",
    "last_insert_id",
    "last_value",
    "lastval",
    "lcase",
    "lead",
    "least",
    "left",
    "length",
    "ln",
    "localtime",
    "localtimestamp",
    "locate",
    "log",
    "log10",
    "log2",
    "lower",
    "lpad",
    "ltrim",
    "make_date",
    "make_interval",
    "max",
    "md5",
    "min",
    "minute",
    "mod",
    "month",
    "monthname",
    "now",
    "nth_value",
    "ntile",
    "nullif",
    "obj_description",
    "octet_length",
    "percent_rank",
    "percentile_cont",
    "percentile_disc",
    "pg_backend_pid",
    "pg_encoding_to_char",
    "pg_get_constraintdef",
    "pg_get_expr",
    "pg_get_indexdef",
    "pg_get_userbyid",
    "pg_get_viewdef",
    "pg_is_in_recovery",
    "pg_relation_size",
    "pg_size_pretty",
    "pg_sleep",
    "pg_table_is_visible",
    "pg_total_relation_size",
    "pg_typeof",
    "pi",
    "position",
    "pow",
    "power",
    "quarter",
    "quote_ident",
    "quote_literal",
    "radians",
    "random",
    "rank",
    "regexp_like",
    "regexp_match",
    "regexp_matches",
    "regexp_replace",
    "regexp_split_to_array",
    "regexp_substr",
    "repeat",
    "replace",
    "reverse",
    "right",
    "round",
    "row_count",
    "row_number",
    "rpad",
    "rtrim",
    "schema",
    "second",
    "session_user",
    "sha1",
    "sha2",
    "sign",
    "sin",
    "sleep",
    "space",
    "split_part",
    "sqrt",
    "statement_timestamp",
    "stddev",
    "stddev_pop",
    "stddev_samp",
    "str_to_date",
    "strftime",
    "string_agg",
    "strpos",
    "substr",
    "substring",
    "substring_index",
    "sum",
    "sysdate",
    "tan",
    "timeofday",
    "timestamp",
    "timestampdiff",
    "to_char",
    "to_date",
    "to_hex",
    "to_json",
    "to_jsonb",
    "to_number",
    "to_timestamp",
    "transaction_timestamp",
    "translate",
    "trim",
    "trunc",
    "truncate",
    "typeof",
    "ucase",
    "unhex",
    "unix_timestamp",
    "unnest",
    "upper",
    "user",
    "utc_timestamp",
    "uuid",
    "var_pop",
    "var_samp",
    "variance",
    "version",
    "week",
    "weekday",
    "year",
    "yearweek",
];

#[cfg(test)]
mod tests;
