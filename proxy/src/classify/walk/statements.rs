//! Each kind of statement: what it does and which names it writes. Tables it reads are
//! collected by the walk (relations), not here.

use policies::Action;
use sqlparser::ast::{
    self, CopySource, CopyTarget, Expr, FromTable, ObjectType, Set, Statement, TableFactor,
    TableObject,
};

use super::{classify_one, Walk};
use crate::classify::{Dialect, Effect, Unsupported};

impl Walk<'_, '_> {
    pub(super) fn statement(&mut self, stmt: &Statement) {
        let known = self.data_statement(stmt)
            || self.ddl_statement(stmt)
            || self.session_statement(stmt)
            || self.other_statement(stmt);
        if !known {
            let text = stmt.to_string();
            let head: String = text
                .split_whitespace()
                .take(2)
                .collect::<Vec<_>>()
                .join(" ");
            self.unsupported(format!("statement not supported by access policy: {head}"));
        }
    }

    /// Reads, writes and COPY. Returns false for other statements.
    fn data_statement(&mut self, stmt: &Statement) -> bool {
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
            _ => return false,
        }
        true
    }

    /// Schema changes. Returns false for other statements.
    fn ddl_statement(&mut self, stmt: &Statement) -> bool {
        use Action::*;
        match stmt {
            Statement::CreateTable(ct) => {
                self.set_action(Ddl);
                self.target(Ddl, &ct.name);
                if ct.temporary {
                    self.effects.push(Effect::TempTable);
                }
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
            _ => return false,
        }
        true
    }

    /// EXPLAIN, SHOW, transaction control, settings and cursors. Returns false for other statements.
    fn session_statement(&mut self, stmt: &Statement) -> bool {
        use Action::*;
        match stmt {
            Statement::Explain { .. } => self.set_action(Select),
            Statement::ExplainTable { table_name, .. } => {
                self.set_action(Select);
                self.on_name(Select, table_name);
            }
            s if super::show::is_show(s) => self.show(s),
            Statement::Rollback {
                savepoint: None, ..
            } => {
                self.set_action(Transaction);
                self.access(Transaction, "*");
                self.effects.push(Effect::Rollback);
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
            Statement::Reset(r) => self.reset(r),
            Statement::Discard { .. } => {
                self.set_action(Session);
                self.access(Session, "*");
                self.effects.push(Effect::SearchPath {
                    schemas: Vec::new(),
                    local: false,
                });
            }
            Statement::Use(u) => {
                self.set_action(Session);
                self.access(Session, "database");
                self.effects.push(Effect::Database(u.to_string()));
                let _ = u;
            }
            Statement::Declare { stmts } => {
                self.set_action(Select);
                for d in stmts {
                    self.declare(d);
                }
            }
            Statement::Fetch { name, .. } => {
                // what the cursor reads, checked again under the current policy
                self.set_action(Select);
                self.executes = Some(cursor_key(&self.scope.fold(name)));
            }
            Statement::Close { cursor } => {
                self.set_action(Select);
                if let ast::CloseCursor::Specific { name } = cursor {
                    let key = cursor_key(&self.scope.fold(name));
                    self.effects.push(Effect::Deallocate(Some(key)));
                }
            }
            _ => return false,
        }
        true
    }

    /// Prepared statements, procedures, locks, notifications and administration. Returns false for other statements.
    fn other_statement(&mut self, stmt: &Statement) -> bool {
        use Action::*;
        match stmt {
            Statement::Prepare {
                name, statement, ..
            } => {
                self.set_action(Session);
                match classify_one(statement, self.scope) {
                    Ok(inner) => self.effects.push(Effect::Prepare {
                        name: name.value.to_lowercase(),
                        accesses: inner.accesses,
                    }),
                    Err(Unsupported(e)) => self.unsupported(e),
                }
            }
            Statement::Execute {
                name: Some(name),
                immediate: false,
                ..
            } => {
                self.set_action(Execute);
                let n: Vec<String> = self.scope.name(name);
                self.executes = Some(n.join(".").to_lowercase());
            }
            Statement::Deallocate { name, .. } => {
                self.set_action(Session);
                let n = name.value.to_lowercase();
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
            _ => return false,
        }
        true
    }

    fn set(&mut self, set: &Set) {
        use Action::*;
        self.set_action(Session);
        match set {
            Set::SetRole { .. } | Set::SetSessionAuthorization(_) => self.admin(),
            Set::SingleAssignment {
                scope,
                variable,
                values,
                ..
            } => self.assign(scope.as_ref(), variable, values),
            Set::MultipleAssignments { assignments } => {
                for a in assignments {
                    self.assign(a.scope.as_ref(), &a.name, std::slice::from_ref(&a.value));
                }
            }
            Set::ParenthesizedAssignments { variables, .. } => {
                for v in variables {
                    self.assign(None, v, &[]);
                }
            }
            Set::SetNames { charset_name, .. } => {
                self.setting("names", Some(charset_name.value.clone()), false);
            }
            Set::SetNamesDefault {} => self.setting("names", Some("default".into()), false),
            Set::SetTimeZone { local, .. } => {
                self.access(Session, "timezone");
                let _ = local;
            }
            _ => self.access(Session, "*"),
        }
    }

    fn admin(&mut self) {
        self.action = Some(Action::Admin);
        self.access(Action::Admin, "*");
    }

    /// `RESET x`: RESET ROLE, SESSION AUTHORIZATION and ALL change the identity.
    fn reset(&mut self, r: &ast::ResetStatement) {
        self.set_action(Action::Session);
        let name = match &r.reset {
            ast::Reset::ALL => "all".to_string(),
            ast::Reset::SessionAuthorization => "session_authorization".to_string(),
            ast::Reset::ConfigurationParameter(n) => n.to_string().to_lowercase(),
        };
        if IDENTITY_SETTINGS.contains(&name.as_str()) || name == "all" {
            return self.admin();
        }
        self.access(Action::Session, name.clone());
        if name == "search_path" || name == "all" {
            self.effects.push(Effect::SearchPath {
                schemas: Vec::new(),
                local: false,
            });
        }
        self.effects.push(Effect::Set {
            name,
            value: Some("default".into()),
            local: false,
        });
    }

    /// One assignment of a SET: a user variable, a session setting, or (`GLOBAL`,
    /// `@@global.`, identity settings, passwords) an administration action.
    fn assign(
        &mut self,
        scope: Option<&ast::ContextModifier>,
        variable: &ast::ObjectName,
        values: &[Expr],
    ) {
        // setting names are case-insensitive, quoted or not
        let parts: Vec<String> = variable
            .0
            .iter()
            .map(|p| match p {
                ast::ObjectNamePart::Identifier(i) => i.value.to_lowercase(),
                other => other.to_string().to_lowercase(),
            })
            .collect();
        let mut global = matches!(scope, Some(ast::ContextModifier::Global));
        let local = matches!(scope, Some(ast::ContextModifier::Local));
        let mut name: &[String] = &parts;
        if let Some(first) = parts.first() {
            match first.as_str() {
                "@@global" | "@@persist" | "@@persist_only" => {
                    global = true;
                    name = &parts[1..];
                }
                "@@session" | "@@local" => name = &parts[1..],
                _ => {}
            }
        }
        let mut n = name.join(".");
        if self.scope.dialect == Dialect::Mysql {
            if n.starts_with('@') && !n.starts_with("@@") {
                // a user variable
                self.access(Action::Session, n);
                return;
            }
            n = n.trim_start_matches("@@").to_string();
        }
        let value = setting_value(values);
        let admin = global
            || IDENTITY_SETTINGS.contains(&n.as_str())
            || (self.scope.dialect == Dialect::Mysql && n == "password");
        if admin {
            self.set_action(Action::Admin);
            self.action = Some(Action::Admin);
            self.access(Action::Admin, n);
            return;
        }
        if self.scope.dialect == Dialect::Postgres && n == "search_path" {
            let schemas = values.iter().flat_map(search_path_value).collect();
            self.effects.push(Effect::SearchPath { schemas, local });
        }
        self.setting(&n, value, local);
    }

    fn setting(&mut self, name: &str, value: Option<String>, local: bool) {
        self.access(Action::Session, name.to_string());
        self.effects.push(Effect::Set {
            name: name.to_string(),
            value,
            local,
        });
    }
}

/// The name under which a cursor's accesses are kept with the prepared statements.
pub(crate) fn cursor_key(name: &str) -> String {
    format!("cursor {name}")
}

impl Walk<'_, '_> {
    /// `DECLARE c CURSOR FOR query`: the query is checked now (the walk visits it) and
    /// its accesses are kept for every FETCH.
    fn declare(&mut self, d: &ast::Declare) {
        let Some(query) = &d.for_query else {
            return self.unsupported("DECLARE without a query".into());
        };
        match classify_one(&Statement::Query(query.clone()), self.scope) {
            Ok(inner) => {
                for n in &d.names {
                    self.effects.push(Effect::Prepare {
                        name: cursor_key(&self.scope.fold(n)),
                        accesses: inner.accesses.clone(),
                    });
                }
            }
            Err(Unsupported(e)) => self.unsupported(e),
        }
    }
}

/// Settings that change who the session acts as.
const IDENTITY_SETTINGS: &[&str] = &["role", "session_authorization", "session authorization"];

/// A setting's value when it is written as a literal (several: joined by commas).
fn setting_value(values: &[Expr]) -> Option<String> {
    let mut out = Vec::new();
    for v in values {
        out.push(match v {
            Expr::Identifier(i) => i.value.clone(),
            Expr::Value(v) => match &v.value {
                ast::Value::SingleQuotedString(s) | ast::Value::DoubleQuotedString(s) => s.clone(),
                ast::Value::Number(n, _) => n.to_string(),
                ast::Value::Boolean(b) => if *b { "on" } else { "off" }.to_string(),
                _ => return None,
            },
            _ => return None,
        });
    }
    (!out.is_empty()).then(|| out.join(","))
}

/// The schema names in one `SET search_path` value (`a, "B"`, `'a,b'`, DEFAULT).
fn search_path_value(v: &Expr) -> Vec<String> {
    match v {
        Expr::Identifier(i) if i.quote_style.is_some() => vec![i.value.clone()],
        Expr::Identifier(i) if i.value.eq_ignore_ascii_case("default") => Vec::new(),
        Expr::Identifier(i) => vec![i.value.to_lowercase()],
        Expr::Value(v) => match &v.value {
            ast::Value::SingleQuotedString(s) => crate::classify::split_search_path(s),
            _ => vec![v.to_string()],
        },
        other => vec![other.to_string()],
    }
}
