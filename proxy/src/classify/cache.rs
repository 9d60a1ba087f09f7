//! A cache of classifications, shared by all sessions: parsing is most of the cost of a
//! policy check, and applications send the same statements over and over.
//!
//! A classification depends only on the text and the scope (dialect, search path,
//! database), so the exact text is always a safe key. Statements sent with their numbers
//! written inline (`WHERE id = 4711`) differ only in those numbers; classification never
//! reads a number of a plain read or write, so such statements share one entry under
//! their *shape*, the text with every number replaced. Only texts whose lexing is trivial
//! get a shape (no quotes, comments or escapes: nothing where a digit could be part of
//! something else), and only results that are plain reads and writes are stored under it
//! (a `SET search_path TO 5` names a schema with its number).

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

use policies::Action;

use super::{classify, Classified, Dialect, Scope, Unsupported};

const SHARDS: usize = 8;
/// Entries per shard; a full shard is emptied.
const SHARD_ENTRIES: usize = 2048;
/// Longer texts are classified every time (they are rarely repeated, and large).
const MAX_TEXT: usize = 2048;

/// Classifications by key; see the module documentation.
pub struct ClassifyCache {
    shards: [Mutex<HashMap<String, Arc<[Classified]>>>; SHARDS],
}

impl Default for ClassifyCache {
    fn default() -> Self {
        ClassifyCache {
            shards: std::array::from_fn(|_| Mutex::new(HashMap::new())),
        }
    }
}

impl ClassifyCache {
    /// `classify(sql, scope)`, from the cache when the same statement (or one differing
    /// only in inline numbers) was classified under the same scope before. Failures are
    /// not cached.
    pub fn classify(&self, sql: &str, scope: &Scope<'_>) -> Result<Arc<[Classified]>, Unsupported> {
        if sql.len() > MAX_TEXT {
            return classify(sql, scope).map(Arc::from);
        }
        let shape = shape(sql).map(|s| key(b'S', &s, scope));
        if let Some(hit) = shape.as_deref().and_then(|k| self.get(k)) {
            return Ok(hit);
        }
        let exact = key(b'E', sql, scope);
        if let Some(hit) = self.get(&exact) {
            return Ok(hit);
        }
        let classified: Arc<[Classified]> = classify(sql, scope)?.into();
        let plain = classified.iter().all(|c| {
            c.effects.is_empty()
                && c.executes.is_none()
                && matches!(
                    c.action,
                    Action::Select | Action::Insert | Action::Update | Action::Delete
                )
        });
        let key = match shape {
            Some(shape) if plain => shape,
            _ => exact,
        };
        self.put(key, classified.clone());
        Ok(classified)
    }

    fn shard(&self, key: &str) -> &Mutex<HashMap<String, Arc<[Classified]>>> {
        let mut h = DefaultHasher::new();
        key.hash(&mut h);
        &self.shards[h.finish() as usize % SHARDS]
    }

    fn get(&self, key: &str) -> Option<Arc<[Classified]>> {
        let shard = self.shard(key).lock().unwrap_or_else(|e| e.into_inner());
        shard.get(key).cloned()
    }

    fn put(&self, key: String, value: Arc<[Classified]>) {
        let mut shard = self.shard(&key).lock().unwrap_or_else(|e| e.into_inner());
        if shard.len() >= SHARD_ENTRIES {
            shard.clear();
        }
        shard.insert(key, value);
    }
}

/// The cache key: kind, scope and text.
fn key(kind: u8, text: &str, scope: &Scope<'_>) -> String {
    let mut k = String::with_capacity(text.len() + scope.database.len() + 24);
    k.push(kind as char);
    k.push(match scope.dialect {
        Dialect::Postgres => 'p',
        Dialect::Mysql => 'm',
        Dialect::Sqlite => 's',
    });
    let l = &scope.lexing;
    k.push(match l.standard_strings {
        Some(true) => 't',
        Some(false) => 'f',
        None => 'u',
    });
    k.push(if l.ansi_quotes { 'a' } else { '-' });
    k.push(if l.backslash_escapes { 'b' } else { '-' });
    k.push(if scope.fold_table_names { 'l' } else { '-' });
    for schema in scope.search_path {
        k.push_str(schema);
        k.push('\u{1}');
    }
    k.push('\0');
    k.push_str(scope.database);
    k.push('\0');
    k.push_str(text);
    k
}

