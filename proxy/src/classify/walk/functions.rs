//! Function calls: which are known to be harmless, which write a sequence, and which
//! reach outside the database.

use std::ops::ControlFlow;

use policies::Action;
use sqlparser::ast::{self, Expr, ObjectName};

use super::Walk;
use crate::classify::parse;

impl Walk<'_, '_> {
    pub(super) fn function(&mut self, name: &ObjectName, args: Option<&ast::FunctionArguments>) {
        // function names are case-insensitive (even where table names are not)
        let n: Vec<String> = self
            .scope
            .name(name)
            .into_iter()
            .map(|p| match self.scope.dialect {
                crate::classify::Dialect::Mysql => p.to_lowercase(),
                _ => p,
            })
            .collect();
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
            if VOLATILE.contains(&base) || catalog {
                self.volatile = true;
            }
        } else {
            self.on_name(Action::Execute, name);
        }
        if !SAFE.contains(&base) {
            // unknown functions may return anything
            self.volatile = true;
        }
    }
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

/// Functions of the harmless list whose result is not fixed by their arguments and the
/// tables read: time, randomness, the session, the server. A statement calling one is not
/// deterministic (and never cached).
const VOLATILE: &[&str] = &[
    "age",
    "connection_id",
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
    "found_rows",
    "from_unixtime",
    "gen_random_uuid",
    "generate_series",
    "has_table_privilege",
    "last_insert_id",
    "lastval",
    "localtime",
    "localtimestamp",
    "now",
    "pg_backend_pid",
    "pg_get_userbyid",
    "pg_is_in_recovery",
    "pg_relation_size",
    "pg_sleep",
    "pg_table_is_visible",
    "pg_total_relation_size",
    "random",
    "row_count",
    "schema",
    "session_user",
    "sleep",
    "statement_timestamp",
    "sysdate",
    "timeofday",
    "transaction_timestamp",
    "unix_timestamp",
    "user",
    "utc_timestamp",
    "uuid",
    "version",
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
