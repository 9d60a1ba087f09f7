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
            _ => return false,
        }
        true
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
