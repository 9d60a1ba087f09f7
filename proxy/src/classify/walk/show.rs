//! SHOW statements: what each reveals, and the right it needs. Settings of the session
//! are `session`; a table's metadata needs `select` on that table, a database's list
//! of tables `select` on every table of it (`db.*`); anything about the server, other
//! accounts or stored programs needs `admin`.

use policies::Action;
use sqlparser::ast::{ObjectName, ShowCreateObject, ShowStatementOptions, Statement};

use super::Walk;
use crate::classify::Dialect;

pub(super) fn is_show(s: &Statement) -> bool {
    matches!(
        s,
        Statement::ShowCreate { .. }
            | Statement::ShowProcessList { .. }
            | Statement::ShowVariable { .. }
            | Statement::ShowVariables { .. }
            | Statement::ShowStatus { .. }
            | Statement::ShowTables { .. }
            | Statement::ShowColumns { .. }
            | Statement::ShowDatabases { .. }
            | Statement::ShowSchemas { .. }
            | Statement::ShowCollation { .. }
            | Statement::ShowCharset(_)
            | Statement::ShowFunctions { .. }
            | Statement::ShowObjects(_)
            | Statement::ShowViews { .. }
    )
}

/// MySQL `SHOW <words>` that reveal only the session's own state or fixed server facts.
const SESSION_SHOWS: &[&str] = &[
    "WARNINGS",
    "ERRORS",
    "COUNT",
    "COLLATION",
    "CHARACTER",
    "CHARSET",
    "ENGINES",
    "STORAGE",
    "PROFILE",
    "PROFILES",
];

impl Walk<'_, '_> {
    pub(super) fn show(&mut self, stmt: &Statement) {
        use Action::*;
        match stmt {
            Statement::ShowCreate { obj_type, obj_name } => match obj_type {
                ShowCreateObject::Table | ShowCreateObject::View => {
                    self.set_action(Select);
                    self.on_name(Select, obj_name);
                }
                ShowCreateObject::Function | ShowCreateObject::Procedure => {
                    self.set_action(Execute);
                    self.on_name(Execute, obj_name);
                }
                _ => self.show_admin(),
            },
            Statement::ShowColumns { show_options, .. } => match show_in(show_options) {
                Some(table) => {
                    self.set_action(Select);
                    self.on_name(Select, table);
                }
                None => self.show_admin(),
            },
            Statement::ShowTables { show_options, .. }
            | Statement::ShowViews { show_options, .. } => {
                let db = show_in(show_options).map(|n| self.scope.name(n));
                self.show_database(db.as_deref());
            }
            Statement::ShowVariables { global, .. } | Statement::ShowStatus { global, .. } => {
                if *global {
                    self.show_admin()
                } else {
                    self.set_action(Session);
                    self.access(Session, "*");
                }
            }
            Statement::ShowCollation { .. } | Statement::ShowCharset(_) => {
                self.set_action(Session);
                self.access(Session, "*");
            }
            Statement::ShowVariable { variable } => {
                let words: Vec<String> = variable.iter().map(|i| i.value.clone()).collect();
                self.show_words(&words);
            }
            _ => self.show_admin(),
        }
    }

    fn show_admin(&mut self) {
        self.set_action(Action::Admin);
        self.access(Action::Admin, "*");
    }

    /// SHOW TABLES [FROM db], SHOW TABLE STATUS [FROM db]: the names of every table.
    fn show_database(&mut self, db: Option<&[String]>) {
        self.set_action(Action::Select);
        let db = match (self.scope.dialect, db) {
            (_, Some([.., last])) => last.clone(),
            (Dialect::Mysql, _) if self.scope.fold_table_names => {
                self.scope.database.to_lowercase()
            }
            (Dialect::Mysql, _) => self.scope.database.to_string(),
            _ => return self.show_admin(),
        };
        self.access(Action::Select, format!("{db}.*"));
    }

    /// `SHOW <words>` that sqlparser does not model: PostgreSQL settings, and MySQL's
    /// many forms.
    fn show_words(&mut self, words: &[String]) {
        if self.scope.dialect != Dialect::Mysql {
            // PostgreSQL SHOW name | ALL
            self.set_action(Action::Session);
            let name = words.join(".").to_lowercase();
            let name = if name == "all" { "*".to_string() } else { name };
            self.access(Action::Session, name);
            return;
        }
        let upper: Vec<String> = words.iter().map(|w| w.to_ascii_uppercase()).collect();
        let up: Vec<&str> = upper.iter().map(String::as_str).collect();
        let from = |i: usize| words.get(i).map(|w| vec![w.clone()]);
        match up.as_slice() {
            [first, ..] if SESSION_SHOWS.contains(first) => {
                self.set_action(Action::Session);
                self.access(Action::Session, "*");
            }
            ["SESSION" | "LOCAL", "VARIABLES" | "STATUS", ..] => {
                self.set_action(Action::Session);
                self.access(Action::Session, "*");
            }
            ["TABLE", "STATUS"] | ["TABLE", "STATUS", "LIKE" | "WHERE", ..] => {
                self.show_database(None)
            }
            ["TABLE", "STATUS", "FROM" | "IN", _, ..]
            | ["OPEN", "TABLES", "FROM" | "IN", _, ..] => {
                let db = from(3);
                self.show_database(db.as_deref())
            }
            ["OPEN", "TABLES", ..] => self.show_admin(),
            ["FULL", "TABLES", "FROM" | "IN", _, ..] => {
                let db = from(3);
                self.show_database(db.as_deref())
            }
            ["FULL", "TABLES", ..] => self.show_database(None),
            ["INDEX" | "INDEXES" | "KEYS", "FROM" | "IN", rest @ ..] => {
                // sqlparser drops the dot of `db.t`: [t], [db, t] or [t, FROM, db]
                let name = match rest {
                    [_] => vec![words[2].clone()],
                    [_, _] => vec![words[2].clone(), words[3].clone()],
                    [_, "FROM" | "IN", _] => vec![words[4].clone(), words[2].clone()],
                    _ => return self.show_admin(),
                };
                let object = ObjectName::from(
                    name.into_iter()
                        .map(sqlparser::ast::Ident::new)
                        .collect::<Vec<_>>(),
                );
                self.set_action(Action::Select);
                self.on_name(Action::Select, &object);
            }
            _ => self.show_admin(),
        }
    }
}

/// The object of `SHOW ... FROM x`.
fn show_in(options: &ShowStatementOptions) -> Option<&ObjectName> {
    options.show_in.as_ref()?.parent_name.as_ref()
}