/// The text with every standalone run of digits replaced by `0`, or None when the text
/// holds anything whose lexing is not trivial: quotes of any kind (dollar quotes too: a
/// `$` must start a parameter such as `$1`), comments, backslashes, or non-ASCII
/// characters. A run counts only when it is all digits and neither touches an
/// identifier character nor a dot (`t1`, `$1`, `1abc` — a MySQL identifier — and `1.5`
/// stay as they are).
fn shape(sql: &str) -> Option<String> {
    let b = sql.as_bytes();
    if b.iter()
        .any(|&c| matches!(c, b'\'' | b'"' | b'`' | b'\\' | b'#') || !c.is_ascii() || c == 0)
        || sql.contains("--")
        || sql.contains("/*")
        || b.iter()
            .enumerate()
            .any(|(i, &c)| c == b'$' && !b.get(i + 1).is_some_and(u8::is_ascii_digit))
    {
        return None;
    }
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b'$';
    let mut out = String::with_capacity(sql.len());
    let mut i = 0;
    let mut changed = false;
    while i < b.len() {
        if !word(b[i]) {
            out.push(b[i] as char);
            i += 1;
            continue;
        }
        let end = b[i..]
            .iter()
            .position(|&c| !word(c))
            .map_or(b.len(), |p| i + p);
        let run = &sql[i..end];
        let before = i.checked_sub(1).map(|j| b[j]);
        let after = b.get(end).copied();
        if run.bytes().all(|c| c.is_ascii_digit()) && before != Some(b'.') && after != Some(b'.') {
            out.push('0');
            changed = true;
        } else {
            out.push_str(run);
        }
        i = end;
    }
    changed.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_replace_only_standalone_numbers() {
        for (sql, shaped) in [
            (
                "SELECT abalance FROM pgbench_accounts WHERE aid = 4711;",
                Some("SELECT abalance FROM pgbench_accounts WHERE aid = 0;"),
            ),
            (
                "UPDATE t1 SET a = a + 17 WHERE id=3",
                Some("UPDATE t1 SET a = a + 0 WHERE id=0"),
            ),
            (
                "SELECT * FROM t WHERE x IN (1,2,3)",
                Some("SELECT * FROM t WHERE x IN (0,0,0)"),
            ),
            // identifiers with digits, parameters, MySQL identifiers starting with digits
            ("SELECT * FROM t1 WHERE a = $1", None),
            ("SELECT * FROM 1abc", None),
            ("SELECT * FROM db.123", None),
            ("SELECT 1.5", None),
            ("SELECT 1e5", None),
            // anything with quotes, comments or escapes
            ("SELECT nextval('s1')", None),
            ("SELECT * FROM \"t1\" WHERE a = 1", None),
            ("SELECT * FROM `t` WHERE a = 1", None),
            ("SELECT 1 -- 2", None),
            ("SELECT 1 /* 2 */", None),
            ("SELECT 1 # 2", None),
            ("SELECT E\\'1", None),
            ("SELECT 'é', 1", None),
            ("SELECT $$ 1 $$, 2", None),
            ("SELECT $q$ 1 $q$, 2", None),
            ("SELECT a$b FROM t WHERE id = 2", None),
            (
                "SELECT * FROM t WHERE a = $1 AND b = 2",
                Some("SELECT * FROM t WHERE a = $1 AND b = 0"),
            ),
        ] {
            assert_eq!(shape(sql).as_deref(), shaped, "{sql}");
        }
    }

    #[test]
    fn numbers_share_an_entry_only_for_plain_statements() {
        let cache = ClassifyCache::default();
        let path = vec!["public".to_string()];
        let scope = Scope {
            dialect: Dialect::Postgres,
            search_path: &path,
            database: "",
            lexing: Default::default(),
            fold_table_names: true,
        };
        let a = cache
            .classify("SELECT * FROM t WHERE id = 1", &scope)
            .unwrap();
        let b = cache
            .classify("SELECT * FROM t WHERE id = 2", &scope)
            .unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        // a search_path named by a number is not shared
        let five = cache.classify("SET search_path TO s5, 5", &scope).unwrap();
        let six = cache.classify("SET search_path TO s5, 6", &scope).unwrap();
        assert_ne!(five, six);
        // the scope is part of the key
        let other = vec!["app".to_string()];
        let c = cache
            .classify(
                "SELECT * FROM t WHERE id = 1",
                &Scope {
                    search_path: &other,
                    ..scope
                },
            )
            .unwrap();
        assert_eq!(c[0].accesses[0].object, "app.t");
        assert_eq!(a[0].accesses[0].object, "public.t");
    }
}
