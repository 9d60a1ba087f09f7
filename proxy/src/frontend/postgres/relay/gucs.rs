//! Session settings in transaction pooling mode. A client's settings live with the client,
//! not with a server connection: sluice tracks the common ones and replays them on every
//! server connection the client is given; session-level changes to any other setting are
//! refused with a clear error, because they would leak to the next client.

use std::collections::BTreeMap;

use super::scan;
use crate::frontend::postgres::error::PgError;

/// Settings sluice tracks: (name, whether the server reports changes with ParameterStatus).
const TRACKED: [(&str, bool); 11] = [
    ("application_name", true),
    ("client_encoding", true),
    ("DateStyle", true),
    ("IntervalStyle", true),
    ("TimeZone", true),
    ("standard_conforming_strings", true),
    ("search_path", false),
    ("statement_timeout", false),
    ("lock_timeout", false),
    ("idle_in_transaction_session_timeout", false),
    ("extra_float_digits", false),
];

/// The tracked name for `name`, matched case-insensitively.
pub fn tracked(name: &str) -> Option<(&'static str, bool)> {
    TRACKED
        .iter()
        .copied()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
}

/// One client's settings.
#[derive(Debug, Default, Clone)]
pub struct Gucs {
    pub values: BTreeMap<String, String>,
    /// A statement may have changed a setting the server does not report; read them back
    /// before the server connection is given up.
    pub dirty: bool,
}

impl Gucs {
    /// Settings from the startup packet; `Err` names a parameter sluice cannot carry.
    pub fn from_startup(params: &BTreeMap<String, String>) -> Result<Gucs, String> {
        let mut gucs = Gucs::default();
        for (k, v) in params {
            match tracked(k) {
                Some((name, _)) => {
                    gucs.values.insert(name.to_string(), v.clone());
                }
                None => return Err(k.clone()),
            }
        }
        Ok(gucs)
    }

    /// Records a ParameterStatus the server sent during the client's transaction.
    pub fn reported(&mut self, name: &str, value: &str) -> bool {
        match tracked(name) {
            Some((n, _)) => {
                self.values.insert(n.to_string(), value.to_string());
                true
            }
            None => false,
        }
    }

    /// Checks client SQL for session-level commands that transaction pooling cannot honour,
    /// and notes changes to tracked settings that must be read back.
    pub fn check(&mut self, sql: &str) -> Result<(), PgError> {
        if sql.len() > 6 && contains_ignore_case(sql, "set_config") {
            self.dirty = true;
        }
        for words in scan::leading_words(sql, 4) {
            let w = |i: usize| words.get(i).map(String::as_str).unwrap_or("");
            match w(0) {
                "prepare" | "execute" | "deallocate" | "discard" | "listen" => {
                    return Err(refused(&w(0).to_uppercase()));
                }
                "set" => self.check_set(&words[1..])?,
                "reset"
                    if w(1) == "all" || tracked(w(1)).is_some_and(|(_, reported)| !reported) =>
                {
                    self.dirty = true;
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn check_set(&mut self, words: &[String]) -> Result<(), PgError> {
        let w = |i: usize| words.get(i).map(String::as_str).unwrap_or("");
        let (scope_local, rest) = match w(0) {
            "local" => (true, 1),
            "session" => (false, 1),
            _ => (false, 0),
        };
        let name = match (w(rest), w(rest + 1)) {
            ("time", "zone") => "timezone",
            ("names", _) => "client_encoding",
            ("schema", _) => "search_path",
            (n, _) => n,
        };
        if scope_local || matches!(name, "transaction" | "constraints") {
            return Ok(());
        }
        match tracked(name) {
            Some((_, reported)) => {
                self.dirty |= !reported;
                Ok(())
            }
            None => Err(refused(&format!("SET {name}"))),
        }
    }
}

fn contains_ignore_case(hay: &str, needle: &str) -> bool {
    hay.as_bytes()
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
}

fn refused(what: &str) -> PgError {
    PgError::error(
        "0A000",
        format!(
            "{what} is not supported on a transaction-pooled route: its effect would outlive \
             the transaction on a shared server connection; use a session-mode route \
             (or SET LOCAL, protocol-level prepared statements)"
        ),
    )
}

/// The statement that makes a server connection's tracked settings (`have`) equal the
/// client's (`want`), or `None` when they already agree. Values go through set_config so
/// list values such as search_path keep their meaning.
pub fn sync_statement(
    have: &BTreeMap<String, String>,
    want: &BTreeMap<String, String>,
) -> Option<String> {
    let mut sets = Vec::new();
    let mut resets = Vec::new();
    for (name, _) in TRACKED {
        match (have.get(name), want.get(name)) {
            (a, b) if a == b => {}
            (_, Some(v)) => sets.push(format!(
                "pg_catalog.set_config('{name}', {}, false)",
                quote_literal(v)
            )),
            (_, None) => resets.push(format!("RESET {name}")),
        }
    }
    if sets.is_empty() && resets.is_empty() {
        return None;
    }
    let mut sql = String::new();
    if !sets.is_empty() {
        sql.push_str("SELECT ");
        sql.push_str(&sets.join(", "));
        sql.push(';');
    }
    for r in resets {
        sql.push_str(&r);
        sql.push(';');
    }
    Some(sql)
}

/// The query reading back the settings the server does not report.
pub fn readback_query() -> (String, Vec<&'static str>) {
    let names: Vec<&'static str> = TRACKED
        .iter()
        .filter(|(_, reported)| !reported)
        .map(|(n, _)| *n)
        .collect();
    let cols: Vec<String> = names
        .iter()
        .map(|n| format!("pg_catalog.current_setting('{n}')"))
        .collect();
    (format!("SELECT {}", cols.join(", ")), names)
}

fn quote_literal(v: &str) -> String {
    format!("'{}'", v.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_commands_are_refused_and_local_ones_pass() {
        let mut g = Gucs::default();
        assert!(g.check("SET LOCAL work_mem = '1MB'").is_ok());
        assert!(g
            .check("set transaction isolation level serializable")
            .is_ok());
        assert_eq!(g.check("SET work_mem = '1MB'").unwrap_err().code, "0A000");
        assert_eq!(
            g.check("select 1; PREPARE p AS select 1").unwrap_err().code,
            "0A000"
        );
        assert!(g.check("DEALLOCATE ALL").is_err());
        assert!(!g.dirty);
    }

    #[test]
    fn tracked_settings_pass_and_unreported_ones_mark_for_readback() {
        let mut g = Gucs::default();
        g.check("SET application_name = 'x'").unwrap();
        assert!(!g.dirty);
        g.check("SET TIME ZONE 'UTC'").unwrap();
        assert!(!g.dirty);
        g.check("set search_path to a, b").unwrap();
        assert!(g.dirty);
    }

    #[test]
    fn the_sync_statement_sets_and_resets_the_difference() {
        let have = BTreeMap::from([("search_path".to_string(), "a".to_string())]);
        let want = BTreeMap::from([("TimeZone".to_string(), "Europe/Paris".to_string())]);
        let sql = sync_statement(&have, &want).unwrap();
        assert_eq!(
            sql,
            "SELECT pg_catalog.set_config('TimeZone', 'Europe/Paris', false);RESET search_path;"
        );
        assert_eq!(sync_statement(&want, &want), None);
    }

    #[test]
    fn unknown_startup_parameters_are_named() {
        let p = BTreeMap::from([("options".to_string(), "-c x=1".to_string())]);
        assert_eq!(Gucs::from_startup(&p).unwrap_err(), "options");
    }
}
