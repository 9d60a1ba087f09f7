//! Statement classification for access policies: for each statement of a request, what it
//! does and every object it touches, with names resolved the way the backend resolves them.
//!
//! Parsing is sqlparser's, with the backend's dialect. Classification fails closed: a
//! statement sqlparser cannot parse, or of a kind not listed here, is `Unsupported`, and
//! when in doubt an access is added rather than left out (an unqualified PostgreSQL table
//! is checked in every schema of the search path; a CTE name is a CTE only inside the
//! scope where it is visible).

mod cache;
mod lex;
mod walk;

pub use cache::ClassifyCache;
pub use lex::{ascii_safe_encoding, Lexing};

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
    /// How the server lexes the session's statements.
    pub lexing: Lexing,
    /// MySQL: table and database names are compared in lower case
    /// (`lower_case_table_names` 1 or 2); with 0 they are case-sensitive.
    pub fold_table_names: bool,
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
    /// `USE db` (MySQL): the statement, for the refusal (a switch of database is
    /// accepted only alone, where the frontend switches routes).
    Database(String),
    /// A ROLLBACK of the whole transaction (not to a savepoint).
    Rollback,
    /// A temporary table is created: it may shadow a table of the same name for the rest
    /// of the session.
    TempTable,
    /// `SET name = value` of one setting (lower case, without `@@` or a scope): the
    /// value when it is a literal (an identifier, a string, a number, DEFAULT), None
    /// when it is an expression sluice does not evaluate.
    Set {
        name: String,
        value: Option<String>,
        local: bool,
    },
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
    // lexed as the server will lex it under the session's settings
    let sql = lex::normalize(sql, scope.dialect, &scope.lexing)?;
    if scope.dialect == Dialect::Mysql {
        if let Some(prepared) = mysql_prepare_from(&sql, scope)? {
            return Ok(vec![prepared]);
        }
    }
    let statements = parse(&sql, scope.dialect)?;
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
            match e {
                Effect::SearchPath { schemas, .. } => {
                    path = next_search_path(&path, schemas, true);
                }
                // MySQL lexes each statement of a request after the previous one ran,
                // and whether the SET took effect is known only from the request's outcome
                Effect::Set { name, .. }
                    if scope.dialect == Dialect::Mysql
                        && LEXING_SETTINGS.contains(&name.as_str())
                        && statements.len() > 1 =>
                {
                    return Err(Unsupported(format!(
                        "a statement that sets {name} must be sent alone"
                    )));
                }
                _ => {}
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

/// MySQL `PREPARE name FROM 'text'` (a request of that one statement, which sqlparser
/// does not parse): the text is classified as what running the statement will access.
fn mysql_prepare_from(sql: &str, scope: &Scope<'_>) -> Result<Option<Classified>, Unsupported> {
    let t = sql.trim().trim_end_matches(';').trim_end();
    let mut words = t
        .splitn(4, |c: char| c.is_ascii_whitespace())
        .filter(|w| !w.is_empty());
    let (Some(prepare), Some(name), Some(from)) = (words.next(), words.next(), words.next()) else {
        return Ok(None);
    };
    if !prepare.eq_ignore_ascii_case("prepare") || !from.eq_ignore_ascii_case("from") {
        return Ok(None);
    }
    let Some(rest) = words.next().map(str::trim) else {
        return Ok(None);
    };
    // the normalized text writes every string as one canonical '...' literal
    let Some(body) = rest.strip_prefix('\'').and_then(|r| r.strip_suffix('\'')) else {
        return Err(Unsupported(
            "PREPARE ... FROM takes a string literal through sluice (not a variable)".into(),
        ));
    };
    let text = lex::mysql_unescape(body)
        .ok_or_else(|| Unsupported("PREPARE ... FROM takes one string literal".into()))?;
    let name = name.trim_matches('`').to_lowercase();
    let inner = classify(&text, scope)?;
    let [inner] = inner.as_slice() else {
        return Err(Unsupported(
            "a prepared statement holds one statement".into(),
        ));
    };
    Ok(Some(Classified {
        action: Action::Session,
        accesses: Vec::new(),
        effects: vec![Effect::Prepare {
            name,
            accesses: inner.accesses.clone(),
        }],
        executes: None,
        deterministic: false,
    }))
}

/// Settings that change how the server lexes later statements.
pub const LEXING_SETTINGS: &[&str] = &[
    "sql_mode",
    "standard_conforming_strings",
    "character_set_client",
    "client_encoding",
    "names",
    "character set",
    "charset",
];

/// Parses with the backend's dialect.
pub fn parse(sql: &str, dialect: Dialect) -> Result<Vec<Statement>, Unsupported> {
    let d: &dyn SqlDialect = match dialect {
        Dialect::Postgres => &PostgreSqlDialect {},
        Dialect::Mysql => &MySqlDialect {},
        Dialect::Sqlite => &SQLiteDialect {},
    };
    Parser::parse_sql(d, sql).map_err(|e| Unsupported(format!("cannot parse statement: {e}")))
}

#[cfg(test)]
mod tests;
