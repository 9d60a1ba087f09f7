//! Statement classification for access policies: for each statement of a request, what it
//! does and every object it touches, with names resolved the way the backend resolves them.
//!
//! Parsing is sqlparser's, with the backend's dialect. Classification fails closed: a
//! statement sqlparser cannot parse, or of a kind not listed here, is `Unsupported`, and
//! when in doubt an access is added rather than left out (an unqualified PostgreSQL table
//! is checked in every schema of the search path; a CTE name is a CTE only inside the
//! scope where it is visible).

mod cache;
mod walk;

pub use cache::ClassifyCache;

use policies::Action;
use sqlparser::ast::Statement;
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
    /// Its answer is fixed by the tables it reads: no volatile or unknown function, no
    /// session variable, no row lock. (Whether it reads only is in `action`/`accesses`.)
    pub deterministic: bool,
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
        let c = walk::classify_one(
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
                path = next_search_path(&path, schemas, true);
            }
        }
        out.push(c);
    }
    Ok(out)
}

/// The search path after `SET search_path` to `schemas` (empty: the default). When the
/// SET may not take effect (inside a transaction, SET LOCAL, a later statement of the same
/// request) the old schemas stay candidates after the new ones.
pub fn next_search_path(old: &[String], schemas: &[String], uncertain: bool) -> Vec<String> {
    let or_public = |p: &[String]| {
        if p.is_empty() {
            vec!["public".to_string()]
        } else {
            p.to_vec()
        }
    };
    let mut next = or_public(schemas);
    if uncertain {
        for s in or_public(old) {
            if !next.contains(&s) {
                next.push(s);
            }
        }
    }
    next
}

/// The schemas of a search_path written as text: `a, "B"` is `a` and `B`.
pub fn split_search_path(v: &str) -> Vec<String> {
    v.split(',')
        .map(|p| {
            let p = p.trim();
            match p.strip_prefix('"').and_then(|p| p.strip_suffix('"')) {
                Some(q) => q.to_string(),
                None => p.to_lowercase(),
            }
        })
        .filter(|p| !p.is_empty())
        .collect()
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

#[cfg(test)]
mod tests;
